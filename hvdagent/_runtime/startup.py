"""hvdagent's start-up, handed down to the seam (:func:`hvdagent._hvd.use_startup`).

What a process does around initialising its backend that is not Horovod's
business: CPU binding (:mod:`~hvdagent._runtime.binding`, before any Horovod
thread exists) and the start-up checks across ranks
(:mod:`~hvdagent._runtime.preflight`, around ``hvd.init()``).
"""

from __future__ import annotations

from hvdagent._runtime import binding, preflight

__all__ = ["Startup"]


class Startup:
    """Implements :class:`hvdagent._hvd.backend.Startup`."""

    def local(self) -> None:
        binding.mode_from_env()  # one process has nothing to bind, but a bad HVDAGENT_BIND is still an error

    def before_init(self) -> None:
        binding.bind_from_env()

    def checked_init(self, init, allgather_object, kv) -> None:
        preflight.checked_init(init, allgather_object, kv=kv)
