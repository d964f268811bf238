"""``BestModelCheckpoint``: keep the best model seen so far, written by rank 0."""

from __future__ import annotations

import os
from typing import Optional, Union

from hvdagent import _compat, _hvd

from ._either_keras import EitherKerasCallback


class BestModelCheckpoint(EitherKerasCallback):
    """Save the model whenever the monitored value improves (rank 0 writes).

    Horovod's ``hvd.callbacks.BestModelCheckpoint``: Keras' ``ModelCheckpoint``
    with ``save_best_only=True``, of the Keras the model belongs to (Keras 3
    or tf_keras). Horovod leaves ``filepath`` to be set later (its Spark
    estimator does); here it can also be passed directly. Only rank 0 writes,
    so every rank can be given the same callback list; put
    :class:`MetricAverageCallback` before it so the decision uses the
    average over ranks.

    Args:
        monitor: the log to watch (default ``'val_loss'``).
        verbose: 1 prints a line when a model is saved (default 0).
        save_weights_only: save only the weights (default False).
        mode: ``'auto'`` (default), ``'min'`` or ``'max'``.
        save_freq: ``'epoch'`` (default) or a number of batches.
        filepath: where to save (``.keras`` for Keras 3 models; ``.h5``
            allowed with tf_keras); required by the time ``fit`` starts.

    Example:
        >>> from hvdagent.callbacks import BestModelCheckpoint
        >>> ckpt = BestModelCheckpoint(monitor="val_loss", filepath="best.keras")
        >>> BestModelCheckpoint(mode="lowest")
        Traceback (most recent call last):
        ...
        ValueError: mode must be 'auto', 'min' or 'max'. Received: mode='lowest'
    """

    def __init__(
        self,
        monitor: str = "val_loss",
        verbose: int = 0,
        save_weights_only: bool = False,
        mode: str = "auto",
        save_freq: Union[str, int] = "epoch",
        filepath: Optional[str] = None,
    ):
        super().__init__()
        if not isinstance(monitor, str):
            raise TypeError(f"monitor must be the name of a log. Received: monitor={monitor!r}")
        if mode not in ("auto", "min", "max"):
            raise ValueError(f"mode must be 'auto', 'min' or 'max'. Received: mode={mode!r}")
        if save_freq != "epoch" and (isinstance(save_freq, bool) or not isinstance(save_freq, int) or save_freq <= 0):
            raise ValueError(f"save_freq must be 'epoch' or a positive integer. Received: save_freq={save_freq!r}")
        self.monitor, self.verbose, self.mode = monitor, verbose, mode
        self.save_weights_only, self.save_freq = bool(save_weights_only), save_freq
        self.filepath = filepath
        self._inner = None
        if save_freq != "epoch":
            # Batch hooks only when asked for: they switch off Keras' async dispatch.
            self.on_train_batch_end = self._forward_batch_end

    @property
    def best(self):
        """The best monitored value so far (rank 0; None elsewhere or before ``fit``)."""
        return None if self._inner is None else self._inner.best

    def on_train_begin(self, logs=None):
        if self.filepath is None:
            raise ValueError("BestModelCheckpoint needs a filepath: pass filepath=... or set .filepath before fit. Received: filepath=None")
        if _hvd.rank() != 0:
            return
        if self._inner is None:
            keras_module = _compat.keras_module(_compat.generation(self.model))
            self._inner = keras_module.callbacks.ModelCheckpoint(
                os.fspath(self.filepath), monitor=self.monitor, verbose=self.verbose, save_best_only=True,
                save_weights_only=self.save_weights_only, mode=self.mode, save_freq=self.save_freq,
            )
        self._inner.set_model(self.model)
        self._inner.set_params(self.params)
        self._inner.on_train_begin(logs)

    def on_epoch_begin(self, epoch, logs=None):
        if self._inner is not None:
            self._inner.on_epoch_begin(epoch, logs)

    def on_epoch_end(self, epoch, logs=None):
        if self._inner is not None:
            self._inner.on_epoch_end(epoch, logs)

    def _forward_batch_end(self, batch, logs=None):
        if self._inner is not None:
            self._inner.on_train_batch_end(batch, logs)

    def on_train_end(self, logs=None):
        if self._inner is not None:
            self._inner.on_train_end(logs)
