"""Optimizer options, learning-rate scaling, synchronized callbacks and output
hygiene under a real `horovodrun --gloo -np 2` run (tests/distributed/options_checks.py)."""

import re

import pytest

from conftest import DIST, read_results, run_horovod

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("options")
    proc = run_horovod(DIST / "options_checks.py", out, timeout=420)
    return out, read_results(out), proc.stdout + proc.stderr


def test_compression_keeps_replicas_identical_and_close_to_exact(run):
    _, (r0, r1), _ = run
    for comp, tol in (("fp16", 1e-3), ("bf16", 5e-3)):
        assert r0[f"{comp}_digest"] == r1[f"{comp}_digest"]
        assert 0 < r0[f"{comp}_vs_uncompressed"] < tol  # compressed, yet close


def test_sum_op_accumulation_and_predivide_are_exact(run):
    _, (r0, _), _ = run
    assert r0["sum_vs_average_half_lr"] == 0.0  # sum with lr/2 == average with lr, for 2 ranks
    assert r0["accum_vs_reference"] < 1e-5  # 2 ranks x 2 passes x 8 == 1 process x 32
    assert r0["accum_updates"] == 8  # 256 samples / 32 per update
    assert r0["predivide_vs_base"] < 1e-6


def test_sparse_gradients_agree_across_ranks(run):
    _, (r0, r1), _ = run
    for dense in (False, True):
        assert r0[f"sparse_as_dense_{dense}_digest"] == r1[f"sparse_as_dense_{dense}_digest"]


def test_local_sgd_averages_weights_exactly_and_ends_with_identical_replicas(run):
    _, (r0, r1), _ = run
    assert r0["local_sgd_digest"] == r1["local_sgd_digest"]  # ranks drift apart between averages, identical after fit
    assert r0["local_sgd_vs_every_step"] > 1e-4  # ranks really stepped on their own between averages
    assert r0["local_sgd_warmup_vs_every_step"] == 0.0  # the warm-up epoch is every-step sync, exactly
    for r in (r0, r1):
        assert r["local_sgd_average"] == [[1.5] * 3, [[15.0] * 2] * 2]  # the mean of ranks' values
        assert r["local_sgd_with_accumulation"]["raised"] == "ValueError"
        assert "sync_every=4" in r["local_sgd_with_accumulation"]["message"]


def test_learning_rate_scaling_with_warmup_and_schedules(run):
    _, results, _ = run
    for r in results:
        assert r["warmup_final_lr"] == pytest.approx(0.02, rel=1e-7)  # 0.01 x 2 ranks after warm-up
        assert r["warmup_stored_lr"] == pytest.approx(0.01, rel=1e-7)  # the optimizer keeps the given rate
        assert r["warmup_half_lr"] == pytest.approx(0.015, rel=1e-6)  # halfway: 1.5 x
        assert r["schedule_lr_ratio"] == pytest.approx(2.0)
        assert r["schedule_warmup_lr_ratio"] == pytest.approx(2.0)


def test_stop_and_learning_rate_decisions_are_identical_on_every_rank(run):
    _, (r0, r1), _ = run
    assert r0["early_stop_epochs"] == r1["early_stop_epochs"] < 40
    assert r0["early_stop_final_lr"] == r1["early_stop_final_lr"] < 0.3  # ReduceLROnPlateau acted
    lrs = r0["early_stop_lrs"]  # the rate logged per epoch: the same decisions on both ranks
    assert lrs == r1["early_stop_lrs"] and len(lrs) == r0["early_stop_epochs"]
    assert lrs[0] == pytest.approx(0.3) and all(b <= a for a, b in zip(lrs, lrs[1:]))
    assert r0["ok"] is True and r1["ok"] is True
    # Rank 1 alone asks to stop at batch 3; the decision is shared, so both stop together.
    assert r0["local_stop_updates"] == r1["local_stop_updates"] == 4
    assert r0["local_stop_digest"] == r1["local_stop_digest"]


def test_one_progress_bar_and_files_written_by_rank_zero_only(run):
    out, (r0, r1), output = run
    assert output.count("Epoch 1/2") == 1
    assert not re.search(r"\[1\]<stdout>:.*Epoch", output)
    shared = out / "shared"
    assert sorted(p.name for p in shared.glob("ckpt-*.keras")) == ["ckpt-1.keras", "ckpt-2.keras"]
    lines = (shared / "log.csv").read_text().splitlines()
    assert lines[0].startswith("epoch,") and len(lines) == 3  # header + 2 epochs, written once
    events = list((shared / "tb").rglob("events.out.tfevents.*"))
    assert events, "TensorBoard wrote nothing"
    writer_pids = {int(p.name.split(".")[-3]) for p in events}
    assert writer_pids == {r0["pid"]}  # every event file comes from rank 0's process


def test_shard_dataset_splits_disjointly_with_equal_steps(run):
    _, (r0, r1), _ = run
    for n, steps in ((10, 3), (7, 2), (5, 2)):
        assert r0[f"shard_{n}_steps"] == r1[f"shard_{n}_steps"] == steps  # equal, so nothing hangs
        for epoch in range(2):
            a, b = r0[f"shard_{n}_elements"][epoch], r1[f"shard_{n}_elements"][epoch]
            assert not set(a) & set(b)  # no sample seen by two ranks in an epoch
            assert sorted(a + b) == list(range(n))  # and none dropped
    for n in (10, 7):  # reshuffled per epoch (with 3 elements a repeat would be a 1-in-6 coincidence)
        assert r0[f"shard_{n}_elements"][0] != r0[f"shard_{n}_elements"][1]
    assert sorted(r0["shard_files"] + r1["shard_files"]) == [f"part-{i}.tfrecord" for i in range(5)]
    assert not set(r0["shard_files"]) & set(r1["shard_files"])
    assert r0["shard_fit_digest"] == r1["shard_fit_digest"]
    assert r0["shard_fit_updates"] == 2 * 7  # 50 samples per rank / 8 = 7 steps, 2 epochs
    assert r0["batched_fit_digest"] == r1["batched_fit_digest"]
    assert r0["batched_fit_updates"] == r1["batched_fit_updates"] == 7  # 13 batches, split by batches: 7 and 6 + 1 empty


def test_horovod_style_recipe_with_the_public_building_blocks(run):
    _, (r0, r1), _ = run
    assert r0["recipe_digest"] == r1["recipe_digest"]  # broadcast fixed the different starts
    assert r0["recipe_history"] == r1["recipe_history"]  # averaged logs, identical on both ranks
    assert r0["recipe_lr"] == pytest.approx(0.02)  # Horovod's semantics: warmed up to initial_lr = 2 x 0.01, not beyond
