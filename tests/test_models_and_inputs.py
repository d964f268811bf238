"""Drop-in for Keras users: every model kind and every input kind `model.fit`
accepts, at 2 ranks against plain Keras in one process (real `horovodrun`)."""

import subprocess
import sys

import pytest

from conftest import DIST, read_results, run_horovod

pytestmark = pytest.mark.timeout(900)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    out = tmp_path_factory.mktemp("models")
    run_horovod(DIST / "models_checks.py", out, timeout=600)
    return out, read_results(out)


@pytest.fixture(scope="module", params=["keras3", "keras2"])
def inputs(request, tmp_path_factory):
    out = tmp_path_factory.mktemp("inputs-" + request.param)
    env = {"TF_USE_LEGACY_KERAS": "1" if request.param == "keras2" else "0"}
    run_horovod(DIST / "inputs_checks.py", out, timeout=600, env=env)
    return read_results(out)


def test_custom_train_step_equals_one_process_and_its_logs_are_global(models):
    _, (r0, r1) = models
    assert r0["custom_step_diff"] < 1e-5 and r1["custom_step_diff"] < 1e-5
    assert r0["custom_step_digest"] == r1["custom_step_digest"]
    assert r0["custom_step_history"] == r1["custom_step_history"]
    for key, values in r0["custom_step_history_single"].items():
        assert r0["custom_step_history"][key] == pytest.approx(values, abs=1e-5)
    assert r0["custom_step_uneven_digest"] == r1["custom_step_uneven_digest"]


def test_lazily_built_models_train_identically_on_every_rank(models):
    _, (r0, r1) = models
    for name in ("lazy_subclassed", "sequential_no_input"):
        assert r0[f"{name}_digest"] == r1[f"{name}_digest"]
        assert r0[f"{name}_updates"] == r1[f"{name}_updates"] == 2 * 128 // 16


def test_multi_output_with_several_losses_equals_one_process(models):
    _, (r0, r1) = models
    assert r0["multi_output_diff"] < 1e-5
    for key, values in r0["multi_output_history_single"].items():
        assert r0["multi_output_history"][key] == pytest.approx(values, abs=1e-5), key
    # Keras records per-output losses as a plain mean over batches (its batch size is not
    # static in the traced step), a value that depends on how the data is batched; the total
    # loss and the metrics are per-sample means, exact whatever the split.
    for r in (r0, r1):
        for key in ("loss", "cls_accuracy"):
            assert r["multi_output_eval"][key] == pytest.approx(r0["multi_output_eval_single"][key], abs=1e-5), key


def test_mixed_precision_keeps_replicas_identical(models):
    out, (r0, r1) = models
    for policy in ("mixed_float16", "mixed_bfloat16"):
        assert r0[f"{policy}_digest"] == r1[f"{policy}_digest"]
        assert r0[f"{policy}_loss"] == r1[f"{policy}_loss"]
        assert r0[f"{policy}_loss"][1] < r0[f"{policy}_loss"][0]  # it learns
    assert r0["mixed_float16_optimizer"] == ["LossScaleOptimizer", "Adam"]
    assert r0["mixed_bfloat16_optimizer"] == ["Adam", "Adam"]


def test_batchnorm_statistics_are_one_model_on_every_rank(models):
    _, (r0, r1) = models
    assert r0["bn_stats"] == r1["bn_stats"]
    for r in (r0, r1):
        assert r["bn_eval"] == pytest.approx(r["bn_eval_local"], abs=1e-5)


def _load_without_hvdagent(path, x_path, strict=True):
    code = f"""
import sys, warnings, numpy as np, keras
if {strict}:
    warnings.simplefilter("error", UserWarning)  # a skipped optimizer state would warn
model = keras.models.load_model({str(path)!r})
assert "hvdagent" not in sys.modules and not any(m.startswith("horovod") for m in sys.modules)
print("optimizer", type(model.optimizer).__name__, float(np.asarray(model.optimizer.learning_rate)))
np.save({str(path) + '.pred.npy'!r}, model.predict(np.load({str(x_path)!r}), verbose=0))
"""
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=180)


