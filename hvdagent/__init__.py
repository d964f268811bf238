"""hvdagent: synchronous data-parallel Keras training on Horovod, in one line.

>>> import hvdagent
>>> hvdagent.init()
>>> hvdagent.size(), hvdagent.rank(), hvdagent.is_chief()
(1, 0, True)
"""

from hvdagent._hvd import HorovodUnavailableError
from hvdagent._version import __version__
from hvdagent._agent import DistributedAgent
from hvdagent._data import shard_dataset
from hvdagent._launch import LaunchError, LaunchTimeoutError, launch
from hvdagent._optimizer import DistributedOptimizer
from hvdagent._process import init, is_chief, local_rank, local_size, rank, size
from hvdagent._profiler import SyncProfiler

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
    "launch",
    "LaunchError",
    "LaunchTimeoutError",
    "HorovodUnavailableError",
]
