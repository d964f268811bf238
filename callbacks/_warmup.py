"""``ScaledWarmup``: ramp the learning rate up to ``size`` times."""

from __future__ import annotations

from typing import Optional

from hvdagent import _hvd, _lr

from ._base import Callback


class ScaledWarmup(Callback):
    """Ramp a float learning rate linearly from 1x to ``size``x over the first epochs.

    The linear scaling rule (Goyal et al., 2017): a ``size`` times larger
    global batch wants a ``size`` times larger learning rate, reached gradually
    to avoid early divergence. The rate is updated before every batch of the
    warm-up epochs, then left alone, so later callbacks (``ReduceLROnPlateau``)
    keep control. ``DistributedAgent(scale_lr=True, warmup_epochs=N)`` adds it.
    With a ``LearningRateSchedule`` the agent folds the ramp into the schedule
    instead.

    Args:
        warmup_epochs: epochs to reach the full rate (default 5); 0 scales at once.
        steps_per_epoch: batches per epoch (default: read from ``fit``'s params).
        verbose: log the rate at the end of warm-up on rank 0 (default 0).

    Example: with 4 ranks, ``lr=0.01`` and ``warmup_epochs=2``, the rate is
    0.01 at the first batch, 0.025 halfway through epoch 0, 0.025 + 0.015 = 0.04
    at the end of warm-up, and stays 0.04.
    """

    def __init__(self, warmup_epochs: float = 5, steps_per_epoch: Optional[int] = None, verbose: int = 0):
        super().__init__()
        if isinstance(warmup_epochs, bool) or not isinstance(warmup_epochs, (int, float)) or warmup_epochs < 0:
            raise ValueError(f"warmup_epochs must be a number >= 0. Received: warmup_epochs={warmup_epochs!r}")
        if steps_per_epoch is not None and (not isinstance(steps_per_epoch, int) or steps_per_epoch <= 0):
            raise ValueError(f"steps_per_epoch must be a positive integer or None. Received: steps_per_epoch={steps_per_epoch!r}")
        self.warmup_epochs = warmup_epochs
        self.steps_per_epoch = steps_per_epoch
        self.verbose = verbose
        self._epoch = 0
        self._done = False

    def _steps(self) -> int:
        return self.steps_per_epoch or int((self.params or {}).get("steps") or 1)

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_begin(self, batch, logs=None):
        if self._done:
            return
        progress = (self._epoch + batch / self._steps()) / self.warmup_epochs if self.warmup_epochs else 1.0
        _lr.set_multiplier(self.model.optimizer, _lr.warmup_multiplier(progress, _hvd.size()))
        if progress >= 1.0:
            self._done = True
            if self.verbose and _hvd.rank() == 0:
                from hvdagent._logging import get_logger

                get_logger(__name__).info("learning-rate warm-up done at epoch %d", self._epoch)

    def on_epoch_end(self, epoch, logs=None):
        if not self._done and self.warmup_epochs and epoch + 1 >= self.warmup_epochs:
            _lr.set_multiplier(self.model.optimizer, float(_hvd.size()))
            self._done = True
