"""Horovod's eager collectives for ``import hvdagent as hvd`` (``hvd.allreduce``, ...).

The tensor and object collectives of ``horovod.tensorflow.keras``, with
Horovod's signatures; every call goes through the seam (``_hvd``). With one
process each returns its input.
"""

from __future__ import annotations

from typing import Any, List, Optional

from hvdagent import _hvd
from hvdagent._hvd import keras_api as _keras_api
from hvdagent._horovod_keras.api import Compression, compression_name, op_name
from hvdagent._runtime import validate

__all__ = [
    "allreduce",
    "allgather",
    "broadcast",
    "broadcast_object",
    "allgather_object",
    "broadcast_variables",
    "broadcast_global_variables",
]


# --- eager collectives -------------------------------------------------------------


def allreduce(
    value: Any,
    name: Optional[str] = None,
    average: Optional[bool] = None,
    prescale_factor: float = 1.0,
    postscale_factor: float = 1.0,
    op: Any = None,
    compression: Any = Compression.none,
):
    """Reduce a tensor-compatible value across ranks (Horovod's ``hvd.allreduce``).

    Args:
        value: a number, array or tensor, of the same shape on every rank.
        name: the collective's name (default: Horovod numbers them).
        average: deprecated in Horovod; ``True`` is ``op=Average``, ``False`` ``op=Sum``.
        prescale_factor: multiply by this before the reduction (default 1.0).
        postscale_factor: multiply by this after it (default 1.0).
        op: ``Average`` (default), ``Sum`` or ``Adasum``.
        compression: ``Compression.none`` (default), ``.fp16`` or ``.bf16``.

    Returns:
        A ``tf.Tensor``, the same on every rank.

    Example:
        >>> import hvdagent as hvd
        >>> float(hvd.allreduce(3.0, op=hvd.Sum))   # one process: the value itself
        3.0
    """
    import tensorflow as tf

    op = op_name(op, average)
    wire = compression_name(compression)
    tensor = tf.convert_to_tensor(value)
    if prescale_factor != 1.0:
        tensor = tensor * tf.cast(prescale_factor, tensor.dtype)
    out = _hvd.allreduce([tensor], op=op, compression=wire, name=name)[0]
    if postscale_factor != 1.0:
        out = out * tf.cast(postscale_factor, out.dtype)
    return out


def allgather(value: Any, name: Optional[str] = None):
    """Concatenate every rank's value along the first axis, in rank order.

    The first dimension may differ across ranks; the others must match.

    Example:
        >>> import hvdagent as hvd
        >>> hvd.allgather([[1, 2]]).numpy().tolist()
        [[1, 2]]
    """
    return _keras_api.allgather_tensor(value, name=name)


def broadcast(value: Any, root_rank: int, name: Optional[str] = None):
    """``root_rank``'s value on every rank (as a ``tf.Tensor``).

    Example:
        >>> import hvdagent as hvd
        >>> int(hvd.broadcast(7, root_rank=0))
        7
    """
    _check_root_rank(root_rank)
    return _keras_api.broadcast_tensor(value, root_rank, name=name)


def broadcast_object(obj: Any, root_rank: int = 0, session: Any = None, name: Optional[str] = None,
                     process_set: Any = None) -> Any:
    """``root_rank``'s picklable object on every rank.

    ``session`` (TensorFlow 1) and ``process_set`` exist for Horovod's signature;
    only their defaults are supported.

    Example:
        >>> import hvdagent as hvd
        >>> hvd.broadcast_object({"epoch": 3})
        {'epoch': 3}
    """
    _check_root_rank(root_rank)
    _check_default("session", session)
    _check_process_set(process_set)
    return _hvd.broadcast_object(obj, root_rank=root_rank, name=name)


def allgather_object(obj: Any, session: Any = None, name: Optional[str] = None, process_set: Any = None) -> List[Any]:
    """The list of every rank's picklable object, in rank order.

    Example:
        >>> import hvdagent as hvd
        >>> hvd.allgather_object("a")
        ['a']
    """
    _check_default("session", session)
    _check_process_set(process_set)
    return _hvd.allgather_object(obj, name=name)


def broadcast_variables(variables, root_rank: int = 0) -> None:
    """Overwrite ``variables`` on every rank with ``root_rank``'s values
    (``horovod.tensorflow.broadcast_variables``), for custom training loops.

    Example:
        >>> import keras, hvdagent as hvd
        >>> v = keras.Variable([1.0, 2.0])
        >>> hvd.broadcast_variables([v], root_rank=0)
    """
    _check_root_rank(root_rank)
    _hvd.broadcast_variables(list(variables), root_rank=root_rank)


def broadcast_global_variables(root_rank: int) -> None:
    """Horovod's TensorFlow 1 broadcast of the global variable collection.

    TensorFlow 2 and Keras 3 have no global variable collection, so this
    raises, as Horovod does on TensorFlow 2, and says what to use instead.

    Raises:
        RuntimeError: always under eager execution (TensorFlow 2).
    """
    _check_root_rank(root_rank)
    raise RuntimeError(
        "broadcast_global_variables() has no meaning under eager execution (TensorFlow 2, Keras 3): there is no "
        "global variable collection. Use hvdagent.callbacks.BroadcastGlobalVariablesCallback(root_rank) in "
        "model.fit, or hvdagent.broadcast_variables(model.variables + optimizer.variables, root_rank) in a custom "
        f"training loop. Received: root_rank={root_rank!r}"
    )


def _check_root_rank(root_rank) -> None:
    validate.integer("root_rank", root_rank, minimum=0)


def _check_default(arg: str, value) -> None:
    if value is not None:
        raise ValueError(f"{arg} is a TensorFlow 1 argument that hvdagent does not support; leave it None. Received: {arg}={value!r}")


def _check_process_set(process_set) -> None:
    if process_set is not None and getattr(process_set, "process_set_id", None) != 0:
        raise ValueError(f"process_set is not supported (every call spans all ranks). Received: process_set={process_set!r}")
