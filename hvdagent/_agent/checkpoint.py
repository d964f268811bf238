"""Epoch checkpoints for ``agent.fit(..., checkpoint_dir=PATH)``: save, resume.

At the end of every epoch rank 0 writes the model's state (weights and RNG
seed state), the optimizer's state (slots, iteration count, the *unscaled*
learning rate) and the number of completed epochs. Writes are atomic: the
arrays go to a temporary file that is renamed into place, then ``latest.json``
is replaced to point at it, so a crash at any moment leaves the previous
checkpoint intact. Running the same command again makes every rank read the
latest checkpoint and continue with the next epoch; the data order of each
epoch depends only on the seed and the epoch number, so a resumed run ends
with the weights of an uninterrupted one. A checkpoint written with another
number of ranks resumes the same way (the learning rate is rescaled for the
new size).

The gradient sync's own state is saved with it: with ``compression=
PowerSGD(...)``, its warm-start ``Q`` and error buffers. Error buffers are
per rank; before every save all ranks replace theirs by the average over
ranks (:meth:`hvdagent._sync.gradients.GradientSync.share_state`, which does
not change what training does next), so rank 0's file holds the state of
every rank, on any number of ranks. A checkpoint without that state (written
without PowerSGD) resumes with PowerSGD's state fresh; one written with a
different compressor's state is an error.
"""

from __future__ import annotations

import json
import os
import tempfile
from typing import Any, List, Optional

import keras
import numpy as np

from hvdagent import _compat, _hvd
from hvdagent._sync.parts import parts_of
from hvdagent._watchdog.pause import paused as watchdog_paused
from hvdagent._runtime.log import get_logger

log = get_logger(__name__)

LATEST = "latest.json"
FORMAT = 1


def _name(v) -> str:
    return getattr(v, "path", None) or v.name


def state_variables(model) -> List[Any]:
    """Model variables (weights and RNG state), then the inner optimizer's, then
    the gradient sync's (:func:`sync_variables`)."""
    _compat.build_optimizer(model)
    out = list(model.variables)
    opt = getattr(model, "optimizer", None)
    if opt is not None:
        out += list(opt.variables)  # the distributed optimizer lists the variables of the one it applies through
    return out + sync_variables(model)


def sync_variables(model) -> List[Any]:
    """The gradient sync's saved state (PowerSGD's), the last of :func:`state_variables`."""
    parts = parts_of(getattr(model, "optimizer", None))
    return parts.sync.state_variables() if parts is not None else []


def share_sync_state(model) -> None:
    """Make the gradient sync's state the same on every rank before it is saved
    (a collective: every rank calls it at the same point)."""
    parts = parts_of(getattr(model, "optimizer", None))
    if parts is not None:
        parts.sync.share_state()


def snapshot(model) -> List[np.ndarray]:
    """Copies of every state variable (the learning rate is the unscaled one at rest)."""
    return [np.array(v.numpy()) for v in state_variables(model)]


def load_arrays(model, arrays: List[np.ndarray], source: str = "the saved state", names=None,
                variables=None) -> None:
    """Assign :func:`snapshot` arrays back (to ``variables``, default :func:`state_variables`).

    Raises:
        ValueError: the arrays do not fit the model (another architecture or
            optimizer), naming the first variable that differs.
    """
    variables = state_variables(model) if variables is None else variables
    names = names or []
    if len(arrays) != len(variables):
        raise ValueError(
            f"{source} holds {len(arrays)} variables but the model and optimizer have "
            f"{len(variables)}: it was written for a different architecture or optimizer. "
            f"Received: saved variables {names[:6]}..., model variables {[_name(v) for v in variables][:6]}..."
        )
    for i, (v, a) in enumerate(zip(variables, arrays)):
        if tuple(v.shape) != tuple(a.shape):
            raise ValueError(
                f"{source} does not fit this model: variable {_name(v)!r} has shape {list(v.shape)} "
                f"but the saved {names[i] if i < len(names) else i!r} has shape {list(a.shape)} "
                "(a different architecture). Use another checkpoint_dir or the matching model."
            )
    for v, a in zip(variables, arrays):
        v.assign(a)


