"""``MetricAverageCallback``: average epoch logs across ranks."""

from __future__ import annotations

from hvdagent import _hvd

from ._either_keras import EitherKerasCallback


class MetricAverageCallback(EitherKerasCallback):
    """Replace each numeric value in the epoch logs by its mean over ranks.

    Horovod's ``hvd.callbacks.MetricAverageCallback``, for a model you ``fit``
    yourself with :func:`hvdagent.DistributedOptimizer`. Values are reduced
    in sorted key order, so every rank issues the same collectives. This
    averages per-rank *results*; when ranks hold different amounts of data
    that differs slightly from the global metric. ``DistributedAgent`` does
    better and does not need it: it reduces metric *state* (totals and
    counts), which is exact.

    Put it before callbacks that read the logs (``EarlyStopping``,
    ``ModelCheckpoint``, ``CSVLogger``).

    Args:
        device: Horovod's device placement; only ``''`` (default).

    Example:
        >>> from hvdagent.callbacks import MetricAverageCallback
        >>> cb = MetricAverageCallback()
        >>> logs = {"loss": 0.5, "accuracy": 0.75}
        >>> cb.on_epoch_end(0, logs)   # one process: unchanged
        >>> logs
        {'loss': 0.5, 'accuracy': 0.75}
    """

    def __init__(self, device: str = ""):
        super().__init__()
        if device not in ("", None):
            raise ValueError(f"device is not supported; leave it ''. Received: device={device!r}")

    def on_epoch_end(self, epoch, logs=None):
        if logs is None or _hvd.size() == 1:
            return
        for key in sorted(logs):
            value = logs[key]
            if isinstance(value, (int, float)) or getattr(value, "shape", None) == ():
                logs[key] = _hvd.allreduce_object(float(value), op="average", name=f"hvdagent_metric_{key}")
