"""A callback base that both Keras generations' ``fit`` accept as it is.

Horovod's recipe hands its callbacks straight to ``model.fit``, so the
callbacks with Horovod's names must work in Keras 3's ``fit`` and in
tf_keras' ``fit`` without the agent's forwarder. tf_keras' ``CallbackList``
asks each callback which batch hooks it implements through three private
methods that Keras 3's ``Callback`` lacks; they are answered here the way
tf_keras answers them (a hook counts if the class overrides the default).

Every hvdagent callback also makes the files Keras writes during that ``fit``
plain Keras files when the model was compiled with
``hvd.DistributedOptimizer(opt)`` (see
:func:`hvdagent._sync.optimizer.save_as_plain`): a recipe needs any one of
them, whichever it uses.
"""

from __future__ import annotations

import keras

from hvdagent._sync.optimizer import save_as_plain

Callback = keras.callbacks.Callback

_TRAIN = ("on_batch_begin", "on_batch_end", "on_train_batch_begin", "on_train_batch_end")
_TEST = ("on_test_batch_begin", "on_test_batch_end")
_PREDICT = ("on_predict_batch_begin", "on_predict_batch_end")


class EitherKerasCallback(Callback):
    """A Keras 3 ``Callback`` that tf_keras' ``fit`` also accepts."""

    _supports_tf_logs = False  # tf_keras: hand the logs over as numbers

    def set_model(self, model):
        super().set_model(model)
        save_as_plain(model)

    def _overrides(self, hooks) -> bool:
        return any(not getattr(getattr(self, h), "_is_default", False) for h in hooks)

    def _implements_train_batch_hooks(self) -> bool:
        return self._overrides(_TRAIN)

    def _implements_test_batch_hooks(self) -> bool:
        return self._overrides(_TEST)

    def _implements_predict_batch_hooks(self) -> bool:
        return self._overrides(_PREDICT)
