"""Every rank, every step, under `horovodrun --gloo -np 2` (Keras 3 or tf_keras).

    horovodrun --gloo -np 2 python tests/distributed/steps_checks.py OUT_DIR

Every rank issues the same collectives whatever its batch holds (sparse
gradients and several optimizers on uneven data, where one rank's last batch
is empty); a custom compile with several optimizers and no call(); keras-io's
GAN and VAE as published (Keras 3); XLA; the replica check. Each case at 2
ranks is compared with plain Keras in one process at the global batch
(computed on every rank, without collectives) or with an exact one-process
simulation of the two ranks. Every rank writes OUT_DIR/results-<rank>.json;
tests/test_steps.py asserts.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _worker import Checks, weights_digest  # noqa: E402

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import hvdagent  # noqa: E402
from hvdagent._sync.parts import parts_of  # noqa: E402
from hvdagent._sync.replicas import check_replicas  # noqa: E402

LEGACY = os.environ.get("TF_USE_LEGACY_KERAS") == "1"
if LEGACY:
    import tf_keras as keras  # noqa: E402
else:
    import keras  # noqa: E402

checks = Checks(sys.argv[1])
rank, size = checks.rank, checks.size
rng = np.random.default_rng(7)
N = 65  # at batch 8 (or 32) per rank, rank 1's last batch is empty


def max_diff(a, b):
    return max(float(np.max(np.abs(u.numpy() - v.numpy()))) for u, v in zip(a.trainable_weights, b.trainable_weights))


def trained_digest(model):
    """The trainable weights' hash (tf_keras also counts a model's metric trackers as its weights)."""
    import hashlib

    return hashlib.sha256(b"".join(v.numpy().tobytes() for v in model.trainable_weights)).hexdigest()


def history(h):
    return {k: [float(v) for v in h.history[k]] for k in sorted(h.history)}


# 1. Sparse gradients on uneven data, without sparse_as_dense: two Embeddings
# (two IndexedSlices gradients), numpy input and a batched dataset.
V, T = 40, 5
tokens = rng.integers(0, V, size=(N, T)).astype("int32")
target = rng.normal(size=(N, 1)).astype("float32")


def text_model():
    keras.utils.set_random_seed(3)
    inp = keras.Input((T,), dtype="int32")
    pooled = [keras.layers.GlobalAveragePooling1D()(keras.layers.Embedding(V, d)(inp)) for d in (4, 3)]
    model = keras.Model(inp, keras.layers.Dense(1)(keras.layers.Concatenate()(pooled)))
    model.compile(keras.optimizers.Adam(1e-2), loss="mse", metrics=["mae"])
    return model


a, b = text_model(), text_model()
agent = hvdagent.DistributedAgent(a, scale_lr=False, stall_timeout=60)  # a hang ends in a minute
ha = agent.fit(tokens, target, batch_size=32, epochs=2, shuffle=False, verbose=0)
hb = b.fit(tokens, target, batch_size=64, epochs=2, shuffle=False, verbose=0)
checks.record("embedding_numpy_diff", max_diff(a, b))
checks.record("embedding_numpy_weights", [w.tolist() for w in a.get_weights()])
checks.record("embedding_numpy_history", history(ha))
checks.record("embedding_numpy_history_single", history(hb))
checks.record("embedding_numpy_updates", int(a.optimizer.iterations.numpy()))

batches = tf.data.Dataset.from_tensor_slices((tokens, target)).batch(13)  # 5 batches: 3 on rank 0, 2 on rank 1
a, b = text_model(), text_model()
agent = hvdagent.DistributedAgent(a, scale_lr=False, stall_timeout=60)
ha = agent.fit(batches, epochs=1, verbose=0)
pairs = [(np.concatenate([tokens[i:i + 13], tokens[i + 13:i + 26]]), np.concatenate([target[i:i + 13], target[i + 13:i + 26]]))
         for i in range(0, N, 26)]  # the global batches: 26, 26, 13
hb = b.fit(tf.data.Dataset.from_generator(lambda: iter(pairs), output_signature=(
    tf.TensorSpec([None, T], tf.int32), tf.TensorSpec([None, 1], tf.float32))), epochs=1, verbose=0)
checks.record("embedding_dataset_diff", max_diff(a, b))
checks.record("embedding_dataset_weights", [w.tolist() for w in a.get_weights()])
checks.record("embedding_dataset_history", history(ha))
checks.record("embedding_dataset_history_single", history(hb))


# 2. A custom compile with two optimizers, no call(), fitted on x only: the shape of
# keras-io's GAN without its randomness (the second update goes through the first's
# result), so it can be compared exactly with one process at the global batch.
class TwoOptimizers(keras.Model):
    def __init__(self):
        super().__init__()
        self.encoder = keras.Sequential([keras.Input((6,)), keras.layers.Dense(3, activation="tanh")])
        self.decoder = keras.Sequential([keras.Input((3,)), keras.layers.Dense(6)])
        self.decoder_tracker = keras.metrics.Mean(name="decoder_loss")
        self.encoder_tracker = keras.metrics.Mean(name="encoder_loss")

    @property
    def metrics(self):
        return [self.decoder_tracker, self.encoder_tracker]

    def compile(self, decoder_optimizer, encoder_optimizer, loss_fn):
        super().compile()
        self.decoder_optimizer = decoder_optimizer
        self.encoder_optimizer = encoder_optimizer
        self.loss_fn = loss_fn

    def train_step(self, x):
        with tf.GradientTape() as tape:
            decoder_loss = self.loss_fn(x, self.decoder(self.encoder(x)))
        grads = tape.gradient(decoder_loss, self.decoder.trainable_weights)
        self.decoder_optimizer.apply_gradients(zip(grads, self.decoder.trainable_weights))
        with tf.GradientTape() as tape:
            encoder_loss = self.loss_fn(x, self.decoder(self.encoder(x)))
        grads = tape.gradient(encoder_loss, self.encoder.trainable_weights)
        self.encoder_optimizer.apply_gradients(zip(grads, self.encoder.trainable_weights))
        n = tf.shape(x)[0]
        self.decoder_tracker.update_state(decoder_loss, sample_weight=n)
        self.encoder_tracker.update_state(encoder_loss, sample_weight=n)
        return {"decoder_loss": self.decoder_tracker.result(), "encoder_loss": self.encoder_tracker.result()}


def two_optimizers(seed=4):
    keras.utils.set_random_seed(seed)
    return TwoOptimizers()


def two_optimizer_args():
    return dict(decoder_optimizer=keras.optimizers.SGD(0.1, momentum=0.5),
                encoder_optimizer=keras.optimizers.Adam(1e-2), loss_fn=keras.losses.MeanSquaredError())


xs = rng.normal(size=(N, 6)).astype("float32")
a, b = two_optimizers(), two_optimizers()
agent = hvdagent.DistributedAgent(a, scale_lr=False)
agent.compile(**two_optimizer_args())  # the custom signature passes through
b.compile(**two_optimizer_args())
ha = agent.fit(xs, batch_size=8, epochs=2, shuffle=False, verbose=0)
hb = b.fit(xs, batch_size=16, epochs=2, shuffle=False, verbose=0)
checks.record("two_optimizers_diff", max_diff(a, b))
checks.record("two_optimizers_digest", trained_digest(a))
checks.record("two_optimizers_history", history(ha))
checks.record("two_optimizers_history_single", history(hb))
checks.record("two_optimizers_distributed", [parts_of(o) is not None for o in (a.optimizer, a.decoder_optimizer,
                                                                                a.encoder_optimizer)])
checks.record("two_optimizers_updates", [int(o.iterations.numpy()) for o in (a.decoder_optimizer, a.encoder_optimizer)])
checks.record("two_optimizers_tags", [parts_of(o).sync.tag for o in (a.optimizer, a.decoder_optimizer,
                                                                     a.encoder_optimizer)])
# Compiled first, then wrapped: the same route.
c = two_optimizers()
c.compile(**two_optimizer_args())
hvdagent.DistributedAgent(c, scale_lr=False).fit(xs, batch_size=8, epochs=2, shuffle=False, verbose=0)
checks.record("two_optimizers_precompiled_digest", trained_digest(c))


# 3. XLA (compile(jit_compile=True)): Keras' own step computes its gradients under XLA
# (the test's XLA_FLAGS dump the modules named hvdagent_gradients) and reduces them outside.
def mlp(jit):
    keras.utils.set_random_seed(5)
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(8, activation="tanh"), keras.layers.Dense(2)])
    model.compile(keras.optimizers.Adam(1e-2), loss="mse", metrics=["mae"], jit_compile=jit)
    return model


ys = (xs[:, :2] * 2 + 1).astype("float32")
a, b = mlp(True), mlp(True)
agent = hvdagent.DistributedAgent(a, scale_lr=False)
ha = agent.fit(xs, ys, batch_size=8, epochs=2, shuffle=False, verbose=0)
hb = b.fit(xs, ys, batch_size=16, epochs=2, shuffle=False, verbose=0)
checks.record("xla_jit_compile", bool(a.jit_compile))
checks.record("xla_diff", max_diff(a, b))
checks.record("xla_digest", weights_digest(a))
checks.record("xla_history", history(ha))
checks.record("xla_history_single", history(hb))
checks.record("xla_eval", agent.evaluate(xs, ys, batch_size=8, return_dict=True, verbose=0))
checks.record("xla_eval_single", b.evaluate(xs, ys, batch_size=16, return_dict=True, verbose=0))
c = two_optimizers()
c.compile(**two_optimizer_args())
c.jit_compile = True
checks.expect_error("xla_custom_step", ValueError, hvdagent.DistributedAgent(c).fit, xs, batch_size=8, verbose=0)


# 4. The replica check and the refusal of optimizers the agent does not know.
class Drift(keras.layers.Layer):
    """A layer with per-rank state: it moves its (trainable) weight towards this rank's data."""

    def build(self, shape):
        self.scale = self.add_weight(name="scale", shape=(), initializer="ones")

    def call(self, x, training=False):
        if training:
            self.scale.assign(0.5 * self.scale + 0.5 * tf.reduce_mean(tf.abs(x)))
        return x * self.scale


