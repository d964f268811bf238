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
"""

from __future__ import annotations

import math
from typing import Any, Optional

import numpy as np

from hvdagent import _hvd, _validate

__all__ = ["shard_dataset"]

_STEPS_ATTR = "_hvdagent_steps"
_PADDED_ATTR = "_hvdagent_padded"


def _tf():
    import tensorflow as tf

    return tf


def _validate_batch_size(batch_size, name="batch_size"):
    _validate.integer(name, batch_size, minimum=1, hint=" (the per-rank batch size)")


def align_random_seeds(environ=None) -> None:
    """Make unseeded ``tf.data`` shuffles iterate in the same order on every rank.

    A batched dataset is split across ranks by batch index, which is a
    partition only if every rank sees the batches in the same order. An
    unseeded ``dataset.shuffle(...)`` draws its seed from TensorFlow's global
    seed; setting that seed identically on every rank (as ``tf.data``'s own
    auto-sharding expects) makes every rank's pipeline, built by the same
    script, iterate identically. Called when ``hvdagent`` is imported in a
    launched process, so it precedes the user's pipelines. The seed is
    ``HVDAGENT_SEED`` (default 0); ``HVDAGENT_SEED=off`` leaves TensorFlow's
    global seed alone.
    """
    import os

    environ = os.environ if environ is None else environ
    value = environ.get("HVDAGENT_SEED", "0")
    if value.lower() == "off":
        return
    import tensorflow as tf

    tf.random.set_seed(int(value))


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
        of batches. ``agent.fit`` does not shard it again.

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
        _validate_batch_size(batch_size)
    _validate.integer("seed", seed, minimum=0)
    size, rank = _hvd.size(), _hvd.rank()
    n_total = int(dataset.cardinality())
    ds = dataset.shard(size, rank) if size > 1 else dataset
    if shuffle:
        buffer = n_total if n_total > 0 else 10_000
        ds = ds.shuffle(max(1, math.ceil(buffer / size)), seed=seed, reshuffle_each_iteration=True)
    if batch_size is None:
        return ds
    ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    if n_total >= 0:
        local = [_shard_len(n_total, size, r) for r in range(size)]
        counts = [(n // batch_size) if drop_remainder else math.ceil(n / batch_size) for n in local]
    else:
        counts = _hvd.allgather_object(count_batches(ds))
    return equalize(ds, counts[rank], max(counts))


def _shard_len(n: int, size: int, rank: int) -> int:
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


def equalize(ds, local_steps: int, steps: int):
    """Append empty batches so that ``ds`` has ``steps`` batches."""
    if steps <= 0:
        raise ValueError(
            "no rank has any data to train on: every rank's dataset is empty "
            f"(batches per rank: {local_steps} on rank {_hvd.rank()}). Received: an empty dataset"
        )
    if local_steps < steps:
        pad = _tf().data.Dataset.from_tensors(_empty_batch(ds.element_spec)).repeat(steps - local_steps)
        ds = ds.concatenate(pad)
    # A known length lets Keras size its progress bar and epochs exactly.
    ds = with_steps(ds.apply(_tf().data.experimental.assert_cardinality(steps)), steps)
    setattr(ds, _PADDED_ATTR, steps - local_steps)
    return ds


def padded_steps(ds) -> int:
    """How many empty batches :func:`equalize` appended to this rank's dataset."""
    return int(getattr(ds, _PADDED_ATTR, 0))


def with_steps(ds, steps: int):
    """``ds`` (prefetched) marked as holding ``steps`` batches per epoch on this rank."""
    ds = ds.prefetch(2)
    setattr(ds, _STEPS_ATTR, steps)
    return ds


def steps_of(ds) -> Optional[int]:
    """The steps per epoch of a dataset from this module, else None."""
    return getattr(ds, _STEPS_ATTR, None)


def is_sharded(ds) -> bool:
    return getattr(ds, _STEPS_ATTR, None) is not None


def shard_batched(ds, shard: bool = True):
    """Split an already batched dataset by batches and equalise step counts."""
    size, rank = _hvd.size(), _hvd.rank()
    if shard and size > 1:
        ds = ds.shard(size, rank)
    counts = _hvd.allgather_object(count_batches(ds))
    return equalize(ds, counts[rank], max(counts))


class _EpochPermutation:
    """Yields one permutation of ``range(n)`` per epoch, identical on every rank."""

    def __init__(self, n: int, seed: int, first_epoch: int = 0):
        self.n, self.seed, self.epoch = n, seed, first_epoch

    def __call__(self):
        rng = np.random.default_rng([self.seed, self.epoch])
        self.epoch += 1
        yield rng.permutation(self.n).astype(np.int64)


def num_samples(arrays) -> int:
    tf = _tf()
    lengths = {int(np.shape(a)[0]) for a in tf.nest.flatten(arrays) if a is not None}
    if len(lengths) != 1:
        raise ValueError(f"all input arrays must have the same number of samples. Received lengths: {sorted(lengths)}")
    return lengths.pop()


def array_dataset(arrays, batch_size: int, shuffle: bool = False, seed: int = 0, drop_remainder: bool = False,
                  first_epoch: int = 0, skip: int = 0):
    """A per-rank dataset over numpy arrays (x, y, sample_weight structure).

    The shuffle order of epoch ``e`` depends only on ``seed`` and ``e``
    (``first_epoch`` is the epoch its first iteration is), so a resumed run
    sees the same batches as an uninterrupted one. ``skip`` leaves out the
    first ``skip`` positions of every epoch's order (elastic training resumes
    a partly done epoch with it, for one epoch).
    """
    tf = _tf()
    _validate_batch_size(batch_size)
    n = num_samples(arrays)
    size, rank = _hvd.size(), _hvd.rank()
    global_batch = batch_size * size
    if drop_remainder:
        n_used = (n // global_batch) * global_batch
    else:
        n_used = n
    if shuffle:
        idx = tf.data.Dataset.from_generator(
            _EpochPermutation(n, seed, first_epoch), output_signature=tf.TensorSpec([n], tf.int64)
        ).unbatch()
    else:
        idx = tf.data.Dataset.range(n)
    skip = min(max(int(skip), 0), n_used)
    n_used -= skip
    idx = idx.skip(skip).take(n_used).shard(size, rank).batch(batch_size)
    tensors = tf.nest.map_structure(lambda a: None if a is None else tf.convert_to_tensor(a), arrays)
    ds = idx.map(
        lambda i: tf.nest.map_structure(lambda t: None if t is None else tf.gather(t, i), tensors),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True,
    )
    steps = math.ceil(_shard_len(n_used, size, 0) / batch_size)
    local = math.ceil(_shard_len(n_used, size, rank) / batch_size)
    return equalize(ds, local, steps)


def strided_split(arrays, size: int, rank: int):
    """Rank ``rank``'s strided share of array inputs (for predict)."""
    tf = _tf()
    return tf.nest.map_structure(lambda a: None if a is None else a[rank::size], arrays)


def interleave(parts: list, n: int) -> np.ndarray:
    """Undo :func:`strided_split`: merge per-rank outputs back in sample order."""
    tf = _tf()
    size = len(parts)
    template = next(p for p in parts if p is not None)

    def merge(*leaves):
        first = next(leaf for leaf in leaves if leaf is not None and len(leaf))
        out = np.empty((n,) + tuple(first.shape[1:]), dtype=first.dtype)
        for r, leaf in enumerate(leaves):
            if leaf is not None and len(leaf):
                out[r::size] = leaf
        return out

    filled = [p if p is not None else tf.nest.map_structure(lambda _: None, template) for p in parts]
    return tf.nest.map_structure(merge, *filled)
