"""``hvdagent install-horovod``: Horovod built for this Python environment's TensorFlow.

Horovod is published as source and must be compiled against the TensorFlow it
loads into; ``pip install horovod`` fails on TensorFlow >= 2.19. This command
runs the one recipe the project uses (``ci/setup.sh`` calls it too):

1. checks TensorFlow (2.16 to 2.21; anything else is refused) and what the
   build needs from the machine: a C++17 compiler, make, cmake below 4 (a
   private one from PyPI when the machine has none), highwayhash and farmhash
   headers (TensorFlow ships them), Open MPI (optional: Gloo only without it);
   what is missing is named with the command that installs it;
2. takes the wheel from the cache (keyed by the Horovod, TensorFlow and Python
   versions, the controllers and the machine), or compiles it (5 to 10 minutes
   on 2 cores) and caches it;
3. installs it into this environment and proves it: ``horovodrun
   --check-build`` and a 2-process allreduce (Gloo, and MPI when built).

Nothing here needs root. Usage::

    hvdagent install-horovod              # or: python -m hvdagent install-horovod
    hvdagent install-horovod --check      # only say what would happen
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Callable, List

from hvdagent._install import recipe, system, verify

PREFIX = "[install-horovod]"


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"--jobs must be a whole number of at least 1. Received: jobs={text}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--check", action="store_true",
                        help="check the environment and the cache, build nothing (exit 1 when something is missing)")
    parser.add_argument("--mpi", choices=("auto", "on", "off"), default="auto",
                        help="build with MPI: auto (when Open MPI is installed, the default), on (fail without it), off")
    parser.add_argument("--cache-dir", default=None,
                        help="where built wheels are kept (default: $HVDAGENT_WHEEL_CACHE, else "
                             "${XDG_CACHE_HOME:-~/.cache}/hvdagent/wheels)")
    parser.add_argument("--force", action="store_true", help="compile again even when a cached wheel exists")
    parser.add_argument("--jobs", type=_positive_int, default=os.cpu_count() or 1,
                        help="parallel compile jobs (default: the number of CPUs)")


def _print(text: str) -> None:
    print(text, flush=True)  # each step shows as it happens, also through a pipe or a log file


def run(args: argparse.Namespace, out: Callable[[str], None] = _print) -> int:
    """Do the steps of the module docstring; 0 when Horovod works, 1 otherwise."""
    say = lambda text: out(f"{PREFIX} {text}")  # noqa: E731
    try:
        return _run(args, say)
    except (recipe.InstallError, verify.VerifyError) as err:
        say(f"FAILED: {err}")
        return 1


def _run(args: argparse.Namespace, say: Callable[[str], None]) -> int:
    say(f"python {sys.version.split()[0]} ({sys.executable})")
    tf = recipe.find_tensorflow()
    recipe.check_supported(tf.version)
    say(f"tensorflow {tf.version}: supported ({'%d.%d' % recipe.TF_OLDEST} to {'%d.%d' % recipe.TF_NEWEST})")
    mpi_finding, with_mpi = system.mpi(args.mpi)
    key = recipe.wheel_key(tf.version, with_mpi)
    cache = Path(args.cache_dir).expanduser().resolve() if args.cache_dir else recipe.default_cache()
    wheel = None if args.force else recipe.cached_wheel(cache, key)
    installed = recipe.installed_key() == key and not args.force

    findings: List[system.Finding] = [mpi_finding]
    cmake = folders = None
    if not (installed or wheel):  # only a compilation needs the tools
        cmake_finding, cmake = system.cmake()
        header_findings, folders = system.bundled_headers(tf.include)
        findings = [system.compiler(), system.make(), cmake_finding, *header_findings, mpi_finding]
    for f in findings:
        say(f"{f.what}: {f.found or 'MISSING'}{f' ({f.note})' if f.note else ''}")
    missing = [f for f in findings if f.missing]
    if missing:
        packages = [p for f in missing for p in f.packages]
        say(f"missing: {', '.join(f.what for f in missing)}. Install them with:\n    {system.install_line(packages)}\n"
            f"then run `hvdagent install-horovod` again.")
        return 1
    state = ("installed" if installed else f"cached wheel {wheel}" if wheel else
             f"not cached: will compile (5 to 10 minutes on 2 cores) into {cache / key}")
    say(f"Horovod {recipe.HOROVOD_VERSION} build {key}: {state}")
    if args.check:
        return 0

    if not installed:
        if wheel is None:
            say(f"compiling Horovod {recipe.HOROVOD_VERSION} for TensorFlow {tf.version} with {args.jobs} jobs")
            wheel = recipe.build_wheel(tf=tf, with_mpi=with_mpi, cmake=cmake, extra_includes=folders,
                                       out_dir=cache / key, cache=cache, jobs=args.jobs, say=say)
            say(f"cached {wheel}")
        recipe.install_wheel(wheel, key, say)
    say(f"horovodrun --check-build: {', '.join(verify.built_with(with_mpi))} built")
    for controller in ["gloo"] + (["mpi"] if with_mpi else []):
        say(verify.allreduce(controller))
    say(f"Horovod {recipe.HOROVOD_VERSION} works with TensorFlow {tf.version}. "
        "Try: horovodrun -np 2 python examples/train_digits.py")
    return 0
