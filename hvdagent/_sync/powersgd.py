"""PowerSGD: low-rank gradient compression with error feedback.

Vogels, Karimireddy and Jaggi, "PowerSGD: Practical Low-Rank Gradient
Compression for Distributed Optimization", NeurIPS 2019. Every gradient of a
matrix-shaped variable ``m x n`` (a kernel; higher ranks are seen as
``prod(shape[:-1]) x shape[-1]``) that is worth it (below) travels as two thin
matrices instead: ``P`` (``m x r``) and ``Q`` (``n x r``), ``r`` the rank. One
step of power iteration, warm-started from the previous step's ``Q``:

1. ``P = M Q`` on every rank; allreduce (sum) ``P``, then orthonormalise its
   columns (QR);
2. ``Q = M^T P``; allreduce (average) ``Q``;
3. the gradient applied is ``P Q^T``, the same on every rank, and each rank
   keeps what it did not send, ``M - P Q^T``, in its *error buffer*, added to
   its next gradient (error feedback: nothing is lost, only delayed).

``M`` is this rank's gradient plus its error buffer. Vectors (biases) and
matrices too small to gain (``(m + n) r * min_compression_rate >= m n``)
travel uncompressed, in the first allreduce. Before ``start_step`` every
gradient travels uncompressed, as in PyTorch's ``powerSGD_hook`` (the
reference for the defaults: rank 1, start after 1,000 steps, minimum
compression rate 2, error feedback and warm start on).

**Batch-size weighting.** hvdagent averages gradients weighted by each rank's
batch size (a rank with an empty batch adds nothing). Here ``M`` is this
rank's gradient scaled by ``size * count / total`` plus its error buffer, so
that the average of the ``M`` over ranks is the weighted average gradient plus
the average error. ``total`` is only known after the first allreduce (it
travels with ``P``), so ``P`` is computed from the unscaled gradient: that
only chooses the subspace of the power iteration, which every rank agrees on
because ``P`` is summed; ``Q``, the result and the error use the exact ``M``.
With equal batches the two are the same. Every rank issues the same two
allreduces whatever its batch holds.

**State.** Per compressed variable: ``Q`` (the same on every rank) and the
error buffer (this rank's). The power iteration is linear in the *average*
``M``, so training continues exactly as long as the ranks' average error is
kept: before its state is saved (checkpoints, elastic commits) every rank
replaces its error buffer with the average over ranks (:meth:`share_errors`),
which changes nothing that follows and makes the saved state the same on
every rank, on any number of ranks.
"""

from __future__ import annotations

import dataclasses
import math
from typing import List, Optional, Tuple

from hvdagent import _hvd
from hvdagent._runtime import validate

__all__ = ["PowerSGD", "PowerSGDState"]


@dataclasses.dataclass(frozen=True)
class PowerSGD:
    """Low-rank gradient compression (PowerSGD) for ``compression=``.

    Use it where the network is slow for the model: it cuts the bytes of a
    step's matrix gradients by ``m n / ((m + n) rank)`` (hundreds of times for
    large kernels) at the cost of two allreduces per step instead of one and
    some computation (about ten passes over the compressed gradients).
    ``python -m hvdagent advise`` predicts whether it wins on your network.

    Args:
        rank: columns of ``P`` and ``Q`` (default 1; try 1, 2, 4: higher is
            closer to the exact gradient and sends more).
        start_step: optimizer steps with uncompressed gradients first
            (default 1000; about 10% of the training is a good start).
        min_compression_rate: compress a matrix only if it shrinks at least
            this many times (default 2.0).
        error_feedback: keep what was not sent and add it to the next
            gradient (default True; without it training is biased).
        warm_start: start each step's power iteration from the previous
            step's ``Q`` (default True); False draws a new random ``Q``.
        seed: seed of the initial (or, without warm start, every) random
            ``Q``, the same on every rank (default 0).

    Example:
        >>> import keras, hvdagent
        >>> model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(256), keras.layers.Dense(10)])
        >>> agent = hvdagent.DistributedAgent(model, compression=hvdagent.PowerSGD(rank=2, start_step=100))
        >>> hvdagent.PowerSGD(rank=2).plan((64, 256))
        (64, 256, 2)
        >>> hvdagent.PowerSGD(rank=0)
        Traceback (most recent call last):
        ...
        ValueError: rank must be an integer >= 1. Received: rank=0
    """

    rank: int = 1
    start_step: int = 1000
    min_compression_rate: float = 2.0
    error_feedback: bool = True
    warm_start: bool = True
    seed: int = 0

    def __post_init__(self):
        validate.integer("rank", self.rank, minimum=1)
        validate.integer("start_step", self.start_step, minimum=0)
        validate.number("min_compression_rate", self.min_compression_rate, minimum=1)
        validate.boolean("error_feedback", self.error_feedback)
        validate.boolean("warm_start", self.warm_start)
        validate.integer("seed", self.seed, minimum=0)

    def plan(self, shape) -> Optional[Tuple[int, int, int]]:
        """``(m, n, r)`` if a gradient of ``shape`` is compressed, else None."""
        shape = [int(d) for d in shape]
        if len(shape) < 2 or 0 in shape:
            return None
        m, n = math.prod(shape[:-1]), shape[-1]
        r = min(m, n, self.rank)
        return (m, n, r) if (m + n) * r * self.min_compression_rate < m * n else None

    def wire_elements(self, shapes) -> Tuple[int, int]:
        """``(first, second)``: elements each rank sends per compressed step in
        the first allreduce (``P``s, uncompressed gradients and the batch
        count) and in the second (``Q``s), for gradients of ``shapes``."""
        first, second = 1, 0
        for shape in shapes:
            p = self.plan(shape)
            if p is None:
                first += math.prod(int(d) for d in shape)
            else:
                first += p[0] * p[2]
                second += p[1] * p[2]
        return first, second

    def config(self) -> dict:
        return dataclasses.asdict(self)


