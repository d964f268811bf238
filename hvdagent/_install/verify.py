"""Prove an installed Horovod: what it was built with, and a real 2-process allreduce."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path
from typing import List

# Each rank contributes rank + 1; the sum over 2 ranks is 3 on every rank.
ALLREDUCE = """
import horovod.tensorflow as hvd, tensorflow as tf
hvd.init()
total = hvd.allreduce(tf.constant([float(hvd.rank() + 1)]), op=hvd.Sum).numpy()[0]
print("allreduce rank %d of %d: %s" % (hvd.rank(), hvd.size(), total))
"""


class VerifyError(RuntimeError):
    """The installed Horovod does not work; the message holds the evidence."""


def horovodrun() -> Path:
    return Path(sysconfig.get_path("scripts")) / "horovodrun"


def _env() -> dict:
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", "1")
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return env


def built_with(with_mpi: bool) -> List[str]:
    """``horovodrun --check-build``: TensorFlow and Gloo (and MPI when asked) must be ticked."""
    proc = subprocess.run([str(horovodrun()), "--check-build"], capture_output=True, text=True, timeout=300,
                          env=_env())
    text = proc.stdout + proc.stderr
    wanted = ["TensorFlow", "Gloo"] + (["MPI"] if with_mpi else [])
    lacking = [w for w in wanted if f"[X] {w}" not in text]
    if proc.returncode != 0 or lacking:
        raise VerifyError(f"horovodrun --check-build (exit {proc.returncode}) lacks {', '.join(lacking) or '-'}:\n"
                          f"{text.strip()}")
    return wanted


def allreduce(controller: str, timeout: float = 300) -> str:
    """Run :data:`ALLREDUCE` on 2 local processes under ``horovodrun --<controller>``."""
    cmd = [str(horovodrun()), f"--{controller}", "-np", "2", sys.executable, "-c", ALLREDUCE]
    with tempfile.TemporaryDirectory() as cwd:
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=cwd, env=_env())
        except subprocess.TimeoutExpired:
            raise VerifyError(f"a 2-process allreduce ({controller}) did not finish in {timeout:.0f}s") from None
    text = proc.stdout + proc.stderr
    # Under MPI a rank's lines are prefixed ("[1,0]<stdout>:") and can run together.
    results = sorted(re.findall(r"allreduce (rank \d+ of \d+: [-0-9.e+]+)", text))
    expected = ["rank 0 of 2: 3.0", "rank 1 of 2: 3.0"]
    if proc.returncode != 0 or results != expected:
        raise VerifyError(f"a 2-process allreduce ({controller}) gave {results or 'no result'} "
                          f"(exit {proc.returncode}; expected {expected}):\n{text.strip()[-3000:]}")
    return f"2-process allreduce over {controller}: {results[0].split(': ')[1]} on both ranks (expected 3.0)"
