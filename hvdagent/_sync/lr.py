"""Learning-rate scaling for data parallelism (the linear scaling rule).

With ``size`` ranks the global batch is ``size`` times larger, so the learning
rate is multiplied by ``size``, optionally ramped up from 1x over the first
``warmup_steps`` updates (Goyal et al., 2017).

The scale is a *view*, applied only while the distributed optimizer applies
an update: at rest the inner optimizer holds exactly the rate the user gave
(and what ``ReduceLROnPlateau`` or any callback sets). So every file Keras
writes — ``agent.save``, ``ModelCheckpoint``, ``BackupAndRestore``, a
``model.save`` in a callback — holds the single-process rate, a checkpoint
resumes on any number of ranks, and nothing has to be undone.

:class:`LRScale` reads the two numbers (``lr_size`` and ``lr_warmup_updates``)
from the optimizer's :class:`~hvdagent._sync.schedule.Schedule`, which the
agent sets once per ``fit``; it changes nothing but the rate during an update.
"""

from __future__ import annotations

import contextlib
import functools

from hvdagent import _compat

__all__ = ["LRScale"]


class LRScale:
    """``multiplier(step) = 1 + (size - 1) * min(step / warmup_steps, 1)``.

    ``size`` is 1 (no scaling) until the schedule says otherwise, so a
    :func:`hvdagent.DistributedOptimizer` used on its own leaves the rate
    alone, as Horovod's does.
    """

    def __init__(self, schedule):
        self.schedule = schedule

    def multiplier(self, step):
        """The multiplier at update ``step`` (a tensor; traced or eager)."""
        import tensorflow as tf

        size = tf.cast(self.schedule.read("lr_size"), tf.float32)
        warmup = tf.cast(self.schedule.read("lr_warmup_updates"), tf.float32)
        progress = tf.where(warmup > 0, tf.minimum(tf.cast(step, tf.float32) / tf.maximum(warmup, 1.0), 1.0), 1.0)
        return 1.0 + (size - 1.0) * progress

    def effective_rate(self, optimizer) -> float:
        """The rate the next update applies (the inner rate times the multiplier)."""
        base = _compat.base_optimizer(optimizer)
        step = _compat.iterations(base)
        raw = _compat.raw_learning_rate(base)
        value = raw(step) if _compat.has_schedule(base) else raw
        return float(value.numpy() * self.multiplier(step).numpy())

    @contextlib.contextmanager
    def applied(self, optimizer):
        """Within the block ``optimizer``'s rate is scaled (for one update).

        A float rate (a variable) is multiplied and restored around the
        update; a schedule is replaced, while the update is traced, by one
        that multiplies its value.
        """
        base = _compat.base_optimizer(optimizer)
        step = _compat.iterations(base)
        raw = _compat.raw_learning_rate(base)
        if _compat.has_schedule(base):
            _compat.set_raw_learning_rate(base, _scaled_schedule_class(_compat.generation(base))(raw, self))
            try:
                yield
            finally:
                _compat.set_raw_learning_rate(base, raw)
            return
        import tensorflow as tf

        unscaled = tf.identity(tf.convert_to_tensor(raw))
        raw.assign(unscaled * self.multiplier(step))
        try:
            yield
        finally:
            raw.assign(unscaled)


@functools.lru_cache(maxsize=None)
def _scaled_schedule_class(gen: int):
    base = _compat.lr_schedule_class(gen)

    class ScaledSchedule(base):
        """``schedule(step) * multiplier(step)``; exists only while an update is traced."""

        def __init__(self, schedule, scale: LRScale):
            self.schedule, self.scale = schedule, scale

        def __call__(self, step):
            import tensorflow as tf

            value = tf.convert_to_tensor(self.schedule(step))
            return value * tf.cast(self.scale.multiplier(step), value.dtype)

        def get_config(self):
            return self.schedule.get_config()

    return ScaledSchedule
