"""PowerSGD (``hvdagent.PowerSGD``): the compressor's arithmetic in one process,
its arguments, its state in checkpoints, and two ranks for real.

In one process the backend's allreduce is the identity (one rank's sum is its
own value), so :meth:`PowerSGDState.reduce` runs its whole arithmetic: what
it returns and what it keeps are checked against numpy. The launch under
``horovodrun -np 2`` checks what needs two ranks (tests/distributed/powersgd_checks.py).
"""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

import hvdagent
from conftest import DIST, run_horovod
from hvdagent._sync.options import SyncOptions
from hvdagent._sync.powersgd import PowerSGD, PowerSGDState

RNG = np.random.default_rng(0)


def _state(config, *shapes):
    return PowerSGDState(config, [tf.zeros(s) for s in shapes])


def _reduce(state, grads, count=64.0, step=0):
    out, total = state.reduce([tf.constant(g) for g in grads], list(range(len(grads))), tf.constant(count),
                              tf.constant(step))
    return [o.numpy() for o in out], float(total)


def test_arguments_are_validated_with_the_name_and_the_value():
    for kwargs, error, text in [
        (dict(rank=0), ValueError, "rank must be an integer >= 1. Received: rank=0"),
        (dict(rank=1.5), TypeError, "Received: rank=1.5"),
        (dict(start_step=-1), ValueError, "Received: start_step=-1"),
        (dict(min_compression_rate=0.5), ValueError, "Received: min_compression_rate=0.5"),
        (dict(error_feedback=1), TypeError, "error_feedback must be True or False. Received: error_feedback=1"),
        (dict(warm_start="yes"), TypeError, "Received: warm_start='yes'"),
        (dict(seed=-2), ValueError, "Received: seed=-2"),
    ]:
        with pytest.raises(error, match=text.replace("(", r"\(").replace(")", r"\)").replace(".", r"\.")):
            PowerSGD(**kwargs)
    # PowerSGD replaces the every-step average: other ways to sync do not combine with it.
    for kwargs in (dict(sync_every=4), dict(op="sum"), dict(gradient_predivide_factor=2.0)):
        with pytest.raises(ValueError, match=rf"needs {next(iter(kwargs))}=.*Received: compression=PowerSGD\(rank=1"):
            SyncOptions(compression=PowerSGD(), **kwargs)
    with pytest.raises(ValueError, match=r"one of \(None, 'fp16', 'bf16', 'hvdagent.PowerSGD\(...\)'\)"):
        SyncOptions(compression="powersgd")
    with pytest.raises(ValueError, match="or an hvdagent.PowerSGD"):
        hvdagent.DistributedOptimizer(keras.optimizers.SGD(0.1), compression=object())


def test_what_is_compressed_and_what_travels():
    c = PowerSGD(rank=2)
    assert c.plan((256, 64)) == (256, 64, 2)
    assert c.plan((3, 3, 8, 16)) == (72, 16, 2)  # a conv kernel: rows are everything but the last axis
    assert c.plan((64,)) is None and c.plan((4, 4)) is None  # a vector; a matrix that would not shrink 2x
    assert PowerSGD(rank=4).plan((2048, 10)) == (2048, 10, 4)  # (2048 + 10) * 4 * 2 < 20480
    assert PowerSGD(rank=5).plan((2048, 10)) is None
    first, second = c.wire_elements([(256, 64), (64,), (4, 4)])
    assert (first, second) == (1 + 256 * 2 + 64 + 16, 64 * 2)  # the count, P, the uncompressed; then Q


def test_a_gradient_of_exact_low_rank_passes_unchanged():
    g = (RNG.standard_normal((300, 2)) @ RNG.standard_normal((2, 200))).astype("float32")
    b = RNG.standard_normal(200).astype("float32")
    s = _state(PowerSGD(rank=2, start_step=0), (300, 200), (200,))
    (out, out_b), total = _reduce(s, [g, b])
    assert total == 64.0
    np.testing.assert_allclose(out, g, rtol=0, atol=2e-5 * np.abs(g).max())
    np.testing.assert_array_equal(out_b, b)  # a vector travels as it is
    assert np.abs(s.variables()[1].numpy()).max() < 2e-5 * np.abs(g).max()  # nothing left behind
    # Of lower rank than PowerSGD's: still exact (QR of a rank-deficient P keeps its column space).
    g1 = np.outer(RNG.standard_normal(300), RNG.standard_normal(200)).astype("float32")
    (out, _), _ = _reduce(_state(PowerSGD(rank=2), (300, 200), (200,)), [g1, b])
    np.testing.assert_allclose(out, g1, rtol=0, atol=2e-5 * np.abs(g1).max())


