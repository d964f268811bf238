"""``Commit``: commit the elastic state at the end of every epoch."""

from __future__ import annotations

from ._base import Callback


class Commit(Callback):
    """Records the completed epoch, commits (snapshot + host-change check,
    which raises Horovod's ``HostsUpdatedInterrupt`` on every rank when the
    set of workers changes). Runs after every other callback."""

    def __init__(self, state, run):
        super().__init__()
        self.state, self.run = state, run

    def on_epoch_end(self, epoch, logs=None):
        for key, value in (logs or {}).items():
            self.run.history.setdefault(key, []).append(value)
        self.run.epoch = epoch + 1
        self.state.commit()
