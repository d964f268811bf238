"""What the watchdog does for Open MPI's ``mpirun``, so that a job whose host
was lost ends, launcher included.

``mpirun`` (Open MPI 4.1) starts one daemon (``orted``) per host over ssh and
exits once every daemon has ended. A host that vanishes from the network (its
link cut, its power lost) leaves its daemon unreachable and ``mpirun`` does
not notice: ssh without keep-alive stays silent, and so does the daemon's TCP
connection. Worse, once any rank has ended, ``mpirun`` orders the daemons to
stop and from then on ignores the end of an ssh session: it waits for the
lost daemon for as long as TCP retransmits (about 15 minutes). So ``mpirun``
must learn of the loss *before* any rank ends:

* where a rank runs on ``mpirun``'s host (its parent is ``mpirun``), the
  lowest such rank ends ``mpirun``'s ssh session to a host all of whose ranks
  are lost (:meth:`MpirunLink.act`); ``mpirun`` then reports that host's
  daemon as failed and ends the job at once;
* elsewhere ``mpirun`` has :data:`MPI_LAUNCHER_GRACE_S` to notice by itself:
  Open MPI's keep-alive on its daemons' connections (which
  ``python -m hvdagent horovodrun`` sets) or ssh's ``ServerAliveInterval``.
  Then the ranks end themselves.

A rank cut off from rank 0 also ends its host's ``orted``
(:func:`end_local_mpi_daemon`), which would otherwise wait for orders that
cannot arrive. Nothing here acts outside Open MPI.
"""

from __future__ import annotations

import os
import socket
import time
from typing import Callable, Dict, List, Optional, Sequence

from hvdagent._watchdog.env import say

MPI_LAUNCHER_GRACE_S = 40.0
MPIRUN_ACTS_S = 10.0  # a rank about to end waits this long for mpirun to act on an ended session
LAUNCHER_NAMES = ("mpirun", "mpiexec", "orterun")
REMOTE_SHELLS = ("ssh", "rsh")
_SSH_OPTIONS_WITH_VALUE = set("BbcDEeFIiJLlmOoPpQRSWw")  # ssh -p 22 -i key host ...


def under_open_mpi() -> bool:
    return "OMPI_COMM_WORLD_RANK" in os.environ


def launcher_grace() -> float:
    """Seconds rank 0 gives ``mpirun`` to notice a lost host itself before the
    ranks end (0 when not under Open MPI: other launchers end on a rank's exit)."""
    return MPI_LAUNCHER_GRACE_S if under_open_mpi() else 0.0


def _parent():
    try:
        import psutil

        return psutil.Process(os.getppid())
    except Exception:  # noqa: BLE001 (no parent to speak of)
        return None


def on_mpirun_host() -> bool:
    """True if ``mpirun`` itself started this rank (it runs on the launcher's
    host), not a host's ``orted``."""
    parent = _parent() if under_open_mpi() else None
    try:
        return parent is not None and parent.name() in LAUNCHER_NAMES
    except Exception:  # noqa: BLE001
        return False


def ssh_destination(argv: Sequence[str]) -> Optional[str]:
    """The host of ``ssh [options] [user@]host command...`` (None if ``argv``
    is not a remote shell's command line).

    >>> ssh_destination(["/usr/bin/ssh", "-p", "2222", "-x", "root@node2", "orted", "-mca", "ess", "env"])
    'node2'
    """
    if not argv or os.path.basename(argv[0]) not in REMOTE_SHELLS:
        return None
    i = 1
    while i < len(argv) and argv[i].startswith("-") and argv[i] != "-":
        if argv[i] == "--":
            i += 1
            break
        # "-p 22" takes the next argument; "-p22" and "-x" do not.
        i += 2 if len(argv[i]) == 2 and argv[i][1] in _SSH_OPTIONS_WITH_VALUE else 1
    return argv[i].rpartition("@")[2] or None if i < len(argv) else None


def _addresses_of(name: str) -> List[str]:
    try:
        return sorted({info[4][0] for info in socket.getaddrinfo(name, None, socket.AF_INET)})
    except OSError:
        return []


def host_matches(destination: str, host: str, addresses: Sequence[str]) -> bool:
    """Does ``destination`` (what ``mpirun`` gave ssh: a name, a full name or an
    address) name ``host`` (its ranks' host name) or one of its ranks'
    ``addresses``?

    >>> host_matches("node2.cluster", "node2", ["10.0.0.12"]), host_matches("10.0.0.12", "node2", ["10.0.0.12"])
    (True, True)
    """
    dest, name = destination.lower(), host.lower()
    if dest == name or dest in addresses:
        return True
    if not dest.replace(".", "").isdigit() and dest.split(".")[0] == name.split(".")[0]:
        return True
    return bool(set(_addresses_of(destination)) & set(addresses))


