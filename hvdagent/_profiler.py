"""The sync profiler: per epoch, time in gradient sync against everything else.

``SyncProfiler`` is a Keras callback. It puts two timestamps around the
gradient reduction inside the compiled train step (``tf.timestamp`` ops, no
Python on the hot path, no extra collective) and, at the end of each epoch,
reports:

* ``sync_time``: seconds from "all of this rank's gradients are computed" to
  "all reduced gradients are back". It includes waiting for slower ranks, so
  it is the time this rank loses to synchronisation.
* ``compute_time``: the rest of the epoch's wall time (forward, backward,
  optimizer update, input pipeline, callbacks).
* ``sync_fraction``: ``sync_time / wall time``.

The three values are added to the epoch's ``logs`` (so they reach
``History`` and every later callback) and printed on rank 0 when
``verbose=1``. With one process nothing is reduced: ``sync_time`` is 0.
"""

from __future__ import annotations

import time
from typing import Dict, List

from hvdagent import _hvd
from hvdagent.callbacks._base import Callback

__all__ = ["SyncProfiler"]

LOG_KEYS = ("sync_time", "compute_time", "sync_fraction")


class _SyncTimer:
    """Accumulates, inside the graph, the seconds spent reducing gradients."""

    def __init__(self):
        import tensorflow as tf

        with tf.init_scope():
            self.seconds = tf.Variable(0.0, dtype=tf.float64, trainable=False, name="hvdagent_sync_seconds")
            self.calls = tf.Variable(0, dtype=tf.int64, trainable=False, name="hvdagent_sync_calls")

    def begin(self, tensors):
        """A timestamp taken once every tensor in ``tensors`` exists."""
        import tensorflow as tf

        with tf.control_dependencies(list(tensors)):
            return tf.timestamp()

    def end(self, tensors, mark):
        """Add the time since ``mark`` once every tensor in ``tensors`` exists."""
        import tensorflow as tf

        tensors = list(tensors)
        with tf.control_dependencies(tensors):
            elapsed = tf.timestamp() - mark
        updates = [self.seconds.assign_add(elapsed), self.calls.assign_add(1)]
        with tf.control_dependencies(updates):
            return [tf.identity(t) for t in tensors]

    def reset(self) -> None:
        self.seconds.assign(0.0)
        self.calls.assign(0)


class SyncProfiler(Callback):
    """Report, per epoch, compute time against gradient-sync time.

    Pass it to ``agent.fit(callbacks=[...])`` (or to ``model.fit`` of a model
    compiled with :func:`hvdagent.DistributedOptimizer`). The timestamps are
    compiled into the train step; when the step was already compiled without
    them, it is recompiled once at the start of ``fit``.

    Args:
        verbose: 1 (default) prints one line per epoch on rank 0; 0 prints
            nothing (the values are still in ``logs`` and :attr:`history`).

    Attributes:
        history: one dict per epoch: ``epoch``, ``wall_time``, ``sync_time``,
            ``compute_time``, ``sync_fraction`` and ``syncs`` (reductions run).

    Example:
        >>> import keras, numpy as np, hvdagent
        >>> from hvdagent import SyncProfiler
        >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
        >>> agent = hvdagent.DistributedAgent(model, scale_lr=False)
        >>> agent.compile(keras.optimizers.SGD(0.01), loss="mse")
        >>> profiler = SyncProfiler(verbose=0)
        >>> history = agent.fit(np.ones((8, 4)), np.ones((8, 1)), batch_size=4, epochs=2, verbose=0,
        ...                     callbacks=[profiler])
        >>> sorted(profiler.history[-1])
        ['compute_time', 'epoch', 'sync_fraction', 'sync_time', 'syncs', 'wall_time']
        >>> profiler.history[-1]["sync_time"]   # one process: nothing to reduce
        0.0
    """

    def __init__(self, verbose: int = 1):
        super().__init__()
        if verbose not in (0, 1) or isinstance(verbose, bool):
            raise ValueError(f"verbose must be 0 or 1. Received: verbose={verbose!r}")
        self.verbose = verbose
        self.history: List[Dict[str, float]] = []
        self._timer = None
        self._start = None

    def _sync(self):
        from hvdagent._optimizer import parts_of

        parts = parts_of(getattr(self.model, "optimizer", None))
        if parts is None:
            raise ValueError(
                "SyncProfiler needs a model whose optimizer is an hvdagent.DistributedOptimizer (use it with "
                "DistributedAgent.fit, or compile with hvdagent.DistributedOptimizer). "
                f"Received: model.optimizer={getattr(self.model, 'optimizer', None)!r}"
            )
        return parts.sync

    def on_train_begin(self, logs=None):
        sync = self._sync()
        if isinstance(sync.timer, _SyncTimer):
            self._timer = sync.timer
            return
        self._timer = _SyncTimer()
        sync.attach_timer(self._timer)
        # The train step may have been compiled without the timestamps (an
        # earlier fit); recompile it. Keras reads model.train_function on every
        # step, so replacing it here takes effect for this fit.
        if getattr(self.model, "train_function", None) is not None:
            self.model.make_train_function(force=True)

    def on_epoch_begin(self, epoch, logs=None):
        self._timer.reset()
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        wall = time.perf_counter() - self._start
        sync = float(self._timer.seconds.numpy())
        record = {
            "epoch": int(epoch),
            "wall_time": wall,
            "sync_time": sync,
            "compute_time": max(wall - sync, 0.0),
            "sync_fraction": sync / wall if wall > 0 else 0.0,
            "syncs": int(self._timer.calls.numpy()),
        }
        self.history.append(record)
        if logs is not None:
            logs.update({k: record[k] for k in LOG_KEYS})
        if self.verbose and _hvd.rank() == 0:
            print(format_record(record), flush=True)


def format_record(record: Dict[str, float]) -> str:
    """One line for an epoch's record, as :class:`SyncProfiler` prints it.

    Example:
        >>> format_record({"epoch": 0, "wall_time": 2.0, "sync_time": 0.5, "compute_time": 1.5,
        ...                "sync_fraction": 0.25, "syncs": 100})
        'Epoch 1 sync profile: wall 2.00 s = compute 1.50 s + gradient sync 0.50 s (25.0%, 100 reductions, 5.00 ms each)'
    """
    per = 1000.0 * record["sync_time"] / record["syncs"] if record["syncs"] else 0.0
    return (
        f"Epoch {record['epoch'] + 1} sync profile: wall {record['wall_time']:.2f} s = "
        f"compute {record['compute_time']:.2f} s + gradient sync {record['sync_time']:.2f} s "
        f"({100 * record['sync_fraction']:.1f}%, {record['syncs']} reductions, {per:.2f} ms each)"
    )
