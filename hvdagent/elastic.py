"""Horovod's elastic Keras API (``horovod.tensorflow.keras.elastic``) on Keras 3 and tf_keras.

For scripts that follow Horovod's elastic recipe with ``model.fit``::

    state = hvd.elastic.KerasState(model, batch=0, epoch=0)
    callbacks = [hvd.elastic.UpdateEpochStateCallback(state),
                 hvd.elastic.UpdateBatchStateCallback(state),
                 hvd.elastic.CommitStateCallback(state)]

    @hvd.elastic.run
    def train(state):
        state.model.fit(dataset, steps_per_epoch=..., epochs=epochs - state.epoch, callbacks=callbacks)

    train(state)

run under ``horovodrun -np 2 --min-np 1 --max-np 4 --host-discovery-script
./hosts.sh python train.py``. When a worker fails, the others restore the
last commit; when the host list changes, every worker stops at its next
commit; the job is re-formed and rank 0's committed state (model and
optimizer variables, and the keyword attributes such as ``epoch``) is given
to every worker before ``train`` runs again.

``DistributedAgent.fit(..., elastic=True)`` does all of this by itself.
"""

from __future__ import annotations

from typing import Any, Callable, List

from hvdagent import _hvd
from hvdagent.callbacks._either_keras import EitherKerasCallback
from hvdagent._runtime import validate
from hvdagent._sync.optimizer import save_as_plain

__all__ = ["KerasState", "CommitStateCallback", "UpdateBatchStateCallback", "UpdateEpochStateCallback", "run"]


def _variables(obj) -> list:
    found = obj.variables
    return list(found() if callable(found) else found)


class KerasState:
    """The in-memory training state of a Keras model and its optimizer.

    Horovod's ``hvd.elastic.KerasState``. Keyword arguments become attributes
    (``state.epoch``, ``state.batch``) that are committed, restored and
    synchronised with the model.

    Args:
        model: a built Keras 3 or tf_keras model.
        optimizer: the optimizer (default: the model's compiled one).
        **kwargs: other values to keep (picklable).

    Raises:
        ValueError: the model is not built, or there is no optimizer.

    Example:
        >>> import keras, hvdagent as hvd
        >>> model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
        >>> model.compile(hvd.DistributedOptimizer(keras.optimizers.SGD(0.1)), loss="mse")
        >>> state = hvd.elastic.KerasState(model, epoch=0, batch=0)
        >>> state.epoch = 3; state.commit(); state.epoch = 7; state.restore(); state.epoch
        3
    """

    def __init__(self, model, optimizer=None, **kwargs):
        if not getattr(model, "built", False):
            raise ValueError(f"the model must be built first: call model.build(input_shape) or fit it once. Received: model={model!r}")
        optimizer = optimizer or getattr(model, "optimizer", None)
        if optimizer is None:
            raise ValueError("KerasState needs an optimizer: compile the model first or pass optimizer=. Received: optimizer=None")
        self.model, self.optimizer = model, optimizer
        save_as_plain(model)  # ModelCheckpoint files of the elastic recipe load without hvdagent
        self._attrs = dict(kwargs)
        for key, value in self._attrs.items():
            setattr(self, key, value)
        self._state = _hvd.make_elastic_state(self)  # its save/restore/sync/reset call ours
        self._save_model()

    # --- what Horovod's State offers (delegated) --------------------------------------
    def commit(self) -> None:
        """Save the state in memory, then check for host changes (raises Horovod's
        ``HostsUpdatedInterrupt`` on every rank when the workers change)."""
        self._state.commit()

    def check_host_updates(self) -> None:
        self._state.check_host_updates()

    def register_reset_callbacks(self, callbacks: List[Callable[[], Any]]) -> None:
        """Functions to call after the job was re-formed (for example to set the
        learning rate for the new number of workers)."""
        self._state.register_reset_callbacks(callbacks)

    def on_reset(self) -> None:
        self._state.on_reset()

    def on_hosts_updated(self, timestamp, update_res) -> None:
        self._state.on_hosts_updated(timestamp, update_res)

    def save(self) -> None:
        self._save()

    def restore(self) -> None:
        self._restore()

    def sync(self) -> None:
        self._sync()

    def reset(self) -> None:
        self._reset()

    # --- the hooks Horovod's State calls -------------------------------------------------
    def _tracked(self) -> list:
        if not getattr(self.optimizer, "built", True):
            self.optimizer.build(self.model.trainable_variables)  # slots exist before they are saved or sent
        return _variables(self.model) + _variables(self.optimizer)

    def _save_model(self) -> None:
        self._saved_values = [v.numpy() for v in self._tracked()]

    def _save(self) -> None:
        self._save_model()
        self._attrs = {key: getattr(self, key) for key in self._attrs}

    def _restore(self) -> None:
        for var, value in zip(self._tracked(), self._saved_values):
            var.assign(value)
        for key, value in self._attrs.items():
            setattr(self, key, value)

    def _sync(self) -> None:
        _hvd.broadcast_variables(self._tracked(), root_rank=0)
        self._save_model()
        if self._attrs:
            self._attrs = _hvd.broadcast_object(self._attrs, root_rank=0, name="hvdagent_elastic_attrs")
            for key, value in self._attrs.items():
                setattr(self, key, value)

    def _reset(self) -> None:
        # The job has a new size: Keras' compiled step functions were traced
        # for the old one (at one rank they hold no collective), so have
        # ``fit``/``evaluate``/``predict`` trace them again.
        for attr in ("train_function", "test_function", "predict_function"):
            if getattr(self.model, attr, None) is not None:
                setattr(self.model, attr, None)


