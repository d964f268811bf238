"""The Spark engine of :func:`hvdagent.launch`: ``horovod.spark.run`` (private).

The job runs on the active SparkSession, one Spark task per rank (the session
needs ``np`` task slots); without one, a ``local[np]`` session is started for
this call and stopped after it. Horovod's runner starts each rank as a
process of the executor's Python, which runs
:func:`hvdagent._launch.worker.call` and hands back a report instead of
raising. What this module adds to ``horovod.spark.run`` is what users trip
over:

* **the executors' Python**: Spark starts its Python workers with
  ``PYSPARK_PYTHON`` (default ``python3``, often not the environment that has
  Horovod). A session started here uses this interpreter; on a given session a
  one-task probe checks that the workers can import horovod and hvdagent.
* **pyarrow**: ``import horovod.spark`` needs it (checked with a clear message).
* **the main guard**: Horovod's runner checks its build in a child process
  started with multiprocessing's *spawn* method, which re-runs the main
  script; a script that calls launch without an ``if __name__ ==
  "__main__":`` guard would start a second job in that child. Such a call is
  refused before anything starts.
* **timeout**: the Spark job group of the run is cancelled; Horovod's
  runner handles Ctrl-C itself, and the caller's signal handlers are restored.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import multiprocessing
import os
import re
import shutil
import signal
import sys
import threading
from typing import Any, Dict, List, Optional

from hvdagent import _hvd
from hvdagent._launch.errors import LaunchError, LaunchTimeoutError, results_from

def run(payload: bytes, context: dict, np_: int, timeout: Optional[float], shown: List[int],
        env: Dict[str, str], verbose: bool) -> List[Any]:
    """Run the call as ``np_`` Spark tasks; the results in rank order."""
    _check_main_guard()
    _check_packages()
    from pyspark.sql import SparkSession

    from hvdagent._launch import worker as _launch_worker

    spark_run = _hvd.spark_run()
    spark = SparkSession.getActiveSession()
    owned = spark is None
    if owned:
        spark = _start_session(SparkSession, np_)
    try:
        sc = spark.sparkContext
        _check_slots(sc, np_)
        _check_workers_python(sc)
        outcome = _run_in_main_thread(spark_run, sc, np_, timeout, verbose, _launch_worker.call,
                                      (payload, dict(context, env={"PYTHONUNBUFFERED": "1", **env}), shown))
    finally:
        if owned:
            stop_session(spark)
    if "error" in outcome:
        err = outcome["error"]
        # A rank process that died without a report: Horovod's runner names it "Process name: <rank>".
        dead = re.search(r"Process name: (\d+)\s+Exit code: (-?\d+)", str(err))
        if dead:
            rank = int(dead.group(1))
            raise LaunchError(
                f"rank {rank} of {np_} exited with status {dead.group(2)} without reporting an error (it was killed, "
                "ran out of memory, called os._exit, or crashed in native code); its output is above", rank=rank,
            ) from err
        raise LaunchError(f"horovod.spark.run failed before the ranks reported: {type(err).__name__}: {err}") from err
    return results_from(outcome["reports"], np_)


def _run_in_main_thread(spark_run, sc, np_: int, timeout: Optional[float], verbose: bool, fn, args) -> dict:
    """``horovod.spark.run`` in this (the main) thread, with a deadline; the caller's signal handlers kept.

    Horovod's runner installs SIGINT/SIGTERM handlers (so it must run in the
    main thread) that abort the ranks on Ctrl-C, and leaves them installed;
    the caller's handlers (a notebook kernel's interrupt) are put back after.
    At the deadline a timer thread cancels the run's Spark job group, which
    ends the tasks and the rank processes with them.
    """
    if threading.current_thread() is not threading.main_thread():
        raise RuntimeError('hvdagent.launch(engine="spark") must be called from the main thread: Horovod\'s Spark '
                           "runner installs signal handlers")
    group = _hvd.spark_next_job_group()
    timed_out = threading.Event()

    def on_deadline():
        timed_out.set()
        sc.cancelJobGroup(group)

    timer = threading.Timer(timeout, on_deadline) if timeout is not None else None
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    outcome: Dict[str, Any] = {}
    try:
        if timer is not None:
            timer.daemon = True
            timer.start()
        outcome["reports"] = spark_run(
            fn, args=args, num_proc=np_, use_gloo=True, start_timeout=int(min(timeout or 600, 600)),
            verbose=1 if verbose else 0, stdout=sys.stdout, stderr=sys.stderr,
            # A local master runs every task here: loopback, rather than an interface search that can pick
            # one the driver does not listen on. A cluster's interfaces are Horovod's to find.
            nics={"lo"} if (sc.master or "").startswith("local") else None,
        )
    except Exception as err:  # noqa: BLE001 (turned into a LaunchError by the caller)
        outcome["error"] = err
    finally:
        if timer is not None:
            timer.cancel()
        for s, handler in handlers.items():
            signal.signal(s, handler)
    if timed_out.is_set():
        raise LaunchTimeoutError(f"hvdagent.launch timed out after {timeout:g}s; all {np_} ranks were stopped. "
                                 "Raise timeout= if the job needs longer.")
    return outcome


def _start_session(SparkSession, np_: int):
    if not (shutil.which("java") or os.environ.get("JAVA_HOME")):
        raise RuntimeError(
            'hvdagent.launch(engine="spark") starts a local Spark, which needs Java 17 or newer, and no `java` is '
            "on PATH (nor JAVA_HOME set). On Debian/Ubuntu: apt-get install openjdk-17-jre-headless"
        )
    # Spark starts its Python workers with PYSPARK_PYTHON (read when the
    # session starts); by default `python3`, which may lack Horovod.
    previous = os.environ.get("PYSPARK_PYTHON")
    os.environ["PYSPARK_PYTHON"] = previous or sys.executable
    try:
        return (SparkSession.builder.master(f"local[{np_}]").appName("hvdagent.launch")
                .config("spark.ui.enabled", "false").config("spark.ui.showConsoleProgress", "false").getOrCreate())
    finally:
        if previous is None:
            del os.environ["PYSPARK_PYTHON"]


def stop_session(spark) -> None:
    """Stop ``spark`` and the Java process pyspark started for it.

    ``SparkSession.stop()`` leaves pyspark's Java gateway running for the next
    session of this process; a launch that started Spark leaves nothing behind.
    pyspark's gateway process ends when its standard input closes.
    """
    from pyspark import SparkContext

    spark.stop()
    gateway = SparkContext._gateway
    if gateway is None:
        return
    proc = getattr(gateway, "proc", None)
    try:
        gateway.shutdown()
    finally:
        SparkContext._gateway = None
        SparkContext._jvm = None
        if proc is not None:
            if proc.stdin is not None:
                proc.stdin.close()
            try:
                proc.wait(timeout=30)
            except Exception:  # noqa: BLE001 (subprocess.TimeoutExpired)
                proc.kill()
                proc.wait(timeout=30)


def _check_packages() -> None:
    missing = [name for name in ("pyspark", "pyarrow") if importlib.util.find_spec(name) is None]
    if missing:
        raise ImportError(
            f'hvdagent.launch(engine="spark") needs {" and ".join(missing)} (`import horovod.spark` needs pyarrow): '
            'pip install "hvdagent[spark]" (tested: pyspark 4.3.0, pyarrow 26.0.1, fsspec; Java 17)'
        )
    try:
        importlib.import_module("pyarrow")
    except Exception as err:  # noqa: BLE001 (an ABI mismatch raises more than ImportError)
        raise ImportError(
            f"`import horovod.spark` needs pyarrow, and pyarrow does not load here ({type(err).__name__}: {err}). "
            "Horovod's own `spark` extra pins pyarrow<11, which predates numpy 2: install a current one, "
            'pip install "hvdagent[spark]"'
        ) from err


def _check_slots(sc, np_: int) -> None:
    master = sc.master or ""
    if master.startswith("local") and sc.defaultParallelism < np_:
        raise ValueError(
            f"np={np_} ranks need {np_} Spark task slots, and the SparkSession ({master}) has "
            f"{sc.defaultParallelism}: start it with master('local[{np_}]') or more. Received: np={np_}"
        )


def _check_workers_python(sc) -> None:
    """One tiny task: can the executors' Python import what the ranks need?"""

    def probe(_):  # nested, so that it travels by value: the worker need not import hvdagent to run it
        import importlib.util as util
        import sys as worker_sys

        yield worker_sys.executable, [m for m in ("horovod", "hvdagent", "cloudpickle") if util.find_spec(m) is None]

    fix = (f"Point them at an environment that has hvdagent and Horovod: set PYSPARK_PYTHON={sys.executable} "
           "(or the spark.pyspark.python setting) before the SparkSession starts")
    try:
        (executable, missing), = sc.parallelize([0], 1).mapPartitions(probe).collect()
    except Exception as err:  # noqa: BLE001 (Py4JJavaError: the Python worker did not start)
        raise RuntimeError(f"Spark's Python workers ({sc.pythonExec}) failed to run a one-line probe. {fix}. "
                           f"Spark said: {str(err)[:2000]}") from err
    if missing:
        raise RuntimeError(f"Spark's Python workers run {executable}, which cannot import {', '.join(missing)}. {fix}")


