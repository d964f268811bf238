"""The one place hvdagent changes the user's model, and only while the agent runs.

Why a patch: Keras has no hook between "a batch arrived" and "the user's
``train_step`` runs", and hvdagent needs one. With uneven data a rank that has
run out gets *empty* batches (see :mod:`hvdagent._data`); it must skip the
forward pass (an empty batch would put NaN into BatchNormalization statistics)
but still join the gradient reduction with weight zero, so every rank performs
the same updates. And the batch size of every step weights the gradient
average. Keras' documented extension point, overriding ``train_step``, is the
user's; so the step functions are wrapped on the *instance*, around whatever
``train_step``/``test_step`` the model has (a custom one included), and
``get_metrics_result`` is wrapped so epoch-end metrics are reduced across
ranks (exact global values: metric *state* is summed, not results averaged).
``BatchNormalization(synchronized=True)`` layers get batch statistics over the
global batch (Keras' own synchronization goes through ``tf.distribute``).

Scope: :func:`distributed` installs the wrappers for the duration of one
``agent.fit``/``evaluate`` call and removes them afterwards. Outside the
agent's calls the model is the user's plain Keras model: ``model.evaluate``
on rank 0 alone stays a local call. The traced functions are cached per
compile and number of ranks, so a second ``agent.fit`` does not retrace.
"""

from __future__ import annotations

import contextlib
import functools
import types
from typing import Dict

from hvdagent import _compat, _hvd
from hvdagent._optimizer import parts_of

__all__ = ["distributed"]

_WRAPPED = ("train_step", "test_step", "get_metrics_result")
_FUNCTIONS = ("train_function", "test_function", "predict_function")


def _batch_len(batch):
    import tensorflow as tf

    return tf.shape(tf.nest.flatten(batch)[0])[0]


def _logs_like(model, template):
    """Logs for an empty batch with the structure of ``template`` (the real step's output).

    Values come from the model's current metric results where the names
    match (nothing was added to them), zeros elsewhere.
    """
    import tensorflow as tf

    results = model.get_metrics_result()

    def zeros(t):
        t = tf.convert_to_tensor(t)
        return tf.zeros([d if d is not None else 0 for d in t.shape.as_list()], t.dtype)

    if isinstance(template, dict):
        out = {}
        for key, t in template.items():
            value = results.get(key) if isinstance(results, dict) else None
            t_shape = tf.convert_to_tensor(t).shape
            if value is not None and tf.convert_to_tensor(value).shape == t_shape:
                out[key] = tf.cast(value, tf.convert_to_tensor(t).dtype)
            else:
                out[key] = tf.nest.map_structure(zeros, t)
        return out
    return tf.nest.map_structure(zeros, template)


def _train_step(model, original, sync_stats):
    import tensorflow as tf

    def train_step(self, data):
        n = _batch_len(data)
        parts = parts_of(self.optimizer)
        if parts is not None:
            parts.sync.set_local_count(n)
        seen = {}

        def real():
            seen["logs"] = original(data)
            return seen["logs"]

        def empty():
            variables = list(self.trainable_variables)
            _compat.apply_gradients(self.optimizer, [tf.zeros_like(v) for v in variables], variables)
            return _logs_like(self, seen["logs"])

        logs = tf.cond(n > 0, real, empty)
        sync_stats(self)
        return logs

    return train_step


def _test_step(model, original):
    import tensorflow as tf

    def test_step(self, data):
        seen = {}

        def real():
            seen["logs"] = original(data)
            return seen["logs"]

        return tf.cond(_batch_len(data) > 0, real, lambda: _logs_like(self, seen["logs"]))

    return test_step


def _metrics_result(model, original):
    def get_metrics_result(self):
        import tensorflow as tf

        variables = _compat.metric_variables(self)
        if _hvd.size() == 1 or not variables or not tf.executing_eagerly():
            return original()  # traced (per-batch progress bar): local and free
        local = [v.numpy() for v in variables]
        summed = _hvd.allreduce([tf.cast(tf.convert_to_tensor(x), tf.float64) for x in local], op="sum",
                                name="hvdagent_metrics")
        try:
            for v, s in zip(variables, summed):
                v.assign(tf.cast(s, v.dtype))
            return {k: _to_python(val) for k, val in original().items()}
        finally:
            for v, x in zip(variables, local):
                v.assign(x)

    return get_metrics_result


def _to_python(value):
    try:
        return float(value.numpy()) if getattr(value, "shape", None) == () else value.numpy()
    except AttributeError:
        return value


