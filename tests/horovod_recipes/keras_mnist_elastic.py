"""Horovod's elastic TensorFlow 2 Keras MNIST recipe
(examples/elastic/tensorflow2/tensorflow2_keras_mnist_elastic.py) with
``import hvdagent as hvd`` as the only Horovod change.

Written after Horovod 0.28.1's example, not copied: one warm-up step to create
the optimizer's variables, ``hvd.elastic.KerasState(model, batch=0,
epoch=0)``, a reset callback that sets the learning rate for the new size and
steps once with the new workers, the epoch/batch/commit callbacks,
``ModelCheckpoint`` on rank 0, and ``@hvd.elastic.run`` around ``fit`` with
``epochs - state.epoch``. Differences, for a test on 2 CPU cores without
downloads: scikit-learn's digits stand in for MNIST, the model and the run
are small. Keras 3 renames: ``optimizer.learning_rate = ...`` for
``tf.keras.backend.set_value(optimizer.lr, ...)``, ``.keras`` checkpoints.

The test drives a host change from a callback (not part of the recipe): at
the end of epoch 1 on one worker, rank 0 rewrites the file the discovery
script prints, so a second worker joins.

    horovodrun --gloo -np 1 --min-np 1 --max-np 2 --host-discovery-script ./discover.sh \
        python tests/horovod_recipes/keras_mnist_elastic.py OUT_DIR HOSTS_FILE
"""

import json
import os
import sys
import time

import numpy as np
import tensorflow as tf
from sklearn.datasets import load_digits

import hvdagent as hvd

from _recipe_checks import digest, history_of, report

EPOCHS = 5
out_dir, hosts_file = sys.argv[1], sys.argv[2]
keras3 = os.environ.get("TF_USE_LEGACY_KERAS") != "1"
suffix = ".keras" if keras3 else ".h5"

# Horovod: initialize Horovod.
hvd.init()

digits = load_digits()
images = (digits.images[..., np.newaxis] / 16.0).astype("float32")
dataset = tf.data.Dataset.from_tensor_slices((images, digits.target.astype("int64")))
dataset = dataset.repeat().shuffle(10000).batch(32)

model = tf.keras.Sequential([
    tf.keras.Input((8, 8, 1)),
    tf.keras.layers.Conv2D(16, [3, 3], activation="relu"),
    tf.keras.layers.MaxPooling2D(pool_size=(2, 2)),
    tf.keras.layers.Flatten(),
    tf.keras.layers.Dense(64, activation="relu"),
    tf.keras.layers.Dense(10, activation="softmax"),
])

# Horovod: adjust learning rate based on number of workers.
scaled_lr = 0.001 * hvd.size()
opt = tf.keras.optimizers.Adam(scaled_lr)

# Horovod: add Horovod DistributedOptimizer.
opt = hvd.DistributedOptimizer(opt, backward_passes_per_step=1, average_aggregated_gradients=True)

model.compile(loss=tf.keras.losses.SparseCategoricalCrossentropy(), optimizer=opt, metrics=["accuracy"])

# Horovod: initialize optimizer state so we can synchronize across workers.
model.fit(dataset, steps_per_epoch=1, epochs=1, callbacks=None, verbose=0)

state = hvd.elastic.KerasState(model, batch=0, epoch=0)


def on_state_reset():
    state.model.optimizer.learning_rate = 0.001 * hvd.size()
    # Re-initialize, to join with possible new ranks
    state.model.fit(dataset, steps_per_epoch=1, epochs=1, callbacks=None, verbose=0)


state.register_reset_callbacks([on_state_reset])


# --- instrumentation for the test (not part of the recipe) -----------------------------
class Observe(tf.keras.callbacks.Callback):
    """Log each finished epoch; after epoch 1 on one worker, let a second one join."""

    def on_epoch_end(self, epoch, logs=None):
        record = {"state_epoch": state.epoch, "size": hvd.size(), "rank": hvd.rank(),
                  "lr": float(np.asarray(state.model.optimizer.learning_rate)),
                  "digest": digest(state.model.get_weights())}
        with open(os.path.join(out_dir, f"epochs-{os.getpid()}.jsonl"), "a") as f:
            f.write(json.dumps(record) + "\n")
        if state.epoch == 2 and hvd.size() == 1:
            with open(hosts_file, "w") as f:
                f.write("localhost:2\n")
            time.sleep(5)  # the driver polls the discovery script every second


callbacks = [
    hvd.elastic.UpdateEpochStateCallback(state),
    hvd.elastic.UpdateBatchStateCallback(state),
    Observe(),
    hvd.elastic.CommitStateCallback(state),
]

# Horovod: save checkpoints only on worker 0 to prevent other workers from corrupting them.
if hvd.rank() == 0:
    callbacks.append(tf.keras.callbacks.ModelCheckpoint(os.path.join(out_dir, "checkpoint-{epoch}" + suffix)))


# Train the model.
# Horovod: adjust number of steps based on number of workers.
@hvd.elastic.run
def train(state):
    return state.model.fit(dataset, steps_per_epoch=24 // hvd.size(), epochs=EPOCHS - state.epoch,
                           callbacks=callbacks, verbose=2 if hvd.rank() == 0 else 0)


history = train(state)

# --- instrumentation for the test (not part of the recipe) -----------------------------
report(f"elastic-{os.getpid()}", hvd.rank(), size=hvd.size(), state_epoch=state.epoch, history=history_of(history),
       weights=digest(model.get_weights()), lr=float(np.asarray(model.optimizer.learning_rate)),
       iterations=int(model.optimizer.iterations.numpy()))