def test_the_error_buffer_carries_what_was_not_sent():
    k = RNG.standard_normal((3, 3, 8, 16)).astype("float32")
    s = _state(PowerSGD(rank=1, start_step=0), (3, 3, 8, 16))
    (sent,), _ = _reduce(s, [k])
    q, err = (v.numpy() for v in s.variables())
    assert q.shape == (16, 1) and err.shape == (72, 16)
    np.testing.assert_allclose(sent.reshape(72, 16) + err, k.reshape(72, 16), atol=1e-5)  # sent + kept = gradient
    assert np.linalg.norm(err) > 0.5 * np.linalg.norm(k)  # rank 1 of a random 72x16 matrix leaves most behind
    np.testing.assert_allclose(np.linalg.matrix_rank(sent.reshape(72, 16), tol=1e-4), 1)
    # A step with a zero gradient sends part of the error and keeps the rest: nothing is lost.
    (sent2,), _ = _reduce(s, [np.zeros_like(k)], step=1)
    np.testing.assert_allclose(sent2.reshape(72, 16) + s.variables()[1].numpy(), err, atol=1e-5)
    # Over many steps with no new gradient the whole first gradient arrives (warm-started power iteration).
    total = sent.reshape(72, 16) + sent2.reshape(72, 16)
    for step in range(2, 60):
        (more,), _ = _reduce(s, [np.zeros_like(k)], step=step)
        total += more.reshape(72, 16)
    np.testing.assert_allclose(total, k.reshape(72, 16), atol=1e-3)


def test_empty_batches_zero_gradients_and_overflows_leave_a_sane_state():
    s = _state(PowerSGD(rank=2), (64, 48), (48,))
    (out, out_b), total = _reduce(s, [np.zeros((64, 48), "float32"), np.zeros(48, "float32")], count=0.0)
    assert np.isfinite(out).all() and np.isfinite(out_b).all() and total > 0  # no 0/0 anywhere
    g = RNG.standard_normal((64, 48)).astype("float32")
    _reduce(s, [g, np.zeros(48, "float32")], step=1)
    q_before = s.variables()[0].numpy()
    bad = g.copy()
    bad[3, 4] = np.inf  # a loss-scale overflow: every rank sees it through the sums
    (out, _), _ = _reduce(s, [bad, np.zeros(48, "float32")], step=2)
    assert not np.isfinite(out).all()  # the optimizer (LossScaleOptimizer) skips the step...
    np.testing.assert_array_equal(s.variables()[0].numpy(), q_before)  # ...the warm start is kept...
    assert not s.variables()[1].numpy().any()  # ...and the error buffer is cleared, not poisoned


def test_without_warm_start_or_error_feedback():
    g = RNG.standard_normal((64, 48)).astype("float32")
    cold = _state(PowerSGD(rank=1, warm_start=False, seed=3), (64, 48))
    a, _ = _reduce(cold, [g], step=5)
    b, _ = _reduce(_state(PowerSGD(rank=1, warm_start=False, seed=3), (64, 48)), [g], step=5)
    c, _ = _reduce(_state(PowerSGD(rank=1, warm_start=False, seed=3), (64, 48)), [g], step=6)
    np.testing.assert_array_equal(a[0], b[0])  # the same random start for the same step on every rank
    assert not np.allclose(a[0], c[0])  # and another one the next step
    plain = _state(PowerSGD(rank=1, error_feedback=False), (64, 48))
    assert len(plain.variables()) == 1  # Q only


