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
like a checkpoint, holds the *unscaled* learning rate.
"""

from __future__ import annotations

from typing import Any, List, Optional

from hvdagent import _hvd, _inputs, _validate
from hvdagent._logging import get_logger
from hvdagent._checkpoint import load_arrays, snapshot

log = get_logger(__name__)


class ElasticRun:
    """The hooks behind Horovod's elastic ``State`` for one ``fit`` call."""

    def __init__(self, model, first_epoch: int = 0):
        self.model = model
        self.epoch = first_epoch
        self.samples = 0  # samples of `epoch` already trained on
        self._saved: Optional[List[Any]] = None
        self._saved_pos = (first_epoch, 0)
        self.history: dict = {}  # the logs of every committed epoch (callbacks._commit appends)
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


def fit(agent, epochs: int, callbacks: Optional[list], batches_per_commit: Optional[int], fit_kwargs: dict):
    """Run ``agent.fit`` in Horovod's elastic loop (see the module docstring)."""
    from hvdagent.callbacks._commit import Commit

    _validate.optional(_validate.integer, "batches_per_commit", batches_per_commit, minimum=1)
    run = ElasticRun(agent.model, first_epoch=int(fit_kwargs.pop("initial_epoch", 0)))
    state = _hvd.make_elastic_state(run)
    batch_size = fit_kwargs.get("batch_size") or 32
    numpy_input = fit_kwargs.get("x") is not None and _inputs.kind_of(fit_kwargs["x"]) == "arrays"

    def one_fit(until_epoch, skip):
        commit = Commit(state, run, batches_per_commit, samples_per_batch=batch_size * _hvd.size(), offset=skip)
        return agent._fit(epochs=until_epoch, callbacks=callbacks, initial_epoch=run.epoch, skip=skip,
                          extra_callbacks=[commit], **fit_kwargs)

    def train(state):
        if run.samples and numpy_input and run.epoch < epochs:
            one_fit(run.epoch + 1, run.samples)  # the rest of the interrupted epoch
        history = one_fit(epochs, 0)
        history.history = run.history  # every epoch, as committed (also on a worker that joined late)
        done = len(next(iter(run.history.values()), []))
        history.epoch = list(range(run.epoch - done, run.epoch))
        return history

    return _hvd.elastic_run(train)(state)
