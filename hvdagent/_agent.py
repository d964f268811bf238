"""``DistributedAgent``: a Keras model trained synchronously on every rank."""

from __future__ import annotations

import os
import types
from typing import Any, List, Optional

import numpy as np

from hvdagent import _compat, _hvd, _lr, _metrics, _data
from hvdagent._logging import get_logger
from hvdagent._optimizer import _validate_options, distribute, inner_of, is_distributed

__all__ = ["DistributedAgent"]

log = get_logger(__name__)


class DistributedAgent:
    """Wrap a Keras model for synchronous data-parallel training on Horovod.

    Replace ``model.fit`` by ``agent.fit`` and launch with
    ``horovodrun -np 4 python script.py``; run with plain ``python`` it is
    ordinary single-process Keras.

    * **Batch size is per rank**: the global batch is ``batch_size * size``.
    * **Gradients** are averaged across ranks every step (weighted by each
      rank's batch size), before the optimizer applies them.
    * **Initial state**: model and optimizer variables are broadcast from rank
      0 when ``fit`` starts.
    * **Metrics** in logs, ``History`` and ``evaluate`` are exact global values
      (metric state is summed across ranks), identical on every rank.
    * **Data**: numpy inputs (the same on every rank) and ``tf.data`` datasets
      are split by rank; every rank runs the same number of steps.
    * **Output**: progress bar and file-writing callbacks on rank 0 only.

    Args:
        model: a ``keras.Model`` (Keras 3) or ``tf_keras.Model`` (Keras 2),
            compiled or not.
        scale_lr: multiply the learning rate by the number of ranks (linear
            scaling rule; default True). ``False`` leaves it exactly as given.
        warmup_epochs: with ``scale_lr``, reach the scaled rate linearly over
            this many epochs (default 0: scaled from the first step).
        compression: ``None``, ``"fp16"`` or ``"bf16"`` (default None).
        backward_passes_per_step: batches accumulated per update (default 1).
        op: ``"average"`` (default), ``"sum"`` or ``"adasum"``.
        sparse_as_dense: reduce sparse gradients as dense (default False).
        gradient_predivide_factor: see :func:`hvdagent.DistributedOptimizer`.
        stall_timeout: with several ranks, end the job (exit status 75, with a
            report naming the ranks that stopped) when no training progress is
            made for this many seconds (default 60; None disables).

    Example (``scale_lr``): SGD(0.01), 4 ranks, ``warmup_epochs=2`` trains at
    0.01 at the first step, ramps linearly to 0.04 by the end of epoch 1, then
    stays at 0.04. A ``LearningRateSchedule`` is multiplied the same way.

        >>> import keras, numpy as np, hvdagent
        >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
        >>> agent = hvdagent.DistributedAgent(model, scale_lr=False)
        >>> agent.compile(keras.optimizers.SGD(0.01), loss="mse")
        >>> history = agent.fit(np.ones((8, 4)), np.ones((8, 1)), batch_size=4, epochs=2, verbose=0)
        >>> len(history.history["loss"])
        2
    """

    def __init__(
        self,
        model: Any,
        scale_lr: bool = True,
        warmup_epochs: float = 0,
        compression: Optional[str] = None,
        backward_passes_per_step: int = 1,
        op: str = "average",
        sparse_as_dense: bool = False,
        gradient_predivide_factor: float = 1.0,
        stall_timeout: Optional[float] = 60.0,
    ):
        if not _compat.is_model(model):
            raise TypeError(
                "model must be a keras.Model (Keras 3) or a tf_keras.Model (Keras 2). "
                f"Received: model={model!r} of type {type(model).__name__}"
            )
        if not isinstance(scale_lr, bool):
            raise TypeError(f"scale_lr must be True or False. Received: scale_lr={scale_lr!r}")
        if isinstance(warmup_epochs, bool) or not isinstance(warmup_epochs, (int, float)) or warmup_epochs < 0:
            raise ValueError(f"warmup_epochs must be a number >= 0. Received: warmup_epochs={warmup_epochs!r}")
        if stall_timeout is not None and (isinstance(stall_timeout, bool) or not isinstance(stall_timeout, (int, float)) or stall_timeout <= 0):
            raise ValueError(f"stall_timeout must be a number of seconds > 0, or None to disable. Received: stall_timeout={stall_timeout!r}")
        self.stall_timeout = stall_timeout
        self._options = _validate_options(op, compression, backward_passes_per_step, sparse_as_dense, gradient_predivide_factor)
        _hvd.init()
        self.model = model
        self.scale_lr = scale_lr
        self.warmup_epochs = warmup_epochs if scale_lr else 0
        self._gen = _compat.generation(model)
        if getattr(model, "optimizer", None) is not None and getattr(model, "compiled", getattr(model, "_is_compiled", False)):
            self._distribute_compiled_model()

    # --- set-up -------------------------------------------------------------------
    @property
    def rank(self) -> int:
        return _hvd.rank()

    @property
    def size(self) -> int:
        return _hvd.size()

    @property
    def optimizer(self):
        """The distributed optimizer (``None`` before ``compile``)."""
        return getattr(self.model, "optimizer", None)

    def compile(self, optimizer: Any = "rmsprop", loss: Any = None, metrics: Any = None, **kwargs) -> None:
        """Compile the model with a distributed version of ``optimizer``.

        Takes the arguments of ``keras.Model.compile``. ``optimizer`` may be a
        name (``"adam"``), a config or an instance; an optimizer that is
        already distributed is an error.
        """
        if is_distributed(optimizer):
            raise ValueError(
                "optimizer is already an hvdagent.DistributedOptimizer; pass the plain optimizer to "
                f"agent.compile, the agent distributes it. Received: optimizer={type(optimizer).__name__}"
            )
        opt = _compat.get_optimizer(optimizer, self._gen)
        dist = distribute(opt, **self._options)
        self.model.compile(optimizer=dist, loss=loss, metrics=metrics, **kwargs)
        self._install()

    def _distribute_compiled_model(self) -> None:
        """Keep a compiled model's loss and metrics; make its optimizer distributed."""
        if is_distributed(self.model.optimizer):
            raise ValueError(
                "the model's optimizer is already an hvdagent.DistributedOptimizer; compile the model with the "
                "plain optimizer and let the agent distribute it. "
                f"Received: model.optimizer={type(self.model.optimizer).__name__}"
            )
        self.model.optimizer = distribute(self.model.optimizer, **self._options)
        self._install()

    def _install(self) -> None:
        model = self.model
        _metrics.install(model)
        if not getattr(model, "_hvdagent_steps_installed", False):
            _install_steps(model)
        model.train_function = None
        model.test_function = None
        model.predict_function = None

    def _lr_callbacks(self, steps_per_epoch: int) -> List[Any]:
        """The linear scaling rule: callbacks for a float rate, a wrapper for a schedule."""
        if not self.scale_lr:
            return []
        opt = self.model.optimizer
        if _compat.has_schedule(inner_of(opt)):
            _lr.scale_schedule(opt, self.size, int(self.warmup_epochs * steps_per_epoch))
            return []
        from hvdagent.callbacks._warmup import ScaledWarmup
        from hvdagent.callbacks._scale_lr import ScaleLearningRate

        if self.warmup_epochs == 0:
            return [ScaleLearningRate()]
        return [ScaledWarmup(self.warmup_epochs, steps_per_epoch=steps_per_epoch)]

    def _require_compiled(self, method: str) -> None:
        if not is_distributed(getattr(self.model, "optimizer", None)):
            raise RuntimeError(
                f"call agent.compile(optimizer, loss, ...) before agent.{method}(): the model has no "
                f"distributed optimizer yet. Received: model.optimizer={getattr(self.model, 'optimizer', None)!r}"
            )

    # --- data ---------------------------------------------------------------------
    def _prepare(self, x, y, sample_weight, batch_size, shuffle, seed, shard, for_training, first_epoch=0, skip=0):
        """This rank's training or evaluation dataset (a ``tf.data.Dataset``)."""
        import tensorflow as tf

        if isinstance(x, tf.data.Dataset):
            if y is not None or sample_weight is not None:
                raise ValueError(
                    "with a tf.data.Dataset, y and sample_weight come from the dataset; pass neither. "
                    f"Received: y={type(y).__name__}, sample_weight={type(sample_weight).__name__}"
                )
            if data.is_sharded(x):
                return x
            if not shard and self.size > 1:
                return data.shard_batched(x, shard=False)
            return data.shard_batched(x, shard=True)
        if x is None:
            raise ValueError("x must be numpy arrays or a tf.data.Dataset. Received: x=None")
        if batch_size is None:
            batch_size = 32
        arrays = tuple(a for a in (x, y, sample_weight) if a is not None)
        if not shard:
            return _local_arrays(arrays, batch_size, shuffle and for_training, seed)
        return data.array_dataset(arrays, batch_size, shuffle=shuffle and for_training, seed=seed,
                                  first_epoch=first_epoch, skip=skip)

    # --- the Keras API ----------------------------------------------------------------
    def fit(
        self,
        x: Any = None,
        y: Any = None,
        batch_size: Optional[int] = None,
        epochs: int = 1,
        verbose: Any = "auto",
        callbacks: Optional[list] = None,
        validation_data: Any = None,
        shuffle: bool = True,
        shard: bool = True,
        seed: int = 0,
        checkpoint_dir: Any = None,
        elastic: bool = False,
        batches_per_commit: Optional[int] = None,
        profile: bool = False,
        **kwargs,
    ):
        """Train like ``keras.Model.fit``, synchronously on every rank.

        Extra arguments:
            shard: split the data by rank (default True). With ``False`` each
                rank trains on the data it was given (it must differ per rank).
            seed: the shuffle seed, identical on every rank (default 0).
            checkpoint_dir: save model, optimizer state and progress here at
                the end of every epoch (rank 0, atomically), and resume from
                the latest checkpoint there when ``fit`` starts (default None:
                no checkpoints). See :mod:`hvdagent._checkpoint`.
            elastic: keep training when workers leave or join under
                ``horovodrun --min-np/--max-np`` (default False). See
                :mod:`hvdagent._elastic`.
            batches_per_commit: with ``elastic``, also commit every this many
                batches (default None: at epoch ends only); after a change of
                workers, numpy input resumes inside the epoch, at the first
                sample not yet trained on.
            profile: print, per epoch on rank 0, the time spent computing vs
                in gradient sync, and add ``compute_time``, ``sync_time`` and
                ``sync_fraction`` to the logs (default False). See
                :class:`hvdagent.SyncProfiler`.

        Returns:
            The ``History``; its values are the exact global metrics, the
            same on every rank. A resumed run's history holds the epochs it ran.
        """
        self._require_compiled("fit")
        _validate_fit_args(batch_size, epochs, seed)
        if kwargs.get("validation_split"):
            raise ValueError(
                "validation_split is not supported by agent.fit: split the data yourself and pass validation_data. "
                f"Received: validation_split={kwargs['validation_split']!r}"
            )
        if elastic:
            from hvdagent import _elastic as elastic_module

            return elastic_module.fit(self, epochs, callbacks, batches_per_commit, dict(
                x=x, y=y, batch_size=batch_size, verbose=verbose, validation_data=validation_data,
                shuffle=shuffle, shard=shard, seed=seed, checkpoint_dir=checkpoint_dir, profile=profile, **kwargs))
        skip = int(kwargs.pop("_hvdagent_skip_samples", 0))  # elastic: the done part of an epoch
        user_callbacks = list(callbacks or [])
        if profile:
            from hvdagent._profiler import SyncProfiler

            user_callbacks.insert(0, SyncProfiler())
        ckpt, meta = None, None
        if checkpoint_dir is not None:
            from hvdagent._checkpoint import Checkpointer

            ckpt = Checkpointer(checkpoint_dir)
            ckpt.check_writable()
            meta = ckpt.latest()
            if meta is not None:
                kwargs["initial_epoch"] = max(int(kwargs.get("initial_epoch", 0)), int(meta["epoch"]))
        if self.size == 1 and ckpt is None and skip == 0:
            _lr.unscale(self.model.optimizer)
            return self.model.fit(
                x, y, batch_size=batch_size, epochs=epochs, verbose=verbose,
                callbacks=[_as_model_cb(c, self.model) for c in user_callbacks],
                validation_data=validation_data, shuffle=shuffle, **kwargs,
            )
        if batch_size is not None and kwargs.get("steps_per_epoch") is None and isinstance(x, _tf().data.Dataset):
            raise ValueError(
                "batch_size must be None when x is a tf.data.Dataset (batch the dataset, or use "
                f"hvdagent.shard_dataset). Received: batch_size={batch_size!r}"
            )
        sample_weight = kwargs.pop("sample_weight", None)
        first_epoch = int(kwargs.get("initial_epoch", 0))
        ds = self._prepare(x, y, sample_weight, batch_size, shuffle, seed, shard, for_training=True,
                           first_epoch=first_epoch, skip=skip)
        steps = getattr(ds, data._STEPS_ATTR, None) or kwargs.get("steps_per_epoch") or 1
        val = None
        if validation_data is not None:
            val = self._prepare_validation(validation_data, kwargs.pop("validation_batch_size", None) or batch_size)
        from hvdagent.callbacks import BroadcastGlobalVariablesCallback
        from hvdagent.callbacks._checkpoint import EpochCheckpoint
        from hvdagent.callbacks._sync_stop import SyncStop

        first = []
        if self.stall_timeout is not None and self.size > 1:
            from hvdagent.callbacks._heartbeat import Heartbeat

            first.append(Heartbeat(self.stall_timeout))
        first += [EpochCheckpoint(ckpt, "restore", meta)] if meta is not None else []
        first += [BroadcastGlobalVariablesCallback(0)] + self._lr_callbacks(steps)
        last = [SyncStop(user_callbacks)] + ([EpochCheckpoint(ckpt, "save")] if ckpt is not None else [])
        cbs = first + _rank_filtered(user_callbacks, self._gen) + last
        return self.model.fit(
            ds, epochs=epochs, verbose=verbose if self.rank == 0 else 0,
            callbacks=[_as_model_cb(c, self.model) for c in cbs],
            validation_data=val, shuffle=False, **kwargs,
        )

    def _prepare_validation(self, validation_data, batch_size):
        import tensorflow as tf

        if isinstance(validation_data, tf.data.Dataset):
            return self._prepare(validation_data, None, None, None, False, 0, True, for_training=False)
        if not isinstance(validation_data, (tuple, list)) or len(validation_data) not in (2, 3):
            raise ValueError(
                "validation_data must be (x, y), (x, y, sample_weight) or a tf.data.Dataset. "
                f"Received: validation_data of type {type(validation_data).__name__}"
            )
        vx, vy, vw = (tuple(validation_data) + (None,))[:3]
        return self._prepare(vx, vy, vw, batch_size, False, 0, True, for_training=False)

    def evaluate(self, x: Any = None, y: Any = None, batch_size: Optional[int] = None, verbose: Any = "auto",
                 sample_weight: Any = None, return_dict: bool = False, **kwargs):
        """Evaluate like ``keras.Model.evaluate``, sharded across ranks.

        Returns the exact global loss and metrics (what one process would
        compute on all the data), the same on every rank.
        """
        self._require_compiled("evaluate")
        _validate_fit_args(batch_size, 1, 0)
        if self.size == 1:
            return self.model.evaluate(x, y, batch_size=batch_size, verbose=verbose, sample_weight=sample_weight,
                                       return_dict=return_dict, **kwargs)
        ds = self._prepare(x, y, sample_weight, batch_size, False, 0, True, for_training=False)
        return self.model.evaluate(ds, verbose=verbose if self.rank == 0 else 0, return_dict=return_dict, **kwargs)

    def predict(self, x: Any, batch_size: Optional[int] = None, verbose: Any = "auto", **kwargs):
        """Predict like ``keras.Model.predict``, sharded across ranks.

        Each rank predicts its share; the outputs are gathered back in the
        original sample order and returned on **every** rank. Numpy input only
        for more than one rank (a dataset would have no defined global order).
        """
        _validate_fit_args(batch_size, 1, 0)
        if self.size == 1:
            return self.model.predict(x, batch_size=batch_size, verbose=verbose, **kwargs)
        import tensorflow as tf

        if isinstance(x, tf.data.Dataset):
            raise TypeError(
                "agent.predict over several ranks takes numpy arrays (so the output order is defined). "
                "Received: a tf.data.Dataset; call agent.model.predict on each rank's data instead"
            )
        n = data.num_samples(x)
        part = data.strided_split(x, self.size, self.rank)
        local = None
        if data.num_samples(part) > 0:
            local = self.model.predict(part, batch_size=batch_size, verbose=verbose if self.rank == 0 else 0, **kwargs)
        return data.interleave(_hvd.allgather_object(local, name="hvdagent_predict"), n)

    def save(self, filepath: str, overwrite: bool = True, **kwargs) -> None:
        """Write the model to ``filepath`` (``.keras``) from rank 0; safe on every rank.

        The file holds the plain inner optimizer with the unscaled learning
        rate: it loads with ``keras.models.load_model`` in a process that never
        imports hvdagent or Horovod. All ranks wait until it is written.
        """
        filepath = os.fspath(filepath)
        _compat.check_save_path(filepath, self._gen)
        if self.rank == 0:
            with _compat.plain_optimizer(self.model):
                self.model.save(filepath, overwrite=overwrite, **kwargs)
        _hvd.barrier()

    @classmethod
    def load(cls, filepath: str, **agent_options) -> "DistributedAgent":
        """Load a model saved by :meth:`save` (or by Keras) into a new agent.

        Every rank reads the file; training continues where it stopped, with
        the optimizer state the file holds.
        """
        model = _compat.load_model(os.fspath(filepath), _compat.active_generation())
        return cls(model, **agent_options)


