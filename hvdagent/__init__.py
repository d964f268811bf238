"""hvdagent: synchronous data-parallel Keras training on Horovod, in one line.

``import hvdagent as hvd`` also offers Horovod's ``horovod.tensorflow.keras``
API (``hvd.DistributedOptimizer``, ``hvd.callbacks``, ``hvd.elastic``, ...)
and its TensorFlow 2 custom-loop API (``hvd.DistributedGradientTape``,
``hvd.broadcast_variables``) with Horovod's signatures, on Keras 3 and tf_keras.

>>> import hvdagent
>>> hvdagent.init()
>>> hvdagent.size(), hvdagent.rank(), hvdagent.is_chief()
(1, 0, True)
"""

try:  # TensorFlow and Keras are the `tf` extra (Horovod is built for them afterwards)
    import keras as _keras  # noqa: F401
except ImportError as _err:
    raise ImportError(
        "hvdagent needs TensorFlow (2.16 to 2.21) and Keras, which do not import here "
        f"({type(_err).__name__}: {_err}). Install them with: pip install 'hvdagent[tf]' "
        "(in a checkout: pip install -e '.[tf]'); then `hvdagent install-horovod` builds Horovod for them."
    ) from _err

from hvdagent import _hvd
from hvdagent._runtime.startup import Startup as _Startup

_hvd.use_startup(_Startup())  # binding and start-up checks run when the backend initialises

from hvdagent._hvd import HorovodUnavailableError  # noqa: E402
from hvdagent._version import __version__  # noqa: E402
from hvdagent._agent.agent import DistributedAgent  # noqa: E402
from hvdagent._data.shard import align_random_seeds as _align_random_seeds, shard_dataset  # noqa: E402
from hvdagent._launch.api import LaunchError, LaunchTimeoutError, launch  # noqa: E402
from hvdagent._runtime.process import init, is_chief, local_rank, local_size, rank, size  # noqa: E402
from hvdagent._sync.batchnorm import SyncBatchNormalization  # noqa: E402
from hvdagent._sync.powersgd import PowerSGD  # noqa: E402
from hvdagent._sync.profiler import SyncProfiler  # noqa: E402
from hvdagent._sync.replicas import ReplicaDivergenceError  # noqa: E402
from hvdagent._watchdog.pause import paused as watchdog_paused  # noqa: E402
from hvdagent._horovod_keras.optimizer import DistributedOptimizer  # noqa: E402
from hvdagent._sync import keras3_optimizer as _keras3_optimizer  # noqa: E402,F401 (registered: files naming it load)
from hvdagent._horovod_keras.api import (  # noqa: E402
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
from hvdagent._horovod_keras.load import load_model  # noqa: E402
from hvdagent._horovod_keras.tape import DistributedGradientTape, PartialDistributedGradientTape  # noqa: E402
from hvdagent._horovod_keras.collectives import (  # noqa: E402
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
    # iterate in the same order on every rank (see _data.shard.align_random_seeds).
    _align_random_seeds()

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
    "PowerSGD",
    "shard_dataset",
    "SyncProfiler",
    "watchdog_paused",
    "SyncBatchNormalization",
    "launch",
    "LaunchError",
    "LaunchTimeoutError",
    "HorovodUnavailableError",
    "ReplicaDivergenceError",
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
    # Horovod's horovod.tensorflow custom-loop names
    "DistributedGradientTape",
    "PartialDistributedGradientTape",
    "callbacks",
    "elastic",
]
