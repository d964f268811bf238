"""The classic MNIST MLP (784-64-10, Adam, 10 epochs), data-parallel with hvdagent.

    python examples/mnist_mlp.py --data mnist.npz
    horovodrun -np 2 python examples/mnist_mlp.py --data mnist.npz

``mnist.npz`` is the file Keras uses (arrays x_train, y_train, x_test, y_test);
this script never downloads. Each step, every rank computes gradients on its
own batch, hvdagent averages them across ranks, and every rank applies the
same update: synchronous data parallelism, so the model is identical
everywhere.
"""

import argparse
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

SOURCE = "https://storage.googleapis.com/tensorflow/tf-keras-datasets/mnist.npz"


def load_mnist(path):
    """Return (x_train, y_train), (x_test, y_test) from a Keras-format mnist.npz."""
    with np.load(path) as f:
        missing = {"x_train", "y_train", "x_test", "y_test"} - set(f.files)
        if missing:
            raise ValueError(f"{path} is not a Keras mnist.npz: arrays {sorted(missing)} are missing. Received arrays: {sorted(f.files)}")
        prep = lambda x: (x.reshape(len(x), -1) / 255.0).astype("float32")  # noqa: E731
        return (prep(f["x_train"]), f["y_train"].astype("int64")), (prep(f["x_test"]), f["y_test"].astype("int64"))


def main(argv=None):
    parser = argparse.ArgumentParser(description="MNIST MLP with hvdagent")
    parser.add_argument("--data", required=True, help="path to mnist.npz")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=64, help="per-rank batch size")
    args = parser.parse_args(argv)
    if not os.path.exists(args.data):
        print(f"error: {args.data} does not exist. Download mnist.npz once (for example from {SOURCE}, "
              "the file keras.datasets.mnist uses) and pass its path with --data.", file=sys.stderr)
        return 2

    import keras

    import hvdagent

    (x_train, y_train), (x_test, y_test) = load_mnist(args.data)
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((784,)), keras.layers.Dense(64, activation="relu"),
                              keras.layers.Dense(10, activation="softmax")])
    agent = hvdagent.DistributedAgent(model, scale_lr=True, warmup_epochs=1)
    agent.compile(keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    if hvdagent.is_chief():
        print(f"784-64-10 MLP, {len(x_train)} training samples, {hvdagent.size()} rank(s), "
              f"global batch {args.batch_size * hvdagent.size()}")
    agent.fit(x_train, y_train, batch_size=args.batch_size, epochs=args.epochs, verbose=2 if hvdagent.is_chief() else 0)
    _, accuracy = agent.evaluate(x_test, y_test, batch_size=512, verbose=0)
    if hvdagent.is_chief():
        print(f"test accuracy: {accuracy:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
