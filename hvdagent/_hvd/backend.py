"""The interface every backend implements, and the start-up hooks a backend runs.

:class:`Backend` is what the rest of hvdagent may ask of the process's
backend (through the functions of :mod:`hvdagent._hvd`): who am I, and the
collectives. :class:`~hvdagent._hvd.local.LocalBackend` and
:class:`~hvdagent._hvd.horovod_backend.HorovodBackend` implement it.

:class:`Startup` is what happens around initialisation that is not Horovod's
business (binding threads to cores, the start-up checks across ranks). The
seam imports nothing above it: the package hands its start-up down with
:func:`hvdagent._hvd.use_startup` when it is imported; without it, a backend
just initialises.
"""

from __future__ import annotations

from typing import Any, Callable, List, Optional, Protocol, Sequence, Tuple

__all__ = ["Backend", "Startup", "PlainStartup", "OPS"]

OPS = ("average", "sum", "adasum")  # the reduction ops, as the whole package names them


class Backend(Protocol):
    name: str

    def init(self) -> None: ...
    def is_initialized(self) -> bool: ...
    def shutdown(self) -> None: ...
    def rank(self) -> int: ...
    def size(self) -> int: ...
    def local_rank(self) -> int: ...
    def local_size(self) -> int: ...
    def cross_rank(self) -> int: ...
    def cross_size(self) -> int: ...
    def allreduce(self, tensors: List[Any], op: str = "sum", compression: Optional[str] = None,
                  name: Optional[str] = None) -> List[Any]: ...
    def allreduce_sparse(self, value: Any, op: str = "sum", name: Optional[str] = None) -> Any: ...
    def broadcast_variables(self, variables: Sequence[Any], root_rank: int = 0) -> None: ...
    def broadcast_object(self, obj: Any, root_rank: int = 0, name: Optional[str] = None) -> Any: ...
    def allgather_object(self, obj: Any, name: Optional[str] = None) -> List[Any]: ...
    def allreduce_object(self, value: float, op: str = "sum", name: Optional[str] = None) -> float: ...
    def barrier(self) -> None: ...


KV = Tuple[Callable[[str, Any], bool], Callable[[str], Any]]


class Startup(Protocol):
    def local(self) -> None:
        """One process without a launcher is starting (checks only; nothing to bind)."""

    def before_init(self) -> None:
        """A launched rank is about to initialise Horovod (no Horovod thread exists yet)."""

    def checked_init(self, init: Callable[[], None], allgather_object: Callable[..., list], kv: KV) -> None:
        """Call ``init()`` between the start-up checks (``allgather_object`` works after it)."""


class PlainStartup:
    """No hooks: initialise and nothing else."""

    def local(self) -> None:
        pass

    def before_init(self) -> None:
        pass

    def checked_init(self, init, allgather_object, kv) -> None:
        init()
