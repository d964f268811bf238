"""What every rank of :func:`hvdagent.launch` runs (private).

Local engine: each rank is the program

    horovodrun --gloo -np N python -m hvdagent._launch.worker FOLDER

which loads ``(fn, args, kwargs)`` from ``FOLDER/payload.pkl``, calls ``fn``
and writes ``FOLDER/result-<rank>.pkl`` (the return value) or
``FOLDER/error-<rank>.json`` (type, message, traceback, time), then exits 0 or
1.

Ray and Spark engines: the engine calls :func:`call` in each rank with the
same payload; it returns the rank's report (see
:mod:`hvdagent._launch.errors`) instead of raising, so the caller learns which
rank failed and why whatever the engine does with exceptions.

Neither imports Horovod: ``fn`` does, through hvdagent, if it needs to.
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Sequence


def _rank() -> int:
    # Set by every launcher (horovodrun, Horovod's Ray and Spark runners); read
    # directly, without importing Horovod.
    return int(os.environ.get("HOROVOD_RANK", "0"))


def _load(payload: bytes, context: dict):
    import cloudpickle

    # Functions from the caller's own modules are pickled by reference: make
    # the caller's import path available (after the worker's own).
    sys.path.extend(p for p in context["sys_path"] if p not in sys.path)
    return cloudpickle.loads(payload)


def _failure(rank: int, err: BaseException, text: str) -> dict:
    return {"rank": rank, "ok": False, "time": time.time(), "type": type(err).__name__, "message": str(err),
            "traceback": text}


def _run(rank: int, payload: bytes, context: dict) -> dict:
    """Load and call fn; the rank's report. Failures are printed to stderr too."""
    import cloudpickle

    try:
        fn, args, kwargs = _load(payload, context)
    except BaseException as err:  # noqa: BLE001
        report = _failure(rank, err, "the launched function could not be loaded on this rank "
                          f"(is everything it imports installed here?):\n{traceback.format_exc()}")
    else:
        try:
            result = fn(*args, **kwargs)
        except BaseException as err:  # noqa: BLE001 (SystemExit and KeyboardInterrupt are failures too)
            report = _failure(rank, err, traceback.format_exc())
        else:
            try:
                report = {"rank": rank, "ok": True, "value": cloudpickle.dumps(result)}
            except Exception as err:  # noqa: BLE001
                report = _failure(rank, err, (
                    f"rank {rank} returned a value that cannot be sent back to the caller "
                    f"({type(result).__name__}): {type(err).__name__}: {err}. Return plain data from fn "
                    "(numbers, numpy arrays, dicts such as history.history), not models or datasets.\n"
                ))
    sys.stdout.flush()
    if not report["ok"]:
        sys.stderr.write(report["traceback"])
    sys.stderr.flush()
    return report


class _Muted:
    """Send this process's stdout and stderr (file descriptors 1 and 2) to /dev/null, then restore them."""

    def __enter__(self):
        sys.stdout.flush()
        sys.stderr.flush()
        self.saved = [os.dup(1), os.dup(2)]
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, 1)
        os.dup2(null, 2)
        os.close(null)

    def __exit__(self, *exc):
        sys.stdout.flush()
        sys.stderr.flush()
        for fd, saved in zip((1, 2), self.saved):
            os.dup2(saved, fd)
            os.close(saved)
        return False


def call(payload: bytes, context: dict, shown: Sequence[int]) -> dict:
    """Run the launched function in this rank (Ray and Spark engines); never raises.

    Args:
        payload: ``cloudpickle.dumps((fn, args, kwargs))``.
        context: ``{"sys_path": [...], "env": {...}}``: the caller's import
            path, and environment variables to set before ``fn`` runs.
        shown: the ranks whose output is shown; the others run muted.

    Returns:
        The rank's report: ``{"rank", "ok": True, "value": pickled return
        value}`` or ``{"rank", "ok": False, "type", "message", "traceback",
        "time"}``.
    """
    os.environ.update(context.get("env", {}))
    rank = _rank()
    if rank in shown:
        return _run(rank, payload, context)
    with _Muted():
        return _run(rank, payload, context)


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def main(argv=None) -> int:
    """The local engine's rank program: the report becomes a file and the exit status."""
    argv = sys.argv[1:] if argv is None else argv
    folder = Path(argv[0])
    rank = _rank()
    try:
        context = json.loads((folder / "context.json").read_text())
        payload = (folder / "payload.pkl").read_bytes()
    except BaseException as err:  # noqa: BLE001
        report = _failure(rank, err, f"the launch folder could not be read:\n{traceback.format_exc()}")
    else:
        report = _run(rank, payload, context)
    if report["ok"]:
        _atomic_write(folder / f"result-{rank}.pkl", report["value"])
        return 0
    fields = {k: report[k] for k in ("time", "type", "message", "traceback")}
    _atomic_write(folder / f"error-{rank}.json", json.dumps(fields).encode())
    return 1


if __name__ == "__main__":
    sys.exit(main())
