"""Command line: ``hvdagent doctor``, ``install-horovod``, ``advise`` and ``horovodrun ...``
(also ``python -m hvdagent ...``)."""

from __future__ import annotations

import argparse
import sys


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hvdagent", description="hvdagent tools")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("doctor", help="report versions and check that Horovod matches TensorFlow")
    sub.add_parser("horovodrun", add_help=False,
                   help="horovodrun with hvdagent's launcher settings (Open MPI's daemon keep-alive; "
                        "hosts from a Slurm allocation); every other argument goes to horovodrun")
    adv = sub.add_parser("advise", help="measure the link and the model; predict which gradient sync wins",
                         description="Run it under the job's launcher (horovodrun -np N -H ...): it measures the "
                                     "allreduce between the ranks, the model's gradients and its step time, and "
                                     "predicts every sync method's throughput with the alpha-beta model.")
    adv.add_argument("--model", required=True, help="a saved model (.keras) or MODULE:FUNCTION returning a model")
    adv.add_argument("--batch-size", type=int, default=None, help="per-rank batch size to time a step with")
    adv.add_argument("--step-ms", type=float, default=None, help="compute time of a step, if known (no timing)")
    adv.add_argument("--alpha-us", type=float, default=None,
                     help="latency per ring step of a link to predict for (given, not measured; with --gbits)")
    adv.add_argument("--gbits", type=float, default=None, help="bandwidth (Gbit/s) of that link (with --alpha-us)")
    adv.add_argument("--ranks", type=int, default=None, help="ranks to predict for, with a given link (default 2)")
    adv.add_argument("--max-bytes", type=int, default=16 << 20, help="largest allreduce of the link measurement")
    adv.add_argument("--json", action="store_true", help="print the prediction as JSON")
    from hvdagent import _install

    install = sub.add_parser("install-horovod", help="build Horovod for this environment's TensorFlow, install it, "
                                                     "and prove it with a 2-process allreduce",
                             description=_install.__doc__.split("\n\n")[0])
    _install.add_arguments(install)
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["horovodrun"]:  # its arguments are horovodrun's, not ours
        from hvdagent._runtime import horovodrun as _horovodrun

        return _horovodrun.main(argv[1:])
    args = parser.parse_args(argv)
    if args.command == "doctor":
        from hvdagent._runtime import doctor as _doctor

        return _doctor.run()
    if args.command == "advise":
        from hvdagent._sync import advisor

        return advisor.main(args)
    if args.command == "install-horovod":
        return _install.run(args)
    return 2


if __name__ == "__main__":
    sys.exit(main())