def _tf():
    import tensorflow as tf

    return tf


def _validate_fit_args(batch_size, epochs, seed):
    if batch_size is not None:
        data._validate_batch_size(batch_size)
    if isinstance(epochs, bool) or not isinstance(epochs, (int, np.integer)) or epochs < 0:
        raise ValueError(f"epochs must be an integer >= 0. Received: epochs={epochs!r}")
    data._validate_seed(seed)


def _local_arrays(arrays, batch_size, shuffle, seed):
    """``shard=False``: this rank's own arrays, batched, with equal step counts."""
    tf = _tf()
    n = data.num_samples(arrays)
    ds = tf.data.Dataset.from_tensor_slices(arrays)
    if shuffle:
        ds = ds.shuffle(max(n, 1), seed=seed, reshuffle_each_iteration=True)
    return data.shard_batched(ds.batch(batch_size), shard=False)


def _as_model_cb(cb, model):
    from hvdagent.callbacks._base import for_model

    return for_model(cb, model)


def _rank_filtered(callbacks: list, gen: int) -> list:
    """Callbacks for this rank: file writers on rank 0 only."""
    if _hvd.rank() == 0:
        return callbacks
    writers = _compat.writer_callback_classes(gen)
    backup = _compat.backup_callback_class(gen)
    out = []
    for cb in callbacks:
        if isinstance(cb, writers):
            continue
        if backup is not None and isinstance(cb, backup):
            from hvdagent.callbacks._read_only_backup import ReadOnlyBackup

            out.append(ReadOnlyBackup(cb))
            continue
        out.append(cb)
    return out


