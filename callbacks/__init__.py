"""Keras callbacks for synchronous data-parallel training.

Installed as ``hvdagent.callbacks``; reachable as ``hvd.callbacks`` after
``import hvdagent as hvd``. The names are Horovod's
(``horovod.tensorflow.keras.callbacks``), with Horovod's signatures, and work
in Keras 3's and tf_keras' ``fit``. ``DistributedAgent`` adds what it needs by
itself; use these when you ``fit`` a model with
:func:`hvdagent.DistributedOptimizer` yourself (Horovod's recipe).
"""

from .best_model_checkpoint import BestModelCheckpoint
from .broadcast_global_variables import BroadcastGlobalVariablesCallback
from .learning_rate_schedule import LearningRateScheduleCallback
from .learning_rate_warmup import LearningRateWarmupCallback
from .metric_average import MetricAverageCallback

__all__ = [
    "BroadcastGlobalVariablesCallback",
    "MetricAverageCallback",
    "LearningRateScheduleCallback",
    "LearningRateWarmupCallback",
    "BestModelCheckpoint",
]
