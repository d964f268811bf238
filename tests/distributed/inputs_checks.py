"""Every input kind `keras.Model.fit` accepts, under `horovodrun --gloo -np 2` (Keras 3 or tf_keras).

    horovodrun --gloo -np 2 python tests/distributed/inputs_checks.py OUT_DIR

Training at 2 ranks x batch B on a split input is compared with plain Keras in
one process at batch 2B on arrays (computed on every rank, without
collectives). Every rank writes OUT_DIR/results-<rank>.json;
tests/test_models_and_inputs.py asserts.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _worker import Checks, weights_digest  # noqa: E402

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import hvdagent  # noqa: E402
from hvdagent import _hvd  # noqa: E402
from hvdagent._data import inputs as _inputs

LEGACY = os.environ.get("TF_USE_LEGACY_KERAS") == "1"
if LEGACY:
    import tf_keras as keras  # noqa: E402

    BatchSource = keras.utils.Sequence
else:
    import keras  # noqa: E402

    BatchSource = keras.utils.PyDataset

checks = Checks(sys.argv[1])
rank, size = checks.rank, checks.size
rng = np.random.default_rng(3)
N, B = 128, 8
x = rng.normal(size=(N, 5)).astype("float32")
y = (x @ rng.normal(size=(5, 2))).astype("float32")
labels = (x[:, 1] > 0).astype("int64")


def mlp(seed=1):
    keras.utils.set_random_seed(seed)
    return keras.Sequential([keras.Input((5,)), keras.layers.Dense(8, activation="tanh"), keras.layers.Dense(2)])


def agent_and_reference(seed=1):
    a, b = mlp(seed), mlp(seed)
    agent = hvdagent.DistributedAgent(a, scale_lr=False)
    agent.compile(keras.optimizers.SGD(0.05), loss="mse")
    b.compile(keras.optimizers.SGD(0.05), loss="mse")
    return agent, a, b


def max_diff(a, b):
    return max(float(np.max(np.abs(u - v))) for u, v in zip(a.get_weights(), b.get_weights()))


def compare(name, fit_input, steps=None, **fit_kwargs):
    """Train on ``fit_input`` (consecutive batches of B); the reference trains on arrays at 2B."""
    agent, a, b = agent_and_reference()
    agent.fit(fit_input, epochs=2, verbose=0, steps_per_epoch=steps, **fit_kwargs)
    used = (steps or N // (B * size)) * B * size  # samples per epoch: steps x global batch
    b.fit(x[:used], y[:used], batch_size=B * size, epochs=2, shuffle=False, verbose=0)
    checks.record(f"{name}_diff", max_diff(a, b))
    checks.record(f"{name}_digest", weights_digest(a))
    checks.record(f"{name}_updates", int(a.optimizer.iterations.numpy()))


# 1. A Python generator with steps_per_epoch (every rank's generator yields the same stream).
def batches_forever():
    while True:
        for i in range(0, N, B):
            yield x[i:i + B], y[i:i + B]


compare("generator", batches_forever(), steps=N // (B * size))


# 2. A PyDataset (tf_keras: Sequence): rank r loads batches r, r+2, ...
class Batches(BatchSource):
    def __init__(self):
        super().__init__()
        self.loaded = []

    def __len__(self):
        return N // B

    def __getitem__(self, i):
        self.loaded.append(i)
        return x[i * B:(i + 1) * B], y[i * B:(i + 1) * B]


source = Batches()
compare("pydataset", source)
checks.record("pydataset_loaded", sorted(set(source.loaded)))

# 3. An infinite tf.data dataset with steps_per_epoch.
compare("infinite_dataset", tf.data.Dataset.from_tensor_slices((x, y)).batch(B).repeat(), steps=N // (B * size))

# 4. validation_split: the last 25% of the arrays (before shuffling), as in Keras.
agent, a, b = agent_and_reference()
h = agent.fit(x, y, batch_size=B, epochs=1, validation_split=0.25, shuffle=False, verbose=0)
b.fit(x[:96], y[:96], batch_size=B * size, epochs=1, shuffle=False, verbose=0)
checks.record("validation_split_diff", max_diff(a, b))
checks.record("validation_split_val_loss", float(h.history["val_loss"][0]))
checks.record("validation_split_val_loss_single", float(a.evaluate(x[96:], y[96:], verbose=0)))

# 5. validation_data as a batched dataset; evaluate on a PyDataset.
h = agent.fit(x, y, batch_size=B, epochs=1, validation_data=tf.data.Dataset.from_tensor_slices((x[:70], y[:70])).batch(16),
              verbose=0)
checks.record("val_dataset_loss", float(h.history["val_loss"][0]))
checks.record("val_dataset_loss_single", float(a.evaluate(x[:70], y[:70], verbose=0)))
checks.record("eval_pydataset", float(agent.evaluate(Batches(), verbose=0)))
checks.record("eval_arrays_single", float(a.evaluate(x, y, verbose=0)))

# 6. predict on a dataset and a PyDataset: every rank gets all outputs, in order.
expected = a.predict(x[:75], verbose=0)
pred = agent.predict(tf.data.Dataset.from_tensor_slices(x[:75]).batch(8), verbose=0)
checks.record("predict_dataset_diff", float(np.max(np.abs(pred - expected))))
checks.record("predict_dataset_shape", list(pred.shape))
pred = agent.predict(Batches(), verbose=0)
checks.record("predict_pydataset_diff", float(np.max(np.abs(pred - a.predict(x, verbose=0)))))

# 7. Pipelines with unseeded shuffles (keras-io's structured-data and text examples):
# every rank iterates them in the same order, so the split is a partition.
ids = tf.data.Dataset.range(100).shuffle(100).batch(8)
mine = _inputs.prepare(ids)
epochs = [sorted(int(v) for b in mine for v in b.numpy()) for _ in range(2)]
orders = [[int(v) for b in mine for v in b.numpy()] for _ in range(2)]
checks.record("unseeded_epochs", _hvd.allgather_object(epochs))
checks.record("unseeded_orders_differ", orders[0] != orders[1])
keras.utils.set_random_seed(9)
clf = keras.Sequential([keras.Input((5,)), keras.layers.Dense(2, activation="softmax")])
agent = hvdagent.DistributedAgent(clf)
agent.compile("adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
train_ds = tf.data.Dataset.from_tensor_slices((x, labels)).shuffle(buffer_size=N).batch(16)
val_ds = tf.data.Dataset.from_tensor_slices((x[:90], labels[:90])).shuffle(buffer_size=90).batch(16)
agent.fit(train_ds, epochs=2, validation_data=val_ds, verbose=0)
checks.record("unseeded_eval", agent.evaluate(val_ds, return_dict=True, verbose=0))
checks.record("unseeded_eval_single", clf.evaluate(x[:90], labels[:90], return_dict=True, verbose=0))
checks.record("unseeded_digest", weights_digest(clf))

# 7b. A dataset split by shard_dataset, transformed afterwards (map, batch, prefetch): the agent
# knows it is split already, so every sample is seen exactly once per epoch (65 samples: uneven).
class Count(keras.metrics.Metric):
    def __init__(self, name="count", **kwargs):
        super().__init__(name=name, **kwargs)
        self.n = self.add_weight(name="n", shape=(), initializer="zeros")

    def update_state(self, y_true, y_pred, sample_weight=None):
        self.n.assign_add(tf.cast(tf.shape(y_true)[0], self.n.dtype))

    def result(self):
        return self.n


def as_pair(i):
    v = tf.cast(tf.reshape(i, [1]), tf.float32)
    return v, v


zero = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1, kernel_initializer="zeros")])
agent = hvdagent.DistributedAgent(zero)
agent.compile(keras.optimizers.SGD(0.0), loss="mse", metrics=[Count()])
M = 65
pipelines = {
    "elements_map_batch": lambda: hvdagent.shard_dataset(tf.data.Dataset.range(M), shuffle=False)
    .map(as_pair).batch(4).prefetch(1),
    "batched_then_map": lambda: hvdagent.shard_dataset(tf.data.Dataset.range(M).map(as_pair), batch_size=4,
                                                       shuffle=False).map(lambda u, v: (u * 1.0, v)),
    "shuffled_map_batch": lambda: hvdagent.shard_dataset(tf.data.Dataset.range(M), seed=3).map(as_pair).batch(4),
}
for name, make in pipelines.items():
    h = agent.fit(make(), epochs=2, verbose=0)
    checks.record(f"resplit_{name}_fit_count", [float(c) for c in h.history["count"]])
    checks.record(f"resplit_{name}_fit_loss", [float(v) for v in h.history["loss"]])
    checks.record(f"resplit_{name}_eval", agent.evaluate(make(), return_dict=True, verbose=0))
checks.record("resplit_expected_loss", float(np.mean(np.arange(M, dtype="float64") ** 2)))

# 8. Bad input: named, on every rank.
agent, a, b = agent_and_reference()
checks.expect_error("generator_without_steps", ValueError, agent.fit, batches_forever(), epochs=1, verbose=0)
checks.expect_error("infinite_without_steps", ValueError, agent.fit,
                    tf.data.Dataset.from_tensor_slices((x, y)).batch(B).repeat(), epochs=1, verbose=0)
checks.expect_error("split_with_dataset", ValueError, agent.fit,
                    tf.data.Dataset.from_tensor_slices((x, y)).batch(B), validation_split=0.2, verbose=0)
checks.expect_error("y_with_dataset", ValueError, agent.fit, tf.data.Dataset.from_tensor_slices((x, y)).batch(B), y)
# 9. Data order. keras.utils.*_dataset_from_directory with the default shuffle=True, seed=None draw their seed from
# NumPy's global generator, which `import hvdagent` seeds alike on every rank: a partition, exact evaluate.
import random  # noqa: E402
import time  # noqa: E402

from hvdagent._data import order  # noqa: E402

WORDS = ["good", "great", "fine", "bad", "awful", "poor", "movie", "plot"]
text_root = checks.out / "texts"
if rank == 0:
    words_rng = np.random.default_rng(5)
    for i in range(100):
        label = i % 2
        folder = text_root / ("pos" if label else "neg")
        folder.mkdir(parents=True, exist_ok=True)
        pool = WORDS[:3] if label else WORDS[3:6]
        (folder / f"{i}.txt").write_text(" ".join(words_rng.choice(pool + WORDS[6:], size=6)) + f" doc{i}")
_hvd.barrier()  # rank 0 wrote the files


def featurize(text, label):
    tokens = tf.strings.split(text)
    counts = [tf.reduce_sum(tf.cast(tf.equal(tokens, w), tf.float32), axis=-1) for w in WORDS[:6]]
    return tf.stack(counts, axis=-1), label


texts = keras.utils.text_dataset_from_directory(str(text_root), batch_size=8)  # 13 batches: uneven at 2 ranks
mine = _inputs.prepare(texts)
seen = sorted(t.decode().split()[-1] for b in mine for t in b[0].numpy())
checks.record("textdir_seen", _hvd.allgather_object(seen))
keras.utils.set_random_seed(4)
text_model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(2, activation="softmax")])
agent = hvdagent.DistributedAgent(text_model)
agent.compile(keras.optimizers.Adam(0.05), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
features = texts.map(featurize)
agent.fit(features, epochs=3, validation_data=features, verbose=0)
checks.record("textdir_eval", agent.evaluate(features, return_dict=True, verbose=0))
all_x, all_y = (np.concatenate(parts) for parts in zip(*[(f.numpy(), y.numpy()) for f, y in features]))
checks.record("textdir_eval_single", text_model.evaluate(all_x, all_y, batch_size=8, return_dict=True, verbose=0))
checks.record("textdir_digest", weights_digest(text_model))

# Random augmentation inside the pipeline (Keras' random layers, seeded per process): the same order on every
# rank but different pixels; the check compares labels, so it does not fire.
image_root = checks.out / "images"
if rank == 0:
    pixels = np.random.default_rng(6)
    for i in range(40):
        folder = image_root / "abc"[i % 3]
        folder.mkdir(parents=True, exist_ok=True)
        tf.io.write_file(str(folder / f"{i}.png"), tf.io.encode_png((pixels.uniform(size=(8, 8, 3)) * 255).astype("uint8")))
_hvd.barrier()
images = keras.utils.image_dataset_from_directory(str(image_root), batch_size=8, image_size=(8, 8))
random.seed(rank)  # Keras 3's random layers draw their seeds from Python's generator,
tf.random.set_seed(rank)  # tf_keras' from TensorFlow's: each rank its own augmentation (as without set_random_seed)
flip = keras.Sequential([keras.layers.RandomFlip("horizontal_and_vertical"), keras.layers.RandomRotation(0.2)])
augmented = images.map(lambda u, v: (flip(u, training=True), v))
first_pixels = next(iter(augmented))[0].numpy()
checks.record("augmented_pixels_differ", len(set(_hvd.allgather_object(first_pixels.tobytes()))) > 1)
checks.record("keras3", not LEGACY)
keras.utils.set_random_seed(5)
image_model = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Flatten(), keras.layers.Dense(3, activation="softmax")])
agent = hvdagent.DistributedAgent(image_model)
agent.compile("adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
start = time.perf_counter()
history = agent.fit(augmented, epochs=1, verbose=0)
checks.record("augmented_fit_seconds", time.perf_counter() - start)
checks.record("augmented_fit_loss", [float(v) for v in history.history["loss"]])
checks.record("imagedir_eval", agent.evaluate(images, return_dict=True, verbose=0))
all_x, all_y = (np.concatenate(parts) for parts in zip(*[(u.numpy(), v.numpy()) for u, v in images]))
checks.record("imagedir_eval_single", image_model.evaluate(all_x, all_y, batch_size=8, return_dict=True, verbose=0))
start = time.perf_counter()
order.first_batch_fingerprint(augmented)  # what the check adds to a fit: one batch (the collective is the count's)
checks.record("order_check_seconds", time.perf_counter() - start)

# Where the orders cannot agree, the agent refuses, naming the fix, on every rank.
agent, a, b = agent_and_reference()
per_rank = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(N, seed=rank).batch(B)  # purpose-built: a seed per rank
checks.expect_error("order_fit", ValueError, agent.fit, per_rank, epochs=1, verbose=0)
checks.expect_error("order_evaluate", ValueError, agent.evaluate, per_rank, verbose=0)
checks.expect_error("order_validation", ValueError, agent.fit, x, y, batch_size=B, epochs=1, verbose=0,
                    validation_data=per_rank)
checks.expect_error("order_predict", ValueError, agent.predict,
                    tf.data.Dataset.from_tensor_slices(x).shuffle(N, seed=rank).batch(B), verbose=0)
checks.record("order_untouched", int(a.optimizer.iterations.numpy()))  # nothing trained before the errors
user_split = tf.data.Dataset.from_tensor_slices((x, y)).batch(B).shard(size, rank)  # Horovod-style, by the user
checks.expect_error("order_user_split", ValueError, agent.fit, user_split, epochs=1, verbose=0)
h = agent.fit(user_split, epochs=1, verbose=0, shard=False)  # what the error says: each rank's own data
checks.record("order_user_split_shard_false", int(a.optimizer.iterations.numpy()))
checks.expect_error("order_arrays", ValueError, agent.fit, x + rank, y, batch_size=B, epochs=1, verbose=0)
checks.expect_error("order_predict_arrays", ValueError, agent.predict, x + rank, verbose=0)


def own_stream():  # each rank's generator starts at its own offset
    while True:
        for i in range(rank * B, N, B):
            yield x[i:i + B], y[i:i + B]


checks.expect_error("order_generator", ValueError, agent.fit, own_stream(), steps_per_epoch=4, epochs=1, verbose=0)

checks.record("ok", True)
checks.finish()
