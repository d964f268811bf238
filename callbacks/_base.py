"""Shared plumbing for hvdagent's callbacks (not public).

hvdagent's callbacks subclass Keras 3's ``Callback``. For a tf_keras model the
agent wraps each in :func:`for_model`, a tf_keras ``Callback`` that forwards
every hook, so one implementation serves both generations.
"""

from __future__ import annotations

import keras

from hvdagent import _compat

Callback = keras.callbacks.Callback


def for_model(callback, model):
    """Return ``callback`` in the form ``model.fit`` of its generation accepts."""
    if isinstance(callback, Callback):
        return _compat.callback_for_model(callback, model)
    return callback
