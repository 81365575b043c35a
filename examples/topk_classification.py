"""Top-k classification on scikit-learn's bundled digits with a soft top-k loss.

Trains the same small Keras MLP twice on the 8x8 digits (load_digits, ships with
scikit-learn, no download): once with ``tfsort.losses.TopKCrossEntropy(k=3)``, whose loss
per row is -log(m[y]) with m = soft_topk(logits, 3) (zero once the true class is safely in
the soft top 3), and once with plain sparse categorical cross-entropy. Reports top-1 and
top-3 accuracy of both on a held-out split. The top-k loss only asks for the true class to
be among the top 3, so expect it to match cross-entropy on top-3 accuracy and to trail it
on top-1.

Runs in well under a minute on 2 CPU cores:  python examples/topk_classification.py
"""

import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402

import tfsort  # noqa: E402

K = 3
EPOCHS = 40
SEED = 0


def top_k_loss():
    losses = getattr(tfsort, "losses", None)
    cls = getattr(losses, "TopKCrossEntropy", None)
    if cls is None:
        sys.exit(
            "tfsort.losses.TopKCrossEntropy is missing: this example needs the Keras classes "
            "(tfsort/losses.py). Install a tfsort that includes them."
        )
    return cls(K)


def make_model(num_features, num_classes):
    keras.utils.set_random_seed(SEED)
    return keras.Sequential(
        [
            keras.Input((num_features,)),
            keras.layers.Dense(64, activation="relu"),
            keras.layers.Dense(num_classes),  # logits
        ]
    )


def accuracy(logits, y, k):
    top = np.argsort(-logits, axis=-1)[:, :k]
    return float(np.mean((top == y[:, None]).any(axis=-1)))


def main():
    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32)
    y = y.astype(np.int32)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=0.3, random_state=SEED, stratify=y)
    num_classes = int(y.max()) + 1
    results = {}
    for name, loss in [
        (f"TopKCrossEntropy(k={K})", top_k_loss()),
        ("sparse categorical CE", keras.losses.SparseCategoricalCrossentropy(from_logits=True)),
    ]:
        start = time.perf_counter()
        model = make_model(x.shape[1], num_classes)
        model.compile(optimizer=keras.optimizers.Adam(3e-3), loss=loss)
        model.fit(x_tr, y_tr, batch_size=64, epochs=EPOCHS, verbose=0)
        logits = model.predict(x_te, batch_size=256, verbose=0)
        results[name] = (accuracy(logits, y_te, 1), accuracy(logits, y_te, K),
                         time.perf_counter() - start)
    print(f"digits: {len(x_tr)} train / {len(x_te)} held-out, {num_classes} classes, "
          f"{EPOCHS} epochs, TensorFlow {tf.__version__}")
    print(f"{'loss':>26} {'top-1 acc':>10} {f'top-{K} acc':>10} {'time':>7}")
    for name, (a1, ak, secs) in results.items():
        print(f"{name:>26} {a1:>10.3f} {ak:>10.3f} {secs:>6.1f}s")


if __name__ == "__main__":
    main()
