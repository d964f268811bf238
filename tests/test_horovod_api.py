"""Horovod's ``horovod.tensorflow.keras`` API as ``import hvdagent as hvd``.

One-process tests (size 1): names, signatures, errors, and the arithmetic of
the learning-rate callbacks. Distributed behaviour is tested by running
Horovod's own Keras recipes, changed only in their import line, under
``horovodrun --gloo -np 2`` (tests/horovod_recipes/, at the end of this file).
"""

import inspect
import json
import os
import stat
import subprocess
import sys
import zipfile
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

import hvdagent as hvd
from conftest import horovodrun_cmd, run_horovod

RECIPES = Path(__file__).resolve().parent / "horovod_recipes"


# --- names and signatures -----------------------------------------------------------------


def test_horovod_names_work_in_one_process():
    hvd.init()
    assert hvd.is_initialized()
    assert (hvd.size(), hvd.rank(), hvd.local_size(), hvd.local_rank()) == (1, 0, 1, 0)
    assert (hvd.cross_size(), hvd.cross_rank()) == (1, 0)
    assert hvd.gloo_built() is True and hvd.mpi_built() is True  # ci/setup.sh builds both
    assert hvd.nccl_built() is False  # CPU build
    assert hvd.gloo_enabled() is False and hvd.mpi_enabled() is False  # no launcher: no Horovod controller runs
    assert (hvd.Average, hvd.Sum, hvd.Adasum) == ("average", "sum", "adasum")
    assert float(hvd.allreduce(3.0, op=hvd.Sum)) == 3.0
    assert hvd.allreduce([1.0, 2.0], prescale_factor=2.0, postscale_factor=0.5).numpy().tolist() == [1.0, 2.0]
    assert float(hvd.allreduce(2.0, average=True, compression=hvd.Compression.fp16)) == 2.0
    assert hvd.allgather(np.arange(6).reshape(3, 2)).numpy().tolist() == [[0, 1], [2, 3], [4, 5]]
    assert int(hvd.broadcast(7, 0, name="seven")) == 7
    assert hvd.broadcast_object({"a": [1]}, root_rank=0) == {"a": [1]}
    assert hvd.allgather_object(("x", 1)) == [("x", 1)]
    v = keras.Variable([1.0, 2.0])
    hvd.broadcast_variables([v], root_rank=0)
    assert v.numpy().tolist() == [1.0, 2.0]


def test_errors_of_the_collectives_name_the_argument():
    with pytest.raises(ValueError, match="not both. Received: op='sum', average=True"):
        hvd.allreduce(1.0, op=hvd.Sum, average=True)
    with pytest.raises(ValueError, match="Received: op='max'"):
        hvd.allreduce(1.0, op="max")
    with pytest.raises(ValueError, match="root_rank must be an integer >= 0. Received: root_rank=-1"):
        hvd.broadcast(1, -1)
    with pytest.raises(ValueError, match="Received: session='sess'"):
        hvd.broadcast_object(1, session="sess")
    with pytest.raises(RuntimeError, match="BroadcastGlobalVariablesCallback.*Received: root_rank=0"):
        hvd.broadcast_global_variables(0)


def _params(fn):
    return [(p.name, p.default) for p in inspect.signature(fn).parameters.values()]


def test_signatures_are_horovods():
    assert _params(hvd.DistributedOptimizer) == [
        ("optimizer", inspect.Parameter.empty), ("name", None), ("device_dense", ""), ("device_sparse", ""),
        ("compression", hvd.Compression.none), ("sparse_as_dense", False), ("gradient_predivide_factor", 1.0),
        ("op", hvd.Average), ("backward_passes_per_step", 1), ("average_aggregated_gradients", False),
        ("num_groups", 0), ("groups", None), ("process_set", None), ("scale_local_gradients", True),
    ]
    cb = hvd.callbacks
    assert _params(cb.LearningRateWarmupCallback.__init__)[1:] == [
        ("initial_lr", inspect.Parameter.empty), ("warmup_epochs", 5), ("momentum_correction", True),
        ("steps_per_epoch", None), ("verbose", 0)]
    assert _params(cb.LearningRateScheduleCallback.__init__)[1:] == [
        ("initial_lr", inspect.Parameter.empty), ("multiplier", inspect.Parameter.empty), ("start_epoch", 0),
        ("end_epoch", None), ("staircase", True), ("momentum_correction", True), ("steps_per_epoch", None)]
    assert _params(cb.BestModelCheckpoint.__init__)[1:6] == [
        ("monitor", "val_loss"), ("verbose", 0), ("save_weights_only", False), ("mode", "auto"), ("save_freq", "epoch")]
    assert [n for n, _ in _params(cb.BroadcastGlobalVariablesCallback.__init__)[1:]] == ["root_rank", "device", "local_variables"]
    assert [n for n, _ in _params(cb.MetricAverageCallback.__init__)[1:]] == ["device"]
    assert [n for n, _ in _params(hvd.load_model)] == ["filepath", "custom_optimizers", "custom_objects", "compression", "legacy_opts"]
    for name in ("KerasState", "CommitStateCallback", "UpdateBatchStateCallback", "UpdateEpochStateCallback", "run"):
        assert name in hvd.elastic.__all__
    tape_params = [  # horovod.tensorflow's (process_set: None stands for its global process set)
        ("gradtape", inspect.Parameter.empty), ("device_dense", ""), ("device_sparse", ""),
        ("compression", hvd.Compression.none), ("sparse_as_dense", False), ("op", hvd.Average),
        ("gradient_predivide_factor", 1.0), ("num_groups", 0), ("groups", None), ("process_set", None)]
    assert _params(hvd.DistributedGradientTape) == tape_params + [("scale_local_gradients", True)]
    assert _params(hvd.PartialDistributedGradientTape) == tape_params + [("local_layers", None),
                                                                          ("scale_local_gradients", True)]


