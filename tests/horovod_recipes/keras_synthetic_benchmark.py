"""Horovod's TensorFlow 2 Keras synthetic benchmark
(examples/tensorflow2/tensorflow2_keras_synthetic_benchmark.py) with
``import hvdagent as hvd`` as the only Horovod change.

Written after Horovod 0.28.1's example, not copied: a ``keras.applications``
model without weights, random images and labels generated on each rank, the
optional ``Compression.fp16``, broadcast and metric-average callbacks, and a
rank-0 timing callback that prints images per second per iteration and in
total. Differences, for a test on 2 CPU cores: the default model is
MobileNet on 32x32 images (``--image-size``; ResNet50 on 224x224 in
Horovod's), and the iterations are few. It uses ``tf.keras``, so it runs on
Keras 3 and, with ``TF_USE_LEGACY_KERAS=1``, on tf_keras. No speed is asserted
by the tests.

    horovodrun --gloo -np 2 python tests/horovod_recipes/keras_synthetic_benchmark.py --fp16-allreduce
"""

import argparse
import os
from timeit import default_timer as timer

import numpy as np
import tensorflow as tf

import hvdagent as hvd

from _recipe_checks import digest, report, sync_options

parser = argparse.ArgumentParser(description="TensorFlow Synthetic Benchmark",
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
parser.add_argument("--fp16-allreduce", action="store_true", default=False, help="use fp16 compression during allreduce")
parser.add_argument("--model", type=str, default="MobileNet", help="model to benchmark")
parser.add_argument("--image-size", type=int, default=32, help="image height and width")
parser.add_argument("--batch-size", type=int, default=8, help="input batch size")
parser.add_argument("--num-batches-per-iter", type=int, default=3, help="number of batches per benchmark iteration")
parser.add_argument("--num-iters", type=int, default=3, help="number of benchmark iterations")
args = parser.parse_args()
device = "CPU"

# Horovod: initialize Horovod.
hvd.init()

if hvd.rank() == 0:
    print("Model: %s" % args.model)
    print("Batch size: %d" % args.batch_size)
    print("Number of %ss: %d" % (device, hvd.size()))

# Set up standard model.
model = getattr(tf.keras.applications, args.model)(weights=None, input_shape=(args.image_size, args.image_size, 3))
opt = tf.keras.optimizers.SGD(0.01)

# Synthetic dataset
data = tf.random.uniform([args.batch_size, args.image_size, args.image_size, 3])
target = tf.random.uniform([args.batch_size, 1], minval=0, maxval=999, dtype=tf.int64)
dataset = tf.data.Dataset.from_tensor_slices((data, target)).cache().repeat().batch(args.batch_size)

# Horovod: (optional) compression algorithm.
compression = hvd.Compression.fp16 if args.fp16_allreduce else hvd.Compression.none

# Horovod: add Horovod DistributedOptimizer.
opt = hvd.DistributedOptimizer(opt, compression=compression)

model.compile(loss=tf.keras.losses.SparseCategoricalCrossentropy(), optimizer=opt)

callbacks = [
    # Horovod: broadcast initial variable states from rank 0 to all other processes.
    hvd.callbacks.BroadcastGlobalVariablesCallback(0),
    # Horovod: average metrics among workers at the end of every epoch.
    hvd.callbacks.MetricAverageCallback(),
]


class TimingCallback(tf.keras.callbacks.Callback):
    def on_train_begin(self, logs=None):
        self.img_secs = []

    def on_train_end(self, logs=None):
        img_sec_mean = np.mean(self.img_secs)
        img_sec_conf = 1.96 * np.std(self.img_secs)
        print("Img/sec per %s: %.1f +-%.1f" % (device, img_sec_mean, img_sec_conf))
        print("Total img/sec on %d %s(s): %.1f +-%.1f" %
              (hvd.size(), device, hvd.size() * img_sec_mean, hvd.size() * img_sec_conf))

    def on_epoch_begin(self, epoch, logs=None):
        self.starttime = timer()

    def on_epoch_end(self, epoch, logs=None):
        time = timer() - self.starttime
        img_sec = args.batch_size * args.num_batches_per_iter / time
        print("Iter #%d: %.1f img/sec per %s" % (epoch, img_sec, device))
        # skip warm up epoch
        if epoch > 0:
            self.img_secs.append(img_sec)


# Horovod: write logs on worker 0.
if hvd.rank() == 0:
    timing = TimingCallback()
    callbacks.append(timing)

# Train the model.
history = model.fit(dataset, batch_size=args.batch_size, steps_per_epoch=args.num_batches_per_iter,
                    callbacks=callbacks, epochs=args.num_iters, verbose=0)

# --- instrumentation for the test (not part of the recipe) -----------------------------
report(
    "synthetic", hvd.rank(), size=hvd.size(), keras3=os.environ.get("TF_USE_LEGACY_KERAS") != "1",
    trainable=digest(model.trainable_weights), loss=[float(v) for v in history.history["loss"]],
    iterations=int(opt.iterations.numpy()), compression=str(sync_options(opt).compression),
)
