"""The communication-bound benchmark: which way of synchronising wins on which link.

    python benchmarks/comm.py --history docs/bench/comm --plots docs/bench   # what `make bench` runs (root)
    python benchmarks/comm.py --quick                                        # a functional check (~1 min)

Two network-namespace hosts of ``ci/hosts.sh``, one rank each (each rank on
its own core: the link, not core contention, sets the pace), their links
unshaped, then limited to 1 Gbit/s, then to 100 Mbit/s (``ci/hosts.sh
shape``). At every link rate one ``horovodrun`` launch runs the allreduce
microbenchmark over that link and then every configuration of
``comm_worker.py`` one after the other (the model: 64-2048-2048-10, 4.35M
float32 parameters, 17.4 MB of gradients a step; the task: scikit-learn's
digits; SGD with momentum, batch 64 per rank).

* On the unshaped link every configuration trains for the whole epoch budget
  (``--epochs``, default 20): its **test accuracy** and loss curve come from
  there (the arithmetic is the same on any link, so they hold for the shaped
  runs too), and its throughput is timed after PowerSGD's start
  (``--powersgd-start-epochs`` of uncompressed steps first, 10% of the
  budget by default, untimed for every configuration alike).
* On the shaped links every configuration trains ``--shaped-epochs`` (one
  untimed warm-up epoch, the rest timed), PowerSGD compressing from the first
  step: the throughput of the compressed regime.

Reported per link and configuration: samples/s, the bytes each rank's
interface sent per step (its counters, not a computation), the ratio to the
no-sync bound and to every-step float32; per configuration the test accuracy
against every-step float32; the alpha-beta model (``hvdagent._sync.cost_model``,
fitted to each link's allreduce) against every measured point; the targets
of issue 21. Writes ``<out>/comm.json`` and, with ``--plots DIR``,
``DIR/comm-throughput.png`` and ``DIR/comm-loss.png``; with ``--history
DIR`` adds the run there (never overwriting). Like ``run.py`` it refuses to
start on a busy machine unless ``--allow-busy`` (results then marked
invalid).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(HERE), str(ROOT)]

import _history  # noqa: E402
import _machine  # noqa: E402
import comm_report  # noqa: E402
from comm_worker import CONFIGS  # noqa: E402

HOSTS_SH = ["bash", str(ROOT / "ci" / "hosts.sh")]
RATES = ("off", "1gbit", "100mbit")
TRAIN_SAMPLES = 1437  # digits, 80% (comm_worker.load_digits)


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rates", default=",".join(RATES), help="link rates, comma-separated: off (unshaped) or tc's "
                                                            f"units (100mbit, 1gbit); default {','.join(RATES)}")
    p.add_argument("--configs", default=",".join(CONFIGS), help=f"subset of {','.join(CONFIGS)}")
    p.add_argument("--epochs", type=int, default=20, help="epoch budget of the accuracy runs (unshaped link)")
    p.add_argument("--powersgd-start-epochs", type=int, default=2,
                   help="epochs of uncompressed steps before PowerSGD starts, in the accuracy runs (default 2)")
    p.add_argument("--shaped-epochs", type=int, default=3, help="epochs per configuration on a shaped link "
                                                                "(the first untimed; default 3)")
    p.add_argument("--hidden", type=int, default=2048, help="units of the model's two hidden layers")
    p.add_argument("--batch", type=int, default=64, help="per-rank batch size")
    p.add_argument("--quick", action="store_true", help="a functional check: 256 hidden units, 100mbit only, "
                                                        "2 epochs, small allreduces; not for conclusions")
    p.add_argument("--max-load", type=float, default=_machine.MAX_LOAD)
    p.add_argument("--max-other-cores", type=float, default=_machine.MAX_OTHER_CORES)
    p.add_argument("--settle", type=float, default=_machine.SETTLE_S)
    p.add_argument("--allow-busy", action="store_true", help="measure on a busy machine; results marked invalid")
    p.add_argument("--out", default=str(ROOT / "bench-results" / "comm"))
    p.add_argument("--history", default=None, metavar="DIR", help="add the run to this history folder")
    p.add_argument("--plots", default=None, metavar="DIR", help="write comm-throughput.png and comm-loss.png here")
    p.add_argument("--timeout", type=int, default=1800, help="seconds per launch before it counts as a hang")
    args = p.parse_args(argv)
    if args.quick:
        args.rates, args.hidden, args.epochs, args.shaped_epochs, args.powersgd_start_epochs = "100mbit", 256, 2, 2, 0
    args.rates = [r.strip() for r in args.rates.split(",") if r.strip()]
    args.configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    bad = [c for c in args.configs if c not in CONFIGS]
    if bad:
        p.error(f"unknown configuration(s) {bad}; choose from {list(CONFIGS)}")
    if not args.rates:
        p.error("--rates names no link rate. Received: --rates=''")
    return args


def steps_per_epoch(batch: int, np_: int = 2) -> int:
    return math.ceil(math.ceil(TRAIN_SAMPLES / np_) / batch)


def phase_args(rate: str, args) -> list:
    """The worker's arguments at ``rate``: the whole budget on the first link of
    the run (accuracy) when it is unshaped or the only one, else the shaped epochs."""
    accuracy = rate == "off" or len(args.rates) == 1
    if accuracy:
        epochs, warmup = args.epochs, max(1, args.powersgd_start_epochs)
        start = args.powersgd_start_epochs * steps_per_epoch(args.batch)
    else:
        epochs, warmup, start = args.shaped_epochs, 1, 0
    if args.quick:
        max_bytes, iters = 256 * 1024, 5
    else:
        max_bytes, iters = {"off": 64 << 20, "100mbit": 4 << 20}.get(rate, 16 << 20), 0
    return ["--epochs", str(epochs), "--warmup-epochs", str(warmup), "--powersgd-start", str(start),
            "--hidden", str(args.hidden), "--batch", str(args.batch), "--configs", ",".join(args.configs),
            "--allreduce-max-bytes", str(max_bytes), "--allreduce-iters", str(iters)], accuracy


class TestBed:
    """Two hosts of ci/hosts.sh for the length of a ``with`` block (always torn down)."""

    def __enter__(self):
        self.env = dict(os.environ, HVDAGENT_HOSTS_OWNER=str(os.getpid()))
        self.env.setdefault("HVDAGENT_HOSTS_WAIT", "1800")
        up = subprocess.run(HOSTS_SH + ["up", "2"], capture_output=True, text=True, env=self.env, timeout=2000)
        if up.returncode != 0:
            raise RuntimeError(f"the two-host test bed (ci/hosts.sh up 2) could not start: {up.stderr.strip()[-500:]}")
        for line in subprocess.run(HOSTS_SH + ["env"], capture_output=True, text=True, check=True).stdout.splitlines():
            k, _, v = line.replace("export ", "").partition("=")
            self.env[k] = v.strip('"').replace("$PATH", os.environ["PATH"])
        return self

    def shape(self, rate: str) -> None:
        proc = subprocess.run(HOSTS_SH + ["shape", rate], capture_output=True, text=True, env=self.env, timeout=120)
        if proc.returncode != 0:
            raise RuntimeError(f"ci/hosts.sh shape {rate} failed: {proc.stderr.strip()[-500:]}")

    def cpu_s(self) -> float:
        """CPU the hosts' processes used (children of their sshd, not of this process)."""
        return sum(_machine.tree_cpu_s(int(p.read_text().strip()))
                   for p in Path(self.env["HVDAGENT_HOSTS_DIR"]).glob("sshd-*.pid"))

    def __exit__(self, *exc):
        subprocess.run(HOSTS_SH + ["down"], capture_output=True, text=True, timeout=300)
        return False


