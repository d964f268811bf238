"""The watchdog's surroundings: what it reads from this process's environment
and host, and where it writes.

* :func:`env_timeout`: a timeout in seconds from an environment variable
  (``HVDAGENT_PEER_TIMEOUT``), checked;
* :func:`local_addresses`: this host's IPv4 addresses, offered by rank 0 for
  the heartbeat;
* :func:`say`: stderr, which a launcher that is gone must not turn into an error.

The watchdog itself is ``hvdagent._watchdog.watchdog``; what it does for
Open MPI's ``mpirun`` is ``hvdagent._watchdog.launcher``.
"""

from __future__ import annotations

import os
import socket
import sys
from typing import List

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


def say(text: str) -> None:
    """Write to stderr; a launcher that is gone (a closed pipe) must not stop the watchdog."""
    try:
        sys.stderr.write(text)
        sys.stderr.flush()
    except Exception:  # noqa: BLE001
        pass
