"""Gradient synchronisation: the options (frozen) and the state (one owner).

:class:`SyncOptions` is a frozen value, validated once, handed down to the
optimizer wrapper. :class:`GradientSync` owns the little state gradient sync
needs (this rank's batch size for the next reduction, accumulators, the
local-SGD start step) and is changed only through its methods.

The averaging is weighted by each rank's batch size. With equal batches (the
normal case) this is exactly Horovod's average. With a short last batch, the
result equals the gradient one process would compute on the concatenated
global batch, and a rank that has run out of data (an empty batch) contributes
nothing: the average is over the samples that exist. The batch size reaches
the sync through :meth:`GradientSync.set_local_count`, which the agent's
training step calls; a custom loop that never calls it gets Horovod's plain
average.

**Local SGD** (``sync_every=N > 1``): after ``local_sgd_start`` updates of
every-step gradient sync, each rank applies its own gradients and every
``N``-th update (and at the last update of every epoch) the trainable weights
are averaged across ranks (Lin et al., 2020, "post-local SGD"). Optimizer
state stays local.
"""

from __future__ import annotations

import dataclasses
from typing import List, Optional

from hvdagent import _hvd, _validate
from hvdagent._lr import LRScale

OPS = ("average", "sum", "adasum")
COMPRESSIONS = (None, "fp16", "bf16")


@dataclasses.dataclass(frozen=True)
class SyncOptions:
    """How gradients are synchronised (see :func:`hvdagent.DistributedOptimizer`)."""

    op: str = "average"
    compression: Optional[str] = None
    backward_passes_per_step: int = 1
    sparse_as_dense: bool = False
    gradient_predivide_factor: float = 1.0
    sync_every: int = 1

    def __post_init__(self):
        _validate.one_of("op", self.op, OPS)
        _validate.one_of("compression", self.compression, COMPRESSIONS)
        _validate.integer("backward_passes_per_step", self.backward_passes_per_step, minimum=1)
        _validate.boolean("sparse_as_dense", self.sparse_as_dense)
        _validate.number("gradient_predivide_factor", self.gradient_predivide_factor, minimum=0, exclusive=True)
        _validate.integer("sync_every", self.sync_every, minimum=1)
        if self.gradient_predivide_factor != 1.0 and self.op != "average":
            raise ValueError(
                "gradient_predivide_factor only applies to op='average'. "
                f"Received: gradient_predivide_factor={self.gradient_predivide_factor!r}, op={self.op!r}"
            )
        if self.sync_every > 1 and (self.backward_passes_per_step > 1 or self.op != "average"):
            raise ValueError(
                "sync_every > 1 (local SGD) averages weights instead of gradients; it cannot be combined with "
                f"backward_passes_per_step > 1 or op={self.op!r}. Received: sync_every={self.sync_every}, "
                f"backward_passes_per_step={self.backward_passes_per_step}, op={self.op!r}"
            )

    def config(self) -> dict:
        return dataclasses.asdict(self)


