"""The stall clock's pause: work known to be long stops the watchdog's stall
clock while it runs (liveness keeps running).

This module owns the pause state; the watchdog (``hvdagent._watchdog.watchdog``) asks
it through :func:`is_paused` and :func:`resumed_at`. It is public as
``hvdagent.watchdog_paused``; the agent's checkpoint writes use it too.
"""

from __future__ import annotations

import contextlib
import threading
import time
from typing import Iterator

_PAUSED = 0
_RESUMED_AT = float("-inf")
_PAUSE_LOCK = threading.Lock()


@contextlib.contextmanager
def paused(reason: str = "long operation") -> Iterator[None]:
    """Stop the stall clock while the block runs (liveness keeps running).

    Use it around work that legitimately makes no training progress for a
    long time on some ranks while the others wait, for example a large
    checkpoint written by rank 0:

        >>> import hvdagent
        >>> with hvdagent.watchdog_paused("checkpoint"):
        ...     pass
    """
    global _PAUSED, _RESUMED_AT
    with _PAUSE_LOCK:
        _PAUSED += 1
    try:
        yield
    finally:
        with _PAUSE_LOCK:
            _PAUSED -= 1
            _RESUMED_AT = time.monotonic()


def is_paused() -> bool:
    """True while any thread of this process is inside :func:`paused`."""
    return _PAUSED > 0


def resumed_at() -> float:
    """``time.monotonic()`` when a :func:`paused` block last ended (``-inf``: never).

    The stall clock counts from there at the latest: a pause that just ended
    is not idle time.
    """
    return _RESUMED_AT
