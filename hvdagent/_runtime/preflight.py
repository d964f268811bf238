"""Start-up checks for jobs that span several hosts.

Two things that otherwise end as a hang or a cryptic error minutes later:

* **Different software on different hosts.** Right after Horovod starts,
  every rank shares its host name and the versions of hvdagent, Horovod,
  TensorFlow, Keras (tf_keras with ``TF_USE_LEGACY_KERAS=1``) and Python; if
  they differ, every rank raises :class:`EnvironmentMismatchError` naming the
  hosts and versions, before any training.
* **A host listed twice** (``-H a:2,a:2``): ``horovodrun --gloo`` starts the
  ranks and gives two of them the same local rank on one machine. The ranks
  compare placements through horovodrun's key-value store before Gloo starts
  (Gloo would abort inside init with ``rank < size``) and raise
  ``ValueError`` saying to list each host once. horovodrun's own numbers
  give it away on every rank: a cross rank at or above the cross size.
* **Horovod 0.28.1's Gloo host-name pitfall.** Under ``horovodrun --gloo``
  across hosts, Horovod's Gloo context for process sets finds its address by
  resolving the host's *name* (``gloo_context.cc``, ``InitializeForProcessSet``,
  ignores ``HOROVOD_GLOO_IFACE``). A name that does not resolve fails with
  ``Unable to find address for: <host>``; a name that maps to a loopback
  address (Debian and Ubuntu map it to ``127.0.1.1`` by default) fails after
  30 s with ``connect [127.0.1.1]: Connection refused``. This is checked
  before Horovod starts, with what to fix.

Both run from the Horovod backend's ``init``; ``python -m hvdagent doctor``
reports the host-name check too.

For tests, ``HVDAGENT_SIMULATE_VERSIONS="HOST:package=version,..."`` makes the
ranks on host ``HOST`` report those versions (a host with another install).
"""

from __future__ import annotations

import os
import platform
import socket
from typing import Callable, Dict, List, Optional, Tuple

__all__ = ["EnvironmentMismatchError", "GlooHostnameError", "checked_init", "duplicate_host_message", "hostname_problem",
           "mismatch_message", "versions"]

PACKAGES = ("hvdagent", "horovod", "tensorflow", "keras")


class EnvironmentMismatchError(RuntimeError):
    """The hosts of a job run different versions of the training stack."""


class GlooHostnameError(RuntimeError):
    """This host's name does not resolve to a routable address (Gloo across hosts needs it)."""


def _dist_version(name: str) -> str:
    if name == "hvdagent":
        from hvdagent._version import __version__

        return __version__
    try:
        from importlib.metadata import version

        return version("tf-keras" if name == "tf_keras" else name)
    except Exception:  # noqa: BLE001 (not installed is a version too)
        return "not installed"


def versions(hostname: Optional[str] = None) -> Dict[str, str]:
    """The versions this process runs (what ranks compare at start-up)."""
    names = list(PACKAGES)
    if os.environ.get("TF_USE_LEGACY_KERAS") == "1":
        names.append("tf_keras")
    out = {n: _dist_version(n) for n in names}
    out["python"] = platform.python_version()
    simulated = os.environ.get("HVDAGENT_SIMULATE_VERSIONS", "")
    if simulated:
        host, _, pairs = simulated.partition(":")
        if host == (hostname or socket.gethostname()):
            for pair in filter(None, pairs.split(",")):
                key, _, value = pair.partition("=")
                out[key.strip()] = value.strip()
    return out


def _ranges(ranks: List[int]) -> str:
    ranks = sorted(ranks)
    parts, start = [], ranks[0]
    for a, b in zip(ranks, ranks[1:] + [None]):
        if b != a + 1:
            parts.append(str(start) if start == a else f"{start}-{a}")
            start = b
    return ", ".join(parts)


