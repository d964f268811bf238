"""hvdagent.launch: real 2-rank launches from this (pytest) process.

Each launch costs seconds, so each test below runs one or two launches and
checks many things about them. TensorFlow is imported here first on purpose:
launch must work from a process that already imported it (a notebook).
"""

import os
import signal
import sys
import threading
import time

import cloudpickle
import psutil
import pytest
import tensorflow as tf  # noqa: F401 (imported before launching, as in a notebook)

import hvdagent
from hvdagent import LaunchError, LaunchTimeoutError


def _leftover_workers(since):
    """Processes of any launch started after ``since`` that are still running."""
    left = []
    for p in psutil.process_iter(["cmdline", "create_time", "status"]):
        try:
            cmd = " ".join(p.info["cmdline"] or [])
            if (p.info["create_time"] >= since - 1 and p.info["status"] != psutil.STATUS_ZOMBIE
                    and ("hvdagent._launch.worker" in cmd or "horovod.runner.launch" in cmd)):
                left.append((p.pid, cmd[:120]))
        except psutil.Error:
            pass
    return left + [(c.pid, "child") for c in psutil.Process().children(recursive=True)
                   if c.status() != psutil.STATUS_ZOMBIE]


@pytest.fixture
def by_value():
    """Send this module's functions by value, as from a notebook: the ranks then
    need not import this module (and TensorFlow with it) before they start."""
    module = sys.modules[__name__]
    cloudpickle.register_pickle_by_value(module)
    yield
    cloudpickle.unregister_pickle_by_value(module)


# --- functions the ranks run (by reference, unless the by_value fixture is used) ---

def _train_step_report(scale, tag=""):
    import numpy as np

    import hvdagent
    from hvdagent import _hvd

    hvdagent.init()
    rank, size = hvdagent.rank(), hvdagent.size()
    print(f"hello {tag} from rank {rank} of {size}")
    total = _hvd.allreduce_object(float(rank + 1), op="sum")
    leaked = sorted(k for k in os.environ if k.startswith("HOROVOD_TEST_LEAK"))
    return {"rank": rank, "size": size, "value": np.full(2, rank * scale), "total": total,
            "leaked": leaked, "extra": os.environ.get("HVDAGENT_TEST_EXTRA"), "tag": tag}


def _rank1_launches_again():
    rank = int(os.environ["HOROVOD_RANK"])
    if rank == 1:
        import hvdagent

        hvdagent.launch(print)  # refused: this process is a launched rank
    time.sleep(300)  # rank 0 never finishes on its own: launch must stop it


def _rank1_crashes():
    print("about to crash", flush=True)
    if int(os.environ["HOROVOD_RANK"]) == 1:
        os._exit(3)
    time.sleep(300)


def _sleep_forever(folder):
    rank = int(os.environ["HOROVOD_RANK"])
    with open(os.path.join(folder, f"started-{rank}"), "w") as f:
        f.write(str(os.getpid()))
    time.sleep(300)


# --- tests ------------------------------------------------------------------------

@pytest.mark.timeout(240)
def test_results_in_rank_order_live_output_and_two_launches(capfd, monkeypatch):
    t0 = time.time()
    # A Horovod setting of the caller must not reach the job; env= must.
    monkeypatch.setenv("HOROVOD_TEST_LEAK", "1")
    first = hvdagent.launch(_train_step_report, np=2, args=(10,), kwargs={"tag": "one"},
                            env={"HVDAGENT_TEST_EXTRA": "yes"}, timeout=200)
    out = capfd.readouterr().out
    assert [r["rank"] for r in first] == [0, 1]
    assert [r["size"] for r in first] == [2, 2]
    assert [r["value"].tolist() for r in first] == [[0, 0], [10, 10]]
    assert [r["total"] for r in first] == [3.0, 3.0]  # a real 2-rank allreduce: 1 + 2
    assert [r["leaked"] for r in first] == [[], []]
    assert [r["extra"] for r in first] == ["yes", "yes"]
    # Default: rank 0's lines only, as printed (no prefix).
    assert "hello one from rank 0 of 2\n" in out
    assert "rank 1 of 2" not in out and "[rank" not in out and "<stdout>" not in out

    # Second launch in the same process, every rank shown with a prefix.
    second = hvdagent.launch(_train_step_report, np=2, args=(1,), kwargs={"tag": "two"}, output="all", timeout=200)
    out = capfd.readouterr().out
    assert [(r["rank"], r["tag"], r["value"].tolist()) for r in second] == [(0, "two", [0, 0]), (1, "two", [1, 1])]
    assert "[rank 0] hello two from rank 0 of 2\n" in out
    assert "[rank 1] hello two from rank 1 of 2\n" in out
    assert _leftover_workers(t0) == []