def launch(bed: TestBed, worker_args: list, timeout: int) -> dict:
    """One horovodrun across the two hosts; both ranks' results, or the error."""
    out = Path(tempfile.mkdtemp(prefix="hvdbench-comm-"))
    cmd = [str(Path(sys.executable).parent / "horovodrun"), "--gloo", "-np", "2", "-H", "hvdhost1:1,hvdhost2:1",
           "--network-interface", "hvd0", "--disable-cache", sys.executable, str(HERE / "comm_worker.py"),
           *worker_args, "--iface", "hvd0", "--out", str(out)]
    env = dict(bed.env, OMP_NUM_THREADS="1", TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    t = time.monotonic()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout, cwd=str(ROOT))
        rc, text = proc.returncode, proc.stdout + proc.stderr
    except subprocess.TimeoutExpired as err:
        rc, text = -1, f"timed out after {timeout}s: {(err.stdout or '')[-2000:]}"
    try:
        ranks = [json.loads((out / f"result-{r}.json").read_text()) for r in range(2)] if rc == 0 else []
    finally:
        shutil.rmtree(out, ignore_errors=True)
    for line in text.splitlines():
        if "[comm]" in line:
            print("   " + line.split("[comm]", 1)[1].strip(), flush=True)
    return {"rc": rc, "wall_s": time.monotonic() - t, "ranks": ranks, "error": None if ranks else text[-4000:]}


