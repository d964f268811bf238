"""Stall detection: a job whose ranks stop making progress ends, with a report.

A rank that hangs without failing (blocked on I/O, waiting forever for a peer
that is stuck) would otherwise keep every other rank waiting in a collective
forever; Horovod's own stall check only warns. Each rank runs one daemon
thread. ``beat(step)`` (called by the agent at every batch) records progress
and, every few seconds, publishes it to horovodrun's key-value store. When a
rank sees no progress of its own for ``timeout`` seconds, it prints which ranks
are behind (those whose last published step is the lowest) and exits with
status :data:`STALL_EXIT_CODE`; the launcher then stops the other ranks.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from typing import List, Optional

from hvdagent import _hvd

STALL_EXIT_CODE = 75
PUBLISH_EVERY_S = 2.0


class Watchdog:
    def __init__(self, timeout: float):
        self.timeout = float(timeout)
        self.rank, self.size = _hvd.rank(), _hvd.size()
        self._last = time.monotonic()
        self._step = 0
        self.in_step = False  # inside a training step (which holds collectives)
        self._published = 0.0
        self._armed = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="hvdagent-watchdog", daemon=True)
        self._thread.start()

    def arm(self) -> None:
        self.beat(self._step)
        self._armed = True

    def disarm(self) -> None:
        self._armed = False

    def close(self) -> None:
        self._stop.set()

    def beat(self, step: int) -> None:
        now = time.monotonic()
        self._last, self._step = now, step
        if now - self._published >= PUBLISH_EVERY_S:
            self._published = now
            self._publish()

    def _waiting(self) -> bool:
        return self.in_step or _hvd.WAITING_IN is not None

    def _publish(self) -> None:
        _hvd.kv_put(f"rank-{self.rank}", (self._step, self._waiting(), time.time()))

    def behind(self) -> Optional[List[int]]:
        """The ranks that stopped: the lowest step, preferring ranks that are
        not waiting in a collective (None if the store is unavailable)."""
        states = {}
        for r in range(self.size):
            value = _hvd.kv_get(f"rank-{r}")
            if value:
                states[r] = (value[0], bool(value[1]))
        if len(states) < self.size:
            missing = [r for r in range(self.size) if r not in states]
            return missing if states else None
        low = min(step for step, _ in states.values())
        lowest = [r for r, (step, _) in sorted(states.items()) if step == low]
        stuck = [r for r in lowest if not states[r][1]]
        return stuck or lowest

    def _run(self) -> None:
        final_published = None
        while not self._stop.wait(min(1.0, self.timeout / 4)):
            if not self._armed:
                continue
            idle = time.monotonic() - self._last
            if idle > self.timeout / 3 and final_published != self._step:
                # Every rank of a stalled job goes idle: each publishes its
                # exact step, so the report compares fresh numbers.
                final_published = self._step
                self._publish()
            if idle > self.timeout:
                self._report_and_exit()

    def _report_and_exit(self) -> None:
        behind = self.behind()
        who = f"rank(s) {behind} stopped making progress" if behind else "the ranks that stopped could not be identified"
        sys.stderr.write(
            f"[rank {self.rank}] hvdagent: stall detected: no training progress for {self.timeout:.0f} s "
            f"(this rank is at step {self._step}); {who}. Ending the job instead of waiting forever "
            f"(set stall_timeout= on DistributedAgent to change the limit).\n"
        )
        sys.stderr.flush()
        os._exit(STALL_EXIT_CODE)


_WATCHDOG: Optional[Watchdog] = None


def get(timeout: float) -> Watchdog:
    """The process's watchdog, created on first use (its timeout updated)."""
    global _WATCHDOG
    if _WATCHDOG is None:
        _WATCHDOG = Watchdog(timeout)
    _WATCHDOG.timeout = float(timeout)
    return _WATCHDOG
