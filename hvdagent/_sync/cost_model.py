"""The alpha-beta model of what gradient synchronisation costs, per method.

A ring allreduce of ``n`` bytes over ``p`` ranks takes (Patarasuk and Yuan's
bandwidth-optimal ring; Thakur et al.'s alpha-beta cost model)::

    T(p, n) = 2 (p - 1) alpha  +  2 (p - 1) / p * n / bandwidth

``alpha`` (latency per ring step) and ``bandwidth`` are fitted to measured
allreduce latencies (:func:`fit`). A method's cost per step is the time of the
collectives it issues, per step:

* ``fp32``: one allreduce of the float32 gradients (4 bytes a parameter);
* ``fp16``: the same with 2 bytes a parameter; ``bf16``: 2 bytes a parameter,
  gathered (hvdagent sums bfloat16 payloads in float32 after an allgather);
* ``localsgd<k>``: one allreduce of the weights every ``k`` steps;
* ``powersgd<r>``: two allreduces in a row, ``P`` with the uncompressed
  gradients, then ``Q`` (:meth:`hvdagent.PowerSGD.wire_elements`), plus the
  compression's own computation, which the model takes as a measured input;
* ``nosync``: nothing (the bound).

Predicted throughput relative to no sync is ``c / (c + sync)`` for a compute
time ``c`` per step, assuming no overlap of communication with computation
(hvdagent reduces after the backward pass) and equally fast ranks. Pure
Python: the benchmark (benchmarks/comm.py) and ``python -m hvdagent advise``
both use it.

>>> round(ring_allreduce_s(2, 1e6, alpha_s=1e-3, bandwidth=1e8), 4)
0.012
>>> [m for m in methods((1, 2))]
['fp32', 'fp16', 'bf16', 'localsgd4', 'localsgd8', 'powersgd1', 'powersgd2']
"""

from __future__ import annotations

import math
from typing import Iterable, List, Optional, Sequence, Tuple

__all__ = ["ring_allreduce_s", "allgather_s", "fit", "methods", "sync_seconds", "sent_bytes", "predict"]


def ring_allreduce_s(p: int, nbytes: float, alpha_s: float, bandwidth: float) -> float:
    """Seconds for a ring allreduce of ``nbytes`` over ``p`` ranks (0 for ``p = 1``)."""
    if p < 1 or nbytes < 0 or alpha_s < 0 or bandwidth <= 0:
        raise ValueError(f"need p >= 1, nbytes >= 0, alpha_s >= 0, bandwidth > 0. "
                         f"Received: p={p}, nbytes={nbytes}, alpha_s={alpha_s}, bandwidth={bandwidth}")
    return 2 * (p - 1) * alpha_s + 2 * (p - 1) / p * nbytes / bandwidth


def allgather_s(p: int, nbytes: float, alpha_s: float, bandwidth: float) -> float:
    """Seconds for a ring allgather of ``nbytes`` from each of ``p`` ranks."""
    return (p - 1) * alpha_s + (p - 1) * nbytes / bandwidth


def fit(rows: list, p: int = 2) -> Tuple[float, float]:
    """``(alpha_s, bandwidth_bytes_per_s)`` from allreduce measurements
    (``{"bytes", "latency_ms"}``) on ``p`` ranks.

    Fits ``latency = a + b * x`` with ``x = 2 (p-1)/p * bytes`` by least
    squares on the relative error (weights ``1 / latency**2``, so small and
    large messages count alike); then ``alpha = a / (2 (p-1))`` and
    ``bandwidth = 1 / b``.
    """
    pts = [(2 * (p - 1) / p * r["bytes"], r["latency_ms"] / 1e3) for r in rows]
    if len(pts) < 2 or p < 2:
        raise ValueError(f"need 2 or more sizes on 2 or more ranks. Received: {len(pts)} sizes, p={p}")
    w = [1 / y**2 for _, y in pts]
    sw = sum(w)
    mx = sum(wi * x for wi, (x, _) in zip(w, pts)) / sw
    my = sum(wi * y for wi, (_, y) in zip(w, pts)) / sw
    sxx = sum(wi * (x - mx) ** 2 for wi, (x, _) in zip(w, pts))
    sxy = sum(wi * (x - mx) * (y - my) for wi, (x, y) in zip(w, pts))
    if sxx == 0:
        raise ValueError(f"need 2 or more different sizes. Received: {rows}")
    b = sxy / sxx
    a = my - b * mx
    if b <= 0:
        raise ValueError(f"latency does not grow with message size in these rows; no bandwidth to fit. Received: {rows}")
    return max(a, 0.0) / (2 * (p - 1)), 1 / b


