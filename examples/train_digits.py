"""Train a small Keras classifier on scikit-learn's digits with hvdagent.

    python examples/train_digits.py                          # one process
    horovodrun -np 2 python examples/train_digits.py         # two processes

The data (1,797 8x8 images, shipped with scikit-learn) is the same on every
rank; ``agent.fit`` splits it by rank. Rank 0 prints the per-epoch loss and
accuracy (exact global values) and the final test accuracy.
"""

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402

import hvdagent  # noqa: E402


def load_data(seed=0):
    digits = load_digits()
    x = (digits.images.reshape(-1, 64) / 16.0).astype("float32")
    y = digits.target.astype("int64")
    return train_test_split(x, y, test_size=0.2, random_state=seed, stratify=y)


def build_model():
    return keras.Sequential(
        [
            keras.Input((64,)),
            keras.layers.Dense(128, activation="relu"),
            keras.layers.Dropout(0.1),
            keras.layers.Dense(64, activation="relu"),
            keras.layers.Dense(10, activation="softmax"),
        ]
    )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=32, help="per-rank batch size")
    parser.add_argument("--lr", type=float, default=1e-3, help="single-process learning rate")
    parser.add_argument("--save", default=None, help="write the trained model here (.keras)")
    args = parser.parse_args(argv)

    hvdagent.init()
    keras.utils.set_random_seed(0)
    x_train, x_test, y_train, y_test = load_data()

    agent = hvdagent.DistributedAgent(build_model(), scale_lr=True, warmup_epochs=2)
    agent.compile(keras.optimizers.Adam(args.lr), loss="sparse_categorical_crossentropy", metrics=["accuracy"])

    start = time.perf_counter()
    history = agent.fit(x_train, y_train, batch_size=args.batch_size, epochs=args.epochs,
                        validation_data=(x_test, y_test), verbose=0)
    elapsed = time.perf_counter() - start
    loss, accuracy = agent.evaluate(x_test, y_test, batch_size=256, verbose=0)

    if hvdagent.is_chief():
        for epoch, (l, a, vl, va) in enumerate(zip(*(history.history[k] for k in ("loss", "accuracy", "val_loss", "val_accuracy")))):
            print(f"epoch {epoch + 1:2d}: loss {l:.4f}  accuracy {a:.4f}  val_loss {vl:.4f}  val_accuracy {va:.4f}")
        print(f"ranks: {hvdagent.size()}  global batch: {args.batch_size * hvdagent.size()}  train time: {elapsed:.1f}s")
        print(f"test accuracy: {accuracy:.4f}")
    if args.save:
        agent.save(args.save)
    return accuracy


if __name__ == "__main__":
    main()
