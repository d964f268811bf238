"""Which way of synchronising gradients wins on this network, for this model.

``python -m hvdagent advise`` (under the job's launcher) and
``agent.fit(..., profile=True)`` (:class:`hvdagent.SyncProfiler` with
``advise=True``) both end here. Every input is measured on
the job itself:

* the link: allreduce latency by message size between the job's ranks,
  fitted to the alpha-beta model (:func:`hvdagent._sync.cost_model.fit`), as the
  benchmark does;
* the model: the shapes of its trainable variables (the gradients' bytes,
  and what PowerSGD would send);
* the compute time of one step without sync (a few steps timed on this rank,
  or the sync profiler's compute time of a real ``fit``);
* PowerSGD's own computation per step (its arithmetic timed on this rank on
  gradients of the model's shapes).

Every rank measures (the link measurement is a collective); rank 0's figures
and prediction are then given to every rank.

The prediction is the model's (:func:`hvdagent._sync.cost_model.predict`): every
method's sync time per step, the throughput relative to no sync and to
every-step float32, the best first. When nothing beats float32 by at least
``GAIN`` it says to keep the default: compression pays off in few
data-centre settings (Agarwal, Wang, Agarwal, Papailiopoulos, Venkataraman,
"On the utility of gradient compression in distributed training systems",
MLSys 2022) and costs accuracy or tuning where it does not.
"""

from __future__ import annotations

import math
import statistics
import time
from typing import Dict, List, Optional, Sequence

from hvdagent import _hvd
from hvdagent._sync import cost_model as _costmodel

GAIN = 1.10  # a method must be predicted this much faster than fp32 to be advised
LINK_SIZES = tuple(4096 * 4**k for k in range(8))  # 4 KB ... 64 MB
NOTES = {
    "fp16": "float16 on the wire: exact enough for most models; overflow is the risk without loss scaling",
    "bf16": "bfloat16 on the wire: float32's range, 8 bits of mantissa",
    "localsgd4": "local SGD changes the optimisation (weights averaged every 4 steps): check the accuracy",
    "localsgd8": "local SGD changes the optimisation (weights averaged every 8 steps): check the accuracy",
    "powersgd1": "PowerSGD rank 1 (error feedback): check the accuracy; start_step about 10% of training",
    "powersgd2": "PowerSGD rank 2 (error feedback): check the accuracy; start_step about 10% of training",
    "powersgd4": "PowerSGD rank 4 (error feedback): check the accuracy; start_step about 10% of training",
}


