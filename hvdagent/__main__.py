"""Command line: ``python -m hvdagent doctor`` and ``python -m hvdagent horovodrun ...``."""

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
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["horovodrun"]:  # its arguments are horovodrun's, not ours
        from hvdagent._runtime import horovodrun as _horovodrun

        return _horovodrun.main(argv[1:])
    args = parser.parse_args(argv)
    if args.command == "doctor":
        from hvdagent._runtime import doctor as _doctor

        return _doctor.run()
    return 2


if __name__ == "__main__":
    sys.exit(main())
