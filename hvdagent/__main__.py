"""Command line: ``python -m hvdagent doctor``."""

from __future__ import annotations

import argparse
import sys


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hvdagent", description="hvdagent tools")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("doctor", help="report versions and check that Horovod matches TensorFlow")
    args = parser.parse_args(argv)
    if args.command == "doctor":
        from hvdagent._runtime import doctor as _doctor

        return _doctor.run()
    return 2


if __name__ == "__main__":
    sys.exit(main())
