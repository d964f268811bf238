"""Horovod's ``horovod.tensorflow.keras`` names, with Horovod 0.28.1's meaning.

``import hvdagent as hvd`` in place of ``import horovod.tensorflow.keras as
hvd`` keeps a Horovod Keras script working on Keras 3 and tf_keras. This
module holds the reduction ops and compressors, the argument normalisation
of :func:`hvdagent.DistributedOptimizer`, the process queries Horovod adds to
``rank``/``size``; the eager collectives are in ``_horovod_collectives``,
``load_model`` in ``_horovod_load``. Everything reaches Horovod through the seam (``_hvd``).
"""

from __future__ import annotations

from typing import Any, Optional

from hvdagent import _hvd
from hvdagent._hvd import keras_api as _keras_api
from hvdagent._runtime import validate
from hvdagent._sync.powersgd import PowerSGD

__all__ = [
    "Average",
    "Sum",
    "Adasum",
    "Compression",
    "is_initialized",
    "shutdown",
    "cross_rank",
    "cross_size",
    "mpi_built",
    "gloo_built",
    "nccl_built",
    "mpi_enabled",
    "gloo_enabled",
]

# --- reduction ops ---------------------------------------------------------------
# Horovod's are integers; hvdagent's are the strings its own API always took,
# so ``op=hvd.Average`` and ``op="average"`` are the same thing.
Average, Sum, Adasum = _hvd.OPS


# --- compression -------------------------------------------------------------------


class _Compressor:
    """Horovod's compressor interface (``compress`` / ``decompress``)."""

    wire: Optional[str] = None  # what hvdagent's allreduce is told

    @staticmethod
    def compress(tensor):
        return tensor, None

    @staticmethod
    def decompress(tensor, ctx):
        return tensor


class _CastCompressor(_Compressor):
    dtype_name = "float16"

    @classmethod
    def compress(cls, tensor):
        import tensorflow as tf

        if tensor.dtype.is_floating:
            return tf.cast(tensor, cls.dtype_name), tensor.dtype
        return tensor, None

    @staticmethod
    def decompress(tensor, ctx):
        import tensorflow as tf

        return tf.cast(tensor, ctx) if ctx is not None else tensor


class NoneCompressor(_Compressor):
    """Gradients travel in their own type (the default)."""


class FP16Compressor(_CastCompressor):
    """Floating gradients travel as float16."""

    wire = "fp16"


class BF16Compressor(_CastCompressor):
    """Floating gradients travel as bfloat16 and are summed in float32 (hvdagent's own)."""

    wire = "bf16"
    dtype_name = "bfloat16"


class Compression:
    """Gradient compression for :func:`hvdagent.DistributedOptimizer` and :func:`allreduce`.

    ``Compression.none`` (default), ``Compression.fp16`` (as in Horovod) and
    ``Compression.bf16`` (hvdagent's: bfloat16 on the wire, float32 sums).
    The strings ``None``, ``"fp16"`` and ``"bf16"`` mean the same.

    Example:
        >>> import hvdagent as hvd
        >>> hvd.Compression.fp16.wire, hvd.Compression.none.wire
        ('fp16', None)
    """

    none = NoneCompressor
    fp16 = FP16Compressor
    bf16 = BF16Compressor


_HOROVOD_COMPRESSORS = {"NoneCompressor": None, "FP16Compressor": "fp16"}


def compression_name(compression: Any) -> Any:
    """``Compression.x``, ``None``, ``"fp16"`` or ``"bf16"`` -> hvdagent's string
    form; an ``hvdagent.PowerSGD`` passes as it is."""
    if compression is None or isinstance(compression, PowerSGD) or compression in ("fp16", "bf16"):
        return compression
    if isinstance(compression, type) and issubclass(compression, _Compressor):
        return compression.wire
    # Horovod's own Compression.none / .fp16 (classes of horovod.tensorflow.compression).
    name = getattr(compression, "__name__", None)
    module = getattr(compression, "__module__", "") or ""
    if module.startswith("horovod.") and name in _HOROVOD_COMPRESSORS:
        return _HOROVOD_COMPRESSORS[name]
    raise ValueError(
        "compression must be hvdagent.Compression.none, .fp16 or .bf16 (or None, 'fp16', 'bf16'), or an "
        "hvdagent.PowerSGD(...); "
        f"custom compressors are not supported. Received: compression={compression!r}"
    )


def op_name(op: Any, average: Optional[bool] = None, default: str = Average) -> str:
    """``hvd.Average``/``Sum``/``Adasum`` or their strings (and Horovod's
    deprecated ``average=``) -> hvdagent's string form."""
    if average is not None:
        if op is not None:
            raise ValueError(f"pass op or the deprecated average, not both. Received: op={op!r}, average={average!r}")
        return Average if average else Sum
    if op is None:
        return default
    if isinstance(op, str) and op in _hvd.OPS:
        return op
    raise ValueError(f"op must be hvdagent.Average, Sum or Adasum (or 'average', 'sum', 'adasum'). Received: op={op!r}")


