"""The sync profiler: per epoch, time in gradient sync against everything else.

``SyncProfiler`` is a Keras callback. The gradient sync times every
reduction inside the compiled train step (two ``tf.timestamp`` ops, no
Python on the hot path, no extra collective); at the end of each epoch the
profiler reads that time and reports:

* ``sync_time``: seconds from "all of this rank's gradients are computed" to
  "all reduced gradients are back". It includes waiting for slower ranks, so
  it is the time this rank loses to synchronisation.
* ``compute_time``: the rest of the epoch's wall time (forward, backward,
  optimizer update, input pipeline, callbacks).
* ``sync_fraction``: ``sync_time / wall time``.

The three values are added to the epoch's ``logs`` (so they reach
``History`` and every later callback) and printed on rank 0 when
``verbose=1``. With one process nothing is reduced: ``sync_time`` is 0.

With ``advise=True`` (what ``agent.fit(..., profile=True)`` uses) the end of
training also measures the link between the ranks and predicts which way of
synchronising gradients would win on it for this model
(:mod:`hvdagent._sync.advisor`; the same as ``python -m hvdagent advise``).
"""

from __future__ import annotations

import time
from typing import Dict, List

import keras

from hvdagent import _hvd
from hvdagent._sync.optimizer import distributed_optimizers
from hvdagent._sync.parts import parts_of
from hvdagent._runtime import validate

__all__ = ["SyncProfiler"]

LOG_KEYS = ("sync_time", "compute_time", "sync_fraction")


class SyncProfiler(keras.callbacks.Callback):
    """Report, per epoch, compute time against gradient-sync time.

    Pass it to ``agent.fit(callbacks=[...])`` (or to ``model.fit`` of a model
    compiled with :func:`hvdagent.DistributedOptimizer`). It reads the time the
    optimizer's gradient sync measures inside the train step
    (:meth:`hvdagent._sync.gradients.GradientSync.timing`): nothing is
    recompiled and nothing is added to the step.

    Args:
        verbose: 1 (default) prints one line per epoch on rank 0; 0 prints
            nothing (the values are still in ``logs`` and :attr:`history`).
        advise: at the end of training, measure the link between the ranks
            and print on rank 0 which way of synchronising gradients is
            predicted to win (default False; with several ranks only).

    Attributes:
        history: one dict per epoch: ``epoch``, ``wall_time``, ``sync_time``,
            ``compute_time``, ``sync_fraction``, ``syncs`` (reductions run)
            and ``steps`` (optimizer updates).
        advice: with ``advise=True``, the prediction (a dict: every method's
            row, ``best`` and ``verdict``); None before the end of training.

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
        ['compute_time', 'epoch', 'steps', 'sync_fraction', 'sync_time', 'syncs', 'wall_time']
        >>> profiler.history[-1]["sync_time"]   # one process: nothing to reduce
        0.0
    """

    def __init__(self, verbose: int = 1, advise: bool = False):
        super().__init__()
        validate.one_of("verbose", validate.integer("verbose", verbose, minimum=0), (0, 1))
        self.verbose = verbose
        self.advise = validate.boolean("advise", advise)
        self.advice = None
        self._steps0 = 0
        self.history: List[Dict[str, float]] = []
        self._syncs = []
        self._start = None

    def _syncs_of_model(self):
        """The gradient syncs of every distributed optimizer the model holds (a GAN has two)."""
        parts = parts_of(getattr(self.model, "optimizer", None))
        if parts is None:
            raise ValueError(
                "SyncProfiler needs a model whose optimizer is an hvdagent.DistributedOptimizer (use it with "
                "DistributedAgent.fit, or compile with hvdagent.DistributedOptimizer). "
                f"Received: model.optimizer={getattr(self.model, 'optimizer', None)!r}"
            )
        return [parts_of(opt).sync for opt in distributed_optimizers(self.model)]

    def on_train_begin(self, logs=None):
        self._syncs = self._syncs_of_model()

    def _timing(self):
        timings = [sync.timing(reset=True) for sync in self._syncs]
        return sum(t[0] for t in timings), sum(t[1] for t in timings)

    def on_epoch_begin(self, epoch, logs=None):
        self._timing()
        self._steps0 = self._steps()
        self._start = time.perf_counter()

    def _steps(self) -> int:
        return int(self.model.optimizer.iterations.numpy())

    def on_epoch_end(self, epoch, logs=None):
        wall = time.perf_counter() - self._start
        sync, calls = self._timing()
        record = {
            "epoch": int(epoch),
            "wall_time": wall,
            "sync_time": sync,
            "compute_time": max(wall - sync, 0.0),
            "sync_fraction": sync / wall if wall > 0 else 0.0,
            "syncs": calls,
            "steps": self._steps() - self._steps0,
        }
        self.history.append(record)
        if logs is not None:
            logs.update({k: record[k] for k in LOG_KEYS})
        if self.verbose and _hvd.rank() == 0:
            print(format_record(record), flush=True)

    def on_train_end(self, logs=None):
        if not self.advise or _hvd.size() < 2:
            return
        from hvdagent._sync import advisor

        # Compute per step without sync: the epochs after the first (which traces the step), if any.
        timed = [r for r in self.history[1:] if r["steps"]] or [r for r in self.history if r["steps"]]
        if not timed:
            return
        compute = sum(r["compute_time"] for r in timed) / sum(r["steps"] for r in timed)
        self.advice = advisor.after_fit(self.model, compute)
        if _hvd.rank() == 0:
            print(advisor.render(self.advice), flush=True)


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
