"""``DistributedAgent``: a Keras model trained synchronously on every rank."""

from __future__ import annotations

import os
from typing import Any, Optional, Sequence

from hvdagent import _compat, _hvd
from hvdagent._agent import callbacks as _callbacks
from hvdagent._agent import steps as _steps
from hvdagent._data import inputs as _inputs
from hvdagent._data import shard as _data
from hvdagent._runtime import validate as _validate
from hvdagent._sync.batchnorm import check_synchronized_batchnorm
from hvdagent._sync.optimizer import distribute_held, distributed_optimizers, held_optimizers
from hvdagent._sync.options import SyncOptions
from hvdagent._sync.parts import is_distributed, parts_of
from hvdagent._sync.replicas import CHECKS, check_replicas
from hvdagent._sync.schedule import EpochPlan
from hvdagent._sync.statistics import StatisticsSync

__all__ = ["DistributedAgent"]


class DistributedAgent:
    """Wrap a Keras model for synchronous data-parallel training on Horovod.

    Replace ``model.fit`` by ``agent.fit`` and launch with
    ``horovodrun -np 4 python script.py``; run with plain ``python`` it is
    ordinary single-process Keras, and Horovod need not be installed.

    The batch size is per rank; gradients are averaged every step (weighted
    by batch size); rank 0's variables are broadcast when ``fit`` starts;
    metrics are exact global values; every input ``model.fit`` accepts is
    split by rank; output and files come from rank 0.

    Args:
        model: a ``keras.Model`` (Keras 3) or ``tf_keras.Model`` (Keras 2),
            compiled or not.
        scale_lr: multiply the learning rate by the number of ranks while
            updating (linear scaling rule; default True). The optimizer keeps
            the rate you gave: saved files hold it. ``False``: no scaling.
        warmup_epochs: with ``scale_lr``, reach the scaled rate linearly over
            this many epochs (default 0: scaled from the first step).
        compression: ``None`` (default), ``"fp16"`` or ``"bf16"`` (the type
            gradients travel in), or ``hvdagent.PowerSGD(rank=..., start_step=...)``
            (low-rank compression with error feedback, for slow networks).
        backward_passes_per_step: batches accumulated per update (default 1).
        op: ``"average"`` (default), ``"sum"`` or ``"adasum"``.
        sparse_as_dense: reduce sparse gradients as dense (default False).
        gradient_predivide_factor: see :func:`hvdagent.DistributedOptimizer`.
        stall_timeout: with several ranks, end the job when no training
            progress is made for this many seconds (see the README's
            reliability section; None disables).
        sync_every: local SGD: ``1`` (default) reduces gradients every step;
            ``N > 1`` lets each rank apply its own gradients and averages the
            weights every ``N`` updates and at the end of every epoch.
        local_sgd_warmup_epochs: with ``sync_every > 1``, epochs of every-step
            gradient sync before local SGD starts (post-local SGD; default 0).
        check_replicas: compare the trainable weights across ranks (a hash
            of each, one small collective) and raise
            :class:`hvdagent.ReplicaDivergenceError` naming the variables that
            differ: ``"end"`` (default) when ``fit`` ends, ``"epoch"`` also
            at the end of every epoch (before its checkpoint is written),
            ``None`` never.
        replica_tolerance: how far a rank's weight may be from the mean over
            ranks, relative to the variable's largest magnitude (at least 1),
            before the check fails (default 1e-6; TensorFlow's sparse updates
            on CPU differ by a few 1e-9 between ranks).

    Every optimizer the model holds is made distributed: ``model.optimizer``
    and any other a custom ``compile`` keeps as an attribute (keras-io's GAN:
    ``self.d_optimizer``, ``self.g_optimizer``), each with the same options,
    learning-rate scaling and batch-size weighting. A ``train_step`` that
    applies an optimizer the model does not hold is an error when the step is
    first traced.

    Example (``scale_lr``): SGD(0.01), 4 ranks, ``warmup_epochs=2`` trains at
    0.01 at the first step, ramps linearly to 0.04 by the end of epoch 2, then
    stays at 0.04. A ``LearningRateSchedule`` is multiplied the same way.

        >>> import keras, numpy as np, hvdagent
        >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
        >>> agent = hvdagent.DistributedAgent(model, scale_lr=False)
        >>> agent.compile(keras.optimizers.SGD(0.01), loss="mse")
        >>> history = agent.fit(np.ones((8, 4)), np.ones((8, 1)), batch_size=4, epochs=2, verbose=0)
        >>> len(history.history["loss"])
        2
    """

    def __init__(self, model: Any, scale_lr: bool = True, warmup_epochs: float = 0,
                 compression: Any = None, backward_passes_per_step: int = 1, op: str = "average",
                 sparse_as_dense: bool = False, gradient_predivide_factor: float = 1.0,
                 stall_timeout: Optional[float] = 600.0, sync_every: int = 1, local_sgd_warmup_epochs: float = 0,
                 check_replicas: Optional[str] = "end", replica_tolerance: float = 1e-6):
        if not _compat.is_model(model):
            raise TypeError("model must be a keras.Model (Keras 3) or a tf_keras.Model (Keras 2). "
                            f"Received: model={model!r} of type {type(model).__name__}")
        self.scale_lr = _validate.boolean("scale_lr", scale_lr)
        self.warmup_epochs = _validate.number("warmup_epochs", warmup_epochs, minimum=0)
        if warmup_epochs and not scale_lr:
            raise ValueError("warmup_epochs ramps the learning rate up to the scaled one; with scale_lr=False there "
                             f"is nothing to ramp. Received: scale_lr=False, warmup_epochs={warmup_epochs!r}")
        self.stall_timeout = _validate.optional(_validate.number, "stall_timeout", stall_timeout, minimum=0,
                                                exclusive=True, hint=" (seconds), or None to disable")
        self.local_sgd_warmup_epochs = _validate.number("local_sgd_warmup_epochs", local_sgd_warmup_epochs, minimum=0)
        self.check_replicas = _validate.one_of("check_replicas", check_replicas, (None,) + CHECKS)
        self.replica_tolerance = _validate.number("replica_tolerance", replica_tolerance, minimum=0)
        self._options = SyncOptions(op=op, compression=compression, backward_passes_per_step=backward_passes_per_step,
                                    sparse_as_dense=sparse_as_dense,
                                    gradient_predivide_factor=gradient_predivide_factor, sync_every=sync_every)
        self.model = model
        self._gen = _compat.generation(model)
        self._functions: dict = {}  # compiled step functions, see _steps.distributed
        self._stats = StatisticsSync()
        if getattr(model, "optimizer", None) is not None and _compat.is_compiled(model):
            self._distribute()

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

    def compile(self, *args: Any, **kwargs: Any) -> None:
        """Compile the model with the arguments of its own ``compile``, then make its optimizers distributed.

        Keras' ``compile(optimizer="rmsprop", loss=None, metrics=None, ...)``
        (``optimizer`` a name, a config or an instance), or a custom
        signature such as keras-io's GAN's ``compile(d_optimizer,
        g_optimizer, loss_fn)``: the arguments go to ``model.compile`` as
        given. Then every optimizer the compiled model holds (see the class
        docstring) becomes distributed; one that already is is an error.
        Keras remembers the plain optimizer, so every file saved later holds it.
        """
        for value in list(args) + list(kwargs.values()):
            if is_distributed(value):
                raise ValueError("optimizer is already an hvdagent.DistributedOptimizer; pass the plain optimizer to "
                                 f"agent.compile, the agent distributes it. Received: optimizer={type(value).__name__}")
        self.model.compile(*args, **kwargs)
        self._distribute()

    def _distribute(self) -> None:
        distribute_held(self.model, self._options)
        self._functions.clear()

    def _require_compiled(self, method: str) -> None:
        if not is_distributed(getattr(self.model, "optimizer", None)):
            raise RuntimeError(f"call agent.compile(optimizer, loss, ...) before agent.{method}(): the model has no "
                               f"distributed optimizer yet. Received: model.optimizer={self.optimizer!r}")

    # --- the Keras API ----------------------------------------------------------------
    def fit(self, x: Any = None, y: Any = None, batch_size: Optional[int] = None, epochs: int = 1,
            verbose: Any = "auto", callbacks: Optional[list] = None, validation_data: Any = None,
            shuffle: bool = True, shard: bool = True, seed: int = 0, checkpoint_dir: Any = None,
            elastic: bool = False, batches_per_commit: Optional[int] = None, profile: bool = False, **kwargs):
        """Train like ``keras.Model.fit``, synchronously on every rank.

        Takes every argument of ``keras.Model.fit``; ``steps_per_epoch`` and
        ``validation_steps`` count this rank's steps. Extra arguments:
        ``shard`` (default True; False: each rank trains on the data it was
        given), ``seed`` (the shuffle seed, default 0), ``checkpoint_dir``
        (save every epoch on rank 0, atomically, and resume from there),
        ``elastic`` and ``batches_per_commit`` (keep training while workers
        leave or join under ``horovodrun --min-np/--max-np``), ``profile``
        (compute vs sync time per epoch, then the predicted best way to sync on this network: see
        :class:`hvdagent.SyncProfiler` and ``python -m hvdagent advise``).

        Returns:
            The ``History``: exact global metrics, the same on every rank.
        """
        self._require_compiled("fit")
        if (checkpoint_dir is not None or elastic) and len(distributed_optimizers(self.model)) > 1:
            held = [f"model.{where}" for where, _ in held_optimizers(self.model)]
            raise ValueError(
                "checkpoint_dir and elastic=True save and restore the state of one optimizer, and this model holds "
                f"several ({', '.join(held)}): their state would be lost at a resume. Train it without them "
                "(save the sub-models yourself on rank 0 to keep the weights). "
                f"Received: checkpoint_dir={checkpoint_dir!r}, elastic={elastic!r}"
            )
        if batch_size is not None:
            _validate.batch_size(batch_size)
        _validate.integer("epochs", epochs, minimum=0)
        _validate.integer("seed", seed, minimum=0)
        _validate.boolean("shard", shard)
        fit_args = dict(x=x, y=y, batch_size=batch_size, verbose=verbose, validation_data=validation_data,
                        shuffle=shuffle, shard=shard, seed=seed, checkpoint_dir=checkpoint_dir, profile=profile,
                        **kwargs)
        if _validate.boolean("elastic", elastic):
            from hvdagent._agent import elastic as _elastic

            return _elastic.fit(self._fit, self.model, epochs, callbacks, batches_per_commit, fit_args)
        if batches_per_commit is not None:
            raise ValueError(f"batches_per_commit needs elastic=True. Received: batches_per_commit={batches_per_commit!r}")
        return self._fit(epochs=epochs, callbacks=callbacks, **fit_args)

    def _fit(self, *, x, y, batch_size, epochs, verbose, callbacks, validation_data, shuffle, shard, seed,
             checkpoint_dir, profile, skip: int = 0, extra_callbacks: Sequence[Any] = (), **kwargs):
        """The one training path (``fit`` and elastic training call it)."""
        sample_weight = kwargs.pop("sample_weight", None)
        split = kwargs.pop("validation_split", 0.0)
        if split:
            (x, y, sample_weight), held_out = _inputs.split_validation(x, y, sample_weight, split)
            validation_data = held_out if validation_data is None else validation_data
        checkpointer, meta = None, None
        if checkpoint_dir is not None:
            from hvdagent._agent.checkpoint import Checkpointer

            checkpointer = Checkpointer(checkpoint_dir)
            checkpointer.check_writable()
            meta = checkpointer.latest()
            if meta is not None:
                kwargs["initial_epoch"] = max(int(kwargs.get("initial_epoch", 0)), int(meta["epoch"]))
        steps = kwargs.pop("steps_per_epoch", None)
        ds = _inputs.prepare(x, y, sample_weight, batch_size=batch_size, steps=steps, shuffle=shuffle, seed=seed,
                             shard=shard, first_epoch=int(kwargs.get("initial_epoch", 0)), skip=skip)
        val_steps = kwargs.pop("validation_steps", None)
        val = None
        if validation_data is not None:
            val = _inputs.validation(validation_data, kwargs.pop("validation_batch_size", None) or batch_size, val_steps)
        per_epoch = steps or _data.steps_of(ds)
        check_synchronized_batchnorm(self.model, _data.padded_steps(ds))
        _steps.check_xla(self.model)
        self._configure(per_epoch)
        _compat.build_from_spec(self.model, ds.element_spec)
        guard = self._replica_check if self.check_replicas == "epoch" else None
        cbs = _callbacks.for_fit(self.model, callbacks, stall_timeout=self.stall_timeout, checkpointer=checkpointer,
                                 resume_meta=meta, profile=profile, extra=extra_callbacks, replica_check=guard)
        with _steps.distributed(self.model, self._functions, self._stats):
            history = self.model.fit(ds, epochs=epochs, verbose=verbose if self.rank == 0 else 0, callbacks=cbs,
                                     validation_data=val, shuffle=False, steps_per_epoch=steps,
                                     validation_steps=val_steps if val is not None else None, **kwargs)
        if self.check_replicas is not None:
            self._replica_check("after fit")
        return history

    def _replica_check(self, when: str) -> None:
        check_replicas(self.model.trainable_variables, self.replica_tolerance, when)

    def _configure(self, steps_per_epoch: int) -> None:
        """This fit's epoch plan (learning-rate scale, local-SGD start, epoch length), set once."""
        plan = EpochPlan.for_fit(batches_per_epoch=steps_per_epoch, size=self.size,
                                 backward_passes_per_step=self._options.backward_passes_per_step,
                                 scale_lr=self.scale_lr, warmup_epochs=self.warmup_epochs,
                                 local_sgd_warmup_epochs=self.local_sgd_warmup_epochs)
        for optimizer in distributed_optimizers(self.model):
            parts_of(optimizer).schedule.set(plan)
        self._stats.start()

    def evaluate(self, x: Any = None, y: Any = None, batch_size: Optional[int] = None, verbose: Any = "auto",
                 sample_weight: Any = None, steps: Optional[int] = None, return_dict: bool = False, **kwargs):
        """Evaluate like ``keras.Model.evaluate``, sharded across ranks.

        Returns the exact global loss and metrics (what one process would
        compute on all the data), the same on every rank.
        """
        self._require_compiled("evaluate")
        if batch_size is not None:
            _validate.batch_size(batch_size)
        ds = _inputs.prepare(x, y, sample_weight, batch_size=batch_size, steps=steps)
        _compat.build_from_spec(self.model, ds.element_spec)
        with _steps.distributed(self.model, self._functions, self._stats):
            return self.model.evaluate(ds, verbose=verbose if self.rank == 0 else 0, steps=steps,
                                       return_dict=return_dict, **kwargs)

    def predict(self, x: Any, batch_size: Optional[int] = None, verbose: Any = "auto", **kwargs):
        """Predict like ``keras.Model.predict``, sharded across ranks.

        Each rank predicts its share; the outputs are gathered back in the
        original order (of samples, or of a dataset's batches) and returned on
        **every** rank.
        """
        from hvdagent._agent.predict import predict

        if batch_size is not None:
            _validate.batch_size(batch_size)
        return predict(self.model, x, batch_size=batch_size, verbose=verbose if self.rank == 0 else 0, **kwargs)

    def save(self, filepath: str, overwrite: bool = True, **kwargs) -> None:
        """Write the model to ``filepath`` (``.keras``) from rank 0; safe on every rank.

        The file holds the plain inner optimizer with the unscaled learning
        rate: it loads with ``keras.models.load_model`` in a process that never
        imports hvdagent or Horovod. All ranks wait until it is written.
        """
        filepath = os.fspath(filepath)
        _compat.check_save_path(filepath, self._gen)
        if self.rank == 0:
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
