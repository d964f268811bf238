"""Horovod's TensorFlow 2 custom-loop MNIST recipe (examples/tensorflow2/tensorflow2_mnist.py)
with ``import hvdagent as hvd`` as the only Horovod change.

Written after Horovod 0.28.1's example, not copied: the same steps in the same
order (init, GPU pinning, a repeated and shuffled dataset, ``lr * size``, a
``tf.train.Checkpoint``, a ``tf.function`` step that wraps its
``tf.GradientTape`` in ``hvd.DistributedGradientTape`` and broadcasts the
model's and the optimizer's variables from rank 0 after the first step,
``steps // size`` steps, a checkpoint written by rank 0 to ``./checkpoints``).
Differences, for a test on 2 CPU cores without downloads: scikit-learn's
digits (8x8) stand in for MNIST, and the run is short (batches of 32, 120
steps in all; Horovod: 128 and 10000). One Keras 3 rename: the optimizer's
variables are the list ``opt.variables`` (Horovod's ``opt.variables()`` is the
tf_keras spelling; tf_keras accepts both, so this file runs on both).

Under hvdagent the unseeded ``shuffle`` iterates in the same order on every
rank (``import hvdagent`` sets TensorFlow's global seed alike on every rank,
see docs/data.md), so the ranks train on the same batches, with their own
dropout; under Horovod each rank draws its own order.

The instrumentation after the recipe (not part of it) checks the tapes'
arithmetic on a batch of each rank's own, against the mean numpy computes from
every rank's local gradients.

    horovodrun --gloo -np 2 python tests/horovod_recipes/tensorflow2_mnist.py   # writes ./checkpoints*
"""

import os

import numpy as np
import tensorflow as tf
from sklearn.datasets import load_digits

import hvdagent as hvd

from _recipe_checks import digest, report

STEPS, BATCH = 120, 32


