"""The local engine of :func:`hvdagent.launch`: ``horovodrun`` on this machine (private).

1. The caller has written ``payload.pkl`` (``(fn, args, kwargs)`` by
   cloudpickle) and ``context.json`` into a private temporary folder.
2. ``horovodrun --gloo -np N python -m hvdagent._launch.worker FOLDER`` runs
   in its own session. Each rank loads the function, calls it, and writes its
   return value (``result-<rank>.pkl``) or its traceback (``error-<rank>.json``).
3. This module streams the ranks' output live (rank 0's by default), tracks
   every process of the job, and stops all of them when a rank fails, when the
   timeout passes, or when the caller is interrupted (``Ctrl-C``, the
   notebook's stop button).

Horovod is reached only as a separate program (its runner), never imported
here: the caller, a notebook kernel for instance, stays a plain single process
that may launch many times.
"""

from __future__ import annotations

import json
import os
import queue
import re
import subprocess
import sys
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any, Dict, List, Optional

from hvdagent._launch.errors import LaunchError, LaunchTimeoutError, error_for, load_value

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



def run(folder: Path, np_: int, timeout: Optional[float], shown: List[int], env: Dict[str, str],
        verbose: bool) -> List[Any]:
    """Run the job prepared in ``folder`` on ``np_`` local processes; the results in rank order."""
    return _Job(folder, np_, timeout, shown, env, verbose).run()


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
        worker = [sys.executable, "-u", "-m", "hvdagent._launch.worker", str(self.folder)]
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
            raise error_for(errors[culprit], list(errors.values()), self.np, output="\n".join(self.tails[culprit]))
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
                    out[r] = dict(json.loads(path.read_text()), rank=r, ok=False)
                except ValueError:
                    out[r] = {"rank": r, "ok": False, "time": float("inf"), "type": "Error",
                              "message": "(unreadable error report)", "traceback": path.read_text(errors="replace")}
        return out

    def _result(self, rank: int) -> Any:
        return load_value((self.folder / f"result-{rank}.pkl").read_bytes(), rank)


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

