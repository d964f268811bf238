"""The Keras 2 (tf_keras) distributed optimizer.

tf_keras optimizers are not built for composition (their distribution logic
lives in ``apply_gradients`` and ``tf.distribute`` merge calls), so the
optimizer object itself is made distributed: its ``apply_gradients`` is
shadowed, on that instance only, by one that synchronises the gradients first
(with the learning rate scaled for that update only, see
:mod:`hvdagent._sync.lr`). This is the one instance patch of a user's object in
hvdagent outside :mod:`hvdagent._agent.steps`, and it is here because tf_keras offers
no other hook. The class is untouched, so the optimizer still serialises as the
plain Keras class and a saved model loads without hvdagent.
"""

from __future__ import annotations

import types

from hvdagent._sync.parts import attach, parts_of


def _apply_gradients(self, grads_and_vars, name=None, **kwargs):
    grads_and_vars = list(grads_and_vars)
    if not grads_and_vars:
        return self.iterations
    grads, variables = (list(t) for t in zip(*grads_and_vars))
    build_outside_functions(self, variables)
    base_apply = type(self).apply_gradients

    def apply_fn(reduced, variables):
        base_apply(self, list(zip(reduced, variables)), name=name, **kwargs)

    parts = parts_of(self)
    with parts.lr.applied(self):
        parts.sync.apply(grads, variables, apply_fn, step=self.iterations)
    return self.iterations


def build_outside_functions(optimizer, variables) -> None:
    """Create slot and sync variables outside any ``tf.function``/``tf.cond``."""
    import tensorflow as tf

    with tf.init_scope():
        optimizer.build(variables)
    parts_of(optimizer).build(variables)


def make_distributed(optimizer, parts):
    """Make a tf_keras optimizer synchronise its gradients across ranks; return it."""
    attach(optimizer, parts)
    optimizer.apply_gradients = types.MethodType(_apply_gradients, optimizer)
    return optimizer
