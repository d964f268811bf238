"""The benchmark command: hvdagent against hand-written Horovod and MWMS, on
both Horovod controllers, interleaved, on a machine checked to be quiet.

    python benchmarks/run.py --history docs/bench/history   # what `make bench` runs
    python benchmarks/run.py --tiny --allow-busy            # a smoke run (correctness only)

Configurations (per-rank batch 64, the model of ``_workload.py``; 2 ranks):

    single     one process, plain Keras 3
    mwms       tf.distribute.MultiWorkerMirroredStrategy, 2 workers, tf_keras
    hvdagent   hvdagent.DistributedAgent                       } each under
    horovod    hand-written Horovod (horovod.tensorflow)       } horovodrun --gloo
    nosync     hvdagent with gradient sync off: the upper bound } and --mpi
    localsgd   hvdagent with ``sync_every=8`` (local SGD)       }

Every configuration runs with the same environment on a controller: under MPI
that includes ``OMPI_MCA_mpi_yield_when_idle=1`` (which hvdagent sets by
itself when the user has not), so the hand-written baseline gets it too.

Discipline (``_machine.py``): the run waits for the machine to settle and
refuses to start on a busy one (exit status 2) unless ``--allow-busy``, which
marks the results invalid; the CPU used by other processes during the run is
measured, and a disturbed run is marked invalid (exit status 3). Every repeat
runs every configuration once, in a rotated order (``_stats.order``); ratios
come from the same run. Writes ``<out>/bench.json`` (+ plots) and, with
``--history DIR``, a new history file there (never overwriting one).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

import _history  # noqa: E402
import _machine  # noqa: E402
import _stats  # noqa: E402

WORKER = HERE / "worker.py"
CONFIGS = ("single", "mwms", "hvdagent", "horovod", "nosync", "localsgd")
CONTROLLERS = ("gloo", "mpi")
AGENT_CONFIGS = ("hvdagent", "nosync", "localsgd")
# Kept for levers.py and older callers.
summarize = _stats.summarize


def base_env() -> dict:
    env = dict(os.environ)
    env.update({"OMP_NUM_THREADS": "1", "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1"})
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    return env


def mpi_env() -> dict:
    """Open MPI settings for one node, given to every MPI configuration alike:
    allow running as root (containers), and yield the CPU while waiting (busy
    polling steals the other rank's core when there are as many ranks as cores;
    hvdagent sets this itself unless the user did)."""
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


def _run_mwms(args, env, common, timeout):
    ports = free_ports(args.np)
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    procs = []
    for i in range(args.np):
        wenv = dict(env, TF_CONFIG=json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}}))
        procs.append(subprocess.Popen([sys.executable, str(WORKER), "--mode", "mwms", *common], env=wenv,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
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
    return max(codes, key=abs), "\n".join(outputs)


def launch(config: str, args, controller: str = "gloo", env_extra=None, worker_args=(), timeout: int = 600) -> dict:
    """Run one configuration once; return its measurements (or an error)."""
    out_dir = Path(tempfile.mkdtemp(prefix=f"hvdbench-{config}-"))
    common = ["--steps", str(args.steps), "--epochs", str(args.epochs), "--batch", str(args.batch),
              "--out", str(out_dir), *worker_args]
    env = base_env()
    env.update(env_extra or {})
    controlled = config in _stats.CONTROLLED
    if controlled and controller == "mpi":
        env.update(mpi_env())
    load_before = _machine.load1()
    meter = _machine.CpuMeter().start()
    size = 1 if config == "single" else args.np
    try:
        if config == "mwms":
            rc, output = _run_mwms(args, env, common, timeout)
        else:
            cmd = [sys.executable, str(WORKER), "--mode", config, *common]
            if controlled:
                cmd = horovodrun(args.np, controller) + cmd
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
            rc, output = proc.returncode, proc.stdout + proc.stderr
    except subprocess.TimeoutExpired as err:
        rc, output = -1, f"timed out after {timeout}s: {err}"
    cpu = meter.stop()
    results = _read(out_dir, size) if rc == 0 else []
    shutil.rmtree(out_dir, ignore_errors=True)
    record = {"config": config, "controller": controller if controlled else None, "rc": rc,
              "wall_s": cpu["wall_s"], "load_before": load_before, "load_after": _machine.load1(),
              "other_cores": cpu["other_cores"], "steal_cores": cpu["steal_cores"],
              "ours_cpu_s": cpu["ours_cores"] * cpu["wall_s"]}
    if not results:
        record["error"] = output[-3000:]
        return record
    record.update({
        "samples_per_s": results[0]["samples_per_s"],
        "peak_rss_mb": max(r["peak_rss_mb"] for r in results),
        "peak_rss_mb_per_rank": [r["peak_rss_mb"] for r in results],
        "env": results[0].get("env", {}),
        # CPU the ranks report themselves: must be inside ours_cpu_s, or the
        # "other processes" figure would count the benchmark against itself.
        "ranks_cpu_s": sum(r.get("cpu_s", 0.0) for r in results),
    })
    for key in ("profile", "nosync_via", "agent_kwargs"):
        if results[0].get(key) is not None:
            record[key] = results[0][key]
    return record


def _kv(spec: str, what: str) -> dict:
    """``"a=1,b=x"`` -> ``{"a": 1, "b": "x"}`` (values parsed as JSON when they are)."""
    out = {}
    for item in filter(None, (x.strip() for x in spec.split(","))):
        if "=" not in item:
            raise SystemExit(f"{what} takes KEY=VALUE[,KEY=VALUE...]. Received: {what}={spec!r}")
        k, v = item.split("=", 1)
        try:
            out[k.strip()] = json.loads(v)
        except json.JSONDecodeError:
            out[k.strip()] = v
    return out


def probe(args) -> dict:
    """What the installed stack supports: ``{"skipped": {label: why}, ...}``.

    The local-SGD configuration needs a DistributedAgent that accepts its
    arguments; the MPI controller needs a Horovod built with MPI and mpirun.
    """
    code = ("import inspect, json, hvdagent, horovod.tensorflow as hvd\n"
            "p = inspect.signature(hvdagent.DistributedAgent).parameters\n"
            "kw = any(x.kind == x.VAR_KEYWORD for x in p.values())\n"
            f"need = {sorted(args.localsgd)!r}\n"
            "print(json.dumps({'missing': [] if kw else [k for k in need if k not in p], 'mpi': bool(hvd.mpi_built())}))")
    proc = subprocess.run([sys.executable, "-c", code], env=base_env(), capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        raise SystemExit(f"cannot import hvdagent and horovod.tensorflow:\n{proc.stderr[-2000:]}")
    info = json.loads(proc.stdout.strip().splitlines()[-1])
    skipped = {}
    if info["missing"] and "localsgd" in args.configs:
        skipped["localsgd"] = (f"the installed hvdagent's DistributedAgent does not accept {info['missing']} "
                               f"(needed for local SGD: {args.localsgd})")
    if "mpi" in args.controllers and not (info["mpi"] and shutil.which("mpirun")):
        skipped["mpi"] = "Horovod is not built with MPI, or mpirun is not on PATH"
    return skipped


def slots(args, skipped: dict) -> list:
    """(config, controller) pairs, grouped so compared pairs run next to each other."""
    out = [(c, None) for c in args.configs if c in _stats.UNCONTROLLED and c not in skipped]
    for ctrl in args.controllers:
        if ctrl in skipped:
            continue
        out += [(c, ctrl) for c in args.configs if c in _stats.CONTROLLED and c not in skipped]
    return out


def worker_args(config: str, args) -> list:
    if config not in AGENT_CONFIGS:
        return []
    kwargs = {"localsgd": args.localsgd, "nosync": args.nosync_args}.get(config, {})
    return args.hvdagent_args.split() + ["--agent-kwargs", json.dumps(kwargs)]


def run_allreduce(args, out: Path, controller: str, key: str = None, extra=(), env_extra=None) -> dict:
    """The allreduce microbenchmark under ``controller``; on loopback unless
    ``extra`` names hosts. Stored in the report under ``key`` (default: the
    controller)."""
    key = key or controller
    path = out / f"allreduce-{key}.json"
    np_ = 2 if extra else args.np
    cmd = horovodrun(np_, controller) + list(extra) + [sys.executable, str(HERE / "allreduce.py"), "--out", str(path)]
    if args.tiny:
        cmd += ["--max-bytes", str(256 * 1024), "--iters", "5"]
    env = base_env()
    env.update(env_extra or {})
    env.update(args.env)
    if controller == "mpi":
        env.update(mpi_env())
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=args.timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"allreduce microbenchmark ({key}) failed ({proc.returncode}):\n"
                           f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    data = json.loads(path.read_text())
    data["controller"] = controller
    if not args.no_plot:
        from allreduce import plot as plot_allreduce

        plot_allreduce(data, out / f"allreduce-{key}.png")
    return data


HOSTS_KEY = "{controller}, 2 hosts"  # report["allreduce"] key of the run between two namespace hosts


def run_allreduce_hosts(args, out: Path, controllers: list) -> tuple:
    """The allreduce microbenchmark between two hosts of ci/hosts.sh (network
    namespaces joined by veth links and a bridge, TCP as between machines),
    one rank each, under every controller. Returns ``(results, why_not,
    cpu_s)``: ``cpu_s`` is the CPU the hosts' processes used (they are the
    hosts' sshd's children, not this process's), for the disturbance check."""
    hosts_sh = ["bash", str(ROOT / "ci" / "hosts.sh")]
    env = dict(os.environ, HVDAGENT_HOSTS_OWNER=str(os.getpid()))
    up = subprocess.run(hosts_sh + ["up", "2"], capture_output=True, text=True, env=env, timeout=600)
    if up.returncode != 0:
        return {}, f"the two-host test bed (ci/hosts.sh up 2) could not start: {up.stderr.strip()[-300:]}", 0.0
    bed = {}
    try:
        for line in subprocess.run(hosts_sh + ["env"], capture_output=True, text=True, check=True).stdout.splitlines():
            k, _, v = line.replace("export ", "").partition("=")
            bed[k] = v.strip('"').replace("$PATH", os.environ["PATH"])
        extra = ["-H", "hvdhost1:1,hvdhost2:1", "--network-interface", "hvd0", "--disable-cache"]
        results = {}
        for ctrl in controllers:
            data = run_allreduce(args, out, ctrl, key=f"{ctrl}-2hosts", extra=extra, env_extra=bed)
            data["hosts"] = "2 network-namespace hosts of ci/hosts.sh (veth + bridge), 1 rank each"
            results[HOSTS_KEY.format(controller=ctrl)] = data
        # Each host's sshd daemon has reaped everything that ran there: its tree is the hosts' CPU.
        daemons = Path(bed["HVDAGENT_HOSTS_DIR"]).glob("sshd-*.pid")
        return results, None, sum(_machine.tree_cpu_s(int(p.read_text().strip())) for p in daemons)
    finally:
        subprocess.run(hosts_sh + ["down"], capture_output=True, text=True, timeout=120)