def mismatch_message(reports: List[Tuple[str, Dict[str, str]]]) -> Optional[str]:
    """The error text for the ``(hostname, versions)`` of every rank, or None if all agree.

    >>> print(mismatch_message([("a", {"keras": "3.1"}), ("b", {"keras": "3.2"})]))  # doctest: +ELLIPSIS
    the hosts of this job run different software: keras 3.1 on a (rank 0) but 3.2 on b (rank 1). ...
    """
    lines = []
    order = list(PACKAGES) + ["tf_keras", "python"]
    keys = sorted({k for _, v in reports for k in v}, key=lambda k: (order.index(k) if k in order else len(order), k))
    for key in keys:
        by_value: Dict[str, Dict[str, List[int]]] = {}
        for rank, (host, vers) in enumerate(reports):
            by_value.setdefault(vers.get(key, "not installed"), {}).setdefault(host, []).append(rank)
        if len(by_value) < 2:
            continue
        parts = []
        for value, hosts in by_value.items():
            where = ", ".join(f"{h} ({'rank' if len(r) == 1 else 'ranks'} {_ranges(r)})" for h, r in hosts.items())
            parts.append(f"{value} on {where}")
        lines.append(f"{key} {parts[0]} but " + " and ".join(parts[1:]))
    if not lines:
        return None
    return ("the hosts of this job run different software: " + "; ".join(lines) + ". Install the same versions of "
            "hvdagent, Horovod, TensorFlow and Keras on every host (simplest: one virtual environment at the same "
            "path on a shared filesystem); `python -m hvdagent doctor` on each host prints what it runs.")


def hostname_problem(hostname: Optional[str] = None) -> Optional[str]:
    """Why this host's name breaks Horovod's Gloo across hosts, or None if it is fine."""
    hostname = hostname or socket.gethostname()
    try:
        infos = socket.getaddrinfo(hostname, None, socket.AF_INET)
        addresses = sorted({i[4][0] for i in infos})
    except OSError:
        addresses = []
    fix = (f"Map {hostname!r} to this host's address on the network the job uses (the interface given to "
           "--network-interface), in /etc/hosts or DNS, on every host; or launch with --mpi. (Horovod 0.28.1's Gloo "
           "resolves the host name to find its own address and ignores HOROVOD_GLOO_IFACE there.)")
    if not addresses:
        return (f"this host's name {hostname!r} does not resolve to an IPv4 address, so Horovod's Gloo fails with "
                f"'Unable to find address for: {hostname}'. {fix}")
    if all(a.startswith("127.") for a in addresses):
        return (f"this host's name {hostname!r} resolves to {', '.join(addresses)} (loopback), so the other hosts' "
                f"Gloo connections are refused after a 30 s timeout. {fix}")
    return None


def _env_int(name: str, default: int) -> int:
    try:
        return int(os.environ.get(name, default))
    except ValueError:
        return default


def _gloo_across_hosts() -> bool:
    return os.environ.get("HOROVOD_CONTROLLER") == "gloo" and _env_int("HOROVOD_CROSS_SIZE", 1) > 1


def _listed_twice_by_env() -> bool:
    """horovodrun numbered this rank's host past the number of hosts: it
    counted one machine twice (``-H a:2,a:2`` gives cross ranks 0 and 1 of a
    cross size of 1)."""
    return (os.environ.get("HOROVOD_CONTROLLER") == "gloo"
            and _env_int("HOROVOD_CROSS_RANK", 0) >= _env_int("HOROVOD_CROSS_SIZE", 1))


