"""Learning-rate scaling for data parallelism (the linear scaling rule).

With ``size`` ranks the global batch is ``size`` times larger, so the learning
rate is multiplied by ``size``, optionally ramped up from 1x over the first
epochs (Goyal et al., 2017). The current multiplier is kept on the optimizer's
:class:`~hvdagent._sync.GradientSync`, so that :func:`hvdagent.DistributedAgent.save`
can write the *unscaled* (single-process) rate: a saved file holds what the
user wrote, and loading it into an agent scales it again.

* A float learning rate is rescaled in place: ``lr <- lr / old * new``, so
  changes made by other callbacks (``ReduceLROnPlateau``) are kept.
* A ``LearningRateSchedule`` is wrapped in one that multiplies its value by a
  step-dependent factor (ramp over ``warmup_steps`` optimizer steps).
"""

from __future__ import annotations

import contextlib
import functools

from hvdagent import _compat
from hvdagent._optimizer import inner_of, sync_of


def warmup_multiplier(progress: float, size: int) -> float:
    """Multiplier after ``progress`` warm-up fractions (0 -> 1x, >=1 -> size x)."""
    return 1.0 + (size - 1.0) * min(max(progress, 0.0), 1.0)


def set_multiplier(optimizer, multiplier: float) -> None:
    """Scale a float learning rate to ``multiplier`` times the unscaled one.

    The unscaled rate is remembered, so repeated rescaling does not drift;
    if another callback changed the rate since, the change is kept.
    """
    sync = sync_of(optimizer)
    if sync is None:
        raise ValueError(
            "learning-rate scaling needs a model compiled with hvdagent.DistributedOptimizer (or trained "
            f"through DistributedAgent). Received: optimizer of type {type(optimizer).__name__}"
        )
    inner = inner_of(optimizer)
    if _compat.has_schedule(inner):
        return
    old = sync.lr_multiplier
    current = _compat.get_lr(inner)
    base = sync.lr_base
    if base is None or not _same_float32(base * old, current):
        base = current / old
    _compat.set_lr(inner, base * multiplier)
    sync.lr_base = base
    sync.lr_multiplier = multiplier
    sync._lr_unscale = functools.partial(_unscaled_float, optimizer)


def _same_float32(a: float, b: float) -> bool:
    import numpy as np

    return np.float32(a) == np.float32(b)


@contextlib.contextmanager
def _unscaled_float(optimizer):
    sync, inner = sync_of(optimizer), inner_of(optimizer)
    scaled = _compat.get_lr(inner)
    base = sync.lr_base
    _compat.set_lr(inner, base if base is not None and _same_float32(base * sync.lr_multiplier, scaled) else scaled / sync.lr_multiplier)
    try:
        yield
    finally:
        _compat.set_lr(inner, scaled)


@functools.lru_cache(maxsize=None)
def _scaled_schedule_class(gen: int):
    base = _compat.lr_schedule_class(gen)

    class ScaledSchedule(base):
        """``schedule(step) * multiplier(step)``; never saved (see _unscaled_schedule)."""

        def __init__(self, schedule, size, warmup_steps):
            self.schedule, self.size, self.warmup_steps = schedule, float(size), int(warmup_steps)

        def __call__(self, step):
            import tensorflow as tf

            value = tf.convert_to_tensor(self.schedule(step))
            if self.warmup_steps > 0:
                progress = tf.minimum(tf.cast(step, value.dtype) / self.warmup_steps, 1.0)
            else:
                progress = tf.constant(1.0, value.dtype)
            return value * (1.0 + (self.size - 1.0) * progress)

        def get_config(self):
            return {"schedule": self.schedule.get_config(), "size": self.size, "warmup_steps": self.warmup_steps}

    return ScaledSchedule


def scale_schedule(optimizer, size: int, warmup_steps: int) -> None:
    """Wrap the optimizer's schedule so it is multiplied by ``size`` after warm-up."""
    inner = inner_of(optimizer)
    current = _compat.raw_learning_rate(inner)
    cls = _scaled_schedule_class(_compat.generation(inner))
    original = current.schedule if isinstance(current, cls) else current
    _compat.set_raw_learning_rate(inner, cls(original, size, warmup_steps))
    sync = sync_of(optimizer)
    sync.lr_multiplier = float(size)
    sync._lr_unscale = functools.partial(_unscaled_schedule, optimizer, original)


@contextlib.contextmanager
def _unscaled_schedule(optimizer, original):
    inner = inner_of(optimizer)
    scaled = _compat.raw_learning_rate(inner)
    _compat.set_raw_learning_rate(inner, original)
    try:
        yield
    finally:
        _compat.set_raw_learning_rate(inner, scaled)


def unscale(optimizer) -> None:
    """Back to the unscaled rate (one process, for example after an elastic
    job shrank to one worker); does nothing if it was never scaled."""
    sync = sync_of(optimizer)
    if sync is None or sync.lr_multiplier == 1.0:
        return
    inner = inner_of(optimizer)
    if _compat.has_schedule(inner):
        scale_schedule(optimizer, 1, 0)
    else:
        set_multiplier(optimizer, 1.0)


def mark_unscaled(optimizer) -> None:
    """Record that the optimizer's rate was just restored to its unscaled value."""
    sync = sync_of(optimizer)
    if sync is not None:
        sync.lr_multiplier = 1.0
        sync.lr_base = None
