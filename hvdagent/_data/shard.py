"""Shard-aware input pipelines: every rank gets its own part of the data and
every rank runs the same number of steps, so uneven data never hangs.

The policy, in one place:

* **Numpy arrays** (the same on every rank) are shuffled with one permutation
  per epoch that is identical on every rank (seeded, independent of
  TensorFlow's global seed), then split strided: rank ``r`` takes positions
  ``r, r + size, ...``. Step ``s`` of all ranks together is therefore exactly
  step ``s`` of one process with a ``size`` times larger batch.
* **A dataset of elements or file names** given to :func:`shard_dataset` is
  split strided first (rank ``r`` takes elements ``r, r + size, ...``), then
  each rank shuffles its part every epoch.
* **An already batched dataset** given to ``agent.fit`` is split by batches.
* Ranks with fewer batches get *empty* batches appended, so all ranks run the
  same number of steps; an empty batch contributes nothing to gradients or
  metrics. No sample is dropped unless ``drop_remainder=True``.

**What hvdagent knows about a dataset travels with the data.** Every dataset
this package split by rank is recorded in a registry (with its steps per
epoch and how many empty batches were appended). ``tf.data`` transformations
(``map``, ``batch``, ``prefetch``, ``cache``, ``filter``, ``zip``, ...) return
new objects, so the registry is asked about a dataset's *ancestry*
(:func:`split_facts` walks ``tf.data``'s ``_inputs()``, the one private
``tf.data`` reach of the package): ``shard_dataset(files).map(parse).batch(32)``
is known to be split by rank already, and ``agent.fit`` never splits it again.
"""

from __future__ import annotations

import dataclasses
import math
import weakref
from typing import Any, Optional

import numpy as np

from hvdagent import _hvd
from hvdagent._data import order
from hvdagent._runtime import validate as _validate

__all__ = ["shard_dataset", "SplitFacts", "split_facts", "steps_of", "padded_steps"]


@dataclasses.dataclass(frozen=True)
class SplitFacts:
    """What is known of a dataset hvdagent split by rank.

    Attributes:
        steps: this rank's batches per epoch (None: unbatched or unknown).
        padded: empty batches appended to this rank's data.
    """

    steps: Optional[int] = None
    padded: int = 0


_FACTS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def _record(ds, facts: SplitFacts):
    _FACTS[ds] = facts
    return ds


def split_facts(ds) -> Optional[SplitFacts]:
    """The facts of ``ds`` or of its nearest ancestor that hvdagent split by rank (None: not split).

    Example:
        >>> import tensorflow as tf, hvdagent
        >>> files = hvdagent.shard_dataset(tf.data.Dataset.range(8), shuffle=False)
        >>> split_facts(files.map(lambda x: x * 2).batch(4).prefetch(1))
        SplitFacts(steps=None, padded=0)
        >>> split_facts(tf.data.Dataset.range(8)) is None
        True
    """
    todo, seen = [ds], set()
    while todo:
        d = todo.pop(0)
        if id(d) in seen:
            continue
        seen.add(id(d))
        try:
            facts = _FACTS.get(d)
        except TypeError:  # not weak-referenceable: not ours
            facts = None
        if facts is not None:
            return facts
        todo.extend(getattr(d, "_inputs", lambda: [])())
    return None


def _tf():
    import tensorflow as tf

    return tf


def align_random_seeds(environ=None) -> None:
    """Make unseeded shuffles iterate in the same order on every rank.

    A batched dataset is split across ranks by batch index, which is a
    partition only if every rank sees the batches in the same order. An
    unseeded ``dataset.shuffle(...)`` draws its seed from TensorFlow's global
    seed; Keras' ``text_dataset_from_directory``,
    ``image_dataset_from_directory``, ``audio_dataset_from_directory`` and
    ``timeseries_dataset_from_array`` with ``seed=None`` draw theirs from
    NumPy's global generator (as do scikit-learn's ``train_test_split`` and
    ``shuffle`` with ``random_state=None``). Seeding both identically on every
    rank (as ``tf.data``'s own auto-sharding expects) makes every rank's
    pipeline, built by the same script, iterate identically. Called when
    ``hvdagent`` is imported in a launched process, so it precedes the user's
    pipelines. The seed is ``HVDAGENT_SEED`` (default 0); ``HVDAGENT_SEED=off``
    leaves both generators alone. Python's ``random`` is left alone (Keras 3
    seeds dropout and random layers from it: they stay different per rank).
    What this cannot align is caught when ``fit`` starts (:mod:`hvdagent._data.order`).
    """
    import os

    environ = os.environ if environ is None else environ
    value = environ.get("HVDAGENT_SEED", "0")
    if value.lower() == "off":
        return
    seed = int(value) if value.strip().isdigit() else -1
    if not 0 <= seed < 2**32:
        raise ValueError(f"HVDAGENT_SEED must be an integer in [0, 2**32) or 'off'. Received: HVDAGENT_SEED={value!r}")
    import tensorflow as tf

    tf.random.set_seed(seed)
    np.random.seed(seed)


