"""hvdagent: synchronous data-parallel Keras training on Horovod, in one line.

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
    "SyncBatchNormalization",
    "launch",
    "LaunchError",
    "LaunchTimeoutError",
    "HorovodUnavailableError",
]
