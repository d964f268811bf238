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

:class:`LRScale` owns the two numbers (``size`` and ``warmup_steps``, as
variables read by the traced training step); only this module changes them.
"""

from __future__ import annotations

import contextlib
import functools

from hvdagent import _compat

__all__ = ["LRScale", "warmup_multiplier"]


def warmup_multiplier(progress: float, size: int) -> float:
    """Multiplier after ``progress`` warm-up fractions (0 -> 1x, >=1 -> size x)."""
    return 1.0 + (size - 1.0) * min(max(progress, 0.0), 1.0)


class LRScale:
    """``multiplier(step) = 1 + (size - 1) * min(step / warmup_steps, 1)``.

    ``size`` is 1 (no scaling) until :meth:`configure` says otherwise, so a
    :func:`hvdagent.DistributedOptimizer` used on its own leaves the rate
    alone, as Horovod's does.
    """

    def __init__(self):
        self._size = None
        self._warmup = None

    def build(self) -> None:
        import tensorflow as tf

        if self._size is None:
            with tf.init_scope():
                self._size = tf.Variable(1.0, trainable=False, name="hvdagent_lr_size")
                self._warmup = tf.Variable(0.0, trainable=False, name="hvdagent_lr_warmup_steps")

    def configure(self, size: float, warmup_steps: int) -> None:
        """Scale by ``size`` (1: not at all), reached after ``warmup_steps`` updates."""
        self.build()
        self._size.assign(float(size))
        self._warmup.assign(float(max(int(warmup_steps), 0)))

    def multiplier(self, step):
        """The multiplier at update ``step`` (a tensor; traced or eager)."""
        import tensorflow as tf

        self.build()
        size = self._size.read_value()
        warmup = self._warmup.read_value()
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
