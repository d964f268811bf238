"""``Commit``: commit the elastic state at epoch ends (and every N batches)."""

from __future__ import annotations

from typing import Optional

from ._base import Callback


class Commit(Callback):
    """Records progress and commits (snapshot + host-change check, which
    raises Horovod's ``HostsUpdatedInterrupt`` on every rank when the set of
    workers changes). Runs after every other callback.

    Args:
        state: the Horovod elastic state (see :func:`hvdagent._hvd.make_elastic_state`).
        run: the :class:`hvdagent._elastic.ElasticRun` holding the position.
        batches_per_commit: also commit every this many batches (None: only at epoch ends).
        samples_per_batch: global samples per step, to record the position.
        offset: samples of the first epoch already done before this ``fit``.
    """

    def __new__(cls, state=None, run=None, batches_per_commit: Optional[int] = None, **kwargs):
        if cls is Commit and batches_per_commit:
            cls = CommitEveryBatches  # only then a batch hook (which turns off Keras' async dispatch)
        return super().__new__(cls)

    def __init__(self, state, run, batches_per_commit: Optional[int] = None, samples_per_batch: int = 0, offset: int = 0):
        super().__init__()
        self.state, self.run = state, run
        self.every, self.per_batch, self.offset = batches_per_commit, samples_per_batch, offset

    def on_epoch_end(self, epoch, logs=None):
        for key, value in (logs or {}).items():
            self.run.history.setdefault(key, []).append(value)
        self.run.epoch, self.run.samples, self.offset = epoch + 1, 0, 0
        self.state.commit()


class CommitEveryBatches(Commit):
    """:class:`Commit` that also commits every ``batches_per_commit`` batches."""

    def on_train_batch_end(self, batch, logs=None):
        if (batch + 1) % self.every == 0:
            self.run.samples = self.offset + (batch + 1) * self.per_batch
            self.state.commit()
