"""Horovod's runner and elastic machinery, for the parts of hvdagent that need them:
the launcher's key-value store (stall reports), elastic training, the doctor."""

from __future__ import annotations

import os
from typing import Any

__all__ = ["kv_put", "kv_get", "make_elastic_state", "elastic_run", "probe"]


def probe():
    """For the doctor: ``(horovod version or None, horovod.tensorflow or None, error or None)``.

    Never raises: a missing or broken Horovod is what the doctor reports.
    """
    from hvdagent._hvd import horovod_backend
    from hvdagent._hvd.errors import HorovodUnavailableError

    try:
        import horovod
    except ImportError as err:
        return None, None, err
    try:
        return horovod.__version__, horovod_backend.import_horovod(), None
    except HorovodUnavailableError as err:
        return horovod.__version__, None, err.__cause__ or horovod_backend.import_error() or err


# --- the launcher's key-value store (heartbeats for stall reports) -------------

def _kv_address():
    addr = os.environ.get("HOROVOD_GLOO_RENDEZVOUS_ADDR")
    port = os.environ.get("HOROVOD_GLOO_RENDEZVOUS_PORT")
    return (addr, port) if addr and port else None


def kv_put(key: str, value: Any) -> bool:
    """Store ``value`` under ``key`` in horovodrun's Gloo rendezvous store.

    Returns False (and stores nothing) when the job was not started by a Gloo
    launcher or the store is gone; never raises.
    """
    where = _kv_address()
    if where is None:
        return False
    try:
        from horovod.runner.http.http_client import put_data_into_kvstore

        put_data_into_kvstore(where[0], where[1], "hvdagent", key, value)
        return True
    except Exception:  # noqa: BLE001 (best effort: the store is a diagnostic aid)
        return False


def kv_get(key: str) -> Any:
    """Read ``key`` back (None when absent or unavailable); never raises."""
    where = _kv_address()
    if where is None:
        return None
    try:
        from horovod.runner.http.http_client import read_data_from_kvstore

        return read_data_from_kvstore(where[0], where[1], "hvdagent", key)
    except Exception:  # noqa: BLE001
        return None


# --- elastic training (horovodrun --min-np/--max-np) --------------------------

def make_elastic_state(hooks):
    """A Horovod elastic ``State`` whose save/restore/sync/reset call ``hooks``.

    The class is defined inside this function only to keep the Horovod import
    lazy; it is the same small adapter every time.
    """
    from horovod.common.elastic import State

    from hvdagent import _hvd

    class HookState(State):
        def __init__(self):
            super().__init__(bcast_object=_hvd.broadcast_object, get_rank=_hvd.rank)

        def save(self):
            hooks.save()

        def restore(self):
            hooks.restore()

        def sync(self):
            hooks.sync()

        def reset(self):
            hooks.reset()

    return HookState()


def elastic_run(func):
    """Horovod's elastic retry loop around ``func(state, ...)``.

    Collective failures surface from Keras as TensorFlow errors; they are
    turned into Horovod's ``HorovodInternalError`` so that the loop restores
    the last commit, re-initialises Horovod with the new set of workers, and
    calls ``func`` again.
    """
    from horovod.common.elastic import run_fn
    from horovod.common.exceptions import HorovodInternalError

    import tensorflow as tf

    def wrapper(state, *args, **kwargs):
        try:
            return func(state, *args, **kwargs)
        except (tf.errors.UnknownError, tf.errors.InternalError, tf.errors.AbortedError) as err:
            if "Horovod" in str(err):
                raise HorovodInternalError(err) from err
            raise

    def reset():
        # The same initialisation as at start-up (with its collective checks),
        # so workers that re-initialise and workers that join stay in step.
        from hvdagent import _hvd

        _hvd.backend().restart()

    return run_fn(wrapper, reset)
