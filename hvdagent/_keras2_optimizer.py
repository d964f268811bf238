"""The Keras 2 (tf_keras) distributed optimizer.

tf_keras optimizers are not built for composition (their distribution logic
lives in ``apply_gradients`` and ``tf.distribute`` merge calls), so the
optimizer object itself is made distributed: its ``apply_gradients`` is
shadowed, on that instance only, by one that reduces the gradients across
ranks first. The class is untouched, so the optimizer still serialises as the
plain Keras class and a saved model loads without hvdagent.
"""

from __future__ import annotations

import types

from hvdagent._sync import GradientSync


def _apply_gradients(self, grads_and_vars, name=None, **kwargs):
    grads_and_vars = list(grads_and_vars)
    if not grads_and_vars:
        return self.iterations
    grads, variables = (list(t) for t in zip(*grads_and_vars))
    with_tf_init_scope_build(self, variables)
    base_apply = type(self).apply_gradients

    def apply_fn(reduced, variables):
        base_apply(self, list(zip(reduced, variables)), name=name, **kwargs)

    self._hvdagent_sync.apply(grads, variables, apply_fn)
    return self.iterations


def with_tf_init_scope_build(optimizer, variables) -> None:
    """Create slot and sync variables outside any ``tf.function``/``tf.cond``."""
    import tensorflow as tf

    with tf.init_scope():
        optimizer.build(variables)
    optimizer._hvdagent_sync.build(variables)


def make_distributed(optimizer, **sync_options):
    """Make a tf_keras optimizer reduce its gradients across ranks; return it."""
    optimizer._hvdagent_sync = GradientSync(**sync_options)
    optimizer.apply_gradients = types.MethodType(_apply_gradients, optimizer)
    return optimizer
