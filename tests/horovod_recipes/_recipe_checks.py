"""Instrumentation shared by the Horovod-recipe scripts (not part of the recipes).

Each recipe ends by calling :func:`report`, which writes what the test asserts
on (learning rates, metrics, weight digests, files) to
``$HVDAGENT_RECIPE_OUT/<recipe>-<rank>.json`` (when that is set: the tests set it). A faulthandler watchdog turns
a hang into a stack dump and a non-zero exit before the test's own timeout.
"""

import faulthandler
import hashlib
import json
import os

faulthandler.dump_traceback_later(float(os.environ.get("HVDAGENT_TEST_WATCHDOG", 240)), exit=True)


def digest(arrays) -> str:
    h = hashlib.sha256()
    for a in arrays:
        h.update(memoryview(a.numpy() if hasattr(a, "numpy") else a).tobytes())
    return h.hexdigest()


def history_of(history) -> dict:
    return {k: [float(v) for v in vs] for k, vs in history.history.items()}


def sync_options(optimizer):
    """The gradient-sync options of an hvdagent distributed optimizer (None if it is not one)."""
    from hvdagent._sync.parts import parts_of

    parts = parts_of(optimizer)
    return None if parts is None else parts.sync.options


def report(recipe: str, rank: int, **values) -> None:
    """Write ``values`` for the test; nothing when run by hand (no ``HVDAGENT_RECIPE_OUT``)."""
    out = os.environ.get("HVDAGENT_RECIPE_OUT")
    if not out:
        return
    os.makedirs(out, exist_ok=True)
    path = os.path.join(out, f"{recipe}-{rank}.json")
    with open(path, "w") as f:
        json.dump(values, f, indent=1, default=float)
