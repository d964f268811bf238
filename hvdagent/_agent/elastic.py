"""Elastic training: keep training while workers leave or join.

``agent.fit(..., elastic=True)`` under ``horovodrun --min-np 1 --max-np 4
--host-discovery-script ./hosts.sh python train.py``:

* the training state (model weights, optimizer state, the epoch, and the
  samples of it already trained on) is *committed* in memory at the end of
  every epoch, and every ``batches_per_commit`` batches if given;
* when a worker fails, the others restore the last commit; when the host list
  changes, every worker stops at the next commit; then Horovod re-forms the
  job with the new workers, rank 0's committed state is broadcast to all
  (new workers included), the data are re-sharded for the new number of
  ranks, the learning rate is rescaled for it, and training continues with
  the next epoch.

Work since the last commit is redone. With numpy input, a commit inside an
epoch resumes that epoch at the first sample not yet trained on (the epoch's
shuffle order is the same on any number of ranks), re-split over the new
ranks; with a ``tf.data`` input the interrupted epoch starts again. The state,
like a checkpoint, holds the *unscaled* learning rate, and the gradient
compression's state (PowerSGD's warm-start ``Q`` and error buffers, the
latter averaged over the ranks at every commit: every worker, old or new,
resumes with the same, and the residual of a worker that left is kept). With
``batches_per_commit`` each commit exchanges those error buffers once, as
many bytes as the compressed gradients uncompressed.
"""

from __future__ import annotations

from typing import Any, Callable, List, Optional

import keras

from hvdagent import _hvd
from hvdagent._agent.checkpoint import load_arrays, share_sync_state, snapshot
from hvdagent._data import inputs as _inputs
from hvdagent._runtime import validate as _validate
from hvdagent._runtime.log import get_logger

log = get_logger(__name__)


class ElasticRun:
    """The hooks behind Horovod's elastic ``State`` for one ``fit`` call, and
    the only writer of its commit record (position and committed history)."""

    def __init__(self, model, first_epoch: int = 0):
        self.model = model
        self.epoch = first_epoch
        self.samples = 0  # samples of `epoch` already trained on
        self._saved: Optional[List[Any]] = None
        self._saved_pos = (first_epoch, 0)
        self.history: dict = {}  # the logs of every committed epoch
        self._saved_history: dict = {}

    def save(self) -> None:
        self._saved = snapshot(self.model)
        self._saved_pos = (self.epoch, self.samples)
        self._saved_history = {k: list(v) for k, v in self.history.items()}

    def restore(self) -> None:
        if self._saved is not None:
            load_arrays(self.model, self._saved)
            self.epoch, self.samples = self._saved_pos
            self.history = {k: list(v) for k, v in self._saved_history.items()}
            log.info("elastic: restored the commit of epoch %d (%d samples in)", self.epoch, self.samples)

    def sync(self) -> None:
        """Give every worker (new ones too) rank 0's last committed state,
        the history of the committed epochs included (so that ``fit`` returns
        the same ``History`` on a worker that joined late)."""
        if _hvd.rank() == 0 and self._saved is None:
            self.save()
        saved, pos, history = _hvd.broadcast_object((self._saved, self._saved_pos, self._saved_history),
                                                    name="hvdagent_elastic_sync")
        if saved is not None:
            load_arrays(self.model, saved)
        self._saved, self._saved_pos, self._saved_history = saved, pos, history
        self.epoch, self.samples = pos
        self.history = {k: list(v) for k, v in history.items()}
        log.info("elastic: %d worker(s), continuing at epoch %d", _hvd.size(), self.epoch)

    def reset(self) -> None:
        pass

    # --- progress (the Commit callback reports it) ---------------------------------
    def end_epoch(self, epoch: int, logs: Optional[dict]) -> None:
        """Epoch ``epoch`` ended with ``logs``: the next commit resumes at the next epoch."""
        for key, value in (logs or {}).items():
            self.history.setdefault(key, []).append(value)
        self.epoch, self.samples = epoch + 1, 0

    def reached(self, samples: int) -> None:
        """``samples`` of the current epoch are trained on (a commit inside an epoch)."""
        self.samples = samples

    def finish(self, history):
        """``fit``'s ``History`` holding every committed epoch (also on a worker that joined late)."""
        history.history = {k: list(v) for k, v in self.history.items()}
        done = len(next(iter(self.history.values()), []))
        history.epoch = list(range(self.epoch - done, self.epoch))
        return history


def fit(fit_fn: Callable[..., Any], model, epochs: int, callbacks: Optional[list], batches_per_commit: Optional[int],
        fit_kwargs: dict):
    """Run ``fit_fn`` (the agent's training path) in Horovod's elastic loop (see the module docstring).

    ``fit_fn(epochs=, callbacks=, initial_epoch=, skip=, extra_callbacks=, **fit_kwargs)`` trains
    ``model`` and returns its ``History``.
    """
    _validate.optional(_validate.integer, "batches_per_commit", batches_per_commit, minimum=1)
    run = ElasticRun(model, first_epoch=int(fit_kwargs.pop("initial_epoch", 0)))
    state = _hvd.make_elastic_state(run)
    batch_size = fit_kwargs.get("batch_size") or 32
    numpy_input = fit_kwargs.get("x") is not None and _inputs.kind_of(fit_kwargs["x"]) == "arrays"

    def one_fit(until_epoch, skip):
        commit = Commit(state, run, batches_per_commit, samples_per_batch=batch_size * _hvd.size(), offset=skip)
        return fit_fn(epochs=until_epoch, callbacks=callbacks, initial_epoch=run.epoch, skip=skip,
                      extra_callbacks=[commit], **fit_kwargs)

    def train(state):
        if run.samples and numpy_input and run.epoch < epochs:
            one_fit(run.epoch + 1, run.samples)  # the rest of the interrupted epoch
        return run.finish(one_fit(epochs, 0))

    return _hvd.elastic_run(train)(state)


class Commit(keras.callbacks.Callback):
    """Records progress and commits (snapshot + host-change check, which
    raises Horovod's ``HostsUpdatedInterrupt`` on every rank when the set of
    workers changes). Runs after every other callback.

    Args:
        state: the Horovod elastic state (see :func:`hvdagent._hvd.make_elastic_state`).
        run: the :class:`hvdagent._agent.elastic.ElasticRun` holding the position.
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
        self.run.end_epoch(epoch, logs)
        self.offset = 0
        share_sync_state(self.model)  # every rank: the commit then holds every rank's compression state
        self.state.commit()


class CommitEveryBatches(Commit):
    """:class:`Commit` that also commits every ``batches_per_commit`` batches."""

    def on_train_batch_end(self, batch, logs=None):
        if (batch + 1) % self.every == 0:
            self.run.reached(self.offset + (batch + 1) * self.per_batch)
            share_sync_state(self.model)
            self.state.commit()
