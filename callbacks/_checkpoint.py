"""``EpochCheckpoint``: restore at the start of ``fit``, save after every epoch."""

from __future__ import annotations

from hvdagent import _watchdog_pause

from ._base import Callback


class EpochCheckpoint(Callback):
    """Drives a :class:`hvdagent._checkpoint.Checkpointer` for ``agent.fit``.

    ``on_train_begin`` restores ``meta`` (every rank reads the same file),
    before the broadcast and learning-rate callbacks run; ``on_epoch_end``
    saves on rank 0, after every other callback (so a learning rate changed by
    ``ReduceLROnPlateau`` is saved). Use two instances with ``role``.
    """

    def __init__(self, checkpointer, role: str, meta=None):
        super().__init__()
        self.checkpointer, self.role, self.meta = checkpointer, role, meta

    def on_train_begin(self, logs=None):
        if self.role == "restore" and self.meta is not None:
            self.checkpointer.restore(self.model, self.meta)

    def on_epoch_end(self, epoch, logs=None):
        if self.role == "save":
            with _watchdog_pause.paused("checkpoint"):
                self.checkpointer.save(self.model, epoch + 1)
