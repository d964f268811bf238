"""The one place hvdagent changes the user's model, and only while the agent runs.

Why a patch: Keras has no hook between "a batch arrived" and "the user's
``train_step`` runs", and hvdagent needs one. With uneven data a rank that has
run out gets *empty* batches (see :mod:`hvdagent._data.shard`); it must skip the
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
from hvdagent._sync.batchnorm import sync_moments
from hvdagent._sync.parts import parts_of
from hvdagent._sync.statistics import StatisticsSync

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
            parts.sync.record_batch_size(n)
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


@contextlib.contextmanager
def distributed(model, cache: Dict, stats: StatisticsSync):
    """Within the block, ``model``'s steps and metric results are the distributed ones."""
    originals = {name: getattr(model, name) for name in _WRAPPED}
    sync_bn = _compat.synchronized_batchnorm_layers(model)
    for index, layer in enumerate(sync_bn):
        _compat.replace_batchnorm_moments(layer, types.MethodType(functools.partial(sync_moments, index), layer))
    wrapped = {
        "train_step": _train_step(model, originals["train_step"], stats),
        "test_step": _test_step(model, originals["test_step"]),
        "get_metrics_result": _metrics_result(model, originals["get_metrics_result"]),
    }
    # Traced functions hold the collectives of the size they were traced at
    # (none with one rank): an elastic job that grows must retrace.
    key = (id(model.optimizer), _compat.compile_identity(model), _hvd.size())
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
            _compat.replace_batchnorm_moments(layer, None)
        for name in _FUNCTIONS:
            setattr(model, name, None)