# --- DistributedOptimizer ---------------------------------------------------------------------


def _sync(optimizer):
    from hvdagent._sync.parts import parts_of

    return parts_of(optimizer).sync.options


def test_distributed_optimizer_maps_horovods_arguments():
    sgd = keras.optimizers.SGD
    assert _sync(hvd.DistributedOptimizer(sgd(0.1), compression=hvd.Compression.fp16, op=hvd.Sum)).op == "sum"
    for given, wire in ((hvd.Compression.none, None), (hvd.Compression.fp16, "fp16"), (hvd.Compression.bf16, "bf16"),
                        (None, None), ("fp16", "fp16"), ("bf16", "bf16")):
        assert _sync(hvd.DistributedOptimizer(sgd(0.1), compression=given)).compression == wire
    opt = hvd.DistributedOptimizer(sgd(0.1), name="dist", op="adasum", sparse_as_dense=True, num_groups=0,
                                   groups=None, scale_local_gradients=False, device_dense="", device_sparse="")
    assert opt.name == "dist" and _sync(opt).op == "adasum" and _sync(opt).sparse_as_dense
    # Horovod's own global process set has id 0
    assert _sync(hvd.DistributedOptimizer(sgd(0.1), process_set=type("PS", (), {"process_set_id": 0})())).op == "average"


@pytest.mark.parametrize("kwargs, error, message", [
    ({"device_dense": "/gpu:0"}, ValueError, "device_dense is not supported.*Received: device_dense='/gpu:0'"),
    ({"device_sparse": "/cpu:0"}, ValueError, "Received: device_sparse='/cpu:0'"),
    ({"groups": 2}, ValueError, "explicit gradient groups are not supported.*Received: groups=2"),
    ({"num_groups": 3}, ValueError, "Received: groups=3, num_groups=3"),
    ({"process_set": "ranks 0 and 1"}, ValueError, "process_set is not supported.*Received: process_set='ranks 0 and 1'"),
    ({"backward_passes_per_step": 2}, ValueError,
     "needs average_aggregated_gradients=True.*Received: backward_passes_per_step=2, average_aggregated_gradients=False"),
    ({"average_aggregated_gradients": 1}, TypeError, "Received: average_aggregated_gradients=1"),
    ({"scale_local_gradients": "yes"}, TypeError, "Received: scale_local_gradients='yes'"),
    ({"compression": "int8"}, ValueError, "custom compressors are not supported. Received: compression='int8'"),
    ({"compression": type("MyCompressor", (), {})}, ValueError, "Received: compression=<class"),
    ({"op": "mean"}, ValueError, "Received: op='mean'"),
    ({"op": hvd.Sum, "gradient_predivide_factor": 2.0}, ValueError, "only applies to op='average'"),
    ({"name": 3}, TypeError, "Received: name=3"),
])
def test_distributed_optimizer_rejects_what_it_cannot_honour(kwargs, error, message):
    with pytest.raises(error, match=message):
        hvd.DistributedOptimizer(keras.optimizers.SGD(0.1), **kwargs)


def test_aggregated_gradients_are_averaged_when_asked():
    opt = hvd.DistributedOptimizer(keras.optimizers.SGD(1.0), backward_passes_per_step=2, average_aggregated_gradients=True)
    var = keras.Variable(np.zeros(2, "float32"))
    opt.apply([tf.constant([2.0, 4.0])], [var])
    opt.apply([tf.constant([4.0, 0.0])], [var])
    np.testing.assert_array_equal(var.numpy(), [-3.0, -2.0])


# --- DistributedGradientTape (one process: the tape's own gradients; the reduction is tested by the TF2 recipe) ---


