"""Elastic training under `horovodrun --min-np 1 --max-np 2 --host-discovery-script`:
a worker leaves after epoch 1; the other finishes the job from the last commit,
with the data re-sharded and the learning rate rescaled for one worker."""

import json
import os
import stat
import subprocess
import sys

import pytest

from conftest import DIST, ROOT, horovodrun_cmd


@pytest.mark.timeout(400)
def test_losing_a_worker_keeps_training_with_consistent_state(tmp_path):
    hosts = tmp_path / "hosts"
    hosts.write_text("localhost:2\n")
    discover = tmp_path / "discover.sh"
    discover.write_text(f"#!/bin/sh\ncat {hosts}\n")
    discover.chmod(discover.stat().st_mode | stat.S_IEXEC)
    out = tmp_path / "out"
    cmd = horovodrun_cmd(2) + ["--min-np", "1", "--max-np", "2", "--network-interface", "lo",
                               "--host-discovery-script", str(discover),
                               sys.executable, str(DIST / "elastic_checks.py"), str(out), str(hosts)]
    env = dict(os.environ, OMP_NUM_THREADS="1", TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=360, env=env, cwd=str(ROOT))
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]

    events = [json.loads(line) for p in out.glob("epochs-*.txt") for line in p.read_text().splitlines()]
    begins = sorted((e["epoch"], e["size"], e["lr"]) for e in events if "epoch" in e)
    # Epochs 0-1 on 2 workers at 2x the rate; epochs 2-4 on the remaining one at 1x; none repeated.
    assert [(ep, size) for ep, size, _ in begins] == [(0, 2), (0, 2), (1, 2), (1, 2), (2, 1), (3, 1), (4, 1)]
    assert all(lr == pytest.approx(0.02) for _, size, lr in begins if size == 2)
    assert all(lr == pytest.approx(0.01) for _, size, lr in begins if size == 1)
    ends = {}
    for e in events:
        if "end_of_epoch" in e:
            ends.setdefault(e["end_of_epoch"], set()).add(e["digest"])
    assert len(ends[0]) == len(ends[1]) == 1  # both workers held identical weights while both ran

    (result,) = [json.loads(p.read_text()) for p in out.glob("result-*.json")]
    assert result["size"] == 1 and result["epochs_logged"] == 5
    assert result["iterations"] == 2 * (160 // 16) + 3 * (160 // 8)  # re-sharded for one worker
