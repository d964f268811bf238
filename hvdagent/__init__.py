"""hvdagent: synchronous data-parallel Keras training on Horovod, in one line.

``import hvdagent as hvd`` also offers Horovod's ``horovod.tensorflow.keras``
API (``hvd.DistributedOptimizer``, ``hvd.callbacks``, ``hvd.elastic``, ...)
with Horovod's signatures, on Keras 3 and tf_keras.

>>> import hvdagent
>>> hvdagent.init()
>>> hvdagent.size(), hvdagent.rank(), hvdagent.is_chief()
(1, 0, True)
"""

from hvdagent import _data, _hvd
from hvdagent._hvd import HorovodUnavailableError
from hvdagent._version import __version__
from hvdagent._agent import DistributedAgent
from hvdagent._data import shard_dataset
from hvdagent._launch import LaunchError, LaunchTimeoutError, launch
from hvdagent._layers import SyncBatchNormalization
from hvdagent._optimizer import DistributedOptimizer
from hvdagent._process import init, is_chief, local_rank, local_size, rank, size
from hvdagent._profiler import SyncProfiler
from hvdagent._watchdog_pause import paused as watchdog_paused
from hvdagent._horovod_api import (
    Adasum,
    Average,
    Compression,
    Sum,
    cross_rank,
    cross_size,
    gloo_built,
    gloo_enabled,
    is_initialized,
    mpi_built,
    mpi_enabled,
    nccl_built,
    shutdown,
)
from hvdagent._horovod_load import load_model
from hvdagent._horovod_collectives import (
    allgather,
    allgather_object,
    allreduce,
    broadcast,
    broadcast_global_variables,
    broadcast_object,
    broadcast_variables,
)
from hvdagent import callbacks, elastic  # noqa: E402 (hvd.callbacks, hvd.elastic right after import)

if _hvd.is_launched():
    # Before the user's input pipelines exist: unseeded tf.data shuffles then
    # iterate in the same order on every rank (see _data.align_random_seeds).
    _data.align_random_seeds()

__all__ = [
    "__version__",
    "init",
    "rank",
    "size",
    "local_rank",
    "local_size",
    "is_chief",
    "DistributedAgent",
    "DistributedOptimizer",
    "shard_dataset",
    "SyncProfiler",
    "watchdog_paused",
    "SyncBatchNormalization",
    "launch",
    "LaunchError",
    "LaunchTimeoutError",
    "HorovodUnavailableError",
    # Horovod's horovod.tensorflow.keras names
    "shutdown",
    "is_initialized",
    "cross_rank",
    "cross_size",
    "mpi_built",
    "gloo_built",
    "nccl_built",
    "mpi_enabled",
    "gloo_enabled",
    "Compression",
    "Average",
    "Sum",
    "Adasum",
    "allreduce",
    "allgather",
    "broadcast",
    "broadcast_object",
    "allgather_object",
    "broadcast_variables",
    "broadcast_global_variables",
    "load_model",
    "callbacks",
    "elastic",
]