def test_distributed_gradient_tape_is_the_tape_in_one_process():
    v, w = tf.Variable([1.0, 2.0]), keras.Variable(3.0)
    x = tf.constant(4.0)

    def f():
        return tf.reduce_sum(v * v) * w + x * x

    with tf.GradientTape() as plain:
        plain.watch(x)
        y = f()
    expected = [g.numpy().tolist() for g in plain.gradient(y, [v, w, x])]
    with hvd.DistributedGradientTape(tf.GradientTape()) as tape:  # entered as a context manager
        tape.watch(x)  # the wrapped tape's own methods
        y = f()
    got = tape.gradient(y, {"v": v, "wx": [w, x]})  # any nested structure of sources
    assert [got["v"].numpy().tolist(), float(got["wx"][0]), float(got["wx"][1])] == expected
    assert tape.watched_variables() and not isinstance(tape, tf.GradientTape)
    # persistent tapes answer twice; unconnected sources give None, or zeros when asked
    with tf.GradientTape(persistent=True) as t:
        y = f()
    t = hvd.DistributedGradientTape(t, op=hvd.Sum, compression=hvd.Compression.fp16)
    assert float(t.gradient(y, w)) == 5.0 and t.gradient(y, [tf.Variable(1.0)]) == [None]
    assert float(t.gradient(y, [tf.Variable(1.0)], unconnected_gradients="zero")[0]) == 0.0
    # local sources: not reduced, divided by the number of ranks (1 here); split by get_local_and_global_gradients
    with tf.GradientTape() as t:
        y = f()
    t = hvd.DistributedGradientTape(t)
    t.register_local_source(w)
    local, shared = t.get_local_and_global_gradients(y, [v, w])
    assert [s is w for s, _ in local] == [True] and [s is v for s, _ in shared] == [True]
    assert float(local[0][1]) == 5.0

    @tf.function
    def traced():
        with tf.GradientTape() as t:
            y = tf.reduce_sum(v * v) * w
        return hvd.DistributedGradientTape(t).gradient(y, [v])

    assert traced()[0].numpy().tolist() == [6.0, 12.0]


def test_partial_tape_marks_the_local_layers_on_either_keras():
    import tf_keras

    for layers in (keras.layers, tf_keras.layers):
        shared, head = layers.Dense(2), layers.Dense(1)
        x = tf.ones((3, 4))
        with tf.GradientTape() as tape:
            y = tf.reduce_sum(head(shared(x)))
        tape = hvd.PartialDistributedGradientTape(tape, local_layers=head)
        local, others = tape.get_local_and_global_gradients(y, shared.trainable_weights + head.trainable_weights)
        assert {id(s) for s, _ in local} == {id(v) for v in head.trainable_weights}
        assert {id(s) for s, _ in others} == {id(v) for v in shared.trainable_weights}
    with tf.GradientTape() as tape:
        tf.reduce_sum(head(tf.ones((1, 2))))
    assert not hvd.PartialDistributedGradientTape(tape)._local  # no local layers: DistributedGradientTape


@pytest.mark.parametrize("call, error, message", [
    (lambda t: hvd.DistributedGradientTape("tape"), TypeError, "gradtape must be a tf.GradientTape. Received: gradtape='tape'"),
    (lambda t: hvd.DistributedGradientTape(hvd.DistributedGradientTape(t)), ValueError,
     "already an hvdagent.DistributedGradientTape.*Received: gradtape=<DistributedTape of GradientTape>"),
    (lambda t: hvd.DistributedGradientTape(t, device_dense="/gpu:0"), ValueError, "Received: device_dense='/gpu:0'"),
    (lambda t: hvd.DistributedGradientTape(t, groups=2), ValueError, "Received: groups=2"),
    (lambda t: hvd.DistributedGradientTape(t, op="max"), ValueError, "Received: op='max'"),
    (lambda t: hvd.DistributedGradientTape(t, op=hvd.Sum, gradient_predivide_factor=2.0), ValueError,
     "only applies to op='average'"),
    (lambda t: hvd.DistributedGradientTape(t, scale_local_gradients=1), TypeError, "Received: scale_local_gradients=1"),
    (lambda t: hvd.PartialDistributedGradientTape(t, local_layers=["dense"]), TypeError,
     "local_layers must be a Keras layer or a list of Keras layers.*Received: local_layers=\\['dense'\\]"),
])
def test_tape_arguments_are_checked(call, error, message):
    with pytest.raises(error, match=message):
        call(tf.GradientTape())


# --- learning-rate callbacks -----------------------------------------------------------------


