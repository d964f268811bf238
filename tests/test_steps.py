"""Every rank, every step (tests/distributed/steps_checks.py under a real `horovodrun --gloo -np 2`):
the same collectives whatever a rank's batch holds, every optimizer a step uses distributed,
models without call(), keras-io's GAN and VAE, XLA, and the replica check."""

import re

import numpy as np
import pytest

from conftest import DIST, read_results, run_horovod

pytestmark = pytest.mark.timeout(900)


@pytest.fixture(scope="module", params=["keras3", "keras2"])
def run(request, tmp_path_factory):
    out = tmp_path_factory.mktemp("steps-" + request.param)
    env = {"TF_USE_LEGACY_KERAS": "1" if request.param == "keras2" else "0",
           # XLA writes the modules it compiles for the agent's gradient function (and only those) here
           "XLA_FLAGS": f"--xla_dump_to={out / 'xla'} --xla_dump_hlo_module_re=.*hvdagent_gradients.*"}
    run_horovod(DIST / "steps_checks.py", out, timeout=600, env=env)
    return request.param, out, read_results(out)


def _histories_match(r, name, tol=1e-5):
    single = r[f"{name}_history_single"]
    assert set(r[f"{name}_history"]) == set(single)
    for key, values in single.items():
        assert r[f"{name}_history"][key] == pytest.approx(values, abs=tol), (name, key)


def test_sparse_gradients_on_uneven_data_equal_one_process_and_never_hang(run):
    # 65 samples at 32 per rank (rank 1's second batch is empty), and 5 dataset batches
    # (rank 1's third is empty): two Embeddings' IndexedSlices, without sparse_as_dense.
    _, _, (r0, r1) = run
    for name in ("embedding_numpy", "embedding_dataset"):
        for r in (r0, r1):
            assert r[f"{name}_diff"] < 1e-6, name
            _histories_match(r, name)
        for w0, w1 in zip(r0[f"{name}_weights"], r1[f"{name}_weights"]):  # sparse updates: at most rounding apart
            assert np.abs(np.asarray(w0) - np.asarray(w1)).max() < 1e-7
    assert r0["embedding_numpy_updates"] == r1["embedding_numpy_updates"] == 4  # 2 epochs x 2 steps, on both ranks


def test_a_custom_compile_with_two_optimizers_and_no_call_equals_one_process(run):
    _, _, (r0, r1) = run
    for r in (r0, r1):
        assert r["two_optimizers_diff"] < 1e-5
        _histories_match(r, "two_optimizers")
        assert r["two_optimizers_distributed"] == [True, True, True]
        assert r["two_optimizers_updates"] == [10, 10]  # 2 epochs x 5 steps each, the empty one included
        assert r["two_optimizers_tags"] == ["", "_decoder_optimizer", "_encoder_optimizer"]  # own collective names
    assert r0["two_optimizers_digest"] == r1["two_optimizers_digest"]
    # Compiled before the agent wraps it: the same optimizers are found, the same weights come out.
    assert r0["two_optimizers_precompiled_digest"] == r1["two_optimizers_precompiled_digest"] == r0["two_optimizers_digest"]


def test_xla_compiles_the_gradients_and_equals_one_process(run):
    _, out, (r0, r1) = run
    for r in (r0, r1):
        assert r["xla_jit_compile"] is True
        assert r["xla_diff"] < 1e-5
        _histories_match(r, "xla")
        assert r["xla_eval"] == pytest.approx(r["xla_eval_single"], abs=1e-5)
    assert r0["xla_digest"] == r1["xla_digest"]
    assert any("hvdagent_gradients" in p.name for p in (out / "xla").iterdir())  # XLA compiled it
    for r in (r0, r1):
        assert r["xla_custom_step"]["raised"] == "ValueError"
        message = r["xla_custom_step"]["message"]
        assert "jit_compile is on for TwoOptimizers, whose train_step is its own" in message
        assert "model.jit_compile = False" in message and message.endswith("Received: jit_compile=True")


def test_the_replica_check_fires_on_diverged_replicas_and_names_the_variable(run):
    _, _, (r0, r1) = run
    for r in (r0, r1):
        for check, when in (("epoch", "after epoch 1"), ("end", "after fit")):
            assert r[f"guard_{check}"]["raised"] == "ReplicaDivergenceError", r[f"guard_{check}"]
            message = r[f"guard_{check}"]["message"]
            assert f"the replicas differ {when}: 1 trainable variable(s)" in message
            assert re.search(r"'(\w+/)?drift\w*/scale(:0)?' \(up to 0\.\d+ from the mean over ranks, on rank 0\)",
                             message), message
            assert message.endswith("Received: replica_tolerance=1e-06")
        assert r["guard_tiny"]["raised"] is None  # 1e-9 apart: within the tolerance
        assert r["guard_big"]["raised"] == "ReplicaDivergenceError"
        assert "(up to 0.0005 from the mean over ranks" in r["guard_big"]["message"]
        assert r["guard_big_tolerated"]["raised"] is None
    assert r0["guard_off_scale"] != r1["guard_off_scale"]  # check_replicas=None: they did diverge
    # Every other case of the worker ran with the default check after fit, and passed.
    assert r0["ok"] is True and r1["ok"] is True


def test_an_optimizer_the_model_does_not_hold_is_refused_when_the_step_is_traced(run):
    _, _, (r0, r1) = run
    for r in (r0, r1):
        assert r["undistributed_optimizer"]["raised"] == "ValueError"
        message = r["undistributed_optimizer"]["message"]
        assert "Hidden's train_step applies gradients with optimizer" in message
        assert "is not distributed" in message and "found: model.optimizer" in message
        assert r["optimizer_class_restored"] is True  # the check is gone after fit


def test_keras_io_gan_and_vae_as_published_train_with_identical_replicas(run):
    generation, _, (r0, r1) = run
    if generation == "keras2":
        pytest.skip("keras-io's GAN and VAE are Keras 3 code")
    assert r0["gan_digest"] == r1["gan_digest"]
    assert r0["gan_history"] == r1["gan_history"]
    assert r0["gan_updates"] == r1["gan_updates"] == [10, 10]
    assert r0["gan_optimizers"] == ["Keras3DistributedOptimizer"] * 2
    assert r0["gan_tags"] == ["_d_optimizer", "_g_optimizer"]
    assert r0["vae_digest"] == r1["vae_digest"]
    assert r0["vae_history"] == r1["vae_history"]
    for epoch in range(2):  # logs are the global tracker results: loss = reconstruction + KL
        h = r0["vae_history"]
        assert h["loss"][epoch] == pytest.approx(h["reconstruction_loss"][epoch] + h["kl_loss"][epoch], rel=1e-5)
    # The published train_step, run in one process for each rank's batch and seed state: the same weights.
    assert r0["vae_weights_count"][0] == r0["vae_weights_count"][1]
    assert r0["vae_vs_simulation"] < 1e-5
    for r in (r0, r1):
        assert r["xla_sync_bn"]["raised"] == "ValueError"
        assert "BatchNormalization(synchronized=True)" in r["xla_sync_bn"]["message"]
