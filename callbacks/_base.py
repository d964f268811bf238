"""Shared plumbing for hvdagent's callbacks (not public).

hvdagent's callbacks subclass Keras 3's ``Callback``. For a tf_keras model the
agent wraps each in :func:`for_model`, a tf_keras ``Callback`` that forwards
every hook, so one implementation serves both generations.
"""

from __future__ import annotations

import functools

import keras

from hvdagent import _compat

Callback = keras.callbacks.Callback

_HOOKS = (
    "on_train_begin", "on_train_end", "on_epoch_begin", "on_epoch_end",
    "on_train_batch_begin", "on_train_batch_end", "on_test_begin", "on_test_end",
    "on_test_batch_begin", "on_test_batch_end", "on_predict_begin", "on_predict_end",
    "on_predict_batch_begin", "on_predict_batch_end",
)


@functools.lru_cache(maxsize=None)
def _forwarder_class():
    import tf_keras

    class Forward(tf_keras.callbacks.Callback):
        """Runs a Keras 3-style hvdagent callback inside tf_keras' ``fit``."""

        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def set_model(self, model):
            super().set_model(model)
            self.inner._model = model

        def set_params(self, params):
            super().set_params(params)
            self.inner.set_params(params)

        def _implements_train_batch_hooks(self):
            return _compat.callback_overrides(self.inner, "on_train_batch_end") or _compat.callback_overrides(
                self.inner, "on_train_batch_begin"
            )

    for hook in _HOOKS:
        setattr(Forward, hook, (lambda name: lambda self, *a, **k: getattr(self.inner, name)(*a, **k))(hook))
    return Forward


def for_model(callback, model):
    """Return ``callback`` in the form ``model.fit`` of its generation accepts."""
    if _compat.generation(model) == _compat.KERAS2 and isinstance(callback, Callback):
        return _forwarder_class()(callback)
    return callback