def _linear_fit(callbacks, optimizer, epochs=3, steps=4):
    """Fit a 2-weight linear model on fixed data (one full batch per step); return (model, history, lrs).

    ``lrs[e][b]`` is the learning rate seen by batch ``b`` of epoch ``e``, after the callbacks set it.
    """
    x = np.array([[1.0, 2.0], [3.0, -1.0], [0.5, 0.5], [-2.0, 1.0]] * steps, "float32")
    y = np.array([[1.0], [2.0], [0.0], [-1.0]] * steps, "float32")
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1, use_bias=False, kernel_initializer="ones")])
    model.compile(optimizer, loss="mse")
    lrs = {}

    class Record(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch

        def on_train_batch_begin(self, batch, logs=None):
            lrs.setdefault(self.epoch, []).append(float(np.asarray(self.model.optimizer.learning_rate)))

    history = model.fit(x, y, batch_size=4, epochs=epochs, shuffle=False, verbose=0, callbacks=list(callbacks) + [Record()])
    return model, history, lrs


def test_warmup_ramps_from_initial_lr_over_size_to_initial_lr(monkeypatch):
    # The ramp depends on hvd.size() only; pretend 4 ranks (the optimizer is plain: no collective runs).
    from hvdagent import _hvd

    monkeypatch.setattr(_hvd, "size", lambda: 4)
    cb = hvd.callbacks.LearningRateWarmupCallback(initial_lr=0.04, warmup_epochs=2)
    _, history, lrs = _linear_fit([cb], keras.optimizers.Adam(0.04), epochs=3, steps=4)
    expected = [[0.04 / 4 * ((e + b / 4 + 1 / 4) * 3 / 2 + 1) for b in range(4)] for e in range(2)]
    np.testing.assert_allclose([lrs[0], lrs[1]], expected, rtol=1e-6)
    assert lrs[0][0] == pytest.approx(0.01 * (1 + 3 / 8))  # just above initial_lr / size at the first batch
    assert lrs[2] == [np.float32(0.04)] * 4  # exactly initial_lr after warm-up, not size times more
    assert history.history["lr"] == [pytest.approx(0.025), np.float32(0.04), np.float32(0.04)]


def test_schedule_multiplier_forms(monkeypatch):
    step = hvd.callbacks.LearningRateScheduleCallback(initial_lr=0.1, multiplier=lambda e: 0.1 if e >= 1 else 1.0,
                                                      momentum_correction=False)
    _, history, _ = _linear_fit([step], keras.optimizers.SGD(0.5), epochs=3)
    np.testing.assert_allclose(history.history["lr"], [0.1, 0.01, 0.01], rtol=1e-6)
    # Horovod 0.28.1: a constant multiplier is exponential decay from start_epoch; outside the range the rate stays.
    decay = hvd.callbacks.LearningRateScheduleCallback(initial_lr=0.1, multiplier=0.5, start_epoch=1, end_epoch=3)
    _, history, _ = _linear_fit([decay], keras.optimizers.SGD(0.3), epochs=4)
    np.testing.assert_allclose(history.history["lr"], [0.3, 0.1, 0.05, 0.05], rtol=1e-6)
    smooth = hvd.callbacks.LearningRateScheduleCallback(initial_lr=1.0, multiplier=lambda e: e, staircase=False)
    _, _, lrs = _linear_fit([smooth], keras.optimizers.SGD(0.3), epochs=2, steps=4)
    np.testing.assert_allclose(lrs[1], [1.0, 1.25, 1.5, 1.75], rtol=1e-6)  # epoch + batch / steps_per_epoch


def test_momentum_correction_is_horovods_rule():
    """When the rate changes from old to new, the next step uses momentum * new / old (Goyal et al.)."""
    sched = hvd.callbacks.LearningRateScheduleCallback(initial_lr=0.1, multiplier=lambda e: [1.0, 0.1, 0.1][e])
    model, _, _ = _linear_fit([sched], keras.optimizers.SGD(0.1, momentum=0.9), epochs=3, steps=1)
    x = np.array([[1.0, 2.0], [3.0, -1.0], [0.5, 0.5], [-2.0, 1.0]])
    y = np.array([[1.0], [2.0], [0.0], [-1.0]])
    w, m, old = np.ones((2, 1)), np.zeros((2, 1)), 0.1
    for lr in (0.1, 0.01, 0.01):
        grad = 2 / 4 * x.T @ (x @ w - y)
        m = 0.9 * (lr / old) * m - lr * grad
        w, old = w + m, lr
    np.testing.assert_allclose(model.get_weights()[0], w, rtol=1e-5)


def test_lr_callback_errors():
    cbs = hvd.callbacks
    with pytest.raises(ValueError, match="initial_lr is required.*Received: initial_lr=None"):
        cbs.LearningRateWarmupCallback(initial_lr=None)
    with pytest.raises(ValueError, match="warmup_epochs must be a number > 0. Received: warmup_epochs=0"):
        cbs.LearningRateWarmupCallback(initial_lr=0.1, warmup_epochs=0)
    with pytest.raises(TypeError, match="multiplier must be a number or a function.*Received: multiplier='x'"):
        cbs.LearningRateScheduleCallback(initial_lr=0.1, multiplier="x")
    with pytest.raises(ValueError, match="Received: steps_per_epoch=0"):
        cbs.LearningRateScheduleCallback(initial_lr=0.1, multiplier=1.0, steps_per_epoch=0)
    schedule = keras.optimizers.schedules.ExponentialDecay(0.1, 10, 0.5)
    with pytest.raises(ValueError, match="LearningRateSchedule; use one or the other"):
        _linear_fit([cbs.LearningRateWarmupCallback(initial_lr=0.1)], keras.optimizers.SGD(schedule), epochs=1)


# --- other callbacks ------------------------------------------------------------------------------


def test_best_model_checkpoint_keeps_the_best(tmp_path):
    path = tmp_path / "best.keras"
    best = hvd.callbacks.BestModelCheckpoint(monitor="loss", mode="min", filepath=str(path))
    _, history, _ = _linear_fit([best], keras.optimizers.SGD(0.01), epochs=3)
    assert path.exists() and best.best == pytest.approx(min(history.history["loss"]))
    with pytest.raises(ValueError, match="needs a filepath.*Received: filepath=None"):
        _linear_fit([hvd.callbacks.BestModelCheckpoint()], keras.optimizers.SGD(0.01), epochs=1)
    with pytest.raises(ValueError, match="Received: save_freq=0"):
        hvd.callbacks.BestModelCheckpoint(save_freq=0)


def test_callback_argument_errors():
    with pytest.raises(ValueError, match="Received: device='/gpu:0'"):
        hvd.callbacks.MetricAverageCallback(device="/gpu:0")
    with pytest.raises(ValueError, match="local_variables must be variables. Received: local_variables=\\[1\\]"):
        hvd.callbacks.BroadcastGlobalVariablesCallback(0, local_variables=[1])
    v = keras.Variable(1.0)
    assert [id(x) for x in hvd.callbacks.BroadcastGlobalVariablesCallback(0, local_variables=v)._local] == [id(v)]


def test_horovod_callbacks_run_in_tf_keras_fit(tmp_path):
    """tf_keras' fit takes hvdagent's callbacks directly, as Horovod's recipe passes them."""
    import tf_keras

    model = tf_keras.Sequential([tf_keras.Input((2,)), tf_keras.layers.Dense(1)])
    model.compile(hvd.DistributedOptimizer(tf_keras.optimizers.SGD(0.1, momentum=0.9)), loss="mse")
    x, y = np.ones((8, 2), "float32"), np.zeros((8, 1), "float32")
    cbs = [hvd.callbacks.BroadcastGlobalVariablesCallback(0), hvd.callbacks.MetricAverageCallback(),
           hvd.callbacks.LearningRateWarmupCallback(initial_lr=0.1, warmup_epochs=1),
           hvd.callbacks.LearningRateScheduleCallback(initial_lr=0.1, multiplier=0.5, start_epoch=1),
           hvd.callbacks.BestModelCheckpoint(monitor="loss", filepath=str(tmp_path / "best.h5"))]
    history = model.fit(x, y, batch_size=4, epochs=3, verbose=0, callbacks=cbs)
    np.testing.assert_allclose(history.history["lr"], [0.1, 0.1, 0.05], rtol=1e-6)
    assert (tmp_path / "best.h5").exists()


# --- load_model and elastic state --------------------------------------------------------------------


def test_load_model_continues_with_a_distributed_optimizer(tmp_path):
    x, y = np.random.default_rng(0).normal(size=(32, 3)).astype("float32"), np.zeros((32, 1), "float32")
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    model.compile(hvd.DistributedOptimizer(keras.optimizers.SGD(0.1, momentum=0.9)), loss="mse")
    model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    model.save(tmp_path / "m.keras")
    loaded = hvd.load_model(tmp_path / "m.keras", compression=hvd.Compression.fp16)
    assert _sync(loaded.optimizer).compression == "fp16"
    assert int(loaded.optimizer.iterations.numpy()) == 4
    for a, b in zip(loaded.get_weights(), model.get_weights()):
        np.testing.assert_array_equal(a, b)
    model.fit(x, y, batch_size=8, epochs=1, verbose=0, shuffle=False)
    loaded.fit(x, y, batch_size=8, epochs=1, verbose=0, shuffle=False)  # the same next epoch: the momentum state came back
    for a, b in zip(loaded.get_weights(), model.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-6)
    with pytest.raises(TypeError, match="Received: custom_optimizers='SGD'"):
        hvd.load_model(tmp_path / "m.keras", custom_optimizers="SGD")


def _saved_optimizer(path):
    """The optimizer class a ``.keras`` file names in its compile config."""
    with zipfile.ZipFile(path) as z:
        return json.loads(z.read("config.json"))["compile_config"]["optimizer"]["class_name"]


def test_files_saved_on_every_route_name_the_plain_optimizer(tmp_path):
    """Keras 3 saves the optimizer given to compile: hvd.DistributedOptimizer(opt) must be written as opt
    wherever hvdagent sees the model (any of its callbacks, KerasState), not only in the broadcast callback."""
    x, y = np.ones((8, 2), "float32"), np.zeros((8, 1), "float32")

    def compiled():
        model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
        model.compile(hvd.DistributedOptimizer(keras.optimizers.Adam(0.01)), loss="mse")
        return model

    model = compiled()  # any hvdagent callback, here MetricAverageCallback alone, with Keras' ModelCheckpoint
    model.fit(x, y, epochs=1, verbose=0, callbacks=[hvd.callbacks.MetricAverageCallback(),
                                                  keras.callbacks.ModelCheckpoint(str(tmp_path / "cb.keras"))])
    model = compiled()  # the elastic recipe: KerasState, then plain Keras callbacks only
    model.fit(x, y, epochs=1, verbose=0)
    hvd.elastic.KerasState(model, epoch=0)
    model.fit(x, y, epochs=1, verbose=0, callbacks=[keras.callbacks.ModelCheckpoint(str(tmp_path / "state.keras"))])
    assert [_saved_optimizer(tmp_path / f) for f in ("cb.keras", "state.keras")] == ["Adam", "Adam"]
    assert type(model.optimizer).__name__ == "Keras3DistributedOptimizer"  # training is unchanged
    model = compiled()  # no hvdagent object ever saw the model: the file names the wrapper (documented)
    model.fit(x, y, epochs=1, verbose=0)
    model.save(tmp_path / "unseen.keras")
    assert _saved_optimizer(tmp_path / "unseen.keras") == "Keras3DistributedOptimizer"


def test_keras_state_commits_and_restores():
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(hvd.DistributedOptimizer(keras.optimizers.Adam(0.1)), loss="mse")
    state = hvd.elastic.KerasState(model, epoch=0, batch=0)
    for method in ("commit", "save", "restore", "sync", "reset", "on_reset", "on_hosts_updated",
                   "register_reset_callbacks", "check_host_updates"):  # what Horovod's elastic loop calls
        assert callable(getattr(state, method))
    state.epoch = 2
    state.commit()
    saved = [w.copy() for w in model.get_weights()]
    model.fit(np.ones((4, 2)), np.zeros((4, 1)), verbose=0)
    state.epoch, state.batch = 3, 7
    state.restore()
    assert (state.epoch, state.batch) == (2, 0)
    for a, b in zip(model.get_weights(), saved):
        np.testing.assert_array_equal(a, b)
    assert int(model.optimizer.iterations.numpy()) == 0  # the optimizer state came back too
    with pytest.raises(ValueError, match="must be built first"):
        hvd.elastic.KerasState(keras.Sequential([keras.layers.Dense(1)]))
    with pytest.raises(ValueError, match="Received: batches_per_commit=0"):
        hvd.elastic.CommitStateCallback(state, batches_per_commit=0)


# --- Horovod's recipes under horovodrun -np 2 ----------------------------------------------------------


def _results(out, prefix, np_=2):
    return [json.loads((out / f"{prefix}-{r}.json").read_text()) for r in range(np_)]


def _warmup_lr(initial_lr, size, warmup_epochs, epoch_end):
    """Horovod's documented warm-up rate at the end of (0-based) epoch ``epoch_end``."""
    return np.float32(initial_lr / size * ((epoch_end + 1) * (size - 1) / warmup_epochs + 1))


@pytest.mark.timeout(400)
@pytest.mark.parametrize("legacy", [False, True], ids=["keras3", "tf_keras"])
def test_mnist_recipe(tmp_path, legacy):
    env = {"HVDAGENT_RECIPE_OUT": str(tmp_path)}
    if legacy:
        env["TF_USE_LEGACY_KERAS"] = "1"
    proc = run_horovod(RECIPES / "keras_mnist.py", tmp_path, timeout=360, env=env, cwd=RECIPES)
    r0, r1 = _results(tmp_path, "mnist")
    assert r0["keras3"] is (not legacy) and r0["size"] == 2 and r0["steps"] == 24
    # replicas identical to the bit, optimizer state too; metrics averaged, so every rank logs the same
    assert r0["weights"] == r1["weights"] and r0["opt_state"] == r1["opt_state"]
    assert r0["history"] == r1["history"]
    # the warm-up as Horovod documents it: lr*size/size -> lr*size over 3 epochs, ending at 0.002, not 0.004
    lrs = r0["history"]["lr"]
    assert lrs[:3] == [pytest.approx(float(_warmup_lr(0.002, 2, 3, e)), rel=1e-6) for e in range(3)]
    assert lrs[2] == lrs[3] == r0["final_lr"] == float(np.float32(0.002))
    assert proc.stdout.count("finished gradual learning rate warmup to 0.002.") == 1  # rank 0 only
    # files written once, by rank 0: one checkpoint per epoch and the best model
    suffix = ".h5" if legacy else ".keras"
    assert r0["files"] == sorted(["best" + suffix] + [f"checkpoint-{e}{suffix}" for e in range(1, 5)])
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(".json")) == r0["files"]
    assert r0["history"]["loss"][-1] < r0["history"]["loss"][0]
    if not legacy:  # the checkpoints are plain Keras files: they load where hvdagent is not installed
        code = ("import sys, keras; m = keras.models.load_model(sys.argv[1]); "
                "assert 'hvdagent' not in sys.modules and not any(k.startswith('horovod') for k in sys.modules); "
                "print('optimizer', type(m.optimizer).__name__, int(m.optimizer.iterations.numpy()))")
        plain = subprocess.run([sys.executable, "-c", code, str(tmp_path / "checkpoint-4.keras")],
                               capture_output=True, text=True, timeout=180)
        assert plain.returncode == 0, plain.stderr[-3000:]
        assert "optimizer Adam 96" in plain.stdout
    # hvd.load_model on every rank: same weights, distributed optimizer, state kept, training goes on identically
    assert r0["loaded_same"] and r0["loaded_distributed"].endswith(":True") and r0["loaded_iterations"] == 96
    assert r0["after_load_weights"] == r1["after_load_weights"] and r0["after_load_loss"] == r1["after_load_loss"]


