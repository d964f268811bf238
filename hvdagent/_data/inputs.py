"""The input policy of ``agent.fit``/``evaluate``/``predict``: every input kind
``keras.Model.fit`` accepts becomes this rank's ``tf.data.Dataset``.

=========================  ==================================================
input                      how it is split across ranks
=========================  ==================================================
numpy arrays, dicts and    one shuffle permutation per epoch, the same on
lists of arrays            every rank, split strided (exactly one process
                           with a ``size`` times larger batch)
batched ``tf.data``        by batches: rank ``r`` takes batches ``r, r+size,
                           ...`` (its order is made the same on every rank,
                           see :func:`hvdagent._data.shard.align_random_seeds`)
infinite ``tf.data``       the same, ``steps_per_epoch`` batches per rank
``keras.utils.PyDataset``  by batch index (``r, r+size, ...``); only this
                           rank's batches are loaded
Python generator           by position in the stream (``r, r+size, ...``):
                           every rank reads the stream, trains on its share
=========================  ==================================================

``steps_per_epoch`` and ``validation_steps`` count *this rank's* steps (as in
Horovod's recipe: ``len(x) // batch_size // size``). With ``shard=False``
every rank uses its input as is (it must differ per rank). Ranks with fewer
batches get empty ones appended, so all run the same number of steps.

Before a split, every rank's view of a numpy input, a finite dataset or a
generator is compared (:mod:`hvdagent._data.order`): ranks that hold
different data, or iterate it in different orders, are an error naming the
fix, not a silently broken partition.
"""

from __future__ import annotations

import itertools
import math
from typing import Any, Optional

import numpy as np

from hvdagent import _hvd
from hvdagent._data import arrays as _arrays
from hvdagent._data import order as _order
from hvdagent._data import shard as _data
from hvdagent._runtime import validate as _validate
from hvdagent._runtime.log import get_logger

log = get_logger(__name__)

__all__ = ["prepare", "split_validation", "kind_of"]


def _tf():
    import tensorflow as tf

    return tf


def kind_of(x: Any) -> str:
    """``"dataset"``, ``"pydataset"``, ``"generator"`` or ``"arrays"``."""
    tf = _tf()
    if isinstance(x, tf.data.Dataset):
        return "dataset"
    if hasattr(x, "__getitem__") and (hasattr(x, "num_batches") or hasattr(x, "on_epoch_end")) and hasattr(x, "__len__"):
        return "pydataset"
    if hasattr(x, "__next__") or (hasattr(x, "__iter__") and not hasattr(x, "__len__") and not isinstance(x, dict)):
        return "generator"
    if x is None:
        raise ValueError("x must be numpy arrays, a tf.data.Dataset, a keras.utils.PyDataset or a generator. "
                         "Received: x=None")
    return "arrays"


def _pack(x, y=None, sample_weight=None):
    """Keras' element structure: ``x`` alone, ``(x, y)`` or ``(x, y, sample_weight)``.

    Lists become tuples: tf.data would stack a list into one tensor.
    """

    def tuples(s):
        return tuple(s) if isinstance(s, list) else s

    x, y, sample_weight = tuples(x), tuples(y), tuples(sample_weight)
    if y is None and sample_weight is None:
        return (x,) if isinstance(x, tuple) else x
    return (x, y) if sample_weight is None else (x, y, sample_weight)


def prepare(x: Any, y: Any = None, sample_weight: Any = None, *, batch_size: Optional[int] = None,
            steps: Optional[int] = None, shuffle: bool = False, seed: int = 0, shard: bool = True,
            first_epoch: int = 0, skip: int = 0, what: str = "x"):
    """This rank's dataset (with a known number of steps) for ``fit`` or ``evaluate``.

    ``what`` names the input in errors (``"x"``, ``"validation_data"``).
    """
    kind = kind_of(x)
    _validate.optional(_validate.integer, "steps_per_epoch", steps, minimum=1)
    if kind != "arrays" and (y is not None or sample_weight is not None):
        raise ValueError(f"with a {kind} as x, y and sample_weight come from x; pass neither. "
                         f"Received: y={type(y).__name__}, sample_weight={type(sample_weight).__name__}")
    if kind == "dataset":
        if batch_size is not None:
            raise ValueError("batch_size must be None when x is a tf.data.Dataset (batch the dataset, or use "
                             f"hvdagent.shard_dataset). Received: batch_size={batch_size!r}")
        return _from_dataset(x, steps, shard, what)
    if kind == "pydataset":
        return _from_pydataset(x, steps, shard)
    if kind == "generator":
        return _from_generator(x, steps, shard, what)
    data = _pack(x, y, sample_weight)
    batch_size = 32 if batch_size is None else batch_size
    if not shard:
        return _local_arrays(data, batch_size, shuffle, seed)
    if _hvd.size() > 1:
        _order.check_same(_hvd.allgather_object(_order.arrays_fingerprint(data)), what, "arrays")
    return _arrays.array_dataset(data, batch_size, shuffle=shuffle, seed=seed, first_epoch=first_epoch, skip=skip)


