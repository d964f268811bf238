"""Every kind of model Keras users write, under `horovodrun --gloo -np 2` (Keras 3).

    horovodrun --gloo -np 2 python tests/distributed/models_checks.py OUT_DIR

Each case trains at 2 ranks x batch B and is compared with plain Keras in one
process at batch 2B (computed on every rank, without collectives). Every rank
writes OUT_DIR/results-<rank>.json; tests/test_models_and_inputs.py asserts.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _worker import Checks, weights_digest  # noqa: E402

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import hvdagent  # noqa: E402
import keras  # noqa: E402

checks = Checks(sys.argv[1])
out_dir = sys.argv[1]
rank, size = checks.rank, checks.size
rng = np.random.default_rng(11)
x = rng.normal(size=(128, 6)).astype("float32")
y = (x @ rng.normal(size=(6, 2))).astype("float32")
B = 8


def max_diff(a, b):
    return max(float(np.max(np.abs(u - v))) for u, v in zip(a.get_weights(), b.get_weights()))


def pair(build, compile_kwargs, seed=1):
    """The same model twice: one for the agent, one plain single-process reference."""
    keras.utils.set_random_seed(seed)
    a = build()
    keras.utils.set_random_seed(seed)
    b = build()
    return a, b


# 1. A custom train_step returning its own dict of losses, fed x only (an autoencoder, as keras-io's VAE).
class AutoEncoder(keras.Model):
    def __init__(self):
        super().__init__()
        self.enc = keras.layers.Dense(3, activation="tanh")
        self.dec = keras.layers.Dense(6)
        self.total = keras.metrics.Mean(name="total_loss")
        self.rec = keras.metrics.Mean(name="reconstruction_loss")

    @property
    def metrics(self):
        return [self.total, self.rec]

    def call(self, inputs):
        return self.dec(self.enc(inputs))

    def train_step(self, data):
        with tf.GradientTape() as tape:
            code = self.enc(data)
            rec = tf.reduce_mean(tf.square(self.dec(code) - data))
            loss = rec + 0.01 * tf.reduce_mean(tf.square(code))
        grads = tape.gradient(loss, self.trainable_weights)
        self.optimizer.apply(grads, self.trainable_weights)
        self.total.update_state(loss)
        self.rec.update_state(rec)
        return {"total_loss": self.total.result(), "reconstruction_loss": self.rec.result()}


a, b = pair(AutoEncoder, {})
agent = hvdagent.DistributedAgent(a, scale_lr=False)
agent.compile(keras.optimizers.SGD(0.1))
b.compile(keras.optimizers.SGD(0.1))
ha = agent.fit(x, batch_size=B, epochs=2, shuffle=False, verbose=0)
hb = b.fit(x, batch_size=B * size, epochs=2, shuffle=False, verbose=0)
checks.record("custom_step_diff", max_diff(a, b))
checks.record("custom_step_digest", weights_digest(a))
checks.record("custom_step_history", {k: [float(v) for v in ha.history[k]] for k in sorted(ha.history)})
checks.record("custom_step_history_single", {k: [float(v) for v in hb.history[k]] for k in sorted(hb.history)})
# With uneven data (101 samples: rank 1 gets an empty last batch) it still agrees across ranks.
agent.fit(x[:101], batch_size=B, epochs=1, verbose=0)
checks.record("custom_step_uneven_digest", weights_digest(a))


# 2. A subclassed model built lazily on the first batch, and a Sequential without Input.
class Lazy(keras.Model):
    def __init__(self):
        super().__init__()
        self.d1 = keras.layers.Dense(8, activation="relu")
        self.d2 = keras.layers.Dense(2)

    def call(self, inputs):
        return self.d2(self.d1(inputs))


for name, build in (("lazy_subclassed", Lazy),
                    ("sequential_no_input", lambda: keras.Sequential([keras.layers.Dense(8, activation="relu"),
                                                                      keras.layers.Dense(2)]))):
    keras.utils.set_random_seed(100 + rank)  # different starts: the broadcast must fix that
    a = build()
    agent = hvdagent.DistributedAgent(a, scale_lr=False)
    agent.compile(keras.optimizers.Adam(1e-2), loss="mse")
    agent.fit(x, y, batch_size=B, epochs=2, verbose=0)
    checks.record(f"{name}_digest", weights_digest(a))
    checks.record(f"{name}_updates", int(a.optimizer.iterations.numpy()))

# 3. Multi-output model with two losses and loss weights.
def two_heads():
    inp = keras.Input((6,))
    h = keras.layers.Dense(8, activation="tanh")(inp)
    return keras.Model(inp, {"reg": keras.layers.Dense(2, name="reg")(h),
                             "cls": keras.layers.Dense(2, activation="softmax", name="cls")(h)})


labels = (x[:, 0] > 0).astype("int64")
a, b = pair(two_heads, {})
for m in (a, b):
    m.compile(keras.optimizers.SGD(0.05), loss={"reg": "mse", "cls": "sparse_categorical_crossentropy"},
              loss_weights={"reg": 1.0, "cls": 0.5}, metrics={"cls": ["accuracy"]})
agent = hvdagent.DistributedAgent(a, scale_lr=False)
targets = {"reg": y, "cls": labels}
ha = agent.fit(x, targets, batch_size=B, epochs=2, shuffle=False, verbose=0)
hb = b.fit(x, targets, batch_size=B * size, epochs=2, shuffle=False, verbose=0)
checks.record("multi_output_diff", max_diff(a, b))
checks.record("multi_output_history", {k: [float(v) for v in ha.history[k]] for k in sorted(ha.history)})
checks.record("multi_output_history_single", {k: [float(v) for v in hb.history[k]] for k in sorted(hb.history)})
checks.record("multi_output_eval", agent.evaluate(x[:77], {"reg": y[:77], "cls": labels[:77]}, return_dict=True, verbose=0))
checks.record("multi_output_eval_single", b.evaluate(x[:77], {"reg": y[:77], "cls": labels[:77]}, return_dict=True, verbose=0))

# 4. Mixed precision: mixed_float16 (Keras adds a LossScaleOptimizer) and mixed_bfloat16.
for policy in ("mixed_float16", "mixed_bfloat16"):
    keras.mixed_precision.set_global_policy(policy)
    keras.utils.set_random_seed(200 + rank)
    a = keras.Sequential([keras.Input((6,)), keras.layers.Dense(8, activation="relu"),
                          keras.layers.Dense(2, dtype="float32")])
    agent = hvdagent.DistributedAgent(a)
    agent.compile(keras.optimizers.Adam(1e-2), loss="mse")
    h = agent.fit(x, y, batch_size=B, epochs=2, verbose=0)
    checks.record(f"{policy}_digest", weights_digest(a))
    checks.record(f"{policy}_loss", [float(v) for v in h.history["loss"]])
    checks.record(f"{policy}_optimizer", [type(a.optimizer.outer_optimizer()).__name__, type(a.optimizer.inner_optimizer).__name__])
    if policy == "mixed_float16":
        agent.save(os.path.join(out_dir, "mixed.keras"))
        if rank == 0:  # the same model saved by plain Keras, for the file layout
            keras.utils.set_random_seed(200)
            plain = keras.Sequential([keras.Input((6,)), keras.layers.Dense(8, activation="relu"),
                                      keras.layers.Dense(2, dtype="float32")])
            plain.compile(keras.optimizers.Adam(1e-2), loss="mse")
            plain.fit(x, y, batch_size=B, epochs=1, verbose=0)
            plain.save(os.path.join(out_dir, "mixed_plain.keras"))
keras.mixed_precision.set_global_policy("float32")

# 5. BatchNormalization: moving statistics identical on every rank after fit (averaged at
# every epoch end), so evaluate/predict/save see one model; equal to rank 0's own evaluate.
keras.utils.set_random_seed(5)
bn = keras.Sequential([keras.Input((6,)), keras.layers.Dense(8), keras.layers.BatchNormalization(),
                       keras.layers.Dense(2)])
agent = hvdagent.DistributedAgent(bn)
agent.compile(keras.optimizers.Adam(1e-2), loss="mse")
agent.fit(x, y, batch_size=B, epochs=2, verbose=0)
stats = [v.numpy() for v in bn.non_trainable_variables if "moving" in v.path]
checks.record("bn_stats", [s.tolist() for s in stats])
checks.record("bn_eval", agent.evaluate(x, y, return_dict=True, verbose=0)["loss"])
checks.record("bn_eval_local", bn.evaluate(x, y, return_dict=True, verbose=0)["loss"])

# 5b. Synchronized BatchNormalization: 2 ranks at batch B normalise like 1 process at 2B.
def sync_bn_model():
    return keras.Sequential([keras.Input((6,)), keras.layers.Dense(8), hvdagent.SyncBatchNormalization(),
                             keras.layers.Dense(2)])


a, b = pair(sync_bn_model, {})
agent = hvdagent.DistributedAgent(a, scale_lr=False)
agent.compile(keras.optimizers.SGD(0.05), loss="mse")
b.compile(keras.optimizers.SGD(0.05), loss="mse")  # one process: Keras' own synchronized BN is local
agent.fit(x, y, batch_size=B, epochs=2, shuffle=False, verbose=0)
b.fit(x, y, batch_size=B * size, epochs=2, shuffle=False, verbose=0)
checks.record("sync_bn_diff", max_diff(a, b))  # weights and moving statistics
checks.record("sync_bn_digest", weights_digest(a))
checks.expect_error("sync_bn_uneven", ValueError, agent.fit, x[:17], y[:17], batch_size=B, epochs=1, verbose=0)

# 6. ModelCheckpoint of whole models during agent.fit: a plain file (checked in a fresh process).
keras.utils.set_random_seed(6)
m = keras.Sequential([keras.Input((6,)), keras.layers.Dense(2)])
agent = hvdagent.DistributedAgent(m)
agent.compile(keras.optimizers.Adam(1e-3), loss="mse")
agent.fit(x, y, batch_size=B, epochs=1, verbose=0,
          callbacks=[keras.callbacks.ModelCheckpoint(os.path.join(out_dir, "ckpt.keras"))])
if rank == 0:
    np.save(os.path.join(out_dir, "ckpt_expected.npy"), m.predict(x[:10], verbose=0))
    np.save(os.path.join(out_dir, "ckpt_x.npy"), x[:10])
resumed = hvdagent.DistributedAgent.load(os.path.join(out_dir, "ckpt.keras"))
resumed.fit(x, y, batch_size=B, epochs=1, verbose=0)
checks.record("ckpt_resumed_updates", int(resumed.model.optimizer.iterations.numpy()))
checks.record("ckpt_resumed_digest", weights_digest(resumed.model))
checks.record("ok", True)
checks.finish()
