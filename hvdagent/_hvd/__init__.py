"""The seam: every call hvdagent makes into Horovod goes through this package.

It is the only part of hvdagent that imports ``horovod``, and it imports
nothing of hvdagent above it (both checked by ``tests/test_architecture.py``).
The rest of the package talks to *the backend*, an object chosen once per
process, that implements :class:`~hvdagent._hvd.backend.Backend`:

* :class:`~hvdagent._hvd.local.LocalBackend` when the process was not started
  by a launcher (plain ``python script.py``, a notebook, a serving box): size
  1, collectives are identities, and Horovod is never imported, so it need not
  even be installed;
* :class:`~hvdagent._hvd.horovod_backend.HorovodBackend` under ``horovodrun``,
  ``mpirun``, ``hvdagent.launch``, Ray or Spark: Horovod's collectives over
  Gloo or MPI. If Horovod is missing or broken there, the first call raises
  :class:`HorovodUnavailableError` saying how to get it.

The module-level functions below are the whole vocabulary the package uses;
each delegates to the backend. What happens around initialisation that is
not Horovod's business (CPU binding, the start-up checks) is handed down by
the package with :func:`use_startup`.

>>> from hvdagent import _hvd
>>> _hvd.size(), _hvd.rank(), _hvd.allgather_object("x")
(1, 0, ['x'])
"""

from __future__ import annotations

import os
import threading
from typing import Any, List, Optional, Sequence

from hvdagent._hvd.backend import OPS, Backend, PlainStartup, Startup
from hvdagent._hvd.errors import HorovodUnavailableError
from hvdagent._hvd.local import LocalBackend

__all__ = [
    "HorovodUnavailableError",
    "OPS",
    "LAUNCHER_ENV",
    "use_startup",
    "launcher_rank",
    "backend",
    "init",
    "is_initialized",
    "is_launched",
    "rank",
    "size",
    "local_rank",
    "local_size",
    "cross_rank",
    "cross_size",
    "allreduce",
    "allreduce_sparse",
    "broadcast_variables",
    "broadcast_object",
    "allgather_object",
    "allreduce_object",
    "barrier",
    "shutdown",
]

# Environment variables by which a launcher tells a process its rank.
LAUNCHER_ENV = (
    "HOROVOD_RANK",  # horovodrun --gloo, hvdagent.launch, Ray, Spark (Gloo)
    "OMPI_COMM_WORLD_RANK",  # Open MPI's mpirun / horovodrun --mpi
    "PMI_RANK",  # MPICH, Intel MPI
    "PMIX_RANK",
)

_LOCK = threading.Lock()
_BACKEND: Optional[Backend] = None
_STARTUP: Startup = PlainStartup()


def use_startup(startup: Startup) -> None:
    """The start-up hooks every backend runs when it initialises (see :class:`~hvdagent._hvd.backend.Startup`)."""
    global _STARTUP
    _STARTUP = startup


def is_launched() -> bool:
    """True when this process was started by a Horovod/MPI launcher."""
    return any(name in os.environ for name in LAUNCHER_ENV)


def launcher_rank(environ=os.environ) -> Optional[int]:
    """The rank a launcher gave this process in its environment (None without a launcher)."""
    for name in LAUNCHER_ENV:
        if name in environ:
            return int(environ[name])
    return None


def backend():
    """The process's backend (see the module docstring); chosen on first use."""
    global _BACKEND
    if _BACKEND is None:
        with _LOCK:
            if _BACKEND is None:
                if is_launched():
                    from hvdagent._hvd.horovod_backend import HorovodBackend

                    _BACKEND = HorovodBackend(_STARTUP)
                else:
                    _BACKEND = LocalBackend(_STARTUP)
    return _BACKEND


def init() -> None:
    """Initialise the backend once (Horovod under a launcher); later calls do nothing."""
    backend().init()


def is_initialized() -> bool:
    return _BACKEND is not None and _BACKEND.is_initialized()


def shutdown() -> None:
    if _BACKEND is not None:
        _BACKEND.shutdown()


def rank() -> int:
    return backend().rank()


def size() -> int:
    return backend().size()


def local_rank() -> int:
    return backend().local_rank()


def local_size() -> int:
    return backend().local_size()


def cross_rank() -> int:
    return backend().cross_rank()


def cross_size() -> int:
    return backend().cross_size()


# --- collectives ------------------------------------------------------------


def allreduce(tensors: Sequence[Any], op: str = "sum", compression: Optional[str] = None,
              name: Optional[str] = None) -> List[Any]:
    """Reduce a list of dense tensors across ranks in one fused collective.

    Works eagerly and inside ``tf.function``. ``op`` is ``"sum"``,
    ``"average"`` or ``"adasum"``; ``compression`` is ``None``, ``"fp16"`` or
    ``"bf16"``: floating tensors of two or more elements travel in that type
    and come back in their own (scalars, such as batch counts, travel exactly).
    """
    return backend().allreduce(list(tensors), op=op, compression=compression, name=name)


def allreduce_sparse(value, op: str = "sum", name: Optional[str] = None):
    """Reduce a ``tf.IndexedSlices`` by gathering indices and values."""
    return backend().allreduce_sparse(value, op=op, name=name)


def broadcast_variables(variables: Sequence[Any], root_rank: int = 0) -> None:
    """Overwrite ``variables`` on every rank with ``root_rank``'s values."""
    backend().broadcast_variables(list(variables), root_rank=root_rank)


def broadcast_object(obj: Any, root_rank: int = 0, name: Optional[str] = None) -> Any:
    """Return ``root_rank``'s picklable ``obj`` on every rank."""
    return backend().broadcast_object(obj, root_rank=root_rank, name=name)


def allgather_object(obj: Any, name: Optional[str] = None) -> List[Any]:
    """Return the list of every rank's picklable ``obj``, in rank order."""
    return backend().allgather_object(obj, name=name)


def allreduce_object(value: float, op: str = "sum", name: Optional[str] = None) -> float:
    """Reduce one Python number across ranks (eagerly)."""
    return backend().allreduce_object(value, op=op, name=name)


def barrier() -> None:
    """Block until every rank reaches this point."""
    backend().barrier()


# --- the launcher's key-value store, elastic training, the doctor ------------
# (Horovod's runner and elastic modules; imported lazily by _runner.)

from hvdagent._hvd.runner import elastic_run, kv_get, kv_put, make_elastic_state, probe  # noqa: E402,F401


# --- cluster engines: hvdagent.launch(engine="ray" | "spark") -----------------
# (Horovod's Ray and Spark runners; imported lazily by _engines.)

from hvdagent._hvd.engines import ray_executor, spark_next_job_group, spark_run  # noqa: E402,F401