def test_optimizer_config_round_trip_and_the_checkpoint_holds_the_state(tmp_path):
    model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(96), keras.layers.Dense(3)])
    agent = hvdagent.DistributedAgent(model, compression=hvdagent.PowerSGD(rank=2, start_step=7))
    agent.compile(keras.optimizers.SGD(0.01), loss="mse")
    config = model.optimizer.get_config()
    assert config["compression"] == {"class_name": "PowerSGD", "config": {
        "rank": 2, "start_step": 7, "min_compression_rate": 2.0, "error_feedback": True, "warm_start": True,
        "seed": 0}}
    again = type(model.optimizer).from_config(json.loads(json.dumps(config)))
    assert hvdagent._sync.parts.parts_of(again).sync.options.compression == hvdagent.PowerSGD(rank=2, start_step=7)
    x, y = RNG.random((32, 64), dtype=np.float32), RNG.random((32, 3), dtype=np.float32)
    agent.fit(x, y, batch_size=8, epochs=1, verbose=0, checkpoint_dir=tmp_path / "a")
    meta = json.loads((tmp_path / "a" / "latest.json").read_text())
    assert meta["sync_variables"] == 2  # Q and the error buffer of the 64x96 kernel (96x3 would not shrink)
    assert meta["variables"][-2:] == ["hvdagent_powersgd_q:0", "hvdagent_powersgd_error:0"]
    assert meta["shapes"][-2:] == [[96, 2], [64, 96]]
    # Resuming with another compression's state is an error naming both (at rank 1 the 96x3 kernel is
    # compressed too); a checkpoint without that state resumes with it fresh.
    other = keras.Sequential([keras.Input((64,)), keras.layers.Dense(96), keras.layers.Dense(3)])
    agent = hvdagent.DistributedAgent(other, compression=hvdagent.PowerSGD(rank=1))
    agent.compile(keras.optimizers.SGD(0.01), loss="mse")
    with pytest.raises(ValueError, match=r"another gradient compression \(PowerSGD state of shapes \[\[96, 2\], "
                                         r"\[64, 96\]\]; this run's: \[\[96, 1\], \[3, 1\], \[64, 96\], \[96, 3\]\]\)"):
        agent.fit(x, y, batch_size=8, epochs=2, verbose=0, checkpoint_dir=tmp_path / "a")
    plain = hvdagent.DistributedAgent(keras.Sequential([keras.Input((64,)), keras.layers.Dense(96),
                                                        keras.layers.Dense(3)]))
    plain.compile(keras.optimizers.SGD(0.01), loss="mse")
    plain.fit(x, y, batch_size=8, epochs=1, verbose=0, checkpoint_dir=tmp_path / "b")
    fresh = keras.Sequential([keras.Input((64,)), keras.layers.Dense(96), keras.layers.Dense(3)])
    agent = hvdagent.DistributedAgent(fresh, compression=hvdagent.PowerSGD(rank=2))
    agent.compile(keras.optimizers.SGD(0.01), loss="mse")
    agent.fit(x, y, batch_size=8, epochs=2, verbose=0, checkpoint_dir=tmp_path / "b")
    assert int(fresh.optimizer.iterations.numpy()) == 8  # resumed after epoch 1 of the run without PowerSGD
    np.testing.assert_array_equal(fresh.get_weights()[0].shape, (64, 96))


@pytest.mark.timeout(600)
def test_two_ranks_converge_stay_identical_and_resume_exactly(tmp_path):
    """One launch: the weighted average composes, training converges like float32,
    replicas stay bit-identical, and a resumed run ends where an uninterrupted one does."""
    run_horovod(DIST / "powersgd_checks.py", tmp_path, timeout=540)
    r = [json.loads((tmp_path / f"results-{k}.json").read_text()) for k in range(2)]
    assert {k for k in r[0] if r[0][k] != r[1][k]} == {"rank"}  # every figure below is the same on both ranks
    res = r[0]
    # Weighted average of rank-1 gradients (counts 64 and 10; then 64 and an empty batch): exact at rank 2.
    assert res["weighted_error"] < 1e-5 and res["empty_batch_error"] < 1e-5
    # Convergence on digits (a short batch and an empty one every epoch): within 2 points of float32.
    assert res["fp32_accuracy"] > 0.85  # it trained (the tail of digits, 360 images, after 12 epochs)
    assert res["powersgd_accuracy"] >= res["fp32_accuracy"] - 0.02, res
    assert res["powersgd_loss"] <= 1.5 * res["fp32_loss"] + 0.02, res
    assert res["replicas_identical"]  # weights and PowerSGD's Q, bit for bit, after every run
    # Checkpoint/resume: weights, optimizer state and PowerSGD's state as after an uninterrupted run.
    assert res["resumed_equal"] and res["state_equal"] and res["errors_nonzero"]
