"""Bind each rank to its own share of its machine's cores (opt-in).

``HVDAGENT_BIND=cores`` in the launch environment (or in ``os.environ`` before
``hvdagent.init()``) gives every rank on a machine a disjoint, contiguous
slice of the CPUs the launcher allowed, for all of the rank's threads
(TensorFlow's, Horovod's, the input pipeline's), before Horovod starts::

    HVDAGENT_BIND=cores horovodrun --gloo -np 2 python train.py

Without it (``none``, the default) the operating system places the threads,
as under plain Horovod. It is meant for dedicated many-core nodes, where
binding ranks is common practice (``mpirun --bind-to core`` for MPI jobs) and
Gloo's launcher has none; on the 2-core benchmark machine it measured neutral
(docs/benchmarks.md). It is not the default: on a node shared with other
jobs, or where the launcher already binds (``mpirun --bind-to``, Slurm's
``--cpu-bind``), binding unasked is wrong. A rank the launcher already bound
keeps its binding.

>>> core_slice([0, 1, 2, 3, 4, 5, 6, 7], local_rank=1, local_size=2)
[4, 5, 6, 7]
>>> [core_slice([0, 1, 2, 3, 4], r, 3) for r in range(3)]
[[0], [1, 2], [3, 4]]
>>> [core_slice([0, 1], r, 3) for r in range(3)]  # more ranks than cores: shared round-robin
[[0], [1], [0]]
"""

from __future__ import annotations

import os
from typing import List, Mapping, Optional

__all__ = ["ENV", "MODES", "bind_from_env", "core_slice", "mode_from_env"]

ENV = "HVDAGENT_BIND"
MODES = ("none", "cores")
_LOCAL = (("HOROVOD_LOCAL_RANK", "HOROVOD_LOCAL_SIZE"),
          ("OMPI_COMM_WORLD_LOCAL_RANK", "OMPI_COMM_WORLD_LOCAL_SIZE"))


def mode_from_env(environ: Mapping[str, str] = os.environ) -> str:
    """The binding asked for: ``none`` (default) or ``cores``.

    Raises:
        ValueError: ``HVDAGENT_BIND`` holds something else.
    """
    raw = environ.get(ENV, "")
    mode = raw.strip().lower() or "none"
    if mode not in MODES:
        raise ValueError(f"hvdagent: {ENV} must be one of {', '.join(MODES)}. Received: {ENV}={raw!r}")
    return mode


def core_slice(cpus: List[int], local_rank: int, local_size: int) -> List[int]:
    """The CPUs of ``local_rank``: contiguous and disjoint slices covering
    ``cpus`` (sizes differ by at most one); one CPU each, round-robin, when
    there are more ranks than CPUs."""
    cpus = sorted(cpus)
    n = len(cpus)
    if local_size > n:
        return [cpus[local_rank % n]]
    return cpus[local_rank * n // local_size:(local_rank + 1) * n // local_size]


def _local_rank_and_size(environ: Mapping[str, str]):
    for rank_key, size_key in _LOCAL:
        try:
            return int(environ[rank_key]), int(environ[size_key])
        except (KeyError, ValueError):
            continue
    return None


def _bound_by_launcher() -> bool:
    """Our CPUs differ from our parent's (the launcher's): someone placed this rank already."""
    try:
        return os.sched_getaffinity(0) != os.sched_getaffinity(os.getppid())
    except OSError:
        return False


def bind_from_env(environ: Mapping[str, str] = os.environ) -> Optional[List[int]]:
    """Apply ``HVDAGENT_BIND`` to this process (every thread it has, and so
    every thread it starts later). Returns the CPUs it is bound to, or None
    when nothing was done: binding not asked for, not a launched rank, a rank
    the launcher bound already, or no CPU affinity on this system.

    Raises:
        ValueError: ``HVDAGENT_BIND`` holds an unknown mode.
    """
    if mode_from_env(environ) == "none":
        return None
    local = _local_rank_and_size(environ)
    if local is None or not hasattr(os, "sched_setaffinity") or _bound_by_launcher():
        return None
    mine = core_slice(sorted(os.sched_getaffinity(0)), *local)
    try:
        threads = [int(t) for t in os.listdir("/proc/self/task")]
    except OSError:
        threads = [0]
    for tid in threads:
        try:
            os.sched_setaffinity(tid, mine)
        except OSError:
            pass  # a thread that ended meanwhile
    return mine
