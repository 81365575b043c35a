"""Listwise learning to rank with tfsort.losses.SoftNDCGLoss on synthetic queries.

Each query has a list of 20 documents with 8 features. The true relevance model is a
linear score plus a mild interaction and noise, quantised into grades 0..4, so the best
achievable NDCG is known to be high but below 1. The same small MLP scorer is trained with
SoftNDCGLoss (1 - NDCG with soft ranks) and, as a baseline, with MSE regression on the
grades; NDCG@5 and NDCG@10 on held-out queries are reported before and after training.

    python examples/learning_to_rank.py
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import tfsort  # noqa: E402

ITEMS, FEATURES = 20, 8
EPOCHS = 8


def make_data(queries, rng, w):
    x = rng.normal(size=(queries, ITEMS, FEATURES)).astype("float32")
    latent = x @ w + 0.5 * x[..., 0] * x[..., 1] + 0.5 * rng.normal(size=(queries, ITEMS))
    grades = np.digitize(latent, np.quantile(latent, [0.5, 0.75, 0.9, 0.97]))
    return x, grades.astype("float32")


def ndcg_at(grades, scores, k):
    """Mean NDCG@k over queries (hard ranks, gains 2^g - 1, ideal from the true grades)."""
    order = np.argsort(-scores, axis=-1, kind="stable")[:, :k]
    discount = 1.0 / np.log2(np.arange(2, k + 2))
    gains = 2.0 ** grades - 1.0
    dcg = (np.take_along_axis(gains, order, -1) * discount).sum(-1)
    idcg = (-np.sort(-gains, axis=-1)[:, :k] * discount).sum(-1)
    ok = idcg > 0
    return float(np.mean(dcg[ok] / idcg[ok]))


def make_model():
    inp = keras.Input((ITEMS, FEATURES))
    h = keras.layers.Dense(32, activation="relu")(inp)
    return keras.Model(inp, keras.layers.Reshape((ITEMS,))(keras.layers.Dense(1)(h)))


def main():
    rng = np.random.default_rng(0)
    w = rng.normal(size=FEATURES)
    x_tr, g_tr = make_data(2000, rng, w)
    x_te, g_te = make_data(500, rng, w)
    oracle = x_te @ w + 0.5 * x_te[..., 0] * x_te[..., 1]  # the noise-free true score

    print(f"{len(x_tr)} training / {len(x_te)} test queries of {ITEMS} documents, grades 0..4")
    print(f"{'model':>22}  NDCG@5  NDCG@10")
    oracle_5, oracle_10 = ndcg_at(g_te, oracle, 5), ndcg_at(g_te, oracle, 10)
    print(f"{'true relevance model':>22}  {oracle_5:.4f}  {oracle_10:.4f}")
    for name, loss in [
        ("MSE on grades", "mse"),
        ("SoftNDCGLoss (k=10)", tfsort.losses.SoftNDCGLoss(regularization_strength=0.1, k=10)),
    ]:
        keras.utils.set_random_seed(1)
        model = make_model()
        if name == "MSE on grades":
            s = model.predict(x_te, verbose=0)
            print(f"{'untrained':>22}  {ndcg_at(g_te, s, 5):.4f}  {ndcg_at(g_te, s, 10):.4f}")
        model.compile(keras.optimizers.Adam(3e-3), loss=loss)
        model.fit(x_tr, g_tr, batch_size=32, epochs=EPOCHS, verbose=0)
        s = model.predict(x_te, verbose=0)
        print(f"{name:>22}  {ndcg_at(g_te, s, 5):.4f}  {ndcg_at(g_te, s, 10):.4f}")


if __name__ == "__main__":
    main()