class Checkpointer:
    """Reads and writes one checkpoint directory (see the module docstring)."""

    def __init__(self, directory: Any):
        if not isinstance(directory, (str, os.PathLike)) or not str(directory):
            raise TypeError(f"checkpoint_dir must be a path (str or os.PathLike). Received: checkpoint_dir={directory!r}")
        self.directory = os.fspath(directory)

    def check_writable(self) -> None:
        """Raise ValueError on every rank if rank 0 cannot write the directory."""
        problem = None
        if _hvd.rank() == 0:
            try:
                os.makedirs(self.directory, exist_ok=True)
                with tempfile.NamedTemporaryFile(dir=self.directory, prefix=".write-test-"):
                    pass
            except OSError as err:
                problem = f"{type(err).__name__}: {err.strerror or err}"
        problem = _hvd.broadcast_object(problem, name="hvdagent_ckpt_writable")
        if problem:
            raise ValueError(
                f"checkpoint_dir is not writable by rank 0 ({problem}); pass a directory you can write. "
                f"Received: checkpoint_dir={self.directory!r}"
            )

    def latest(self) -> Optional[dict]:
        """The latest checkpoint's metadata, or None (read on every rank)."""
        path = os.path.join(self.directory, LATEST)
        if not os.path.exists(path):
            return None
        with open(path) as f:
            meta = json.load(f)
        if meta.get("format") != FORMAT:
            raise ValueError(f"{path} was written by an incompatible hvdagent (format {meta.get('format')!r}, expected {FORMAT})")
        return meta

    def save(self, model, epochs_done: int) -> None:
        """Write the state after ``epochs_done`` epochs (every rank calls it; rank 0 writes)."""
        share_sync_state(model)
        if _hvd.rank() != 0:
            return
        variables = state_variables(model)
        arrays = {f"v{i}": a for i, a in enumerate(snapshot(model))}
        names = [_name(v) for v in variables]
        data_name = f"ckpt-{epochs_done:06d}.npz"
        self._atomic_write(data_name, lambda f: np.savez(f, **arrays), binary=True)
        meta = {"format": FORMAT, "epoch": epochs_done, "size": _hvd.size(), "file": data_name, "variables": names,
                "shapes": [list(a.shape) for a in arrays.values()], "sync_variables": len(sync_variables(model))}
        self._atomic_write(LATEST, lambda f: json.dump(meta, f, indent=1), binary=False)
        for old in os.listdir(self.directory):
            if old.startswith("ckpt-") and old.endswith(".npz") and old != data_name:
                try:
                    os.remove(os.path.join(self.directory, old))
                except OSError:
                    pass
        log.info("checkpoint: epoch %d saved to %s", epochs_done, os.path.join(self.directory, data_name))

    def _atomic_write(self, name: str, write, binary: bool) -> None:
        fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=f".{name}.tmp-")
        try:
            with os.fdopen(fd, "wb" if binary else "w") as f:
                write(f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, os.path.join(self.directory, name))
        except BaseException:
            if os.path.exists(tmp):
                os.remove(tmp)
            raise

    def restore(self, model, meta: dict) -> None:
        """Load the checkpoint ``meta`` points to into ``model`` (every rank)."""
        path = os.path.join(self.directory, meta["file"])
        with np.load(path) as data:
            arrays = [data[f"v{i}"] for i in range(len(data.files))]
        variables, now = state_variables(model), sync_variables(model)
        saved = int(meta.get("sync_variables", 0))
        saved_shapes = [list(x) for x in meta.get("shapes", [])[len(arrays) - saved:]] if saved else []
        if saved == 0 and now:
            variables = variables[: len(variables) - len(now)]
            log.info("checkpoint: %s holds no gradient-compression state; PowerSGD starts fresh", path)
        elif saved_shapes != [list(v.shape) for v in now]:
            raise ValueError(
                f"the checkpoint {path} holds the state of another gradient compression (PowerSGD state of shapes "
                f"{saved_shapes}; this run's: {[list(v.shape) for v in now]}): resume with the compression it was "
                f"written with, or use another checkpoint_dir. Received: {len(now)} compression state variables")
        load_arrays(model, arrays, source=f"the checkpoint {path}", names=meta.get("variables"), variables=variables)
        log.info("checkpoint: resumed from epoch %d (%s, written by %d rank(s))", meta["epoch"], path, meta["size"])


class EpochCheckpoint(keras.callbacks.Callback):
    """Drives a :class:`hvdagent._agent.checkpoint.Checkpointer` for ``agent.fit``.

    ``on_train_begin`` restores ``meta`` (every rank reads the same file),
    before the broadcast and learning-rate callbacks run; ``on_epoch_end``
    saves on rank 0, after every other callback (so a learning rate changed by
    ``ReduceLROnPlateau`` is saved). Use two instances with ``role``.
    """

    def __init__(self, checkpointer, role: str, meta=None):
        super().__init__()
        self.checkpointer, self.role, self.meta = checkpointer, role, meta

    def on_train_begin(self, logs=None):
        if self.role == "restore" and self.meta is not None:
            self.checkpointer.restore(self.model, self.meta)

    def on_epoch_end(self, epoch, logs=None):
        if self.role == "save":
            with watchdog_paused("checkpoint"):
                self.checkpointer.save(self.model, epoch + 1)
