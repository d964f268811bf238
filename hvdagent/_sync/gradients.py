"""Gradient synchronisation: the state of one distributed optimizer's reduction.

:class:`GradientSync` owns the little state gradient sync needs (this rank's
batch size for the next reduction, accumulators, the time spent reducing)
and is changed only through its methods. Its options are a frozen
:class:`~hvdagent._sync.options.SyncOptions`; when local SGD starts and how
long an epoch is come from the optimizer's
:class:`~hvdagent._sync.schedule.Schedule`, which the agent sets.

The averaging is weighted by each rank's batch size. With equal batches (the
normal case) this is exactly Horovod's average. With a short last batch, the
result equals the gradient one process would compute on the concatenated
global batch, and a rank that has run out of data (an empty batch) contributes
nothing: the average is over the samples that exist. The batch size reaches
the sync through :meth:`GradientSync.record_batch_size`, which the agent's
training step calls (its only writer); a custom loop that never calls it
gets Horovod's plain average.

**Same collectives whatever the batch holds.** A rank with an empty batch runs
the user's step on a placeholder batch (see :mod:`hvdagent._agent.steps`), so
it reaches every reduction a real step reaches, sparse gradients included.
Its gradients are weighted by its batch size, zero, with ``multiply_no_nan``
(a placeholder's gradient may be NaN; zero times NaN must still be zero); its
sparse gradients keep no rows; under ``op="sum"``/``"adasum"``, local SGD and
gradient accumulation it contributes zeros.

**Names.** Horovod pairs collectives across ranks by name. Each optimizer's
reductions are named after its ``tag`` (empty for ``model.optimizer``, the
attribute's name for the other optimizers a model holds), so two optimizers
of one step (a GAN's) never share a name.

**Local SGD** (``sync_every=N > 1``): after ``local_sgd_start`` updates of
every-step gradient sync, each rank applies its own gradients and every
``N``-th update (and at the last update of every epoch) the trainable weights
are averaged across ranks (Lin et al., 2020, "post-local SGD"). Optimizer
state stays local.

**Compression**: ``fp16``/``bf16`` change the type gradients travel in;
``PowerSGD`` (its own module, :mod:`hvdagent._sync.powersgd`) replaces the
reduction of the dense gradients from its ``start_step`` on, and owns its
state (warm-start ``Q`` and error buffers) under this object.

**Timing**: every reduction is timed inside the traced step (two
``tf.timestamp`` ops, no Python, no collective); :meth:`GradientSync.timing`
reads and resets it (:class:`hvdagent.SyncProfiler` uses it).
"""

from __future__ import annotations

import contextlib
import threading
from typing import List, Optional, Tuple

from hvdagent import _hvd
from hvdagent._sync.options import SyncOptions
from hvdagent._sync.powersgd import PowerSGD, PowerSGDState

__all__ = ["GradientSync", "applying"]

_ACTIVE = threading.local()


def applying() -> Optional["GradientSync"]:
    """The gradient sync whose :meth:`GradientSync.apply` this thread is inside, if any.

    The agent asks, while it traces a step, whether an optimizer applying
    gradients does so through a distributed optimizer it knows.
    """
    return getattr(_ACTIVE, "sync", None)


def _weighted(g, weight):
    """``g * weight``, zero wherever ``weight`` is zero even if ``g`` is not finite."""
    import tensorflow as tf

    if isinstance(g, tf.IndexedSlices):
        keep = tf.cast(tf.not_equal(weight, 0), tf.int32) * tf.shape(g.indices)[0]
        values = g.values[:keep] * tf.cast(weight, g.values.dtype)
        return tf.IndexedSlices(values, g.indices[:keep], g.dense_shape)
    g = tf.convert_to_tensor(g)
    return tf.math.multiply_no_nan(g, tf.cast(weight, g.dtype))


