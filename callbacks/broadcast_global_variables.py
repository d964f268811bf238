"""``BroadcastGlobalVariablesCallback``: start every rank from the root's state."""

from __future__ import annotations

from hvdagent._sync.broadcast import broadcast_model_state
from hvdagent._runtime import validate

from ._either_keras import EitherKerasCallback


class BroadcastGlobalVariablesCallback(EitherKerasCallback):
    """Copy the model's and optimizer's variables from ``root_rank`` to all ranks.

    Horovod's ``hvd.callbacks.BroadcastGlobalVariablesCallback``. Runs at the
    start of ``fit``, after building the optimizer's variables, so ranks that
    initialised their weights differently train identically from the first
    step (Horovod broadcasts after the first batch). It first checks that all
    ranks hold variables of the same shapes. Like every hvdagent callback, it
    makes the files Keras saves of a model compiled with
    ``hvd.DistributedOptimizer(opt)`` hold ``opt`` (they load without
    hvdagent). ``DistributedAgent.fit`` does all of this by itself.

    Args:
        root_rank: the rank whose values win (default 0).
        device: Horovod's device placement; only ``''`` (default).
        local_variables: variables (a ``tf.Variable``/``keras.Variable`` or a
            list) that each rank keeps as they are (default None).

    Example:
        >>> import hvdagent
        >>> from hvdagent.callbacks import BroadcastGlobalVariablesCallback
        >>> cb = BroadcastGlobalVariablesCallback(root_rank=0)
        >>> BroadcastGlobalVariablesCallback(root_rank=-1)
        Traceback (most recent call last):
        ...
        ValueError: root_rank must be an integer >= 0. Received: root_rank=-1
    """

    def __init__(self, root_rank: int = 0, device: str = "", local_variables=None):
        super().__init__()
        validate.integer("root_rank", root_rank, minimum=0)
        if device not in ("", None):
            raise ValueError(f"device is not supported; leave it ''. Received: device={device!r}")
        if local_variables is None:
            local_variables = []
        elif hasattr(local_variables, "assign"):
            local_variables = [local_variables]
        if not all(hasattr(v, "assign") for v in local_variables):
            raise ValueError(f"local_variables must be variables. Received: local_variables={local_variables!r}")
        self.root_rank = root_rank
        self._local = list(local_variables)

    def on_train_begin(self, logs=None):
        broadcast_model_state(self.model, self.root_rank, keep=self._local)
