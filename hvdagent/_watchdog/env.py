"""The watchdog's surroundings: what it reads from this process's environment
and host, and what it must do for the launcher.

* :func:`env_timeout`: a timeout in seconds from an environment variable
  (``HVDAGENT_PEER_TIMEOUT``), checked;
* :func:`local_addresses`: this host's IPv4 addresses, offered by rank 0 for
  the heartbeat;
* :func:`launcher_grace` and :func:`end_local_mpi_daemon`: Open MPI's
  ``mpirun`` and ``orted``, which a lost host leaves waiting;
* :func:`say`: stderr, which a launcher that is gone must not turn into an error.

The watchdog itself is ``hvdagent._watchdog.watchdog``.
"""

from __future__ import annotations

import os
import socket
import sys
import time
from typing import List

MPI_LAUNCHER_GRACE_S = 40.0


def env_timeout(name: str, default: float) -> float:
    """The number of seconds in the environment variable ``name`` (``0``
    disables), or ``default`` when it is unset or empty; ``ValueError`` otherwise."""
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{name} must be a number of seconds (0 disables). Received: {name}={raw!r}") from None
    if value < 0:
        raise ValueError(f"{name} must be a number of seconds >= 0 (0 disables). Received: {name}={raw!r}")
    return value


def local_addresses() -> List[str]:
    """This host's IPv4 addresses, loopback last."""
    out = []
    try:
        import psutil

        for addrs in psutil.net_if_addrs().values():
            for a in addrs:
                if a.family == socket.AF_INET and a.address not in out:
                    out.append(a.address)
    except Exception:  # noqa: BLE001
        pass
    out.sort(key=lambda a: a.startswith("127."))
    return out or ["127.0.0.1"]


def launcher_grace() -> float:
    """Under Open MPI, give ``mpirun`` time to notice a lost host itself
    (through ssh's keep-alive): once the surviving ranks have ended,
    ``mpirun`` waits for the lost host's daemon instead of exiting."""
    return MPI_LAUNCHER_GRACE_S if "OMPI_COMM_WORLD_RANK" in os.environ else 0.0


def end_local_mpi_daemon() -> None:
    """Under Open MPI, end this rank's ``orted``: cut off from the launcher it
    would otherwise wait for orders that cannot arrive."""
    if "OMPI_COMM_WORLD_RANK" not in os.environ:
        return
    try:
        import psutil

        parent = psutil.Process(os.getppid())
        if parent.name() == "orted":
            time.sleep(0.5)  # let the other local ranks print their report first
            parent.terminate()
    except Exception:  # noqa: BLE001
        pass


def say(text: str) -> None:
    """Write to stderr; a launcher that is gone (a closed pipe) must not stop the watchdog."""
    try:
        sys.stderr.write(text)
        sys.stderr.flush()
    except Exception:  # noqa: BLE001
        pass