def methods(powersgd_ranks: Iterable[int] = (1, 2, 4), local_sgd: Iterable[int] = (4, 8)) -> List[str]:
    """The method names the model knows, in the order they are reported."""
    return (["fp32", "fp16", "bf16"] + [f"localsgd{k}" for k in local_sgd]
            + [f"powersgd{r}" for r in powersgd_ranks])


def _powersgd(method: str):
    from hvdagent._sync.powersgd import PowerSGD

    return PowerSGD(rank=int(method[len("powersgd"):]))


def _params(shapes: Sequence[Sequence[int]]) -> int:
    return sum(math.prod(int(d) for d in s) for s in shapes)


def sync_seconds(method: str, shapes: Sequence[Sequence[int]], p: int, alpha_s: float, bandwidth: float,
                 compress_s: float = 0.0) -> float:
    """Seconds per step that ``method`` spends synchronising gradients of
    ``shapes`` (float32) over ``p`` ranks; ``compress_s``: PowerSGD's own
    computation per step (measured)."""
    if p == 1 or method == "nosync":
        return 0.0
    n = _params(shapes)
    if method in ("fp32", "horovod"):
        return ring_allreduce_s(p, 4 * n, alpha_s, bandwidth)
    if method == "fp16":
        return ring_allreduce_s(p, 2 * n, alpha_s, bandwidth)
    if method == "bf16":
        return allgather_s(p, 2 * n, alpha_s, bandwidth)
    if method.startswith("localsgd"):
        return ring_allreduce_s(p, 4 * n, alpha_s, bandwidth) / int(method[len("localsgd"):])
    if method.startswith("powersgd"):
        first, second = _powersgd(method).wire_elements(shapes)
        return (ring_allreduce_s(p, 4 * first, alpha_s, bandwidth) + ring_allreduce_s(p, 4 * second, alpha_s, bandwidth)
                + compress_s)
    raise ValueError(f"unknown method; choose from {methods()} or 'nosync'. Received: method={method!r}")


def sent_bytes(method: str, shapes: Sequence[Sequence[int]], p: int) -> float:
    """Payload bytes each rank sends per step with ``method`` (ring: ``2 (p-1)/p``
    of an allreduce's payload), without protocol headers."""
    if p == 1 or method == "nosync":
        return 0.0
    ring = 2 * (p - 1) / p
    n = _params(shapes)
    if method in ("fp32", "horovod"):
        return ring * 4 * n
    if method == "fp16":
        return ring * 2 * n
    if method == "bf16":
        return (p - 1) * 2 * n
    if method.startswith("localsgd"):
        return ring * 4 * n / int(method[len("localsgd"):])
    if method.startswith("powersgd"):
        return ring * 4 * sum(_powersgd(method).wire_elements(shapes))
    raise ValueError(f"unknown method; choose from {methods()} or 'nosync'. Received: method={method!r}")


def predict(shapes: Sequence[Sequence[int]], compute_s: float, p: int, alpha_s: float, bandwidth: float,
            candidates: Optional[Sequence[str]] = None, compress_s: Optional[dict] = None) -> List[dict]:
    """Per method: predicted sync seconds, step seconds and throughput relative
    to no sync, best first. ``compress_s``: ``{method: seconds}`` of measured
    compression work (PowerSGD)."""
    if compute_s <= 0:
        raise ValueError(f"compute_s must be > 0. Received: compute_s={compute_s}")
    rows = []
    for m in candidates or methods():
        sync = sync_seconds(m, shapes, p, alpha_s, bandwidth, (compress_s or {}).get(m, 0.0))
        rows.append({"method": m, "sync_s": sync, "step_s": compute_s + sync,
                     "vs_nosync": compute_s / (compute_s + sync), "sent_bytes": sent_bytes(m, shapes, p)})
    return sorted(rows, key=lambda r: r["step_s"])
