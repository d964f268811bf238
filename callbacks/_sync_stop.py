"""``SyncStop``: make ``model.stop_training`` a collective decision."""

from __future__ import annotations

from hvdagent import _compat, _hvd

from ._base import Callback


def _sync(model) -> None:
    votes = _hvd.allreduce_object(1.0 if model.stop_training else 0.0, op="sum", name="hvdagent_stop")
    model.stop_training = votes > 0


def _may_stop_mid_epoch(user_callbacks) -> bool:
    return any(
        _compat.callback_overrides(cb, "on_train_batch_end") or _compat.callback_overrides(cb, "on_batch_end")
        for cb in user_callbacks
    )


class SyncStop(Callback):
    """If any rank sets ``stop_training``, every rank stops, at the same point.

    Runs last at the end of every epoch (one scalar collective). Construct it
    with the user's callbacks: when one of them may stop in the middle of an
    epoch (it overrides a batch-end hook, like ``TerminateOnNaN``), the
    instance is a :class:`SyncStopEveryBatch`, which also votes after every
    batch. Otherwise it overrides no batch hook, so Keras keeps its
    asynchronous dispatch of training steps.
    """

    def __new__(cls, user_callbacks=()):
        if cls is SyncStop and _may_stop_mid_epoch(user_callbacks):
            cls = SyncStopEveryBatch
        return super().__new__(cls)

    def __init__(self, user_callbacks=()):
        super().__init__()

    def on_epoch_end(self, epoch, logs=None):
        _sync(self.model)


class SyncStopEveryBatch(SyncStop):
    """:class:`SyncStop` that also votes after every training batch."""

    def on_train_batch_end(self, batch, logs=None):
        _sync(self.model)