class PowerSGDState:
    """The compressor's state for one optimizer's variables (one owner: the gradient sync)."""

    def __init__(self, config: PowerSGD, variables, tag: str = ""):
        import numpy as np
        import tensorflow as tf

        self.config = config
        self.tag = tag  # the optimizer's suffix of collective names (a model may hold several)
        self.shapes = [tuple(int(d) for d in v.shape) for v in variables]
        self.plans = [config.plan(s) if _is_float32(v) else None for s, v in zip(self.shapes, variables)]
        rng = np.random.RandomState(config.seed)
        self._q, self._e = {}, {}
        with tf.init_scope():
            for i, p in enumerate(self.plans):
                if p is None:
                    continue
                m, n, r = p
                self._q[i] = tf.Variable(rng.standard_normal((n, r)).astype("float32"), trainable=False,
                                         name=f"hvdagent_powersgd_q{self.tag}")
                if config.error_feedback:
                    self._e[i] = tf.Variable(tf.zeros((m, n), tf.float32), trainable=False,
                                             name=f"hvdagent_powersgd_error{self.tag}")

    # --- state ----------------------------------------------------------------------
    def variables(self) -> list:
        """The state to save with the model: every ``Q``, then every error buffer."""
        return [self._q[i] for i in sorted(self._q)] + [self._e[i] for i in sorted(self._e)]

    def share_errors(self) -> None:
        """Replace every rank's error buffers by their average over ranks (eagerly,
        on every rank at the same point): the saved state is then the same on
        every rank, and training continues as it would have (see the module
        docstring)."""
        errors = [self._e[i] for i in sorted(self._e)]
        if not errors or _hvd.size() == 1:
            return
        averaged = _hvd.allreduce([e.read_value() for e in errors], op="average", name=f"hvdagent_powersgd_share{self.tag}")
        for e, a in zip(errors, averaged):
            e.assign(a)

    def compressed(self) -> List[int]:
        """Positions (in the variable list) of the gradients that are compressed."""
        return [i for i, p in enumerate(self.plans) if p is not None]

    # --- one step ---------------------------------------------------------------------
    def reduce(self, dense: list, positions: List[int], count, step, allreduce=None) -> Tuple[list, object]:
        """Average the ``dense`` gradients (at ``positions`` of the variable
        list), weighted by batch size; return ``(averaged, total count)``.

        Two allreduces on every rank, in this order: the ``P``s with the
        uncompressed gradients and the count, then the ``Q``s. ``allreduce``
        (default: the backend's) lets the advisor time the computation alone.
        """
        import tensorflow as tf

        allreduce = allreduce or _hvd.allreduce

        if len(positions) != len(dense) or any(p >= len(self.shapes) for p in positions):
            raise ValueError(f"PowerSGD was built for {len(self.shapes)} variables; the gradients do not match them. "
                             f"Received: {len(dense)} gradients at positions {positions}")
        size = float(_hvd.size())
        count = tf.cast(count, tf.float32)
        sent = tf.cast(count > 0, tf.float32)
        plain, comp = [], []  # (index into dense, position)
        for k, pos in enumerate(positions):
            shape = tuple(dense[k].shape)
            if shape != self.shapes[pos]:
                raise ValueError(f"PowerSGD state of variable {pos} has shape {list(self.shapes[pos])}; its gradient "
                                 f"has shape {list(shape)}. Received: gradient shape {list(shape)}")
            (comp if self.plans[pos] is not None else plain).append((k, pos))
        # P from the unscaled gradient plus the error (see the module docstring).
        # With error feedback the buffer becomes M in place: a pass less.
        matrices, ps = {}, []
        for k, pos in comp:
            m, n, r = self.plans[pos]
            g = tf.reshape(tf.convert_to_tensor(dense[k]), (m, n))
            matrices[pos] = g
            q = self._start_q(pos, step)
            if pos in self._e:
                e = self._e[pos]
                with tf.control_dependencies([tf.cond(sent > 0, lambda: e.assign_add(g), lambda: e.read_value())]):
                    ps.append(tf.matmul(e.read_value(), q))
            else:
                ps.append(sent * tf.matmul(g, q))
        first = [tf.convert_to_tensor(dense[k]) * tf.cast(count, dense[k].dtype) for k, _ in plain]
        first += [tf.reshape(count, [1])] + ps
        reduced = allreduce(first, op="sum", name=f"hvdagent_powersgd_p{self.tag}")
        total = tf.maximum(reduced[len(plain)][0], 1e-30)
        out = [None] * len(dense)
        for (k, _), r in zip(plain, reduced[: len(plain)]):
            out[k] = r / tf.cast(total, r.dtype)
        # M = scale * g + error: the buffer already holds sent * g + error.
        scale = size * count / total
        p_hats, new_qs = {}, []
        for (k, pos), p in zip(comp, reduced[len(plain) + 1:]):
            p_hat, _ = tf.linalg.qr(p)
            p_hats[pos] = p_hat
            g = matrices[pos]
            if pos in self._e:
                e = self._e[pos]
                fix = tf.cond(tf.equal(scale, sent), lambda: e.read_value(), lambda: e.assign_add((scale - sent) * g))
                with tf.control_dependencies([fix]):
                    mat = e.read_value()
            else:
                mat = scale * g
            matrices[pos] = mat
            new_qs.append(tf.transpose(tf.matmul(p_hat, mat, transpose_a=True)))  # M^T P, without transposing M
        new_qs = allreduce(new_qs, op="sum", name=f"hvdagent_powersgd_q{self.tag}") if new_qs else []
        # A non-finite gradient (a loss-scale overflow) reaches every rank through
        # the sums: then Q is kept, the error buffers are cleared, and the step is
        # the optimizer's to skip.
        finite = tf.reduce_all([tf.reduce_all(tf.math.is_finite(t)) for t in new_qs]) if new_qs else None
        for (k, pos), q in zip(comp, new_qs):
            q = q / size
            approx = tf.matmul(p_hats[pos], q, transpose_b=True)
            out[k] = tf.reshape(approx, self.shapes[pos])
            self._update(pos, q, approx, finite)
        return out, total

    def _start_q(self, pos, step):
        import tensorflow as tf

        if self.config.warm_start:
            q = self._q[pos].read_value()
        else:
            seed = tf.stack([tf.constant(self.config.seed, tf.int64), tf.cast(step, tf.int64)])
            q = tf.random.stateless_normal(self._q[pos].shape, seed=seed * 1000003 + pos)
        q, _ = tf.linalg.qr(q)
        return q

    def _update(self, pos, q, approx, finite) -> None:
        """After a step: warm start from ``q``; the error buffer (holding ``M``) loses what was sent."""
        import tensorflow as tf

        def step():
            if self.config.warm_start:
                self._q[pos].assign(q)
            if pos in self._e:
                self._e[pos].assign_sub(approx)
            return tf.constant(True)

        def overflow():
            if pos in self._e:
                self._e[pos].assign(tf.zeros_like(self._e[pos]))
            return tf.constant(False)

        tf.cond(finite, step, overflow)


def _is_float32(variable) -> bool:
    dtype = getattr(variable, "dtype", None)
    return getattr(dtype, "name", dtype) == "float32"
