"""``hvdagent.DistributedOptimizer``: Horovod's signature over hvdagent's gradient sync."""

from __future__ import annotations

from typing import Any, Optional

from hvdagent._horovod_keras.api import Average, Compression, optimizer_options
from hvdagent._sync.optimizer import wrap
from hvdagent._sync.options import SyncOptions

__all__ = ["DistributedOptimizer"]


def DistributedOptimizer(  # noqa: N802 (a constructor-like factory, as in Horovod)
    optimizer: Any,
    name: Optional[str] = None,
    device_dense: str = "",
    device_sparse: str = "",
    compression: Any = Compression.none,
    sparse_as_dense: bool = False,
    gradient_predivide_factor: float = 1.0,
    op: Any = Average,
    backward_passes_per_step: int = 1,
    average_aggregated_gradients: bool = False,
    num_groups: int = 0,
    groups: Any = None,
    process_set: Any = None,
    scale_local_gradients: bool = True,
):
    """Wrap a Keras optimizer so that gradients are reduced across Horovod ranks.

    Horovod's ``hvd.DistributedOptimizer``, same signature, on Keras 3 and
    tf_keras. Use it when you compile a model yourself or write your own
    training loop; :class:`hvdagent.DistributedAgent` calls it for you.

    Args:
        optimizer: a ``keras.optimizers.Optimizer`` (Keras 3) or a
            ``tf_keras.optimizers.Optimizer`` (Keras 2). Keras 3 optimizers are
            wrapped by composition (the result's ``inner_optimizer`` is yours);
            a tf_keras optimizer is made distributed in place and returned.
        name: name of the Keras 3 wrapper (default ``distributed_<inner name>``;
            a tf_keras optimizer keeps its own).
        device_dense: Horovod's device placement; only ``''`` (default).
        device_sparse: likewise.
        compression: ``hvdagent.Compression.none`` (default; or ``None``),
            ``.fp16`` / ``"fp16"`` or ``.bf16`` / ``"bf16"``: the type floating
            gradients travel in; or ``hvdagent.PowerSGD(...)`` (hvdagent's:
            low-rank compression with error feedback).
        sparse_as_dense: reduce ``tf.IndexedSlices`` gradients as dense
            tensors (default False: they are gathered).
        gradient_predivide_factor: divide gradients by this before the sum and
            multiply by it after (default 1.0), to keep fp16 sums in range;
            only with ``op=Average``.
        op: ``hvdagent.Average`` / ``"average"`` (default; weighted by each
            rank's batch size under ``DistributedAgent``), ``Sum`` / ``"sum"``,
            or ``Adasum`` / ``"adasum"`` (needs a Horovod built with MPI).
        backward_passes_per_step: accumulate this many batches locally before
            one reduction and update (default 1).
        average_aggregated_gradients: with ``backward_passes_per_step > 1``,
            apply the mean of the accumulated gradients. Must be True then:
            Horovod's default (False: their sum) is not supported.
        num_groups: Horovod's deprecated name for ``groups``; only 0.
        groups: explicit allreduce groups; only None (hvdagent fuses every
            gradient of a step into one allreduce per dtype).
        process_set: only None or Horovod's global process set.
        scale_local_gradients: accepted for Horovod's signature (hvdagent has
            no worker-local variables, so there is nothing to scale).

    Returns:
        The distributed optimizer.

    Raises:
        TypeError: if ``optimizer`` is not a Keras optimizer.
        ValueError: if it is already distributed, or an option is out of
            range or not supported (the message names it).

    Example:
        >>> import keras, hvdagent as hvd
        >>> opt = hvd.DistributedOptimizer(keras.optimizers.SGD(0.1), compression=hvd.Compression.fp16, op=hvd.Average)
        >>> opt.inner_optimizer.__class__.__name__
        'SGD'
        >>> hvd.DistributedOptimizer(opt)
        Traceback (most recent call last):
        ...
        ValueError: optimizer is already an hvdagent.DistributedOptimizer; wrap the inner optimizer once. Received: optimizer=<Keras3DistributedOptimizer name=...>
    """
    options = optimizer_options(
        name=name,
        device_dense=device_dense,
        device_sparse=device_sparse,
        compression=compression,
        sparse_as_dense=sparse_as_dense,
        gradient_predivide_factor=gradient_predivide_factor,
        op=op,
        backward_passes_per_step=backward_passes_per_step,
        average_aggregated_gradients=average_aggregated_gradients,
        num_groups=num_groups,
        groups=groups,
        process_set=process_set,
        scale_local_gradients=scale_local_gradients,
    )
    name = options.pop("name")
    return wrap(optimizer, SyncOptions(**options), name=name)