def _check_main_guard() -> None:
    """Refuse a call from a script's top level that is not under ``if __name__ == "__main__":``."""
    main = sys.modules.get("__main__")
    if multiprocessing.parent_process() is not None and getattr(main, "__name__", "") == "__mp_main__":
        raise RuntimeError(_GUARD_HINT)  # this is the spawned child re-running the script: stop it here
    frame = sys._getframe(1)
    while frame is not None and not (frame.f_globals.get("__name__") == "__main__"
                                     and frame.f_code.co_name == "<module>"):
        frame = frame.f_back
    path = frame.f_code.co_filename if frame is not None else ""
    if not os.path.isfile(path):
        return  # not called from a script's top level (a notebook, a function, python -c)
    try:
        tree = ast.parse(open(path, encoding="utf-8").read())
    except (OSError, SyntaxError, ValueError):
        return
    line = frame.f_lineno
    for node in tree.body:
        if node.lineno <= line <= getattr(node, "end_lineno", node.lineno):
            if not _is_main_guard(node):
                raise RuntimeError(f"{_GUARD_HINT} (the call is at {path}:{line})")
            return


def _is_main_guard(node) -> bool:
    if not isinstance(node, ast.If) or not isinstance(node.test, ast.Compare):
        return False
    names = [node.test.left, *node.test.comparators]
    texts = {n.id if isinstance(n, ast.Name) else getattr(n, "value", None) for n in names}
    return texts == {"__name__", "__main__"}


_GUARD_HINT = (
    'hvdagent.launch(engine="spark") must be called under `if __name__ == "__main__":` in a script: Horovod\'s '
    "Spark runner starts a helper process with multiprocessing's spawn method, which re-runs the script's top "
    "level, and would start a second Spark job there (Horovod then fails much later with a misleading "
    '"does not find an installed MPI" or "Gloo support has not been built")'
)
