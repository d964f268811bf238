"""Allreduce microbenchmark: latency and bus bandwidth by message size.

Run under a launcher (``benchmarks/run.py`` does it)::

    horovodrun --gloo -np 2 python benchmarks/allreduce.py --out allreduce.json

For each size (float32 payload, 4 KB to 64 MB) rank 0 records the median
latency of an eager ``horovod.tensorflow.allreduce`` (sum), the bus bandwidth
``2 (n-1)/n * bytes / latency`` (the convention of nccl-tests: what each
link carries), and, for scale, the bandwidth of a plain memory copy of the
same size (``numpy.copyto``). Eager dispatch adds a few tens of
microseconds: the small-message latency is an upper bound.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def sizes(max_bytes: int):
    s = 4096
    while s <= max_bytes:
        yield s
        s *= 4


def memcpy_gbs(nbytes: int, iters: int) -> float:
    import numpy as np

    src = np.ones(nbytes // 4, np.float32)
    dst = np.empty_like(src)
    times = []
    for _ in range(iters):
        t = time.perf_counter()
        np.copyto(dst, src)
        times.append(time.perf_counter() - t)
    return nbytes / statistics.median(times) / 1e9


def measure(hvd, max_bytes: int, iters: int = 0) -> list:
    """Rows ``{"bytes", "iters", "latency_ms", "busbw_gbs", "memcpy_gbs"}``, one
    per size, on every rank (``hvd``: ``horovod.tensorflow``, initialised)."""
    import tensorflow as tf

    n = hvd.size()
    rows = []
    for nbytes in sizes(max_bytes):
        k = iters or max(5, min(200, int(3e8 / nbytes)))
        x = tf.ones([nbytes // 4], tf.float32)
        for _ in range(3):  # warm-up: negotiation, response cache, buffers
            hvd.allreduce(x, op=hvd.Sum, name=f"ar_{nbytes}").numpy()
        times = []
        for _ in range(k):
            t = time.perf_counter()
            hvd.allreduce(x, op=hvd.Sum, name=f"ar_{nbytes}").numpy()
            times.append(time.perf_counter() - t)
        # Every rank must agree on when a size is done; rank 0's view is reported.
        lat = statistics.median(times)
        rows.append({
            "bytes": nbytes, "iters": k, "latency_ms": 1e3 * lat,
            "busbw_gbs": 2 * (n - 1) / n * nbytes / lat / 1e9,
            "memcpy_gbs": memcpy_gbs(nbytes, min(k, 50)),
        })
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True)
    p.add_argument("--max-bytes", type=int, default=64 * 2**20)
    p.add_argument("--iters", type=int, default=0, help="iterations per size (0: about 0.5 s per size)")
    args = p.parse_args(argv)

    import horovod.tensorflow as hvd
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(1)
    hvd.init()
    rows = measure(hvd, args.max_bytes, args.iters)
    if hvd.rank() == 0:
        meta = {"size": hvd.size(), "controller": "mpi" if hvd.mpi_enabled() and os.environ.get("OMPI_COMM_WORLD_RANK") else "gloo",
                "env": {k: v for k, v in os.environ.items() if k.startswith(("HOROVOD_CYCLE", "HOROVOD_FUSION"))}}
        with open(args.out, "w") as f:
            json.dump({**meta, "rows": rows}, f, indent=1)


def plot(data: dict, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = data["rows"]
    kb = [r["bytes"] / 1024 for r in rows]
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.5))
    a.loglog(kb, [r["latency_ms"] for r in rows], "o-")
    a.set_xlabel("message size (KB)")
    a.set_ylabel("allreduce latency (ms)")
    a.grid(True, which="both", alpha=0.3)
    b.loglog(kb, [r["busbw_gbs"] for r in rows], "o-", label=f"allreduce bus bw ({data.get('controller')})")
    b.loglog(kb, [r["memcpy_gbs"] for r in rows], "s--", label="memory copy")
    b.set_xlabel("message size (KB)")
    b.set_ylabel("GB/s")
    b.legend(fontsize=8)
    b.grid(True, which="both", alpha=0.3)
    fig.suptitle(f"{data['size']} ranks, {data.get('controller')}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


if __name__ == "__main__":
    main()
