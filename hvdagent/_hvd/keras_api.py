"""What Horovod's Keras API (``import hvdagent as hvd``) needs from the seam
beyond the package's own vocabulary: build and controller queries, and eager
tensor allgather/broadcast. Used by ``hvdagent._horovod_keras.api`` and
``hvdagent._horovod_keras.collectives`` only.
"""

from __future__ import annotations

from typing import Optional

from hvdagent import _hvd

__all__ = ["built", "enabled", "allgather_tensor", "broadcast_tensor"]


def built(what: str) -> bool:
    """Whether Horovod was built with ``what`` ("mpi", "gloo" or "nccl").

    A question about Horovod itself, so Horovod is imported to answer it even
    in a process without a launcher.
    """
    from hvdagent._hvd.horovod_backend import import_horovod

    return bool(getattr(import_horovod(), f"{what}_built")())


def enabled(what: str) -> bool:
    """Whether this job runs on ``what``'s controller ("mpi" or "gloo").

    Without a launcher hvdagent runs without Horovod (one process), so neither is.
    """
    if _hvd.backend().name != "horovod":
        return False
    from hvdagent._hvd.horovod_backend import import_horovod

    _hvd.init()
    return bool(getattr(import_horovod(), f"{what}_enabled")())


def allgather_tensor(value, name: Optional[str] = None):
    """Concatenate every rank's tensor along the first axis, in rank order."""
    import tensorflow as tf

    tensor = tf.convert_to_tensor(value)
    if _hvd.size() == 1:
        return tensor
    from hvdagent._hvd.horovod_backend import import_horovod

    return import_horovod().allgather(tensor, name=name)


def broadcast_tensor(value, root_rank: int, name: Optional[str] = None):
    """``root_rank``'s tensor on every rank."""
    import tensorflow as tf

    tensor = tf.convert_to_tensor(value)
    if _hvd.size() == 1:
        return tensor
    from hvdagent._hvd.horovod_backend import import_horovod

    return import_horovod().broadcast(tensor, root_rank=root_rank, name=name)
