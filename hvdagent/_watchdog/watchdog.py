"""Failure detection: a lost peer ends the job fast, a real hang ends it late.

Two questions, answered separately by one daemon thread per rank:

* **Is every peer alive?** (liveness, ``peer_timeout``, default 20 s). Every
  rank sends a small UDP heartbeat to rank 0 each second and rank 0 answers
  each one. The thread runs whatever the main thread does (a long callback, a
  compile, a checkpoint write), so a slow rank is never taken for a dead one.
  A rank that stops answering (its host died, its link was cut, the process
  was frozen) is reported by rank 0, naming the ranks and their hosts, and the
  job ends with status :data:`PEER_LOST_EXIT_CODE`; ranks that lose rank 0
  end themselves. Under MPI this is what ends a job whose host vanished from
  the network (collectives over a dead TCP link wait for hours), and ``mpirun``
  must learn of it first (``hvdagent._watchdog.launcher``).
* **Is the job making progress?** (``stall_timeout``, default 600 s, like
  PyTorch's process-group timeout). Progress is read by the thread from the
  optimizer's iteration counter and from epoch/validation boundaries, not
  from per-batch callbacks (which would switch off Keras' asynchronous
  dispatch). Rank 0 sees every rank's progress; when no rank has moved for
  ``stall_timeout`` seconds while all are alive, it reports which ranks are
  stuck (a rank blocked in user code, with the file and line, is named
  first) and the job ends with status :data:`STALL_EXIT_CODE`. Work that is
  known to be long pauses the clock: the agent's checkpoint writes run under
  :func:`hvdagent._watchdog.pause.paused` (public as
  ``hvdagent.watchdog_paused``), and so can the user's.

The heartbeat only starts after the first contact: if UDP between the hosts is
blocked, liveness checking switches itself off (with a warning) instead of
ending a healthy job. Elastic runs (``horovodrun --min-np/--max-np``) keep the
stall check but leave worker loss to Horovod's elastic driver.

Environment: ``HVDAGENT_PEER_TIMEOUT`` (seconds; ``0`` disables liveness).

This module holds the thread and its verdicts; next to it are the pause
(``pause``), where the main thread is (``main_thread``), the environment
(``env``) and what is done for Open MPI's ``mpirun`` (``launcher``).
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from typing import Callable, Dict, List, Optional, Tuple

from hvdagent._watchdog import pause
from hvdagent._watchdog.main_thread import main_thread_location
from hvdagent._watchdog.env import env_timeout, say
from hvdagent._watchdog.launcher import MpirunLink, end_local_mpi_daemon, launcher_grace

STALL_EXIT_CODE = 75
PEER_LOST_EXIT_CODE = 76
DEFAULT_STALL_TIMEOUT = 600.0
DEFAULT_PEER_TIMEOUT = 20.0
BEAT_EVERY_S = 1.0


class Watchdog:
    """One per process; :meth:`start_session` is called on every rank at the
    start of each ``fit`` (see ``hvdagent._watchdog.heartbeat``)."""

    def __init__(self):
        self.stall_timeout: Optional[float] = DEFAULT_STALL_TIMEOUT
        self.peer_timeout = env_timeout("HVDAGENT_PEER_TIMEOUT", DEFAULT_PEER_TIMEOUT)
        self.rank, self.size = 0, 1
        self.hosts: List[str] = []
        self.liveness = True
        self._progress_fn: Optional[Callable[[], int]] = None
        self._beats = 0
        self._armed = False
        self._last_progress = (None, -1)
        self._last_change = time.monotonic()
        self._session: Optional[str] = None
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sock.bind(("0.0.0.0", 0))
        self._sock.settimeout(0.2)
        self._lock = threading.Lock()
        self._reset_peers()
        self._counter: Optional[int] = None
        self._mpirun = MpirunLink()
        self._thread = threading.Thread(target=self._run, name="hvdagent-watchdog", daemon=True)
        self._thread.start()
        threading.Thread(target=self._read_progress, name="hvdagent-watchdog-progress", daemon=True).start()
        import atexit

        atexit.register(self.bye)

    # -- set-up (main thread) --
    def _reset_peers(self):
        self._targets: List[Tuple[str, int]] = []  # rank 0's candidate addresses (other ranks)
        self._rank0: Optional[Tuple[str, int]] = None
        self._last_reply: Optional[float] = None
        self._session_start = time.monotonic()
        self._warned = False
        self._announced: set = set()  # rank 0: lost ranks already named while the launcher has its grace
        self._peers: Dict[int, dict] = {}  # rank 0: last state per rank
        self._addr: Dict[int, Tuple[str, int]] = {}

    def port(self) -> int:
        return self._sock.getsockname()[1]

    def start_session(self, rank: int, size: int, session: str, rank0_addresses: List[Tuple[str, int]],
                      hosts: List[str], liveness: bool, stall_timeout: Optional[float]) -> None:
        """Watch this ``fit``'s ranks (``stall_timeout``: seconds without progress; None: no stall check)."""
        with self._lock:
            self.rank, self.size, self.hosts, self.liveness = rank, size, list(hosts), liveness
            self.stall_timeout = stall_timeout
            self._reset_peers()
            self._targets = list(rank0_addresses)
            self._mpirun.reset()
            self._session = session
            self._last_change = time.monotonic()

    def arm(self, progress_fn: Optional[Callable[[], int]]) -> None:
        self._progress_fn = progress_fn
        self.touch()
        self._armed = True

    def disarm(self) -> None:
        self._armed = False
        self.touch()

    def beat(self) -> None:
        """Record progress made outside the iteration counter (epoch ends, validation)."""
        self._beats += 1

    def touch(self) -> None:
        self._last_change = time.monotonic()

    def bye(self) -> None:
        """Tell rank 0 this rank leaves on purpose (process exit)."""
        if self._session is None or self.rank == 0:
            return
        msg = self._message(bye=True)
        for _ in range(3):
            for target in ([self._rank0] if self._rank0 else self._targets):
                try:
                    self._sock.sendto(msg, target)
                except OSError:
                    pass

    # -- state of this rank --
    def _read_progress(self) -> None:
        """Its own thread: reading a TensorFlow variable can block (seen while
        another rank's collective was failing); the heartbeat must not."""
        while True:
            fn = self._progress_fn
            if fn is not None:
                try:
                    self._counter = int(fn())
                except Exception:  # noqa: BLE001 (a variable being rebuilt; next second)
                    pass
            time.sleep(BEAT_EVERY_S)

    def _progress(self):
        return (self._counter, self._beats)

    def _local_state(self) -> dict:
        progress = self._progress()
        if progress != self._last_progress:
            self._last_progress = progress
            self._last_change = time.monotonic()
        paused_now = pause.is_paused()
        if paused_now:
            self._last_change = time.monotonic()
        else:  # a pause that just ended is not idle time
            self._last_change = max(self._last_change, pause.resumed_at())
        return {"p": list(progress), "a": self._armed, "z": paused_now,
                "i": round(time.monotonic() - self._last_change, 1),
                "w": main_thread_location() if self._armed else None}

    def _message(self, bye: bool = False, **extra) -> bytes:
        body = {"s": self._session, "r": self.rank, "b": bye}
        if not bye:
            body.update(self._local_state(), **({"l": 1} if self._mpirun.here else {}))  # l: on mpirun's host
        body.update(extra)
        return json.dumps(body).encode()

    # -- the thread --
    def _run(self) -> None:
        next_beat = 0.0
        while True:
            try:
                now = time.monotonic()
                if now >= next_beat:
                    next_beat = now + BEAT_EVERY_S
                    if self._session is not None and self.size > 1:
                        with self._lock:
                            self._tick(now)
                self._receive()
                if self._mpirun.pending():  # outside the lock
                    self._mpirun.act(self._who(), self.peer_timeout)
            except Exception as err:  # noqa: BLE001 (the watchdog must never crash the job)
                say(f"hvdagent: watchdog error (ignored): {type(err).__name__}: {err}\n")
                time.sleep(1)

    def _receive(self) -> None:
        try:
            data, addr = self._sock.recvfrom(65536)
        except (socket.timeout, BlockingIOError):
            return
        except OSError:  # ECONNREFUSED from an earlier send: the peer's port is closed
            return
        try:
            msg = json.loads(data.decode())
        except ValueError:
            return
        with self._lock:
            if msg.get("s") != self._session or self._session is None:
                return
            now = time.monotonic()
            if self.rank == 0:
                r = int(msg.get("r", -1))
                if 0 < r < self.size:
                    msg["t"] = now
                    self._peers[r] = msg
                    self._addr[r] = addr
                    if not msg.get("b"):
                        ack = {"s": self._session, "r": 0, "ack": True}
                        if self._mpirun.lost_hosts and MpirunLink.acting_rank(self._mpirun.here, self._peers) == r:
                            ack["lost"] = self._mpirun.lost_hosts  # for the rank on mpirun's host
                        self._sock.sendto(json.dumps(ack).encode(), addr)
            else:
                self._rank0 = self._rank0 or addr
                self._last_reply = now
                self._mpirun.queue(msg.get("lost"))
                verdict = msg.get("verdict")
                if verdict:
                    self._end(verdict["code"], verdict["text"], from_rank0=True)

    def _tick(self, now: float) -> None:
        if self.rank != 0:
            msg = self._message()
            for target in ([self._rank0] if self._rank0 else self._targets):
                try:
                    self._sock.sendto(msg, target)
                except OSError:
                    pass
            if not self.liveness or not self.peer_timeout:
                return
            if self._last_reply is None:
                if now - self._session_start > self.peer_timeout and not self._warned:
                    self._warned = True
                    say(
                        f"hvdagent: rank {self.rank} could not reach rank 0's heartbeat at {self._targets} "
                        f"(UDP blocked?); detecting lost hosts is off for this run.\n")
                return
            if now - self._last_reply > self.peer_timeout:
                host0 = self.hosts[0] if self.hosts else "?"
                if self._mpirun.here:  # mpirun must learn of the loss before this rank ends
                    self._mpirun.queue({host0: [self._rank0[0]] if self._rank0 else [a for a, _ in self._targets]})
                    self._mpirun.act(self._who(), self.peer_timeout, before_exit=True)
                self._end(PEER_LOST_EXIT_CODE,
                          f"lost contact with rank 0 on host {host0} (no heartbeat answer for {self.peer_timeout:.0f} s): "
                          f"that host is down or unreachable from {self._host(self.rank)}", lost_rank0=True)
            return
        # rank 0: the judge
        mine = self._local_state()
        states = {0: mine}
        lost = []
        for r in range(1, self.size):
            st = self._peers.get(r)
            if st is None:
                if self.liveness and self.peer_timeout and now - self._session_start > self.peer_timeout and not self._warned:
                    self._warned = True
                    say(f"hvdagent: rank 0 has no heartbeat from rank {r} (UDP blocked?); "
                                     "detecting lost hosts is off for that rank in this run.\n")
                continue
            if st.get("b"):
                continue
            states[r] = st
            if self.liveness and self.peer_timeout and now - st["t"] > self.peer_timeout:
                lost.append(r)
        grace = launcher_grace()
        if lost and grace:
            # Name the loss now (mpirun does not name the host of a cut-off daemon), end after the grace.
            self._announce(lost, states, now, grace)
            self._mpirun.note_lost(lost, states, self._host, self._addr)
            lost = [r for r in lost if now - states[r]["t"] > self.peer_timeout + grace]
        if lost:
            hosts = sorted({self._host(r) for r in lost})
            self._end(PEER_LOST_EXIT_CODE,
                      f"lost contact with rank(s) {lost} on host(s) {', '.join(hosts)} (no heartbeat for "
                      f"{self.peer_timeout:.0f} s): the host is down, its processes were killed or its network "
                      "is cut")
            return
        if not self.stall_timeout or not any(st.get("a") for st in states.values()):
            return
        if any(st.get("z") for st in states.values()):
            return
        idle = min(float(st.get("i", 0.0)) + (now - st.get("t", now)) for st in states.values())
        if idle > self.stall_timeout:
            self._end(STALL_EXIT_CODE, self._stall_text(states, idle))

    def _announce(self, lost: List[int], states: Dict[int, dict], now: float, grace: float) -> None:
        """Name newly lost ranks once, with the ranks of the same hosts already
        silent for a few beats (a healthy rank beats every second): a lost
        host's ranks are named together."""
        if all(r in self._announced for r in lost):
            return
        hosts = {self._host(r) for r in lost}
        new = sorted(r for r, st in states.items() if r and r not in self._announced
                     and self._host(r) in hosts and now - st["t"] > 3 * BEAT_EVERY_S)
        self._announced.update(new)
        say(f"{self._who()}lost contact with rank(s) {new} on host(s) "
            f"{', '.join(sorted({self._host(r) for r in new}))} (no heartbeat for {self.peer_timeout:.0f} s); "
            f"{self._mpirun.plan(states, self._host, grace)}\n")

    def _host(self, r: int) -> str:
        return self.hosts[r] if r < len(self.hosts) else "?"

    def _who(self) -> str:
        return f"[rank {self.rank} on {self._host(self.rank)}] hvdagent: "

    def _stall_text(self, states: Dict[int, dict], idle: float) -> str:
        busy = sorted(r for r, st in states.items() if st.get("w"))
        if busy:
            stuck = busy
            where = "; ".join(f"rank {r} on {self._host(r)} is in user code at {states[r]['w']}" for r in busy)
        else:
            def key(st):
                return tuple(-1 if v is None else v for v in st.get("p", [0, 0]))

            low = min(key(st) for st in states.values())
            stuck = sorted(r for r, st in states.items() if key(st) == low)
            where = "all ranks are inside TensorFlow/Horovod (a collective that some rank never joined?)"
        return (f"stall detected: no training progress on any rank for {idle:.0f} s; rank(s) {stuck} stopped "
                f"making progress ({where}). Ending the job instead of waiting forever (stall_timeout="
                f"{self.stall_timeout:.0f} s on DistributedAgent changes the limit; wrap legitimately long work "
                "in hvdagent's watchdog pause)")

    def _end(self, code: int, text: str, from_rank0: bool = False, lost_rank0: bool = False) -> None:
        if self.rank == 0:
            verdict = json.dumps({"s": self._session, "r": 0, "verdict": {"code": code, "text": text}}).encode()
            for addr in self._addr.values():
                try:
                    self._sock.sendto(verdict, addr)
                except OSError:
                    pass
        say(self._who() + (f"rank 0 reports: {text}" if from_rank0 else text) + f". Exit status {code}.\n")
        if lost_rank0:
            end_local_mpi_daemon()
        os._exit(code)


_WATCHDOG: Optional[Watchdog] = None
_GET_LOCK = threading.Lock()


def get() -> Watchdog:
    """The process's watchdog, created (and its thread started) on first use."""
    global _WATCHDOG
    with _GET_LOCK:
        if _WATCHDOG is None:
            _WATCHDOG = Watchdog()
    return _WATCHDOG
