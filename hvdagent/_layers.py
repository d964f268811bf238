"""Layers for data-parallel training."""

from __future__ import annotations

from typing import Any

__all__ = ["SyncBatchNormalization"]


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