class GradientSync:
    """The state of gradient synchronisation for one optimizer."""

    def __init__(self, options: SyncOptions):
        self.options = options
        self.timer = None  # see attach_timer
        self._count = None
        self._local_start = None
        self._steps_per_epoch = None
        self._accumulators: List = []
        self._acc_count = None
        self._passes = None

    # --- state -----------------------------------------------------------------
    def build(self, variables) -> None:
        """Create the state variables (once, outside any ``tf.function``)."""
        import tensorflow as tf

        if self._count is not None:
            return
        self._schedule_variables()
        with tf.init_scope():
            self._count = tf.Variable(1.0, trainable=False, name="hvdagent_local_count")
            if self.options.backward_passes_per_step > 1:
                self._accumulators = [
                    tf.Variable(tf.zeros(v.shape, v.dtype), trainable=False, name="hvdagent_acc") for v in variables
                ]
                self._acc_count = tf.Variable(0.0, trainable=False, name="hvdagent_acc_count")
                self._passes = tf.Variable(0, dtype=tf.int64, trainable=False, name="hvdagent_passes")

    def set_local_count(self, n) -> None:
        """Record this rank's batch size for the next gradient reduction."""
        import tensorflow as tf

        if self._count is not None:
            self._count.assign(tf.cast(n, tf.float32))

    def _schedule_variables(self):
        import tensorflow as tf

        if self._local_start is None:
            with tf.init_scope():
                self._local_start = tf.Variable(0, dtype=tf.int64, trainable=False, name="hvdagent_local_sgd_start")
                self._steps_per_epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="hvdagent_steps_per_epoch")
        return self._local_start, self._steps_per_epoch

    def set_schedule(self, local_sgd_start: int, steps_per_epoch: int) -> None:
        """Local SGD: every-step sync before update ``local_sgd_start``; weights
        are also averaged at the last update of every epoch of ``steps_per_epoch``.
        May be called before the optimizer is built."""
        start, per_epoch = self._schedule_variables()
        start.assign(int(local_sgd_start))
        per_epoch.assign(int(steps_per_epoch))

    def attach_timer(self, timer) -> None:
        """Time every reduction with ``timer`` (``begin(tensors) -> mark``,
        ``end(tensors, mark) -> tensors``); used by :class:`hvdagent.SyncProfiler`."""
        self.timer = timer

    # --- reduction ---------------------------------------------------------------
    def reduce(self, grads: list, count=None) -> list:
        """Return the globally reduced ``grads`` (same on every rank)."""
        import tensorflow as tf

        opts = self.options
        if _hvd.size() == 1:
            return list(grads)
        weighted = opts.op == "average"
        if count is None:
            count = self._count if self._count is not None else tf.constant(1.0)
        count = tf.cast(count, tf.float32)
        pre = 1.0 / opts.gradient_predivide_factor

        dense_idx, dense, sparse_idx, sparse = [], [], [], []
        for i, g in enumerate(grads):
            if g is None:
                continue
            if isinstance(g, tf.IndexedSlices) and not opts.sparse_as_dense:
                sparse_idx.append(i)
                sparse.append(g)
                continue
            g = tf.convert_to_tensor(g)
            if weighted:
                g = g * tf.cast(count * pre, g.dtype)
            dense_idx.append(i)
            dense.append(g)
        if weighted:
            dense.append(tf.reshape(count, [1]))
        op = "sum" if weighted else opts.op
        mark = self.timer.begin(dense) if self.timer is not None else None
        reduced = _hvd.allreduce(dense, op=op, compression=opts.compression, name="hvdagent_grads")
        if self.timer is not None:
            reduced = self.timer.end(reduced, mark)

        out = list(grads)
        if weighted:
            total = tf.maximum(reduced.pop()[0], 1e-30)
            post = opts.gradient_predivide_factor / total
        for i, g in zip(dense_idx, reduced):
            out[i] = g * tf.cast(post, g.dtype) if weighted else g
        for k, (i, g) in enumerate(zip(sparse_idx, sparse)):
            if weighted:
                g = tf.IndexedSlices(g.values * tf.cast(count, g.values.dtype), g.indices, g.dense_shape)
            r = _hvd.allreduce_sparse(g, op=op, name=f"hvdagent_sparse_{k}")
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

        averaged = _hvd.allreduce([tf.convert_to_tensor(v) for v in variables], op="average", name="hvdagent_local_sgd")
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
        if opts.sync_every > 1 and _hvd.size() > 1:
            self._apply_local_sgd(grads, variables, apply_fn, step)
        elif opts.backward_passes_per_step == 1:
            apply_fn(self.reduce(grads), variables)
        else:
            self._accumulate(grads, variables, apply_fn)

    def _apply_local_sgd(self, grads, variables, apply_fn, step) -> None:
        import tensorflow as tf

        step = tf.cast(step, tf.int64)
        start = self._local_start.read_value()
        local = step >= start

        def every_step():
            apply_fn(self.reduce(grads), variables)
            return tf.constant(True)

        def local_step():
            apply_fn(grads, variables)
            return tf.constant(True)

        tf.cond(local, local_step, every_step)
        done = step + 1
        per_epoch = self._steps_per_epoch.read_value()
        due = tf.logical_and(local, tf.equal((done - start) % self.options.sync_every, 0))
        epoch_end = tf.logical_and(per_epoch > 0, tf.equal(done % tf.maximum(per_epoch, 1), 0))

        def average():
            self.average_weights(variables)
            return tf.constant(True)

        tf.cond(tf.logical_and(local, tf.logical_or(due, epoch_end)), average, lambda: tf.constant(False))

    def _accumulate(self, grads, variables, apply_fn) -> None:
        import tensorflow as tf

        count = self._count if self._count is not None else tf.constant(1.0)
        for acc, g in zip(self._accumulators, grads):
            acc.assign_add(tf.convert_to_tensor(g) * tf.cast(count, acc.dtype))
        self._acc_count.assign_add(count)
        self._passes.assign_add(1)

        def sync_and_apply():
            n = self._acc_count.read_value()
            summed = [a.read_value() / tf.cast(tf.maximum(n, 1e-30), a.dtype) for a in self._accumulators]
            apply_fn(self.reduce(summed, count=n), variables)
            for a in self._accumulators:
                a.assign(tf.zeros_like(a))
            self._acc_count.assign(0.0)
            return tf.constant(True)

        tf.cond(
            tf.equal(self._passes % self.options.backward_passes_per_step, 0),
            sync_and_apply,
            lambda: tf.constant(False),
        )


@dataclasses.dataclass(frozen=True)
class Parts:
    """What a distributed optimizer carries: its gradient sync and its learning-rate scale."""

    sync: GradientSync
    lr: LRScale

    @classmethod
    def create(cls, options: SyncOptions) -> "Parts":
        return cls(GradientSync(options), LRScale())