def _install_steps(model) -> None:
    """Shadow the model's step functions so empty batches are collective no-ops.

    A rank whose data ran out gets empty batches (see :mod:`hvdagent._data`): it
    skips the forward pass but still joins the gradient reduction with a zero
    weight, so every rank performs the same updates.
    """
    import tensorflow as tf

    train_step, test_step = model.train_step, model.test_step

    def batch_len(batch):
        first = tf.nest.flatten(batch)[0]
        return tf.shape(first)[0]

    def sync_of_model():
        return model.optimizer._hvdagent_sync

    def hvd_train_step(self, batch):
        n = batch_len(batch)
        sync_of_model().set_local_count(n)

        def empty():
            variables = self.trainable_variables
            _compat.apply_gradients(self.optimizer, [tf.zeros_like(v) for v in variables], variables)
            return self.get_metrics_result()

        return tf.cond(n > 0, lambda: train_step(batch), empty)

    def hvd_test_step(self, batch):
        n = batch_len(batch)
        return tf.cond(n > 0, lambda: test_step(batch), lambda: self.get_metrics_result())

    object.__setattr__(model, "train_step", types.MethodType(hvd_train_step, model))
    object.__setattr__(model, "test_step", types.MethodType(hvd_test_step, model))
    object.__setattr__(model, "_hvdagent_steps_installed", True)
