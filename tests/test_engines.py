"""hvdagent.launch on a real local Ray (2 workers) and a real local Spark (``local[2]``).

One engine start per class (Ray or Spark, started here as a user would and
left for launch to find), one training launch with many checks, one failing
launch. Nothing of either engine may be left running once the class is done.

Deselect locally with ``-m "not ray and not spark"``; ``ci/test.sh`` runs them.
"""

import os
import subprocess
import sys
import time

import cloudpickle
import numpy as np
import psutil
import pytest

import hvdagent
from hvdagent import LaunchError, LaunchTimeoutError

ROOT_PID = os.getpid()
# Command-line fragments of every process Ray, Spark or a launch starts.
ENGINE_PROCESSES = ("raylet", "gcs_server", "ray::", "ray/_private", "ray/dashboard", "default_worker.py",
                    "org.apache.spark", "pyspark.daemon", "pyspark/jars", "horovod.spark.task",
                    "hvdagent._launch.worker")
EPOCHS, BATCH = 3, 32
LAUNCH_TIMEOUT_S = 600


def _engine_processes(since):
    found = []
    for p in psutil.process_iter(["cmdline", "create_time", "status"]):
        try:
            cmd = " ".join(p.info["cmdline"] or [])
            if (p.info["create_time"] >= since - 1 and p.info["status"] != psutil.STATUS_ZOMBIE
                    and any(k in cmd for k in ENGINE_PROCESSES)):
                found.append((p.pid, cmd[:160]))
        except psutil.Error:
            pass
    return found


def _left_running(since, wait_s=60):
    """Engine processes started after ``since`` still running after up to ``wait_s`` seconds."""
    end = time.monotonic() + wait_s
    while True:
        left = _engine_processes(since) + [
            (c.pid, "child: " + " ".join(c.cmdline())[:160]) for c in psutil.Process(ROOT_PID).children(recursive=True)
            if c.status() != psutil.STATUS_ZOMBIE]
        if not left or time.monotonic() > end:
            return left
        time.sleep(1)


@pytest.fixture(scope="module", autouse=True)
def by_value():
    """Send this module's functions by value (as from a notebook or a script's __main__)."""
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    yield
    cloudpickle.unregister_pickle_by_value(sys.modules[__name__])


# --- what the ranks run ---------------------------------------------------------------

def _digits():
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = (digits.images.reshape(-1, 64) / 16.0).astype("float32")
    return x, digits.target.astype("int64")


def _model(seed=0):
    import keras

    keras.utils.set_random_seed(seed)
    return keras.Sequential([keras.Input((64,)), keras.layers.Dense(32, activation="relu"),
                             keras.layers.Dense(10, activation="softmax")])


