"""DistributedAgent under real `horovodrun --gloo -np 2` runs (Keras 3 and Keras 2).

One launch per Keras generation runs many checks (tests/distributed/agent_checks.py);
the tests below assert on the values every rank wrote.
"""

import os
import subprocess
import sys

import pytest

from conftest import DIST, read_results, run_horovod

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module", params=["keras3", "keras2"])
def run(request, tmp_path_factory):
    out = tmp_path_factory.mktemp(request.param)
    # The Keras 2 launch also runs with each rank bound to its own cores (hvdagent._runtime.binding).
    env = ({"TF_USE_LEGACY_KERAS": "1", "HVDAGENT_BIND": "cores"} if request.param == "keras2"
           else {"TF_USE_LEGACY_KERAS": "0", "HVDAGENT_BIND": "none"})
    proc = run_horovod(DIST / "agent_checks.py", out, timeout=420, env=env)
    return request.param, out, read_results(out), proc


def test_two_ranks_equal_one_process_with_twice_the_batch(run):
    _, _, (r0, r1), _ = run
    assert r0["equivalence_steps"] == 24  # 384 samples / (8 per rank * 2 ranks)
    for r in (r0, r1):
        assert r["equivalence_max_abs_diff"] < 1e-5, r["equivalence_max_abs_diff"]


def test_replicas_bitwise_identical_after_different_initialisation(run):
    _, _, (r0, r1), _ = run
    assert r0["initial_digest"] != r1["initial_digest"]  # different random starts...
    assert r0["final_digest"] == r1["final_digest"]  # ...identical after fit
    assert r0["history"] == r1["history"]  # same logs on every rank
    assert r0["scaled_lr"] == pytest.approx(2 * 1e-2)  # scale_lr=True, 2 ranks: applied rate
    assert r0["stored_lr"] == pytest.approx(1e-2)  # the optimizer keeps the rate the user gave


def test_metrics_are_exact_global_values(run):
    _, _, (r0, r1), _ = run
    for r in (r0, r1):
        for key in ("loss", "accuracy"):
            assert r["eval_distributed"][key] == pytest.approx(r0["eval_single"][key], abs=1e-6)
            assert r["eval_after_fit"][key] == pytest.approx(r["eval_after_fit_single"][key], abs=1e-6)
        assert r["fit_val_loss"] == pytest.approx(r["eval_after_fit_single"]["loss"], abs=1e-6)
    assert r0["rank0_only_eval"] == pytest.approx(r0["eval_after_fit_single"]["loss"], abs=1e-6)
    assert "rank0_only_eval" not in r1
    assert r0["after_rank0_only_eval"] == r1["after_rank0_only_eval"] == pytest.approx(r0["eval_after_fit_single"]["loss"], abs=1e-6)


def test_predict_is_gathered_in_order_on_every_rank(run):
    _, _, results, _ = run
    for r in results:
        assert r["predict_shape"] == [37, 3]
        assert r["predict_max_abs_diff"] < 1e-6


def test_uneven_data_never_hangs_and_replicas_agree(run):
    _, _, (r0, r1), _ = run
    for name, updates in (("uneven_2v1", 4), ("uneven_1v0", 2)):
        assert r0[name + "_digest"] == r1[name + "_digest"]
        assert r0[name + "_updates"] == r1[name + "_updates"] == updates


def test_more_ranks_than_samples_works_and_no_data_at_all_is_an_error(run):
    _, _, (r0, r1), _ = run
    assert r0["one_sample_digest"] == r1["one_sample_digest"]
    assert r0["one_sample_updates"] == r1["one_sample_updates"] == 2
    for r in (r0, r1):
        assert r["one_sample_eval"] == pytest.approx(r0["one_sample_eval_single"], abs=1e-6)
        assert r["no_data_anywhere"]["raised"] == "ValueError", r["no_data_anywhere"]
        assert "no rank has any data" in r["no_data_anywhere"]["message"]


def test_bad_input_raises_the_documented_error_on_every_rank(run):
    _, _, results, _ = run
    for r in results:
        assert r["mismatched_model"]["raised"] == "ValueError", r["mismatched_model"]
        assert "differs across ranks" in r["mismatched_model"]["message"]
        assert "dense" in r["mismatched_model"]["message"]  # names the variable
        assert r["fit_before_compile"]["raised"] == "RuntimeError"
        assert "agent.compile" in r["fit_before_compile"]["message"]
        assert r["batch_size_zero"]["raised"] == "ValueError"
        assert "batch_size=0" in r["batch_size_zero"]["message"]
        assert r["ok"] is True


def test_saved_model_loads_without_horovod_and_predicts_identically(run):
    kind, out, _, _ = run
    code = f"""
import os, sys, numpy as np
os.environ["TF_USE_LEGACY_KERAS"] = "{'1' if kind == 'keras2' else '0'}"
if os.environ["TF_USE_LEGACY_KERAS"] == "1":
    import tf_keras as keras
else:
    import keras
model = keras.models.load_model({str(out / 'model.keras')!r})
pred = model.predict(np.load({str(out / 'x20.npy')!r}), verbose=0)
assert "horovod" not in sys.modules and "hvdagent" not in sys.modules, sorted(m for m in sys.modules if "horovod" in m or "hvdagent" in m)
assert model.optimizer.__class__.__name__ == "Adam", model.optimizer
print("max_abs_diff", float(np.max(np.abs(pred - np.load({str(out / 'expected_pred.npy')!r})))))
print("lr", float(np.asarray(model.optimizer.learning_rate)))
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    values = dict(line.split() for line in proc.stdout.splitlines() if line.startswith(("max_abs_diff", "lr")))
    assert float(values["max_abs_diff"]) == 0.0
    assert float(values["lr"]) == pytest.approx(1e-2)  # the unscaled, single-process rate


def test_cpu_binding_gives_each_rank_its_own_cores_for_every_thread(run):
    kind, _, (r0, r1), _ = run
    allowed = sorted(os.sched_getaffinity(0))
    if kind == "keras3":  # HVDAGENT_BIND=none: the operating system places the threads
        assert r0["cpus"] == r1["cpus"] == allowed
        return
    if len(allowed) < 2:
        pytest.skip(f"one CPU allowed here ({allowed}): nothing to split")
    assert set(r0["cpus"]).isdisjoint(r1["cpus"]) and sorted(r0["cpus"] + r1["cpus"]) == allowed
    for r in (r0, r1):
        assert r["thread_cpus"] == [r["cpus"]], r  # all threads, including those started before the binding
        assert r["threads"] > 3  # TensorFlow's and Horovod's threads were there to check
