"""SyncProfiler: one process here; a real 2-rank run at the end."""

import textwrap

import numpy as np
import pytest

from conftest import read_results, run_horovod

import hvdagent
from hvdagent._sync.profiler import LOG_KEYS, SyncProfiler, format_record


def _agent(keras_module):
    model = keras_module.Sequential([keras_module.Input((4,)), keras_module.layers.Dense(1)])
    agent = hvdagent.DistributedAgent(model, scale_lr=False)
    agent.compile(keras_module.optimizers.SGD(0.01), loss="mse")
    return agent


def test_keys_in_logs_and_history_keras3(capsys):
    import keras

    agent = _agent(keras)
    prof = SyncProfiler()
    hist = agent.fit(np.ones((8, 4)), np.ones((8, 1)), batch_size=4, epochs=2, verbose=0, callbacks=[prof])
    for key in LOG_KEYS:
        assert len(hist.history[key]) == 2
    assert [r["epoch"] for r in prof.history] == [0, 1]
    rec = prof.history[-1]
    assert rec["sync_time"] == 0.0 and rec["syncs"] == 0  # one process: nothing reduced
    assert rec["compute_time"] == pytest.approx(rec["wall_time"])
    assert "Epoch 2 sync profile" in capsys.readouterr().out


def test_tf_keras_and_refit_after_fit_without_profiler():
    import tf_keras

    agent = _agent(tf_keras)
    x, y = np.ones((8, 4)), np.ones((8, 1))
    agent.fit(x, y, batch_size=4, epochs=1, verbose=0)
    prof = SyncProfiler(verbose=0)  # a Keras 3 callback: agent.fit forwards it to tf_keras
    hist = agent.fit(x, y, batch_size=4, epochs=1, verbose=0, callbacks=[prof])
    assert hist.history["sync_time"] == [0.0] and len(prof.history) == 1
    assert prof.history[0]["compute_time"] > 0


def test_the_sync_times_its_reductions_inside_a_tf_function():
    import tensorflow as tf

    from hvdagent._sync.gradients import GradientSync
    from hvdagent._sync.options import SyncOptions
    from hvdagent._sync.schedule import Schedule

    sync = GradientSync(SyncOptions(), Schedule())
    assert sync.timing() == (0.0, 0)  # not built: nothing measured
    sync.build([tf.Variable(tf.zeros([2]))])

    def slow(tensors):
        y = tf.linalg.matmul(tensors[0], tensors[0])
        for _ in range(20):
            y = tf.linalg.matmul(y, tensors[0]) / 100.0
        return [y]

    @tf.function
    def step(x):
        return sync._timed([x], slow)

    step(tf.ones([200, 200]))
    step(tf.ones([200, 200]))
    seconds, calls = sync.timing(reset=True)
    assert calls == 2 and seconds > 0
    assert sync.timing() == (0.0, 0)  # reset


def test_errors_name_the_argument():
    import keras

    with pytest.raises(ValueError, match="verbose=2"):
        SyncProfiler(verbose=2)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    model.compile("sgd", loss="mse")
    with pytest.raises(ValueError, match="DistributedOptimizer"):
        model.fit(np.ones((4, 4)), np.ones((4, 1)), verbose=0, callbacks=[SyncProfiler()])


def test_format_record():
    line = format_record({"epoch": 2, "wall_time": 1.0, "sync_time": 0.2, "compute_time": 0.8,
                          "sync_fraction": 0.2, "syncs": 0})
    assert line.startswith("Epoch 3 sync profile") and "0.00 ms each" in line


