"""Elastic training under `horovodrun --min-np 1 --max-np 2 --host-discovery-script`:
after epoch 1 a worker leaves (or joins); training goes on from the last commit,
with the data re-sharded and the learning rate rescaled for the new size."""

import json
import os
import stat
import subprocess
import sys

import pytest

from conftest import DIST, ROOT, horovodrun_cmd


def _run_elastic(tmp_path, mode, start_slots):
    hosts = tmp_path / "hosts"
    hosts.write_text(f"localhost:{start_slots}\n")
    discover = tmp_path / "discover.sh"
    discover.write_text(f"#!/bin/sh\necho x >> {hosts}.served\ncat {hosts}\n")  # records each call
    discover.chmod(discover.stat().st_mode | stat.S_IEXEC)
    out = tmp_path / "out"
    cmd = horovodrun_cmd(start_slots) + ["--min-np", "1", "--max-np", "2", "--network-interface", "lo",
                                         "--host-discovery-script", str(discover),
                                         sys.executable, str(DIST / "elastic_checks.py"), str(out), str(hosts), mode]
    # A joining worker starts TensorFlow while the others wait in Gloo's rendezvous:
    # on 2 busy cores that can take longer than Gloo's default 30 s.
    env = dict(os.environ, OMP_NUM_THREADS="1", TF_CPP_MIN_LOG_LEVEL="2", HOROVOD_GLOO_TIMEOUT_SECONDS="120")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=360, env=env, cwd=str(ROOT))
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    events = [json.loads(line) for p in out.glob("epochs-*.txt") for line in p.read_text().splitlines()]
    begins = sorted((e["epoch"], e["size"], e["lr"], e["stored_lr"]) for e in events if "epoch" in e)
    sync_states = {}  # epoch -> the gradient compression's state of every worker at its start
    for e in events:
        if "epoch" in e:
            sync_states.setdefault(e["epoch"], []).append(e["sync_state"])
    digests = {}
    for e in events:
        if "end_of_epoch" in e:
            digests.setdefault(e["end_of_epoch"], set()).add(e["digest"])
    results = [json.loads(p.read_text()) for p in out.glob("result-*.json")]
    # Rank 0 changed the host list once and saw the driver read it twice (no deadline passed).
    changes = [e for e in events if "hosts_changed" in e]
    assert len(changes) == 1 and changes[0]["served_after"] >= 2, changes
    return begins, digests, results, sync_states


def _check_rates(begins):
    assert all(lr == pytest.approx(0.01 * size) for _, size, lr, _ in begins)  # applied: 0.01 per worker
    assert all(stored == pytest.approx(0.01) for *_, stored in begins)  # the optimizer keeps the given rate


@pytest.mark.timeout(400)
def test_losing_a_worker_keeps_training_with_consistent_state(tmp_path):
    begins, digests, results, sync_states = _run_elastic(tmp_path, "shrink", 2)
    # Epochs 0-1 on 2 workers; epochs 2-4 on the remaining one; none repeated.
    assert [(ep, size) for ep, size, *_ in begins] == [(0, 2), (0, 2), (1, 2), (1, 2), (2, 1), (3, 1), (4, 1)]
    _check_rates(begins)
    assert len(digests[0]) == len(digests[1]) == 1  # both workers identical while both ran
    (result,) = results
    assert result["size"] == 1 and result["epochs_logged"] == 5
    # PowerSGD (this run compresses): both workers start epoch 1 with the same state (the commit averaged
    # their error buffers), and the residual of two workers survives the reset into epoch 2.
    (q0, e0), (q1, e1) = sync_states[1]
    assert q0 == q1 and e0 == e1 and any(any(row) for row in e0)
    ((_, e2),) = sync_states[2]
    assert any(any(row) for row in e2)
    assert result["iterations"] == 2 * (160 // 16) + 3 * (160 // 8)  # re-sharded for one worker


@pytest.mark.timeout(400)
def test_a_joining_worker_gets_the_committed_state_and_the_data_is_resharded(tmp_path):
    begins, digests, results, sync_states = _run_elastic(tmp_path, "grow", 1)
    assert [(ep, size) for ep, size, *_ in begins] == [(0, 1), (1, 1), (2, 2), (2, 2), (3, 2), (3, 2), (4, 2), (4, 2)]
    _check_rates(begins)
    for epoch in (2, 3, 4):
        assert len(digests[epoch]) == 1  # the new worker holds exactly the old one's weights
    assert sorted(r["rank"] for r in results) == [0, 1]
    assert {r["iterations"] for r in results} == {2 * (160 // 8) + 3 * (160 // 16)}
    assert results[0]["weights"] == results[1]["weights"]  # the two workers end as one model
    assert {r["epochs_logged"] for r in results} == {5}  # the joiner's History has every epoch, as rank 0's
    assert [r["history_epochs"] for r in results] == [[0, 1, 2, 3, 4]] * 2
    assert results[0]["losses"] == results[1]["losses"]  # epochs 0-1 from the commit, 2-4 averaged over both
    # PowerSGD (this run compresses; one worker alone does not reduce): the joiner starts with the
    # committed state, and both hold the same at every later epoch start (each commit averages the errors).
    for epoch in (2, 3, 4):
        (q0, e0), (q1, e1) = sync_states[epoch]
        assert q0 == q1 and e0 == e1, epoch
    assert any(any(row) for row in sync_states[3][0][1])  # two workers leave a residual


@pytest.mark.timeout(400)
def test_a_worker_leaving_mid_epoch_resumes_at_the_last_batch_commit(tmp_path):
    begins, _, results, _ = _run_elastic(tmp_path, "shrink_mid", 2)
    # Epoch 1 starts on 2 workers, is interrupted after batch 6 (a commit every 2 batches),
    # and is finished by the remaining worker; then epochs 2-4 on 1 worker.
    assert [(ep, size) for ep, size, *_ in begins] == [(0, 2), (0, 2), (1, 1), (1, 2), (1, 2), (2, 1), (3, 1), (4, 1)]
    _check_rates(begins)
    (result,) = results
    assert result["epochs_logged"] == 5
    # 10 steps of 16 in epoch 0; 6 of 16, then the other 64 samples as 8 steps of 8; 3 x 20 steps of 8.
    assert result["iterations"] == 10 + 6 + 64 // 8 + 3 * 20
