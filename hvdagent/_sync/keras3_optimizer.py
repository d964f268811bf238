"""The Keras 3 distributed optimizer: wraps an inner optimizer by composition.

Modelled on ``keras.optimizers.LossScaleOptimizer``: the wrapper owns no state
of its own that Keras saves. ``apply`` synchronises the gradients across ranks
and hands them to the inner optimizer (with the learning rate scaled for that
update only, see :mod:`hvdagent._sync.lr`), whose state (iterations, learning rate,
slots) is the one that counts. The wrapper saves and loads exactly the inner
optimizer's variables, so a file written while it is in use has the layout of
the plain inner optimizer. The inner optimizer may be a ``LossScaleOptimizer``
(``mixed_float16``): gradients are then reduced while still scaled, so every
rank sees the same non-finite values and skips the same updates.
"""

from __future__ import annotations

import keras

from hvdagent import _compat
from hvdagent._sync.options import SyncOptions
from hvdagent._sync.parts import Parts, attach, parts_of


@keras.saving.register_keras_serializable(package="hvdagent")
class Keras3DistributedOptimizer(keras.optimizers.Optimizer):
    """Keras 3 optimizer that averages gradients across Horovod ranks.

    Build it with :func:`hvdagent.DistributedOptimizer`, which validates the
    arguments.
    """

    def __init__(self, inner_optimizer, parts, name=None):
        super().__init__(learning_rate=0.0, name=name or f"distributed_{inner_optimizer.name}")
        # Saved files must have the layout of the optimizer Keras was given:
        # the wrapper writes `outer`'s variables where the optimizer goes, and
        # Keras walks on into `inner_optimizer`. For a LossScaleOptimizer that
        # is its own inner optimizer, exactly as in a file without hvdagent.
        self._outer = _Unsaved(inner_optimizer)
        self.inner_optimizer = getattr(inner_optimizer, "inner_optimizer", inner_optimizer)
        attach(self, parts)

    def outer_optimizer(self):
        """The optimizer the wrapper applies through (the user's, or Keras' LossScaleOptimizer around it).

        A method, not an attribute: Keras' saving walk must not see it.
        """
        return self._outer.value

    def build(self, var_list):
        self.outer_optimizer().build(var_list)
        parts_of(self).build(var_list)
        super().build(var_list)

    @property
    def variables(self):
        return self.outer_optimizer().variables

    def save_own_variables(self, store):
        self.outer_optimizer().save_own_variables(store)

    def load_own_variables(self, store):
        self.outer_optimizer().load_own_variables(store)

    def apply(self, grads, trainable_variables=None):
        if trainable_variables is None:
            trainable_variables = _compat.optimizer_trainable_variables(self.outer_optimizer())
        trainable_variables = list(trainable_variables)
        if not self.built:
            self.build(trainable_variables)
        parts = parts_of(self)
        step = _compat.iterations(self.inner_optimizer)
        with parts.lr.applied(self.inner_optimizer):
            parts.sync.apply(list(grads), trainable_variables, self.outer_optimizer().apply, step=step)

    def stateless_apply(self, optimizer_variables, grads, trainable_variables):
        raise NotImplementedError(
            "hvdagent.DistributedOptimizer runs on the TensorFlow backend only "
            "(Horovod's collectives are TensorFlow ops); stateless_apply is a JAX path."
        )

    @property
    def learning_rate(self):
        return self.outer_optimizer().learning_rate

    @learning_rate.setter
    def learning_rate(self, learning_rate):
        self.outer_optimizer().learning_rate = learning_rate

    @property
    def iterations(self):
        return self.outer_optimizer().iterations

    def scale_loss(self, loss):
        return self.outer_optimizer().scale_loss(loss)

    def finalize_variable_values(self, var_list):
        self.outer_optimizer().finalize_variable_values(var_list)

    def get_config(self):
        return {
            "name": self.name,
            "inner_optimizer": keras.saving.serialize_keras_object(self.outer_optimizer()),
            **parts_of(self).sync.options.config(),
        }

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        inner = keras.saving.deserialize_keras_object(config.pop("inner_optimizer"), custom_objects=custom_objects)
        name = config.pop("name", None)
        return cls(inner, Parts.create(SyncOptions.from_config(config)), name=name)


class _Unsaved:
    """Holds an object out of the sight of Keras' saving walk."""

    __slots__ = ("value",)

    def __init__(self, value):
        self.value = value
