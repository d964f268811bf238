"""``launch``: run a function on several Horovod processes from a notebook or a script.

How it works, in one place:

1. ``(fn, args, kwargs)`` are serialised with cloudpickle into a private
   temporary folder. This happens *before* any process starts, so a function
   that cannot be sent (for example one that closes over a ``tf.data``
   pipeline or an open file) fails at once, with a hint.
2. ``horovodrun --gloo -np N python -m hvdagent._launch_worker FOLDER`` runs
   in its own session. Each rank loads the function, calls it, and writes its
   return value (``result-<rank>.pkl``) or its traceback (``error-<rank>.json``).
3. The caller streams the ranks' output live (rank 0's by default), tracks
   every process of the job, and stops all of them when a rank fails, when the
   timeout passes, or when the caller is interrupted (``Ctrl-C``, the
   notebook's stop button).

Horovod is reached only as a separate program (its runner), never imported
here: collectives stay behind :mod:`hvdagent._hvd`, and the caller, a notebook
kernel for instance, stays a plain single process that may launch many times.
"""

from __future__ import annotations

import importlib.util
import json
import os
import queue
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Union

from hvdagent import _hvd
from hvdagent._hvd import HorovodUnavailableError

__all__ = ["launch", "LaunchError", "LaunchTimeoutError"]

# Horovod prefixes every line a rank writes: ``[1]<stderr>:text``.
_PREFIX = re.compile(rb"^\[(\d+)\]<(stdout|stderr)>:")
# horovodrun reports a rank that exited non-zero with this line.
_EXIT_LINE = re.compile(r"Process (\d+) exit with status code (-?\d+)")
# ... and, at the end, the rank that exited non-zero first (the cause; the
# others were stopped because of it): "The first process to do so was:" is
# followed by "Process name: <rank>".
_FIRST_LINE = re.compile(r"^Process name: (\d+)\s*$")
# TensorFlow's C++ (absl) log lines: severity letter I/W/E/F, then MMDD. TF
# prints some before it reads TF_CPP_MIN_LOG_LEVEL; the live view honours it.
_ABSL_LINE = re.compile(r"^(?:([IWEF])\d{4} \d\d:\d\d:\d\d|(WARNING): All log messages before absl::InitializeLog)")
_SEVERITY = {"I": 0, "W": 1, "WARNING": 1, "E": 2, "F": 3}
# horovodrun first checks that Horovod was built with Gloo by importing
# horovod.tensorflow (and so TensorFlow) in a subprocess: seconds per launch
# before any rank starts. Skip that check; a Horovod without Gloo still fails,
# in the ranks' hvd.init(), with Horovod's own message (and `python -m
# hvdagent doctor` reports it up front).
_RUNNER = (
    "import horovod.runner.launch as launch\n"
    "if hasattr(launch, 'gloo_built'):\n"
    "    launch.gloo_built = lambda verbose=False: True\n"
    "launch.run_commandline()\n"
)
_TAIL_LINES = 40
_POLL_S = 0.2
_GRACE_S = 3.0

OutputSpec = Union[int, Sequence[int], str, None]


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