def parse(argv=None):
    p = argparse.ArgumentParser(description="hvdagent benchmark: samples/s against hand-written Horovod and MWMS.")
    p.add_argument("--configs", default=",".join(CONFIGS), help=f"comma-separated subset of {','.join(CONFIGS)}")
    p.add_argument("--controllers", default="gloo,mpi", help="horovodrun controllers, comma-separated (default gloo,mpi)")
    p.add_argument("--repeats", type=int, default=3, help="interleaved repeats; medians are reported (default 3)")
    p.add_argument("--steps", type=int, default=80, help="steps per epoch per rank (default 80)")
    p.add_argument("--epochs", type=int, default=2, help="timed epochs after one warm-up epoch (default 2)")
    p.add_argument("--batch", type=int, default=64, help="per-rank batch size (default 64)")
    p.add_argument("--np", type=int, default=2, help="ranks / workers (default 2)")
    p.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                   help="environment for every Horovod configuration alike; repeatable")
    p.add_argument("--hvdagent-args", default="", help="extra worker.py arguments for hvdagent, nosync and localsgd, "
                                                       "e.g. '--compression fp16'")
    p.add_argument("--localsgd", default="sync_every=8", metavar="KEY=VALUE,...",
                   help="DistributedAgent arguments of the localsgd configuration (default sync_every=8)")
    p.add_argument("--nosync-args", default="", metavar="KEY=VALUE,...",
                   help="DistributedAgent arguments of the nosync configuration (default none: the optimizer's "
                        "sync switch, or sync_every=1000000000 where hvdagent has no switch)")
    p.add_argument("--max-load", type=float, default=_machine.MAX_LOAD,
                   help=f"highest 1-minute load average to start at (default {_machine.MAX_LOAD})")
    p.add_argument("--max-other-cores", type=float, default=_machine.MAX_OTHER_CORES,
                   help="most CPU (cores) other processes may use, before and during the run "
                        f"(default {_machine.MAX_OTHER_CORES})")
    p.add_argument("--settle", type=float, default=_machine.SETTLE_S,
                   help=f"seconds to wait for the load to fall before refusing (default {_machine.SETTLE_S:.0f})")
    p.add_argument("--allow-busy", action="store_true",
                   help="run on a busy machine anyway; the results are marked invalid")
    p.add_argument("--out", default=str(ROOT / "bench-results"), help="output folder (default bench-results/)")
    p.add_argument("--history", default=None, metavar="DIR",
                   help="also add the run to this history folder (make bench: docs/bench/history)")
    p.add_argument("--tiny", action="store_true", help="smoke run: 5 steps, 1 timed epoch, 1 repeat, small allreduces")
    p.add_argument("--no-allreduce", action="store_true", help="skip the allreduce microbenchmark")
    p.add_argument("--allreduce-only", action="store_true", help="run only the allreduce microbenchmark")
    p.add_argument("--allreduce-hosts", action="store_true",
                   help="also run the allreduce microbenchmark between two network-namespace hosts of "
                        "ci/hosts.sh (root; skipped with the reason where that is not possible)")
    p.add_argument("--no-plot", action="store_true", help="write JSON only")
    p.add_argument("--timeout", type=int, default=600, help="seconds per launch before it counts as a hang")
    args = p.parse_args(argv)
    if args.tiny:
        args.steps, args.epochs, args.repeats = 5, 1, 1
    args.configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    bad = [c for c in args.configs if c not in CONFIGS]
    if bad:
        p.error(f"unknown configuration(s) {bad}; choose from {list(CONFIGS)}")
    args.controllers = [c.strip() for c in args.controllers.split(",") if c.strip()]
    bad = [c for c in args.controllers if c not in CONTROLLERS]
    if bad or not args.controllers:
        p.error(f"--controllers takes a comma-separated subset of {list(CONTROLLERS)}. Received: {bad or '(none)'}")
    bad_env = [e for e in args.env if "=" not in e]
    if bad_env:
        p.error(f"--env takes KEY=VALUE. Received: {bad_env}")
    args.env = dict(e.split("=", 1) for e in args.env)
    args.localsgd = _kv(args.localsgd, "--localsgd")
    args.nosync_args = _kv(args.nosync_args, "--nosync-args")
    return args


