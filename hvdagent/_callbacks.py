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
7. checkpoint save (rank 0 writes; after the user's callbacks, so a learning
   rate changed by ``ReduceLROnPlateau`` is saved);
8. the extra callbacks of the caller (elastic training's commit).

Each is wrapped for the model's Keras generation (tf_keras gets forwarders).
"""

from __future__ import annotations

from typing import Any, List, Optional, Sequence

from hvdagent import _compat, _hvd

__all__ = ["for_fit", "for_model"]


def for_model(callback, model):
    """``callback`` in the form ``model.fit`` of the model's generation accepts."""
    from hvdagent.callbacks._base import for_model as wrap

    return wrap(callback, model)


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
            from hvdagent.callbacks._read_only_backup import ReadOnlyBackup

            out.append(ReadOnlyBackup(cb))
            continue
        out.append(cb)
    return out


def for_fit(model, user_callbacks: Optional[Sequence[Any]], *, stall_timeout: Optional[float],
            checkpointer=None, resume_meta=None, profile: bool = False, extra: Sequence[Any] = ()) -> List[Any]:
    """The full, ordered callback list for one ``agent.fit`` (see the module docstring)."""
    from hvdagent.callbacks import BroadcastGlobalVariablesCallback
    from hvdagent.callbacks._checkpoint import EpochCheckpoint
    from hvdagent.callbacks._sync_stop import SyncStop

    user = list(user_callbacks or [])
    out: List[Any] = []
    if _hvd.size() > 1:
        from hvdagent.callbacks._heartbeat import Heartbeat

        out.append(Heartbeat(stall_timeout))
    if resume_meta is not None:
        out.append(EpochCheckpoint(checkpointer, "restore", resume_meta))
    out.append(BroadcastGlobalVariablesCallback(0))
    if profile:
        from hvdagent._profiler import SyncProfiler

        out.append(SyncProfiler())
    out += rank_filtered(user, _compat.generation(model))
    out.append(SyncStop(user))
    if checkpointer is not None:
        out.append(EpochCheckpoint(checkpointer, "save"))
    out += list(extra)
    return [for_model(cb, model) for cb in out]
