"""``Heartbeat``: feeds the stall watchdog while ``fit`` runs."""

from __future__ import annotations

from hvdagent import _watchdog

from ._base import Callback


class Heartbeat(Callback):
    """Arms the watchdog for the duration of ``fit`` and reports progress at
    every batch (training and validation) and epoch boundary."""

    def __init__(self, timeout: float):
        super().__init__()
        self.watchdog = _watchdog.get(timeout)
        self.step = 0

    def _beat(self, *args, **kwargs):
        self.step += 1
        self.watchdog.beat(self.step)

    on_test_batch_end = on_epoch_begin = on_epoch_end = _beat

    def on_train_batch_begin(self, batch, logs=None):
        self._beat()
        self.watchdog.in_step = True  # the step holds the gradient collectives

    def on_train_batch_end(self, batch, logs=None):
        self.watchdog.in_step = False
        self._beat()

    def on_train_begin(self, logs=None):
        self.watchdog.arm()

    def on_train_end(self, logs=None):
        self.watchdog.disarm()
