"""One launch of the communication-bound benchmark, on one rank.

Started by :mod:`benchmarks.comm` as ``horovodrun -np 2 -H hvdhost1:1,hvdhost2:1
python comm_worker.py ...`` (one rank on each of two network-namespace hosts
of ``ci/hosts.sh``, their link shaped or not). Not a library module: the
hand-written Horovod anchor imports ``horovod.tensorflow`` itself, as a user
writing it by hand would.

Every configuration of ``--configs`` trains the same model from the same
initial weights on scikit-learn's digits (1,437 training images, 360 test
images, 8x8), one after the other in this process:

    fp32        DistributedAgent defaults: float32 gradients averaged every step
    fp16, bf16  the same with ``compression="fp16"`` / ``"bf16"``
    localsgd4/8 ``sync_every=4`` / ``8``: weights averaged every 4th / 8th step
    powersgd1/2/4  ``compression=hvdagent.PowerSGD(rank=1/2/4, start_step=...)``
    horovod     hand-written Horovod: ``hvd.grouped_allreduce`` of the gradients
                inside the optimizer's ``apply`` (the anchor)
    nosync      plain Keras on each rank's half of the data, no collective at
                all (the bound)

Measured per configuration, from the start of epoch ``--warmup-epochs`` to the
end of training: global samples per second, the optimizer steps, and the
bytes this rank's network interface sent and received (its counters in
``/proc/net/dev``: what crossed the link, headers and Horovod's own messages
included). Then the test accuracy and loss of rank 0's model, the training
loss of every epoch (with the time it ended), and a digest of the weights (the
driver checks that the replicas are identical). ``--allreduce-max-bytes``
first runs the allreduce microbenchmark of ``allreduce.py`` over the same link.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("OMP_NUM_THREADS", "1")

CONFIGS = ("fp32", "fp16", "bf16", "localsgd4", "localsgd8", "powersgd1", "powersgd2", "powersgd4", "horovod",
           "nosync")


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--configs", default=",".join(CONFIGS))
    p.add_argument("--epochs", type=int, default=3, help="epochs per configuration, warm-up included")
    p.add_argument("--warmup-epochs", type=int, default=1, help="untimed epochs at the start")
    p.add_argument("--hidden", type=int, default=2048, help="units of the two hidden layers")
    p.add_argument("--batch", type=int, default=64, help="per-rank batch size")
    p.add_argument("--lr", type=float, default=0.025, help="SGD learning rate of one process (momentum 0.9)")
    p.add_argument("--powersgd-start", type=int, default=0, help="PowerSGD's start_step")
    p.add_argument("--iface", default="hvd0", help="the network interface whose counters are read")
    p.add_argument("--allreduce-max-bytes", type=int, default=0, help="run the allreduce microbenchmark first")
    p.add_argument("--allreduce-iters", type=int, default=0)
    p.add_argument("--out", required=True, help="directory for result-<rank>.json")
    args = p.parse_args(argv)
    args.configs = [c for c in args.configs.split(",") if c]
    bad = [c for c in args.configs if c not in CONFIGS]
    if bad:
        p.error(f"unknown configuration(s) {bad}; choose from {list(CONFIGS)}")
    return args


def load_digits():
    from sklearn.datasets import load_digits as load
    from sklearn.model_selection import train_test_split

    d = load()
    x = (d.images.reshape(-1, 64) / 16.0).astype("float32")
    return train_test_split(x, d.target.astype("int32"), test_size=0.2, random_state=0, stratify=d.target)


def build_model(keras, hidden: int):
    """64 -> hidden -> hidden -> 10, ReLU: 4,349,962 float32 parameters (17.4 MB) at hidden=2048."""
    layers = keras.layers
    return keras.Sequential([keras.Input((64,)), layers.Dense(hidden, activation="relu"),
                             layers.Dense(hidden, activation="relu"), layers.Dense(10)])


def net_bytes(iface: str):
    """(sent, received) bytes of ``iface`` in this process's network namespace, or None."""
    for line in Path("/proc/net/dev").read_text().splitlines()[2:]:
        name, _, rest = line.partition(":")
        if name.strip() == iface:
            f = rest.split()
            return int(f[8]), int(f[0])
    return None


def digest(model) -> str:
    h = hashlib.sha256()
    for w in model.get_weights():
        h.update(w.tobytes())
    return h.hexdigest()[:16]