def drifting(check):
    keras.utils.set_random_seed(6)
    model = keras.Sequential([keras.Input((6,)), Drift(), keras.layers.Dense(2)])
    agent = hvdagent.DistributedAgent(model, check_replicas=check)
    agent.compile(keras.optimizers.SGD(0.05), loss="mse")
    return agent, model


for check in ("epoch", "end"):
    agent, _ = drifting(check)
    checks.expect_error(f"guard_{check}", hvdagent.ReplicaDivergenceError, agent.fit, xs, ys, batch_size=8, epochs=2,
                        verbose=0)
agent, model = drifting(None)
agent.fit(xs, ys, batch_size=8, epochs=1, verbose=0)
checks.record("guard_off_scale", float(model.layers[0].scale.numpy()))  # differs by rank: nothing checked

keras.utils.set_random_seed(8)
model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(2)])
hvdagent.DistributedAgent(model).compile("sgd", "mse")
bias = model.layers[-1].bias
base = bias.numpy()
bias.assign(base + 1e-9 * rank)  # a few 1e-9, like sparse updates on CPU: accepted
checks.expect_error("guard_tiny", Exception, check_replicas, model.trainable_variables, 1e-6, "in the test")
bias.assign(base + 1e-3 * rank)
checks.expect_error("guard_big", hvdagent.ReplicaDivergenceError, check_replicas, model.trainable_variables, 1e-6,
                    "in the test")
