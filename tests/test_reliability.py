"""No hangs, no lost work: real `horovodrun --gloo -np 2` runs that kill, raise and stall a rank.

Each run is tests/distributed/reliability_checks.py; see its docstring.
"""

import json
import os
import shutil
import subprocess
import sys
import time

import numpy as np
import psutil
import pytest

from conftest import DIST, run_horovod

SCRIPT = DIST / "reliability_checks.py"
pytestmark = pytest.mark.timeout(900)


def _leftovers():
    return [p for p in psutil.process_iter(["cmdline"]) if any("reliability_checks.py" in c for c in (p.info["cmdline"] or []))]


def _weights(path):
    with np.load(path) as f:
        return [f[k] for k in f.files]


def test_sigkill_mid_epoch_then_rerun_equals_an_uninterrupted_run(tmp_path):
    out = tmp_path / "out"
    run_horovod(SCRIPT, "train", out, tmp_path / "ckA", "full", timeout=300)

    proc = run_horovod(SCRIPT, "train", out, tmp_path / "ckB", "part", 2, timeout=300, expect_ok=False)
    ended = time.time()
    assert proc.returncode != 0
    assert "Exit code: 137" in proc.stdout + proc.stderr  # rank 1 was SIGKILLed...
    assert ended - float((out / "killed-at.txt").read_text()) < 60  # ...and the job ended within the bound
    assert not _leftovers()
    latest = json.loads((tmp_path / "ckB" / "latest.json").read_text())
    assert latest["epoch"] == 2 and latest["size"] == 2  # epochs 0 and 1 were saved, 2 was lost
    shutil.copytree(tmp_path / "ckB", tmp_path / "ckC")

    run_horovod(SCRIPT, "train", out, tmp_path / "ckB", "resumed", timeout=300)
    for r in (0, 1):
        assert (out / f"epochs-resumed-rank{r}.txt").read_text().split() == ["2", "3"]  # no completed epoch repeated
        full = _weights(out / f"weights-full-rank{r}.npz")
        resumed = _weights(out / f"weights-resumed-rank{r}.npz")
        assert max(float(np.max(np.abs(a - b))) for a, b in zip(full, resumed)) <= 1e-6
    result = json.loads((out / "result-resumed-rank0.json").read_text())
    assert result == {"lr": pytest.approx(0.01), "applied_lr": pytest.approx(0.02), "epochs_run": 2, "iterations": 40}

    # A checkpoint written by 2 ranks resumes on 1 process: same epoch, rate rescaled for size 1.
    proc = subprocess.run([sys.executable, str(SCRIPT), "train", str(out), str(tmp_path / "ckC"), "single"],
                          capture_output=True, text=True, timeout=300, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (out / "epochs-single-rank0.txt").read_text().split() == ["2", "3"]
    single = json.loads((out / "result-single-rank0.json").read_text())
    assert single["lr"] == pytest.approx(0.01) and single["applied_lr"] == pytest.approx(0.01) and single["epochs_run"] == 2
    assert single["iterations"] == 20 + 2 * 20  # 20 updates saved, then 200 / 10 per epoch


def test_a_raising_rank_ends_the_job_and_its_error_is_shown(tmp_path):
    start = time.time()
    proc = run_horovod(SCRIPT, "raise", tmp_path, timeout=300, expect_ok=False)
    assert proc.returncode != 0
    text = proc.stdout + proc.stderr
    assert "[1]<stderr>:RuntimeError: boom: a deliberate failure on rank 1" in text
    assert time.time() - start < 120
    assert not _leftovers()


def test_a_stalled_rank_is_reported_and_the_job_ends(tmp_path):
    proc = run_horovod(SCRIPT, "stall", tmp_path, timeout=300, expect_ok=False, env={"STALL_TIMEOUT": "15"})
    ended = time.time()
    assert proc.returncode != 0
    text = proc.stdout + proc.stderr
    assert "stall detected" in text and "rank(s) [1] stopped making progress" in text, text[-3000:]
    # The report says where the stalled rank is blocked: the line of the test's callback.
    assert "rank 1 on " in text and "is in user code at reliability_checks.py:" in text and "in on_epoch_end" in text
    assert "Exit code: 75" in text
    # Bound: stall_timeout (15 s) + heartbeat period + the launcher stopping the ranks.
    assert ended - float((tmp_path / "stalled-at.txt").read_text()) < 15 + 30
    assert not _leftovers()


def test_a_frozen_rank_is_a_lost_peer_and_the_job_ends_naming_it(tmp_path):
    # SIGSTOP: the process exists, its sockets stay open, it answers nothing.
    proc = run_horovod(SCRIPT, "freeze", tmp_path, timeout=300, expect_ok=False, env={"HVDAGENT_PEER_TIMEOUT": "10"})
    ended = time.time()
    assert proc.returncode != 0
    text = proc.stdout + proc.stderr
    assert "lost contact with rank(s) [1] on host(s) " in text, text[-3000:]
    assert "Exit code: 76" in text
    assert ended - float((tmp_path / "frozen-at.txt").read_text()) < 10 + 30
    assert not _leftovers()


def test_slow_rank0_work_does_not_end_a_healthy_job(tmp_path):
    # Defaults: a 90 s callback on rank 0 (the other rank waits in its next
    # collective) must not be taken for a stall. Then, with stall_timeout=10,
    # 20 s of work inside the watchdog's pause (what checkpoint writes use).
    proc = run_horovod(SCRIPT, "slow", tmp_path, timeout=600, env={"SLOW_SECONDS": "90"})
    text = proc.stdout + proc.stderr
    assert "stall detected" not in text and "lost contact" not in text
    assert float((tmp_path / "slow-90.0-False.txt").read_text()) >= 90
    assert float((tmp_path / "slow-20-True.txt").read_text()) >= 20
    for r in (0, 1):
        result = json.loads((tmp_path / f"result-slow-rank{r}.json").read_text())
        assert result == {"epochs": 3, "epochs2": 2, "iterations": 3 * (200 // 20), "iterations2": 2 * (200 // 20)}
    assert not _leftovers()


def test_watchdog_pause_and_where_the_main_thread_is():
    from hvdagent._watchdog import main_thread as _main_thread
    from hvdagent._watchdog import env as _watchdog_env
    from hvdagent._watchdog import pause as _watchdog_pause

    assert _watchdog_pause._PAUSED == 0 and not _watchdog_pause.is_paused()
    with _watchdog_pause.paused("checkpoint"):
        with _watchdog_pause.paused("nested"):
            assert _watchdog_pause._PAUSED == 2 and _watchdog_pause.is_paused()
    assert _watchdog_pause._PAUSED == 0 and not _watchdog_pause.is_paused()
    # Seen from another thread (as the watchdog's), the main thread waiting in
    # join() (the standard library) is in user code: this test, at that line.
    import threading

    seen = []
    probe = threading.Thread(target=lambda: seen.append(_main_thread.main_thread_location()))
    probe.start()
    probe.join()
    where = seen[0]
    assert where is not None and where.startswith("test_reliability.py:") and where.endswith("in test_watchdog_pause_and_where_the_main_thread_is")
    with pytest.raises(ValueError, match="HVDAGENT_PEER_TIMEOUT must be a number of seconds"):
        os.environ["HVDAGENT_PEER_TIMEOUT"] = "soon"
        try:
            _watchdog_env.env_timeout("HVDAGENT_PEER_TIMEOUT", 20.0)
        finally:
            del os.environ["HVDAGENT_PEER_TIMEOUT"]


def test_the_stall_clock_restarts_when_a_pause_ends(monkeypatch):
    import hvdagent
    from hvdagent._watchdog import watchdog as _watchdog
    from hvdagent._watchdog import pause as _watchdog_pause

    assert hvdagent.watchdog_paused is _watchdog_pause.paused
    monkeypatch.setattr(_watchdog_pause, "_RESUMED_AT", float("-inf"))  # no pause has ended yet
    wd = _watchdog.get()
    wd._local_state()  # takes in the current progress (none yet)
    wd._last_change = time.monotonic() - 100  # idle for 100 s...
    assert wd._local_state()["i"] >= 100
    with hvdagent.watchdog_paused("upload"):
        wd._last_change = time.monotonic() - 100
        state = wd._local_state()
        assert state["z"] is True and state["i"] < 5  # ...not while paused...
        wd._last_change = time.monotonic() - 100
    assert wd._local_state()["i"] < 5  # ...nor counted from before the pause ended
