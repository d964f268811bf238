"""The benchmark workload, shared by every configuration: data and model.

The data is generated (no download): ``n`` images 28x28x1 of random noise
with random labels, from a fixed seed, so every configuration and every rank
sees exactly the same arrays. Throughput does not depend on what the pixels
hold.
"""

from __future__ import annotations

import numpy as np

IMAGE_SHAPE = (28, 28, 1)
NUM_CLASSES = 10


def make_data(n: int, seed: int = 0):
    """``(x, y)``: ``n`` float32 images and int32 labels, the same on every rank."""
    rng = np.random.default_rng(seed)
    x = rng.random((n,) + IMAGE_SHAPE, dtype=np.float32)
    y = rng.integers(0, NUM_CLASSES, size=(n,)).astype(np.int32)
    return x, y


def build_model(keras_module):
    """The ~225k-parameter conv net of issue 6, for ``keras`` or ``tf_keras``.

    Conv32-Pool-Conv64-Pool-Dense128-Dense10 on 28x28x1 inputs.
    """
    layers = keras_module.layers
    return keras_module.Sequential(
        [
            keras_module.Input(IMAGE_SHAPE),
            layers.Conv2D(32, 3, activation="relu"),
            layers.MaxPooling2D(),
            layers.Conv2D(64, 3, activation="relu"),
            layers.MaxPooling2D(),
            layers.Flatten(),
            layers.Dense(128, activation="relu"),
            layers.Dense(NUM_CLASSES),
        ]
    )


def num_params(model) -> int:
    return int(sum(int(np.prod(w.shape)) for w in model.trainable_weights))
