"""``LearningRateWarmupCallback``: Horovod's warm-up, ``initial_lr / size`` to ``initial_lr``."""

from __future__ import annotations

from typing import Optional

from hvdagent import _hvd, _validate

from ._base import Callback


class LearningRateWarmupCallback(Callback):
    """Ramp the learning rate from ``initial_lr / size`` to ``initial_lr`` (Horovod's semantics).

    As in Horovod's recipe, create the optimizer with ``lr * size`` and pass
    ``initial_lr=lr * size``: the rate starts at ``lr`` and reaches
    ``lr * size`` after ``warmup_epochs``, updated before every batch.

    Args:
        initial_lr: the rate at the end of warm-up (usually ``lr * size``).
        warmup_epochs: epochs of warm-up (default 5).
        momentum_correction: accepted for compatibility (default True).
        steps_per_epoch: batches per epoch (default: read from ``fit``).
        verbose: print the rate at the end of warm-up on rank 0 (default 0).
    """

    def __init__(self, initial_lr: float, warmup_epochs: float = 5, momentum_correction: bool = True,
                 steps_per_epoch: Optional[int] = None, verbose: int = 0):
        super().__init__()
        self.initial_lr = _validate.number("initial_lr", initial_lr, minimum=0)
        self.warmup_epochs = _validate.number("warmup_epochs", warmup_epochs, minimum=0)
        self.steps_per_epoch = _validate.optional(_validate.integer, "steps_per_epoch", steps_per_epoch, minimum=1)
        self.verbose = verbose
        self._epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_begin(self, batch, logs=None):
        if self._epoch >= self.warmup_epochs:
            return
        steps = self.steps_per_epoch or int((self.params or {}).get("steps") or 1)
        progress = min((self._epoch + batch / steps) / self.warmup_epochs, 1.0) if self.warmup_epochs else 1.0
        size = _hvd.size()
        self.model.optimizer.learning_rate = self.initial_lr / size * (1.0 + (size - 1.0) * progress)

    def on_epoch_end(self, epoch, logs=None):
        if epoch + 1 >= self.warmup_epochs > epoch:
            self.model.optimizer.learning_rate = self.initial_lr
