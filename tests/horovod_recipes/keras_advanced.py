"""Horovod's "advanced" Keras recipe (examples/keras/keras_imagenet_resnet50.py)
with ``import hvdagent as hvd`` as the only Horovod change.

Written after Horovod 0.28.1's example, not copied: resume from the last
checkpoint (the epoch found on rank 0 and broadcast with ``hvd.broadcast``;
rank 0 reloads the model with ``hvd.load_model``, the others build it and
receive it through ``BroadcastGlobalVariablesCallback``), SGD with momentum
and L2 weight decay, ``Compression.fp16`` on request, a warm-up followed by
``LearningRateScheduleCallback`` steps, ``ModelCheckpoint`` on rank 0, and a
test score averaged with ``hvd.allreduce``. Differences, for a test on 2 CPU
cores without downloads: scikit-learn's digits and a small convolutional
network with batch normalization stand in for ImageNet and ResNet-50, the
epochs are 7 with boundaries at 3, 4 and 5 instead of 90 with 30, 60 and 80,
a repeated ``tf.data`` pipeline stands in for ``ImageDataGenerator``, and there
is no TensorBoard. (Under Horovod 0.28.1, and so here, a constant
``multiplier`` means ``multiplier ** (epoch - start_epoch)``: the one-epoch
ranges keep the full rate, and the last range decays from epoch 6 on.) Keras 3 renames: ``learning_rate=`` for ``lr=``, ``fit``
for ``fit_generator``, ``.keras`` checkpoints.

    python tests/horovod_recipes/keras_advanced.py --epochs 2 --checkpoint-format 'ckpt/checkpoint-{epoch}.keras'
    horovodrun --gloo -np 2 python tests/horovod_recipes/keras_advanced.py --epochs 7 --fp16-allreduce \
        --checkpoint-format 'ckpt/checkpoint-{epoch}.keras'
"""

import argparse
import os

import numpy as np
import tensorflow as tf
from sklearn.datasets import load_digits

import hvdagent as hvd

from _recipe_checks import digest, history_of, report, sync_options

parser = argparse.ArgumentParser(description="Keras digits example (after Horovod's ImageNet one)")
parser.add_argument("--checkpoint-format", default="./checkpoint-{epoch}.keras", help="checkpoint file format")
parser.add_argument("--fp16-allreduce", action="store_true", default=False, help="use fp16 compression during allreduce")
parser.add_argument("--batch-size", type=int, default=32, help="input batch size for training")
parser.add_argument("--val-batch-size", type=int, default=32, help="input batch size for validation")
parser.add_argument("--epochs", type=int, default=7, help="number of epochs to train")
parser.add_argument("--base-lr", type=float, default=0.0125, help="learning rate for a single worker")
parser.add_argument("--warmup-epochs", type=float, default=2, help="number of warmup epochs")
parser.add_argument("--momentum", type=float, default=0.9, help="SGD momentum")
parser.add_argument("--wd", type=float, default=0.00005, help="weight decay")
args = parser.parse_args()

hvd.init()

# If set > 0, will resume training from a given checkpoint.
resume_from_epoch = 0
for try_epoch in range(args.epochs, 0, -1):
    if os.path.exists(args.checkpoint_format.format(epoch=try_epoch)):
        resume_from_epoch = try_epoch
        break

# Horovod: broadcast resume_from_epoch from rank 0 (which will have checkpoints) to other ranks.
resume_from_epoch = int(hvd.broadcast(resume_from_epoch, 0, name="resume_from_epoch"))

# Horovod: print logs on the first worker.
verbose = 2 if hvd.rank() == 0 else 0

digits = load_digits()
images = (digits.images[..., np.newaxis] / 16.0).astype("float32")
onehot = tf.keras.utils.to_categorical(digits.target, 10)
x_train, y_train, x_test, y_test = images[:1500], onehot[:1500], images[1500:], onehot[1500:]
train_iter = tf.data.Dataset.from_tensor_slices((x_train, y_train)).shuffle(1500).repeat().batch(args.batch_size)
test_iter = tf.data.Dataset.from_tensor_slices((x_test, y_test)).repeat().batch(args.val_batch_size)
train_batches, test_batches = len(x_train) // args.batch_size, len(x_test) // args.val_batch_size

# Horovod: (optional) compression algorithm.
compression = hvd.Compression.fp16 if args.fp16_allreduce else hvd.Compression.none