@pytest.mark.timeout(400)
@pytest.mark.parametrize("legacy", [False, True], ids=["keras3", "tf_keras"])
def test_tf2_custom_loop_recipe_averages_gradients_across_ranks(tmp_path, legacy):
    """Horovod's TF2 MNIST custom loop (DistributedGradientTape, broadcast_variables after the first step)."""
    proc = run_horovod(RECIPES / "tensorflow2_mnist.py", timeout=360, cwd=tmp_path,
                       env={"HVDAGENT_RECIPE_OUT": str(tmp_path), "TF_USE_LEGACY_KERAS": "1" if legacy else "0"})
    r0, r1 = _results(tmp_path, "tf2-mnist")
    assert r0["keras"] == ("tf_keras" if legacy else "keras")  # tf.keras is the Keras asked for
    assert r0["size"] == 2 and r0["iterations"] == r1["iterations"] == 60
    # replicas identical to the bit, optimizer state too (the ranks' dropout differs: only the reduction keeps them equal)
    assert r0["weights"] == r1["weights"] and r0["opt_state"] == r1["opt_state"]
    for r in (r0, r1):
        assert np.mean(r["losses"][-10:]) < 0.6 * np.mean(r["losses"][:10])  # it learns
        c = r["checks"]
        assert c["local_vs_mean"] > 1e-3  # the ranks' own gradients differ, so the checks below mean something
        # the mean (and the sum) of every rank's gradients, to the bit; traced in a tf.function too
        assert [c[k] for k in ("average", "average_traced", "sum", "predivide")] == [0.0] * 4
        assert c["fp16"] < 1e-3  # float16 on the wire
        # PartialDistributedGradientTape: shared layers averaged; the local layer this rank's own, / size by default
        assert [c[k] for k in ("partial_shared", "partial_local", "partial_unscaled")] == [0.0] * 3
        assert c["sparse"] < 1e-6 and c["sparse_as_dense"] < 1e-6 and c["sparse_as_dense_type"] == "EagerTensor"
    assert r0["first_labels"] == r1["first_labels"]  # the unseeded shuffle's order is the same on every rank
    assert r0["files"] == ["checkpoint", "checkpoints-1.data-00000-of-00001", "checkpoints-1.index"]  # rank 0 wrote
    assert proc.stdout.count("Step #") == proc.stdout.count("[0]<stdout>:Step #") == 6  # 0, 10, ..., 50: rank 0 only


