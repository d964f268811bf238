"""Many DistributedAgent checks in one horovodrun launch (Keras 2 or 3).

    horovodrun --gloo -np 2 python tests/distributed/agent_checks.py OUT_DIR

With TF_USE_LEGACY_KERAS=1 the same checks run on tf_keras. Every rank writes
OUT_DIR/results-<rank>.json; tests/test_distributed_agent.py asserts on them.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _worker import Checks, weights_digest  # noqa: E402

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402,F401  (imported before hvdagent, as users do)

import hvdagent  # noqa: E402

LEGACY = os.environ.get("TF_USE_LEGACY_KERAS") == "1"
if LEGACY:
    import tf_keras as keras  # noqa: E402
else:
    import keras  # noqa: E402

out_dir = sys.argv[1]
checks = Checks(out_dir)
rank, size = checks.rank, checks.size
rng = np.random.default_rng(123)  # the same data on every rank
x = rng.normal(size=(16 * 2 * 12, 10)).astype("float32")  # 384 samples: 24 steps at 8 per rank
w_true = rng.normal(size=(10, 3)).astype("float32")
y_reg = (x @ w_true + 0.1 * rng.normal(size=(len(x), 3))).astype("float32")
y_cls = np.argmax(x @ w_true, axis=1).astype("int64")


def mlp(seed, outputs=3, hidden=16, activation=None):
    keras.utils.set_random_seed(seed)
    return keras.Sequential([
        keras.Input((10,)),
        keras.layers.Dense(hidden, activation="tanh"),
        keras.layers.Dense(outputs, activation=activation),
    ])


def gathered_weights(model):
    return hvdagent_allgather([w.tolist() for w in model.get_weights()])


def hvdagent_allgather(obj):
    from hvdagent import _hvd

    return _hvd.allgather_object(obj)


# 1. Equivalence: 2 ranks x batch 8 == 1 process x batch 16 (SGD, scale_lr=False).
model = mlp(seed=7)
reference = mlp(seed=7)
reference.set_weights(model.get_weights())
agent = hvdagent.DistributedAgent(model, scale_lr=False)
agent.compile(keras.optimizers.SGD(0.05), loss="mse")
agent.fit(x, y_reg, batch_size=8, epochs=1, shuffle=False, verbose=0)
reference.compile(keras.optimizers.SGD(0.05), loss="mse")
reference.fit(x, y_reg, batch_size=8 * size, epochs=1, shuffle=False, verbose=0)
diff = max(float(np.max(np.abs(a - b))) for a, b in zip(model.get_weights(), reference.get_weights()))
checks.record("equivalence_max_abs_diff", diff)
checks.record("equivalence_steps", int(model.optimizer.iterations.numpy()))

# 2. Replica consistency: different initial weights per rank, shuffled training.
model = mlp(seed=100 + rank, activation="softmax")
checks.record("initial_digest", weights_digest(model))
agent = hvdagent.DistributedAgent(model, scale_lr=True)
agent.compile(keras.optimizers.Adam(1e-2), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
history = agent.fit(x, y_cls, batch_size=16, epochs=3, shuffle=True, verbose=0)
checks.record("final_digest", weights_digest(model))
checks.record("history", {k: [float(v) for v in vals] for k, vals in history.history.items()})
checks.record("scaled_lr", hvdagent._sync.parts.parts_of(model.optimizer).lr.effective_rate(model.optimizer))
checks.record("stored_lr", float(np.asarray(model.optimizer.learning_rate)))  # what the user gave, and what is saved

# 3. Exact metrics: an uneven validation set (101 samples over 2 ranks, batch 16).
xv, yv = x[:101], y_cls[:101]
dist_eval = agent.evaluate(xv, yv, batch_size=16, return_dict=True, verbose=0)
local_eval = model.evaluate(xv, yv, batch_size=16, return_dict=True, verbose=0)  # single process, all data
checks.record("eval_distributed", dist_eval)
checks.record("eval_single", local_eval)
hist = agent.fit(x, y_cls, batch_size=16, epochs=1, validation_data=(xv, yv), verbose=0)
checks.record("fit_val_loss", float(hist.history["val_loss"][0]))
checks.record("eval_after_fit", agent.evaluate(xv, yv, batch_size=32, return_dict=True, verbose=0))
checks.record("eval_after_fit_single", model.evaluate(xv, yv, batch_size=32, return_dict=True, verbose=0))

# 4. Predict: sharded, gathered in the original order, on every rank.
pred = agent.predict(x[:37], batch_size=8, verbose=0)
checks.record("predict_max_abs_diff", float(np.max(np.abs(pred - model.predict(x[:37], verbose=0)))))
checks.record("predict_shape", list(pred.shape))

# 5. Portable save from rank 0; every rank may call it.
path = os.path.join(out_dir, "model.keras")
agent.save(path)
if rank == 0:
    np.save(os.path.join(out_dir, "expected_pred.npy"), model.predict(x[:20], verbose=0))
    np.save(os.path.join(out_dir, "x20.npy"), x[:20])

# The user's own model.evaluate on rank 0 alone is a plain local call (the
# Horovod habit): no collective, no hang; the next collective call works.
if rank == 0:
    checks.record("rank0_only_eval", model.evaluate(xv, yv, batch_size=32, return_dict=True, verbose=0)["loss"])
checks.record("after_rank0_only_eval", agent.evaluate(xv, yv, batch_size=32, return_dict=True, verbose=0)["loss"])

# 6. Uneven data (shard=False): 2 batches vs 1, then 1 batch vs 0.
for name, counts in (("uneven_2v1", (16, 8)), ("uneven_1v0", (8, 0))):
    model = mlp(seed=3)
    agent = hvdagent.DistributedAgent(model, scale_lr=False)
    agent.compile(keras.optimizers.SGD(0.1, momentum=0.9), loss="mse")
    n = counts[rank]
    start = 0 if rank == 0 else counts[0]
    agent.fit(x[start:start + n], y_reg[start:start + n], batch_size=8, epochs=2, shard=False, shuffle=False, verbose=0)
    checks.record(name + "_digest", weights_digest(model))
    checks.record(name + "_updates", int(model.optimizer.iterations.numpy()))

# More ranks than samples: one sample, two ranks (the documented policy: rank 1
# runs empty steps and contributes nothing; nothing hangs, replicas agree).
model = mlp(seed=4)
agent = hvdagent.DistributedAgent(model, scale_lr=False)
agent.compile(keras.optimizers.SGD(0.1), loss="mse")
agent.fit(x[:1], y_reg[:1], batch_size=4, epochs=2, verbose=0)
checks.record("one_sample_digest", weights_digest(model))
checks.record("one_sample_updates", int(model.optimizer.iterations.numpy()))
checks.record("one_sample_eval", agent.evaluate(x[:1], y_reg[:1], batch_size=4, return_dict=True, verbose=0)["loss"])
checks.record("one_sample_eval_single", model.evaluate(x[:1], y_reg[:1], return_dict=True, verbose=0)["loss"])
checks.expect_error("no_data_anywhere", ValueError, agent.fit, x[:0], y_reg[:0], batch_size=4, epochs=1, verbose=0)

# 7. Bad input raises on every rank instead of hanging.
bad = mlp(seed=1, hidden=16 if rank == 0 else 17)
agent = hvdagent.DistributedAgent(bad, scale_lr=False)
agent.compile(keras.optimizers.SGD(0.1), loss="mse")
checks.expect_error("mismatched_model", ValueError, agent.fit, x, y_reg, batch_size=8, epochs=1, verbose=0)
fresh = hvdagent.DistributedAgent(mlp(seed=1))
checks.expect_error("fit_before_compile", RuntimeError, fresh.fit, x, y_reg, batch_size=8)
checks.expect_error("batch_size_zero", ValueError, agent.fit, x, y_reg, batch_size=0)
# 8. CPU binding (the Keras 2 launch runs with HVDAGENT_BIND=cores, the Keras 3 one without):
# this rank's CPUs, and those of every thread it has now (TensorFlow's, Horovod's, Gloo's).
checks.record("cpus", sorted(os.sched_getaffinity(0)))
checks.record("thread_cpus", sorted({tuple(sorted(os.sched_getaffinity(int(t)))) for t in os.listdir("/proc/self/task")}))
checks.record("threads", len(os.listdir("/proc/self/task")))
checks.record("ok", True)
checks.finish()
