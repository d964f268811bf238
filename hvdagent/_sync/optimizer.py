"""Making an optimizer distributed: the core entry point (``wrap``).

:func:`hvdagent.DistributedOptimizer` (Horovod's signature, in
:mod:`hvdagent._horovod_keras.optimizer`) and the agent both come here with
validated :class:`~hvdagent._sync.options.SyncOptions`.
"""

from __future__ import annotations

from typing import Any, Optional

from hvdagent import _compat
from hvdagent._sync.options import SyncOptions
from hvdagent._sync.parts import Parts, is_distributed

__all__ = ["wrap", "save_as_plain"]


def wrap(optimizer: Any, options: SyncOptions, name: Optional[str] = None):
    """Make ``optimizer`` distributed with validated ``options`` (the agent's entry point)."""
    if is_distributed(optimizer):
        raise ValueError(
            "optimizer is already an hvdagent.DistributedOptimizer; wrap the inner optimizer once. "
            f"Received: optimizer=<{type(optimizer).__name__} name={getattr(optimizer, 'name', '?')}>"
        )
    if not _compat.is_optimizer(optimizer):
        raise TypeError(
            "optimizer must be a keras.optimizers.Optimizer (Keras 3) or a tf_keras.optimizers.Optimizer "
            f"(Keras 2) instance. Received: optimizer={optimizer!r} of type {type(optimizer).__name__}"
        )
    gen = _compat.generation(optimizer)
    if "horovod" in type(optimizer).__module__ or (gen == _compat.KERAS2 and type(optimizer).__name__ == "LossScaleOptimizer"):
        raise ValueError(
            f"optimizer {type(optimizer).__name__} cannot be wrapped: pass the plain optimizer "
            f"(Horovod's own wrapper and tf_keras' loss scaling are not supported). Received: optimizer={optimizer!r}"
        )
    parts = Parts.create(options)
    if gen == _compat.KERAS3:
        from hvdagent._sync.keras3_optimizer import Keras3DistributedOptimizer

        return Keras3DistributedOptimizer(optimizer, parts, name=name)
    from hvdagent._sync.keras2_optimizer import make_distributed

    return make_distributed(optimizer, parts)


def save_as_plain(model) -> None:
    """A model compiled with ``hvd.DistributedOptimizer(opt)`` (Horovod's recipe) saves ``opt``.

    Keras 3 writes the optimizer given to ``compile``; pointing that record at
    the wrapped optimizer makes every file ``ModelCheckpoint`` or ``model.save``
    writes a plain Keras file that loads without hvdagent (the wrapper already
    saves exactly the wrapped optimizer's variables). Training is unchanged.

    Keras offers no hook at ``compile`` nor a way for an optimizer to choose
    the class name it is saved under, so this runs wherever hvdagent first
    meets a model the user compiled: every hvdagent callback when ``fit``
    starts (``set_model``), ``hvd.elastic.KerasState``, and the agent. The
    agent and ``hvd.load_model`` compile with the plain optimizer themselves.
    """
    opt = getattr(model, "optimizer", None)
    if is_distributed(opt) and hasattr(opt, "outer_optimizer"):
        _compat.replace_compiled_optimizer(model, opt, opt.outer_optimizer())