def _placements_before_init(kv_put, kv_get, timeout: float = 20.0):
    """Every rank's (host name, local rank), exchanged through horovodrun's
    key-value store before Horovod starts (Gloo aborts inside init when one
    host was listed twice). None when not available in ``timeout`` seconds."""
    try:
        rank, size = int(os.environ["HOROVOD_RANK"]), int(os.environ["HOROVOD_SIZE"])
    except (KeyError, ValueError):
        return None
    if size > 64 or os.environ.get("HOROVOD_ELASTIC") == "1":
        return None  # the all-to-all reads cost too much; elastic ranks come and go
    mine = [socket.gethostname(), os.environ.get("HOROVOD_LOCAL_RANK")]
    if not kv_put(f"preflight-place-{rank}", mine):
        return None
    import time

    out = {rank: tuple(mine)}
    deadline = time.monotonic() + timeout
    while len(out) < size and time.monotonic() < deadline:
        for r in range(size):
            if r not in out:
                value = kv_get(f"preflight-place-{r}")
                if value:
                    out[r] = tuple(value)
        if len(out) < size:
            time.sleep(0.2)  # the other ranks are still starting
    return [out[r] for r in range(size)] if len(out) == size else None


def checked_init(init: Callable[[], None], allgather_object: Callable[..., list], kv=None) -> None:
    """Run Horovod's ``init`` between the start-up checks (see the module docstring).

    ``kv`` is ``(kv_put, kv_get)`` of horovodrun's key-value store, for the
    checks that must happen before Gloo starts.

    Raises:
        GlooHostnameError: Gloo across hosts, and this host's name is unusable.
        ValueError: a host was listed twice (on every rank).
        EnvironmentMismatchError: the ranks run different versions (on every rank).
    """
    if _gloo_across_hosts():
        problem = hostname_problem()
        if problem:
            raise GlooHostnameError(f"hvdagent (on {socket.gethostname()}): {problem}")
    if _gloo_across_hosts() or _listed_twice_by_env():
        placements = _placements_before_init(*kv) if kv else None
        twice = duplicate_host_message(placements) if placements else None
        if twice is None and _listed_twice_by_env():  # the other ranks did not report in time
            twice = _listed_twice(socket.gethostname(), "",
                                  f"HOROVOD_CROSS_RANK={os.environ.get('HOROVOD_CROSS_RANK')}, "
                                  f"HOROVOD_CROSS_SIZE={os.environ.get('HOROVOD_CROSS_SIZE')} from horovodrun")
        if twice:
            raise ValueError(f"hvdagent: {twice}")
    init()
    host = socket.gethostname()
    local = os.environ.get("HOROVOD_LOCAL_RANK", os.environ.get("OMPI_COMM_WORLD_LOCAL_RANK"))
    reports = allgather_object((host, versions(host), local), name="hvdagent_preflight_versions")
    if len(reports) > 1:
        message = mismatch_message([(h, v) for h, v, _ in reports])
        if message:
            raise EnvironmentMismatchError(f"hvdagent: {message}")
        twice = duplicate_host_message([(h, lr) for h, _, lr in reports])
        if twice:
            raise ValueError(f"hvdagent: {twice}")


def duplicate_host_message(placements: List[Tuple[str, Optional[str]]]) -> Optional[str]:
    """Two ranks on one host with the same local rank: the host was listed twice.

    >>> duplicate_host_message([("a", "0"), ("a", "1"), ("a", "0"), ("a", "1")])  # doctest: +ELLIPSIS
    "host 'a' is listed more than once (ranks 0 and 2 both got local rank 0 on it)..."
    """
    seen: Dict[Tuple[str, str], int] = {}
    for rank, (host, local) in enumerate(placements):
        if local is None:
            continue
        if (host, local) in seen:
            return _listed_twice(host, f" (ranks {seen[(host, local)]} and {rank} both got local rank {local} on it)",
                                 f"ranks per host {_per_host(placements)}")
        seen[(host, local)] = rank
    return None


def _listed_twice(host: str, why: str, received: str) -> str:
    return (f"host {host!r} is listed more than once{why}, so Horovod would treat one machine as two. List each host "
            f"once with all its slots (-H {host}:N or one line '{host} slots=N' in the hostfile). Received: {received}")


def _per_host(placements) -> str:
    counts: Dict[str, int] = {}
    for host, _ in placements:
        counts[host] = counts.get(host, 0) + 1
    return ", ".join(f"{h}: {n}" for h, n in counts.items())