def launch(
    fn: Callable[..., Any],
    np: int = 2,
    args: Sequence[Any] = (),
    kwargs: Optional[Mapping[str, Any]] = None,
    timeout: Optional[float] = None,
    output: OutputSpec = 0,
    env: Optional[Mapping[str, str]] = None,
    verbose: bool = False,
) -> List[Any]:
    """Run ``fn(*args, **kwargs)`` on ``np`` Horovod processes; return every rank's result.

    Call it from a notebook, or from a script under
    ``if __name__ == "__main__":``. Inside ``fn``, hvdagent sees a real
    ``np``-process job: ``hvdagent.rank()``, ``hvdagent.size()`` and
    ``DistributedAgent`` work as under ``horovodrun``. Build models and
    datasets *inside* ``fn``: only ``fn``, ``args`` and ``kwargs`` travel to
    the workers (by cloudpickle), and Keras models, ``tf.data`` pipelines,
    locks or open files either cannot travel or would arrive as copies.

    The workers run with the caller's environment and working directory,
    minus every ``HOROVOD_*`` variable (a Horovod initialised in the caller
    must not leak into the job; pass Horovod settings through ``env``), plus
    ``env``. Their output is unbuffered. Interrupting the caller (``Ctrl-C``,
    a notebook's stop button) stops every rank before the
    ``KeyboardInterrupt`` propagates.

    The errors are importable as ``from hvdagent import LaunchError,
    LaunchTimeoutError``; ``LaunchError`` is a ``RuntimeError``.

    Args:
        fn: the function every rank calls. A function defined in a notebook
            or in ``__main__`` is sent by value; one from an importable module
            by reference (the workers get the caller's ``sys.path``).
        np: the number of processes, an integer >= 1 (default 2).
        args: positional arguments for ``fn``, the same on every rank
            (default ``()``).
        kwargs: keyword arguments for ``fn`` (default None: none).
        timeout: seconds after which every rank is stopped and
            :class:`LaunchTimeoutError` is raised (default None: no limit).
            It includes the launch itself, a few seconds.
        output: whose printed output is shown live: a rank (default 0), a
            list of ranks, ``"all"``, or ``None`` for nobody. With one rank
            shown its lines appear as printed; with several, each line starts
            with ``[rank n]``.
        env: extra environment variables for the workers (default None).
        verbose: also show the launcher's (``horovodrun``'s) own messages
            (default False; they are kept for error messages either way).

    Returns:
        The list of the ranks' return values, in rank order. Each must be
        picklable: return plain data (numbers, numpy arrays,
        ``history.history``), not models.

    Raises:
        LaunchError: a rank raised or crashed; the message names the rank
            and carries its traceback. No process of the job is left running.
        LaunchTimeoutError: ``timeout`` passed (also a ``TimeoutError``).
        TypeError: ``fn``, ``args`` or ``kwargs`` cannot be sent to the
            workers, or an argument has the wrong type.
        ValueError: an argument has a wrong value.
        RuntimeError: called from inside a launched rank.
        HorovodUnavailableError: Horovod is not installed.

    Example:
        >>> import hvdagent
        >>> def where_am_i(scale):
        ...     import hvdagent
        ...     return hvdagent.rank() * scale, hvdagent.size()
        >>> hvdagent.launch(where_am_i, np=2, args=(10,), output=None)  # doctest: +SKIP
        [(0, 2), (10, 2)]
    """
    np_ = _validate_np(np)
    args, kwargs = _validate_call(fn, args, kwargs)
    timeout = _validate_timeout(timeout)
    shown = _validate_output(output, np_)
    extra_env = _validate_env(env)
    if not isinstance(verbose, bool):
        raise TypeError(f"verbose must be True or False. Received: verbose={verbose!r}")
    if _hvd.is_launched():
        raise RuntimeError(
            "hvdagent.launch was called inside a process that is itself a launched rank "
            f"({_launcher_vars()}); a rank cannot launch another job. Call launch from the notebook "
            "or from the script's `if __name__ == \"__main__\":` block, not from the launched function"
        )
    if importlib.util.find_spec("horovod") is None:
        raise HorovodUnavailableError(
            "hvdagent.launch needs Horovod's runner (horovodrun), but horovod is not installed in "
            f"{sys.executable}'s environment. Build it with `bash ci/setup.sh` and run `python -m hvdagent doctor`."
        )
    payload = _pickle_call(fn, args, kwargs)
    folder = Path(tempfile.mkdtemp(prefix="hvdagent-launch-"))
    try:
        (folder / "payload.pkl").write_bytes(payload)
        (folder / "context.json").write_text(json.dumps({"sys_path": [p for p in sys.path if p]}))
        return _Job(folder, np_, timeout, shown, extra_env, verbose).run()
    finally:
        shutil.rmtree(folder, ignore_errors=True)


# --- validation -------------------------------------------------------------------


def _validate_np(np_) -> int:
    if isinstance(np_, bool) or not isinstance(np_, int) or np_ < 1:
        raise ValueError(f"np must be an integer >= 1 (the number of processes). Received: np={np_!r}")
    return int(np_)