@pytest.mark.timeout(120)
def test_failing_rank_raises_with_its_rank_and_traceback_and_stops_the_others(by_value):
    t0 = time.time()
    with pytest.raises(LaunchError) as info:
        hvdagent.launch(_rank1_launches_again, np=2, timeout=100)
    err = info.value
    elapsed = time.time() - t0
    assert isinstance(err, RuntimeError) and not isinstance(err, LaunchTimeoutError)
    assert err.rank == 1
    assert str(err).startswith("rank 1 of 2 failed with RuntimeError: hvdagent.launch was called inside a process")
    assert "HOROVOD_RANK=1" in str(err)
    assert "_rank1_launches_again" in err.traceback and "Traceback (most recent call last)" in err.traceback
    assert "_rank1_launches_again" in str(err)  # the traceback travels in the message too
    assert list(err.errors) == [1]  # rank 0 was stopped, it did not fail
    assert elapsed < 60, elapsed  # rank 0's 300 s sleep was cut short
    assert _leftover_workers(t0) == []

    # A rank that dies without a Python error is named too.
    t1 = time.time()
    with pytest.raises(LaunchError) as info:
        hvdagent.launch(_rank1_crashes, np=2, output=None, timeout=100)
    assert info.value.rank == 1
    assert "rank 1 of 2 exited with status 3" in str(info.value)
    assert "about to crash" in info.value.output
    assert _leftover_workers(t1) == []


@pytest.mark.timeout(120)
def test_timeout_stops_every_rank(tmp_path, by_value):
    t0 = time.time()
    with pytest.raises(LaunchTimeoutError) as info:
        hvdagent.launch(_sleep_forever, np=2, args=(str(tmp_path),), timeout=8)
    elapsed = time.time() - t0
    assert isinstance(info.value, TimeoutError) and isinstance(info.value, LaunchError)
    assert "timed out after 8s; all 2 ranks were stopped" in str(info.value)
    assert 8 <= elapsed < 8 + 15, elapsed
    pids = [int((tmp_path / f"started-{r}").read_text()) for r in range(2)]  # both ranks were running...
    assert not any(psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE for p in pids)
    assert _leftover_workers(t0) == []  # ...and nothing of the job is left

    # Interrupting the caller (Ctrl-C, a notebook's stop button) stops the job too.
    t1 = time.time()
    timer = threading.Timer(6, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    with pytest.raises(KeyboardInterrupt):
        hvdagent.launch(_sleep_forever, np=2, args=(str(tmp_path),), timeout=100)
    timer.join()
    assert time.time() - t1 < 6 + 15
    assert _leftover_workers(t1) == []


def test_refuses_inside_a_rank_and_unsendable_functions_before_starting(monkeypatch):
    lock = threading.Lock()
    with pytest.raises(TypeError, match=r"cannot send fn to the worker processes") as info:
        hvdagent.launch(lambda: lock.locked())
    message = str(info.value)
    assert "define the model inside fn" in message and "lock" in message
    with pytest.raises(TypeError, match=r"cannot send args\[1\]"):
        hvdagent.launch(print, args=(1, (x for x in range(3))))
    with pytest.raises(ValueError, match=r"np must be an integer >= 1.*Received: np=0"):
        hvdagent.launch(print, np=0)
    with pytest.raises(ValueError, match=r"Received: timeout=-1"):
        hvdagent.launch(print, timeout=-1)
    with pytest.raises(ValueError, match=r"output must be a rank in 0\.\.1.*Received: output=5"):
        hvdagent.launch(print, output=5)
    with pytest.raises(TypeError, match=r"fn must be a callable.*Received: fn=3"):
        hvdagent.launch(3)
    with pytest.raises(TypeError, match=r"env must be a dict of str to str"):
        hvdagent.launch(print, env={"A": 1})
    with pytest.raises(ValueError, match=r"engine must be one of 'local', 'ray', 'spark'\. Received: engine='mpi'"):
        hvdagent.launch(print, engine="mpi")
    monkeypatch.setenv("HOROVOD_RANK", "0")
    with pytest.raises(RuntimeError, match=r"inside a process that is itself a launched rank \(HOROVOD_RANK=0\)"):
        hvdagent.launch(print)