def summarize_phase(rate: str, run: dict, accuracy: bool) -> dict:
    """Rank 0's measurements per configuration, the bytes both ranks sent, and
    whether the replicas ended identical."""
    r0, r1 = run["ranks"]
    results = {}
    for a, b in zip(r0["results"], r1["results"]):
        sent = [x for x in (a["sent_bytes_per_step"], b["sent_bytes_per_step"]) if x is not None]
        results[a["config"]] = {
            "samples_per_s": a["samples_per_s"], "steps": a["steps"], "elapsed_s": a["elapsed_s"],
            "sent_bytes_per_step": max(sent) if sent else None,
            "sent_bytes_per_step_by_rank": [a["sent_bytes_per_step"], b["sent_bytes_per_step"]],
            "replicas_identical": a["digest"] == b["digest"],
            "test_accuracy": a["test_accuracy"], "test_loss": a["test_loss"], "epochs": a["epochs"],
        }
    return {"rate": rate, "accuracy_run": accuracy, "params": r0["params"], "compress_s": r0.get("compress_s", {}),
            "hosts": [r0["host"], r1["host"]],
            "iface_found": r0["iface_found"] and r1["iface_found"], "allreduce": r0.get("allreduce", []),
            "wall_s": run["wall_s"], "results": results}


def main(argv=None) -> int:
    args = parse(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    machine = _machine.describe()
    print(f"[comm] {machine['cpu']}, {machine['cores']} cores; checking that the machine is quiet", flush=True)
    start = _machine.wait_until_quiet(args.max_load, args.settle if not args.quick else 0, args.max_other_cores,
                                      probe_s=5.0 if not args.quick else 1.0)
    reasons = []
    if not start["quiet"]:
        if not (args.allow_busy or args.quick):
            print(f"[comm] REFUSED: the machine is busy: {start['reason']}. Stop the other jobs and run again, or "
                  "pass --allow-busy to measure anyway (the results are then marked invalid).", file=sys.stderr)
            return 2
        reasons.append(f"started on a busy machine: {start['reason']}")
    if args.quick:
        reasons.append("--quick: a functional check, not a measurement")
    settings = {k: v for k, v in vars(args).items() if k not in ("out", "history", "plots")}
    report = {"schema": 1, "kind": "comm", "started": time.strftime("%Y-%m-%d %H:%M:%S"), "machine": machine,
              "settings": settings, "start_check": start, "phases": {}, "failures": {}}
    meter = _machine.CpuMeter().start()
    with TestBed() as bed:
        for rate in args.rates:
            bed.shape(rate)
            wargs, accuracy = phase_args(rate, args)
            print(f"[comm] link {rate}: {'accuracy run, ' if accuracy else ''}{len(args.configs)} configurations",
                  flush=True)
            run = launch(bed, wargs, args.timeout)
            if run["error"]:
                report["failures"][rate] = run["error"]
                print(f"[comm] link {rate} FAILED (rc={run['rc']}):\n{run['error'][-3000:]}", file=sys.stderr)
                continue
            report["phases"][rate] = summarize_phase(rate, run, accuracy)
        bed.shape("off")
        meter.credit(bed.cpu_s())
    during = meter.stop()
    if during["other_cores"] is not None and during["other_cores"] > args.max_other_cores:
        reasons.append(f"other processes used {during['other_cores']:.2f} cores on average during the run "
                       f"(> {args.max_other_cores})")
    report["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
    report["validity"] = {"valid": not reasons, "reasons": reasons, "load_start": start["load1"],
                          "load_end": _machine.load1(), "other_cores_during": during["other_cores"],
                          "wall_s": during["wall_s"]}
    comm_report.analyse(report)
    (out / "comm.json").write_text(json.dumps(report, indent=1))
    saved = _history.save(report, args.history) if args.history and (not reasons or args.allow_busy) else None
    print()
    print(comm_report.section(report))
    if args.plots and report["phases"]:
        comm_report.plot(report, Path(args.plots))
    print(f"\nwrote {out / 'comm.json'}" + (f"; added to the history: {saved}" if saved else ""), flush=True)
    if report["failures"]:
        return 1
    if reasons and not (args.allow_busy or args.quick):
        print("[comm] INVALID: " + "; ".join(reasons) + ". Not added to the history.", file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