def test_synchronized_batchnorm_equals_one_process_at_the_global_batch(models):
    _, (r0, r1) = models
    assert r0["sync_bn_diff"] < 1e-5 and r1["sync_bn_diff"] < 1e-5
    assert r0["sync_bn_digest"] == r1["sync_bn_digest"]
    for r in (r0, r1):  # a rank with an empty batch cannot join the statistics: a clear error, on every rank
        assert r["sync_bn_uneven"]["raised"] == "ValueError"
        assert "Received: empty batches per rank [0, 1]" in r["sync_bn_uneven"]["message"]


def _h5_layout(path):
    import io
    import zipfile

    import h5py

    with zipfile.ZipFile(path) as z, h5py.File(io.BytesIO(z.read("model.weights.h5")), "r") as f:
        found = []
        f.visititems(lambda name, obj: found.append((name, tuple(obj.shape))) if isinstance(obj, h5py.Dataset) else None)
    return sorted(found)


def test_model_checkpoint_files_load_anywhere_and_resume(models):
    import numpy as np

    out, (r0, r1) = models
    proc = _load_without_hvdagent(out / "ckpt.keras", out / "ckpt_x.npy")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "optimizer Adam 0.001" in proc.stdout  # the plain optimizer, the rate the user gave
    pred = np.load(str(out / "ckpt.keras") + ".pred.npy")
    assert np.array_equal(pred, np.load(out / "ckpt_expected.npy"))
    # mixed_float16: the weights file has exactly the layout plain Keras writes for the same
    # model (Keras 3.15 reloads its own such file with a warning about the LossScaleOptimizer's
    # state, so loading is not strict here).
    assert _h5_layout(out / "mixed.keras") == _h5_layout(out / "mixed_plain.keras")
    proc = _load_without_hvdagent(out / "mixed.keras", out / "ckpt_x.npy", strict=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert r0["ckpt_resumed_updates"] == r1["ckpt_resumed_updates"] == 2 * 128 // 16
    assert r0["ckpt_resumed_digest"] == r1["ckpt_resumed_digest"]


def test_generator_pydataset_and_infinite_dataset_equal_one_process(inputs):
    r0, r1 = inputs
    for name in ("generator", "pydataset", "infinite_dataset"):
        assert r0[f"{name}_diff"] < 1e-5, name
        assert r0[f"{name}_digest"] == r1[f"{name}_digest"], name
        assert r0[f"{name}_updates"] == r1[f"{name}_updates"] == 2 * 128 // 16, name
    assert r0["pydataset_loaded"] == list(range(0, 16, 2))  # each rank loads only its own batches
    assert r1["pydataset_loaded"] == list(range(1, 16, 2))


def test_validation_split_validation_data_and_evaluate_are_exact(inputs):
    for r in inputs:
        assert r["validation_split_diff"] < 1e-5
        assert r["validation_split_val_loss"] == pytest.approx(r["validation_split_val_loss_single"], abs=1e-6)
        assert r["val_dataset_loss"] == pytest.approx(r["val_dataset_loss_single"], abs=1e-6)
        assert r["eval_pydataset"] == pytest.approx(r["eval_arrays_single"], abs=1e-6)


def test_predict_on_datasets_is_complete_and_in_order(inputs):
    for r in inputs:
        assert r["predict_dataset_shape"] == [75, 2]
        assert r["predict_dataset_diff"] < 1e-6
        assert r["predict_pydataset_diff"] < 1e-6


def test_unseeded_shuffles_are_partitions_and_evaluate_is_exact(inputs):
    r0, r1 = inputs
    for epoch in range(2):
        a, b = (set(r0["unseeded_epochs"][rank][epoch]) for rank in (0, 1))
        assert not a & b and sorted(a | b) == list(range(100))  # each sample exactly once
    assert r0["unseeded_orders_differ"]  # still reshuffled every epoch
    assert r0["unseeded_digest"] == r1["unseeded_digest"]
    for r in inputs:
        assert r["unseeded_eval"] == pytest.approx(r0["unseeded_eval_single"], abs=1e-6)


def test_a_split_dataset_transformed_afterwards_is_never_split_again(inputs):
    """shard_dataset(...) then map/batch/prefetch: every sample exactly once per epoch, exact metrics."""
    for r in inputs:
        expected = r["resplit_expected_loss"]
        for name in ("elements_map_batch", "batched_then_map", "shuffled_map_batch"):
            assert r[f"resplit_{name}_fit_count"] == [65.0, 65.0], name
            assert r[f"resplit_{name}_fit_loss"] == pytest.approx([expected, expected], rel=1e-6), name
            assert r[f"resplit_{name}_eval"]["count"] == 65.0, name
            assert r[f"resplit_{name}_eval"]["loss"] == pytest.approx(expected, rel=1e-6), name


def test_directory_datasets_with_default_shuffling_are_partitions_and_evaluate_is_exact(inputs):
    """keras.utils.text_/image_dataset_from_directory(shuffle=True, seed=None) draw their seed from NumPy's
    global generator: import hvdagent seeds it alike on every rank, so the split by batch is a partition."""
    r0, r1 = inputs
    mine, theirs = (set(r0["textdir_seen"][rank]) for rank in (0, 1))
    assert not mine & theirs and mine | theirs == {f"doc{i}" for i in range(100)}  # each file exactly once
    assert r0["textdir_digest"] == r1["textdir_digest"]
    for r in inputs:
        assert r["textdir_eval"] == pytest.approx(r0["textdir_eval_single"], abs=1e-6)
        assert r["textdir_eval"]["accuracy"] > 0.9  # it learned: the words decide the class
        assert r["imagedir_eval"] == pytest.approx(r0["imagedir_eval_single"], rel=1e-6)
        # random augmentation in the pipeline (different pixels on every rank, Keras 3) does not trip the check
        assert r["augmented_fit_loss"][0] > 0 and (r["augmented_pixels_differ"] or not r["keras3"])


def test_ranks_that_see_different_data_are_refused_naming_the_fix(inputs):
    first_batch = "differs across ranks: its first batch on rank(s) [1] is not rank 0's"
    for r in inputs:
        for name in ("order_fit", "order_evaluate", "order_validation", "order_predict", "order_user_split",
                     "order_arrays", "order_predict_arrays", "order_generator"):
            assert r[name]["raised"] == "ValueError", (name, r[name]["message"][-2000:])
        for name in ("order_fit", "order_evaluate", "order_user_split"):
            message = r[name]["message"]
            assert message.startswith("x " + first_batch) and "splits a batched dataset by batch position" in message
            assert "seed its shuffles" in message and "pass shard=False" in message and "Received: fingerprints" in message
        assert r["order_validation"]["message"].startswith("validation_data " + first_batch)
        assert r["order_predict"]["message"].startswith("x " + first_batch)
        assert "call model.predict on each rank" in r["order_predict"]["message"]
        for name in ("order_arrays", "order_predict_arrays"):
            assert "x differs across ranks: their length or sampled rows on rank(s) [1]" in r[name]["message"]
            assert "train_test_split(..., random_state=0)" in r[name]["message"]
        assert "splits a generator's stream by position" in r["order_generator"]["message"]
        assert r["order_untouched"] == 0  # refused before the first step
        assert r["order_user_split_shard_false"] == 8  # what the message says works: each rank's own half


def test_bad_inputs_are_named(inputs):
    for r in inputs:
        assert r["generator_without_steps"]["raised"] == "ValueError"
        assert "Received: steps_per_epoch=None" in r["generator_without_steps"]["message"]
        assert "infinite" in r["infinite_without_steps"]["message"]
        assert "validation_split needs numpy array inputs" in r["split_with_dataset"]["message"]
        assert "pass neither" in r["y_with_dataset"]["message"]
        assert r["ok"] is True