def train(epochs, batch_size):
    """The training function every engine runs: DistributedAgent on scikit-learn's digits."""
    import keras

    import hvdagent

    x, y = _digits()
    agent = hvdagent.DistributedAgent(_model(), scale_lr=True)
    agent.compile(keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    history = agent.fit(x, y, batch_size=batch_size, epochs=epochs, verbose=0)
    print(f"rank {hvdagent.rank()} trained", flush=True)
    return {"rank": hvdagent.rank(), "size": hvdagent.size(), "pid": os.getpid(),
            "weights": agent.model.get_weights(), "history": history.history,
            "evaluate": agent.evaluate(x, y, batch_size=batch_size, return_dict=True, verbose=0)}


def fail_on_rank_1(folder):
    import hvdagent
    from hvdagent import _hvd

    hvdagent.init()
    with open(os.path.join(folder, f"pid-{hvdagent.rank()}"), "w") as f:
        f.write(str(os.getpid()))
    _hvd.allreduce_object(1.0, name="before_failure")
    if hvdagent.rank() == 1:
        raise ValueError("rank 1 fails on purpose")
    _hvd.allreduce_object(1.0, name="never_matched")  # rank 0 waits here: launch must stop it
    time.sleep(600)


def sleep_forever(folder):
    with open(os.path.join(folder, f"pid-{os.environ['HOROVOD_RANK']}"), "w") as f:
        f.write(str(os.getpid()))
    time.sleep(900)


# --- the checks, the same for every engine ---------------------------------------------

def _check_training(engine):
    results = hvdagent.launch(train, np=2, args=(EPOCHS, BATCH), engine=engine, timeout=LAUNCH_TIMEOUT_S)
    assert [r["rank"] for r in results] == [0, 1]
    assert [r["size"] for r in results] == [2, 2]
    assert results[0]["pid"] != results[1]["pid"] != os.getpid()
    # Replicas identical to the bit, and the same global logs on both ranks.
    for w0, w1 in zip(results[0]["weights"], results[1]["weights"]):
        np.testing.assert_array_equal(w0, w1)
    assert results[0]["history"] == results[1]["history"]
    assert results[0]["evaluate"] == results[1]["evaluate"]
    assert len(results[0]["history"]["loss"]) == EPOCHS
    # The weights moved, and they learned something (10 classes: chance is 0.1).
    initial = _model().get_weights()
    assert not np.array_equal(initial[0], results[0]["weights"][0])
    assert results[0]["evaluate"]["accuracy"] > 0.5, results[0]["evaluate"]
    # Metrics exact: the distributed evaluate equals plain Keras, one process, on the same weights and data.
    import keras

    x, y = _digits()
    reference = _model()
    reference.set_weights(results[0]["weights"])
    reference.compile(loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    expected = reference.evaluate(x, y, batch_size=BATCH, return_dict=True, verbose=0)
    assert results[0]["evaluate"]["accuracy"] == pytest.approx(expected["accuracy"], abs=1e-7)
    assert results[0]["evaluate"]["loss"] == pytest.approx(expected["loss"], rel=1e-5)
    assert isinstance(reference, keras.Model)
    return results


def _check_failure(engine, tmp_path):
    t0 = time.monotonic()
    with pytest.raises(LaunchError) as info:
        hvdagent.launch(fail_on_rank_1, np=2, args=(str(tmp_path),), engine=engine, timeout=LAUNCH_TIMEOUT_S)
    err = info.value
    assert err.rank == 1
    assert str(err).startswith("rank 1 of 2 failed with ValueError: rank 1 fails on purpose"), str(err)[:500]
    assert "fail_on_rank_1" in err.traceback and "Traceback (most recent call last)" in err.traceback
    assert "Traceback of rank 1" in str(err)
    assert time.monotonic() - t0 < LAUNCH_TIMEOUT_S - 60  # stopped long before rank 0's sleep or the timeout
    # Both ranks ran, and neither is left running.
    pids = [int((tmp_path / f"pid-{r}").read_text()) for r in range(2)]
    end = time.monotonic() + 60
    while any(psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE for p in pids):
        assert time.monotonic() < end, f"rank processes {pids} still running 60 s after the launch failed"
        time.sleep(1)


def _check_timeout(engine, tmp_path, timeout=150):
    t0 = time.monotonic()
    with pytest.raises(LaunchTimeoutError, match=rf"timed out after {timeout}s; all 2 ranks were stopped"):
        hvdagent.launch(sleep_forever, np=2, args=(str(tmp_path),), engine=engine, timeout=timeout)
    assert time.monotonic() - t0 < timeout + 120
    pids = [int((tmp_path / f"pid-{r}").read_text()) for r in range(2)]  # both ranks were running...
    end = time.monotonic() + 60
    while any(psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE for p in pids):
        assert time.monotonic() < end, f"rank processes {pids} still running 60 s after the timeout"
        time.sleep(1)


# --- Ray ------------------------------------------------------------------------------

@pytest.fixture(scope="class")
def ray_cluster():
    """A local Ray with 2 CPUs, started as a user would; nothing of it may outlive the class."""
    ray = pytest.importorskip("ray")  # the ray extra; ci/setup.sh installs it
    since = time.time()
    ray.init(num_cpus=2, include_dashboard=False)
    yield ray
    ray.shutdown()
    assert _left_running(since) == []


@pytest.mark.ray
@pytest.mark.usefixtures("ray_cluster")
class TestRay:
    @pytest.mark.timeout(LAUNCH_TIMEOUT_S + 300)
    def test_trains_identical_replicas_with_exact_metrics(self, ray_cluster):
        _check_training("ray")
        assert ray_cluster.is_initialized()  # launch used the running Ray and left it running

    @pytest.mark.timeout(LAUNCH_TIMEOUT_S + 300)
    def test_failing_rank_is_named_and_stopped(self, tmp_path):
        _check_failure("ray", tmp_path)

    @pytest.mark.timeout(600)
    def test_timeout_stops_every_rank(self, tmp_path):
        _check_timeout("ray", tmp_path)


# --- Spark ----------------------------------------------------------------------------

@pytest.fixture(scope="class")
def spark_session():
    """A local[2] SparkSession whose workers run this interpreter; nothing of it may outlive the class."""
    pytest.importorskip("pyspark")  # the spark extra; ci/setup.sh installs it
    from pyspark.sql import SparkSession

    from hvdagent._launch.spark import stop_session

    since = time.time()
    os.environ["PYSPARK_PYTHON"] = sys.executable
    spark = (SparkSession.builder.master("local[2]").appName("hvdagent-tests")
             .config("spark.ui.enabled", "false").config("spark.ui.showConsoleProgress", "false").getOrCreate())
    yield spark
    stop_session(spark)  # the session and pyspark's Java process
    del os.environ["PYSPARK_PYTHON"]
    assert _left_running(since) == []


@pytest.mark.spark
@pytest.mark.usefixtures("spark_session")
class TestSpark:
    @pytest.mark.timeout(LAUNCH_TIMEOUT_S + 300)
    def test_trains_identical_replicas_with_exact_metrics(self, spark_session):
        _check_training("spark")
        assert spark_session.sparkContext._jsc is not None  # launch left the user's session running

    @pytest.mark.timeout(LAUNCH_TIMEOUT_S + 300)
    def test_failing_rank_is_named_and_stopped(self, tmp_path):
        _check_failure("spark", tmp_path)

    @pytest.mark.timeout(600)
    def test_timeout_stops_every_rank(self, tmp_path):
        _check_timeout("spark", tmp_path)

    def test_refuses_too_few_slots(self):
        with pytest.raises(ValueError, match=r"np=3 ranks need 3 Spark task slots.*local\[2\]"):
            hvdagent.launch(train, np=3, args=(1, 32), engine="spark")


@pytest.mark.spark
@pytest.mark.timeout(300)
def test_spark_refuses_a_script_without_main_guard(tmp_path):
    """Without the guard, Horovod's spawned helper would re-run the script: refused up front, with the line."""
    script = tmp_path / "unguarded.py"
    script.write_text("import hvdagent\n\ndef f():\n    return 1\n\nhvdagent.launch(f, np=2, engine='spark')\n")
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=240, cwd=tmp_path)
    assert proc.returncode == 1
    assert 'must be called under `if __name__ == "__main__":`' in proc.stderr, proc.stderr[-2000:]
    assert f"{script}:6" in proc.stderr
    assert "SparkSession" not in proc.stderr and not list(tmp_path.glob("spark-warehouse"))
