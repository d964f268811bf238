"""``agent.predict``: each rank predicts its share; every rank gets all outputs, in order.

Arrays are split strided by sample (rank ``r`` predicts samples ``r, r+size,
...``); a ``tf.data.Dataset`` or ``PyDataset`` is split by batch (rank ``r``
predicts batches ``r, r+size, ...``, in the order every rank iterates, see
:func:`hvdagent._data.shard.align_random_seeds`; checked by
:mod:`hvdagent._data.order`). The outputs are gathered and put back in the
original order on every rank.
"""

from __future__ import annotations

from typing import Any, List

import numpy as np

from hvdagent import _hvd
from hvdagent._data import arrays as _arrays
from hvdagent._data import inputs as _inputs
from hvdagent._data import order as _order

__all__ = ["predict"]

_PER_RANK = "call model.predict on each rank (agent.predict splits its input)"


def predict(model, x: Any, batch_size=None, verbose=0, steps=None, **kwargs):
    size, rank = _hvd.size(), _hvd.rank()
    kind = _inputs.kind_of(x)
    if kind == "arrays":
        n = _arrays.num_samples(x)
        part = _arrays.strided_split(x, size, rank)
        local = None
        if _arrays.num_samples(part) > 0:
            local = model.predict(part, batch_size=batch_size, verbose=verbose, **kwargs)
        mark = _order.arrays_fingerprint(x, n) if size > 1 else None
        gathered = _hvd.allgather_object((local, mark), name="hvdagent_predict")
        _order.check_same([g[1] for g in gathered], "x", "arrays", per_rank_fix=_PER_RANK)
        return _arrays.interleave([g[0] for g in gathered], n)
    if batch_size is not None:
        raise ValueError(f"batch_size must be None when x is a {kind} (it is batched already). "
                         f"Received: batch_size={batch_size!r}")
    mark = _order.first_batch_fingerprint(x) if kind == "dataset" and size > 1 else None
    outputs = [_predict_batch(model, b) for b in _my_batches(x, kind, size, rank, steps)]
    gathered = _hvd.allgather_object((outputs, mark), name="hvdagent_predict_batches")
    _order.check_same([g[1] for g in gathered], "x", "dataset", per_rank_fix=_PER_RANK)
    gathered = [g[0] for g in gathered]
    ordered: List[Any] = []
    for i in range(max((len(g) for g in gathered), default=0)):
        ordered += [g[i] for g in gathered if i < len(g)]
    if not ordered:
        raise ValueError(f"there is nothing to predict: the {kind} holds no batches. Received: x={x!r}")
    import tensorflow as tf

    return tf.nest.map_structure(lambda *parts: np.concatenate(parts, axis=0), *ordered)


def _my_batches(x, kind, size, rank, steps):
    import tensorflow as tf

    if kind == "dataset":
        if int(x.cardinality()) == tf.data.INFINITE_CARDINALITY and steps is None:
            raise ValueError("the dataset is infinite; pass steps= (batches to predict in all). Received: steps=None")
        ds = x.take(steps) if steps is not None else x
        return ds.shard(size, rank)
    if kind == "pydataset":
        n = int(getattr(x, "num_batches", None) or len(x))
        n = min(n, steps) if steps is not None else n
        return (x[i] for i in range(rank, n, size))
    if steps is None:
        raise ValueError("a Python generator has no length; pass steps= (batches to predict in all). "
                         "Received: steps=None")
    return (b for i, b in zip(range(steps), x) if i % size == rank)


def _predict_batch(model, batch):
    import tensorflow as tf

    if isinstance(batch, tuple) and len(batch) in (1, 2, 3):
        batch = batch[0]
    out = model.predict_on_batch(batch)
    return tf.nest.map_structure(np.asarray, out)
