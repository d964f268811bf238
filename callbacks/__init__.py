"""Keras callbacks for synchronous data-parallel training.

Installed as ``hvdagent.callbacks``. ``DistributedAgent`` adds what it needs by
itself; use these when you ``fit`` a model with
:func:`hvdagent.DistributedOptimizer` yourself.
"""

from .broadcast_global_variables import BroadcastGlobalVariablesCallback
from .learning_rate_warmup import LearningRateWarmupCallback
from .metric_average import MetricAverageCallback

__all__ = ["BroadcastGlobalVariablesCallback", "MetricAverageCallback", "LearningRateWarmupCallback"]
