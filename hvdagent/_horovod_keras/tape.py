"""Horovod's TensorFlow 2 custom-loop API: ``hvd.DistributedGradientTape`` and
``hvd.PartialDistributedGradientTape``, with Horovod 0.28.1's signatures and meaning.

A custom loop records its step on a ``tf.GradientTape`` and wraps the tape::

    with tf.GradientTape() as tape:
        loss = loss_fn(labels, model(images, training=True))
    tape = hvd.DistributedGradientTape(tape)
    grads = tape.gradient(loss, model.trainable_variables)   # the same on every rank
    opt.apply_gradients(zip(grads, model.trainable_variables))

``gradient`` computes this rank's gradients with the user's tape, then reduces
them across ranks with hvdagent's gradient sync
(:class:`~hvdagent._sync.gradients.GradientSync`: dense gradients fused into
one allreduce per dtype, ``tf.IndexedSlices`` gathered unless
``sparse_as_dense``). As in Horovod: ``op=Average`` (default) is the plain
mean over ranks (Horovod's, not the agent's batch-size weighting: a custom
loop decides its own batches), ``Sum`` the sum, ``Adasum`` Adasum; ``None``
gradients stay ``None``; gradients of *local* sources
(:meth:`DistributedTape.register_local_source`, or the ``local_layers`` of
the partial tape) are not reduced and, with ``scale_local_gradients=True``
(default), are divided by the number of ranks. It works eagerly and inside
``tf.function``.

Horovod builds a subclass of the tape's class at run time and copies the
tape's private state into it; hvdagent wraps the tape instead (recording,
``watch``, ``jacobian``, ... are the tape's own), so the wrapper is not a
``tf.GradientTape`` instance.
"""

from __future__ import annotations

from typing import Any, List, Tuple

from hvdagent import _compat, _hvd
from hvdagent._horovod_keras.api import Average, Compression, reduction_options
from hvdagent._sync.gradients import GradientSync
from hvdagent._sync.options import SyncOptions
from hvdagent._sync.schedule import Schedule

__all__ = ["DistributedGradientTape", "PartialDistributedGradientTape", "DistributedTape"]


def DistributedGradientTape(  # noqa: N802 (a constructor-like factory, as in Horovod)
    gradtape: Any,
    device_dense: str = "",
    device_sparse: str = "",
    compression: Any = Compression.none,
    sparse_as_dense: bool = False,
    op: Any = Average,
    gradient_predivide_factor: float = 1.0,
    num_groups: int = 0,
    groups: Any = None,
    process_set: Any = None,
    scale_local_gradients: bool = True,
):
    """Wrap a ``tf.GradientTape`` so that ``gradient`` returns gradients reduced across ranks.

    Horovod's ``horovod.tensorflow.DistributedGradientTape``, same signature,
    for custom training loops (Keras 3 and tf_keras models alike).

    Args:
        gradtape: the ``tf.GradientTape`` that recorded the step (wrap it after
            the ``with`` block, or wrap a new tape and enter the wrapper).
        device_dense: Horovod's device placement; only ``''`` (default).
        device_sparse: likewise.
        compression: ``hvdagent.Compression.none`` (default; or ``None``),
            ``.fp16`` / ``"fp16"`` or ``.bf16`` / ``"bf16"``: the type floating
            gradients travel in.
        sparse_as_dense: reduce ``tf.IndexedSlices`` gradients as dense
            tensors (default False: they are gathered and stay sparse).
        op: ``hvdagent.Average`` (default: the mean over ranks), ``Sum`` or
            ``Adasum``.
        gradient_predivide_factor: with ``op=Average``, divide by this before
            the sum and multiply by it after (default 1.0).
        num_groups: Horovod's deprecated name for ``groups``; only 0.
        groups: explicit allreduce groups; only None (hvdagent fuses every
            gradient into one allreduce per dtype; the result is the same).
        process_set: only None or Horovod's global process set.
        scale_local_gradients: divide the gradients of local sources (see
            :meth:`DistributedTape.register_local_source`) by the number of
            ranks (default True, as in Horovod).

    Returns:
        A :class:`DistributedTape`.

    Raises:
        TypeError: ``gradtape`` is not a ``tf.GradientTape``.
        ValueError: it is already distributed, or an option is out of range
            or not supported (the message names it).

    Example (one process: the gradients are this rank's own):
        >>> import keras, tensorflow as tf, hvdagent as hvd
        >>> layer = keras.layers.Dense(1, kernel_initializer="ones")
        >>> with tf.GradientTape() as tape:
        ...     loss = tf.reduce_sum(layer(tf.constant([[1.0, 2.0]])))
        >>> tape = hvd.DistributedGradientTape(tape)
        >>> [g.numpy().tolist() for g in tape.gradient(loss, layer.trainable_variables)]
        [[[1.0], [2.0]], [1.0]]
        >>> hvd.DistributedGradientTape(tape)
        Traceback (most recent call last):
        ...
        ValueError: gradtape is already an hvdagent.DistributedGradientTape; wrap the tf.GradientTape once. Received: gradtape=<DistributedTape of GradientTape>
    """
    import tensorflow as tf

    if isinstance(gradtape, DistributedTape):
        raise ValueError("gradtape is already an hvdagent.DistributedGradientTape; wrap the tf.GradientTape once. "
                         f"Received: gradtape={gradtape!r}")
    if not isinstance(gradtape, tf.GradientTape):
        raise TypeError(f"gradtape must be a tf.GradientTape. Received: gradtape={gradtape!r} of type "
                        f"{type(gradtape).__name__}")
    options = reduction_options(device_dense=device_dense, device_sparse=device_sparse, compression=compression,
                                sparse_as_dense=sparse_as_dense, gradient_predivide_factor=gradient_predivide_factor,
                                op=op, num_groups=num_groups, groups=groups, process_set=process_set,
                                scale_local_gradients=scale_local_gradients)
    return DistributedTape(gradtape, SyncOptions(**options), scale_local_gradients)


