"""``Heartbeat``: connects ``fit`` to the failure watchdog (``hvdagent._watchdog.watchdog``)."""

from __future__ import annotations

import os
import secrets
import socket

import keras

from hvdagent import _hvd
from hvdagent._watchdog import env as _watchdog_env
from hvdagent._watchdog import watchdog as _watchdog


def _iterations(model):
    """The optimizer's update counter, read by the watchdog thread."""
    opt = getattr(model, "optimizer", None)
    var = getattr(opt, "iterations", None)
    if var is None:
        return None
    value = var.numpy() if hasattr(var, "numpy") else var.value.numpy()
    return int(value)


class Heartbeat(keras.callbacks.Callback):
    """Starts a watchdog session on every rank when ``fit`` begins (two small
    collectives: rank 0's heartbeat address, every rank's host name), arms the
    stall clock for the duration of ``fit`` and marks epoch and validation
    boundaries as progress. It overrides no batch hook, so Keras keeps its
    asynchronous dispatch; per-step progress is read from the optimizer's
    iteration counter by the watchdog's thread.

    Args:
        stall_timeout: seconds without progress on any rank before the job
            ends (``None``: no stall check; lost peers are still detected).
    """

    def __init__(self, stall_timeout):
        super().__init__()
        self.stall_timeout = stall_timeout

    def on_train_begin(self, logs=None):
        wd = _watchdog.get()
        rank, size = _hvd.rank(), _hvd.size()
        offer = None
        if rank == 0:
            offer = (secrets.token_hex(8), [(a, wd.port()) for a in _watchdog_env.local_addresses()])
        session, addresses = _hvd.broadcast_object(offer, name="hvdagent_watchdog_session")
        hosts = _hvd.allgather_object(socket.gethostname(), name="hvdagent_watchdog_hosts")
        elastic = os.environ.get("HOROVOD_ELASTIC") == "1"
        wd.start_session(rank, size, session, [tuple(a) for a in addresses], hosts, liveness=not elastic,
                         stall_timeout=self.stall_timeout)
        model = self.model
        wd.arm(lambda: _iterations(model))

    def on_train_end(self, logs=None):
        _watchdog.get().disarm()

    def _beat(self, *args, **kwargs):
        _watchdog.get().beat()

    on_epoch_begin = on_epoch_end = on_test_begin = on_test_end = _beat
