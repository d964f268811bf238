"""Failure modes under horovodrun: kill-and-resume, a raising rank, a stalled
rank, a frozen rank, and slow but healthy work.

    horovodrun --gloo -np 2 python tests/distributed/reliability_checks.py MODE OUT_DIR [ARGS]

MODE:
  train CKPT_DIR TAG [KILL_EPOCH]  4 epochs with checkpoint_dir=CKPT_DIR; with
                                   KILL_EPOCH, rank 1 SIGKILLs itself in that epoch
  raise                            rank 1 raises in the middle of epoch 1
  stall                            rank 1 blocks forever (waits on an event that is
                                   never set) at the end of epoch 0
  freeze                           rank 1 stops itself (SIGSTOP) in epoch 1: alive for
                                   the kernel, silent for its peers
  slow                             default watchdog: rank 0 spends SLOW_SECONDS (90) in a
                                   callback at the end of epoch 1; then a second fit
                                   with stall_timeout=10 where rank 0 spends 20 s in a
                                   paused block (as a checkpoint write does)
"""

import json
import os
import signal
import sys
import threading
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import hvdagent  # noqa: E402

mode, out_dir = sys.argv[1], sys.argv[2]
os.makedirs(out_dir, exist_ok=True)
hvdagent.init()
rank, size = hvdagent.rank(), hvdagent.size()
rng = np.random.default_rng(11)
x = rng.normal(size=(200, 6)).astype("float32")
y = (x @ rng.normal(size=(6, 1)) + 0.1 * rng.normal(size=(200, 1))).astype("float32")


def build():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(16, activation="relu"),
                              keras.layers.Dropout(0.2), keras.layers.Dense(1)])
    kwargs = {"stall_timeout": float(os.environ["STALL_TIMEOUT"])} if "STALL_TIMEOUT" in os.environ else {}
    agent = hvdagent.DistributedAgent(model, scale_lr=True, **kwargs)
    agent.compile(keras.optimizers.Adam(1e-2), loss="mse")
    return model, agent


class Hook(keras.callbacks.Callback):
    def __init__(self, action, epoch, batch=2):
        super().__init__()
        self.action, self.epoch_, self.batch_, self.current = action, epoch, batch, 0

    def on_epoch_begin(self, epoch, logs=None):
        self.current = epoch
        with open(os.path.join(out_dir, f"epochs-{tag}-rank{rank}.txt"), "a") as f:
            f.write(f"{epoch}\n")

    def on_train_batch_end(self, batch, logs=None):
        if self.action and rank == 1 and self.current == self.epoch_ and batch == self.batch_:
            self.action()

    def on_epoch_end(self, epoch, logs=None):
        if mode == "stall" and rank == 1 and epoch == self.epoch_:
            with open(os.path.join(out_dir, "stalled-at.txt"), "w") as f:
                f.write(str(time.time()))
            threading.Event().wait()  # blocked forever, without failing


def boom():
    raise RuntimeError("boom: a deliberate failure on rank 1")


class SlowRank0(keras.callbacks.Callback):
    """Legitimately slow work on rank 0 at an epoch end (a big save, an evaluation)."""

    def __init__(self, epoch, seconds, pause=False):
        super().__init__()
        self.epoch_, self.seconds, self.pause = epoch, seconds, pause

    def on_epoch_end(self, epoch, logs=None):
        if rank != 0 or epoch != self.epoch_:
            return
        import contextlib

        from hvdagent._watchdog import pause as _watchdog_pause

        start = time.monotonic()
        with _watchdog_pause.paused("test") if self.pause else contextlib.nullcontext():
            time.sleep(self.seconds)  # the slow work itself
        with open(os.path.join(out_dir, f"slow-{self.seconds}-{self.pause}.txt"), "w") as f:
            f.write(str(time.monotonic() - start))


def freeze():
    with open(os.path.join(out_dir, "frozen-at.txt"), "w") as f:
        f.write(str(time.time()))
    os.kill(os.getpid(), signal.SIGSTOP)


def kill():
    with open(os.path.join(out_dir, "killed-at.txt"), "w") as f:
        f.write(str(time.time()))
    os.kill(os.getpid(), signal.SIGKILL)


tag = sys.argv[4] if mode == "train" else mode
model, agent = build()
if mode == "train":
    kill_epoch = int(sys.argv[5]) if len(sys.argv) > 5 else -1
    history = agent.fit(x, y, batch_size=10, epochs=4, checkpoint_dir=sys.argv[3], verbose=0,
                        callbacks=[Hook(kill, kill_epoch)])
    weights = model.get_weights()
    result = {"lr": float(np.asarray(model.optimizer.learning_rate)),  # the stored (unscaled) rate
              "applied_lr": hvdagent._sync.parts.parts_of(model.optimizer).lr.effective_rate(model.optimizer),
              "epochs_run": len(history.history.get("loss", [])),
              "iterations": int(model.optimizer.iterations.numpy())}
    np.savez(os.path.join(out_dir, f"weights-{tag}-rank{rank}.npz"), *weights)
    with open(os.path.join(out_dir, f"result-{tag}-rank{rank}.json"), "w") as f:
        json.dump(result, f)
elif mode == "raise":
    agent.fit(x, y, batch_size=10, epochs=3, verbose=0, callbacks=[Hook(boom, 1)])
elif mode == "stall":
    agent.fit(x, y, batch_size=10, epochs=3, verbose=0, callbacks=[Hook(None, 0)])
elif mode == "freeze":
    agent.fit(x, y, batch_size=10, epochs=3, verbose=0, callbacks=[Hook(freeze, 1)])
elif mode == "slow":
    seconds = float(os.environ.get("SLOW_SECONDS", 90))
    history = agent.fit(x, y, batch_size=10, epochs=3, verbose=0, callbacks=[SlowRank0(1, seconds)])
    model2 = keras.Sequential([keras.Input((6,)), keras.layers.Dense(4), keras.layers.Dense(1)])
    agent2 = hvdagent.DistributedAgent(model2, scale_lr=True, stall_timeout=10)
    agent2.compile(keras.optimizers.Adam(1e-2), loss="mse")
    history2 = agent2.fit(x, y, batch_size=10, epochs=2, verbose=0, callbacks=[SlowRank0(0, 20, pause=True)])
    with open(os.path.join(out_dir, f"result-slow-rank{rank}.json"), "w") as f:
        json.dump({"epochs": len(history.history["loss"]), "epochs2": len(history2.history["loss"]),
                   "iterations": int(model.optimizer.iterations.numpy()),
                   "iterations2": int(model2.optimizer.iterations.numpy())}, f)
print(f"rank {rank} finished {mode}", flush=True)
