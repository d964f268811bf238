"""``python -m hvdagent doctor``: a health report of the training stack.

Prints the versions of Python, TensorFlow, Keras (and which Keras is active),
Horovod, the controllers and tensor operations Horovod was built with, and
checks that Horovod's compiled library matches the installed TensorFlow.
Returns exit status 0 when healthy.
"""

from __future__ import annotations

import os
import platform
import sys
from typing import Callable, List, Tuple

REBUILD_HINT = (
    "Horovod must be compiled against the installed TensorFlow: run `hvdagent install-horovod` "
    "(or `python -m hvdagent install-horovod`), which builds it for this environment, caches the wheel "
    "and checks it with a 2-process allreduce"
)


def _version(module: str) -> str:
    try:
        mod = __import__(module)
        return getattr(mod, "__version__", "unknown")
    except Exception as err:  # noqa: BLE001 (any import failure is a finding)
        return f"not importable ({type(err).__name__}: {str(err).splitlines()[0][:160]})"


def _active_keras() -> str:
    if os.environ.get("TF_USE_LEGACY_KERAS") == "1":
        return f"Keras 2 (tf_keras {_version('tf_keras')}, TF_USE_LEGACY_KERAS=1)"
    return f"Keras 3 ({_version('keras')})"


def _horovod_report() -> Tuple[List[str], List[str]]:
    """Return (lines, problems)."""
    from hvdagent import _hvd
    from hvdagent._install import recipe as _recipe

    lines, problems = [], []
    version, hvd, err = _hvd.probe()
    if version is None:
        return ["horovod: not installed"], [f"Horovod is not installed. {REBUILD_HINT}"]
    lines.append(f"horovod: {version}")
    if hvd is None:  # NotFoundError/OSError/ImportError on ABI breaks
        text = str(err).splitlines()[0][:300] if str(err) else type(err).__name__
        if "undefined symbol" in text or "mpi_lib" in text or "NotFoundError" in type(err).__name__:
            problems.append(
                f"Horovod's TensorFlow library does not load against TensorFlow {_version('tensorflow')} "
                f"({type(err).__name__}: {text}); it was built for another TensorFlow. {REBUILD_HINT}"
            )
        else:
            problems.append(f"import horovod.tensorflow failed ({type(err).__name__}: {text}). {REBUILD_HINT}")
        return lines, problems
    flag = lambda f: "yes" if f() else "no"  # noqa: E731
    lines.append(f"controllers: gloo={flag(hvd.gloo_built)} mpi={flag(hvd.mpi_built)}")
    lines.append(
        "tensor operations: "
        f"gloo={flag(hvd.gloo_built)} mpi={flag(hvd.mpi_built)} nccl={flag(hvd.nccl_built)} "
        f"ddl={flag(hvd.ddl_built)} ccl={flag(hvd.ccl_built)} cuda={flag(hvd.cuda_built)}"
    )
    if not (hvd.gloo_built() or hvd.mpi_built()):
        problems.append(f"Horovod has neither Gloo nor MPI: it cannot run collectives. {REBUILD_HINT}")
    marker = os.path.join(sys.prefix, _recipe.MARKER)
    if os.path.exists(marker):
        key = open(marker).read().strip()
        lines.append(f"horovod build: {key}")
        tf_version = _version("tensorflow")
        if f"-tf{tf_version}-" not in key:
            problems.append(
                f"Horovod was built for another TensorFlow ({key}) but TensorFlow {tf_version} is installed. {REBUILD_HINT}"
            )
    return lines, problems


def _smoke_test() -> List[str]:
    from hvdagent import _hvd

    try:
        _hvd.init()
        return [f"horovod init: ok (rank {_hvd.rank()} of {_hvd.size()})"]
    except Exception as err:  # noqa: BLE001
        raise RuntimeError(f"hvd.init() failed: {type(err).__name__}: {err}") from err


def _gloo_hostname_line() -> str:
    """Horovod 0.28.1's Gloo across hosts needs this host's name to resolve to a
    routable address (see hvdagent._runtime.preflight); a note, not a failure: one
    machine does not need it."""
    import socket

    from hvdagent._runtime import preflight as _preflight

    problem = _preflight.hostname_problem()
    if problem is None:
        name = socket.gethostname()
        addresses = sorted({i[4][0] for i in socket.getaddrinfo(name, None, socket.AF_INET)})
        return f"gloo across hosts: ok (hostname {name!r} resolves to {', '.join(addresses)})"
    return f"gloo across hosts: NOTE (fine on one machine; `horovodrun --gloo` across hosts would fail): {problem}"


def run(out: Callable[[str], None] = print) -> int:
    """Print the report through ``out``; return 0 when healthy, 1 otherwise."""
    from hvdagent._version import __version__

    out(f"hvdagent: {__version__}")
    out(f"python: {platform.python_version()} ({sys.executable})")
    out(f"tensorflow: {_version('tensorflow')}")
    out(f"keras: {_version('keras')}")
    out(f"tf_keras: {_version('tf_keras')}")
    out(f"active keras: {_active_keras()}")
    out(_gloo_hostname_line())
    lines, problems = _horovod_report()
    for line in lines:
        out(line)
    if not problems:
        try:
            for line in _smoke_test():
                out(line)
        except RuntimeError as err:
            problems.append(str(err))
    if problems:
        for p in problems:
            out(f"PROBLEM: {p}")
        out("status: unhealthy")
        return 1
    out("status: healthy")
    return 0