checks.expect_error("guard_big_tolerated", Exception, check_replicas, model.trainable_variables, 1e-2, "in the test")

hidden = keras.optimizers.SGD(0.1)  # an optimizer the model does not hold


class Hidden(keras.Model):
    def __init__(self):
        super().__init__()
        self.dense = keras.layers.Dense(2)

    def call(self, x):
        return self.dense(x)

    def train_step(self, data):
        x, y = data
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(self(x) - y))
        grads = tape.gradient(loss, self.trainable_variables)
        hidden.apply_gradients(zip(grads, self.trainable_variables))
        return {"loss": loss}


optimizer_class = keras.optimizers.Optimizer
before = dict(vars(optimizer_class))
agent = hvdagent.DistributedAgent(Hidden())
agent.compile("sgd", "mse")
checks.expect_error("undistributed_optimizer", ValueError, agent.fit, xs, ys, batch_size=8, verbose=0)
checks.record("optimizer_class_restored", dict(vars(optimizer_class)) == before)


# 5. keras-io's GAN and VAE as published (Keras 3: "Customizing what happens in fit()"
# and examples/generative/vae.py; the layer stacks smaller, 8x8 images), on uneven data.
if not LEGACY:
    from keras import layers, ops

    images = rng.uniform(size=(N, 8, 8, 1)).astype("float32")

    keras.utils.set_random_seed(100 + rank)  # different starts: the broadcast must fix that
    discriminator = keras.Sequential(
        [
            keras.Input(shape=(8, 8, 1)),
            layers.Conv2D(8, (3, 3), strides=(2, 2), padding="same"),
            layers.LeakyReLU(negative_slope=0.2),
            layers.GlobalMaxPooling2D(),
            layers.Dense(1),
        ],
        name="discriminator",
    )
    latent_dim = 8
    generator = keras.Sequential(
        [
            keras.Input(shape=(latent_dim,)),
            layers.Dense(4 * 4 * 8),
            layers.LeakyReLU(negative_slope=0.2),
            layers.Reshape((4, 4, 8)),
            layers.Conv2DTranspose(8, (4, 4), strides=(2, 2), padding="same"),
            layers.LeakyReLU(negative_slope=0.2),
            layers.Conv2D(1, (3, 3), padding="same", activation="sigmoid"),
        ],
        name="generator",
    )

    class GAN(keras.Model):
        def __init__(self, discriminator, generator, latent_dim):
            super().__init__()
            self.discriminator = discriminator
            self.generator = generator
            self.latent_dim = latent_dim
            self.d_loss_tracker = keras.metrics.Mean(name="d_loss")
            self.g_loss_tracker = keras.metrics.Mean(name="g_loss")
            self.seed_generator = keras.random.SeedGenerator(1337)

        @property
        def metrics(self):
            return [self.d_loss_tracker, self.g_loss_tracker]

        def compile(self, d_optimizer, g_optimizer, loss_fn):
            super().compile()
            self.d_optimizer = d_optimizer
            self.g_optimizer = g_optimizer
            self.loss_fn = loss_fn

        def train_step(self, real_images):
            if isinstance(real_images, tuple):
                real_images = real_images[0]
            # Sample random points in the latent space
            batch_size = tf.shape(real_images)[0]
            random_latent_vectors = keras.random.normal(shape=(batch_size, self.latent_dim), seed=self.seed_generator)
            # Decode them to fake images
            generated_images = self.generator(random_latent_vectors)
            # Combine them with real images
            combined_images = tf.concat([generated_images, real_images], axis=0)
            # Assemble labels discriminating real from fake images
            labels = tf.concat([tf.ones((batch_size, 1)), tf.zeros((batch_size, 1))], axis=0)
            # Add random noise to the labels - important trick!
            labels += 0.05 * keras.random.uniform(tf.shape(labels), seed=self.seed_generator)
            # Train the discriminator
            with tf.GradientTape() as tape:
                predictions = self.discriminator(combined_images)
                d_loss = self.loss_fn(labels, predictions)
            grads = tape.gradient(d_loss, self.discriminator.trainable_weights)
            self.d_optimizer.apply(grads, self.discriminator.trainable_weights)
            # Sample random points in the latent space
            random_latent_vectors = keras.random.normal(shape=(batch_size, self.latent_dim), seed=self.seed_generator)
            # Assemble labels that say "all real images"
            misleading_labels = tf.zeros((batch_size, 1))
            # Train the generator (note that we should *not* update the weights of the discriminator)!
            with tf.GradientTape() as tape:
                predictions = self.discriminator(self.generator(random_latent_vectors))
                g_loss = self.loss_fn(misleading_labels, predictions)
            grads = tape.gradient(g_loss, self.generator.trainable_weights)
            self.g_optimizer.apply(grads, self.generator.trainable_weights)
            # Update metrics and return their value.
            self.d_loss_tracker.update_state(d_loss)
            self.g_loss_tracker.update_state(g_loss)
            return {"d_loss": self.d_loss_tracker.result(), "g_loss": self.g_loss_tracker.result()}

    gan = GAN(discriminator=discriminator, generator=generator, latent_dim=latent_dim)
    agent = hvdagent.DistributedAgent(gan)
    agent.compile(
        d_optimizer=keras.optimizers.Adam(learning_rate=0.0003),
        g_optimizer=keras.optimizers.Adam(learning_rate=0.0003),
        loss_fn=keras.losses.BinaryCrossentropy(from_logits=True),
    )
    h = agent.fit(images, batch_size=8, epochs=2, verbose=0)
    checks.record("gan_digest", weights_digest(gan))
    checks.record("gan_history", history(h))
    checks.record("gan_updates", [int(o.iterations.numpy()) for o in (gan.d_optimizer, gan.g_optimizer)])
    checks.record("gan_optimizers", [type(o).__name__ for o in (gan.d_optimizer, gan.g_optimizer)])
    checks.record("gan_tags", [parts_of(o).sync.tag for o in (gan.d_optimizer, gan.g_optimizer)])

    class Sampling(layers.Layer):
        """Uses (z_mean, z_log_var) to sample z, the vector encoding a digit."""

        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.seed_generator = keras.random.SeedGenerator(1337)

        def call(self, inputs):
            z_mean, z_log_var = inputs
            batch = ops.shape(z_mean)[0]
            dim = ops.shape(z_mean)[1]
            epsilon = keras.random.normal(shape=(batch, dim), seed=self.seed_generator)
            return z_mean + ops.exp(0.5 * z_log_var) * epsilon

    def vae_parts():
        latent_dim = 2
        encoder_inputs = keras.Input(shape=(8, 8, 1))
        x = layers.Conv2D(8, 3, activation="relu", strides=2, padding="same")(encoder_inputs)
        x = layers.Flatten()(x)
        x = layers.Dense(16, activation="relu")(x)
        z_mean = layers.Dense(latent_dim, name="z_mean")(x)
        z_log_var = layers.Dense(latent_dim, name="z_log_var")(x)
        z = Sampling()([z_mean, z_log_var])
        encoder = keras.Model(encoder_inputs, [z_mean, z_log_var, z], name="encoder")
        latent_inputs = keras.Input(shape=(latent_dim,))
        x = layers.Dense(4 * 4 * 8, activation="relu")(latent_inputs)
        x = layers.Reshape((4, 4, 8))(x)
        decoder_outputs = layers.Conv2DTranspose(1, 3, activation="sigmoid", strides=2, padding="same")(x)
        decoder = keras.Model(latent_inputs, decoder_outputs, name="decoder")
        return encoder, decoder

    class VAE(keras.Model):
        def __init__(self, encoder, decoder, **kwargs):
            super().__init__(**kwargs)
            self.encoder = encoder
            self.decoder = decoder
            self.total_loss_tracker = keras.metrics.Mean(name="total_loss")
            self.reconstruction_loss_tracker = keras.metrics.Mean(name="reconstruction_loss")
            self.kl_loss_tracker = keras.metrics.Mean(name="kl_loss")

        @property
        def metrics(self):
            return [self.total_loss_tracker, self.reconstruction_loss_tracker, self.kl_loss_tracker]

        def train_step(self, data):
            with tf.GradientTape() as tape:
                z_mean, z_log_var, z = self.encoder(data)
                reconstruction = self.decoder(z)
                reconstruction_loss = ops.mean(
                    ops.sum(keras.losses.binary_crossentropy(data, reconstruction), axis=(1, 2))
                )
                kl_loss = -0.5 * (1 + z_log_var - ops.square(z_mean) - ops.exp(z_log_var))
                kl_loss = ops.mean(ops.sum(kl_loss, axis=1))
                total_loss = reconstruction_loss + kl_loss
            grads = tape.gradient(total_loss, self.trainable_weights)
            self.optimizer.apply_gradients(zip(grads, self.trainable_weights))
            self.total_loss_tracker.update_state(total_loss)
            self.reconstruction_loss_tracker.update_state(reconstruction_loss)
            self.kl_loss_tracker.update_state(kl_loss)
            return {
                "loss": self.total_loss_tracker.result(),
                "reconstruction_loss": self.reconstruction_loss_tracker.result(),
                "kl_loss": self.kl_loss_tracker.result(),
            }

    def vae(seed=9):
        keras.utils.set_random_seed(seed)
        model = VAE(*vae_parts())
        model.compile(optimizer=keras.optimizers.Adam())
        return model

    B = 8
    trained = vae()
    h = hvdagent.DistributedAgent(trained, scale_lr=False).fit(images, epochs=2, batch_size=B, shuffle=False, verbose=0)
    checks.record("vae_digest", weights_digest(trained))
    checks.record("vae_history", history(h))

    # The exact reference: one process runs the published train_step once per rank and
    # step (each rank's data, each rank's seed state), averages the gradients weighted
    # by batch size, as the ranks do, and applies them with the same optimizer.
    class Capture:
        def apply_gradients(self, pairs):
            self.grads = [g for g, _ in pairs]

    ref = vae()
    optimizer, capture = ref.optimizer, Capture()
    ref.optimizer = capture
    state = ref.non_trainable_variables  # the Sampling layer's seed state
    rank_state = [[v.numpy() for v in state] for _ in range(size)]
    shards = [images[r::size] for r in range(size)]
    for _ in range(2):
        for start in range(0, len(shards[0]), B):
            total, count = None, 0
            for r in range(size):
                batch = shards[r][start:start + B]
                if not len(batch):
                    continue  # an empty batch: no data, and the rank's seed state does not move
                for v, s in zip(state, rank_state[r]):
                    v.assign(s)
                ref.train_step(tf.constant(batch))
                rank_state[r] = [v.numpy() for v in state]
                weighted = [g * len(batch) for g in capture.grads]
                total = weighted if total is None else [t + w for t, w in zip(total, weighted)]
                count += len(batch)
            optimizer.apply([t / count for t in total], ref.trainable_weights)
    checks.record("vae_vs_simulation", max(float(np.max(np.abs(u - v))) for u, v in
                                           zip(trained.get_weights(), [w.numpy() for w in ref.weights])))
    checks.record("vae_weights_count", [len(trained.get_weights()), len(ref.weights)])

    # Synchronized BatchNormalization sums inside the forward pass: no XLA.
    sync_bn = keras.Sequential([keras.Input((6,)), hvdagent.SyncBatchNormalization(), keras.layers.Dense(2)])
    sync_bn.compile("sgd", "mse", jit_compile=True)
    checks.expect_error("xla_sync_bn", ValueError, hvdagent.DistributedAgent(sync_bn).fit, xs[:64], ys[:64],
                        batch_size=8, verbose=0)

checks.record("ok", True)
checks.finish()
