"""Start every rank from one rank's state: the model's and optimizer's variables.

Used by the agent's own start-of-``fit`` callback and by Horovod's public
``BroadcastGlobalVariablesCallback`` alike.
"""

from __future__ import annotations

from typing import Iterable

from hvdagent import _compat, _hvd
from hvdagent._sync.optimizer import distributed_optimizers

__all__ = ["check_same_variables", "broadcast_model_state"]


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


def broadcast_model_state(model, root_rank: int = 0, keep: Iterable = ()) -> None:
    """Overwrite the model's and its optimizers' variables on every rank with ``root_rank``'s.

    The optimizers are ``model.optimizer`` and every other distributed
    optimizer the model holds (a GAN's two); one that has not built its
    variables yet builds them at its first update, from the same initial
    values on every rank.

    Builds the optimizer's variables first, and checks that every rank holds
    variables of the same names, shapes and dtypes (an error naming the
    variable instead of a hang). Variables in ``keep`` stay as they are.
    """
    if _hvd.size() == 1:
        return
    if root_rank >= _hvd.size():
        raise ValueError(f"root_rank must be < size ({_hvd.size()}). Received: root_rank={root_rank}")
    _compat.build_optimizer(model)
    check_same_variables(model.weights)
    variables = list(model.weights)
    optimizers = [model.optimizer] if model.optimizer is not None else []
    for opt in distributed_optimizers(model):  # a GAN's others; not built yet they start equal anyway
        if all(opt is not o for o in optimizers):
            optimizers.append(opt)
    for opt in optimizers:
        variables += list(opt.variables)
    kept = {id(v) for v in keep}
    _hvd.broadcast_variables([v for v in variables if id(v) not in kept], root_rank=root_rank)
