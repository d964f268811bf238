"""Gradient synchronisation shared by both Keras generations' optimizer wrappers.

The averaging is weighted by each rank's batch size. With equal batches (the
normal case) this is exactly Horovod's average. With a short last batch, the
result equals the gradient one process would compute on the concatenated
global batch, and a rank that has run out of data (an empty batch) contributes
nothing: the average is over the samples that exist.

The batch size reaches the wrapper through :meth:`GradientSync.set_local_count`
(``DistributedAgent`` calls it in every train step); a custom training loop that
never calls it gets Horovod's plain average.
"""

from __future__ import annotations

import contextlib
from typing import Iterator, List, Optional

from hvdagent import _hvd

OPS = ("average", "sum", "adasum")
COMPRESSIONS = (None, "fp16", "bf16")


class GradientSync:
    """Options plus the little state (count, accumulators) gradient sync needs."""

    def __init__(
        self,
        op: str = "average",
        compression: Optional[str] = None,
        backward_passes_per_step: int = 1,
        sparse_as_dense: bool = False,
        gradient_predivide_factor: float = 1.0,
    ):
        self.op = op
        self.compression = compression
        self.backward_passes_per_step = int(backward_passes_per_step)
        self.sparse_as_dense = bool(sparse_as_dense)
        self.gradient_predivide_factor = float(gradient_predivide_factor)
        self.enabled = True  # benchmarks switch sync off to measure its cost
        # One allreduce per gradient instead of one grouped allreduce, so each
        # can start as soon as its gradient exists and overlap the rest of the
        # backward pass (measured in docs/benchmarks.md).
        self.overlap = False
        # Set by hvdagent._profiler.SyncProfiler: begin(tensors) -> mark before
        # the reduction, end(tensors, mark) -> tensors after it.
        self.timer = None
        self.lr_multiplier = 1.0  # the learning-rate scale currently applied
        self.lr_base = None  # the unscaled float rate it applies to (hvdagent._lr)
        self._lr_unscale = None  # set by hvdagent._lr: how to undo that scale
        self.local_count = None
        self._accumulators: List = []
        self._acc_count = None
        self._passes = None

    def config(self) -> dict:
        return {
            "op": self.op,
            "compression": self.compression,
            "backward_passes_per_step": self.backward_passes_per_step,
            "sparse_as_dense": self.sparse_as_dense,
            "gradient_predivide_factor": self.gradient_predivide_factor,
        }

    # --- state -----------------------------------------------------------------
    def build(self, variables) -> None:
        import tensorflow as tf

        if self.local_count is not None:
            return
        with tf.init_scope():
            self.local_count = tf.Variable(1.0, trainable=False, name="hvdagent_local_count")
            if self.backward_passes_per_step > 1:
                self._accumulators = [
                    tf.Variable(tf.zeros(v.shape, v.dtype), trainable=False, name="hvdagent_acc")
                    for v in variables
                ]
                self._acc_count = tf.Variable(0.0, trainable=False, name="hvdagent_acc_count")
                self._passes = tf.Variable(0, dtype=tf.int64, trainable=False, name="hvdagent_passes")

    def set_local_count(self, n) -> None:
        """Record this rank's batch size for the next gradient reduction."""
        import tensorflow as tf

        if self.local_count is not None:
            self.local_count.assign(tf.cast(n, tf.float32))

    @contextlib.contextmanager
    def unscaled_learning_rate(self) -> Iterator[None]:
        if self._lr_unscale is None:
            yield
        else:
            with self._lr_unscale():
                yield

    # --- reduction ---------------------------------------------------------------
    def reduce(self, grads: list, count=None) -> list:
        """Return the globally reduced ``grads`` (same on every rank)."""
        import tensorflow as tf

        if not self.enabled or _hvd.size() == 1:
            return list(grads)
        weighted = self.op == "average"
        if count is None:
            count = self.local_count if self.local_count is not None else tf.constant(1.0)
        count = tf.cast(count, tf.float32)
        pre = 1.0 / self.gradient_predivide_factor

        dense_idx, dense, sparse_idx, sparse = [], [], [], []
        for i, g in enumerate(grads):
            if g is None:
                continue
            if isinstance(g, tf.IndexedSlices) and not self.sparse_as_dense:
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
        op = "sum" if weighted else self.op
        mark = self.timer.begin(dense) if self.timer is not None else None
        if self.overlap:
            reduced = [
                _hvd.allreduce([t], op=op, compression=self.compression, name=f"hvdagent_grads.{k}")[0]
                for k, t in enumerate(dense)
            ]
        else:
            reduced = _hvd.allreduce(dense, op=op, compression=self.compression, name="hvdagent_grads")
        if self.timer is not None:
            reduced = self.timer.end(reduced, mark)

        out = list(grads)
        if weighted:
            total = reduced.pop()[0]
            post = self.gradient_predivide_factor / tf.maximum(total, 1e-30)
        for i, g in zip(dense_idx, reduced):
            out[i] = g * tf.cast(post, g.dtype) if weighted else g
        for k, (i, g) in enumerate(zip(sparse_idx, sparse)):
            if weighted:
                g = tf.IndexedSlices(g.values * tf.cast(count, g.values.dtype), g.indices, g.dense_shape)
            r = _hvd.allreduce_sparse(g, op=op, name=f"hvdagent_sparse_{k}")
            if weighted:
                r = tf.IndexedSlices(r.values / tf.cast(tf.maximum(total, 1e-30), r.values.dtype), r.indices, r.dense_shape)
            out[i] = r
        return out

    def apply(self, grads: list, variables: list, apply_fn) -> None:
        """Reduce ``grads`` and call ``apply_fn(grads, variables)``.

        With ``backward_passes_per_step > 1``, gradients are accumulated
        locally (weighted by batch size) and reduced and applied once every
        that many calls.
        """
        import tensorflow as tf

        grads = [tf.zeros_like(v) if g is None else g for g, v in zip(grads, variables)]
        if self.backward_passes_per_step == 1:
            apply_fn(self.reduce(grads), variables)
            return
        count = self.local_count if self.local_count is not None else tf.constant(1.0)
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
            tf.equal(self._passes % self.backward_passes_per_step, 0),
            sync_and_apply,
            lambda: tf.constant(False),
        )
