"""A model (not a measurement) of data-parallel scaling past this machine.

Ring allreduce of ``n`` bytes over ``p`` ranks takes (Patarasuk and Yuan's
bandwidth-optimal ring; Thakur et al.'s alpha-beta cost model)::

    T(p, n) = 2 (p - 1) * alpha  +  2 (p - 1) / p * n / bandwidth

``alpha`` (latency per ring step) and ``bandwidth`` are fitted from the
allreduce microbenchmark (2 ranks, so ``T = 2 alpha + n / bandwidth``; a
least-squares fit in relative error, so small and large messages count
alike). With a compute time ``c`` per step and no overlap of communication
with computation, the scaling efficiency (throughput of ``p`` ranks over ``p``
times one rank's) is::

    E(p) = c / (c + T(p, n) / sync_every)

``sync_every = 8`` is local SGD: the weights (as many bytes as the gradients)
are averaged every 8th step. The model ignores overlap of communication with
the backward pass (Horovod overlaps: the model is pessimistic there) and
hierarchical or tree algorithms (which cut the latency term), and assumes
every rank computes equally fast.

    python benchmarks/scaling_model.py                       # from the newest valid run in docs/bench/history
    python benchmarks/scaling_model.py --run bench-results/bench.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _cost_model():
    """The package's alpha-beta maths (``python -m hvdagent advise`` uses it too), loaded
    from its file: importing ``hvdagent`` would start TensorFlow, which the tables do not need."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("hvdagent_cost_model", HERE.parent / "hvdagent" / "_sync" / "cost_model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_COST = _cost_model()
fit, ring_allreduce_s = _COST.fit, _COST.ring_allreduce_s
BENCH_PARAMS = 225_034  # the conv net of _workload.py (tests check it against Keras)
RESNET50_PARAMS = 25_000_000  # "a 25M-parameter model": ResNet-50 has 25.6M
RANKS = (2, 4, 8, 16, 32, 64, 128, 256, 512)
GBITS = (10, 25, 100)
# Assumed compute time per step of the 25M-parameter model: ResNet-50, batch 64,
# fp32, on one data-centre GPU of the Pascal generation Horovod's published
# benchmark used (~250 images/s). An assumption, not a measurement: --compute-ms-25m.
COMPUTE_MS_25M = 250.0
# Assumed latency per ring step of a tuned network stack (RDMA, NCCL-class).
NETWORK_ALPHA_US = 10.0
HOROVOD_PUBLISHED = ("Horovod's published benchmark: 90% scaling efficiency at 512 GPUs for Inception V3 and "
                     "ResNet-101 (68% for VGG-16): 128 servers with 4 Pascal GPUs each, 25 Gbit/s RoCE, "
                     "tf_cnn_benchmarks, batch 64 per GPU")


def gbit_to_bytes_per_s(gbits: float) -> float:
    return gbits * 1e9 / 8


def efficiency(p: int, compute_s: float, nbytes: float, alpha_s: float, bandwidth: float,
               sync_every: int = 1) -> float:
    """Scaling efficiency ``c / (c + T(p, n) / sync_every)``."""
    if compute_s <= 0 or sync_every < 1:
        raise ValueError(f"need compute_s > 0 and sync_every >= 1. Received: compute_s={compute_s}, "
                         f"sync_every={sync_every}")
    return compute_s / (compute_s + ring_allreduce_s(p, nbytes, alpha_s, bandwidth) / sync_every)


def fits(report: dict) -> dict:
    """Per controller of ``report``'s microbenchmark: ``(alpha_s, bandwidth)``,
    or the reason there is no fit (too few sizes, or latency not growing with
    size, as on a busy machine)."""
    out = {}
    for c, ar in (report.get("allreduce") or {}).items():
        try:
            out[c] = fit(ar.get("rows", []), ar.get("size", 2))
        except ValueError as err:
            out[c] = str(err).split(". Received")[0]
    return out


def efficiency_table(params: int, compute_s: float, alpha_s: float, ranks=RANKS, gbits=GBITS,
                     sync_everys=(1, 8)) -> list:
    """Rows ``{"p": p, (gbit, sync_every): efficiency, ...}`` for float32 parameters."""
    nbytes = 4 * params
    return [{"p": p, **{(g, k): efficiency(p, compute_s, nbytes, alpha_s, gbit_to_bytes_per_s(g), k)
                        for g in gbits for k in sync_everys}} for p in ranks]


def markdown_table(rows: list, gbits=GBITS, sync_everys=(1, 8)) -> str:
    head = "| ranks | " + " | ".join(f"{g} Gb/s{'' if k == 1 else f', local SGD /{k}'}"
                                      for g in gbits for k in sync_everys) + " |"
    lines = [head, "|---:|" + "---:|" * (len(gbits) * len(sync_everys))]
    for r in rows:
        lines.append(f"| {r['p']} | " + " | ".join(f"{100 * r[(g, k)]:.0f}%" for g in gbits for k in sync_everys) + " |")
    return "\n".join(lines)


def compute_s_per_step(report: dict):
    """One rank's compute time per step: batch / (one process's samples/s)."""
    s = report.get("summary", {}).get("single", {})
    return report["settings"]["batch"] / s["median"] if s.get("median") else None