WORKER = textwrap.dedent('''
    import json, sys
    import numpy as np
    import keras, tensorflow as tf
    import hvdagent
    from hvdagent._sync.profiler import SyncProfiler

    hvdagent.init()
    rank, size = hvdagent.rank(), hvdagent.size()
    out = {}
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3), keras.layers.Dense(1)])
    agent = hvdagent.DistributedAgent(model, scale_lr=False)
    agent.compile(keras.optimizers.SGD(0.01), loss="mse")
    prof = SyncProfiler(advise=True)
    hist = agent.fit(np.ones((40, 4)), np.ones((40, 1)), batch_size=4, epochs=2, verbose=0, callbacks=[prof])
    out["profile"] = prof.history
    out["advice"] = prof.advice
    out["history"] = {k: hist.history[k] for k in ("sync_time", "compute_time", "sync_fraction")}

    # The reduction is weighted by each rank's count.
    sync = hvdagent._sync.parts.parts_of(model.optimizer).sync
    grads = [tf.fill([3, 2], float(rank + 1)), tf.fill([5], float(10 * (rank + 1)))]
    count = tf.constant(float(rank + 1))  # rank 0: 1 sample, rank 1: 2 samples
    out["weighted"] = [g.numpy().tolist() for g in sync.reduce(grads, count=count)]
    with open(f"{sys.argv[1]}/results-{rank}.json", "w") as f:
        json.dump(out, f)
''')


@pytest.mark.timeout(240)
def test_two_ranks_profile_and_weighted_reduction(tmp_path):
    script = tmp_path / "profile_worker.py"
    script.write_text(WORKER)
    proc = run_horovod(script, tmp_path, timeout=220)
    r0, r1 = read_results(tmp_path)
    steps = 40 // (4 * 2)
    for r in (r0, r1):
        assert [e["syncs"] for e in r["profile"]] == [steps, steps]
        assert all(e["sync_time"] > 0 and e["compute_time"] > 0 for e in r["profile"])
        assert r["history"]["sync_time"] == [e["sync_time"] for e in r["profile"]]
        # weighted: (1*1 + 2*2) / 3 and (1*10 + 2*20) / 3
        expect = [[[5 / 3] * 2] * 3, [50 / 3] * 5]
        np.testing.assert_allclose(r["weighted"][0], expect[0], rtol=1e-6)
        np.testing.assert_allclose(r["weighted"][1], expect[1], rtol=1e-6)
    assert proc.stdout.count("sync profile") == 2  # rank 0 only, one line per epoch
    # advise=True: at the end the link is measured and the prediction printed once (rank 0), the same on both.
    from hvdagent._sync import cost_model

    a = r0["advice"]
    assert a == r1["advice"]  # rank 0's measurements and prediction, given to every rank
    assert proc.stdout.count("A prediction of the alpha-beta model") == 1 and a["verdict"] in proc.stdout
    assert a["link_measured"] and a["p"] == 2 and a["params"] == 4 * 3 + 3 + 3 + 1
    try:
        fitted = cost_model.fit(a["link_rows"], 2)
    except ValueError:  # the latency did not grow with the size on this loopback: said, and training is not failed
        fitted = (min(row["latency_ms"] for row in a["link_rows"]) / 2e3, float("inf"))
        assert "bandwidth not resolved" in proc.stdout
    assert (a["alpha_s"], a["bandwidth"]) == pytest.approx(fitted)
    assert [row["bytes"] for row in a["link_rows"]][:2] == [4096, 16384] and all(
        row["latency_ms"] > 0 for row in a["link_rows"])
    timed = r0["profile"][1]  # the compute time per step the profiler measured in epoch 2
    assert a["compute_s"] == pytest.approx(timed["compute_time"] / timed["steps"])
    shapes = [(4, 3), (3,), (3, 1), (1,)]
    for row in a["rows"]:  # every figure is the model's, from these measured inputs
        assert row["sync_s"] == pytest.approx(cost_model.sync_seconds(
            row["method"], shapes, 2, a["alpha_s"], a["bandwidth"], a["compress_s"].get(row["method"], 0.0)))
    assert [row["step_s"] for row in a["rows"]] == sorted(row["step_s"] for row in a["rows"])
    assert a["compress_s"] == {"powersgd1": 0.0, "powersgd2": 0.0, "powersgd4": 0.0}  # nothing worth compressing
