"""``python -m hvdagent horovodrun ...``: Horovod's ``horovodrun`` with what
hvdagent needs from the launcher.

* **Open MPI's keep-alive on its daemons' connections.** ``mpirun`` reaches
  the daemon of each host over TCP; a host that vanishes from the network
  (its link cut, its power lost) is noticed only by TCP keep-alive, which Open
  MPI starts after 300 s of silence and gives up on after 180 s more. Here
  ``OMPI_MCA_oob_tcp_keepalive_time/_intvl/_probes`` default to
  :data:`OPEN_MPI_KEEPALIVE` (10 s of silence, then 3 probes 5 s apart:
  a dead host is noticed within 25 s) and ``mpirun`` ends the job itself,
  naming the host. A probe is answered by the other host's kernel, so a busy
  or stalled host is never taken for a dead one. A value already in the
  environment is kept.
* **Slurm.** Inside an allocation (``salloc``/``sbatch``) with no ``-H``,
  ``--hosts`` or ``--hostfile``, the hosts and their slots come from Slurm
  (``SLURM_JOB_NODELIST`` through ``scontrol show hostnames``,
  ``SLURM_TASKS_PER_NODE``), and ``-np`` from their sum unless given.

Everything else is passed to ``horovodrun`` unchanged, which then replaces
this process (same exit status, same signals).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

OPEN_MPI_KEEPALIVE = {
    "OMPI_MCA_oob_tcp_keepalive_time": "10",
    "OMPI_MCA_oob_tcp_keepalive_intvl": "5",
    "OMPI_MCA_oob_tcp_keepalive_probes": "3",
}
_HOST_FLAGS = ("-H", "--hosts", "-hostfile", "--hostfile", "--host-discovery-script")
_NP_FLAGS = ("-np", "--num-proc")


def _has_flag(args: Sequence[str], flags: Sequence[str]) -> bool:
    return any(a in flags or any(a.startswith(f + "=") for f in flags) for a in args)


def tasks_per_node(spec: str) -> List[int]:
    """Slurm's ``SLURM_TASKS_PER_NODE`` (``"2(x3),1"``) as one count per node.

    >>> tasks_per_node("2(x3),1")
    [2, 2, 2, 1]
    """
    counts: List[int] = []
    for part in spec.split(","):
        m = re.fullmatch(r"(\d+)(?:\(x(\d+)\))?", part.strip())
        if not m:
            raise ValueError(f"SLURM_TASKS_PER_NODE is not a list of counts like '2(x3),1'. "
                             f"Received: SLURM_TASKS_PER_NODE={spec!r}")
        counts += [int(m.group(1))] * int(m.group(2) or 1)
    return counts


def slurm_hosts(environ: Mapping[str, str]) -> Optional[List[Tuple[str, int]]]:
    """The allocation's ``(host, slots)`` from Slurm's environment, or None
    outside an allocation."""
    nodelist = environ.get("SLURM_JOB_NODELIST") or environ.get("SLURM_NODELIST")
    if not nodelist or not environ.get("SLURM_JOB_ID"):
        return None
    spec = environ.get("SLURM_TASKS_PER_NODE")
    if not spec:
        raise ValueError("inside a Slurm allocation without SLURM_TASKS_PER_NODE: allocate tasks "
                         "(salloc -N 2 --ntasks-per-node=4) or pass -np and -H. "
                         f"Received: SLURM_JOB_NODELIST={nodelist!r}")
    scontrol = shutil.which("scontrol", path=environ.get("PATH"))
    if scontrol is None:
        raise ValueError("inside a Slurm allocation but `scontrol` is not on PATH, so its host list "
                         f"cannot be expanded: pass -np and -H. Received: SLURM_JOB_NODELIST={nodelist!r}")
    out = subprocess.run([scontrol, "show", "hostnames", nodelist], capture_output=True, text=True,
                         env=dict(environ), timeout=60)
    names = out.stdout.split()
    counts = tasks_per_node(spec)
    if out.returncode != 0 or len(names) != len(counts):
        raise ValueError(f"could not match Slurm's hosts to its task counts ({out.stderr.strip() or names}). "
                         f"Received: SLURM_JOB_NODELIST={nodelist!r}, SLURM_TASKS_PER_NODE={spec!r}")
    return list(zip(names, counts))


def command(args: Sequence[str], environ: Mapping[str, str]) -> Tuple[List[str], Dict[str, str], List[str]]:
    """``(horovodrun's arguments, its environment, notes)`` for ``args``."""
    if not args or all(a.startswith("-") for a in args):
        raise ValueError("usage: python -m hvdagent horovodrun [horovodrun options] COMMAND "
                         f"(for example: -np 4 -H host1:2,host2:2 python train.py). Received: {list(args)}")
    env = dict(environ)
    notes: List[str] = []
    for key, value in OPEN_MPI_KEEPALIVE.items():
        env.setdefault(key, value)
    args = list(args)
    if not _has_flag(args, _HOST_FLAGS):
        hosts = slurm_hosts(environ)
        if hosts:
            extra = ["-H", ",".join(f"{h}:{n}" for h, n in hosts)]
            if not _has_flag(args, _NP_FLAGS):
                extra = ["-np", str(sum(n for _, n in hosts))] + extra
            args = extra + args
            notes.append(f"hvdagent: hosts from Slurm's allocation: {' '.join(extra)}")
    return args, env, notes


def find_horovodrun() -> str:
    """``horovodrun`` next to this Python, else on PATH."""
    here = os.path.join(os.path.dirname(sys.executable), "horovodrun")
    if os.access(here, os.X_OK):
        return here
    found = shutil.which("horovodrun")
    if found is None:
        raise FileNotFoundError("horovodrun not found next to this Python or on PATH: install Horovod "
                                "(bash ci/setup.sh in this project)")
    return found


def main(args: Sequence[str]) -> int:
    try:
        args, env, notes = command(args, os.environ)
        exe = find_horovodrun()
    except (ValueError, FileNotFoundError) as err:
        print(f"python -m hvdagent horovodrun: {err}", file=sys.stderr)
        return 2
    for note in notes:
        print(note, file=sys.stderr, flush=True)
    os.execve(exe, [exe, *args], env)
    return 0  # not reached
