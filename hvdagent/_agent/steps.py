"""The one place hvdagent changes the user's model, and only while the agent runs.

Why a patch: Keras has no hook between "a batch arrived" and "the user's
``train_step`` runs", and hvdagent needs one. The batch size of every step
weights the gradient average. Keras' documented extension point, overriding
``train_step``, is the user's; so the step functions are wrapped on the
*instance*, around whatever ``train_step``/``test_step`` the model has (a
custom one included), and ``get_metrics_result`` is wrapped so epoch-end
metrics are reduced across ranks (exact global values: metric *state* is
summed, not results averaged). ``BatchNormalization(synchronized=True)``
layers get batch statistics over the global batch (Keras' own
synchronization goes through ``tf.distribute``).

**Every rank issues the same collectives, whatever its batch holds.** With
uneven data a rank that has run out gets *empty* batches (see
:mod:`hvdagent._data.shard`). It runs the user's step all the same, on a
one-sample placeholder batch, so it reaches exactly the reductions a real
step reaches (every optimizer the step applies, sparse gradients included);
its gradients count with weight zero (its batch size), and afterwards the
step is undone on this rank: metric state and the model's non-trainable
variables (BatchNormalization statistics, seed states) get their values back.
The update itself, the same on every rank, stays.

**Only distributed updates.** While the agent traces a step, an optimizer
that applies gradients outside a distributed optimizer the model holds is an
error naming it (see :mod:`hvdagent._agent.updates`).

**XLA** (``compile(jit_compile=True)``, or ``"auto"`` on a GPU): Horovod's
collectives cannot run inside an XLA cluster. For Keras' own ``train_step``
the agent compiles the forward pass, the loss and the gradients with XLA and
reduces and applies the gradients outside it; a custom ``train_step`` cannot
be split and is refused (:func:`check_xla`).

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
from hvdagent._agent.updates import only_distributed_updates, tracing_step
from hvdagent._sync.batchnorm import sync_moments
from hvdagent._sync.optimizer import distributed_optimizers
from hvdagent._sync.parts import parts_of
from hvdagent._sync.statistics import StatisticsSync

__all__ = ["distributed", "check_xla"]

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


def _placeholder(data, n):
    """``data``, or a one-sample batch of zeros shaped like it when ``n == 0``.

    Leaves that are not dense tensors leave ``data`` as it is (empty padding
    batches are dense: :mod:`hvdagent._data.shard` refuses to pad others).
    """
    import tensorflow as tf

    leaves = tf.nest.flatten(data)
    if not leaves or not all(isinstance(t, tf.Tensor) for t in leaves):
        return data

    def zeros(t):
        shape = [1] + [d if d is not None else 1 for d in t.shape.as_list()[1:]]
        return tf.fill(shape, "") if t.dtype == tf.string else tf.zeros(shape, t.dtype)

    picked = tf.cond(n > 0, lambda: list(leaves), lambda: [zeros(t) for t in leaves])
    return tf.nest.pack_sequence_as(data, picked)


def _local_state(model) -> list:
    """What a step changes on this rank alone: metric state and the model's non-trainable
    variables (BatchNormalization statistics, seed states), each once."""
    seen, out = set(), []
    for v in list(_compat.metric_variables(model)) + list(model.non_trainable_variables):
        if id(v) not in seen:
            seen.add(id(v))
            out.append(v)
    return out


def _xla_split(model):
    """Keras' own train step with the gradients computed under XLA and reduced outside it."""
    import tensorflow as tf

    def hvdagent_gradients(data):  # the name XLA's dumps and profiles show
        return _compat.default_step_gradients(model, data)

    gradients = tf.function(hvdagent_gradients, jit_compile=True, reduce_retracing=True)

    def step(data):
        grads, logs = gradients(data)
        _compat.apply_gradients(model.optimizer, grads, list(model.trainable_variables))
        return logs

    return step


def _train_step(model, original, sync_stats, empty, xla: bool):
    import tensorflow as tf

    if xla:
        original = _xla_split(model)

    def train_step(self, data):
        n = _batch_len(data)
        syncs = [parts_of(opt).sync for opt in distributed_optimizers(self)]
        for sync in syncs:
            sync.record_batch_size(n)
        state = _local_state(self)
        saved = [tf.identity(v) for v in state]
        with tracing_step(self, syncs):
            logs = original(_placeholder(data, n))

        def undo():  # an empty batch: only the update (the same on every rank) stays
            for v, value in zip(state, saved):
                v.assign(value)
            return _logs_like(self, logs)

        logs = tf.cond(n > 0, lambda: logs, undo)
        empty.assign(tf.equal(n, 0))
        sync_stats(self)
        return logs

    return train_step