@pytest.mark.timeout(500)
def test_advanced_recipe_resumes_with_warmup_and_schedule(tmp_path):
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    fmt = str(ckpt / "checkpoint-{epoch}.keras")
    env = dict(os.environ, OMP_NUM_THREADS="1", TF_CPP_MIN_LOG_LEVEL="2", HVDAGENT_RECIPE_OUT=str(tmp_path))
    # First 2 epochs as a plain single process (size 1, no launcher) ...
    first = subprocess.run([sys.executable, "keras_advanced.py", "--epochs", "2", "--checkpoint-format", fmt],
                           capture_output=True, text=True, timeout=240, env=env, cwd=RECIPES)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    (solo,) = _results(tmp_path, "advanced-np1", 1)
    assert solo["history"]["lr"] == [float(np.float32(0.0125))] * 2  # size 1: nothing to warm up
    # ... then resumed on 2 ranks with fp16 compression: rank 0 reloads, rank 1 receives the state.
    proc = run_horovod(RECIPES / "keras_advanced.py", "--epochs", "7", "--fp16-allreduce", "--checkpoint-format", fmt,
                       timeout=400, env={"HVDAGENT_RECIPE_OUT": str(tmp_path)}, cwd=RECIPES)
    r0, r1 = _results(tmp_path, "advanced-np2")
    assert r0["resume_from_epoch"] == r1["resume_from_epoch"] == 2
    assert r0["compression"] == r1["compression"] == "fp16"
    assert r0["trainable"] == r1["trainable"] and r0["opt_state"] == r1["opt_state"]  # (BN statistics stay per rank)
    assert r0["momentum_slots"] == r1["momentum_slots"]
    assert r0["history"] == r1["history"] and r0["score"] == r1["score"]
    assert r0["iterations"] == 2 * 46 + 5 * 23  # the saved optimizer step count went on
    # epochs 2..6: warm-up over (ended at epoch 2); Horovod 0.28.1's schedule: m ** (epoch - start_epoch)
    f32 = lambda v: float(np.float32(v))  # noqa: E731
    assert r0["history"]["lr"] == [f32(0.025)] * 4 + [f32(0.025 * 1e-3)]
    assert sorted(p.name for p in ckpt.iterdir()) == [f"checkpoint-{e}.keras" for e in range(1, 8)]
    assert proc.stdout.count("Test accuracy:") == 1 and r0["score"][1] > 0.5


