"""``ScaleLearningRate``: apply the linear scaling rule at the start of ``fit``."""

from __future__ import annotations

from hvdagent import _hvd, _lr

from ._base import Callback


class ScaleLearningRate(Callback):
    """Set a float learning rate to ``size`` times its unscaled value (idempotent).

    Runs in ``on_train_begin``, after a checkpoint restore, so a resumed run
    (even with another number of ranks) trains at the right rate.
    """

    def on_train_begin(self, logs=None):
        _lr.set_multiplier(self.model.optimizer, float(_hvd.size()))
