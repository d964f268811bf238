"""Elastic training: keep training while workers leave or join.

``agent.fit(..., elastic=True)`` under ``horovodrun --min-np 1 --max-np 4
--host-discovery-script ./hosts.sh python train.py``:

* the training state (model weights, optimizer state, the number of completed
  epochs) is *committed* in memory at the end of every epoch;
* when a worker fails, the others restore the last commit; when the host list
  changes, every worker stops at the next commit; then Horovod re-forms the
  job with the new workers, rank 0's committed state is broadcast to all
  (new workers included), the data are re-sharded for the new number of
  ranks, the learning rate is rescaled for it, and training continues with
  the next epoch.

Work since the last commit (part of an epoch) is redone. The state, like a
checkpoint, holds the *unscaled* learning rate.
"""

from __future__ import annotations

from typing import Any, List, Optional

from hvdagent import _hvd
from hvdagent._logging import get_logger
from hvdagent.checkpoint import load_arrays, snapshot

log = get_logger(__name__)


class ElasticRun:
    """The hooks behind Horovod's elastic ``State`` for one ``fit`` call."""

    def __init__(self, model, first_epoch: int = 0):
        self.model = model
        self.epoch = first_epoch
        self._saved: Optional[List[Any]] = None
        self._saved_epoch = first_epoch
        self.history: dict = {}

    def save(self) -> None:
        self._saved = snapshot(self.model)
        self._saved_epoch = self.epoch

    def restore(self) -> None:
        if self._saved is not None:
            load_arrays(self.model, self._saved)
            self.epoch = self._saved_epoch
            log.info("elastic: restored the commit of epoch %d", self.epoch)

    def sync(self) -> None:
        """Give every worker (new ones too) rank 0's last committed state."""
        if _hvd.rank() == 0 and self._saved is None:
            self.save()
        saved, epoch = _hvd.broadcast_object((self._saved, self._saved_epoch), name="hvdagent_elastic_sync")
        if saved is not None:
            load_arrays(self.model, saved)
        self._saved, self._saved_epoch, self.epoch = saved, epoch, epoch
        log.info("elastic: %d worker(s), continuing at epoch %d", _hvd.size(), self.epoch)

    def reset(self) -> None:
        pass


def fit(agent, epochs: int, callbacks: Optional[list], fit_kwargs: dict):
    """Run ``agent.fit`` in Horovod's elastic loop (see the module docstring)."""
    from hvdagent.callbacks._commit import Commit

    run = ElasticRun(agent.model, first_epoch=int(fit_kwargs.pop("initial_epoch", 0)))
    state = _hvd.make_elastic_state(run)

    def train(state):
        history = agent.fit(epochs=epochs, callbacks=list(callbacks or []) + [Commit(state, run)],
                            initial_epoch=run.epoch, elastic=False, **fit_kwargs)
        history.history = run.history  # every epoch of every attempt, as committed
        return history

    return _hvd.elastic_run(train)(state)