def check_xla(model) -> None:
    """Refuse, before training, what XLA cannot run under the agent (see the module docstring).

    Raises:
        ValueError: XLA is on for a custom ``train_step``, or with synchronized BatchNormalization.
    """
    if not _compat.jit_compile(model):
        return
    if not _compat.has_default_train_step(model):
        raise ValueError(
            f"jit_compile is on for {type(model).__name__}, whose train_step is its own: XLA would compile the "
            "whole step, and Horovod's collectives (inside optimizer.apply) cannot run in XLA. The agent "
            "compiles Keras' own train_step with XLA up to the gradients, but cannot split a custom one. Turn "
            "XLA off for the step (model.compile(..., jit_compile=False), or model.jit_compile = False after a "
            "custom compile; on GPUs Keras' default jit_compile='auto' turns it on), and if you want XLA, "
            "compile the forward and backward part of your step yourself with "
            "tf.function(jit_compile=True) and call optimizer.apply outside it. "
            f"Received: jit_compile={_compat.jit_compile(model)}"
        )
    if _compat.synchronized_batchnorm_layers(model):
        raise ValueError(
            "jit_compile is on, and BatchNormalization(synchronized=True) sums its statistics across ranks "
            "inside the forward pass, which XLA cannot hold: compile with jit_compile=False. "
            f"Received: jit_compile={_compat.jit_compile(model)}"
        )


def _test_step(model, original, empty):
    import tensorflow as tf

    def test_step(self, data):
        seen = {}

        def real():
            seen["logs"] = original(data)
            return seen["logs"]

        n = _batch_len(data)
        logs = tf.cond(n > 0, real, lambda: _logs_like(self, seen["logs"]))
        empty.assign(tf.equal(n, 0))
        return logs

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


def _epoch_logs(original, local_results, empty):
    """Epoch-end logs when a custom step's keys are not its metrics' names.

    Keras then keeps the last step's values, this rank's (keras-io's VAE
    returns ``loss`` for its ``total_loss`` tracker). Each value that is a
    metric's local result becomes that metric's global result; any other
    value becomes its mean over ranks. Ranks whose last batch was empty (their
    logs hold no data) do not count. Decided from one small gather, so every
    rank logs the same numbers.
    """

    def method(self, logs):
        local = local_results()  # before the reduction below
        result = original(logs)
        if _hvd.size() == 1 or result is not logs or not isinstance(logs, dict):
            return result
        keys = sorted(logs)
        values = [_scalar(logs[k]) for k in keys]
        sources = [next((name for name, v in local.items() if _scalar(v) == value), None)
                   if value is not None else None for value in values]
        every = _hvd.allgather_object((sources, values, bool(empty.numpy())), name="hvdagent_epoch_logs")
        every = [e for e in every if not e[2]] or every
        results = self.get_metrics_result()
        out = dict(logs)
        for i, key in enumerate(keys):
            named = {e[0][i] for e in every}
            if len(named) == 1 and None not in named:
                out[key] = results[named.pop()]
            elif all(e[1][i] is not None for e in every):
                out[key] = sum(e[1][i] for e in every) / len(every)
        return out

    return method


def _scalar(value):
    """``value`` as a float if it holds one number, else None."""
    import numpy as np

    array = np.asarray(value)
    return float(array.reshape(-1)[0]) if array.size == 1 and array.dtype.kind in "fiub" else None


def _to_python(value):
    try:
        return float(value.numpy()) if getattr(value, "shape", None) == () else value.numpy()
    except AttributeError:
        return value


@contextlib.contextmanager
def distributed(model, cache: Dict, stats: StatisticsSync):
    """Within the block, ``model``'s steps and metric results are the distributed ones."""
    logs_method = _compat.epoch_logs_method(model)
    originals = {name: getattr(model, name) for name in _WRAPPED + (logs_method,)}
    sync_bn = _compat.synchronized_batchnorm_layers(model)
    for index, layer in enumerate(sync_bn):
        _compat.replace_batchnorm_moments(layer, types.MethodType(functools.partial(sync_moments, index), layer))
    local_results = lambda: {k: _to_python(v) for k, v in originals["get_metrics_result"]().items()}  # noqa: E731
    empty = cache.get("empty")  # this rank's last batch was empty (its logs hold no data)
    if empty is None:
        import tensorflow as tf

        with tf.init_scope():
            empty = tf.Variable(False, trainable=False, name="hvdagent_last_batch_empty")
    # XLA, if on, compiles the gradients of Keras' own step only (see _xla_split): Keras
    # builds the step functions with it off, for the duration of the block.
    xla = _compat.jit_compile(model) and _compat.has_default_train_step(model)
    wrapped = {
        "train_step": _train_step(model, originals["train_step"], stats, empty, xla),
        "test_step": _test_step(model, originals["test_step"], empty),
        "get_metrics_result": _metrics_result(model, originals["get_metrics_result"]),
        logs_method: _epoch_logs(originals[logs_method], local_results, empty),
    }
    # Traced functions hold the collectives of the size they were traced at
    # (none with one rank): an elastic job that grows must retrace.
    key = (id(model.optimizer), _compat.compile_identity(model), _hvd.size(), xla)
    for name, fn in wrapped.items():
        object.__setattr__(model, name, types.MethodType(fn, model))
    for name, fn in zip(_FUNCTIONS, cache.get(key, (None,) * len(_FUNCTIONS))):
        setattr(model, name, fn)
    try:
        with only_distributed_updates(model), _compat.jit_off(model):
            yield
    finally:
        cache.clear()
        cache[key] = tuple(getattr(model, name, None) for name in _FUNCTIONS)
        cache["empty"] = empty
        for name in wrapped:
            if name in model.__dict__:
                object.__delattr__(model, name)
        for layer in sync_bn:
            _compat.replace_batchnorm_moments(layer, None)
        for name in _FUNCTIONS:
            setattr(model, name, None)
