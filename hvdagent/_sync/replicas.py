"""Are the replicas still one model? A cheap check of the trainable weights across ranks.

Every rank should hold the same trainable weights after every update. When
they do not (an optimizer nobody distributed, a layer whose weights change
outside the optimizer differently on each rank, a non-deterministic kernel),
training goes on silently with several models. :func:`check_replicas` makes
that an error, at the end of ``agent.fit`` (and, optionally, of every epoch):

1. every rank fingerprints each trainable variable (a 64-bit hash of its
   bytes, ``tf.fingerprint``) and the fingerprints are gathered: one small
   collective; identical bytes everywhere (the normal case) end the check;
2. only for the variables whose bytes differ: their mean over ranks (one
   fused allreduce) and each rank's largest distance from it (one small
   gather). A variable further from the mean than ``tolerance`` (relative
   to the variable's largest magnitude, at least 1) is an error naming it and
   the distance; closer ones are accepted: TensorFlow's sparse updates on CPU
   sum duplicate rows in a different order on each rank, a few 1e-9 apart.

Every rank takes the same decision from the same gathered numbers, so every
rank raises, or none does.
"""

from __future__ import annotations

from typing import List, Sequence

from hvdagent import _hvd

__all__ = ["ReplicaDivergenceError", "check_replicas", "CHECKS"]

CHECKS = ("end", "epoch")  # DistributedAgent(check_replicas=...): after fit, or after every epoch too


class ReplicaDivergenceError(RuntimeError):
    """The ranks' trainable weights differ by more than the tolerance (see :func:`check_replicas`)."""


def _name(v) -> str:
    return getattr(v, "path", None) or v.name


def fingerprints(variables: Sequence) -> List[bytes]:
    """A 64-bit hash of each variable's bytes (eager)."""
    import tensorflow as tf

    return [tf.fingerprint(tf.reshape(tf.convert_to_tensor(v), [1, -1])).numpy().tobytes() for v in variables]


def check_replicas(variables: Sequence, tolerance: float, when: str) -> None:
    """Raise :class:`ReplicaDivergenceError` on every rank if the ranks' ``variables`` differ.

    ``when`` says where training stands, for the message ("after epoch 3").
    Call it on every rank (it runs collectives); with one rank it does
    nothing.

    Example (one process: nothing to compare):
        >>> import keras
        >>> check_replicas([keras.Variable([1.0, 2.0])], tolerance=1e-6, when="after fit")
    """
    variables = list(variables)
    if _hvd.size() == 1 or not variables:
        return
    every = _hvd.allgather_object(fingerprints(variables), name="hvdagent_replica_check")
    differ = [i for i in range(len(variables)) if any(f[i] != every[0][i] for f in every[1:])]
    if not differ:
        return
    import tensorflow as tf

    values = [tf.cast(tf.convert_to_tensor(variables[i]), tf.float64) for i in differ]
    means = _hvd.allreduce(values, op="average", name="hvdagent_replica_mean")
    mine = [float(tf.reduce_max(tf.abs(v - m))) if v.shape.num_elements() else 0.0 for v, m in zip(values, means)]
    scales = [float(tf.reduce_max(tf.abs(m))) if m.shape.num_elements() else 0.0 for m in means]
    spread = _hvd.allgather_object(mine, name="hvdagent_replica_spread")
    bad = []
    for k, i in enumerate(differ):
        distances = [s[k] for s in spread]
        worst = max(distances)
        if worst > tolerance * max(1.0, scales[k]):
            bad.append(f"{_name(variables[i])!r} (up to {worst:.3g} from the mean over ranks, on rank "
                       f"{distances.index(worst)})")
    if bad:
        raise ReplicaDivergenceError(
            f"the replicas differ {when}: {len(bad)} trainable variable(s) do not hold the same values on every "
            f"rank: {', '.join(bad[:10])}{' ...' if len(bad) > 10 else ''}. Each rank has been training its own "
            "model. Usual causes: an optimizer the agent did not distribute (a train_step that applies one the "
            "model does not hold as an attribute), a layer that changes its weights outside the optimizer from "
            "this rank's data, or a non-deterministic kernel drifting further than the tolerance "
            f"(DistributedAgent(replica_tolerance=...)). Received: replica_tolerance={tolerance!r}"
        )