# Horovod: adjust learning rate based on number of workers.
initial_lr = args.base_lr * hvd.size()

# Restore from a previous checkpoint, if initial_epoch is specified.
# Horovod: restore on the first worker which will broadcast both model and optimizer weights
# to other workers.
if resume_from_epoch > 0 and hvd.rank() == 0:
    model = hvd.load_model(args.checkpoint_format.format(epoch=resume_from_epoch), compression=compression)
else:
    tf.keras.utils.set_random_seed(1 + hvd.rank())  # ranks start apart; the broadcast joins them
    l2 = tf.keras.regularizers.l2(args.wd)
    model = tf.keras.Sequential([
        tf.keras.Input((8, 8, 1)),
        tf.keras.layers.Conv2D(32, 3, padding="same", use_bias=False, kernel_regularizer=l2),
        tf.keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-5),
        tf.keras.layers.Activation("relu"),
        tf.keras.layers.Conv2D(64, 3, strides=2, use_bias=False, kernel_regularizer=l2),
        tf.keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-5),
        tf.keras.layers.Activation("relu"),
        tf.keras.layers.GlobalAveragePooling2D(),
        tf.keras.layers.Dense(10, activation="softmax", kernel_regularizer=l2),
    ])
    opt = tf.keras.optimizers.SGD(learning_rate=initial_lr, momentum=args.momentum)

    # Horovod: add Horovod Distributed Optimizer.
    opt = hvd.DistributedOptimizer(opt, compression=compression)

    model.compile(loss=tf.keras.losses.categorical_crossentropy, optimizer=opt,
                  metrics=["accuracy", "top_k_categorical_accuracy"])

callbacks = [
    # Horovod: broadcast initial variable states from rank 0 to all other processes.
    hvd.callbacks.BroadcastGlobalVariablesCallback(0),
    # Horovod: average metrics among workers at the end of every epoch.
    hvd.callbacks.MetricAverageCallback(),
    # Horovod: warm up from lr to lr * size over the first epochs.
    hvd.callbacks.LearningRateWarmupCallback(initial_lr=initial_lr, warmup_epochs=args.warmup_epochs, verbose=verbose),
    # Horovod: after the warmup reduce learning rate by 10 on the 3rd, 4th and 5th epochs.
    hvd.callbacks.LearningRateScheduleCallback(initial_lr=initial_lr, multiplier=1.0,
                                               start_epoch=args.warmup_epochs, end_epoch=3),
    hvd.callbacks.LearningRateScheduleCallback(initial_lr=initial_lr, multiplier=1e-1, start_epoch=3, end_epoch=4),
    hvd.callbacks.LearningRateScheduleCallback(initial_lr=initial_lr, multiplier=1e-2, start_epoch=4, end_epoch=5),
    hvd.callbacks.LearningRateScheduleCallback(initial_lr=initial_lr, multiplier=1e-3, start_epoch=5),
]

# Horovod: save checkpoints only on the first worker to prevent other workers from corrupting them.
if hvd.rank() == 0:
    callbacks.append(tf.keras.callbacks.ModelCheckpoint(args.checkpoint_format))

history = model.fit(train_iter, steps_per_epoch=train_batches // hvd.size(), callbacks=callbacks,
                    epochs=args.epochs, verbose=verbose, initial_epoch=resume_from_epoch,
                    validation_data=test_iter, validation_steps=3 * test_batches // hvd.size())

# Evaluate the model on the full data set.
score = hvd.allreduce(model.evaluate(test_iter, steps=test_batches, verbose=0))
if verbose:
    print("Test loss:", float(score[0]))
    print("Test accuracy:", float(score[1]))

# --- instrumentation for the test (not part of the recipe) -----------------------------
report(
    f"advanced-np{hvd.size()}", hvd.rank(), size=hvd.size(), resume_from_epoch=resume_from_epoch,
    initial_lr=initial_lr, history=history_of(history), score=[float(s) for s in score],
    trainable=digest(model.trainable_weights), weights=digest(model.get_weights()),
    opt_state=digest(model.optimizer.variables), iterations=int(model.optimizer.iterations.numpy()),
    momentum_slots=[digest([v]) for v in model.optimizer.inner_optimizer.momentums],
    compression=str(sync_options(model.optimizer).compression), steps=train_batches // hvd.size(),
)
