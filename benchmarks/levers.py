"""Measure each sync-overhead lever of issue 6 on hvdagent, interleaved.

    python benchmarks/levers.py                 # every lever, 2 repeats (~25 min on 2 cores)
    python benchmarks/levers.py --only mpi,fp16 --repeats 3

Every variant is hvdagent with 2 ranks on the benchmark model, changed in one
respect; ``nosync`` is the upper bound. Every MPI variant runs with
``OMPI_MCA_mpi_yield_when_idle=1`` (``run.mpi_env``). Like ``run.py``, it
refuses to start on a busy machine unless ``--allow-busy``. Prints median samples/s, the ratio to
the default (``base``) and the sync overhead ``1 - variant / nosync``, and
writes ``<out>/levers.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import run  # noqa: E402

# name: (config, controller, env, worker args)
VARIANTS = {
    "base": ("hvdagent", "gloo", {}, []),
    "nosync": ("nosync", "gloo", {}, []),
    "horovod": ("horovod", "gloo", {}, []),
    "cycle0.1": ("hvdagent", "gloo", {"HOROVOD_CYCLE_TIME": "0.1"}, []),
    "cycle5": ("hvdagent", "gloo", {"HOROVOD_CYCLE_TIME": "5"}, []),
    "fusion0": ("hvdagent", "gloo", {"HOROVOD_FUSION_THRESHOLD": "0"}, []),
    "fusion1MB": ("hvdagent", "gloo", {"HOROVOD_FUSION_THRESHOLD": str(2**20)}, []),
    "inter1": ("hvdagent", "gloo", {}, ["--inter", "1"]),
    "pin": ("hvdagent", "gloo", {}, ["--pin"]),
    "bind": ("hvdagent", "gloo", {"HVDAGENT_BIND": "cores"}, []),
    "bind-inter1": ("hvdagent", "gloo", {"HVDAGENT_BIND": "cores"}, ["--inter", "1"]),
    "nosync-bind": ("nosync", "gloo", {"HVDAGENT_BIND": "cores"}, []),
    "localsgd8-bind": ("localsgd", "gloo", {"HVDAGENT_BIND": "cores"}, ["--agent-kwargs", '{"sync_every": 8}']),
    "mpi-bind": ("hvdagent", "mpi", {"HVDAGENT_BIND": "cores"}, []),
    "mpi-nosync-bind": ("nosync", "mpi", {"HVDAGENT_BIND": "cores"}, []),
    "autotune": ("hvdagent", "gloo", {"HOROVOD_AUTOTUNE": "1"}, []),
    "fp16": ("hvdagent", "gloo", {}, ["--compression", "fp16"]),
    "bpps2": ("hvdagent", "gloo", {}, ["--bpps", "2"]),
    "mpi": ("hvdagent", "mpi", {}, []),
    "mpi-horovod": ("horovod", "mpi", {}, []),
    "mpi-nosync": ("nosync", "mpi", {}, []),
    "mpi-cycle0.1": ("hvdagent", "mpi", {"HOROVOD_CYCLE_TIME": "0.1"}, []),
    "mpi-fp16": ("hvdagent", "mpi", {}, ["--compression", "fp16"]),
    "mpi-autotune": ("hvdagent", "mpi", {"HOROVOD_AUTOTUNE": "1"}, []),
    "nosync-cycle5": ("nosync", "gloo", {"HOROVOD_CYCLE_TIME": "5"}, []),
    "localsgd8": ("localsgd", "gloo", {}, ["--agent-kwargs", '{"sync_every": 8}']),
    "localsgd8-cycle5": ("localsgd", "gloo", {"HOROVOD_CYCLE_TIME": "5"}, ["--agent-kwargs", '{"sync_every": 8}']),
    "localsgd8-autotune": ("localsgd", "gloo", {"HOROVOD_AUTOTUNE": "1"}, ["--agent-kwargs", '{"sync_every": 8}']),
    "mpi-localsgd8": ("localsgd", "mpi", {}, ["--agent-kwargs", '{"sync_every": 8}']),
}


def describe(name: str) -> str:
    """``localsgd8-cycle5`` -> ``localsgd, gloo, HOROVOD_CYCLE_TIME=5, {"sync_every": 8}``."""
    config, controller, env, wargs = VARIANTS[name]
    args = " ".join(a for a in wargs if a != "--agent-kwargs")
    return ", ".join([config, controller] + [f"{k}={v}" for k, v in env.items()] + ([args] if args else []))


def markdown(report: dict) -> str:
    """The table of a ``levers.json``: every run in repeat order, the median, x base, sync overhead."""
    m = report["machine"]
    lines = [f"{report.get('started', '?')} on {m['cpu']}, {m['cores']} cores; "
             f"{'valid (quiet machine)' if report['valid'] else '**INVALID: the machine was busy**'}; "
             f"{report['settings']['repeats']} interleaved repeats of {report['settings']['steps']} steps x "
             f"{report['settings']['epochs']} timed epochs, samples/s.", "",
             "| variant | what runs | runs (samples/s, by repeat) | median | x base | sync overhead |",
             "|---|---|---|---:|---:|---:|"]
    for name, s in report["summary"].items():
        if not s.get("ok"):
            lines.append(f"| {name} | {describe(name) if name in VARIANTS else ''} | failed | | | |")
            continue
        runs = sorted((r for r in report["runs"] if r["name"] == name and "samples_per_s" in r),
                      key=lambda r: r["repeat"])
        fmt = lambda v: "" if v is None else f"{v:.2f}"  # noqa: E731
        lines.append(f"| {name} | {describe(name) if name in VARIANTS else ''} | "
                     f"{', '.join(format(r['samples_per_s'], ',.0f') for r in runs)} | {s['median']:,.0f} | "
                     f"{fmt(s.get('x_base'))} | {fmt(s.get('overhead'))} |")
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", default="", help="comma-separated variants (default: all)")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--steps", type=int, default=80)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--np", type=int, default=2)
    p.add_argument("--out", default=str(HERE.parent / "bench-results"))
    p.add_argument("--allow-busy", action="store_true", help="measure on a busy machine anyway (marked invalid)")
    p.add_argument("--history", default=None, metavar="DIR",
                   help="also keep a valid run as DIR/<date>-<time>-<machine>.json (never overwritten)")
    p.add_argument("--markdown", default=None, metavar="JSON",
                   help="print the table of an earlier run's levers.json and exit (measures nothing)")
    args = p.parse_args(argv)
    if args.markdown:
        print(markdown(json.loads(Path(args.markdown).read_text())))
        return 0
    names = [n for n in args.only.split(",") if n] or list(VARIANTS)
    for n in names:
        if n not in VARIANTS:
            p.error(f"unknown variant {n!r}; choose from {list(VARIANTS)}")
    machine = run._machine.describe()
    start = run._machine.wait_until_quiet()
    if not start["quiet"] and not args.allow_busy:
        print(f"[levers] REFUSED: the machine is busy: {start['reason']}. Pass --allow-busy to measure anyway.",
              file=sys.stderr)
        return 2
    started = time.strftime("%Y-%m-%d %H:%M:%S")  # as run.py: the history's file name comes from it
    meter = run._machine.CpuMeter().start()
    runs = []
    for rep in range(args.repeats):
        for name in run._stats.order(names, rep, args.repeats):
            config, controller, env, wargs = VARIANTS[name]
            rec = run.launch(config, args, controller=controller, env_extra=env, worker_args=wargs)
            rec.update(name=name, repeat=rep)
            runs.append(rec)
            print(f"[{rep + 1}/{args.repeats}] {name:14s} "
                  + (f"{rec['samples_per_s']:7.0f} samples/s" if "samples_per_s" in rec else f"FAILED\n{rec['error'][-800:]}"),
                  flush=True)
    summary = run.summarize(runs, key=lambda r: r["name"])
    base = summary.get("base", {}).get("median")
    print(f"\n{'variant':14s} {'median':>8s} {'x base':>7s} {'overhead':>9s}")
    for name in names:
        s = summary[name]
        if not s.get("ok"):
            print(f"{name:14s} failed")
            continue
        ctrl = VARIANTS[name][1]
        ns = summary.get(f"{ctrl}-nosync" if ctrl == "mpi" and f"{ctrl}-nosync" in summary else "nosync", {}).get("median")
        s["x_base"] = s["median"] / base if base else None
        s["overhead"] = 1 - s["median"] / ns if ns else None
        print(f"{name:14s} {s['median']:8.0f} {s['x_base'] or 0:7.3f} {s['overhead'] if s['overhead'] is not None else float('nan'):9.3f}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    during = meter.stop()
    valid = start["quiet"] and (during["other_cores"] or 0) <= run._machine.MAX_OTHER_CORES
    settings = {k: v for k, v in vars(args).items() if k not in ("out", "history")}  # where it ran stays out
    report = {"machine": machine, "settings": settings, "started": started, "start_check": start,
              "other_cores_during": during["other_cores"], "valid": valid, "runs": runs, "summary": summary}
    (out / "levers.json").write_text(json.dumps(report, indent=1))
    if args.history and valid:
        print(f"added to the history: {run._history.save(report, args.history)}")
    if not valid:
        print("[levers] INVALID: the machine was busy (see start_check and other_cores_during in levers.json)",
              file=sys.stderr)
    return 0 if valid else 3


if __name__ == "__main__":
    sys.exit(main())
