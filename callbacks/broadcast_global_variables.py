"""``BroadcastGlobalVariablesCallback``: start every rank from the root's state."""

from __future__ import annotations

from hvdagent import _compat, _hvd

from ._either_keras import EitherKerasCallback


def _variable_name(v) -> str:
    return getattr(v, "path", None) or v.name


def check_same_variables(variables, what: str = "model") -> None:
    """Raise on every rank if ranks disagree on variable names, shapes or dtypes.

    Runs one small allgather before any other collective, so a mismatch is an
    error naming the variable instead of a hang or a garbled broadcast.
    """
    spec = [(_variable_name(v), tuple(v.shape), str(v.dtype)) for v in variables]
    specs = _hvd.allgather_object(spec)
    root = specs[0]
    for rank, other in enumerate(specs[1:], start=1):
        if len(other) != len(root):
            raise ValueError(
                f"the {what} has {len(root)} variables on rank 0 but {len(other)} on rank {rank}; "
                "every rank must build the same model. "
                f"Received: rank 0 variables {[s[0] for s in root]}, rank {rank} variables {[s[0] for s in other]}"
            )
        for (name0, shape0, dt0), (name, shape, dt) in zip(root, other):
            if (shape0, dt0) != (shape, dt):
                raise ValueError(
                    f"variable {name0!r} of the {what} differs across ranks: shape {list(shape0)} {dt0} on rank 0, "
                    f"shape {list(shape)} {dt} (variable {name!r}) on rank {rank}. Every rank must build the same model."
                )


def _save_plain_optimizer(model) -> None:
    """A model compiled with ``hvd.DistributedOptimizer(opt)`` (Horovod's recipe) saves ``opt``.

    Keras 3 writes the optimizer given to ``compile``; pointing that record at
    the wrapped optimizer makes every file ``ModelCheckpoint`` or ``model.save``
    writes a plain Keras file that loads without hvdagent (the wrapper already
    saves exactly the wrapped optimizer's variables). Training is unchanged.
    """
    opt = getattr(model, "optimizer", None)
    if hasattr(opt, "outer_optimizer") and getattr(opt, "_hvdagent", None) is not None:
        _compat.replace_compiled_optimizer(model, opt, opt.outer_optimizer())


class BroadcastGlobalVariablesCallback(EitherKerasCallback):
    """Copy the model's and optimizer's variables from ``root_rank`` to all ranks.

    Horovod's ``hvd.callbacks.BroadcastGlobalVariablesCallback``. Runs at the
    start of ``fit``, after building the optimizer's variables, so ranks that
    initialised their weights differently train identically from the first
    step (Horovod broadcasts after the first batch). It first checks that all
    ranks hold variables of the same shapes. For a model compiled with
    ``hvd.DistributedOptimizer(opt)`` it also makes saved files hold ``opt``
    (they load without hvdagent). ``DistributedAgent.fit`` adds it for you.

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
        if isinstance(root_rank, bool) or not isinstance(root_rank, int) or root_rank < 0:
            raise ValueError(f"root_rank must be an integer >= 0. Received: root_rank={root_rank!r}")
        if device not in ("", None):
            raise ValueError(f"device is not supported; leave it ''. Received: device={device!r}")
        if local_variables is None:
            local_variables = []
        elif hasattr(local_variables, "assign"):
            local_variables = [local_variables]
        if not all(hasattr(v, "assign") for v in local_variables):
            raise ValueError(f"local_variables must be variables. Received: local_variables={local_variables!r}")
        self.root_rank = root_rank
        self._local = {id(v) for v in local_variables}

    def on_train_begin(self, logs=None):
        _save_plain_optimizer(self.model)
        if _hvd.size() == 1:
            return
        if self.root_rank >= _hvd.size():
            raise ValueError(f"root_rank must be < size ({_hvd.size()}). Received: root_rank={self.root_rank}")
        model = self.model
        _compat.build_optimizer(model)
        check_same_variables(model.weights)
        variables = list(model.weights)
        if model.optimizer is not None:
            variables += list(model.optimizer.variables)
        _hvd.broadcast_variables([v for v in variables if id(v) not in self._local], root_rank=self.root_rank)