def two_rank_check(report: dict, params: int = BENCH_PARAMS) -> list:
    """Predicted against measured 2-rank throughput, per controller.

    Compute per step is taken from the same run's ``nosync`` (both ranks
    computing at once, as they do with sync on); the allreduce of the
    gradients (float32) from the fit of that controller's microbenchmark.
    """
    out = []
    batch, np_ = report["settings"]["batch"], report["settings"]["np"]
    every = report["settings"].get("localsgd", {}).get("sync_every", 8)
    for ctrl, fitted in fits(report).items():
        ns = report.get("summary", {}).get(f"nosync@{ctrl}", {}).get("median")
        if not ns or isinstance(fitted, str):
            continue
        alpha, bw = fitted
        step = np_ * batch / ns
        comm = ring_allreduce_s(np_, 4 * params, alpha, bw)
        for config, k in (("hvdagent", 1), ("localsgd", every)):
            measured = report["summary"].get(f"{config}@{ctrl}", {}).get("median")
            predicted = np_ * batch / (step + comm / k)
            out.append({"controller": ctrl, "config": config, "alpha_us": alpha * 1e6, "bandwidth_gbs": bw / 1e9,
                        "compute_ms": step * 1e3, "allreduce_ms": comm * 1e3, "predicted": predicted,
                        "measured": measured, "measured_over_predicted": measured / predicted if measured else None})
    return out


def render(report: dict, alpha_s=None, compute_ms_25m: float = COMPUTE_MS_25M,
           network_alpha_us: float = NETWORK_ALPHA_US) -> str:
    """The model's section of docs/benchmarks.md for one benchmark run."""
    lines = []
    fitted = fits(report)
    for c, f in fitted.items():
        where = "between two network-namespace hosts (veth + bridge)" if "hosts" in c else "on loopback"
        lines.append(f"- no fit of the {c} allreduce: {f}" if isinstance(f, str) else
                     f"- fit of the {c.split(',')[0]} allreduce {where}: alpha = {f[0] * 1e6:.0f} us per ring step, "
                     f"bandwidth = {f[1] / 1e9:.2f} GB/s")
    good = {c: f for c, f in fitted.items() if not isinstance(f, str)}
    measured_alpha = alpha_s if alpha_s is not None else good.get("gloo", good.get("mpi", (None,)))[0]
    c_bench = compute_s_per_step(report)
    if c_bench:
        lines.append(f"- compute per step, benchmark model (one process, batch {report['settings']['batch']}): "
                     f"{c_bench * 1e3:.1f} ms, measured; 25M-parameter model: {compute_ms_25m:.0f} ms, **assumed**")
    lines.append("")
    alphas = [(network_alpha_us * 1e-6, f"alpha = {network_alpha_us:g} us per ring step (assumed: a tuned "
                                       "RDMA/NCCL-class network stack)")]
    if measured_alpha is not None:
        alphas.append((measured_alpha, f"alpha = {measured_alpha * 1e6:.0f} us per ring step (measured here: "
                                       "Horovod's negotiation and the TCP stack on loopback)"))
    between = good.get("gloo, 2 hosts")
    if between is not None and alpha_s is None:
        alphas.append((between[0], f"alpha = {between[0] * 1e6:.0f} us per ring step (measured here between two "
                                   "network-namespace hosts: Horovod's negotiation, TCP over veth links and a bridge)"))
    models = [(f"the 25M-parameter model ({RESNET50_PARAMS / 1e6:.0f}M float32, ResNet-50 size)", RESNET50_PARAMS,
               compute_ms_25m / 1e3)]
    if c_bench:
        models.append((f"the benchmark model ({BENCH_PARAMS:,} float32)", BENCH_PARAMS, c_bench))
    for name, params, comp in models:
        for a, alabel in alphas:
            lines += [f"Predicted scaling efficiency, {name}, {alabel}:", "",
                      markdown_table(efficiency_table(params, comp, a)), ""]
    lines.append(f"For comparison: {HOROVOD_PUBLISHED}.")
    check = two_rank_check(report)
    if check:
        lines += ["", "The model against this run's 2-rank measurements (samples/s):", "",
                  "| controller | configuration | predicted | measured | measured / predicted |", "|---|---|---:|---:|---:|"]
        for r in check:
            meas = f"{r['measured']:,.0f}" if r["measured"] else "-"
            ratio = f"{r['measured_over_predicted']:.2f}" if r["measured_over_predicted"] else "-"
            lines.append(f"| {r['controller']} | {r['config']} | {r['predicted']:,.0f} | {meas} | {ratio} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    sys.path.insert(0, str(HERE))
    import _history

    p = argparse.ArgumentParser(description="Predicted scaling efficiency from a benchmark run (a model).")
    p.add_argument("--run", help="a bench.json (default: the newest valid run in --history)")
    p.add_argument("--history", default=str(HERE.parent / "docs" / "bench" / "history"))
    p.add_argument("--alpha-us", type=float, default=None, help="latency per ring step (default: the fit, gloo)")
    p.add_argument("--compute-ms-25m", type=float, default=COMPUTE_MS_25M,
                   help=f"assumed compute per step of the 25M-parameter model (default {COMPUTE_MS_25M:g})")
    args = p.parse_args(argv)
    report = json.loads(Path(args.run).read_text()) if args.run else _history.latest_valid(args.history)
    if report is None:
        print(f"no valid run in {args.history}; pass --run bench-results/bench.json", file=sys.stderr)
        return 2
    alpha = args.alpha_us * 1e-6 if args.alpha_us is not None else None
    print("A MODEL, not a measurement (see the docstring for what it leaves out).\n")
    print(render(report, alpha_s=alpha, compute_ms_25m=args.compute_ms_25m))
    return 0


if __name__ == "__main__":
    sys.exit(main())