def main(argv=None) -> int:
    args = parse(argv)
    import report as render  # benchmarks/report.py: the same tables as docs/benchmarks.md

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    machine = _machine.describe()
    print(f"[bench] {machine['cpu']}, {machine['cores']} cores; checking that the machine is quiet", flush=True)
    start = _machine.wait_until_quiet(args.max_load, args.settle, args.max_other_cores)
    reasons = []
    if not start["quiet"]:
        msg = f"the machine is busy: {start['reason']}"
        if not args.allow_busy:
            print(f"[bench] REFUSED: {msg}. Stop the other jobs and run again, or pass --allow-busy "
                  "to measure anyway (the results are then marked invalid).", file=sys.stderr)
            return 2
        print(f"[bench] WARNING: {msg}; measuring anyway (--allow-busy): the results are marked invalid.",
              file=sys.stderr)
        reasons.append(f"started on a busy machine: {start['reason']}")
    skipped = probe(args)
    for what, why in skipped.items():
        print(f"[bench] skipping {what}: {why}", flush=True)
    controllers = [c for c in args.controllers if c not in skipped]
    settings = {k: v for k, v in vars(args).items() if k not in ("out", "history")}  # where it ran stays out
    report = {"schema": _history.SCHEMA, "started": time.strftime("%Y-%m-%d %H:%M:%S"), "machine": machine,
              "settings": settings, "skipped": skipped, "start_check": start}
    meter = _machine.CpuMeter().start()
    runs = []
    if not args.allreduce_only:
        plan = slots(args, skipped)
        for rep in range(args.repeats):
            for config, ctrl in _stats.order(plan, rep, args.repeats):
                rec = launch(config, args, controller=ctrl or "gloo",
                             env_extra=args.env if config in _stats.CONTROLLED else {},
                             worker_args=worker_args(config, args), timeout=args.timeout)
                rec["repeat"] = rep
                runs.append(rec)
                name = _stats.label(config, ctrl)
                shown = (f"{rec['samples_per_s']:8.0f} samples/s  peak RSS {rec['peak_rss_mb']:.0f} MB"
                         if "samples_per_s" in rec else f"FAILED rc={rec['rc']}")
                other = rec["other_cores"]
                print(f"[repeat {rep + 1}/{args.repeats}] {name:16s} {shown}  (load {rec['load_before']:.2f}, "
                      f"other processes {other if other is not None else float('nan'):.2f} cores)", flush=True)
                if "error" in rec:
                    print(rec["error"][-1500:], file=sys.stderr)
    report["allreduce"] = {}
    if not args.no_allreduce or args.allreduce_only:
        for ctrl in controllers:
            report["allreduce"][ctrl] = run_allreduce(args, out, ctrl)
        if args.allreduce_hosts:
            between, why_not, hosts_cpu_s = run_allreduce_hosts(args, out, controllers)
            meter.credit(hosts_cpu_s)
            report["allreduce"].update(between)
            if why_not:
                skipped["allreduce between hosts"] = why_not
                print(f"[bench] skipping the allreduce between hosts: {why_not}", flush=True)
    during = meter.stop()
    report.update(finished=time.strftime("%Y-%m-%d %H:%M:%S"), runs=runs, summary=_stats.summarize(runs),
                  ratios=_stats.ratios(runs, controllers))
    report["targets"] = _stats.check_targets(report["ratios"])
    if during["other_cores"] is not None and during["other_cores"] > args.max_other_cores:
        reasons.append(f"other processes used {during['other_cores']:.2f} cores on average during the run "
                       f"(> {args.max_other_cores})")
    report["validity"] = {"valid": not reasons, "reasons": reasons, "load_start": start["load1"],
                          "load_end": _machine.load1(), "other_cores_during": during["other_cores"],
                          "steal_cores_during": during["steal_cores"], "wall_s": during["wall_s"]}
    # The measurements are written first: nothing below may lose them.
    (out / "bench.json").write_text(json.dumps(report, indent=1))
    saved = _history.save(report, args.history) if args.history and (not reasons or args.allow_busy) else None
    print()
    print(render.run_section(report))
    if not args.no_plot and runs:
        render.plot_run(report, out / "bench.png")
    print(f"\nwrote {out / 'bench.json'}", flush=True)
    if saved:
        print(f"added to the history: {saved}", flush=True)
    if reasons and not args.allow_busy:
        print("[bench] INVALID: " + "; ".join(reasons) + ". Not added to the history; run again on a quiet machine.",
              file=sys.stderr)
        return 3
    failed = [r for r in runs if "error" in r]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
