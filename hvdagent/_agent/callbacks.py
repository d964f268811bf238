"""The callbacks ``agent.fit`` runs, assembled in one documented order.

1. the watchdog's heartbeat (several ranks): lost peers, and stalls when ``stall_timeout`` is set;
2. checkpoint restore (when ``checkpoint_dir`` holds a checkpoint): before the
   broadcast, so every rank starts from the restored state;
3. the broadcast of rank 0's model and optimizer variables;
4. the sync profiler (``profile=True``);
5. the user's callbacks, in their order; on ranks other than 0 without the
   file writers (``ModelCheckpoint``, ``TensorBoard``, ``CSVLogger``), and
   ``BackupAndRestore`` reading but never writing;
6. the stop vote (``stop_training`` on any rank stops every rank);
7. the replica check at every epoch's end (``check_replicas="epoch"``):
   before the checkpoint, so diverged replicas are never saved;
8. checkpoint save (rank 0 writes; after the user's callbacks, so a learning
   rate changed by ``ReduceLROnPlateau`` is saved);
9. the extra callbacks of the caller (elastic training's commit).

Each is wrapped for the model's Keras generation (tf_keras gets forwarders).
"""

from __future__ import annotations

from typing import Any, Callable, List, Optional, Sequence

import keras

from hvdagent import _compat, _hvd
from hvdagent._sync.broadcast import broadcast_model_state
from hvdagent._sync.optimizer import save_as_plain

__all__ = ["for_fit", "Broadcast", "SyncStop", "ReadOnlyBackup", "ReplicaGuard"]


def rank_filtered(callbacks: Sequence[Any], gen: int) -> List[Any]:
    """Callbacks for this rank: file writers on rank 0 only."""
    if _hvd.rank() == 0:
        return list(callbacks)
    writers = _compat.writer_callback_classes(gen)
    backup = _compat.backup_callback_class(gen)
    out = []
    for cb in callbacks:
        if isinstance(cb, writers):
            continue
        if backup is not None and isinstance(cb, backup):
            out.append(ReadOnlyBackup(cb))
            continue
        out.append(cb)
    return out


def for_fit(model, user_callbacks: Optional[Sequence[Any]], *, stall_timeout: Optional[float],
            checkpointer=None, resume_meta=None, profile: bool = False, extra: Sequence[Any] = (),
            replica_check: Optional[Callable[[str], None]] = None) -> List[Any]:
    """The full, ordered callback list for one ``agent.fit`` (see the module docstring)."""
    from hvdagent._agent.checkpoint import EpochCheckpoint

    user = list(user_callbacks or [])
    out: List[Any] = []
    if _hvd.size() > 1:
        from hvdagent._watchdog.heartbeat import Heartbeat

        out.append(Heartbeat(stall_timeout))
    if resume_meta is not None:
        out.append(EpochCheckpoint(checkpointer, "restore", resume_meta))
    out.append(Broadcast())
    if profile:
        from hvdagent._sync.profiler import SyncProfiler

        out.append(SyncProfiler(advise=True))
    out += rank_filtered(user, _compat.generation(model))
    out.append(SyncStop(user))
    if replica_check is not None:
        out.append(ReplicaGuard(replica_check))
    if checkpointer is not None:
        out.append(EpochCheckpoint(checkpointer, "save"))
    out += list(extra)
    return [_compat.for_model(cb, model) for cb in out]


# --- the agent's own callbacks ------------------------------------------------------


class Broadcast(keras.callbacks.Callback):
    """Rank 0's model and optimizer variables on every rank when ``fit`` begins
    (after a checkpoint restore); saved files hold the plain optimizer."""

    def on_train_begin(self, logs=None):
        save_as_plain(self.model)
        broadcast_model_state(self.model, root_rank=0)


def _sync(model) -> None:
    votes = _hvd.allreduce_object(1.0 if model.stop_training else 0.0, op="sum", name="hvdagent_stop")
    model.stop_training = votes > 0


def _may_stop_mid_epoch(user_callbacks) -> bool:
    return any(
        _compat.callback_overrides(cb, "on_train_batch_end") or _compat.callback_overrides(cb, "on_batch_end")
        for cb in user_callbacks
    )


class SyncStop(keras.callbacks.Callback):
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


class ReplicaGuard(keras.callbacks.Callback):
    """Runs the replica check (``check(when)``) at the end of every epoch, on every rank."""

    def __init__(self, check: Callable[[str], None]):
        super().__init__()
        self.check = check

    def on_epoch_end(self, epoch, logs=None):
        self.check(f"after epoch {epoch + 1}")


class ReadOnlyBackup(keras.callbacks.Callback):
    """Restores like the wrapped ``BackupAndRestore`` (so every rank resumes
    at the same epoch) but never writes or deletes the backup: rank 0 does."""

    def __init__(self, backup):
        super().__init__()
        self.backup = backup

    def set_model(self, model):
        super().set_model(model)
        self.backup.set_model(model)

    def on_train_begin(self, logs=None):
        self.backup.on_train_begin(logs)
