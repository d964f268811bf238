"""hvdagent: synchronous data-parallel Keras training on Horovod, in one line.

>>> import hvdagent
>>> hvdagent.init()
>>> hvdagent.size(), hvdagent.rank(), hvdagent.is_chief()
(1, 0, True)
"""

from hvdagent._hvd import HorovodUnavailableError
from hvdagent._version import __version__
from hvdagent.agent import DistributedAgent
from hvdagent.data import shard_dataset
from hvdagent.launch import LaunchError, LaunchTimeoutError, launch
from hvdagent.optimizer import DistributedOptimizer
from hvdagent.process import init, is_chief, local_rank, local_size, rank, size

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
    "launch",
    "LaunchError",
    "LaunchTimeoutError",
    "HorovodUnavailableError",
]
