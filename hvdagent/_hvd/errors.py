"""The error every backend raises when Horovod is needed but cannot be used."""

from __future__ import annotations

__all__ = ["HorovodUnavailableError", "unavailable"]


class HorovodUnavailableError(RuntimeError):
    """Horovod is missing, broken, or built against another TensorFlow."""


def unavailable(err: BaseException) -> HorovodUnavailableError:
    """A :class:`HorovodUnavailableError` explaining ``err`` and the fix."""
    text = f"{type(err).__name__}: {err}"
    if isinstance(err, ModuleNotFoundError):
        hint = (
            "Horovod is not installed in this environment. Several processes need it (one process does "
            "not: run the script with plain `python`). Build it against your TensorFlow with "
            "`bash ci/setup.sh` from a clone of hvdagent (see the README)"
        )
    else:
        hint = (
            "Horovod is installed but does not load; this usually means it was built against "
            "another TensorFlow (for example before a TensorFlow upgrade). Rebuild it with "
            "`HVDAGENT_FORCE_SETUP=1 bash ci/setup.sh`"
        )
    return HorovodUnavailableError(
        f"hvdagent needs Horovod for this call, but importing horovod.tensorflow failed ({text}). "
        f"{hint}, and run `python -m hvdagent doctor` for a full report."
    )