def shard_dataset(
    dataset: Any,
    batch_size: Optional[int] = None,
    shuffle: bool = True,
    seed: int = 0,
    drop_remainder: bool = False,
):
    """Split a ``tf.data.Dataset`` by rank, shuffle and batch it per rank.

    Args:
        dataset: an *unbatched* ``tf.data.Dataset`` of samples, or of file
            names (then map the result to records yourself).
        batch_size: the per-rank batch size, or ``None`` to leave the result
            unbatched (default None).
        shuffle: reshuffle each rank's part every epoch (default True).
        seed: the shuffle seed (default 0).
        drop_remainder: drop the last, smaller batch (default False: nothing
            is dropped; ranks with fewer batches get empty ones instead).

    Returns:
        A ``tf.data.Dataset``; when batched, every rank's has the same number
        of batches. ``agent.fit``/``evaluate`` never shard it again, nor any
        dataset made from it (``.map``, ``.batch``, ``.prefetch``, ...): they
        only give every rank the same number of steps.

    Example:
        >>> import tensorflow as tf, hvdagent
        >>> ds = hvdagent.shard_dataset(tf.data.Dataset.range(10), batch_size=4, shuffle=False)
        >>> [b.numpy().tolist() for b in ds]   # one process: all samples
        [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    """
    tf = _tf()
    if not isinstance(dataset, tf.data.Dataset):
        raise TypeError(
            f"dataset must be a tf.data.Dataset. Received: dataset of type {type(dataset).__name__}. "
            "For numpy arrays, pass them to agent.fit directly."
        )
    if batch_size is not None:
        _validate.batch_size(batch_size)
    _validate.integer("seed", seed, minimum=0)
    size, rank = _hvd.size(), _hvd.rank()
    n_total = int(dataset.cardinality())
    ds = dataset.shard(size, rank) if size > 1 else dataset
    if shuffle:
        buffer = n_total if n_total > 0 else 10_000
        ds = ds.shuffle(max(1, math.ceil(buffer / size)), seed=seed, reshuffle_each_iteration=True)
    if batch_size is None:
        return _record(ds, SplitFacts())
    ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    if n_total >= 0:
        local = [shard_len(n_total, size, r) for r in range(size)]
        counts = [(n // batch_size) if drop_remainder else math.ceil(n / batch_size) for n in local]
    else:
        counts = _hvd.allgather_object(count_batches(ds))
    return equalize(ds, counts[rank], max(counts))


def shard_len(n: int, size: int, rank: int) -> int:
    """Elements rank ``rank`` gets when ``n`` are split strided over ``size``."""
    return max(0, math.ceil((n - rank) / size))


def count_batches(ds) -> int:
    """Number of elements of a finite dataset (one pass when unknown)."""
    tf = _tf()
    n = int(ds.cardinality())
    if n == tf.data.INFINITE_CARDINALITY:
        raise ValueError(
            "the dataset is infinite (it repeats forever); pass steps_per_epoch= (this rank's steps per epoch). "
            "Received: a dataset with cardinality INFINITE"
        )
    if n >= 0:
        return n
    return int(ds.reduce(np.int64(0), lambda c, _: c + 1))


def _empty_batch(spec):
    tf = _tf()

    def empty(s):
        if not isinstance(s, tf.TensorSpec):
            raise TypeError(
                f"hvdagent pads uneven shards with empty batches, which needs dense tensors. "
                f"Received: an element spec {s!r}"
            )
        shape = [0] + [d if d is not None else 0 for d in s.shape.as_list()[1:]]
        return tf.zeros(shape, s.dtype)

    return tf.nest.map_structure(empty, spec)


def equalize(ds, local_steps: int, steps: int, padded_before: int = 0):
    """Append empty batches so that ``ds`` has ``steps`` batches (recorded as split by rank)."""
    if steps <= 0:
        raise ValueError(
            "no rank has any data to train on: every rank's dataset is empty "
            f"(batches per rank: {local_steps} on rank {_hvd.rank()}). Received: an empty dataset"
        )
    if local_steps < steps:
        pad = _tf().data.Dataset.from_tensors(_empty_batch(ds.element_spec)).repeat(steps - local_steps)
        ds = ds.concatenate(pad)
    # A known length lets Keras size its progress bar and epochs exactly.
    return with_steps(ds.apply(_tf().data.experimental.assert_cardinality(steps)), steps,
                      padded=padded_before + steps - local_steps)


def with_steps(ds, steps: int, padded: int = 0):
    """``ds`` (prefetched), recorded as split by rank with ``steps`` batches per epoch."""
    return _record(ds.prefetch(2), SplitFacts(steps=steps, padded=padded))


def steps_of(ds) -> Optional[int]:
    """The steps per epoch of a dataset this module prepared (exactly this object), else None."""
    facts = _FACTS.get(ds)
    return None if facts is None else facts.steps


def padded_steps(ds) -> int:
    """How many empty batches were appended to this rank's data (0 if none, or not known)."""
    facts = split_facts(ds)
    return 0 if facts is None else facts.padded


def shard_batched(ds, shard: bool = True, padded_before: int = 0, what: str = "x"):
    """Split an already batched dataset by batches and equalise step counts.

    The split is checked first: every rank must iterate ``ds`` in the same
    order (its first batch's fingerprint travels with the batch counts, see
    :mod:`hvdagent._data.order`). ``shard=False``: the dataset is this rank's
    already (only the step counts are equalised); ``padded_before``: empty
    batches it already holds; ``what``: the input's name, for the error.
    """
    size, rank = _hvd.size(), _hvd.rank()
    split = shard and size > 1
    mark = order.first_batch_fingerprint(ds) if split else None
    if split:
        ds = ds.shard(size, rank)
    gathered = _hvd.allgather_object((count_batches(ds), mark))
    if split:
        order.check_same([g[1] for g in gathered], what, "dataset")
    counts = [g[0] for g in gathered]
    return equalize(ds, counts[rank], max(counts), padded_before=padded_before)