def _validate_call(fn, args, kwargs):
    if not callable(fn):
        raise TypeError(f"fn must be a callable (the function every rank runs). Received: fn={fn!r}")
    if isinstance(args, (str, bytes)) or not isinstance(args, (tuple, list)):
        raise TypeError(f"args must be a tuple or list of positional arguments. Received: args={args!r}")
    if kwargs is None:
        kwargs = {}
    if not isinstance(kwargs, Mapping) or not all(isinstance(k, str) for k in kwargs):
        raise TypeError(f"kwargs must be a dict with string keys, or None. Received: kwargs={kwargs!r}")
    return tuple(args), dict(kwargs)


def _validate_timeout(timeout) -> Optional[float]:
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0:
        raise ValueError(f"timeout must be a number of seconds > 0, or None. Received: timeout={timeout!r}")
    return float(timeout)


def _validate_output(output, np_: int) -> List[int]:
    if output is None:
        return []
    if output == "all":
        return list(range(np_))
    ranks = [output] if isinstance(output, int) and not isinstance(output, bool) else output
    if isinstance(ranks, (str, bytes)) or not isinstance(ranks, (list, tuple, set, range)) or not all(
        isinstance(r, int) and not isinstance(r, bool) and 0 <= r < np_ for r in ranks
    ):
        raise ValueError(
            f'output must be a rank in 0..{np_ - 1}, a list of such ranks, "all", or None. Received: output={output!r}'
        )
    return sorted(set(ranks))


def _validate_env(env) -> Dict[str, str]:
    if env is None:
        return {}
    if not isinstance(env, Mapping) or not all(isinstance(k, str) and isinstance(v, str) for k, v in env.items()):
        raise TypeError(f"env must be a dict of str to str, or None. Received: env={env!r}")
    return dict(env)


def _launcher_vars() -> str:
    return ", ".join(f"{k}={os.environ[k]}" for k in _hvd.LAUNCHER_ENV if k in os.environ)


def _pickle_call(fn, args, kwargs) -> bytes:
    """Serialise the call now, so that what cannot travel fails before any process starts."""
    import cloudpickle

    try:
        return cloudpickle.dumps((fn, args, kwargs))
    except Exception as err:  # noqa: BLE001 (pickling raises TypeError, PicklingError, AttributeError, ...)
        culprit = _find_unpicklable(fn, args, kwargs)
        raise TypeError(
            f"hvdagent.launch cannot send {culprit} to the worker processes: cloudpickle failed with "
            f"{type(err).__name__}: {err}. Only fn, args and kwargs travel to the workers, so everything fn "
            "uses must be picklable. Build the model, the dataset and anything holding a lock, a file or a "
            "session *inside* fn (define the model inside fn), and pass plain data (numbers, strings, "
            f"numpy arrays) as arguments. Received: fn={fn!r}"
        ) from err


def _find_unpicklable(fn, args, kwargs) -> str:
    import cloudpickle

    candidates = [("fn", fn)] + [(f"args[{i}]", a) for i, a in enumerate(args)]
    candidates += [(f"kwargs[{k!r}]", v) for k, v in kwargs.items()]
    for name, value in candidates:
        try:
            cloudpickle.dumps(value)
        except Exception:  # noqa: BLE001
            return name
    return "the call"


# --- the job ------------------------------------------------------------------------


