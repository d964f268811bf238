"""Horovod's TensorFlow 2 Keras MNIST recipe (examples/tensorflow2/tensorflow2_keras_mnist.py)
with ``import hvdagent as hvd`` as the only Horovod change.

Written after Horovod 0.28.1's example, not copied: the same steps in the same
order (init, a repeated and shuffled dataset, ``lr * size``,
``DistributedOptimizer(..., backward_passes_per_step=1,
average_aggregated_gradients=True)``, broadcast + metric average + warm-up
callbacks, ``ModelCheckpoint`` on rank 0, ``steps_per_epoch // size``).
Differences, for a test on 2 CPU cores without downloads: scikit-learn's
digits (8x8) stand in for MNIST, the run is short, and a validation set plus
``BestModelCheckpoint`` and ``hvd.load_model`` are exercised too. It uses
``tf.keras``, so it runs on Keras 3 and, with ``TF_USE_LEGACY_KERAS=1``, on
tf_keras; the Keras 3 renames are the ``.keras`` checkpoint suffix and no
``experimental_run_tf_function``.

    horovodrun --gloo -np 2 python tests/horovod_recipes/keras_mnist.py OUT_DIR
"""

import os
import sys

import numpy as np
import tensorflow as tf
from sklearn.datasets import load_digits

import hvdagent as hvd

from _recipe_checks import digest, history_of, report, sync_options

EPOCHS, WARMUP_EPOCHS, BATCH = 4, 3, 32
out_dir = sys.argv[1]
os.makedirs(out_dir, exist_ok=True)
keras3 = os.environ.get("TF_USE_LEGACY_KERAS") != "1"  # which Keras tf.keras is
suffix = ".keras" if keras3 else ".h5"

# Horovod: initialize Horovod.
hvd.init()

digits = load_digits()
images = (digits.images[..., np.newaxis] / 16.0).astype("float32")
labels = digits.target.astype("int64")
dataset = tf.data.Dataset.from_tensor_slices((images[:1500], labels[:1500]))
dataset = dataset.repeat().shuffle(10000).batch(BATCH)  # one order on every rank under hvdagent (docs/from-horovod.md)
val = (images[1500:], labels[1500:])

tf.keras.utils.set_random_seed(hvd.rank())  # different initial weights per rank: the broadcast must fix them
mnist_model = tf.keras.Sequential([
    tf.keras.Input((8, 8, 1)),
    tf.keras.layers.Conv2D(32, [3, 3], activation="relu"),
    tf.keras.layers.Conv2D(64, [3, 3], activation="relu"),
    tf.keras.layers.MaxPooling2D(pool_size=(2, 2)),
    tf.keras.layers.Dropout(0.25),
    tf.keras.layers.Flatten(),
    tf.keras.layers.Dense(128, activation="relu"),
    tf.keras.layers.Dropout(0.5),
    tf.keras.layers.Dense(10, activation="softmax"),
])

# Horovod: adjust learning rate based on number of GPUs.
scaled_lr = 0.001 * hvd.size()
opt = tf.keras.optimizers.Adam(scaled_lr)

# Horovod: add Horovod DistributedOptimizer.
opt = hvd.DistributedOptimizer(opt, backward_passes_per_step=1, average_aggregated_gradients=True)

mnist_model.compile(loss=tf.keras.losses.SparseCategoricalCrossentropy(), optimizer=opt, metrics=["accuracy"])

callbacks = [
    # Horovod: broadcast initial variable states from rank 0 to all other processes.
    hvd.callbacks.BroadcastGlobalVariablesCallback(0),
    # Horovod: average metrics among workers at the end of every epoch.
    hvd.callbacks.MetricAverageCallback(),
    # Horovod: warm up from lr to lr * size over the first epochs.
    hvd.callbacks.LearningRateWarmupCallback(initial_lr=scaled_lr, warmup_epochs=WARMUP_EPOCHS, verbose=1),
    # Horovod: keep the best model (writes on rank 0 only).
    hvd.callbacks.BestModelCheckpoint(monitor="val_loss", filepath=os.path.join(out_dir, "best" + suffix)),
]

# Horovod: save checkpoints only on worker 0 to prevent other workers from corrupting them.
if hvd.rank() == 0:
    callbacks.append(tf.keras.callbacks.ModelCheckpoint(os.path.join(out_dir, "checkpoint-{epoch}" + suffix)))

# Horovod: write logs on worker 0.
verbose = 2 if hvd.rank() == 0 else 0

# Train the model.
# Horovod: adjust number of steps based on number of GPUs.
steps = 48 // hvd.size()
history = mnist_model.fit(dataset, steps_per_epoch=steps, callbacks=callbacks, epochs=EPOCHS, verbose=verbose,
                          validation_data=val)

# --- instrumentation for the test (not part of the recipe) -----------------------------
final_lr = float(np.asarray(opt.learning_rate))
weights = digest(mnist_model.get_weights())
opt_state = digest([v for v in opt.variables])
hvd.allreduce(0.0, name="files_written")  # rank 0's checkpoints are complete before anyone lists them
files = sorted(os.listdir(out_dir))
# hvd.load_model: every rank reads the last checkpoint; the optimizer comes back distributed and
# training goes on from the saved state, identically on every rank.
loaded = hvd.load_model(os.path.join(out_dir, f"checkpoint-{EPOCHS}{suffix}"))
loaded_same = digest(loaded.get_weights()) == weights
loaded_iterations = int(loaded.optimizer.iterations.numpy())
more = loaded.fit(dataset, steps_per_epoch=2, epochs=1, verbose=0,
                  callbacks=[hvd.callbacks.MetricAverageCallback()])
report(
    "mnist", hvd.rank(), size=hvd.size(), keras3=keras3, steps=steps, history=history_of(history),
    final_lr=final_lr, weights=weights, opt_state=opt_state, files=files, loaded_same=loaded_same,
    loaded_distributed=type(loaded.optimizer).__name__ + ":" + str(sync_options(loaded.optimizer) is not None),
    loaded_iterations=loaded_iterations, iterations=int(opt.iterations.numpy()),
    after_load_weights=digest(loaded.get_weights()), after_load_loss=float(more.history["loss"][0]),
)
