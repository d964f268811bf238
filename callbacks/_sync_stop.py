"""``SyncStop``: make ``model.stop_training`` a collective decision."""

from __future__ import annotations

from hvdagent import _compat, _hvd

from ._base import Callback


def _sync(model) -> None:
    votes = _hvd.allreduce_object(1.0 if model.stop_training else 0.0, op="sum", name="hvdagent_stop")
    model.stop_training = votes > 0


class SyncStop(Callback):
    """If any rank sets ``stop_training``, every rank stops, at the same point.

    Runs last at the end of every epoch (one scalar collective). When a user
    callback may stop in the middle of an epoch (it overrides a batch-end
    hook, like ``TerminateOnNaN``), it also runs after every batch.
    """

    def __init__(self, user_callbacks=()):
        super().__init__()
        self.per_batch = any(
            _compat.callback_overrides(cb, "on_train_batch_end") or _compat.callback_overrides(cb, "on_batch_end")
            for cb in user_callbacks
        )

    def on_epoch_end(self, epoch, logs=None):
        _sync(self.model)

    def on_train_batch_end(self, batch, logs=None):
        if self.per_batch:
            _sync(self.model)
