"""Only distributed updates: while the agent traces a step, every optimizer update
must go through a distributed optimizer the model holds.

An optimizer the agent did not make distributed (one a ``train_step`` keeps in
a global or a closure) would update each rank's weights with that rank's own
gradients: the replicas would silently diverge. Keras has no hook for "an
optimizer applied gradients", so for the duration of the agent's call
(:func:`only_distributed_updates`) the method through which every optimizer of
the model's Keras generation updates variables is wrapped on Keras' optimizer
base class (``Optimizer.apply``; tf_keras: ``apply_gradients``), and restored
afterwards. The wrapper checks only while this thread traces the agent's step
(:func:`tracing_step`): an update is allowed inside a gradient sync the step
knows (:func:`hvdagent._sync.gradients.applying`) and is a ``ValueError``
naming the optimizer otherwise. Elsewhere, and in other threads, optimizers
behave as in plain Keras.
"""

from __future__ import annotations

import contextlib
import threading
from typing import Dict

from hvdagent import _compat
from hvdagent._sync.gradients import applying
from hvdagent._sync.optimizer import held_optimizers

__all__ = ["only_distributed_updates", "tracing_step"]

_STEP = threading.local()  # .current: (model, its gradient syncs) while the agent traces the model's step
_HOOKS_LOCK = threading.Lock()
_HOOKS: Dict[int, list] = {}  # generation -> [users, [(class, name, own attribute or None)]]


@contextlib.contextmanager
def tracing_step(model, syncs):
    """Within the block this thread traces ``model``'s step, whose updates go through ``syncs``."""
    outer = getattr(_STEP, "current", None)
    _STEP.current = (model, syncs)
    try:
        yield
    finally:
        _STEP.current = outer


def _checked(original):
    def method(self, *args, **kwargs):
        current = getattr(_STEP, "current", None)
        if current is not None:
            model, syncs = current
            active = applying()
            if active is None or all(active is not s for s in syncs):
                raise ValueError(_undistributed_message(model, self, active is not None))
        return original(self, *args, **kwargs)

    return method


def _undistributed_message(model, optimizer, distributed: bool) -> str:
    held = ", ".join(f"model.{where}" for where, _ in held_optimizers(model)) or "none"
    what = ("is an hvdagent.DistributedOptimizer the model does not hold, so the agent cannot weight its "
            "gradients by this rank's batch size nor scale its learning rate" if distributed else
            "is not distributed: its update would differ on every rank and the replicas would silently diverge")
    return (
        f"{type(model).__name__}'s train_step applies gradients with optimizer {optimizer.name!r} "
        f"({type(optimizer).__name__}), which {what}. The agent distributes the optimizers the model holds as "
        f"attributes (found: {held}): keep this one on the model, plain (e.g. self.my_optimizer = optimizer in "
        "your compile()), before agent.compile(...) or DistributedAgent(model). "
        f"Received: optimizer=<{type(optimizer).__name__} name={optimizer.name}>"
    )


@contextlib.contextmanager
def only_distributed_updates(model):
    """Install, for the block, the check on every optimizer update of ``model``'s Keras generation
    (counted: concurrent agents share one installation)."""
    gen = _compat.generation(model)
    with _HOOKS_LOCK:
        entry = _HOOKS.setdefault(gen, [0, []])
        if entry[0] == 0:
            for cls, name in _compat.optimizer_apply_methods(gen):
                entry[1].append((cls, name, cls.__dict__.get(name)))
                setattr(cls, name, _checked(getattr(cls, name)))
        entry[0] += 1
    try:
        yield
    finally:
        with _HOOKS_LOCK:
            entry[0] -= 1
            if entry[0] == 0:
                for cls, name, own in reversed(entry[1]):
                    if own is None:
                        delattr(cls, name)
                    else:
                        setattr(cls, name, own)
                entry[1].clear()