def PartialDistributedGradientTape(  # noqa: N802 (as in Horovod)
    gradtape: Any,
    device_dense: str = "",
    device_sparse: str = "",
    compression: Any = Compression.none,
    sparse_as_dense: bool = False,
    op: Any = Average,
    gradient_predivide_factor: float = 1.0,
    num_groups: int = 0,
    groups: Any = None,
    process_set: Any = None,
    local_layers: Any = None,
    scale_local_gradients: bool = True,
):
    """A :func:`DistributedGradientTape` that leaves the gradients of ``local_layers`` unreduced.

    Horovod's ``horovod.tensorflow.PartialDistributedGradientTape``: the
    trainable weights of ``local_layers`` are registered as local sources, so
    each rank keeps its own gradient for them (divided by the number of ranks
    when ``scale_local_gradients``, Horovod's default); every other gradient
    is reduced as by :func:`DistributedGradientTape`.

    Args:
        local_layers: a Keras layer, or a list of them (Keras 3 or tf_keras);
            default None: no local layers (then it is
            :func:`DistributedGradientTape`).
        gradtape: the ``tf.GradientTape`` to wrap; every other argument
            (``device_dense`` ... ``scale_local_gradients``) is as in
            :func:`DistributedGradientTape`.

    Returns:
        A :class:`DistributedTape`.

    Raises:
        TypeError: ``local_layers`` holds something that is not a Keras layer.

    Example:
        >>> import keras, tensorflow as tf, hvdagent as hvd
        >>> head = keras.layers.Dense(1)
        >>> with tf.GradientTape() as tape:
        ...     loss = tf.reduce_sum(head(tf.ones((1, 2))))
        >>> tape = hvd.PartialDistributedGradientTape(tape, local_layers=[head])
        >>> len(tape.gradient(loss, head.trainable_variables))
        2
    """
    if local_layers is None:
        layers = []
    elif _compat.is_layer(local_layers):
        layers = [local_layers]
    elif isinstance(local_layers, (list, tuple)) and all(_compat.is_layer(layer) for layer in local_layers):
        layers = list(local_layers)
    else:
        raise TypeError("local_layers must be a Keras layer or a list of Keras layers (keras.layers.Layer or "
                        f"tf_keras.layers.Layer). Received: local_layers={local_layers!r}")
    tape = DistributedGradientTape(gradtape, device_dense=device_dense, device_sparse=device_sparse,
                                   compression=compression, sparse_as_dense=sparse_as_dense, op=op,
                                   gradient_predivide_factor=gradient_predivide_factor, num_groups=num_groups,
                                   groups=groups, process_set=process_set, scale_local_gradients=scale_local_gradients)
    for layer in layers:
        for variable in layer.trainable_weights:
            tape.register_local_source(variable)
    return tape


