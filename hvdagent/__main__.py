"""Command line: ``hvdagent doctor`` and ``hvdagent install-horovod``
(also ``python -m hvdagent ...``)."""

from __future__ import annotations

import argparse
import sys


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hvdagent", description="hvdagent tools")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("doctor", help="report versions and check that Horovod matches TensorFlow")
    from hvdagent import _install

    install = sub.add_parser("install-horovod", help="build Horovod for this environment's TensorFlow, install it, "
                                                     "and prove it with a 2-process allreduce",
                             description=_install.__doc__.split("\n\n")[0])
    _install.add_arguments(install)
    args = parser.parse_args(argv)
    if args.command == "doctor":
        from hvdagent._runtime import doctor as _doctor

        return _doctor.run()
    if args.command == "install-horovod":
        return _install.run(args)
    return 2


if __name__ == "__main__":
    sys.exit(main())