def _from_dataset(ds, steps, shard, what):
    tf = _tf()
    if _data.steps_of(ds) is not None:
        return ds  # prepared by hvdagent as it is (shard_dataset(..., batch_size=...))
    facts = _data.split_facts(ds)  # made from a dataset hvdagent split by rank: never split it again
    shard = shard and facts is None
    size, rank = _hvd.size(), _hvd.rank()
    if int(ds.cardinality()) == tf.data.INFINITE_CARDINALITY:
        if steps is None:
            raise ValueError("the dataset is infinite (it repeats forever); pass steps_per_epoch= (this rank's "
                             "steps per epoch). Received: steps_per_epoch=None")
        if shard and size > 1:
            ds = ds.shard(size, rank)
        return _data.with_steps(ds, steps, padded=facts.padded if facts else 0)
    return _data.shard_batched(ds, shard=shard, padded_before=facts.padded if facts else 0, what=what)


def _spec_of(batch):
    tf = _tf()
    return tf.nest.map_structure(
        lambda a: tf.TensorSpec([None] + list(np.shape(a))[1:], tf.as_dtype(np.asarray(a).dtype)), batch)


def _from_batches(make_iter, first_batch, local_steps, steps):
    """A dataset over Python-produced batches (``make_iter()`` per epoch)."""
    tf = _tf()
    batch = _pack(*first_batch) if isinstance(first_batch, tuple) else first_batch
    spec = _spec_of(batch)

    def gen():
        for b in make_iter():
            yield _pack(*b) if isinstance(b, tuple) else b

    ds = tf.data.Dataset.from_generator(gen, output_signature=spec)
    return _data.equalize(ds.take(local_steps), local_steps, steps)


def _from_pydataset(data, steps, shard):
    size, rank = _hvd.size(), _hvd.rank()
    if not shard:
        size, rank = 1, 0
    n = int(getattr(data, "num_batches", None) or len(data))
    if n == 0:
        raise ValueError(f"the PyDataset has no batches. Received: x={data!r} with 0 batches")
    mine = list(range(rank, n, size))
    counts = _hvd.allgather_object(len(mine)) if not shard else [len(range(r, n, size)) for r in range(size)]
    total = max(counts)
    if steps is not None:
        total = min(total, steps)
        mine = mine[:steps]

    def epoch():
        for i in mine:
            yield data[i]
        if hasattr(data, "on_epoch_end"):
            data.on_epoch_end()

    return _from_batches(epoch, data[mine[0] if mine else 0], len(mine), total)


def _from_generator(gen, steps, shard, what):
    if steps is None:
        raise ValueError("a Python generator has no length; pass steps_per_epoch= (this rank's steps per "
                         "epoch). Received: steps_per_epoch=None")
    size, rank = (_hvd.size(), _hvd.rank()) if shard else (1, 0)
    iterator = iter(gen)
    first = next(iterator)
    stream = itertools.chain([first], iterator)
    if shard and size > 1:
        _order.check_same(_hvd.allgather_object(_order.fingerprint(first)), what, "generator")
        log.warning("a Python generator is split by position in its stream: rank r trains on batches r, r+%d, ... "
                    "of its own generator, so every rank must produce the same stream (pass shard=False if each "
                    "rank's generator already yields its own data)", size)

    def epoch():
        for _ in range(steps):
            batches = list(itertools.islice(stream, size))
            if len(batches) <= rank:
                return
            yield batches[rank]

    return _from_batches(epoch, first, steps, steps)


def _local_arrays(data, batch_size, shuffle, seed):
    """``shard=False``: this rank's own arrays, batched, with equal step counts."""
    tf = _tf()
    n = _arrays.num_samples(data)
    ds = tf.data.Dataset.from_tensor_slices(data)
    if shuffle:
        ds = ds.shuffle(max(n, 1), seed=seed, reshuffle_each_iteration=True)
    return _data.shard_batched(ds.batch(batch_size), shard=False)


def split_validation(x, y, sample_weight, validation_split):
    """Keras' ``validation_split``: the last fraction of the arrays, before shuffling."""
    fraction = _validate.number("validation_split", validation_split, minimum=0)
    if not fraction < 1:
        raise ValueError(f"validation_split must be a number in [0, 1). Received: validation_split={validation_split!r}")
    if kind_of(x) != "arrays":
        raise ValueError("validation_split needs numpy array inputs (as in Keras); with a dataset, generator or "
                         f"PyDataset pass validation_data. Received: x of type {type(x).__name__}")
    tf = _tf()
    n = _arrays.num_samples(tuple(a for a in (x, y, sample_weight) if a is not None))
    cut = int(math.floor(n * (1.0 - fraction)))
    def cut_at(part):
        return lambda a: None if a is None else a[part]

    head = tuple(tf.nest.map_structure(cut_at(slice(None, cut)), v) for v in (x, y, sample_weight))
    tail = tuple(tf.nest.map_structure(cut_at(slice(cut, None)), v) for v in (x, y, sample_weight))
    return head, tail


def validation(validation_data, batch_size, steps):
    """``validation_data`` in any form Keras accepts, as this rank's dataset."""
    if kind_of(validation_data) != "arrays":
        return prepare(validation_data, steps=steps, what="validation_data")
    if not isinstance(validation_data, (tuple, list)) or len(validation_data) not in (2, 3):
        raise ValueError("validation_data must be (x, y), (x, y, sample_weight), a tf.data.Dataset, a PyDataset "
                         f"or a generator. Received: validation_data of type {type(validation_data).__name__}")
    vx, vy, vw = (tuple(validation_data) + (None,))[:3]
    return prepare(vx, vy, vw, batch_size=batch_size, steps=steps, what="validation_data")
