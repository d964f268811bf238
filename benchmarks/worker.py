"""One benchmark run on one rank: train the workload, time it, write JSON.

Started by :mod:`benchmarks.run` (``horovodrun -np 2 python worker.py ...``
for the Horovod modes, one plain process per worker for MWMS). Not a library
module: the hand-written Horovod baseline imports ``horovod.tensorflow``
directly, as a user writing it by hand would.

Modes:
    single     plain Keras 3 ``model.fit``, one process
    hvdagent   ``hvdagent.DistributedAgent`` (Keras 3, or tf_keras with --keras 2)
    nosync     the same without gradient sync (the upper bound): the optimizer's
               sync switch where hvdagent has one, else ``sync_every=10**9``
               (weights averaged only at the last step of each epoch)
    localsgd   the same with the DistributedAgent arguments of --agent-kwargs
               (the benchmark passes ``sync_every=8``: local SGD)
    horovod    hand-written Horovod: ``hvd.grouped_allreduce`` of all
               gradients inside the optimizer's ``apply`` (Keras 3)
    mwms       ``tf.distribute.MultiWorkerMirroredStrategy`` with tf_keras
               (TF_CONFIG set by the caller)

Timing: the first epoch (tracing, warm-up) is not timed; the clock runs from
the start of epoch 2 to the end of training, so per-epoch costs (metric
reduction, stop sync) are included. Throughput is global samples per second.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import resource
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("OMP_NUM_THREADS", "1")

MODES = ("single", "hvdagent", "nosync", "localsgd", "horovod", "mwms")
AGENT_MODES = ("hvdagent", "nosync", "localsgd")
ENV_RECORDED = ("HOROVOD_CYCLE", "HOROVOD_FUSION", "HOROVOD_CONTROLLER", "HOROVOD_CPU_OPERATIONS", "HOROVOD_AUTOTUNE",
                "OMPI_MCA_mpi_yield_when_idle")


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--mode", choices=MODES, required=True)
    p.add_argument("--keras", type=int, choices=(2, 3), default=3)
    p.add_argument("--steps", type=int, default=100, help="steps per epoch (per rank)")
    p.add_argument("--epochs", type=int, default=3, help="timed epochs (one untimed warm-up epoch runs first)")
    p.add_argument("--batch", type=int, default=64, help="per-rank batch size")
    p.add_argument("--intra", type=int, default=1, help="TF intra-op threads")
    p.add_argument("--inter", type=int, default=0, help="TF inter-op threads (0: TF's default)")
    p.add_argument("--compression", choices=("none", "fp16", "bf16"), default="none")
    p.add_argument("--bpps", type=int, default=1, help="backward_passes_per_step")
    p.add_argument("--agent-kwargs", default="{}", metavar="JSON",
                   help='extra DistributedAgent arguments as a JSON object, e.g. \'{"sync_every": 8}\'')
    p.add_argument("--pin", action="store_true", help="pin this process to CPU core local_rank")
    p.add_argument("--profile", action="store_true", help="hvdagent: run hvdagent.SyncProfiler")
    p.add_argument("--out", required=True, help="directory for result-<rank>.json")
    return p.parse_args(argv)


def configure_tf(args):
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(args.intra)
    if args.inter:
        tf.config.threading.set_inter_op_parallelism_threads(args.inter)
    return tf


def agent_kwargs(args) -> dict:
    """The DistributedAgent arguments of this run."""
    kwargs = {"compression": None if args.compression == "none" else args.compression,
              "backward_passes_per_step": args.bpps}
    extra = json.loads(args.agent_kwargs)
    if not isinstance(extra, dict):
        raise ValueError(f"--agent-kwargs must be a JSON object. Received: --agent-kwargs={args.agent_kwargs!r}")
    kwargs.update(extra)
    return kwargs


NEVER = 10**9  # sync_every larger than any run: local SGD that never averages during training


def switch_off_sync(model, args):
    """Switch hvdagent's gradient reduction off (the ``nosync`` upper bound).

    Uses the optimizer wrapper's benchmark switch, or nothing when the run's
    agent arguments already make it local SGD that never averages during the
    run. Returns how (recorded in the result), or None when this hvdagent has
    no switch but accepts ``sync_every``: the caller then builds the agent
    again with ``sync_every=NEVER``.
    """
    every = json.loads(args.agent_kwargs).get("sync_every")
    if every is not None and every > args.steps * (args.epochs + 1):
        return f"sync_every={every}"
    sync = getattr(model.optimizer, "_hvdagent_sync", None)
    if sync is not None and hasattr(sync, "enabled"):
        sync.enabled = False
        return "optimizer._hvdagent_sync.enabled = False"
    import hvdagent

    if "sync_every" in inspect.signature(hvdagent.DistributedAgent).parameters:
        return None
    raise RuntimeError(
        "this hvdagent has no switch to turn gradient sync off (looked for optimizer._hvdagent_sync.enabled) "
        "and no sync_every argument; the nosync configuration cannot run."
    )


def timer_callback(base):
    class Timer(base):
        """Wall clock from the start of epoch 2 to the end of training."""

        start = end = None

        def on_epoch_begin(self, epoch, logs=None):
            if epoch == 1:
                Timer.start = time.perf_counter()

        def on_train_end(self, logs=None):
            Timer.end = time.perf_counter()

    return Timer


def run_keras3(args, rank, size):
    import keras

    import _workload

    n = args.steps * args.batch * size
    x, y = _workload.make_data(n)
    model = _workload.build_model(keras)
    Timer = timer_callback(keras.callbacks.Callback)
    fit = dict(epochs=args.epochs + 1, verbose=0, callbacks=[Timer()])
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    extra = {}
    if args.mode in AGENT_MODES:
        import hvdagent

        agent = hvdagent.DistributedAgent(model, **agent_kwargs(args))
        agent.compile(keras.optimizers.SGD(0.01), loss=loss, metrics=["accuracy"])
        if args.mode == "nosync":
            how = switch_off_sync(model, args)
            if how is None:
                model = _workload.build_model(keras)
                agent = hvdagent.DistributedAgent(model, **{**agent_kwargs(args), "sync_every": NEVER})
                agent.compile(keras.optimizers.SGD(0.01), loss=loss, metrics=["accuracy"])
                how = f"sync_every={NEVER} (no sync switch in this hvdagent)"
            extra["nosync_via"] = how
        callbacks = fit.pop("callbacks")
        if args.profile:
            from hvdagent import SyncProfiler

            prof = SyncProfiler()
            callbacks.append(prof)
        agent.fit(x, y, batch_size=args.batch, callbacks=callbacks, **fit)
        if args.profile:
            extra["profile"] = prof.history
    elif args.mode == "horovod":
        import horovod.tensorflow as hvd
        import tensorflow as tf

        class HorovodSGD(keras.optimizers.SGD):
            """Hand-written: average all gradients in one grouped allreduce."""

            def apply(self, grads, trainable_variables=None):
                grads = hvd.grouped_allreduce(list(grads), op=hvd.Average, name="hand_grads")
                return super().apply(grads, trainable_variables)

        model.compile(HorovodSGD(0.01 * size), loss=loss, metrics=["accuracy"])
        for i, v in enumerate(model.variables):
            v.assign(hvd.broadcast(tf.convert_to_tensor(v), root_rank=0, name=f"init_{i}"))
        ds = (
            tf.data.Dataset.from_tensor_slices((x[rank::size], y[rank::size]))
            .shuffle(n // size, seed=0).batch(args.batch).prefetch(2)
        )
        model.fit(ds, **fit)
    else:  # single
        import tensorflow as tf

        model.compile(keras.optimizers.SGD(0.01), loss=loss, metrics=["accuracy"])
        ds = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(n, seed=0).batch(args.batch).prefetch(2)
        model.fit(ds, **fit)
    return Timer, n, extra


def run_keras2(args, rank, size):
    """tf_keras: MWMS, or hvdagent on a tf_keras model (same framework as MWMS)."""
    import tensorflow as tf
    import tf_keras

    import _workload

    n = args.steps * args.batch * size
    x, y = _workload.make_data(n)
    Timer = timer_callback(tf_keras.callbacks.Callback)
    loss = tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    fit = dict(epochs=args.epochs + 1, verbose=0, callbacks=[Timer()])
    if args.mode == "mwms":
        strategy = tf.distribute.MultiWorkerMirroredStrategy(
            communication_options=tf.distribute.experimental.CommunicationOptions(
                implementation=tf.distribute.experimental.CommunicationImplementation.RING
            )
        )
        with strategy.scope():
            model = _workload.build_model(tf_keras)
            model.compile(tf_keras.optimizers.SGD(0.01 * size), loss=loss, metrics=["accuracy"])

        def dataset_fn(ctx):
            per_replica = ctx.get_per_replica_batch_size(args.batch * size)
            i, k = ctx.input_pipeline_id, ctx.num_input_pipelines
            return (
                tf.data.Dataset.from_tensor_slices((x[i::k], y[i::k]))
                .shuffle(n // k, seed=0).repeat().batch(per_replica).prefetch(2)
            )

        ds = strategy.distribute_datasets_from_function(dataset_fn)
        model.fit(ds, steps_per_epoch=args.steps, **fit)
        return Timer, n, {}
    import hvdagent

    model = _workload.build_model(tf_keras)
    agent = hvdagent.DistributedAgent(model, **agent_kwargs(args))
    agent.compile(tf_keras.optimizers.SGD(0.01), loss=loss, metrics=["accuracy"])
    extra = {}
    if args.mode == "nosync":
        extra["nosync_via"] = switch_off_sync(model, args)
        if extra["nosync_via"] is None:
            raise RuntimeError("nosync with tf_keras needs the optimizer's sync switch; pass --nosync-args "
                               f"sync_every={NEVER} to run.py")
    agent.fit(x, y, batch_size=args.batch, **fit)
    return Timer, n, extra


def rank_and_size(args):
    if args.mode == "single":
        return 0, 1
    if args.mode == "mwms":
        cfg = json.loads(os.environ["TF_CONFIG"])
        return int(cfg["task"]["index"]), len(cfg["cluster"]["worker"])
    if args.mode == "horovod":
        import horovod.tensorflow as hvd

        hvd.init()
        return hvd.rank(), hvd.size()
    import hvdagent

    hvdagent.init()
    return hvdagent.rank(), hvdagent.size()


def main(argv=None):
    args = parse(argv)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    if args.keras == 2 or args.mode == "mwms":
        os.environ["TF_USE_LEGACY_KERAS"] = "1"
    if args.pin:
        local = int(os.environ.get("HOROVOD_LOCAL_RANK", os.environ.get("OMPI_COMM_WORLD_LOCAL_RANK", 0)))
        cores = sorted(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {cores[local % len(cores)]})
    configure_tf(args)
    rank, size = rank_and_size(args)
    if args.mode == "mwms" or args.keras == 2:
        timer, n, extra = run_keras2(args, rank, size)
    else:
        timer, n, extra = run_keras3(args, rank, size)
    elapsed = timer.end - timer.start
    samples = args.steps * args.batch * size * args.epochs
    result = {
        "mode": args.mode, "keras": 2 if args.mode == "mwms" else args.keras, "rank": rank, "size": size,
        "steps": args.steps, "epochs": args.epochs, "batch": args.batch,
        "elapsed_s": elapsed, "samples_per_s": samples / elapsed,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
        "cpu_s": sum(getattr(resource.getrusage(resource.RUSAGE_SELF), f) for f in ("ru_utime", "ru_stime")),
        # What the process ran with after initialisation (hvdagent may set some of these itself).
        "env": {k: v for k, v in os.environ.items() if k.startswith(ENV_RECORDED)},
        "agent_kwargs": json.loads(args.agent_kwargs) if args.mode in AGENT_MODES else None,
        **extra,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"result-{rank}.json").write_text(json.dumps(result, indent=1))
    if rank == 0:
        print(f"[bench] {args.mode}: {result['samples_per_s']:.0f} samples/s, peak RSS {result['peak_rss_mb']:.0f} MB", flush=True)


if __name__ == "__main__":
    main()
