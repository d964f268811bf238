"""Shared test helpers: launch real multi-process runs under horovodrun."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DIST = Path(__file__).resolve().parent / "distributed"

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("OMP_NUM_THREADS", "1")


def horovodrun_cmd(np_: int = 2):
    exe = Path(sys.executable).parent / "horovodrun"
    return [str(exe), "--gloo", "-np", str(np_)]


def run_horovod(script, *args, np_=2, timeout=240, env=None, expect_ok=True, cwd=None):
    """Run ``script`` on ``np_`` ranks with a hard timeout; return the CompletedProcess.

    Any non-zero exit of any rank makes horovodrun exit non-zero; a hang is a
    timeout, which fails the test instead of blocking CI.
    """
    full_env = dict(os.environ)
    full_env.update({"OMP_NUM_THREADS": "1", "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1"})
    full_env.update(env or {})
    cmd = horovodrun_cmd(np_) + [sys.executable, str(script), *map(str, args)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=full_env, cwd=str(cwd or ROOT))
    except subprocess.TimeoutExpired as err:
        out = (err.stdout or b"").decode() if isinstance(err.stdout, bytes) else (err.stdout or "")
        pytest.fail(f"horovodrun timed out after {timeout}s (a hang): {' '.join(cmd)}\n{out[-4000:]}")
    if expect_ok and proc.returncode != 0:
        pytest.fail(f"horovodrun exited {proc.returncode}: {' '.join(cmd)}\n--- output ---\n{proc.stdout[-6000:]}\n{proc.stderr[-6000:]}")
    return proc


def read_results(out_dir, np_=2):
    """Each worker rank writes results-<rank>.json; return them in rank order."""
    results = []
    for r in range(np_):
        path = Path(out_dir) / f"results-{r}.json"
        assert path.exists(), f"rank {r} wrote no results ({path})"
        results.append(json.loads(path.read_text()))
    return results
