"""What the replica check costs, against an epoch of training (2 ranks).

    python benchmarks/replica_check.py                  # refuses on a busy machine
    python benchmarks/replica_check.py --tiny --allow-busy   # a functional run (figures invalid)

``DistributedAgent(check_replicas="end")`` (the default) checks once per
``fit``, ``"epoch"`` once per epoch. One check hashes every trainable variable
on every rank and gathers the hashes (one small collective); only when they
differ does it reduce anything more. This script launches itself under
``horovodrun --gloo -np 2`` and, for the benchmark's conv net (225k
parameters, ``_workload.py``) and for a wider model of a few million
parameters, measures the median time of a check (replicas identical, the
normal case) and of the hashing alone, the time of one training epoch of
``agent.fit`` on the same model, and their ratio. It prints a table and
writes ``<out>/replica_check.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import _machine  # noqa: E402
import _workload  # noqa: E402
from run import base_env, horovodrun  # noqa: E402


def _models(keras, tiny: bool):
    """``name -> (model, (x, y))`` for the conv net and a wide dense model."""
    n = 512 if tiny else 8192
    x, y = _workload.make_data(n)
    conv = _workload.build_model(keras)
    width = 256 if tiny else 1536
    wide = keras.Sequential([keras.Input(_workload.IMAGE_SHAPE), keras.layers.Flatten(),
                             keras.layers.Dense(width, activation="relu"), keras.layers.Dense(width, activation="relu"),
                             keras.layers.Dense(_workload.NUM_CLASSES)])
    return {"conv": (conv, (x, y)), "wide": (wide, (x, y))}


def worker(out: Path, repeats: int, tiny: bool) -> None:
    """One rank: train an epoch, then time the check (and the hashing alone) ``repeats`` times."""
    import keras

    import hvdagent
    from hvdagent._sync.replicas import check_replicas, fingerprints

    hvdagent.init()
    results = {}
    for name, (model, (x, y)) in _models(keras, tiny).items():
        agent = hvdagent.DistributedAgent(model, check_replicas=None)
        agent.compile(keras.optimizers.Adam(1e-3), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        agent.fit(x, y, batch_size=64, epochs=1, verbose=0)  # traces, builds, warms up
        start = time.perf_counter()
        agent.fit(x, y, batch_size=64, epochs=1, verbose=0)
        epoch = time.perf_counter() - start
        variables = model.trainable_variables
        checks, hashes = [], []
        for _ in range(repeats):
            t = time.perf_counter()
            check_replicas(variables, 1e-6, "in the benchmark")
            checks.append(time.perf_counter() - t)
            t = time.perf_counter()
            fingerprints(variables)
            hashes.append(time.perf_counter() - t)
        results[name] = {
            "params": int(sum(int(v.shape.num_elements()) for v in variables)),
            "epoch_s": epoch,
            "check_s": statistics.median(checks),
            "hash_s": statistics.median(hashes),
            "samples": int(len(x)),
        }
    (out / f"rank-{hvdagent.rank()}.json").write_text(json.dumps(results))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="bench-replica-check")
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--tiny", action="store_true", help="small models and data: a functional run")
    p.add_argument("--allow-busy", action="store_true", help="measure on a busy machine (results marked invalid)")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.worker:
        worker(out, args.repeats, args.tiny)
        return 0
    start = _machine.wait_until_quiet(settle_s=0 if args.allow_busy else _machine.SETTLE_S)
    if not start["quiet"] and not args.allow_busy:
        print(f"[bench] REFUSED: the machine is busy: {start['reason']}. Pass --allow-busy to measure anyway "
              "(the results are then marked invalid).", file=sys.stderr)
        return 2
    cmd = horovodrun(2, "gloo") + [sys.executable, str(Path(__file__).resolve()), "--worker", "--out", str(out),
                                   "--repeats", str(args.repeats)] + (["--tiny"] if args.tiny else [])
    subprocess.run(cmd, check=True, env=base_env(), timeout=1800)
    ranks = [json.loads((out / f"rank-{r}.json").read_text()) for r in range(2)]
    report = {"machine": _machine.describe(), "valid": bool(start["quiet"]) and not args.tiny,
              "busy": start["reason"], "tiny": args.tiny, "models": {}}
    print(f"{'model':6} {'params':>10} {'epoch (s)':>10} {'check (ms)':>11} {'hashing (ms)':>13} {'check/epoch':>12}")
    for name in ranks[0]:
        row = {k: max(r[name][k] for r in ranks) for k in ("epoch_s", "check_s", "hash_s")}  # the slower rank
        row.update(params=ranks[0][name]["params"], samples=ranks[0][name]["samples"],
                   check_per_epoch=row["check_s"] / row["epoch_s"])
        report["models"][name] = row
        print(f"{name:6} {row['params']:>10,} {row['epoch_s']:>10.2f} {1e3 * row['check_s']:>11.2f} "
              f"{1e3 * row['hash_s']:>13.2f} {100 * row['check_per_epoch']:>11.3f}%")
    if not report["valid"]:
        print("[bench] these figures are not results: " + ("a tiny run" if args.tiny else f"busy: {start['reason']}"))
    (out / "replica_check.json").write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.exit(main())
