"""``DistributedOptimizer``: an optimizer whose gradients are reduced across ranks."""

from __future__ import annotations

from typing import Any, Optional

from hvdagent import _compat
from hvdagent._sync import Parts, SyncOptions

__all__ = ["DistributedOptimizer", "wrap", "parts_of", "is_distributed", "inner_of"]


def DistributedOptimizer(  # noqa: N802 (a constructor-like factory, as in Horovod)
    optimizer: Any,
    op: str = "average",
    compression: Optional[str] = None,
    backward_passes_per_step: int = 1,
    sparse_as_dense: bool = False,
    gradient_predivide_factor: float = 1.0,
    name: Optional[str] = None,
):
    """Wrap a Keras optimizer so that gradients are reduced across Horovod ranks.

    Use it when you compile a model yourself or write your own training loop;
    :class:`hvdagent.DistributedAgent` calls it for you.

    Args:
        optimizer: a ``keras.optimizers.Optimizer`` (Keras 3) or a
            ``tf_keras.optimizers.Optimizer`` (Keras 2). Keras 3 optimizers are
            wrapped by composition (the result's ``inner_optimizer`` is yours);
            a tf_keras optimizer is made distributed in place and returned.
        op: ``"average"`` (default; weighted by each rank's batch size when
            used through ``DistributedAgent``), ``"sum"``, or ``"adasum"``
            (needs a Horovod built with MPI).
        compression: ``None`` (default), ``"fp16"`` or ``"bf16"``: the type
            floating gradients travel in.
        backward_passes_per_step: accumulate this many batches locally before
            one reduction and update (default 1).
        sparse_as_dense: reduce ``tf.IndexedSlices`` gradients as dense
            tensors (default False: they are gathered).
        gradient_predivide_factor: divide gradients by this before the sum and
            multiply by it after (default 1.0), to keep fp16 sums in range.
        name: name of the Keras 3 wrapper (default ``distributed_<inner name>``).

    Returns:
        The distributed optimizer.

    Raises:
        TypeError: if ``optimizer`` is not a Keras optimizer.
        ValueError: if it is already distributed, or an option is out of range.

    Example:
        >>> import keras, hvdagent
        >>> opt = hvdagent.DistributedOptimizer(keras.optimizers.SGD(0.1))
        >>> opt.inner_optimizer.__class__.__name__
        'SGD'
        >>> hvdagent.DistributedOptimizer(opt)
        Traceback (most recent call last):
        ...
        ValueError: optimizer is already an hvdagent.DistributedOptimizer; wrap the inner optimizer once. Received: optimizer=<Keras3DistributedOptimizer name=...>
    """
    if is_distributed(optimizer):
        raise ValueError(
            "optimizer is already an hvdagent.DistributedOptimizer; wrap the inner optimizer once. "
            f"Received: optimizer=<{type(optimizer).__name__} name={getattr(optimizer, 'name', '?')}>"
        )
    options = SyncOptions(op=op, compression=compression, backward_passes_per_step=backward_passes_per_step,
                          sparse_as_dense=sparse_as_dense, gradient_predivide_factor=gradient_predivide_factor)
    return wrap(optimizer, options, name=name)


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
        from hvdagent._keras3_optimizer import Keras3DistributedOptimizer

        return Keras3DistributedOptimizer(optimizer, parts, name=name)
    from hvdagent._keras2_optimizer import make_distributed

    return make_distributed(optimizer, parts)


def parts_of(optimizer: Any) -> Optional[Parts]:
    """The :class:`Parts` of a distributed optimizer, else None (the one accessor)."""
    return getattr(optimizer, "_hvdagent", None) if optimizer is not None else None


def is_distributed(optimizer: Any) -> bool:
    """True if ``optimizer`` came from :func:`DistributedOptimizer`."""
    return parts_of(optimizer) is not None


def inner_of(optimizer: Any):
    """The user's optimizer inside a distributed one (itself otherwise)."""
    return getattr(optimizer, "inner_optimizer", optimizer) if is_distributed(optimizer) else optimizer
