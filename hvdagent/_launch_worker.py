"""The program every rank of :func:`hvdagent.launch` runs (private).

    horovodrun --gloo -np N python -m hvdagent._launch_worker FOLDER

It loads ``(fn, args, kwargs)`` from ``FOLDER/payload.pkl``, calls ``fn`` and
writes ``FOLDER/result-<rank>.pkl`` (the return value) or
``FOLDER/error-<rank>.json`` (type, message, traceback, time), then exits 0 or
1. It never imports Horovod itself: ``fn`` does, through hvdagent, if it needs
to.
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback
from pathlib import Path


def _rank() -> int:
    # Set by horovodrun for each rank; read directly (no Horovod import here).
    return int(os.environ.get("HOROVOD_RANK", "0"))


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _report(folder: Path, rank: int, err: BaseException, text: str) -> None:
    sys.stdout.flush()
    sys.stderr.write(text)
    sys.stderr.flush()
    report = {"time": time.time(), "type": type(err).__name__, "message": str(err), "traceback": text}
    _atomic_write(folder / f"error-{rank}.json", json.dumps(report).encode())


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    folder = Path(argv[0])
    rank = _rank()
    try:
        import cloudpickle

        context = json.loads((folder / "context.json").read_text())
        # Functions from the caller's own modules are pickled by reference:
        # make the caller's import path available (after the worker's own).
        sys.path.extend(p for p in context["sys_path"] if p not in sys.path)
        fn, args, kwargs = cloudpickle.loads((folder / "payload.pkl").read_bytes())
    except BaseException as err:  # noqa: BLE001
        _report(folder, rank, err, "the launched function could not be loaded on this rank "
                f"(is everything it imports installed here?):\n{traceback.format_exc()}")
        return 1
    try:
        result = fn(*args, **kwargs)
    except BaseException as err:  # noqa: BLE001 (SystemExit and KeyboardInterrupt are failures too)
        _report(folder, rank, err, traceback.format_exc())
        return 1
    try:
        data = cloudpickle.dumps(result)
    except Exception as err:  # noqa: BLE001
        _report(folder, rank, err, (
            f"rank {rank} returned a value that cannot be sent back to the caller "
            f"({type(result).__name__}): {type(err).__name__}: {err}. Return plain data from fn "
            "(numbers, numpy arrays, dicts such as history.history), not models or datasets.\n"
        ))
        return 1
    _atomic_write(folder / f"result-{rank}.pkl", data)
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
