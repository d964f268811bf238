"""Process helpers: who am I in the job? They work under plain ``python`` (one
process, no launcher) and under ``horovodrun``/``mpirun``."""

from __future__ import annotations

from hvdagent import _hvd

__all__ = ["init", "rank", "size", "local_rank", "local_size", "is_chief"]


def init() -> None:
    """Initialise this process's backend. Idempotent: later calls do nothing.

    Under a launcher (``horovodrun``, ``mpirun``, ``hvdagent.launch``, Ray,
    Spark) that is Horovod; without one, a local single-process backend that
    needs no Horovod. Every other helper calls it on first use, so calling it
    is optional.

    Raises:
        HorovodUnavailableError: a launched process whose Horovod is missing
            or broken (the message says how to fix it).
    """
    _hvd.init()


def rank() -> int:
    """This process's rank, ``0 .. size() - 1`` (0 without a launcher)."""
    return _hvd.rank()


def size() -> int:
    """The number of processes in the job (1 without a launcher)."""
    return _hvd.size()


def local_rank() -> int:
    """This process's rank among the processes on its machine."""
    return _hvd.local_rank()


def local_size() -> int:
    """The number of processes on this machine."""
    return _hvd.local_size()


def is_chief() -> bool:
    """True on rank 0, the process that logs and writes files."""
    return _hvd.rank() == 0
