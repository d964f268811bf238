"""``LearningRateScheduleCallback``: Horovod's epoch-driven learning-rate schedule."""

from __future__ import annotations

from numbers import Real
from typing import Callable, Optional, Union

from hvdagent import _compat
from hvdagent._runtime import validate

from ._either_keras import EitherKerasCallback


def _check_number(name: str, value, minimum: float = 0, strict: bool = False) -> None:
    validate.number(name, value, minimum=minimum, exclusive=strict)


class LearningRateScheduleCallback(EitherKerasCallback):
    """Set the learning rate to ``initial_lr * multiplier(epoch)`` between two epochs.

    Horovod's ``hvd.callbacks.LearningRateScheduleCallback``, with Horovod
    0.28.1's meaning:

    * ``multiplier`` is a function of the epoch, or a number ``m``, which
      means exponential decay: ``m ** (epoch - start_epoch)``. (A constant
      factor is ``multiplier=lambda epoch: m``.)
    * ``staircase=True``: the rate is set at the start of every epoch in
      ``[start_epoch, end_epoch)`` from the integer epoch. ``staircase=False``:
      it is set before every batch from the fractional epoch
      ``epoch + batch / steps_per_epoch``.
    * Outside ``[start_epoch, end_epoch)`` the rate is left as it is, so
      several instances chain (warm-up, then steps).
    * ``momentum_correction`` (Goyal et al., 2017): when the rate changes
      from ``old`` to ``new``, the momentum buffer of SGD (or RMSprop) with
      momentum is scaled by ``new / old``, which is what Horovod's one-step
      change of the momentum coefficient does.
    * The rate is added to the epoch logs as ``lr``.

    Pass the rate for the whole job (Horovod's recipe: the single-process
    rate times ``hvd.size()``); nothing else scales it. The optimizer must
    have a float learning rate, not a ``LearningRateSchedule``.

    Args:
        initial_lr: the rate the multiplier applies to (required, > 0).
        multiplier: a number (exponential decay) or ``f(epoch) -> float``.
        start_epoch: first epoch adjusted (default 0).
        end_epoch: first epoch no longer adjusted (default None: never stops).
        staircase: adjust per epoch (default True) or per batch.
        momentum_correction: scale the momentum buffer on each change (default True).
        steps_per_epoch: batches per epoch, for ``staircase=False`` (default:
            read from ``fit``'s parameters).

    Example:
        >>> from hvdagent.callbacks import LearningRateScheduleCallback
        >>> cb = LearningRateScheduleCallback(initial_lr=0.1, multiplier=0.5, start_epoch=2)
        >>> [cb.multiplier(e) for e in (2, 3, 4)]
        [1.0, 0.5, 0.25]
        >>> LearningRateScheduleCallback(initial_lr=None, multiplier=1.0)
        Traceback (most recent call last):
        ...
        ValueError: initial_lr is required and must be a number > 0. Received: initial_lr=None
    """

    def __init__(
        self,
        initial_lr: float,
        multiplier: Union[float, Callable[[float], float]],
        start_epoch: float = 0,
        end_epoch: Optional[float] = None,
        staircase: bool = True,
        momentum_correction: bool = True,
        steps_per_epoch: Optional[int] = None,
    ):
        super().__init__()
        if initial_lr is None:
            raise ValueError("initial_lr is required and must be a number > 0. Received: initial_lr=None")
        validate.number("initial_lr", initial_lr, minimum=0, exclusive=True)
        _check_number("start_epoch", start_epoch)
        if end_epoch is not None:
            _check_number("end_epoch", end_epoch)
        validate.boolean("staircase", staircase)
        validate.boolean("momentum_correction", momentum_correction)
        validate.optional(validate.integer, "steps_per_epoch", steps_per_epoch, minimum=1)
        if callable(multiplier):
            self.multiplier = multiplier
        elif isinstance(multiplier, Real) and not isinstance(multiplier, bool):
            self.multiplier = lambda epoch: multiplier ** (epoch - start_epoch)
        else:
            raise TypeError(f"multiplier must be a number or a function of the epoch. Received: multiplier={multiplier!r}")
        self.initial_lr = float(initial_lr)
        self.start_epoch, self.end_epoch = start_epoch, end_epoch
        self.staircase, self.momentum_correction = staircase, momentum_correction
        self.steps_per_epoch = steps_per_epoch
        self.current_epoch = None

    # --- Keras hooks ----------------------------------------------------------------
    def on_train_begin(self, logs=None):
        optimizer = _compat.base_optimizer(self.model.optimizer)
        if _compat.has_schedule(optimizer):
            raise ValueError(
                f"{type(self).__name__} sets a float learning rate, but the optimizer's learning rate is a "
                "LearningRateSchedule; use one or the other. "
                f"Received: learning_rate={_compat.raw_learning_rate(optimizer)!r}"
            )
        if not self.staircase and not self.steps_per_epoch:
            steps = (self.params or {}).get("steps")
            if not steps:
                raise ValueError(
                    f"could not read the number of steps per epoch from fit(); pass steps_per_epoch to "
                    f"{type(self).__name__}. Received: steps_per_epoch=None"
                )
            self.steps_per_epoch = int(steps)

    def on_epoch_begin(self, epoch, logs=None):
        self.current_epoch = epoch
        if self.staircase and self._in_range():
            self._adjust(epoch)

    def on_train_batch_begin(self, batch, logs=None):
        if not self.staircase and self._in_range():
            self._adjust(self.current_epoch + float(batch) / self.steps_per_epoch)

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["lr"] = _compat.get_lr(_compat.base_optimizer(self.model.optimizer))

    # --- the work ---------------------------------------------------------------------
    def _in_range(self) -> bool:
        epoch = self.current_epoch
        return epoch >= self.start_epoch and (self.end_epoch is None or epoch < self.end_epoch)

    def _adjust(self, epoch: float) -> None:
        optimizer = _compat.base_optimizer(self.model.optimizer)
        old = _compat.get_lr(optimizer)
        new = self.initial_lr * self.multiplier(epoch)
        _compat.set_lr(optimizer, new)
        if self.momentum_correction and old > 0 and getattr(optimizer, "momentum", 0):
            ratio = _compat.get_lr(optimizer) / old
            if ratio != 1.0:
                for slot in _compat.momentum_slots(optimizer):
                    slot.assign(slot * ratio)
