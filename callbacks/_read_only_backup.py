"""``ReadOnlyBackup``: ``BackupAndRestore`` on ranks other than 0."""

from __future__ import annotations

from ._base import Callback


class ReadOnlyBackup(Callback):
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
