"""Non-trainable statistics (BatchNormalization's moving mean and variance) kept equal across ranks."""

from __future__ import annotations

from hvdagent import _hvd
from hvdagent._sync.parts import parts_of

__all__ = ["StatisticsSync"]


class StatisticsSync:
    """Averages a model's non-trainable float variables (BatchNormalization's
    moving statistics) across ranks at the last training step of every epoch,
    so validation, ``evaluate``, ``predict`` and ``save`` see one model.

    A counter variable inside the traced step (owned here) and the epoch's
    length in batches (from the optimizer's schedule) decide when; nothing
    runs on other steps.
    """

    def __init__(self):
        self._counter = None

    def start(self) -> None:
        """Start counting from the first step of an epoch (before ``fit``'s first step)."""
        import tensorflow as tf

        if self._counter is None:
            with tf.init_scope():
                self._counter = tf.Variable(0, dtype=tf.int64, trainable=False, name="hvdagent_step_in_epoch")
        self._counter.assign(0)

    def __call__(self, model) -> None:
        import tensorflow as tf

        stats = [v for v in model.non_trainable_variables if tf.as_dtype(v.dtype).is_floating]
        parts = parts_of(model.optimizer)
        if self._counter is None or parts is None or not stats or _hvd.size() == 1:
            return
        steps = parts.schedule.read("batches_per_epoch")
        done = self._counter.assign_add(1)

        def average():
            for v, a in zip(stats, _hvd.allreduce([tf.convert_to_tensor(v) for v in stats], op="average",
                                                  name="hvdagent_stats")):
                v.assign(a)
            self._counter.assign(0)
            return tf.constant(True)

        tf.cond(tf.logical_and(steps > 0, done >= steps), average, lambda: tf.constant(False))
