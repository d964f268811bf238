"""Checks run across the hosts of ci/hosts.sh (see tests/test_multihost.py).

    horovodrun --gloo|--mpi -np 4 -H hvdhost1:2,hvdhost2:2 --network-interface hvd0 \\
        python tests/distributed/multihost_checks.py MODE OUT_DIR [ARGS]

MODE:
  train CKPT_DIR TAG [block]  scikit-learn's digits, 6 epochs, checkpoint_dir=CKPT_DIR.
                              Records the topology, replica digests, exact metrics and
                              the files written. With ``block``, rank 0 writes
                              OUT_DIR/trigger-TAG in epoch 2 and then blocks, so that
                              the test can kill or cut a host at a known point.
  elastic HOSTS_FILE leave|join   under --host-discovery-script (DISCOVER prints
                              HOSTS_FILE and appends a line to HOSTS_FILE.served each
                              time it runs): after epoch 1 rank 0 rewrites HOSTS_FILE
                              (``leave``: host 2 goes; ``join``: host 2 comes) and waits
                              until the driver has read it twice.
  init                        hvdagent.init() only (start-up checks).
"""

import hashlib
import json
import os
import socket
import sys
import threading
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import _worker  # noqa: E402
import hvdagent  # noqa: E402
from hvdagent import _hvd  # noqa: E402

mode, out_dir = sys.argv[1], sys.argv[2]
os.makedirs(out_dir, exist_ok=True)
hvdagent.init()
rank, size = hvdagent.rank(), hvdagent.size()
host = socket.gethostname()


def digest(model):
    return hashlib.sha256(b"".join(w.tobytes() for w in model.get_weights())).hexdigest()


def applied_lr(model):
    """The rate the next update applies (the stored rate times the scale)."""
    return hvdagent._sync.parts.parts_of(model.optimizer).lr.effective_rate(model.optimizer)


def write_json(name, value):
    with open(os.path.join(out_dir, name), "w") as f:
        json.dump(value, f, indent=1)


if mode == "init":
    write_json(f"init-rank{rank}.json", {"host": host, "size": size})
    sys.exit(0)

if mode == "train":
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    ckpt_dir, tag = sys.argv[3], sys.argv[4]
    block = len(sys.argv) > 5 and sys.argv[5] == "block"
    digits = load_digits()
    x = (digits.images.reshape(-1, 64) / 16.0).astype("float32")
    y = digits.target.astype("int64")
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.2, random_state=0, stratify=y)

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(64, activation="relu"),
                              keras.layers.Dense(10, activation="softmax")])
    agent = hvdagent.DistributedAgent(model, scale_lr=True)
    agent.compile(keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy", metrics=["accuracy"])

    class Trigger(keras.callbacks.Callback):
        """Rank 0 announces epoch 2 and blocks: the test now kills or cuts host 2."""

        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch

        def on_train_batch_end(self, batch, logs=None):
            if block and rank == 0 and self.epoch == 2 and batch == 3:
                with open(os.path.join(out_dir, f"trigger-{tag}"), "w") as f:
                    f.write(str(time.time()))
                threading.Event().wait()

    callbacks = [keras.callbacks.CSVLogger(os.path.join(out_dir, f"log-{tag}.csv")), Trigger()]
    history = agent.fit(x_train, y_train, batch_size=16, epochs=6, checkpoint_dir=ckpt_dir, verbose=0,
                        callbacks=callbacks)
    result = agent.evaluate(x_test, y_test, return_dict=True, verbose=0)
    local = model.evaluate(x_test, y_test, return_dict=True, verbose=0)  # this rank alone, all the data
    record = {
        "host": host, "rank": rank, "size": size,
        "local_rank": hvdagent.local_rank(), "local_size": hvdagent.local_size(),
        "cross_rank": _hvd.cross_rank(), "cross_size": _hvd.cross_size(),
        "digest": digest(model), "global_eval": result, "local_eval": local,
        "lr": applied_lr(model),
        "iterations": int(model.optimizer.iterations.numpy()),
        "epochs_run": len(history.history["loss"]),
        "history_loss": history.history["loss"],
    }
    write_json(f"result-{tag}-rank{rank}.json", record)
    if rank == 0:
        np.savez(os.path.join(out_dir, f"weights-{tag}.npz"), *model.get_weights())
    print(f"rank {rank} on {host} done: accuracy {result['accuracy']:.4f}", flush=True)

if mode == "elastic":
    hosts_file, how = sys.argv[3], sys.argv[4]
    first_host, second_host = "hvdhost1:2\n", "hvdhost2:2\n"
    rng = np.random.default_rng(3)
    x = rng.normal(size=(160, 6)).astype("float32")
    y = (x @ rng.normal(size=(6, 1))).astype("float32")
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(8, activation="tanh"), keras.layers.Dense(1)])
    agent = hvdagent.DistributedAgent(model, scale_lr=True)
    agent.compile(keras.optimizers.SGD(0.01), loss="mse")
    log = os.path.join(out_dir, f"epochs-{host}-{os.getpid()}.txt")

    class Change(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            with open(log, "a") as f:
                f.write(json.dumps({"epoch": epoch, "rank": hvdagent.rank(), "size": hvdagent.size(), "host": host,
                                    "lr": applied_lr(self.model)}) + "\n")

        def on_epoch_end(self, epoch, logs=None):
            with open(log, "a") as f:
                f.write(json.dumps({"end_of_epoch": epoch, "rank": hvdagent.rank(), "digest": digest(self.model)}) + "\n")
            start_size = 4 if how == "leave" else 2
            if epoch == 1 and hvdagent.rank() == 0 and hvdagent.size() == start_size:
                _worker.change_hosts(hosts_file, first_host if how == "leave" else first_host + second_host)

    history = agent.fit(x, y, batch_size=8, epochs=5, elastic=True, verbose=0, callbacks=[Change()])
    write_json(f"elastic-{host}-{os.getpid()}.json",
               {"rank": hvdagent.rank(), "size": hvdagent.size(), "host": host,
                "epochs_logged": len(history.history["loss"]),
                "iterations": int(model.optimizer.iterations.numpy()), "digest": digest(model)})
    print(f"elastic done rank={hvdagent.rank()} size={hvdagent.size()} host={host}", flush=True)
