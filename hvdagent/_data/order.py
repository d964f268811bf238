"""Every rank must see the same data in the same order: a cheap check, before a broken split trains.

hvdagent splits a batched ``tf.data.Dataset`` by batch position, numpy arrays
by sample position and a Python generator's stream by position. Each split is
a partition of the data only if every rank holds the same data in the same
order; otherwise some samples are used twice and others never, and nothing
fails: ``evaluate`` is silently wrong. ``import hvdagent`` makes most pipelines
agree (it seeds TensorFlow's and NumPy's global generators alike on every
rank, see :func:`hvdagent._data.shard.align_random_seeds`); this module
catches the rest (a per-rank seed, a dataset the user already split by rank,
a pipeline built before the import) when ``fit``, ``evaluate`` or ``predict``
starts.

The check compares a **fingerprint** per rank: of a dataset's or a
generator's first batch, or of numpy arrays' length and a sample of at most
64 of their rows (every array, inputs included). Every rank computes its own
and the fingerprints travel with a collective the input path makes anyway
(or one small ``allgather_object``), so the check costs the time to produce
one batch. A batch's fingerprint digests what it says about *which* samples
it holds: its targets and sample weights, and its non-floating inputs (text,
token ids), or all of it when there is nothing else. Random augmentation
inside a pipeline (different on every rank) changes floating inputs only and
does not trip it; a first batch whose targets are all equal cannot reveal
its order. Infinite datasets are not checked (an endless stream has no
partition to break; Horovod's recipes give each rank its own order).

Example:
    >>> import numpy as np
    >>> batch = (np.ones((2, 3), "float32"), np.array([0, 1]))
    >>> fingerprint(batch) == fingerprint((np.zeros((2, 3), "float32"), np.array([0, 1])))  # the targets decide
    True
    >>> check_same([fingerprint(batch)] * 2, "x", "dataset")
"""

from __future__ import annotations

import hashlib
from typing import Any, List, Optional

import numpy as np

__all__ = ["fingerprint", "first_batch_fingerprint", "arrays_fingerprint", "check_same"]

_EMPTY = "empty"
_SAMPLED_ROWS = 64


def _arrays(struct) -> List[np.ndarray]:
    import tensorflow as tf

    return [np.asarray(t.numpy() if hasattr(t, "numpy") else t)
            for t in tf.nest.flatten(struct, expand_composites=True) if t is not None]


def fingerprint(batch, everything: bool = False) -> str:
    """A short digest of which samples ``batch`` holds (an element ``(x, y[, sample_weight])`` or ``x``).

    By default floating inputs count only when the batch holds nothing else
    (see the module docstring); ``everything=True`` digests every tensor.
    """
    if isinstance(batch, tuple) and len(batch) >= 2:
        x, rest = batch[0], batch[1:]
    else:
        x, rest = batch, ()
    inputs = _arrays(x)
    chosen = _arrays(rest) + [a for a in inputs if everything or a.dtype.kind not in "fc"]
    h = hashlib.blake2b(digest_size=8)
    for a in chosen or inputs:
        h.update(f"{a.shape}{a.dtype.str}".encode())
        if a.dtype == object:  # strings
            for item in a.ravel():
                b = item if isinstance(item, bytes) else str(item).encode()
                h.update(len(b).to_bytes(8, "little") + b)
        else:
            h.update(np.ascontiguousarray(a))
    return h.hexdigest()


def first_batch_fingerprint(ds) -> str:
    """The fingerprint of a dataset's first batch (one batch is produced; ``"empty"`` for no batch)."""
    for batch in ds.take(1):
        return fingerprint(batch)
    return _EMPTY


def arrays_fingerprint(data, n: Optional[int] = None) -> str:
    """The fingerprint of numpy inputs: their length and at most 64 rows spread over them, every array."""
    import tensorflow as tf

    leaves = [a for a in tf.nest.flatten(data) if a is not None]
    n = int(np.shape(leaves[0])[0]) if n is None else n
    rows = np.unique(np.linspace(0, max(n - 1, 0), num=min(n, _SAMPLED_ROWS)).astype(np.int64))
    sample = tf.nest.map_structure(lambda a: None if a is None else np.asarray(a)[rows], data)
    return f"{n}:{fingerprint(sample, everything=True)}"


_HOW = {
    "dataset": ("its first batch", "a batched dataset by batch position (rank r takes batches r, r+size, ...)",
                "iterates it in the same order",
                "seed its shuffles (keras.utils.text_dataset_from_directory(..., seed=1337), "
                "image_dataset_from_directory(..., seed=1337), dataset.shuffle(n, seed=1)), or build it after "
                "`import hvdagent` without per-rank seeds (under a launcher that import seeds TensorFlow's and "
                "NumPy's global generators alike on every rank)"),
    "arrays": ("their length or sampled rows", "numpy inputs by sample position", "holds the same arrays",
               "build them identically on every rank (seed random splits and shuffles: "
               "np.random.default_rng(0), train_test_split(..., random_state=0))"),
    "generator": ("its first batch", "a generator's stream by position (rank r takes batches r, r+size, ...)",
                  "yields the same stream", "make every rank's generator yield the same stream (seed it alike)"),
}


def check_same(fingerprints: List[Any], what: str, kind: str, per_rank_fix: str = "pass shard=False") -> None:
    """Raise on every rank if the ranks' fingerprints of one input differ.

    ``fingerprints`` are every rank's, in rank order (from a collective, so
    every rank raises the same error); ``what`` names the input (``"x"``,
    ``"validation_data"``), ``kind`` is ``"dataset"``, ``"arrays"`` or
    ``"generator"``.
    """
    if len(set(fingerprints)) <= 1:
        return
    differ = [r for r, fp in enumerate(fingerprints) if fp != fingerprints[0]]
    sees, split, agree, fix = _HOW[kind]
    raise ValueError(
        f"{what} differs across ranks: {sees} on rank(s) {differ} is not rank 0's. hvdagent splits {split}, "
        f"which is a partition of the data only if every rank {agree}; otherwise some samples are used twice "
        f"and others never, and metrics are silently wrong. Fix: {fix}. If each rank holds its own part of "
        f"the data on purpose, {per_rank_fix}. Received: fingerprints by rank {dict(enumerate(fingerprints))}"
    )