class GradientSync:
    """The state of gradient synchronisation for one optimizer."""

    def __init__(self, options: SyncOptions, schedule, tag: str = ""):
        self.options = options
        self.schedule = schedule
        self.tag = f"_{tag}" if tag else ""
        self._count = None
        self._seconds = None
        self._calls = None
        self._accumulators: List = []
        self._acc_count = None
        self._passes = None
        self._powersgd = None  # PowerSGDState, with compression=PowerSGD(...)

    # --- state -----------------------------------------------------------------
    def build(self, variables) -> None:
        """Create the state variables (once, outside any ``tf.function``)."""
        import tensorflow as tf

        if self._count is not None:
            return
        self.schedule.build()
        if isinstance(self.options.compression, PowerSGD):
            self._powersgd = PowerSGDState(self.options.compression, variables, tag=self.tag)
        with tf.init_scope():
            self._count = tf.Variable(1.0, trainable=False, name="hvdagent_local_count")
            self._seconds = tf.Variable(0.0, dtype=tf.float64, trainable=False, name="hvdagent_sync_seconds")
            self._calls = tf.Variable(0, dtype=tf.int64, trainable=False, name="hvdagent_sync_calls")
            if self.options.backward_passes_per_step > 1:
                self._accumulators = [
                    tf.Variable(tf.zeros(v.shape, v.dtype), trainable=False, name="hvdagent_acc") for v in variables
                ]
                self._acc_count = tf.Variable(0.0, trainable=False, name="hvdagent_acc_count")
                self._passes = tf.Variable(0, dtype=tf.int64, trainable=False, name="hvdagent_passes")

    def _batch_size(self):
        import tensorflow as tf

        return self._count.read_value() if self._count is not None else tf.constant(1.0)

    def record_batch_size(self, n) -> None:
        """This rank's batch size for the next gradient reduction (the agent's step calls it)."""
        import tensorflow as tf

        if self._count is not None:
            self._count.assign(tf.cast(n, tf.float32))

    def timing(self, reset: bool = True) -> Tuple[float, int]:
        """``(seconds, reductions)`` spent reducing gradients since the last reset (eager)."""
        if self._seconds is None:
            return 0.0, 0
        out = float(self._seconds.numpy()), int(self._calls.numpy())
        if reset:
            self._seconds.assign(0.0)
            self._calls.assign(0)
        return out

    def _timed(self, tensors, reduce):
        """``reduce(tensors)``, its duration added to the timing (inside the traced step)."""
        import tensorflow as tf

        if self._seconds is None:
            return reduce(tensors)
        with tf.control_dependencies(list(tensors)):
            mark = tf.timestamp()
        out = list(reduce(tensors))
        with tf.control_dependencies(out):
            elapsed = tf.timestamp() - mark
        with tf.control_dependencies([self._seconds.assign_add(elapsed), self._calls.assign_add(1)]):
            return [tf.identity(t) for t in out]

    def state_variables(self) -> list:
        """Per-rank state saved with the model (checkpoints, elastic commits):
        PowerSGD's, if any. Call :meth:`share_state` on every rank first."""
        return self._powersgd.variables() if self._powersgd is not None else []

    def share_state(self) -> None:
        """Make the state of :meth:`state_variables` the same on every rank without
        changing what training does next (a collective: every rank, same point)."""
        if self._powersgd is not None:
            self._powersgd.share_errors()

    # --- reduction ---------------------------------------------------------------
    def reduce(self, grads: list, count=None, step=None) -> list:
        """Return the globally reduced ``grads`` (same on every rank); ``step``:
        the optimizer's update count (PowerSGD starts at its ``start_step``)."""
        if self._powersgd is not None and _hvd.size() > 1:
            return self._reduce_compressed(grads, count, step)
        return self._reduce_plain(grads, count)

    def _reduce_compressed(self, grads: list, count, step) -> list:
        """PowerSGD for the dense gradients from ``start_step`` on, the plain average before."""
        import tensorflow as tf

        if count is None:
            count = self._count if self._count is not None else tf.constant(1.0)
        count = tf.cast(count, tf.float32)
        dense_at = [i for i, g in enumerate(grads)
                    if g is not None and (self.options.sparse_as_dense or not isinstance(g, tf.IndexedSlices))]
        dense = [tf.convert_to_tensor(grads[i]) for i in dense_at]
        # A rank without data (its placeholder step's gradients may not even be finite) sends zeros.
        dense = tf.cond(count > 0, lambda: dense, lambda: [tf.zeros_like(g) for g in dense]) if dense else dense
        step = tf.constant(0, tf.int64) if step is None else tf.cast(step, tf.int64)
        reduced = tf.cond(
            step >= self.options.compression.start_step,
            lambda: self._timed(dense, lambda ts: self._powersgd.reduce(ts, dense_at, count, step)[0]),
            lambda: self._reduce_plain(dense, count))
        out = list(grads)
        if len(dense_at) < sum(g is not None for g in grads):  # sparse gradients: gathered, as without PowerSGD
            out = self._reduce_plain([None if i in dense_at else g for i, g in enumerate(grads)], count)
        for i, r in zip(dense_at, reduced):
            out[i] = r
        return out

    def _reduce_plain(self, grads: list, count=None) -> list:
        """Every gradient in one fused allreduce (sparse ones gathered), weighted by batch size."""
        import tensorflow as tf

        opts = self.options
        if _hvd.size() == 1:
            return list(grads)
        weighted = opts.op == "average"
        count = tf.cast(self._batch_size() if count is None else count, tf.float32)
        # A rank without data sends zeros (and no sparse rows), whatever its placeholder step computed.
        weight = count * (1.0 / opts.gradient_predivide_factor) if weighted else tf.cast(count > 0, tf.float32)

        dense_idx, dense, sparse_idx, sparse = [], [], [], []
        for i, g in enumerate(grads):
            if g is None:
                continue
            if isinstance(g, tf.IndexedSlices) and not opts.sparse_as_dense:
                sparse_idx.append(i)
                sparse.append(_weighted(g, count if weighted else weight))
                continue
            dense_idx.append(i)
            dense.append(_weighted(tf.convert_to_tensor(g), weight))
        if weighted:
            dense.append(tf.reshape(count, [1]))
        op = "sum" if weighted else opts.op
        reduced = self._timed(dense, lambda ts: _hvd.allreduce(ts, op=op, compression=opts.compression,
                                                             name=f"hvdagent_grads{self.tag}"))

        out = list(grads)
        if weighted:
            total = tf.maximum(reduced.pop()[0], 1e-30)
            post = opts.gradient_predivide_factor / total
        for i, g in zip(dense_idx, reduced):
            out[i] = g * tf.cast(post, g.dtype) if weighted else g
        for k, (i, g) in enumerate(zip(sparse_idx, sparse)):
            r = _hvd.allreduce_sparse(g, op=op, name=f"hvdagent_sparse{self.tag}_{k}")
            if weighted:
                r = tf.IndexedSlices(r.values / tf.cast(total, r.values.dtype), r.indices, r.dense_shape)
            out[i] = r
        return out

    def average_weights(self, variables) -> None:
        """Set ``variables`` to their mean over ranks (local SGD; works eagerly and traced)."""
        variables = list(variables)
        if _hvd.size() == 1 or not variables:
            return
        import tensorflow as tf

        averaged = _hvd.allreduce([tf.convert_to_tensor(v) for v in variables], op="average", name=f"hvdagent_local_sgd{self.tag}")
        for v, a in zip(variables, averaged):
            v.assign(a)

    # --- apply -----------------------------------------------------------------
    def apply(self, grads: list, variables: list, apply_fn, step=None) -> None:
        """Synchronise ``grads`` and call ``apply_fn(grads, variables)``.

        ``step`` is the optimizer's update count before this update (needed
        for local SGD). With ``backward_passes_per_step > 1`` gradients are
        accumulated locally (weighted by batch size) and reduced and applied
        once every that many calls.
        """
        import tensorflow as tf

        opts = self.options
        grads = [tf.zeros_like(v) if g is None else g for g, v in zip(grads, variables)]
        with self._active():
            if opts.sync_every > 1 and _hvd.size() > 1:
                self._apply_local_sgd(grads, variables, apply_fn, step)
            elif opts.backward_passes_per_step == 1:
                apply_fn(self.reduce(grads, step=step), variables)
            else:
                self._accumulate(grads, variables, apply_fn, step)

    @contextlib.contextmanager
    def _active(self):
        outer = applying()
        _ACTIVE.sync = self
        try:
            yield
        finally:
            _ACTIVE.sync = outer

    def _apply_local_sgd(self, grads, variables, apply_fn, step) -> None:
        import tensorflow as tf

        step = tf.cast(step, tf.int64)
        start = self.schedule.read("local_sgd_start")
        local = step >= start

        def every_step():
            apply_fn(self.reduce(grads), variables)
            return tf.constant(True)

        def local_step():
            has_data = tf.cast(self._batch_size() > 0, tf.float32)
            apply_fn([_weighted(g, has_data) for g in grads], variables)
            return tf.constant(True)

        tf.cond(local, local_step, every_step)
        done = step + 1
        per_epoch = self.schedule.read("updates_per_epoch")
        due = tf.logical_and(local, tf.equal((done - start) % self.options.sync_every, 0))
        epoch_end = tf.logical_and(per_epoch > 0, tf.equal(done % tf.maximum(per_epoch, 1), 0))

        def average():
            self.average_weights(variables)
            return tf.constant(True)

        tf.cond(tf.logical_and(local, tf.logical_or(due, epoch_end)), average, lambda: tf.constant(False))

    def _accumulate(self, grads, variables, apply_fn, step=None) -> None:
        import tensorflow as tf

        count = self._batch_size()
        for acc, g in zip(self._accumulators, grads):
            acc.assign_add(_weighted(tf.convert_to_tensor(g), count))
        self._acc_count.assign_add(count)
        self._passes.assign_add(1)

        def sync_and_apply():
            n = self._acc_count.read_value()
            summed = [a.read_value() / tf.cast(tf.maximum(n, 1e-30), a.dtype) for a in self._accumulators]
            apply_fn(self.reduce(summed, count=n, step=step), variables)
            for a in self._accumulators:
                a.assign(tf.zeros_like(a))
            self._acc_count.assign(0.0)
            return tf.constant(True)

        tf.cond(
            tf.equal(self._passes % self.options.backward_passes_per_step, 0),
            sync_and_apply,
            lambda: tf.constant(False),
        )
