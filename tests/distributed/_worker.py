"""Helpers for worker scripts run under horovodrun (imported by them)."""

import json
import os
import sys
import time
import traceback
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


class Checks:
    """Collect named results on every rank and write them as JSON at the end."""

    def __init__(self, out_dir, watchdog=None):
        import faulthandler

        import hvdagent

        # A hang prints every thread's stack and exits non-zero instead of
        # waiting for the test's timeout.
        faulthandler.dump_traceback_later(watchdog or float(os.environ.get("HVDAGENT_TEST_WATCHDOG", 300)), exit=True)

        hvdagent.init()
        self.rank, self.size = hvdagent.rank(), hvdagent.size()
        self.out = Path(out_dir)
        self.out.mkdir(parents=True, exist_ok=True)
        self.results = {}

    def record(self, name, value):
        self.results[name] = value
        if self.rank == 0:
            print(f"[check] {name}", flush=True)

    def expect_error(self, name, exc_type, fn, *args, **kwargs):
        """Run fn, record the message of the expected exception (or a failure)."""
        try:
            fn(*args, **kwargs)
        except exc_type as err:
            self.results[name] = {"raised": type(err).__name__, "message": str(err)}
            return
        except Exception as err:  # noqa: BLE001
            self.results[name] = {"raised": type(err).__name__, "message": traceback.format_exc()}
            return
        self.results[name] = {"raised": None, "message": ""}

    def finish(self):
        (self.out / f"results-{self.rank}.json").write_text(json.dumps(self.results, indent=1, default=float))
        sys.stdout.flush()


def weights_digest(model):
    import hashlib

    h = hashlib.sha256()
    for w in model.get_weights():
        h.update(w.tobytes())
    return h.hexdigest()


def served(hosts_file):
    """How many times the host-discovery script has run (it appends a line to
    ``<hosts_file>.served`` each time)."""
    try:
        with open(str(hosts_file) + ".served") as f:
            return len(f.read().splitlines())
    except OSError:
        return 0


def change_hosts(hosts_file, text, timeout=60.0):
    """Rewrite the host list, then wait until the elastic driver has run the
    discovery script twice since: the first run read the new list, and the
    driver acts on what a run returns (it tells the workers) before it starts
    the next one. Counted from after the write, since a run in flight during
    it may have served the old list. Returns ``(runs since, seconds waited)``
    so that a test can tell the wait did not time out."""
    start = time.monotonic()
    with open(hosts_file, "w") as f:
        f.write(text)
    before = served(hosts_file)
    while served(hosts_file) < before + 2 and time.monotonic() < start + timeout:
        time.sleep(0.2)  # polling an observable condition
    return served(hosts_file) - before, round(time.monotonic() - start, 1)
