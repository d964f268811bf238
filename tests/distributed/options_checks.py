"""Optimizer options, learning-rate scaling, callbacks and output hygiene (Keras 3).

    horovodrun --gloo -np 2 python tests/distributed/options_checks.py OUT_DIR
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _worker import Checks, weights_digest  # noqa: E402

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import hvdagent  # noqa: E402

out_dir = sys.argv[1]
checks = Checks(out_dir)
rank, size = checks.rank, checks.size
rng = np.random.default_rng(5)
x = rng.normal(size=(256, 6)).astype("float32")
y = (x @ rng.normal(size=(6, 2))).astype("float32")
labels = (x[:, 0] > 0).astype("int64")


def mlp(seed=0, outputs=2, activation=None):
    keras.utils.set_random_seed(seed)
    return keras.Sequential([keras.Input((6,)), keras.layers.Dense(8, activation="tanh"),
                             keras.layers.Dense(outputs, activation=activation)])


def train(seed=0, epochs=1, batch_size=8, optimizer=None, fit_kwargs=None, **agent_kwargs):
    model = mlp(seed)
    agent = hvdagent.DistributedAgent(model, **{"scale_lr": False, **agent_kwargs})
    agent.compile(optimizer or keras.optimizers.SGD(0.05), loss="mse")
    history = agent.fit(x, y, batch_size=batch_size, epochs=epochs, shuffle=False, verbose=0, **(fit_kwargs or {}))
    return model, history


def reference(global_batch, epochs=1, seed=0, optimizer=None):
    model = mlp(seed)
    model.compile(optimizer or keras.optimizers.SGD(0.05), loss="mse")
    model.fit(x, y, batch_size=global_batch, epochs=epochs, shuffle=False, verbose=0)
    return model


def max_diff(a, b):
    return max(float(np.max(np.abs(u - v))) for u, v in zip(a.get_weights(), b.get_weights()))


# Compression: replicas agree bitwise; close to uncompressed training.
base, _ = train()
for comp in ("fp16", "bf16"):
    model, _ = train(compression=comp)
    checks.record(f"{comp}_digest", weights_digest(model))
    checks.record(f"{comp}_vs_uncompressed", max_diff(model, base))

# op="sum": the update uses the sum of the two ranks' gradients = 2x the average.
summed, _ = train(op="sum", optimizer=keras.optimizers.SGD(0.025))
checks.record("sum_vs_average_half_lr", max_diff(summed, base))

# Gradient accumulation: 2 ranks x 2 passes x batch 8 == 1 process x batch 32.
accum, _ = train(backward_passes_per_step=2)
checks.record("accum_vs_reference", max_diff(accum, reference(32)))
checks.record("accum_updates", int(accum.optimizer.iterations.numpy()))

# gradient_predivide_factor changes nothing mathematically.
pre, _ = train(gradient_predivide_factor=2.0)
checks.record("predivide_vs_base", max_diff(pre, base))

# Sparse gradients (Embedding), gathered or dense: replicas agree.
tokens = rng.integers(0, 50, size=(128, 5)).astype("int32")
targets = rng.normal(size=(128, 1)).astype("float32")
for dense in (False, True):
    keras.utils.set_random_seed(1)
    emb = keras.Sequential([keras.Input((5,), dtype="int32"), keras.layers.Embedding(50, 4),
                            keras.layers.GlobalAveragePooling1D(), keras.layers.Dense(1)])
    agent = hvdagent.DistributedAgent(emb, sparse_as_dense=dense)
    agent.compile(keras.optimizers.SGD(0.1), loss="mse")
    agent.fit(tokens, targets, batch_size=16, epochs=1, verbose=0)
    checks.record(f"sparse_as_dense_{dense}_digest", weights_digest(emb))

# Local SGD (sync_every=4): ranks apply their own gradients and average the
# weights every 4 updates and at every epoch end: identical replicas after fit,
# a different trajectory from every-step sync; averaging is the exact mean.
model, _ = train(sync_every=4, epochs=2)
every_step, _ = train(epochs=2)
checks.record("local_sgd_digest", weights_digest(model))
checks.record("local_sgd_vs_every_step", max_diff(model, every_step))
model, _ = train(sync_every=4, local_sgd_warmup_epochs=1, epochs=1)
checks.record("local_sgd_warmup_vs_every_step", max_diff(model, base))  # 1 epoch of every-step sync first
parts = hvdagent._sync.parts.parts_of(model.optimizer)
probe = [tf.Variable(tf.fill([3], float(rank + 1))), tf.Variable(tf.fill([2, 2], 10.0 * (rank + 1)))]
parts.sync.average_weights(probe)
checks.record("local_sgd_average", [v.numpy().tolist() for v in probe])
checks.expect_error("local_sgd_with_accumulation", ValueError, hvdagent.DistributedAgent, mlp(),
                    sync_every=4, backward_passes_per_step=2)

# Learning-rate scaling: float with warm-up, and a schedule.
model, history = train(scale_lr=True, warmup_epochs=2, epochs=3, optimizer=keras.optimizers.SGD(0.01))
def applied_lr(model):
    """The rate the next update applies (the stored rate times the scale)."""
    return hvdagent._sync.parts.parts_of(model.optimizer).lr.effective_rate(model.optimizer)


checks.record("warmup_final_lr", applied_lr(model))
checks.record("warmup_stored_lr", float(np.asarray(model.optimizer.learning_rate)))
schedule = keras.optimizers.schedules.ExponentialDecay(0.1, decay_steps=100, decay_rate=0.5)
model, _ = train(scale_lr=True, optimizer=keras.optimizers.SGD(schedule))
steps = int(model.optimizer.iterations.numpy())
checks.record("schedule_lr_ratio", applied_lr(model) / float(schedule(steps)))
model, _ = train(scale_lr=True, warmup_epochs=1, epochs=2, optimizer=keras.optimizers.SGD(keras.optimizers.schedules.ExponentialDecay(0.1, 100, 0.5)))
checks.record("schedule_warmup_lr_ratio", applied_lr(model) / float(schedule(int(model.optimizer.iterations.numpy()))))
# Mid-warm-up: after 1 of 2 warm-up epochs (16 of 32 updates) the multiplier is 1.5.
model, _ = train(scale_lr=True, warmup_epochs=2, epochs=1, optimizer=keras.optimizers.SGD(0.01))
checks.record("warmup_half_lr", applied_lr(model))

# Synchronized decisions: EarlyStopping on the global val_loss; ReduceLROnPlateau.
model = mlp(seed=2)
agent = hvdagent.DistributedAgent(model, scale_lr=False)
agent.compile(keras.optimizers.SGD(0.3), loss="mse")
noise_y = rng.normal(size=y.shape).astype("float32")  # unlearnable: val_loss plateaus quickly
history = agent.fit(x, noise_y, batch_size=16, epochs=40, validation_data=(x[:50], noise_y[:50]), verbose=0,
                    callbacks=[keras.callbacks.EarlyStopping(monitor="val_loss", patience=1, min_delta=1e-3),
                               keras.callbacks.ReduceLROnPlateau(monitor="val_loss", patience=0, factor=0.5, min_delta=1e-3)])
checks.record("early_stop_epochs", len(history.history["loss"]))
checks.record("early_stop_lrs", [float(v) for v in history.history.get("learning_rate", [])])
checks.record("early_stop_final_lr", float(np.asarray(model.optimizer.learning_rate)))


class StopOnRankOne(keras.callbacks.Callback):
    """Decides on local information: stops on rank 1 only, at batch 3."""

    def on_train_batch_end(self, batch, logs=None):
        if rank == 1 and batch == 3:
            self.model.stop_training = True


model = mlp(seed=3)
agent = hvdagent.DistributedAgent(model, scale_lr=False)
agent.compile(keras.optimizers.SGD(0.05), loss="mse")
agent.fit(x, y, batch_size=8, epochs=3, verbose=0, callbacks=[StopOnRankOne()])
checks.record("local_stop_updates", int(model.optimizer.iterations.numpy()))
checks.record("local_stop_digest", weights_digest(model))

# shard_dataset: disjoint shards that cover everything, equal step counts, a
# fresh shared permutation... per rank each epoch; and agent.fit takes it as is.
for n in (10, 7, 5):
    ds = hvdagent.shard_dataset(tf.data.Dataset.range(n), batch_size=2, shuffle=True, seed=1)
    epochs = [[int(v) for b in ds for v in b.numpy()] for _ in range(2)]
    checks.record(f"shard_{n}_elements", epochs)
    checks.record(f"shard_{n}_steps", sum(1 for _ in ds))
files = tf.data.Dataset.from_tensor_slices([f"part-{i}.tfrecord" for i in range(5)])
checks.record("shard_files", sorted(f.decode() for f in hvdagent.shard_dataset(files, shuffle=False).as_numpy_iterator()))
model = mlp(seed=6)
agent = hvdagent.DistributedAgent(model, scale_lr=False)
agent.compile(keras.optimizers.SGD(0.05), loss="mse")
pairs = tf.data.Dataset.from_tensor_slices((x[:100], y[:100]))
agent.fit(hvdagent.shard_dataset(pairs, batch_size=8, seed=2), epochs=2, verbose=0)
checks.record("shard_fit_digest", weights_digest(model))
checks.record("shard_fit_updates", int(model.optimizer.iterations.numpy()))
model = mlp(seed=6)
agent = hvdagent.DistributedAgent(model, scale_lr=False)
agent.compile(keras.optimizers.SGD(0.05), loss="mse")
agent.fit(pairs.batch(8), epochs=1, verbose=0)  # a user's batched dataset: split by batches
checks.record("batched_fit_digest", weights_digest(model))
checks.record("batched_fit_updates", int(model.optimizer.iterations.numpy()))

# Horovod's recipe with hvdagent's building blocks: model.compile with a
# DistributedOptimizer, model.fit on this rank's shard, the public callbacks.
from hvdagent.callbacks import BroadcastGlobalVariablesCallback, LearningRateWarmupCallback, MetricAverageCallback  # noqa: E402

model = mlp(seed=10 + rank)  # different starts: the broadcast must fix that
model.compile(optimizer=hvdagent.DistributedOptimizer(keras.optimizers.SGD(0.01 * size)), loss="mse", metrics=["mae"])
history = model.fit(x[rank::size], y[rank::size], batch_size=16, epochs=3, verbose=0, callbacks=[
    BroadcastGlobalVariablesCallback(0), MetricAverageCallback(),
    LearningRateWarmupCallback(initial_lr=0.01 * size, warmup_epochs=1)])
checks.record("recipe_digest", weights_digest(model))
checks.record("recipe_history", {k: [float(v) for v in vals] for k, vals in history.history.items()})
checks.record("recipe_lr", float(np.asarray(model.optimizer.learning_rate)))

# Output hygiene: verbose progress bar, and file writers, on rank 0 only.
model = mlp(seed=4, outputs=2, activation="softmax")
agent = hvdagent.DistributedAgent(model)
agent.compile(keras.optimizers.Adam(1e-2), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
shared = os.path.join(out_dir, "shared")
print(f"HYGIENE-START rank={rank}", flush=True)
agent.fit(x, labels, batch_size=32, epochs=2, verbose=1, validation_data=(x[:64], labels[:64]), callbacks=[
    keras.callbacks.ModelCheckpoint(os.path.join(shared, "ckpt-{epoch}.keras")),
    keras.callbacks.CSVLogger(os.path.join(shared, "log.csv")),
    keras.callbacks.TensorBoard(os.path.join(shared, "tb")),
])
print(f"HYGIENE-END rank={rank}", flush=True)
checks.record("pid", os.getpid())
checks.record("ok", True)
checks.finish()