# --- DistributedOptimizer arguments -----------------------------------------------


def optimizer_options(
    *,
    name,
    device_dense,
    device_sparse,
    compression,
    sparse_as_dense,
    gradient_predivide_factor,
    op,
    backward_passes_per_step,
    average_aggregated_gradients,
    num_groups,
    groups,
    process_set,
    scale_local_gradients,
) -> dict:
    """Check Horovod's ``DistributedOptimizer`` arguments; return hvdagent's options.

    Returns ``name`` plus the keyword arguments of the internal creation path
    (``op``, ``compression``, ``backward_passes_per_step``, ``sparse_as_dense``,
    ``gradient_predivide_factor``). What hvdagent cannot honour is an error
    naming the argument, never a silent fallback.
    """
    if name is not None and not isinstance(name, str):
        raise TypeError(f"name must be a string or None. Received: name={name!r}")
    validate.boolean("average_aggregated_gradients", average_aggregated_gradients)
    passes_given = isinstance(backward_passes_per_step, int) and not isinstance(backward_passes_per_step, bool)
    if passes_given and backward_passes_per_step > 1 and not average_aggregated_gradients:
        raise ValueError(
            "backward_passes_per_step > 1 needs average_aggregated_gradients=True: hvdagent applies the mean of "
            "the accumulated gradients (Horovod's default False applies their sum; with plain SGD that is the "
            "mean at a learning rate backward_passes_per_step times larger). "
            f"Received: backward_passes_per_step={backward_passes_per_step!r}, average_aggregated_gradients=False"
        )
    return {
        "name": name,
        "backward_passes_per_step": backward_passes_per_step,
        **reduction_options(device_dense=device_dense, device_sparse=device_sparse, compression=compression,
                            sparse_as_dense=sparse_as_dense, gradient_predivide_factor=gradient_predivide_factor,
                            op=op, num_groups=num_groups, groups=groups, process_set=process_set,
                            scale_local_gradients=scale_local_gradients),
    }


def reduction_options(*, device_dense, device_sparse, compression, sparse_as_dense, gradient_predivide_factor, op,
                      num_groups, groups, process_set, scale_local_gradients) -> dict:
    """Check the reduction arguments ``DistributedOptimizer`` and ``DistributedGradientTape`` share.

    Returns ``op``, ``compression``, ``sparse_as_dense`` and
    ``gradient_predivide_factor`` in hvdagent's form (the keyword arguments
    of :class:`~hvdagent._sync.options.SyncOptions`).
    """
    for arg, value in (("device_dense", device_dense), ("device_sparse", device_sparse)):
        if value not in ("", None):
            raise ValueError(
                f"{arg} is not supported: hvdagent reduces gradients where TensorFlow placed them "
                f"(Horovod's CPU or GPU operations, as built). Leave it ''. Received: {arg}={value!r}"
            )
    if groups is None and num_groups not in (0, None):
        groups = num_groups
    if groups not in (None, 0):
        raise ValueError(
            "explicit gradient groups are not supported: hvdagent reduces all gradients of a step in one "
            f"fused allreduce per dtype (the result is the same). Received: groups={groups!r}"
            + (f", num_groups={num_groups!r}" if num_groups else "")
        )
    if process_set is not None and getattr(process_set, "process_set_id", None) != 0:
        raise ValueError(
            "process_set is not supported: gradients are reduced over all ranks (the global process set). "
            f"Received: process_set={process_set!r}"
        )
    validate.boolean("scale_local_gradients", scale_local_gradients)
    return {
        "op": op_name(op),
        "compression": compression_name(compression),
        "sparse_as_dense": sparse_as_dense,
        "gradient_predivide_factor": gradient_predivide_factor,
    }


# --- process queries --------------------------------------------------------------


def is_initialized() -> bool:
    """True once Horovod is initialised in this process (by :func:`hvdagent.init` or any call that needs it)."""
    return _hvd.is_initialized()


def shutdown() -> None:
    """Shut Horovod down in this process (a later call initialises it again)."""
    _hvd.shutdown()


def cross_rank() -> int:
    """This machine's index among the job's machines (0 on one machine)."""
    return _hvd.cross_rank()


def cross_size() -> int:
    """The number of machines in the job (1 on one machine)."""
    return _hvd.cross_size()


def mpi_built() -> bool:
    """Whether Horovod was built with MPI."""
    return _keras_api.built("mpi")


def gloo_built() -> bool:
    """Whether Horovod was built with Gloo."""
    return _keras_api.built("gloo")


def nccl_built() -> bool:
    """Whether Horovod was built with NCCL (GPU collectives)."""
    return _keras_api.built("nccl")


def mpi_enabled() -> bool:
    """Whether this job runs on MPI (``horovodrun --mpi``, ``mpirun``); False without a launcher."""
    return _keras_api.enabled("mpi")


def gloo_enabled() -> bool:
    """Whether this job runs on Gloo (``horovodrun --gloo``); False without a launcher."""
    return _keras_api.enabled("gloo")
