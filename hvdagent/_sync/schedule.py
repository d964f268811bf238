"""The epoch's plan: computed once per ``fit``, read by every synchronised piece.

One ``agent.fit`` decides, before the first step, how many batches and updates
an epoch has, how far the learning rate is scaled and over how many updates it
ramps up, and when local SGD starts. :class:`EpochPlan` is that decision (a
frozen value, computed by :meth:`EpochPlan.for_fit`); :class:`Schedule` holds
it in TensorFlow variables that the traced step reads, and
:meth:`Schedule.set` is its only writer. The learning-rate scale
(:mod:`hvdagent._sync.lr`), the gradient sync (local SGD) and the statistics
sync (BatchNormalization at epoch ends) read the one schedule of the
optimizer they serve.

Example:
    >>> plan = EpochPlan.for_fit(batches_per_epoch=10, size=4, backward_passes_per_step=2, scale_lr=True,
    ...                          warmup_epochs=1, local_sgd_warmup_epochs=0)
    >>> plan.updates_per_epoch, plan.lr_size, plan.lr_warmup_updates
    (5, 4, 5)
"""

from __future__ import annotations

import dataclasses
import math

__all__ = ["EpochPlan", "Schedule"]


@dataclasses.dataclass(frozen=True)
class EpochPlan:
    """What one ``fit`` runs per epoch, in batches and in optimizer updates.

    Attributes:
        batches_per_epoch: this rank's steps (batches) per epoch; 0: unknown.
        updates_per_epoch: optimizer updates per epoch (batches divided by
            ``backward_passes_per_step``, rounded up); 0: unknown.
        lr_size: the learning-rate multiplier after warm-up (1: no scaling).
        lr_warmup_updates: updates over which the multiplier ramps from 1.
        local_sgd_start: the update from which local SGD runs (``sync_every > 1``).
    """

    batches_per_epoch: int = 0
    updates_per_epoch: int = 0
    lr_size: int = 1
    lr_warmup_updates: int = 0
    local_sgd_start: int = 0

    @classmethod
    def for_fit(cls, *, batches_per_epoch: int, size: int, backward_passes_per_step: int, scale_lr: bool,
                warmup_epochs: float, local_sgd_warmup_epochs: float) -> "EpochPlan":
        updates = max(1, math.ceil(batches_per_epoch / backward_passes_per_step))
        return cls(
            batches_per_epoch=int(batches_per_epoch),
            updates_per_epoch=updates,
            lr_size=int(size) if scale_lr else 1,
            lr_warmup_updates=round(warmup_epochs * updates),
            local_sgd_start=round(local_sgd_warmup_epochs * updates),
        )


_FIELDS = tuple(f.name for f in dataclasses.fields(EpochPlan))


class Schedule:
    """An :class:`EpochPlan` as variables the traced step reads (one per field).

    Until :meth:`set` is called it holds ``EpochPlan()``: no scaling, no
    warm-up, epoch length unknown, which is what a
    :func:`hvdagent.DistributedOptimizer` used without the agent needs.
    """

    def __init__(self):
        self._variables = None
        self._plan = EpochPlan()

    @property
    def plan(self) -> EpochPlan:
        return self._plan

    def build(self) -> None:
        """Create the variables (once, outside any ``tf.function``)."""
        import tensorflow as tf

        if self._variables is None:
            with tf.init_scope():
                self._variables = {
                    name: tf.Variable(getattr(self._plan, name), dtype=tf.int64, trainable=False,
                                      name=f"hvdagent_{name}")
                    for name in _FIELDS
                }

    def set(self, plan: EpochPlan) -> None:
        """Make ``plan`` the one every reader sees (the only writer)."""
        self.build()
        self._plan = plan
        for name in _FIELDS:
            self._variables[name].assign(int(getattr(plan, name)))

    def read(self, name: str):
        """The current value of field ``name`` (an int64 tensor; traced or eager)."""
        self.build()
        return self._variables[name].read_value()