class DistributedTape:
    """A ``tf.GradientTape`` whose ``gradient`` reduces across ranks (what :func:`DistributedGradientTape` returns).

    Everything but ``gradient`` is the wrapped tape's own: ``watch``,
    ``stop_recording``, ``reset``, ``watched_variables``, ``jacobian``,
    ``batch_jacobian`` (the last two are not reduced, as in Horovod), and
    ``with`` (entering the wrapper records on the wrapped tape).
    """

    def __init__(self, tape, options: SyncOptions, scale_local_gradients: bool):
        self._tape = tape
        # A tape has no epochs, batch sizes or accumulation: only the reduction
        # of GradientSync is used, and its schedule is never read.
        self._sync = GradientSync(options, Schedule())
        self._scale_local = scale_local_gradients
        self._local: dict = {}  # id -> source (kept alive, so that its id stays its own)

    def register_local_source(self, source) -> None:
        """Keep the gradient of ``source`` (a variable or watched tensor) this rank's own.

        It is not reduced; with ``scale_local_gradients`` it is divided by the
        number of ranks.
        """
        self._local[id(source)] = source

    def gradient(self, target, sources, output_gradients=None, use_generic_names=False, unconnected_gradients=None):
        """The gradients of ``target`` with respect to ``sources``, reduced across ranks.

        Args:
            target: what to differentiate (as in ``tf.GradientTape.gradient``).
            sources: a variable, tensor, or a list or nested structure of them.
            output_gradients: as in ``tf.GradientTape.gradient``.
            use_generic_names: Horovod names its collectives ``grad_<i>`` with
                it; accepted for Horovod's signature (hvdagent's names never
                depend on the variables').
            unconnected_gradients: as in ``tf.GradientTape.gradient``
                (default ``'none'``).

        Returns:
            The gradients, in the structure of ``sources``; the same on every
            rank except those of local sources.
        """
        import tensorflow as tf

        grads = self._tape.gradient(target, sources, output_gradients=output_gradients,
                                    unconnected_gradients=unconnected_gradients or tf.UnconnectedGradients.NONE)
        flat_sources, flat_grads = tf.nest.flatten(sources), list(tf.nest.flatten(grads))
        shared = [i for i, s in enumerate(flat_sources) if id(s) not in self._local]
        for i, g in zip(shared, self._sync.reduce([flat_grads[i] for i in shared])):
            flat_grads[i] = g
        if self._scale_local and self._local:
            size = _hvd.size()
            for i, s in enumerate(flat_sources):
                if id(s) in self._local and flat_grads[i] is not None:
                    flat_grads[i] = _divide(flat_grads[i], size)
        return tf.nest.pack_sequence_as(sources, flat_grads)

    def get_local_and_global_gradients(self, target, sources, output_gradients=None,
                                       use_generic_names=False) -> Tuple[List, List]:
        """``gradient``, split into ``(local, global)`` lists of ``(source, gradient)`` pairs (Horovod's)."""
        import tensorflow as tf

        grads = tf.nest.flatten(self.gradient(target, sources, output_gradients, use_generic_names))
        pairs = list(zip(tf.nest.flatten(sources), grads))
        return ([p for p in pairs if id(p[0]) in self._local], [p for p in pairs if id(p[0]) not in self._local])

    def __enter__(self):
        self._tape.__enter__()
        return self

    def __exit__(self, *exc):
        return self._tape.__exit__(*exc)

    def __getattr__(self, name):
        if name.startswith("__") or name in ("_tape", "_sync", "_scale_local", "_local"):
            raise AttributeError(name)
        return getattr(self._tape, name)

    def __repr__(self) -> str:
        return f"<DistributedTape of {type(self._tape).__name__}>"


def _divide(grad, size: int):
    import tensorflow as tf

    if isinstance(grad, tf.IndexedSlices):
        return tf.IndexedSlices(grad.values / size, grad.indices, grad.dense_shape)
    return grad / size
