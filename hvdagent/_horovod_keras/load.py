"""Horovod's ``hvd.load_model`` for ``import hvdagent as hvd``."""

from __future__ import annotations

import os
from typing import Any

from hvdagent import _compat
from hvdagent._horovod_keras.api import Compression, compression_name
from hvdagent._horovod_keras.optimizer import DistributedOptimizer
from hvdagent._sync.parts import is_distributed
from hvdagent._runtime import validate

__all__ = ["load_model"]


def load_model(filepath, custom_optimizers=None, custom_objects=None, compression: Any = Compression.none,
               legacy_opts: bool = False):
    """Load a saved Keras model and make its optimizer distributed (Horovod's ``hvd.load_model``).

    The optimizer state in the file (slots, iterations, learning rate) is
    kept, so training continues where it stopped. Which Keras reads the file
    follows ``tf.keras`` in this process: Keras 3, or tf_keras under
    ``TF_USE_LEGACY_KERAS=1``. A file that holds an hvdagent optimizer is
    distributed anew with ``compression`` (its other options are Horovod's
    defaults), as Horovod's ``load_model`` does.

    Args:
        filepath: the saved model (``.keras``; ``.h5`` with tf_keras).
        custom_optimizers: optimizer classes of your own that the file uses.
        custom_objects: other custom classes or functions, by name.
        compression: gradient compression of the new distributed optimizer.
        legacy_opts: Horovod's switch for ``tf.keras.optimizers.legacy``;
            tf_keras reads those without it (accepted, no effect).

    Returns:
        The compiled model; ``model.optimizer`` is distributed.

    Raises:
        TypeError: ``custom_optimizers`` is not a list of classes.
        ValueError: the file holds no compiled optimizer.
    """
    objects = dict(custom_objects or {})
    if custom_optimizers is not None:
        if not isinstance(custom_optimizers, (list, tuple)) or not all(isinstance(c, type) for c in custom_optimizers):
            raise TypeError(f"custom_optimizers must be a list of optimizer classes. Received: custom_optimizers={custom_optimizers!r}")
        objects.update({cls.__name__: cls for cls in custom_optimizers})
    validate.boolean("legacy_opts", legacy_opts)
    wire = compression_name(compression)
    gen = _compat.active_generation()
    if gen == _compat.KERAS3:
        import hvdagent._sync.keras3_optimizer  # noqa: F401 (registers the class a file may name)
    keras_module = _compat.keras_module(gen)
    model = keras_module.models.load_model(os.fspath(filepath), custom_objects=objects or None)
    optimizer = getattr(model, "optimizer", None)
    if optimizer is None:
        raise ValueError(
            "the saved model has no optimizer (it was saved uncompiled, or with include_optimizer=False); "
            f"load it with keras.models.load_model and compile it. Received: filepath={os.fspath(filepath)!r}"
        )
    if is_distributed(optimizer):
        # A file written with an hvdagent optimizer: wrap its inner optimizer
        # anew, as Horovod does, so that ``compression`` is the one asked for.
        optimizer = optimizer.inner_optimizer
    model.optimizer = DistributedOptimizer(optimizer, compression=wire)
    return model