class _Job:
    """One horovodrun process tree: start it, relay its output, collect results, clean up."""

    def __init__(self, folder: Path, np_: int, timeout, shown: List[int], extra_env, verbose: bool):
        self.folder, self.np, self.timeout = folder, np_, timeout
        self.shown, self.extra_env, self.verbose = shown, extra_env, verbose
        self.tails = {r: deque(maxlen=_TAIL_LINES) for r in range(np_)}
        self.launcher_tail: deque = deque(maxlen=_TAIL_LINES)
        self.exit_codes: Dict[int, int] = {}  # in the order horovodrun reported the exits
        self.first_failed: Optional[int] = None
        self.tracked: Dict[int, Any] = {}
        self.lines: "queue.Queue" = queue.Queue()
        self.min_log_level = _min_log_level(self.environment().get("TF_CPP_MIN_LOG_LEVEL"))

    def command(self) -> List[str]:
        runner = [sys.executable, "-c", _RUNNER]
        worker = [sys.executable, "-u", "-m", "hvdagent._launch_worker", str(self.folder)]
        return runner + ["--gloo", "-np", str(self.np)] + worker

    def environment(self) -> Dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("HOROVOD_")}
        env["PYTHONUNBUFFERED"] = "1"
        env.update(self.extra_env)
        return env

    def run(self) -> List[Any]:
        import psutil

        proc = subprocess.Popen(
            self.command(), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            env=self.environment(), cwd=os.getcwd(), start_new_session=True,
        )
        root = psutil.Process(proc.pid)
        self.tracked[proc.pid] = root
        reader = threading.Thread(target=_read_lines, args=(proc.stdout, self.lines), daemon=True)
        reader.start()
        deadline = None if self.timeout is None else time.monotonic() + self.timeout
        try:
            while True:
                self._track(root)
                self._drain(block=True)
                if proc.poll() is not None and not reader.is_alive():
                    self._drain(block=False)
                    break
                if deadline is not None and time.monotonic() > deadline:
                    self._stop()
                    self._drain(block=False)
                    raise LaunchTimeoutError(
                        f"hvdagent.launch timed out after {self.timeout:g}s; all {self.np} ranks were stopped. "
                        "Raise timeout= if the job needs longer.",
                        output="\n".join(self._all_tails()),
                    )
        finally:
            # Whatever happened (success, failure, timeout, KeyboardInterrupt),
            # no process of the job outlives this call.
            self._stop()
            reader.join(timeout=_GRACE_S)
            if proc.stdout is not None:
                proc.stdout.close()
        return self._collect(proc.returncode)

    def _track(self, root) -> None:
        import psutil

        try:
            for child in root.children(recursive=True):
                self.tracked.setdefault(child.pid, child)
        except psutil.Error:
            pass

    def _drain(self, block: bool) -> None:
        try:
            item = self.lines.get(timeout=_POLL_S) if block else self.lines.get_nowait()
        except queue.Empty:
            return
        while True:
            if item is not None:
                self._handle(item)
            try:
                item = self.lines.get_nowait()
            except queue.Empty:
                return

    def _handle(self, raw: bytes) -> None:
        match = _PREFIX.match(raw)
        if match is None:
            text = raw.decode("utf-8", "replace")
            self.launcher_tail.append(text.rstrip("\r\n"))
            exit_line = _EXIT_LINE.search(text)
            if exit_line:
                self.exit_codes[int(exit_line.group(1))] = int(exit_line.group(2))
            first = _FIRST_LINE.match(text.strip())
            if first and self.first_failed is None:
                self.first_failed = int(first.group(1))
            if self.verbose:
                _write(sys.stderr, "[launcher] " + text)
            return
        rank, stream = int(match.group(1)), match.group(2).decode()
        text = raw[match.end():].decode("utf-8", "replace")
        if rank in self.tails:
            self.tails[rank].append(text.rstrip("\r\n"))
        if rank in self.shown and not self._below_log_level(text):
            if len(self.shown) > 1:
                text = f"[rank {rank}] {text}"
            _write(sys.stderr if stream == "stderr" else sys.stdout, text)

    def _below_log_level(self, text: str) -> bool:
        match = _ABSL_LINE.match(text) if self.min_log_level > 0 else None
        return bool(match) and _SEVERITY[match.group(1) or match.group(2)] < self.min_log_level

    def _stop(self) -> None:
        """Terminate every tracked process that still runs; kill those that do not stop."""
        import psutil

        alive = [p for p in self.tracked.values() if _running(p)]
        for p in alive:
            try:
                p.terminate()
            except psutil.Error:
                pass
        _, alive = psutil.wait_procs(alive, timeout=_GRACE_S)
        for p in alive:
            try:
                p.kill()
            except psutil.Error:
                pass
        psutil.wait_procs(alive, timeout=_GRACE_S)

    def _all_tails(self) -> List[str]:
        lines = [f"[launcher] {line}" for line in self.launcher_tail]
        for r, tail in self.tails.items():
            lines += [f"[rank {r}] {line}" for line in tail]
        return lines

    def _collect(self, returncode: int) -> List[Any]:
        errors = self._errors()
        culprit = self._culprit(errors)
        if culprit is not None and culprit in errors:
            info = errors[culprit]
            others = sorted(r for r in errors if r != culprit)
            also = f" (rank{'s' if len(others) > 1 else ''} {', '.join(map(str, others))} failed after it)" if others else ""
            raise LaunchError(
                f"rank {culprit} of {self.np} failed with {info['type']}: {info['message']}{also}\n\n"
                f"Traceback of rank {culprit}:\n{info['traceback'].rstrip()}",
                rank=culprit, traceback=info["traceback"], errors={r: e["traceback"] for r, e in errors.items()},
                output="\n".join(self.tails[culprit]),
            )
        missing = [r for r in range(self.np) if not (self.folder / f"result-{r}.pkl").exists()]
        if culprit is not None and culprit in self.exit_codes:
            what = (f"rank {culprit} of {self.np} exited with status {self.exit_codes[culprit]} without reporting "
                    "an error (it was killed, ran out of memory, called os._exit, or crashed in native code)")
            tail = "\n".join(self.tails[culprit])
        elif returncode == 0 and missing:
            culprit = missing[0]
            what = f"rank {culprit} of {self.np} returned no result"
            tail = "\n".join(self.tails[culprit])
        elif returncode != 0 or missing:
            culprit = None
            what = f"horovodrun exited with status {returncode} before the ranks reported"
            tail = "\n".join(self._all_tails())
        else:
            return [self._result(r) for r in range(self.np)]
        last = f"Last output:\n{tail}" if tail.strip() else "It printed nothing."
        raise LaunchError(f"{what}. {last}", rank=culprit, errors={r: e["traceback"] for r, e in errors.items()},
                          output=tail)

    def _culprit(self, errors: Dict[int, dict]) -> Optional[int]:
        """The rank that failed first: the others were stopped, or failed, because of it."""
        if self.first_failed is not None:
            return self.first_failed
        crashed = [r for r, code in self.exit_codes.items() if code != 0]
        if crashed:
            return crashed[0]
        if errors:
            return min(errors, key=lambda r: (errors[r]["time"], r))
        return None

    def _errors(self) -> Dict[int, dict]:
        out = {}
        for r in range(self.np):
            path = self.folder / f"error-{r}.json"
            if path.exists():
                try:
                    out[r] = json.loads(path.read_text())
                except ValueError:
                    out[r] = {"time": float("inf"), "type": "Error", "message": "(unreadable error report)",
                              "traceback": path.read_text(errors="replace")}
        return out

    def _result(self, rank: int) -> Any:
        import cloudpickle

        try:
            return cloudpickle.loads((self.folder / f"result-{rank}.pkl").read_bytes())
        except Exception as err:  # noqa: BLE001
            raise LaunchError(
                f"the return value of rank {rank} could not be loaded in the caller ({type(err).__name__}: {err}); "
                "return plain data (numbers, numpy arrays, dicts) from fn",
                rank=rank,
            ) from err


def _min_log_level(value: Optional[str]) -> int:
    try:
        return int(value or 0)
    except ValueError:
        return 0


def _running(p) -> bool:
    import psutil

    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _read_lines(stream, out: "queue.Queue") -> None:
    """Split the launcher's byte stream into records ending in ``\\n`` or ``\\r`` (progress bars)."""
    buf = b""
    try:
        while True:
            chunk = stream.read1(65536) if hasattr(stream, "read1") else stream.read(65536)
            if not chunk:
                break
            buf += chunk
            while True:
                cut = min((i for i in (buf.find(b"\n"), buf.find(b"\r")) if i >= 0), default=-1)
                if cut < 0:
                    break
                out.put(buf[:cut + 1])
                buf = buf[cut + 1:]
    except (OSError, ValueError):
        pass
    if buf:
        out.put(buf + b"\n")
    out.put(None)


def _write(stream, text: str) -> None:
    try:
        stream.write(text)
        stream.flush()
    except (OSError, ValueError):
        pass

