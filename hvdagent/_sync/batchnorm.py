"""Synchronized BatchNormalization: batch statistics over the global batch.

:func:`SyncBatchNormalization` is the public layer (a Keras 3
``BatchNormalization(synchronized=True)``); :func:`sync_moments` is what such
a layer computes its moments with while the agent trains (installed by
:mod:`hvdagent._agent.steps`); :func:`check_synchronized_batchnorm` refuses
data that would leave a rank without a batch.
"""

from __future__ import annotations

from typing import Any

from hvdagent import _compat, _hvd

__all__ = ["SyncBatchNormalization", "sync_moments", "check_synchronized_batchnorm"]


def SyncBatchNormalization(**kwargs: Any):  # noqa: N802 (a layer constructor, as in Horovod)
    """A Keras 3 ``BatchNormalization`` whose batch statistics span all ranks.

    The same as ``keras.layers.BatchNormalization(synchronized=True, ...)``:
    under ``agent.fit`` the mean and variance of every training batch are
    computed over the global batch (all ranks), so 2 ranks at batch ``B``
    normalise like one process at ``2B``. It is a plain Keras layer, so saved
    models load without hvdagent. Takes ``BatchNormalization``'s arguments.

    Example:
        >>> import hvdagent
        >>> layer = hvdagent.SyncBatchNormalization(momentum=0.9)
        >>> type(layer).__name__, layer.synchronized
        ('BatchNormalization', True)
    """
    import keras

    if kwargs.pop("synchronized", True) is not True:
        raise ValueError("SyncBatchNormalization is synchronized; use keras.layers.BatchNormalization for a "
                         "local one. Received: synchronized=False")
    return keras.layers.BatchNormalization(synchronized=True, **kwargs)


def sync_moments(index, layer, inputs, mask):
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
    axes = _compat.batchnorm_reduction_axes(layer)
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