def meter(keras, args, optimizer_of):
    """A callback timing the run after the warm-up epochs, with the link's counters."""

    class Meter(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.start = self.net0 = self.step0 = None
            self.epochs = []  # (epoch, loss, seconds since the fit started)
            self.t_fit = None

        def on_train_begin(self, logs=None):
            self.t_fit = time.perf_counter()

        def on_epoch_begin(self, epoch, logs=None):
            if epoch == args.warmup_epochs:
                self.step0 = int(optimizer_of().iterations.numpy())
                self.net0 = net_bytes(args.iface)
                self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            self.epochs.append((epoch, float((logs or {}).get("loss", float("nan"))), time.perf_counter() - self.t_fit))

        def on_train_end(self, logs=None):
            self.elapsed = time.perf_counter() - self.start
            self.steps = int(optimizer_of().iterations.numpy()) - self.step0
            net1 = net_bytes(args.iface)
            self.net = None if self.net0 is None or net1 is None else (net1[0] - self.net0[0], net1[1] - self.net0[1])

    return Meter()


def run_config(config: str, args, data, rank: int, size: int) -> dict:
    import keras
    import tensorflow as tf

    import hvdagent

    x, xt, y, yt = data
    keras.utils.set_random_seed(0)  # the same initial weights for every configuration
    model = build_model(keras, args.hidden)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    sgd = dict(momentum=0.9)
    m = meter(keras, args, lambda: model.optimizer)
    fit = dict(epochs=args.epochs, verbose=0, callbacks=[m])
    if config == "horovod":
        import horovod.tensorflow as hvd

        class HorovodSGD(keras.optimizers.SGD):
            """Hand-written: average all gradients in one grouped allreduce."""

            def apply(self, grads, trainable_variables=None):
                grads = hvd.grouped_allreduce(list(grads), op=hvd.Average, name="hand_grads")
                return super().apply(grads, trainable_variables)

        model.compile(HorovodSGD(args.lr * size, **sgd), loss=loss, metrics=["accuracy"])
        for i, v in enumerate(model.variables):
            v.assign(hvd.broadcast(tf.convert_to_tensor(v), root_rank=0, name=f"init_{i}"))
        ds = (tf.data.Dataset.from_tensor_slices((x[rank::size], y[rank::size]))
              .shuffle(len(x), seed=0).batch(args.batch).prefetch(2))
        model.fit(ds, **fit)
    elif config == "nosync":
        model.compile(keras.optimizers.SGD(args.lr, **sgd), loss=loss, metrics=["accuracy"])
        ds = (tf.data.Dataset.from_tensor_slices((x[rank::size], y[rank::size]))
              .shuffle(len(x), seed=0).batch(args.batch).prefetch(2))
        model.fit(ds, **fit)
    else:
        kwargs = {}
        if config in ("fp16", "bf16"):
            kwargs["compression"] = config
        elif config.startswith("localsgd"):
            kwargs["sync_every"] = int(config[len("localsgd"):])
        elif config.startswith("powersgd"):
            kwargs["compression"] = hvdagent.PowerSGD(rank=int(config[len("powersgd"):]), start_step=args.powersgd_start)
        agent = hvdagent.DistributedAgent(model, **kwargs)
        agent.compile(keras.optimizers.SGD(args.lr, **sgd), loss=loss, metrics=["accuracy"])
        agent.fit(x, y, batch_size=args.batch, **fit)
    test_loss, test_acc = model.evaluate(xt, yt, batch_size=256, verbose=0)
    sent, received = m.net if m.net else (None, None)
    return {
        "config": config, "elapsed_s": m.elapsed, "steps": m.steps,
        # Every rank trains on its share of every epoch: the global samples of the timed epochs.
        "samples_per_s": len(x) * (args.epochs - args.warmup_epochs) / m.elapsed,
        "sent_bytes_per_step": sent / m.steps if sent is not None else None,
        "received_bytes_per_step": received / m.steps if received is not None else None,
        "test_accuracy": float(test_acc), "test_loss": float(test_loss),
        "epochs": [{"epoch": e, "loss": l, "t_s": t} for e, l, t in m.epochs],
        "digest": digest(model),
    }


def allreduce_rows(max_bytes: int, iters: int) -> list:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import horovod.tensorflow as hvd

    from allreduce import measure

    return measure(hvd, max_bytes, iters)


def main(argv=None):
    args = parse(argv)
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(1)
    import hvdagent

    hvdagent.init()
    rank, size = hvdagent.rank(), hvdagent.size()
    out = {"rank": rank, "size": size, "host": os.uname().nodename, "iface": args.iface,
           "iface_found": net_bytes(args.iface) is not None, "results": []}
    if args.allreduce_max_bytes:
        out["allreduce"] = allreduce_rows(args.allreduce_max_bytes, args.allreduce_iters)
    data = load_digits()
    import keras

    shapes = [tuple(int(d) for d in w.shape) for w in build_model(keras, args.hidden).trainable_weights]
    out["params"] = int(sum(math.prod(s) for s in shapes))
    ranks = [int(c[len("powersgd"):]) for c in args.configs if c.startswith("powersgd")]
    if ranks:  # PowerSGD's own arithmetic per step, on this rank (what the advisor measures)
        from hvdagent._sync.advisor import measure_compression

        out["compress_s"] = measure_compression(shapes, ranks=ranks)
    for config in args.configs:
        t = time.perf_counter()
        result = run_config(config, args, data, rank, size)
        out["results"].append(result)
        if rank == 0:
            sent = result["sent_bytes_per_step"]
            print(f"[comm] {config:10s} {result['samples_per_s']:8.0f} samples/s  "
                  f"{sent / 1e6 if sent is not None else float('nan'):8.3f} MB sent/step  "
                  f"test accuracy {result['test_accuracy']:.4f}  ({time.perf_counter() - t:.0f} s)", flush=True)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / f"result-{rank}.json").write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
