"""The Ray engine of :func:`hvdagent.launch`: Horovod's ``RayExecutor`` (private).

Ray is used as it is found: when this process is already connected
(``ray.init`` was called) or ``RAY_ADDRESS`` names a cluster, the job runs
there and Ray is left running; otherwise a local Ray is started for this call
(``num_cpus`` at least ``np``) and stopped after it.

Horovod's executor places ``np`` actors, sets up their Gloo rendezvous and
runs the function on each (``run_remote``); every actor runs
:func:`hvdagent._launch.worker.call`, which hands back a report instead of
raising. The first failed report ends the job at once: a rank that raised
leaves its actor alive and the other ranks blocked in a collective, so the
executor is shut down (its placement group removed, which ends the actors)
rather than waiting for them.
"""

from __future__ import annotations

import os
import time
from typing import Any, Dict, List, Optional

from hvdagent import _hvd
from hvdagent._launch.errors import LaunchTimeoutError, error_for, first_failure, results_from

_POLL_S = 0.5
# How long Horovod waits for Ray to place the np workers before it gives up.
_PLACEMENT_TIMEOUT_S = 120


def _import_ray():
    try:
        import ray
    except ImportError as err:
        raise ImportError(
            'hvdagent.launch(engine="ray") needs Ray: pip install "hvdagent[ray]" '
            f"(tested: ray 2.60.0). Import failed with: {err}"
        ) from err
    return ray


def run(payload: bytes, context: dict, np_: int, timeout: Optional[float], shown: List[int],
        env: Dict[str, str], verbose: bool) -> List[Any]:
    """Run the call on ``np_`` Ray actors; the results in rank order."""
    ray = _import_ray()
    from hvdagent._launch import worker as _launch_worker

    executor_cls = _hvd.ray_executor()
    started_ray = False
    if not ray.is_initialized():
        if os.environ.get("RAY_ADDRESS"):
            ray.init(address=os.environ["RAY_ADDRESS"], log_to_driver=bool(shown) or verbose)
        else:
            ray.init(num_cpus=max(np_, os.cpu_count() or 1), include_dashboard=False,
                     log_to_driver=bool(shown) or verbose, logging_level="INFO" if verbose else "WARNING")
        started_ray = True
    deadline = None if timeout is None else time.monotonic() + timeout
    executor = None
    try:
        settings = executor_cls.create_settings(timeout_s=_PLACEMENT_TIMEOUT_S,
                                                placement_group_timeout_s=_PLACEMENT_TIMEOUT_S)
        executor = executor_cls(settings, num_workers=np_, cpus_per_worker=1, use_gpu=False)
        executor.start(extra_env_vars={"PYTHONUNBUFFERED": "1", **env})
        context = dict(context, env=env)
        refs = executor.run_remote(_launch_worker.call, args=[payload, context, shown])
        reports = _wait(ray, refs, np_, deadline, timeout)
    finally:
        if executor is not None:
            executor.shutdown()
        if started_ray:
            ray.shutdown()
    return results_from(reports, np_)


def _wait(ray, refs, np_: int, deadline: Optional[float], timeout: Optional[float]) -> List[dict]:
    """Collect the reports as they come; stop at the first failure or at the deadline."""
    rank_of = {ref: rank for rank, ref in enumerate(refs)}  # the executor's workers are in rank order
    pending, reports = list(refs), []
    while pending:
        ready, pending = ray.wait(pending, num_returns=1, timeout=_POLL_S)
        for ref in ready:
            try:
                reports.append(ray.get(ref))
            except ray.exceptions.RayError as err:  # the actor died (killed, out of memory, os._exit, a crash)
                rank = rank_of[ref]
                reports.append({"rank": rank, "ok": False, "time": time.time(), "type": type(err).__name__,
                                "message": f"the Ray actor of rank {rank} died", "traceback": str(err)})
        culprit = first_failure(reports)
        if culprit is not None:
            raise error_for(culprit, reports, np_)
        if deadline is not None and time.monotonic() > deadline:
            raise LaunchTimeoutError(
                f"hvdagent.launch timed out after {timeout:g}s; all {np_} ranks were stopped. "
                "Raise timeout= if the job needs longer."
            )
    return reports