def end_sessions_to(lost: Dict[str, Sequence[str]]) -> List[str]:
    """End ``mpirun``'s (this rank's parent's) ssh sessions to the ``lost``
    hosts (host name -> its ranks' addresses); return what was ended as
    ``"host (ssh pid N)"``. A session to any other host is never touched."""
    parent = _parent()
    ended: List[str] = []
    try:
        children = parent.children() if parent is not None else []
    except Exception:  # noqa: BLE001
        return ended
    for child in children:
        try:
            dest = ssh_destination(child.cmdline())
        except Exception:  # noqa: BLE001 (gone meanwhile)
            continue
        host = next((h for h, addrs in lost.items() if dest and host_matches(dest, h, addrs)), None)
        if host is not None:
            try:
                child.terminate()
                ended.append(f"{host} (ssh pid {child.pid})")
            except Exception:  # noqa: BLE001 (already gone)
                pass
    return ended


def end_local_mpi_daemon() -> None:
    """Under Open MPI, end this rank's ``orted``: cut off from the launcher it
    would otherwise wait for orders that cannot arrive."""
    parent = _parent() if under_open_mpi() else None
    try:
        if parent is not None and parent.name() == "orted":
            time.sleep(0.5)  # let the other local ranks print their report first
            parent.terminate()
    except Exception:  # noqa: BLE001
        pass


class MpirunLink:
    """One per watchdog: which hosts are lost (rank 0) and which of
    ``mpirun``'s ssh sessions to end (the lowest rank on ``mpirun``'s host).

    Rank 0 records a host once *all* its ranks are past the peer timeout and
    hands it to that rank in its heartbeat answers; the rank ends the session
    from the watchdog's thread, outside the watchdog's lock (a name may need
    resolving)."""

    def __init__(self):
        self.reset()

    def reset(self) -> None:
        self.here = on_mpirun_host()  # this rank's parent is mpirun
        self.lost_hosts: Dict[str, List[str]] = {}  # rank 0: host -> its ranks' addresses
        self._done: set = set()
        self._todo: Dict[str, List[str]] = {}

    @staticmethod
    def acting_rank(here0: bool, peers: Dict[int, dict]) -> Optional[int]:
        """The lowest rank on ``mpirun``'s host (heartbeats carry ``"l"``), or None."""
        return 0 if here0 else min((r for r, st in peers.items() if st.get("l")), default=None)

    def plan(self, states: Dict[int, dict], host_of: Callable[[int], str], grace: float) -> str:
        """Rank 0's sentence on what happens next, for its report of lost ranks."""
        on = sorted({host_of(r) for r, st in states.items() if (st.get("l") if r else self.here)})
        if on:
            return (f"mpirun runs on {on[0]}, where hvdagent ends its ssh session to a host whose ranks are all "
                    f"lost, so that mpirun ends the job now (else the ranks end themselves after {grace:.0f} s).")
        return (f"mpirun runs on another host and has {grace:.0f} s to notice the loss itself (Open MPI's daemon "
                "keep-alive, which `python -m hvdagent horovodrun` sets, or ssh's ServerAliveInterval) before "
                "the ranks end themselves; without either it may wait for the lost host for many minutes more.")

    def note_lost(self, lost: List[int], states: Dict[int, dict], host_of: Callable[[int], str],
                  addresses: Dict[int, tuple]) -> None:
        """Rank 0: record the hosts all of whose reporting ranks are in ``lost``
        (never rank 0's own: it is alive)."""
        for host in sorted({host_of(r) for r in lost} - {host_of(0)}):
            ranks = [r for r in states if r and host_of(r) == host]
            if host not in self.lost_hosts and all(r in lost for r in ranks):
                self.lost_hosts[host] = sorted({addresses[r][0] for r in ranks if r in addresses})
                self.queue({host: self.lost_hosts[host]})

    def queue(self, lost: Optional[Dict[str, List[str]]]) -> None:
        """On ``mpirun``'s host: note lost hosts whose session to end."""
        for host, addresses in (lost or {}).items():
            if self.here and host not in self._done:
                self._todo[host] = list(addresses)

    def pending(self) -> bool:
        return bool(self._todo)

    def act(self, who: str, peer_timeout: float, before_exit: bool = False) -> None:
        """End the queued sessions and say so (``who``: the report's prefix)."""
        todo, self._todo = self._todo, {}
        self._done.update(todo)
        ended = end_sessions_to(todo)
        if ended:
            say(who + f"ended mpirun's ssh session to {', '.join(ended)}: no heartbeat from that host's ranks for "
                f"{peer_timeout:.0f} s, and mpirun would wait for its daemon; mpirun now ends the job.\n")
            if before_exit:
                time.sleep(MPIRUN_ACTS_S)  # mpirun ignores a session's end once a rank has ended
        else:
            say(who + f"found no ssh session of mpirun to the lost host(s) {', '.join(sorted(todo))}; "
                "the ranks end themselves after the grace.\n")