class StatisticsSync:
    """Averages a model's non-trainable float variables (BatchNormalization's
    moving statistics) across ranks at the last training step of every epoch,
    so validation, ``evaluate``, ``predict`` and ``save`` see one model.

    A counter variable inside the traced step decides when; nothing runs on
    other steps.
    """

    def __init__(self):
        self._counter = None
        self._steps = None

    def configure(self, steps_per_epoch: int) -> None:
        import tensorflow as tf

        if self._counter is None:
            with tf.init_scope():
                self._counter = tf.Variable(0, dtype=tf.int64, trainable=False, name="hvdagent_step_in_epoch")
                self._steps = tf.Variable(0, dtype=tf.int64, trainable=False, name="hvdagent_steps_per_epoch")
        self._counter.assign(0)
        self._steps.assign(int(steps_per_epoch))

    def __call__(self, model) -> None:
        import tensorflow as tf

        stats = [v for v in model.non_trainable_variables if tf.as_dtype(v.dtype).is_floating]
        if self._counter is None or not stats or _hvd.size() == 1:
            return
        done = self._counter.assign_add(1)

        def average():
            for v, a in zip(stats, _hvd.allreduce([tf.convert_to_tensor(v) for v in stats], op="average",
                                                  name="hvdagent_stats")):
                v.assign(a)
            self._counter.assign(0)
            return tf.constant(True)

        tf.cond(tf.logical_and(self._steps > 0, done >= self._steps), average, lambda: tf.constant(False))


def _sync_moments(index, layer, inputs, mask):
    """Batch statistics over the global batch (all ranks) for ``BatchNormalization(synchronized=True)``.

    Per-channel sums, sums of squares and counts are summed across ranks; the
    backward pass sums their gradients across ranks, so it is the global
    batch's too. Both collectives are named after the layer's position among
    the model's synchronized layers, never after Keras' generated names (which
    differ across ranks that built different numbers of models). Keras' own
    synchronized moments use ``tf.distribute``, which knows nothing of
    Horovod's ranks.
    """
    import tensorflow as tf

    if mask is not None:
        raise ValueError("BatchNormalization(synchronized=True) under hvdagent does not take a mask. "
                         f"Received: a mask for layer {layer.name!r}")
    axes = list(layer._reduction_axes)
    x = tf.cast(inputs, tf.float32)
    name = f"hvdagent_syncbn_{index}"

    @tf.custom_gradient
    def global_sums(total, squares):
        summed = _hvd.allreduce([total, squares], op="sum", name=name)

        def grad(d_total, d_squares):
            return tuple(_hvd.allreduce([d_total, d_squares], op="sum", name=name + "_grad"))

        return tuple(summed), grad

    total, squares = global_sums(tf.reduce_sum(x, axes, keepdims=True), tf.reduce_sum(tf.square(x), axes, keepdims=True))
    local_count = tf.cast(tf.size(x) // tf.maximum(tf.size(total), 1), tf.float32)
    n = tf.maximum(_hvd.allreduce([tf.reshape(local_count, [1])], op="sum", name=name + "_count")[0][0], 1.0)
    mean = total / n
    variance = tf.maximum(squares / n - tf.square(mean), 0.0)
    return (tf.cast(tf.squeeze(mean, axes), inputs.dtype), tf.cast(tf.squeeze(variance, axes), inputs.dtype))


def check_synchronized_batchnorm(model, padded_steps: int) -> None:
    """Synchronized BatchNormalization needs a real batch on every rank at every step
    (a rank with an empty batch cannot join the statistics): a clear error on every rank."""
    if _compat.synchronized_batchnorm_layers(model):
        padded = _hvd.allgather_object(padded_steps, name="hvdagent_syncbn_padding")
        if any(padded):
            raise ValueError("BatchNormalization(synchronized=True) needs data on every rank at every step, but some "
                             "ranks would get empty batches (uneven data): make the sample count a multiple of "
                             "batch_size x size, or use shard_dataset(..., drop_remainder=True). "
                             f"Received: empty batches per rank {padded}")


@contextlib.contextmanager
def distributed(model, cache: Dict, stats: StatisticsSync):
    """Within the block, ``model``'s steps and metric results are the distributed ones."""
    originals = {name: getattr(model, name) for name in _WRAPPED}
    sync_bn = _compat.synchronized_batchnorm_layers(model)
    for index, layer in enumerate(sync_bn):
        object.__setattr__(layer, "_moments", types.MethodType(functools.partial(_sync_moments, index), layer))
    wrapped = {
        "train_step": _train_step(model, originals["train_step"], stats),
        "test_step": _test_step(model, originals["test_step"]),
        "get_metrics_result": _metrics_result(model, originals["get_metrics_result"]),
    }
    # Traced functions hold the collectives of the size they were traced at
    # (none with one rank): an elastic job that grows must retrace.
    key = (id(model.optimizer), id(getattr(model, "_compile_config", None) or getattr(model, "compiled_loss", None)),
           _hvd.size())
    for name, fn in wrapped.items():
        object.__setattr__(model, name, types.MethodType(fn, model))
    for name, fn in zip(_FUNCTIONS, cache.get(key, (None,) * len(_FUNCTIONS))):
        setattr(model, name, fn)
    try:
        yield
    finally:
        cache.clear()
        cache[key] = tuple(getattr(model, name, None) for name in _FUNCTIONS)
        for name in _WRAPPED:
            if name in model.__dict__:
                object.__delattr__(model, name)
        for layer in sync_bn:
            object.__delattr__(layer, "_moments")
        for name in _FUNCTIONS:
            setattr(model, name, None)