def run(func: Callable) -> Callable:
    """Decorator: run ``func(state, ...)`` in Horovod's elastic loop (``hvd.elastic.run``).

    ``state`` is synchronised from rank 0 before every (re)start; a lost
    worker restores the last commit; a host change re-forms the job. Do not
    call collectives before ``func`` runs: new workers join at that point.
    """
    return _hvd.elastic_run(func)


class CommitStateCallback(EitherKerasCallback):
    """Commit ``state`` every ``batches_per_commit`` batches and at each epoch end.

    Args:
        state: the :class:`KerasState`.
        batches_per_commit: batches between commits (default 1).
    """

    def __init__(self, state, batches_per_commit: int = 1):
        super().__init__()
        validate.integer("batches_per_commit", batches_per_commit, minimum=1)
        self.state, self.batches_per_commit = state, batches_per_commit
        self.batches_remaining = batches_per_commit

    def on_train_begin(self, logs=None):
        self.batches_remaining = self.batches_per_commit  # the same on every rank after a reset

    def on_train_batch_end(self, batch, logs=None):
        self.batches_remaining -= 1
        if self.batches_remaining == 0:
            self.state.commit()
            self.batches_remaining = self.batches_per_commit

    def on_epoch_end(self, epoch, logs=None):
        self.state.commit()


class UpdateBatchStateCallback(EitherKerasCallback):
    """Keep ``state.batch`` at the last finished batch of the epoch (0 at epoch ends).

    As in Horovod, ``fit``'s ``steps`` parameter of the first epoch after a
    reset is shortened by the batches already done (the progress bar's count).
    """

    def __init__(self, state):
        super().__init__()
        self.state = state
        self.steps_per_epoch = None

    def on_train_begin(self, logs=None):
        self.steps_per_epoch = None

    def on_epoch_begin(self, epoch, logs=None):
        if self.params.get("steps"):
            if self.steps_per_epoch is None:
                self.steps_per_epoch = self.params.get("steps")
            self.params["steps"] = self.steps_per_epoch - self.state.batch

    def on_train_batch_end(self, batch, logs=None):
        self.state.batch = batch

    def on_epoch_end(self, epoch, logs=None):
        self.state.batch = 0


class UpdateEpochStateCallback(EitherKerasCallback):
    """Keep ``state.epoch`` at the number of epochs done, across resets
    (``fit`` counts from 0 again after each one)."""

    def __init__(self, state):
        super().__init__()
        self.state = state
        self.initial_epoch = state.epoch

    def on_train_begin(self, logs=None):
        self.initial_epoch = self.state.epoch

    def on_epoch_end(self, epoch, logs=None):
        self.state.epoch = self.initial_epoch + epoch + 1
