"""``python -m tfsort``: a short end-to-end demo of tfsort with Keras 3.

1. Makes lists of 32 items whose target scores are a noisy nonlinear function of 4
   features.
2. Builds a small item scorer that also sees each feature's soft rank within its list
   (a tfsort.layers.SoftRank layer along the item axis).
3. Trains it with model.fit on tfsort.losses.SpearmanLoss and reports the held-out exact
   Spearman correlation (tfsort.metrics.SpearmanCorrelation) before and after.
4. Exports a SavedModel with model.export, reloads it with tf.saved_model.load and checks
   that the reloaded model gives the same outputs.

Needs only tfsort's runtime dependencies (tensorflow, numpy); takes well under a minute.
"""

import os
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import tfsort  # noqa: E402

ITEMS, FEATURES = 32, 4


def make_data(lists, rng):
    x = rng.normal(size=(lists, ITEMS, FEATURES)).astype("float32")
    target = (
        np.sin(2.0 * x[..., 0])
        + x[..., 1] ** 2
        - x[..., 2] * x[..., 3]
        + 0.3 * rng.normal(size=(lists, ITEMS))
    )
    return x, target.astype("float32")


def make_model():
    inp = keras.Input((ITEMS, FEATURES), name="items")
    # Each feature's soft rank among the list's items, scaled to [0, 1]-ish.
    ranks = tfsort.layers.SoftRank(regularization_strength=0.1, axis=1, name="soft_rank")(inp)
    rel = keras.layers.Rescaling(1.0 / ITEMS)(ranks)
    h = keras.layers.Concatenate()([inp, rel])
    h = keras.layers.Dense(32, activation="relu")(h)
    h = keras.layers.Dense(32, activation="relu")(h)
    scores = keras.layers.Reshape((ITEMS,), name="scores")(keras.layers.Dense(1)(h))
    return keras.Model(inp, scores)


def spearman(model, x, y):
    metric = tfsort.metrics.SpearmanCorrelation()
    metric.update_state(y, model.predict(x, verbose=0))
    return float(metric.result())


def main():
    print(f"tfsort {tfsort.__version__} on TensorFlow {tf.__version__}, Keras {keras.__version__}")
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x_tr, y_tr = make_data(512, rng)
    x_te, y_te = make_data(128, rng)

    model = make_model()
    before = spearman(model, x_te, y_te)
    model.compile(
        keras.optimizers.Adam(3e-3),
        loss=tfsort.losses.SpearmanLoss(regularization_strength=0.1),
        metrics=[tfsort.metrics.SpearmanCorrelation()],
    )
    model.fit(x_tr, y_tr, batch_size=32, epochs=5, validation_split=0.1, verbose=1)
    after = spearman(model, x_te, y_te)
    print(f"held-out Spearman correlation: {before:+.4f} before training -> {after:+.4f} after")

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "ranker")
        model.export(path, verbose=False)
        reloaded = tf.saved_model.load(path)
        got = reloaded.serve(tf.constant(x_te)).numpy()
    want = model.predict(x_te, verbose=0)
    diff = float(np.max(np.abs(got - want)))
    print(f"SavedModel export -> tf.saved_model.load: max abs output difference {diff:.3g}")
    ok = diff < 1e-4 and after > before + 0.2
    print("demo OK" if ok else "demo FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
