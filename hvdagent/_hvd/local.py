"""The single-process backend: size 1, every collective is an identity.

Chosen when no launcher started the process. It never imports Horovod, so
``agent.fit``, ``evaluate``, ``predict`` and ``save`` work where Horovod is not
installed (a laptop, a notebook, a serving box).
"""

from __future__ import annotations

from typing import Any, List, Optional

from hvdagent._hvd.backend import PlainStartup, Startup

__all__ = ["LocalBackend"]


class LocalBackend:
    """One process; nothing to synchronise."""

    name = "local"

    def __init__(self, startup: Startup = PlainStartup()):
        self._startup = startup

    def init(self) -> None:
        self._startup.local()

    def is_initialized(self) -> bool:
        return True

    def shutdown(self) -> None:
        pass

    def rank(self) -> int:
        return 0

    def size(self) -> int:
        return 1

    local_rank = cross_rank = rank
    local_size = cross_size = size

    def allreduce(self, tensors: List[Any], op: str = "sum", compression: Optional[str] = None,
                  name: Optional[str] = None) -> List[Any]:
        return tensors

    def allreduce_sparse(self, value, op: str = "sum", name: Optional[str] = None):
        return value

    def broadcast_variables(self, variables, root_rank: int = 0) -> None:
        pass

    def broadcast_object(self, obj: Any, root_rank: int = 0, name: Optional[str] = None) -> Any:
        return obj

    def allgather_object(self, obj: Any, name: Optional[str] = None) -> List[Any]:
        return [obj]

    def allreduce_object(self, value: float, op: str = "sum", name: Optional[str] = None) -> float:
        return value

    def barrier(self) -> None:
        pass
