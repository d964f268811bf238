"""The errors of :func:`hvdagent.launch`, and turning the ranks' reports into results or one of them (private).

Every engine runs the same rank-side wrapper (:func:`hvdagent._launch.worker.call`),
which hands back one report per rank: ``{"rank", "ok": True, "value": bytes}``
or ``{"rank", "ok": False, "type", "message", "traceback", "time"}``. What the
caller gets from those reports is decided here, the same way for every engine.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence


class LaunchError(RuntimeError):
    """A launched job failed: a rank raised, crashed, or the job timed out.

    Attributes:
        rank: the rank that failed first (``None`` when no rank is to blame,
            for example on a timeout or when the launcher itself failed).
        traceback: that rank's traceback text (``""`` when it left none).
        errors: every rank that reported an error, ``{rank: traceback}``.
        output: the last lines that rank (or the launcher) printed.
    """

    def __init__(self, message: str, rank: Optional[int] = None, traceback: str = "",
                 errors: Optional[Dict[int, str]] = None, output: str = ""):
        super().__init__(message)
        self.rank = rank
        self.traceback = traceback
        self.errors = dict(errors or {})
        self.output = output


class LaunchTimeoutError(LaunchError, TimeoutError):
    """The job ran past ``timeout``; all its processes were stopped."""


def first_failure(reports: Sequence[dict]) -> Optional[dict]:
    """The failed report that came first in time (the others failed because of it), or None."""
    failed = [r for r in reports if not r["ok"]]
    return min(failed, key=lambda r: (r["time"], r["rank"])) if failed else None


def error_for(culprit: dict, reports: Sequence[dict], np_: int, output: str = "") -> LaunchError:
    """The :class:`LaunchError` naming ``culprit``'s rank, with its traceback in the message."""
    rank = culprit["rank"]
    errors = {r["rank"]: r["traceback"] for r in reports if not r["ok"]}
    others = sorted(r for r in errors if r != rank)
    also = f" (rank{'s' if len(others) > 1 else ''} {', '.join(map(str, others))} failed after it)" if others else ""
    return LaunchError(
        f"rank {rank} of {np_} failed with {culprit['type']}: {culprit['message']}{also}\n\n"
        f"Traceback of rank {rank}:\n{culprit['traceback'].rstrip()}",
        rank=rank, traceback=culprit["traceback"], errors=errors, output=output,
    )


def results_from(reports: Sequence[dict], np_: int) -> List[Any]:
    """The ranks' return values in rank order, or the :class:`LaunchError` of the first failure."""
    culprit = first_failure(reports)
    if culprit is not None:
        raise error_for(culprit, reports, np_)
    by_rank = {r["rank"]: r for r in reports}
    missing = [r for r in range(np_) if r not in by_rank]
    if missing:
        raise LaunchError(f"rank {missing[0]} of {np_} returned no result", rank=missing[0])
    return [load_value(by_rank[r]["value"], r) for r in range(np_)]


def load_value(data: bytes, rank: int) -> Any:
    import cloudpickle

    try:
        return cloudpickle.loads(data)
    except Exception as err:  # noqa: BLE001
        raise LaunchError(
            f"the return value of rank {rank} could not be loaded in the caller ({type(err).__name__}: {err}); "
            "return plain data (numbers, numpy arrays, dicts) from fn",
            rank=rank,
        ) from err
