"""Elastic training: a worker leaves in the middle of the job.

    horovodrun --gloo -np 2 --min-np 1 --max-np 2 --host-discovery-script DISCOVER \
        python tests/distributed/elastic_checks.py OUT_DIR HOSTS_FILE

DISCOVER prints HOSTS_FILE and appends a line to HOSTS_FILE.served each time it
runs. At the end of epoch 1, rank 0 rewrites HOSTS_FILE from "localhost:2" to
"localhost:1" and waits until the driver has read it twice: one worker must go,
and training must go on with the other, from the last commit, to the last epoch.
"""

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import _worker  # noqa: E402
import hvdagent  # noqa: E402

out_dir, hosts_file = sys.argv[1], sys.argv[2]
# "shrink": 2 workers, then 1 after epoch 1; "grow": 1, then 2; "shrink_mid":
# 2, then 1 in the middle of epoch 1 (commits every 2 batches).
mode = sys.argv[3] if len(sys.argv) > 3 else "shrink"
os.makedirs(out_dir, exist_ok=True)
hvdagent.init()
rng = np.random.default_rng(3)
x = rng.normal(size=(160, 6)).astype("float32")
y = (x @ rng.normal(size=(6, 1))).astype("float32")
keras.utils.set_random_seed(0)
model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(8, activation="tanh"), keras.layers.Dense(1)])
# "shrink" and "grow" also compress with PowerSGD (the 6x8 kernel; from the first step): its
# state (warm-start Q, error buffers) must survive the reset and reach a joining worker.
powersgd = hvdagent.PowerSGD(rank=1, start_step=0) if mode in ("shrink", "grow") else None
agent = hvdagent.DistributedAgent(model, scale_lr=True, compression=powersgd)
agent.compile(keras.optimizers.SGD(0.01), loss="mse")
log = os.path.join(out_dir, f"epochs-{os.getpid()}.txt")


def change_hosts(text):
    """Rewrite the host list and wait for the driver to act on it; the wait is recorded."""
    runs, waited = _worker.change_hosts(hosts_file, text)
    with open(log, "a") as f:
        f.write(json.dumps({"hosts_changed": text.strip(), "served_after": runs, "waited_s": waited}) + "\n")


class Shrink(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch
        sync_state = hvdagent._sync.parts.parts_of(self.model.optimizer).sync.state_variables()
        with open(log, "a") as f:
            f.write(json.dumps({"epoch": epoch, "rank": hvdagent.rank(), "size": hvdagent.size(),
                                "sync_state": [np.asarray(v.numpy()).tolist() for v in sync_state],
                                "lr": hvdagent._sync.parts.parts_of(self.model.optimizer).lr.effective_rate(self.model.optimizer),
                                "stored_lr": float(np.asarray(self.model.optimizer.learning_rate))}) + "\n")

    def on_train_batch_end(self, batch, logs=None):
        if mode == "shrink_mid" and self.epoch == 1 and batch == 5 and hvdagent.rank() == 0 and hvdagent.size() == 2:
            change_hosts("localhost:1\n")

    def on_epoch_end(self, epoch, logs=None):
        import hashlib

        digest = hashlib.sha256(b"".join(w.tobytes() for w in self.model.get_weights())).hexdigest()
        with open(log, "a") as f:
            f.write(json.dumps({"end_of_epoch": epoch, "rank": hvdagent.rank(), "digest": digest}) + "\n")
        start_size, new_hosts = (2, "localhost:1\n") if mode == "shrink" else (1, "localhost:2\n")
        if mode != "shrink_mid" and epoch == 1 and hvdagent.rank() == 0 and hvdagent.size() == start_size:
            change_hosts(new_hosts)


history = agent.fit(x, y, batch_size=8, epochs=5, elastic=True, verbose=0, callbacks=[Shrink()],
                    batches_per_commit=2 if mode == "shrink_mid" else None)
with open(os.path.join(out_dir, f"result-{os.getpid()}.json"), "w") as f:
    json.dump({"rank": hvdagent.rank(), "size": hvdagent.size(), "epochs_logged": len(history.history["loss"]),
               "history_epochs": list(history.epoch), "losses": history.history["loss"],
               "iterations": int(model.optimizer.iterations.numpy()),
               "weights": [w.tolist() for w in model.get_weights()]}, f)
print(f"elastic done rank={hvdagent.rank()} size={hvdagent.size()}", flush=True)