def measure_link(max_bytes: int = 16 << 20, unresolved_ok: bool = False) -> dict:
    """Allreduce latency by size between the job's ranks (a collective: every
    rank calls it), and its fit: ``{"p", "alpha_s", "bandwidth", "rows"}``.

    When the latency does not grow with the message size up to ``max_bytes``
    the bandwidth cannot be fitted: an error, or with ``unresolved_ok`` an
    infinite bandwidth (messages of these sizes cost no more than the noise)
    and the smallest latency as alpha."""
    import numpy as np
    import tensorflow as tf

    p = _hvd.size()
    if p < 2:
        raise ValueError(
            "measuring the link needs the job's ranks: run under the launcher that starts your training, e.g. "
            "`horovodrun -np 2 -H host1:1,host2:1 python -m hvdagent advise ...`, or give the link with "
            f"--alpha-us and --gbits. Received: size={p}")
    rows = []
    for nbytes in (s for s in LINK_SIZES if s <= max_bytes):
        x = tf.ones([nbytes // 4], tf.float32)
        name = f"hvdagent_advise_{nbytes}"
        for _ in range(2):
            _hvd.allreduce([x], op="sum", name=name)[0].numpy()
        times = []
        for _ in range(max(3, min(30, (32 << 20) // nbytes))):  # the same count on every rank
            t = time.perf_counter()
            _hvd.allreduce([x], op="sum", name=name)[0].numpy()
            times.append(time.perf_counter() - t)
        rows.append({"bytes": nbytes, "latency_ms": 1e3 * float(np.median(times))})
    try:
        alpha, bandwidth = _costmodel.fit(rows, p)
    except ValueError:
        if not unresolved_ok or len(rows) < 2:
            raise
        alpha, bandwidth = min(r["latency_ms"] for r in rows) / 1e3 / (2 * (p - 1)), math.inf
    return {"p": p, "alpha_s": alpha, "bandwidth": bandwidth, "rows": rows, "measured": True}


def gradient_shapes(model) -> List[tuple]:
    return [tuple(int(d) for d in v.shape) for v in model.trainable_variables]


def measure_step(model, batch_size: int, steps: int = 8) -> float:
    """Seconds of one training step of ``model`` on this rank alone (random
    inputs of its input shape, mean squared error, SGD; no sync)."""
    import numpy as np
    import tensorflow as tf

    inputs = getattr(model, "inputs", None)
    if not inputs:
        raise ValueError("the model has no known input shape to time a step on: build it with keras.Input, or "
                         "give the step time with --step-ms. Received: model.inputs=None")
    rng = np.random.default_rng(0)
    xs = [rng.random((batch_size,) + tuple(int(d) for d in t.shape[1:]), dtype=np.float32) for t in inputs]
    x = xs if len(xs) > 1 else xs[0]
    outs = model(x)
    ys = [tf.random.stateless_normal(tf.shape(o), seed=[1, 2]) for o in tf.nest.flatten(outs)]
    variables = model.trainable_variables
    lr = tf.constant(1e-9)

    @tf.function
    def step(x, ys):
        with tf.GradientTape() as tape:
            pred = tf.nest.flatten(model(x, training=True))
            loss = tf.add_n([tf.reduce_mean(tf.square(p - y)) for p, y in zip(pred, ys)])
        grads = tape.gradient(loss, variables)
        for v, g in zip(variables, grads):
            if g is not None:
                v.assign_sub(lr * tf.convert_to_tensor(g))
        return loss

    before = [v.numpy() for v in variables]
    step(x, ys).numpy()
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        step(x, ys).numpy()
        times.append(time.perf_counter() - t)
    for v, b in zip(variables, before):
        v.assign(b)
    return statistics.median(times)


def measure_compression(shapes: Sequence[Sequence[int]], ranks: Sequence[int] = (1, 2, 4), repeats: int = 5) -> Dict[str, float]:
    """Seconds per step of PowerSGD's arithmetic alone, per rank, on gradients
    of ``shapes`` (on this rank, with the allreduces left out)."""
    import numpy as np
    import tensorflow as tf

    from hvdagent._sync.powersgd import PowerSGD, PowerSGDState

    rng = np.random.default_rng(0)
    grads = [tf.constant(rng.standard_normal(s).astype("float32")) for s in shapes]

    def local(tensors, op=None, name=None):
        return list(tensors)

    out = {}
    for r in ranks:
        state = PowerSGDState(PowerSGD(rank=r, start_step=0), [tf.zeros(s) for s in shapes])
        if not state.compressed():
            out[f"powersgd{r}"] = 0.0
            continue
        positions = list(range(len(shapes)))
        fn = tf.function(lambda *g: state.reduce(list(g), positions, tf.constant(1.0), tf.constant(0), allreduce=local)[0])
        [t.numpy() for t in fn(*grads)]
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            [x.numpy() for x in fn(*grads)]
            times.append(time.perf_counter() - t)
        out[f"powersgd{r}"] = statistics.median(times)
    return out


def advise(shapes: Sequence[Sequence[int]], compute_s: float, link: dict, compress_s: Optional[dict] = None,
           candidates: Optional[Sequence[str]] = None) -> dict:
    """The prediction for gradients of ``shapes``, a compute time per step and
    a (measured) link: every method's row, the best, and the verdict."""
    p, alpha, bw = link["p"], link["alpha_s"], link["bandwidth"]
    rows = _costmodel.predict(shapes, compute_s, p, alpha, bw, candidates, compress_s)
    fp32 = next(r for r in rows if r["method"] == "fp32")
    for r in rows:
        r["vs_fp32"] = fp32["step_s"] / r["step_s"]
    best = rows[0]
    params = sum(math.prod(int(d) for d in s) for s in shapes)
    if best["method"] == "fp32" or best["vs_fp32"] < GAIN:
        verdict = ("Keep the default (every-step float32): no method is predicted to be at least "
                   f"{GAIN:.2f}x faster on this network"
                   + (f" (the best, {best['method']}, {best['vs_fp32']:.2f}x)" if best["method"] != "fp32" else "")
                   + f". Sync takes {fp32['sync_s'] / fp32['step_s']:.0%} of a float32 step here; compression "
                   "helps in few data-centre settings (Agarwal et al., MLSys 2022) and would cost accuracy or tuning.")
    else:
        verdict = (f"{best['method']} is predicted {best['vs_fp32']:.2f}x faster than every-step float32 "
                   f"({best['vs_nosync']:.2f} of the no-sync bound; float32: {fp32['vs_nosync']:.2f}). "
                   + NOTES.get(best["method"], "") + ".")
    return {"p": p, "params": params, "compute_s": compute_s, "alpha_s": alpha, "bandwidth": bw,
            "compress_s": dict(compress_s or {}), "link_rows": link.get("rows", []),
            "link_measured": link.get("measured", False), "rows": rows, "best": best["method"], "verdict": verdict}


def render(advice: dict) -> str:
    link = "measured" if advice["link_measured"] else "given, not measured"
    if math.isinf(advice["bandwidth"]):
        largest = max(r["bytes"] for r in advice["link_rows"]) // 1024
        bandwidth = (f"bandwidth not resolved (the latency did not grow with messages up to {largest} KB: "
                     "transfers of that size cost less than the measurement's noise)")
    else:
        bandwidth = f"bandwidth {advice['bandwidth'] * 8 / 1e9:.3f} Gbit/s"
    lines = [f"Link ({link}, {advice['p']} ranks): alpha {advice['alpha_s'] * 1e6:.0f} us per ring step, "
             f"{bandwidth}. Model: {advice['params']:,} parameters "
             f"({4 * advice['params'] / 1e6:.1f} MB of float32 gradients); compute {advice['compute_s'] * 1e3:.1f} ms "
             "per step without sync.",
             "A prediction of the alpha-beta model (no overlap of communication with computation):", "",
             f"{'method':10s} {'sync ms/step':>12s} {'x no sync':>10s} {'x fp32':>8s} {'MB sent/step':>13s}"]
    for r in advice["rows"]:
        lines.append(f"{r['method']:10s} {r['sync_s'] * 1e3:12.1f} {r['vs_nosync']:10.2f} {r['vs_fp32']:8.2f} "
                     f"{r['sent_bytes'] / 1e6:13.3f}")
    return "\n".join(lines + ["", advice["verdict"]])


def load_model(spec: str):
    """A model from ``path.keras`` or ``module:function``."""
    import importlib

    from hvdagent import _compat

    if ":" in spec and not spec.endswith((".keras", ".h5")):
        module, _, fn = spec.partition(":")
        return getattr(importlib.import_module(module), fn)()
    return _compat.load_model(spec, _compat.active_generation())


def main(args) -> int:
    """``python -m hvdagent advise`` (see ``--help``); prints on rank 0."""
    import json

    from hvdagent._runtime.process import init

    if (args.alpha_us is None) != (args.gbits is None):
        raise SystemExit("advise: give both --alpha-us and --gbits (a link given, not measured), or neither "
                         f"(measure it). Received: --alpha-us={args.alpha_us}, --gbits={args.gbits}")
    if args.step_ms is None and args.batch_size is None:
        raise SystemExit("advise: give --batch-size (to time a step) or --step-ms. Received: neither")
    init()
    model = load_model(args.model)
    shapes = gradient_shapes(model)
    if args.gbits is not None:
        link = {"p": args.ranks or max(_hvd.size(), 2), "alpha_s": args.alpha_us * 1e-6,
                "bandwidth": args.gbits * 1e9 / 8, "measured": False}
    else:
        try:
            link = measure_link(args.max_bytes)
        except ValueError as err:
            raise SystemExit(f"advise: {err}") from None
    compute = args.step_ms / 1e3 if args.step_ms is not None else measure_step(model, args.batch_size)
    advice = _hvd.broadcast_object(advise(shapes, compute, link, measure_compression(shapes)), name="hvdagent_advice")
    if _hvd.rank() == 0:
        print(json.dumps(advice, indent=1) if args.json else render(advice), flush=True)
    return 0


def after_fit(model, compute_s: float) -> dict:
    """The advice at the end of a profiled ``fit`` (every rank; collective):
    the link measured now (messages up to the gradients' size, at most 4 MB),
    the compute time the profiler measured."""
    shapes = gradient_shapes(model)
    nbytes = 4 * sum(math.prod(s) for s in shapes)
    link = measure_link(max(4 * LINK_SIZES[1], min(4 << 20, nbytes)), unresolved_ok=True)
    return _hvd.broadcast_object(advise(shapes, compute_s, link, measure_compression(shapes)), name="hvdagent_advice")
