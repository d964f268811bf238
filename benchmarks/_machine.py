"""The machine a benchmark runs on, and whether it was quiet enough to count.

Three measurements decide whether a run's figures mean anything:

* **The 1-minute load average at the start**, after a settle wait. The kernel
  averages the number of runnable tasks with a 60 s time constant. An idle
  machine settles under ~0.2 (kernel threads, daemons); one process that keeps
  a core busy pushes it towards 1.0 within a minute. The default bound, 0.5,
  sits halfway: it catches anything that used about half a core or more over
  the last minute, which on 2 cores is a quarter of the machine the ranks need.
  After a previous job the load decays by e^(-t/60), so from 2.0 it takes
  about 85 s to reach 0.5: hence the settle wait (default 120 s).
* **The CPU that other processes used right before the start** (5 s of
  ``/proc/stat``), which the load average, being a minute-long average, only
  shows late.
* **The CPU that other processes used during the run**: all CPU time the
  kernel counted (``/proc/stat``: user, nice, system) minus what this process
  and its waited-for children used (``getrusage``), per second of wall time.
  A test suite started halfway through a run shows up here. Interrupt time
  (the loopback traffic of the ranks themselves) is not counted against the
  run; hypervisor steal is recorded separately.
"""

from __future__ import annotations

import os
import platform
import re
import resource
import time
from pathlib import Path

# Defaults, justified in the module docstring.
MAX_LOAD = 0.5
SETTLE_S = 120.0
MAX_OTHER_CORES = 0.25  # average cores used by other processes (before or during a run)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def slug(model: str, n_cores: int) -> str:
    """A file-name-safe name for a machine: ``amd-epyc-2c``."""
    s = re.sub(r"\((r|tm)\)|cpu|processor|@.*$", " ", model.lower())
    s = re.sub(r"[^a-z0-9]+", "-", s).strip("-")
    s = "-".join(s.split("-")[:6]) or "unknown"
    return f"{s}-{n_cores}c"


def describe() -> dict:
    """CPU model, core count, memory, OS and package versions."""
    model, n = cpu_model(), cores()
    info = {"cpu": model, "cores": n, "slug": slug(model, n), "platform": platform.platform(),
            "python": platform.python_version()}
    try:
        mem = Path("/proc/meminfo").read_text().splitlines()[0].split()[1]
        info["mem_gib"] = round(int(mem) / 2**20, 1)
    except (OSError, IndexError, ValueError):
        pass
    versions = {}
    try:
        from importlib.metadata import PackageNotFoundError, version
    except ImportError:  # pragma: no cover
        return info
    for p in ("tensorflow", "keras", "tf_keras", "horovod", "hvdagent"):
        try:
            versions[p] = version(p)
        except PackageNotFoundError:
            versions[p] = None
    info["versions"] = versions
    return info


def load1() -> float:
    return os.getloadavg()[0]


class CpuMeter:
    """CPU time used by other processes between ``start()`` and ``stop()``.

    Other = (user + nice + system of the whole machine) - (this process and
    its finished, waited-for children). Children that are still running are
    not counted yet, so measure between launches, not inside one.
    """

    def __init__(self):
        self._tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100

    def _machine(self):
        try:
            f = Path("/proc/stat").read_text().splitlines()[0].split()
        except OSError:
            return None
        v = [int(x) for x in f[1:]]
        user, nice, system, steal = v[0], v[1], v[2], (v[7] if len(v) > 7 else 0)
        return (user + nice + system) / self._tick, steal / self._tick

    @staticmethod
    def _ours() -> float:
        s, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime

    def start(self) -> "CpuMeter":
        self._t0, self._m0, self._o0 = time.monotonic(), self._machine(), self._ours()
        self._credit = 0.0
        return self

    def credit(self, cpu_s: float) -> None:
        """Count ``cpu_s`` seconds of CPU as this run's own: work it started
        that is not its child (ranks started through ssh on the namespace hosts
        of ``ci/hosts.sh``, reaped by those hosts' sshd)."""
        self._credit += cpu_s

    def stop(self) -> dict:
        """``{"wall_s", "other_cores", "steal_cores", "ours_cores"}`` since ``start()``."""
        wall = max(time.monotonic() - self._t0, 1e-9)
        m1, ours = self._machine(), self._ours() - self._o0 + self._credit
        out = {"wall_s": wall, "ours_cores": ours / wall}
        if self._m0 is None or m1 is None:
            out.update(other_cores=None, steal_cores=None)
            return out
        busy = m1[0] - self._m0[0]
        # Tick granularity (10 ms) can make ``busy - ours`` slightly negative.
        out.update(other_cores=max(0.0, busy - ours) / wall, steal_cores=(m1[1] - self._m0[1]) / wall)
        return out


def tree_cpu_s(pid: int) -> float:
    """CPU seconds of process ``pid`` and of its descendants it has reaped
    (``utime + stime + cutime + cstime`` of /proc/PID/stat); 0 if it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    return sum(int(x) for x in fields[11:15]) / (os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100)


def wait_until_quiet(max_load: float = MAX_LOAD, settle_s: float = SETTLE_S, max_other: float = MAX_OTHER_CORES,
                     probe_s: float = 5.0, log=print) -> dict:
    """Wait up to ``settle_s`` for the load average to fall to ``max_load``.

    Returns ``{"quiet": bool, "load1": ..., "busy_cores": ..., "waited_s": ...,
    "reason": ...}``; ``busy_cores`` is the CPU all other processes used during
    the last ``probe_s`` seconds (this process sleeps meanwhile).
    """
    t0 = time.monotonic()
    announced = False
    while True:
        meter = CpuMeter().start()
        time.sleep(probe_s)
        busy = meter.stop()["other_cores"]
        load = load1()
        waited = time.monotonic() - t0
        quiet = load <= max_load and (busy is None or busy <= max_other)
        if quiet or waited >= settle_s:
            break
        if not announced:
            log(f"[bench] waiting up to {settle_s:.0f} s for the machine to settle "
                f"(load average {load:.2f}, bound {max_load}; other processes use {busy or 0:.2f} cores)")
            announced = True
    reason = None
    if not quiet:
        parts = []
        if load > max_load:
            parts.append(f"the 1-minute load average is {load:.2f} (> {max_load})")
        if busy is not None and busy > max_other:
            parts.append(f"other processes used {busy:.2f} cores in the last {probe_s:.0f} s (> {max_other})")
        reason = " and ".join(parts) + f" after waiting {waited:.0f} s"
    return {"quiet": quiet, "load1": load, "busy_cores": busy, "waited_s": waited, "reason": reason,
            "max_load": max_load, "max_other_cores": max_other}