def main():
    # Horovod: initialize Horovod.
    hvd.init()

    # Horovod: pin GPU to be used to process local rank (one GPU per process)
    gpus = tf.config.experimental.list_physical_devices("GPU")
    for gpu in gpus:
        tf.config.experimental.set_memory_growth(gpu, True)
    if gpus:
        tf.config.experimental.set_visible_devices(gpus[hvd.local_rank()], "GPU")

    digits = load_digits()  # stands in for tf.keras.datasets.mnist.load_data()
    mnist_images, mnist_labels = digits.images, digits.target

    dataset = tf.data.Dataset.from_tensor_slices(
        (tf.cast(mnist_images[..., tf.newaxis] / 16.0, tf.float32), tf.cast(mnist_labels, tf.int64))
    )
    dataset = dataset.repeat().shuffle(10000).batch(BATCH)

    mnist_model = tf.keras.Sequential([
        tf.keras.layers.Conv2D(32, [3, 3], activation="relu"),
        tf.keras.layers.Conv2D(64, [3, 3], activation="relu"),
        tf.keras.layers.MaxPooling2D(pool_size=(2, 2)),
        tf.keras.layers.Dropout(0.25),
        tf.keras.layers.Flatten(),
        tf.keras.layers.Dense(128, activation="relu"),
        tf.keras.layers.Dropout(0.5),
        tf.keras.layers.Dense(10, activation="softmax"),
    ])
    loss = tf.losses.SparseCategoricalCrossentropy()

    # Horovod: adjust learning rate based on number of GPUs.
    opt = tf.optimizers.Adam(0.001 * hvd.size())

    checkpoint_dir = "./checkpoints"
    checkpoint = tf.train.Checkpoint(model=mnist_model, optimizer=opt)

    @tf.function
    def training_step(images, labels, first_batch):
        with tf.GradientTape() as tape:
            probs = mnist_model(images, training=True)
            loss_value = loss(labels, probs)

        # Horovod: add Horovod Distributed GradientTape.
        tape = hvd.DistributedGradientTape(tape)

        grads = tape.gradient(loss_value, mnist_model.trainable_variables)
        opt.apply_gradients(zip(grads, mnist_model.trainable_variables))

        # Horovod: broadcast initial variable states from rank 0 to all other processes,
        # after the first gradient step so that the optimizer's variables exist.
        if first_batch:
            hvd.broadcast_variables(mnist_model.variables, root_rank=0)
            hvd.broadcast_variables(opt.variables, root_rank=0)

        return loss_value

    # Horovod: adjust number of steps based on number of GPUs.
    losses, first_labels = [], None  # (instrumentation)
    for batch, (images, labels) in enumerate(dataset.take(STEPS // hvd.size())):
        loss_value = training_step(images, labels, batch == 0)
        losses.append(float(loss_value))  # (instrumentation)
        first_labels = first_labels or labels.numpy().tolist()  # (instrumentation)

        if batch % 10 == 0 and hvd.rank() == 0:
            print("Step #%d\tLoss: %.6f" % (batch, loss_value))

    # Horovod: save checkpoints only on worker 0 to prevent other workers from
    # corrupting it.
    if hvd.rank() == 0:
        checkpoint.save(checkpoint_dir)

    instrument(mnist_model, opt, loss, mnist_images, mnist_labels, losses, first_labels)


# --- instrumentation for the test (not part of the recipe) -----------------------------
def instrument(model, opt, loss, images, labels, losses, first_labels):
    """Check the tapes' arithmetic on a batch of this rank's own against numpy's mean of every rank's gradients."""
    rank, size = hvd.rank(), hvd.size()
    x = tf.constant(images[rank * 40:(rank + 1) * 40, ..., None] / 16.0, tf.float32)
    y = tf.constant(labels[rank * 40:(rank + 1) * 40], tf.int64)
    variables = model.trainable_variables
    head = model.layers[-1]
    n_head = len(head.trainable_weights)

    def recorded():
        with tf.GradientTape() as tape:
            value = loss(y, model(x, training=False))
        return tape, value

    def distributed(**kwargs):
        tape, value = recorded()
        return hvd.DistributedGradientTape(tape, **kwargs).gradient(value, variables)

    def partial(**kwargs):
        tape, value = recorded()
        return hvd.PartialDistributedGradientTape(tape, **kwargs).gradient(value, variables)

    def diff(grads, expected):
        return max(float(np.max(np.abs(np.asarray(tf.convert_to_tensor(g)) - e))) for g, e in zip(grads, expected))

    tape, value = recorded()
    mine = [np.asarray(g) for g in tape.gradient(value, variables)]
    every = hvd.allgather_object(mine)  # every rank's local gradients
    mean = [np.mean([g[i] for g in every], axis=0, dtype=np.float32) for i in range(len(mine))]
    total = [np.sum([g[i] for g in every], axis=0, dtype=np.float32) for i in range(len(mine))]
    checks = {
        "local_vs_mean": diff(mine, mean),  # the ranks' own gradients really differ
        "average": diff(distributed(), mean),
        "average_traced": diff(tf.function(distributed)(), mean),
        "sum": diff(distributed(op=hvd.Sum), total),
        "fp16": diff(distributed(compression=hvd.Compression.fp16), mean),
        "predivide": diff(distributed(gradient_predivide_factor=2.0), mean),
    }
    # PartialDistributedGradientTape: the last layer stays local (divided by size by default)
    scaled = partial(local_layers=[head])
    checks["partial_shared"] = diff(scaled[:-n_head], mean[:-n_head])
    checks["partial_local"] = diff(scaled[-n_head:], [g / size for g in mine[-n_head:]])
    checks["partial_unscaled"] = diff(partial(local_layers=head, scale_local_gradients=False)[-n_head:], mine[-n_head:])

    # Sparse gradients (an Embedding's IndexedSlices), reduced sparse and as dense
    tf.keras.utils.set_random_seed(1)
    emb = tf.keras.Sequential([tf.keras.Input((4,), dtype="int32"), tf.keras.layers.Embedding(12, 3),
                               tf.keras.layers.Flatten(), tf.keras.layers.Dense(1)])
    tokens = tf.constant((np.arange(16).reshape(4, 4) + 3 * rank) % 12, tf.int32)

    def emb_grads(wrap, **kwargs):
        with tf.GradientTape() as tape:
            value = tf.reduce_sum(emb(tokens) ** 2)
        tape = hvd.DistributedGradientTape(tape, **kwargs) if wrap else tape
        return tape.gradient(value, emb.trainable_variables)

    emb_every = hvd.allgather_object([np.asarray(tf.convert_to_tensor(g)) for g in emb_grads(False)])
    emb_mean = [np.mean([g[i] for g in emb_every], axis=0, dtype=np.float32) for i in range(len(emb_every[0]))]
    checks["sparse"] = diff(emb_grads(True), emb_mean)
    dense = emb_grads(True, sparse_as_dense=True)
    checks["sparse_as_dense"] = diff(dense, emb_mean)
    checks["sparse_as_dense_type"] = type(dense[0]).__name__

    report("tf2-mnist", rank, size=size, keras=type(opt).__module__.split(".")[0], losses=losses, weights=digest(model.get_weights()),
           opt_state=digest(list(opt.variables)), iterations=int(opt.iterations.numpy()), checks=checks,
           first_labels=first_labels, files=sorted(f for f in os.listdir(".") if f.startswith("checkpoint")))


if __name__ == "__main__":
    main()
