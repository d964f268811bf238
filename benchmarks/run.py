"""The benchmark command: hvdagent against hand-written Horovod and MWMS.

Runs the same model, data and step count under each configuration,
interleaved (every repeat runs every configuration once, in a rotated order,
so slow drift of a noisy machine hits them all alike), and reports medians::

    python benchmarks/run.py                      # the docs run (~10 min on 2 cores)
    python benchmarks/run.py --tiny               # a smoke run (~1-2 min)
    python benchmarks/run.py --allreduce-only     # only the allreduce microbenchmark

Configurations (per-rank batch 64, the model of ``_workload.py``):

    single    one process, plain Keras 3
    hvdagent  hvdagent.DistributedAgent, 2 ranks
    horovod   hand-written Horovod (horovod.tensorflow), 2 ranks
    mwms      tf.distribute.MultiWorkerMirroredStrategy, 2 workers, tf_keras
    nosync    hvdagent with gradient sync switched off: the upper bound

Writes ``<out>/bench.json`` and ``<out>/bench.png`` (and ``allreduce.json``/
``allreduce.png`` unless ``--no-allreduce``); prints samples/s and ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
WORKER = HERE / "worker.py"
CONFIGS = ("single", "hvdagent", "horovod", "mwms", "nosync")
CONTROLLERS = ("gloo", "mpi")
# Targets of issue 6: (ratio name, comparison, bound).
TARGETS = (
    ("hvdagent / horovod", ">=", 0.98),
    ("hvdagent / mwms", ">=", 1.5),
    ("sync overhead", "<=", 0.20),
    ("peak RSS hvdagent / horovod", "<=", 1.10),
)


def base_env() -> dict:
    env = dict(os.environ)
    env.update({"OMP_NUM_THREADS": "1", "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1"})
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    return env


def mpi_env() -> dict:
    """Open MPI settings for one node: run as root in containers, and yield
    the CPU while waiting (busy polling steals the other rank's core when
    there are as many ranks as cores)."""
    return {
        "OMPI_ALLOW_RUN_AS_ROOT": "1",
        "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1",
        "OMPI_MCA_mpi_yield_when_idle": "1",
    }


def horovodrun(np_: int, controller: str) -> list:
    exe = Path(sys.executable).parent / "horovodrun"
    return [str(exe), f"--{controller}", "-np", str(np_)]


def free_ports(n: int) -> list:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def _read(out_dir: Path, size: int) -> list:
    results = []
    for r in range(size):
        path = out_dir / f"result-{r}.json"
        if not path.exists():
            return []
        results.append(json.loads(path.read_text()))
    return results


def launch(config: str, args, controller: str = "gloo", env_extra=None, worker_args=(), timeout: int = 600) -> dict:
    """Run one configuration once; return its measurements (or an error)."""
    out_dir = Path(tempfile.mkdtemp(prefix=f"hvdbench-{config}-"))
    common = [
        "--steps", str(args.steps), "--epochs", str(args.epochs), "--batch", str(args.batch),
        "--out", str(out_dir), *worker_args,
    ]
    env = base_env()
    env.update(env_extra or {})
    load_before = os.getloadavg()[0]
    t0 = time.perf_counter()
    try:
        if config == "mwms":
            ports = free_ports(args.np)
            cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
            procs = []
            for i in range(args.np):
                wenv = dict(env, TF_CONFIG=json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}}))
                procs.append(subprocess.Popen(
                    [sys.executable, str(WORKER), "--mode", "mwms", *common], env=wenv,
                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                ))
            outputs, codes = [], []
            deadline = time.monotonic() + timeout
            for p in procs:
                try:
                    out, _ = p.communicate(timeout=max(1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    for q in procs:
                        q.kill()
                    out, _ = p.communicate()
                outputs.append(out)
                codes.append(p.returncode)
            rc, output = max(codes, key=abs), "\n".join(outputs)
            size = args.np
        else:
            mode = "single" if config == "single" else config
            cmd = [sys.executable, str(WORKER), "--mode", mode, *common]
            size = 1
            if config != "single":
                cmd = horovodrun(args.np, controller) + cmd
                size = args.np
                if controller == "mpi":
                    env.update(mpi_env())
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
            rc, output = proc.returncode, proc.stdout + proc.stderr
    except subprocess.TimeoutExpired as err:
        rc, output, size = -1, f"timed out after {timeout}s: {err}", 0
    wall = time.perf_counter() - t0
    results = _read(out_dir, size) if rc == 0 else []
    shutil.rmtree(out_dir, ignore_errors=True)
    record = {"config": config, "controller": controller if config not in ("single", "mwms") else None,
              "rc": rc, "wall_s": wall, "load_before": load_before, "load_after": os.getloadavg()[0]}
    if not results:
        record["error"] = output[-3000:]
        return record
    record.update({
        "samples_per_s": results[0]["samples_per_s"],
        "peak_rss_mb": max(r["peak_rss_mb"] for r in results),
        "peak_rss_mb_per_rank": [r["peak_rss_mb"] for r in results],
    })
    if "profile" in results[0]:
        record["profile"] = results[0]["profile"]
    return record


def summarize(runs: list) -> dict:
    by = {}
    for r in runs:
        by.setdefault(r["name"], []).append(r)
    out = {}
    for name, rs in by.items():
        ok = [r for r in rs if "samples_per_s" in r]
        if not ok:
            out[name] = {"ok": 0, "failed": len(rs)}
            continue
        sps = [r["samples_per_s"] for r in ok]
        out[name] = {
            "ok": len(ok), "failed": len(rs) - len(ok),
            "median": statistics.median(sps), "min": min(sps), "max": max(sps), "all": sps,
            "peak_rss_mb": statistics.median(r["peak_rss_mb"] for r in ok),
        }
    return out


def ratios(summary: dict) -> dict:
    def med(name):
        s = summary.get(name) or {}
        return s.get("median")

    out = {}
    pairs = {"hvdagent / horovod": ("hvdagent", "horovod"), "hvdagent / mwms": ("hvdagent", "mwms"),
             "hvdagent / single": ("hvdagent", "single"), "horovod / single": ("horovod", "single"),
             "mwms / single": ("mwms", "single"), "hvdagent / nosync": ("hvdagent", "nosync")}
    for label, (a, b) in pairs.items():
        if med(a) and med(b):
            out[label] = med(a) / med(b)
    if "hvdagent / nosync" in out:
        out["sync overhead"] = 1.0 - out["hvdagent / nosync"]
    if med("hvdagent") and med("horovod"):
        out["peak RSS hvdagent / horovod"] = summary["hvdagent"]["peak_rss_mb"] / summary["horovod"]["peak_rss_mb"]
    return out


def check_targets(r: dict) -> dict:
    out = {}
    for name, cmp, bound in TARGETS:
        if name in r:
            v = r[name]
            out[name] = {"value": v, "target": f"{cmp} {bound}", "met": v >= bound if cmp == ">=" else v <= bound}
    return out


def machine() -> dict:
    import multiprocessing

    info = {"platform": platform.platform(), "python": platform.python_version(),
            "cpus": multiprocessing.cpu_count(), "processor": platform.processor()}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
        mem = Path("/proc/meminfo").read_text().splitlines()[0].split()[1]
        info["mem_gib"] = round(int(mem) / 2**20, 1)
    except OSError:
        pass
    try:
        from importlib.metadata import version

        info["versions"] = {p: version(p) for p in ("tensorflow", "keras", "tf_keras", "horovod")}
    except Exception as err:  # noqa: BLE001 (a report, not a failure)
        info["versions"] = str(err)
    return info


def plot(summary: dict, rats: dict, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [c for c in CONFIGS if c in summary and summary[c].get("ok")]
    med = [summary[n]["median"] for n in names]
    lo = [summary[n]["median"] - summary[n]["min"] for n in names]
    hi = [summary[n]["max"] - summary[n]["median"] for n in names]
    fig, ax = plt.subplots(figsize=(7, 4))
    colors = {"single": "#999999", "hvdagent": "#1f77b4", "horovod": "#ff7f0e", "mwms": "#2ca02c", "nosync": "#c7c7c7"}
    ax.bar(names, med, yerr=[lo, hi], capsize=4, color=[colors[n] for n in names])
    for i, v in enumerate(med):
        ax.text(i, v, f"{v:,.0f}", ha="center", va="bottom", fontsize=9)
    ax.set_ylabel("samples/s (median, bars: min-max)")
    notes = ", ".join(f"{k} {v:.2f}" for k, v in rats.items() if k in ("hvdagent / horovod", "hvdagent / mwms", "sync overhead"))
    ax.set_title(f"{title}\n{notes}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def run_allreduce(args, out: Path, controller: str) -> dict:
    exe = horovodrun(args.np, controller) + [sys.executable, str(HERE / "allreduce.py"), "--out", str(out / "allreduce.json")]
    if args.tiny:
        exe += ["--max-bytes", str(256 * 1024), "--iters", "5"]
    env = base_env()
    env.update(args.env)
    if controller == "mpi":
        env.update(mpi_env())
    proc = subprocess.run(exe, env=env, capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        raise RuntimeError(f"allreduce microbenchmark failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    data = json.loads((out / "allreduce.json").read_text())
    from allreduce import plot as plot_allreduce  # noqa: E402 (benchmarks/ is on sys.path)

    plot_allreduce(data, out / "allreduce.png")
    return data


def parse(argv=None):
    p = argparse.ArgumentParser(description="hvdagent benchmark: samples/s against hand-written Horovod and MWMS.")
    p.add_argument("--configs", default=",".join(CONFIGS), help=f"comma-separated subset of {','.join(CONFIGS)}")
    p.add_argument("--repeats", type=int, default=3, help="interleaved repeats; medians are reported (default 3)")
    p.add_argument("--steps", type=int, default=100, help="steps per epoch per rank (default 100)")
    p.add_argument("--epochs", type=int, default=3, help="timed epochs after one warm-up epoch (default 3)")
    p.add_argument("--batch", type=int, default=64, help="per-rank batch size (default 64)")
    p.add_argument("--np", type=int, default=2, help="ranks / workers (default 2)")
    p.add_argument("--controller", choices=CONTROLLERS, default="gloo",
                   help="horovodrun --gloo or --mpi for the Horovod configurations (default gloo)")
    p.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                   help="environment for every Horovod configuration alike (hvdagent, horovod, nosync), "
                        "e.g. --env HOROVOD_CYCLE_TIME=0.1; repeatable")
    p.add_argument("--hvdagent-args", default="", help="extra worker.py arguments for hvdagent and nosync, "
                                                       "e.g. '--overlap on' or '--compression fp16'")
    p.add_argument("--out", default=str(ROOT / "bench-results"), help="output folder (default bench-results/)")
    p.add_argument("--tiny", action="store_true", help="smoke run: 5 steps, 1 timed epoch, 1 repeat, small allreduce sizes")
    p.add_argument("--no-allreduce", action="store_true", help="skip the allreduce microbenchmark")
    p.add_argument("--allreduce-only", action="store_true", help="run only the allreduce microbenchmark")
    p.add_argument("--no-plot", action="store_true", help="write JSON only")
    p.add_argument("--timeout", type=int, default=600, help="seconds per launch before it counts as a hang")
    args = p.parse_args(argv)
    if args.tiny:
        args.steps, args.epochs, args.repeats = 5, 1, 1
    configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    bad = [c for c in configs if c not in CONFIGS]
    if bad:
        p.error(f"unknown configuration(s) {bad}; choose from {list(CONFIGS)}")
    args.configs = configs
    bad_env = [e for e in args.env if "=" not in e]
    if bad_env:
        p.error(f"--env takes KEY=VALUE. Received: {bad_env}")
    args.env = dict(e.split("=", 1) for e in args.env)
    return args


def main(argv=None) -> int:
    args = parse(argv)
    sys.path.insert(0, str(HERE))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    report = {"machine": machine(), "settings": {k: v for k, v in vars(args).items()}, "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    if not args.allreduce_only:
        runs = []
        for rep in range(args.repeats):
            k = rep % len(args.configs)
            order = args.configs[k:] + args.configs[:k]
            for config in order:
                env = args.env if config in ("hvdagent", "horovod", "nosync") else {}
                wargs = args.hvdagent_args.split() if config in ("hvdagent", "nosync") else []
                rec = launch(config, args, controller=args.controller, env_extra=env, worker_args=wargs,
                             timeout=args.timeout)
                rec.update(name=config, repeat=rep)
                runs.append(rec)
                shown = f"{rec['samples_per_s']:8.0f} samples/s  peak RSS {rec['peak_rss_mb']:.0f} MB" if "samples_per_s" in rec else f"FAILED rc={rec['rc']}"
                print(f"[repeat {rep + 1}/{args.repeats}] {config:9s} {shown}  (load {rec['load_before']:.1f})", flush=True)
                if "error" in rec:
                    print(rec["error"][-1500:], file=sys.stderr)
        summary = summarize(runs)
        rats = ratios(summary)
        report.update(runs=runs, summary=summary, ratios=rats, targets=check_targets(rats))
        print("\nconfig      median samples/s   (min - max)        peak RSS/rank")
        for c in args.configs:
            s = summary.get(c, {})
            if s.get("ok"):
                print(f"{c:10s} {s['median']:12.0f}   ({s['min']:.0f} - {s['max']:.0f})   {s['peak_rss_mb']:8.0f} MB")
            else:
                print(f"{c:10s}   failed")
        print()
        for k, v in rats.items():
            print(f"{k:30s} {v:6.3f}")
        for k, t in report["targets"].items():
            print(f"target {k} {t['target']}: {'met' if t['met'] else 'MISSED'} ({t['value']:.3f})")
        if not args.no_plot and summary:
            plot(summary, rats, out / "bench.png",
                 f"{args.np} ranks x batch {args.batch}, {args.steps} steps x {args.epochs} epochs, {args.controller} "
                 + " ".join(f"{k}={v}" for k, v in args.env.items()) + f" {args.hvdagent_args}")
    if not args.no_allreduce or args.allreduce_only:
        data = run_allreduce(args, out, args.controller)
        report["allreduce"] = data
        print("\nallreduce (2 ranks): bytes  latency_ms  busbw_GB/s  memcpy_GB/s")
        for row in data["rows"]:
            print(f"{row['bytes']:>10d} {row['latency_ms']:10.3f} {row['busbw_gbs']:10.2f} {row['memcpy_gbs']:10.2f}")
    (out / "bench.json").write_text(json.dumps(report, indent=1))
    print(f"\nwrote {out / 'bench.json'}", flush=True)
    failed = [r for r in report.get("runs", []) if "error" in r]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
