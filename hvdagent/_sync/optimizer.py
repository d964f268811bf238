"""Making an optimizer distributed: the core entry point (``wrap``), and the
optimizers a model holds (:func:`held_optimizers`).

:func:`hvdagent.DistributedOptimizer` (Horovod's signature, in
:mod:`hvdagent._horovod_keras.optimizer`) and the agent both come here with
validated :class:`~hvdagent._sync.options.SyncOptions`.

**The optimizers of a model** are the ones it holds as attributes: Keras'
``model.optimizer``, and any other a custom ``compile`` keeps (keras-io's GAN:
``self.d_optimizer``, ``self.g_optimizer``), directly or in a list, tuple or
dict. The agent makes each of them distributed, in place, so a custom
``train_step`` that applies them reduces its gradients; everything that
serves every optimizer (the epoch plan, the batch size of a step, the
broadcast, the profiler) asks :func:`held_optimizers` rather than keeping a
list of its own.
"""

from __future__ import annotations

from typing import Any, Callable, List, Optional, Tuple

from hvdagent import _compat
from hvdagent._sync.options import SyncOptions
from hvdagent._sync.parts import Parts, is_distributed

__all__ = ["wrap", "save_as_plain", "held_optimizers", "distribute_held", "distributed_optimizers"]


def wrap(optimizer: Any, options: SyncOptions, name: Optional[str] = None, tag: str = ""):
    """Make ``optimizer`` distributed with validated ``options`` (the agent's entry point).

    ``tag`` names the optimizer's collectives (empty for ``model.optimizer``).
    """
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
    parts = Parts.create(options, tag=tag)
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


# --- the optimizers a model holds ------------------------------------------------


def _slots(model) -> List[Tuple[str, Any, Callable[[Any], None]]]:
    """``(where, optimizer, put)`` for every optimizer held by ``model``'s public
    attributes, ``model.optimizer`` first, then by attribute name (the same
    order on every rank); ``put(new)`` stores a replacement where it was found."""
    out = []
    attrs = vars(model)
    names = (["optimizer"] if "optimizer" in attrs else []) + sorted(
        n for n in attrs if n != "optimizer" and not n.startswith("_"))
    for name in names:
        value = attrs[name]
        if _compat.is_optimizer(value):
            out.append((name, value, lambda new, n=name: setattr(model, n, new)))
        elif isinstance(value, (list, tuple)):
            for i, item in enumerate(value):
                if _compat.is_optimizer(item):
                    out.append((f"{name}[{i}]", item, _put_in_sequence(model, name, i)))
        elif isinstance(value, dict):
            for key in sorted(value, key=str):
                if _compat.is_optimizer(value[key]):
                    out.append((f"{name}[{key!r}]", value[key], lambda new, d=value, k=key: d.__setitem__(k, new)))
    return out


def _put_in_sequence(model, name, index):
    def put(new):
        value = getattr(model, name)
        if isinstance(value, list):
            value[index] = new
        else:
            setattr(model, name, tuple(new if i == index else v for i, v in enumerate(value)))

    return put


def held_optimizers(model) -> List[Tuple[str, Any]]:
    """``(attribute, optimizer)`` for every optimizer ``model`` holds (see the module docstring).

    Example:
        >>> import keras
        >>> class Pair(keras.Model):
        ...     def compile(self, a, b):
        ...         super().compile(optimizer=a)
        ...         self.others = [b]
        >>> m = Pair()
        >>> m.compile(keras.optimizers.SGD(), keras.optimizers.Adam())
        >>> [(where, type(o).__name__) for where, o in held_optimizers(m)]
        [('optimizer', 'SGD'), ('others[0]', 'Adam')]
    """
    return [(where, opt) for where, opt, _ in _slots(model)]


def distribute_held(model, options: SyncOptions) -> List[str]:
    """Make every optimizer ``model`` holds distributed, in place; return where they were.

    One held twice (``self.d_optimizer = self.optimizer``) is wrapped once.
    ``model.optimizer``'s collectives keep the plain names; the others are
    tagged with their attribute.

    Raises:
        ValueError: one of them is already distributed (naming where).
    """
    slots = _slots(model)
    for where, opt, _ in slots:
        if is_distributed(opt):
            raise ValueError(
                f"model.{where} is already an hvdagent.DistributedOptimizer; compile the model with the plain "
                f"optimizer and let the agent distribute it. Received: model.{where}={type(opt).__name__}"
            )
    wrapped = {}
    for where, opt, put in slots:
        if id(opt) not in wrapped:
            tag = "" if where == "optimizer" else "".join(c if c.isalnum() else "_" for c in where).strip("_")
            wrapped[id(opt)] = wrap(opt, options, tag=tag)
        put(wrapped[id(opt)])
    return [where for where, _, _ in slots]


def distributed_optimizers(model) -> List[Any]:
    """The distributed optimizers ``model`` holds, each once, in :func:`held_optimizers` order."""
    seen, out = set(), []
    for _, opt in held_optimizers(model):
        if is_distributed(opt) and id(opt) not in seen:
            seen.add(id(opt))
            out.append(opt)
    return out
