"""The Keras 3 distributed optimizer: wraps an inner optimizer by composition.

Modelled on ``keras.optimizers.LossScaleOptimizer``: the wrapper owns no slot
variables of its own; ``apply`` reduces the gradients across ranks and hands
them to the inner optimizer, whose state (iterations, learning rate, slots) is
the one that counts and the one that is saved.
"""

from __future__ import annotations

import keras

from hvdagent._sync import GradientSync


@keras.saving.register_keras_serializable(package="hvdagent")
class Keras3DistributedOptimizer(keras.optimizers.Optimizer):
    """Keras 3 optimizer that averages gradients across Horovod ranks.

    Build it with :func:`hvdagent.DistributedOptimizer`, which validates the
    arguments.
    """

    def __init__(self, inner_optimizer, name=None, **sync_options):
        super().__init__(learning_rate=0.0, name=name or f"distributed_{inner_optimizer.name}")
        self.inner_optimizer = inner_optimizer
        self._hvdagent_sync = GradientSync(**sync_options)

    @property
    def sync(self) -> GradientSync:
        return self._hvdagent_sync

    def build(self, var_list):
        self.inner_optimizer.build(var_list)
        self._hvdagent_sync.build(var_list)
        super().build(var_list)

    @property
    def variables(self):
        return self._variables + self.inner_optimizer.variables

    def apply(self, grads, trainable_variables=None):
        if trainable_variables is None:
            trainable_variables = self.inner_optimizer._trainable_variables
        trainable_variables = list(trainable_variables)
        if not self.built:
            self.build(trainable_variables)
        self._hvdagent_sync.apply(
            list(grads),
            trainable_variables,
            lambda g, v: self.inner_optimizer.apply(g, v),
        )

    def stateless_apply(self, optimizer_variables, grads, trainable_variables):
        raise NotImplementedError(
            "hvdagent.DistributedOptimizer runs on the TensorFlow backend only "
            "(Horovod's collectives are TensorFlow ops); stateless_apply is a JAX path."
        )

    @property
    def learning_rate(self):
        return self.inner_optimizer.learning_rate

    @learning_rate.setter
    def learning_rate(self, learning_rate):
        self.inner_optimizer.learning_rate = learning_rate

    @property
    def iterations(self):
        return self.inner_optimizer.iterations

    def scale_loss(self, loss):
        return self.inner_optimizer.scale_loss(loss)

    def finalize_variable_values(self, var_list):
        self.inner_optimizer.finalize_variable_values(var_list)

    def get_config(self):
        return {
            "name": self.name,
            "inner_optimizer": keras.saving.serialize_keras_object(self.inner_optimizer),
            **self._hvdagent_sync.config(),
        }

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        inner = keras.saving.deserialize_keras_object(config.pop("inner_optimizer"), custom_objects=custom_objects)
        return cls(inner, **config)