@pytest.mark.timeout(400)
def test_synthetic_benchmark_recipe_on_tf_keras(tmp_path):
    proc = run_horovod(RECIPES / "keras_synthetic_benchmark.py", "--fp16-allreduce", timeout=360, cwd=RECIPES,
                       env={"HVDAGENT_RECIPE_OUT": str(tmp_path), "TF_USE_LEGACY_KERAS": "1"})
    r0, r1 = _results(tmp_path, "synthetic")
    assert r0["keras3"] is False and r0["compression"] == "fp16" and r0["iterations"] == 9
    assert r0["trainable"] == r1["trainable"]  # to the bit, with fp16 on the wire
    assert r0["loss"] == r1["loss"]  # MetricAverageCallback
    assert proc.stdout.count("Total img/sec on 2 CPU(s)") == 1 and proc.stdout.count("Iter #") == 3


@pytest.mark.timeout(400)
def test_elastic_recipe_grows_from_one_to_two_workers(tmp_path):
    hosts = tmp_path / "hosts"
    hosts.write_text("localhost:1\n")
    discover = tmp_path / "discover.sh"
    discover.write_text(f"#!/bin/sh\ncat {hosts}\n")
    discover.chmod(discover.stat().st_mode | stat.S_IEXEC)
    cmd = horovodrun_cmd(1) + ["--min-np", "1", "--max-np", "2", "--network-interface", "lo",
                               "--host-discovery-script", str(discover),
                               sys.executable, "keras_mnist_elastic.py", str(tmp_path), str(hosts)]
    # The joining worker must start Python and TensorFlow within Gloo's rendezvous timeout (30 s by
    # default): a busy 2-core machine needs longer.
    env = dict(os.environ, OMP_NUM_THREADS="1", TF_CPP_MIN_LOG_LEVEL="2", HVDAGENT_RECIPE_OUT=str(tmp_path),
               HOROVOD_GLOO_TIMEOUT_SECONDS="120")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=360, env=env, cwd=str(RECIPES))
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    epochs = [json.loads(line) for p in tmp_path.glob("epochs-*.jsonl") for line in p.read_text().splitlines()]
    done = sorted((e["state_epoch"], e["size"], e["rank"]) for e in epochs)
    # 2 epochs on one worker, then the second joins and the remaining 3 run on both
    assert done == [(1, 1, 0), (2, 1, 0)] + [(e, 2, r) for e in (3, 4, 5) for r in (0, 1)]
    for e in (3, 4, 5):
        same_epoch = [x for x in epochs if x["state_epoch"] == e]
        assert len({x["digest"] for x in same_epoch}) == 1  # the new worker got the committed state
        assert all(x["lr"] == pytest.approx(0.002) for x in same_epoch)  # the reset callback rescaled it
    assert all(x["lr"] == pytest.approx(0.001) for x in epochs if x["size"] == 1)
    results = [json.loads(p.read_text()) for p in tmp_path.glob("elastic-*.json")]
    assert sorted(r["size"] for r in results) == [2, 2] and {r["state_epoch"] for r in results} == {5}
    assert len({r["weights"] for r in results}) == 1
    # 1 initialising step + 2 x 24 on one worker + 1 step in the reset callback + 3 x 12 on two
    assert [r["iterations"] for r in results] == [1 + 2 * 24 + 1 + 3 * 12] * 2
    assert sorted(p.name for p in tmp_path.glob("checkpoint-*")) == [f"checkpoint-{e}.keras" for e in (1, 2, 3)]
    # The recipe's checkpoints are plain Keras files: they load where hvdagent is never imported, with the weights
    # rank 0 had at that epoch. A file written where no hvdagent object saw the model (a custom loop's model.save)
    # names hvdagent's optimizer: keras.models.load_model reads it once hvdagent is imported.
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(hvd.DistributedOptimizer(keras.optimizers.Adam(0.01)), loss="mse")
    model.train_on_batch(np.ones((4, 2), "float32"), np.zeros((4, 1), "float32"))
    model.save(tmp_path / "unseen.keras")
    code = ("import hashlib, sys, keras\n"
            "m = keras.models.load_model(sys.argv[1])\n"
            "assert 'hvdagent' not in sys.modules and not any(k.startswith('horovod') for k in sys.modules)\n"
            "h = hashlib.sha256()\n"
            "[h.update(memoryview(w).tobytes()) for w in m.get_weights()]\n"
            "print('plain', type(m.optimizer).__name__, int(m.optimizer.iterations.numpy()), h.hexdigest())\n"
            "import hvdagent\n"
            "u = keras.models.load_model(sys.argv[2])\n"
            "print('unseen', type(u.optimizer).__name__, type(u.optimizer.inner_optimizer).__name__)\n")
    plain = subprocess.run([sys.executable, "-c", code, str(tmp_path / "checkpoint-3.keras"), str(tmp_path / "unseen.keras")],
                           capture_output=True, text=True, timeout=180, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    assert plain.returncode == 0, plain.stderr[-3000:]
    # checkpoint-3 is the last epoch (the second fit counts epochs 1-3 again): the final state
    last = next(x["digest"] for x in epochs if x["state_epoch"] == 5 and x["rank"] == 0)
    assert f"plain Adam {1 + 2 * 24 + 1 + 3 * 12} {last}" in plain.stdout
    assert "unseen Keras3DistributedOptimizer Adam" in plain.stdout
