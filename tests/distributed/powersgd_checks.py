"""PowerSGD on two ranks: the weighted average, convergence, identical replicas, resume.

    horovodrun --gloo -np 2 python tests/distributed/powersgd_checks.py OUT_DIR

Every recorded figure must come out the same on both ranks (the test compares
the two result files), so each is reduced or broadcast where ranks could differ.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _worker import Checks, weights_digest  # noqa: E402

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402

import hvdagent  # noqa: E402
from hvdagent import _hvd  # noqa: E402
from hvdagent._sync.parts import parts_of  # noqa: E402

out_dir = sys.argv[1]
checks = Checks(out_dir)
rank, size = checks.rank, checks.size
assert size == 2, size


_asked = [0]


def same_everywhere(value) -> bool:
    """True when every rank holds ``value`` (an allgather, named alike on every rank)."""
    _asked[0] += 1
    return all(v == value for v in _hvd.allgather_object(value, name=f"same_{_asked[0]}"))


# --- 1. the weighted average, exactly: per-rank gradients of rank 1, PowerSGD rank 2 ------------------
opt = hvdagent.DistributedOptimizer(keras.optimizers.SGD(0.1), compression=hvdagent.PowerSGD(rank=2, start_step=0))
kernel, bias = keras.Variable(np.zeros((40, 30), "float32")), keras.Variable(np.zeros((30,), "float32"))
opt.build([kernel, bias])
sync = parts_of(opt).sync
rng = np.random.default_rng(7)
u, v, b = rng.standard_normal((2, 40)), rng.standard_normal((2, 30)), rng.standard_normal((2, 30))
grads = [np.outer(u[r], v[r]).astype("float32") for r in range(2)]


def reduced(counts, step):
    g = tf.constant(grads[rank]) if counts[rank] else tf.zeros((40, 30))
    gb = tf.constant(b[rank].astype("float32")) if counts[rank] else tf.zeros((30,))
    out = sync.reduce([g, gb], count=tf.constant(float(counts[rank])), step=tf.constant(step, tf.int64))
    return [o.numpy() for o in out]


def weighted(counts):
    n = sum(counts)
    return (sum(c * g for c, g in zip(counts, grads)) / n, sum(c * x for c, x in zip(counts, b)) / n)


def error_of(out, want):
    return max(float(np.abs(o - w).max() / np.abs(w).max()) for o, w in zip(out, want))


for e in sync.state_variables()[1:]:
    e.assign(tf.zeros_like(e))
checks.record("weighted_error", error_of(reduced((64, 10), 0), weighted((64, 10))))
for e in sync.state_variables()[1:]:
    e.assign(tf.zeros_like(e))
checks.record("empty_batch_error", error_of(reduced((64, 0), 1), weighted((64, 0))))

# --- 2. convergence on digits against float32; a short batch and an empty one every epoch ---------------
d = load_digits()
x = (d.images.reshape(-1, 64) / 16.0).astype("float32")
y = d.target.astype("int32")
x_train, y_train, x_test, y_test = x[:1281], y[:1281], x[1437:], y[1437:]  # 1281 = 2 x 640 + 1


def train(compression, epochs, checkpoint_dir=None):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(256, activation="relu"),
                              keras.layers.Dense(128, activation="relu"), keras.layers.Dense(10)])
    agent = hvdagent.DistributedAgent(model, compression=compression)
    agent.compile(keras.optimizers.SGD(0.05, momentum=0.9),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    history = agent.fit(x_train, y_train, batch_size=64, epochs=epochs, verbose=0, checkpoint_dir=checkpoint_dir)
    return model, history


def evaluate(model):
    loss, acc = model.evaluate(x_test, y_test, verbose=0)
    return float(loss), float(acc)


def state_digest(model):
    """Weights, optimizer slots and PowerSGD's state, to the bit."""
    import hashlib

    h = hashlib.sha256(weights_digest(model).encode())
    for v in list(model.optimizer.variables) + parts_of(model.optimizer).sync.state_variables():
        h.update(np.asarray(v.numpy()).tobytes())
    return h.hexdigest()


psgd = hvdagent.PowerSGD(rank=2, start_step=20)  # 11 steps an epoch: compressed from epoch 2 on
fp32_model, _ = train(None, 12)
psgd_model, _ = train(psgd, 12)
checks.record("fp32_loss", evaluate(fp32_model)[0])
checks.record("fp32_accuracy", evaluate(fp32_model)[1])
checks.record("powersgd_loss", evaluate(psgd_model)[0])
checks.record("powersgd_accuracy", evaluate(psgd_model)[1])
checks.record("iterations", int(psgd_model.optimizer.iterations.numpy()))
identical = same_everywhere(weights_digest(fp32_model)) and same_everywhere(weights_digest(psgd_model))
q = parts_of(psgd_model.optimizer).sync.state_variables()[0].numpy()
identical = identical and same_everywhere(q.tobytes().hex())

# --- 3. checkpoint and resume: 3 epochs, then on to 5, against 5 in one go -------------------------------
ckpt = _hvd.broadcast_object(os.path.join(out_dir, "ckpt"), name="ckpt_dir")
full_dir = _hvd.broadcast_object(os.path.join(out_dir, "full"), name="full_dir")
train(psgd, 3, ckpt)
resumed, _ = train(psgd, 5, ckpt)
full, _ = train(psgd, 5, full_dir)
checks.record("resumed_equal", same_everywhere(weights_digest(resumed) == weights_digest(full)))
checks.record("state_equal", same_everywhere(state_digest(resumed) == state_digest(full)))
errors = parts_of(full.optimizer).sync.state_variables()[1:]
checks.record("errors_nonzero", same_everywhere(bool(any(np.abs(e.numpy()).max() > 0 for e in errors))))
identical = identical and same_everywhere(state_digest(full))
checks.record("replicas_identical", bool(identical))
checks.record("rank", rank)
checks.finish()
