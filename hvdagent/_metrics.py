"""Exact global metrics: reduce metric *state*, not per-rank averages.

Every built-in Keras metric keeps additive state (totals and counts, confusion
counts), so summing each state variable across ranks and then computing the
result gives exactly what one process would compute on all the data. The model's
``get_metrics_result`` is shadowed on the instance: called eagerly (at the end
of an epoch, of ``evaluate``) it reduces first; traced inside a step function
(the per-batch progress bar) it stays local and free.
"""

from __future__ import annotations

import types

from hvdagent import _compat, _hvd


def reduced_metrics_result(model, original):
    """Compute ``original()`` with every metric state summed across ranks."""
    import tensorflow as tf

    variables = _compat.metric_variables(model)
    if _hvd.size() == 1 or not variables or not tf.executing_eagerly():
        return original()
    local = [v.numpy() for v in variables]
    summed = _hvd.allreduce(
        [tf.cast(tf.convert_to_tensor(x), tf.float64) for x in local], op="sum", name="hvdagent_metrics"
    )
    try:
        for v, s in zip(variables, summed):
            v.assign(tf.cast(s, v.dtype))
        return {k: _to_python(val) for k, val in original().items()}
    finally:
        for v, x in zip(variables, local):
            v.assign(x)


def _to_python(value):
    try:
        return float(value.numpy()) if getattr(value, "shape", None) == () else value.numpy()
    except AttributeError:
        return value


def install(model) -> None:
    """Make ``model.get_metrics_result`` return exact global values (idempotent)."""
    if getattr(model, "_hvdagent_metrics_installed", False):
        return
    original = model.get_metrics_result

    def get_metrics_result(self):
        return reduced_metrics_result(self, original)

    object.__setattr__(model, "get_metrics_result", types.MethodType(get_metrics_result, model))
    object.__setattr__(model, "_hvdagent_metrics_installed", True)
