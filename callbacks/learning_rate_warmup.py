"""``LearningRateWarmupCallback``: Horovod's gradual learning-rate warm-up."""

from __future__ import annotations

from typing import Optional

from hvdagent import _compat, _hvd

from .learning_rate_schedule import LearningRateScheduleCallback, _check_number


class LearningRateWarmupCallback(LearningRateScheduleCallback):
    """Ramp the learning rate from ``initial_lr / size`` to ``initial_lr``.

    Horovod's ``hvd.callbacks.LearningRateWarmupCallback`` (Goyal et al.,
    2017), with Horovod 0.28.1's meaning: ``initial_lr`` is the rate for the
    whole job, already multiplied by the number of ranks (``lr * hvd.size()``,
    as the optimizer was created with). Before every batch of the first
    ``warmup_epochs`` epochs the rate is set to::

        initial_lr / size * (epoch' * (size - 1) / warmup_epochs + 1)

    with ``epoch' = epoch + (batch + 1) / steps_per_epoch``, so it starts just
    above ``initial_lr / size`` and reaches exactly ``initial_lr`` at the last
    batch of the warm-up; after that it is left alone (other callbacks, such
    as ``ReduceLROnPlateau``, take over). The rate is added to the epoch logs
    as ``lr``. Nothing else scales it: the end rate is ``initial_lr``.

    With :class:`hvdagent.DistributedAgent`, use ``DistributedAgent(model,
    scale_lr=True, warmup_epochs=N)`` instead: you give the single-process rate
    and the agent scales and warms it up.

    Args:
        initial_lr: the rate at the end of warm-up (required, > 0).
        warmup_epochs: epochs of the warm-up (default 5).
        momentum_correction: scale the momentum buffer of SGD with momentum
            when the rate changes (default True).
        steps_per_epoch: batches per epoch (default: read from ``fit``).
        verbose: 1 prints the rate reached at the end of warm-up, on rank 0
            (default 0).

    Example: 2 ranks, ``initial_lr=0.002`` (``0.001 * size``),
    ``warmup_epochs=2``, 10 steps per epoch: 0.00105 at the first batch,
    0.0015 after epoch 1, 0.002 from the last batch of epoch 2 on.

        >>> from hvdagent.callbacks import LearningRateWarmupCallback
        >>> cb = LearningRateWarmupCallback(initial_lr=0.002, warmup_epochs=2, steps_per_epoch=10)
        >>> LearningRateWarmupCallback(initial_lr=0.002, warmup_epochs=-1)
        Traceback (most recent call last):
        ...
        ValueError: warmup_epochs must be a number > 0. Received: warmup_epochs=-1
    """

    def __init__(
        self,
        initial_lr: float,
        warmup_epochs: float = 5,
        momentum_correction: bool = True,
        steps_per_epoch: Optional[int] = None,
        verbose: int = 0,
    ):
        _check_number("warmup_epochs", warmup_epochs, strict=True)

        def multiplier(epoch):
            # As Horovod: shift by one batch so the rate is round at epoch ends.
            epoch += 1.0 / self.steps_per_epoch
            size = _hvd.size()
            return 1.0 / size * (epoch * (size - 1) / warmup_epochs + 1)

        super().__init__(initial_lr, multiplier, start_epoch=0, end_epoch=warmup_epochs, staircase=False,
                         momentum_correction=momentum_correction, steps_per_epoch=steps_per_epoch)
        self.warmup_epochs = warmup_epochs
        self.verbose = verbose

    def on_epoch_end(self, epoch, logs=None):
        super().on_epoch_end(epoch, logs)
        if epoch == self.end_epoch - 1 and self.verbose > 0 and _hvd.rank() == 0:
            rate = _compat.get_lr(_compat.base_optimizer(self.model.optimizer))
            print(f"\nEpoch {epoch + 1}: finished gradual learning rate warmup to {rate:g}.", flush=True)
