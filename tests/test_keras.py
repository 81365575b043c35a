"""Tests for the Keras 3 layers, losses and metrics (tfsort.layers / losses / metrics).

Models are tiny on purpose: the point is that the classes compose with Keras (config,
.keras saving, fit, XLA, distribution, mixed precision), not that they learn much.
"""

import importlib.util
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import scipy.stats
import tensorflow as tf

import tfsort
from tfsort import layers, losses, metrics

HAS_DIFF_SORT = hasattr(tfsort, "diff_sort")
HAS_SOFT_TOPK = hasattr(tfsort, "soft_topk")
HAS_XLA = importlib.util.find_spec("tfsort._xla") is not None
needs_diff_sort = pytest.mark.skipif(not HAS_DIFF_SORT, reason="tfsort.diff_sort not merged yet")
needs_soft_topk = pytest.mark.skipif(not HAS_SOFT_TOPK, reason="tfsort.soft_topk not merged yet")
needs_xla = pytest.mark.skipif(not HAS_XLA, reason="tfsort._xla not merged yet")

MODES = ["eager", "function"]


def spearman_01():
    return losses.SpearmanLoss(regularization_strength=0.1)




def run(mode, fn, *args):
    """Calls fn eagerly or inside a tf.function."""
    if mode == "function":
        fn = tf.function(fn)
    out = fn(*args)
    return tf.nest.map_structure(lambda t: t.numpy(), out)


def rng(seed=0):
    return np.random.default_rng(seed)


# --------------------------------------------------------------------------- config

CLASSES = [
    (
        layers.SoftSort,
        dict(regularization="kl", regularization_strength=0.5, direction="descending"),
    ),
    (layers.SoftRank, dict(regularization_strength=0.1, axis=1)),
    (layers.DiffSort, dict(network="odd_even", relaxation="logistic", steepness=5.0)),
    (layers.SoftTopK, dict(k=3, regularization_strength=0.2, method="sparse")),
    (losses.SpearmanLoss, dict(regularization="kl", regularization_strength=0.3)),
    (losses.SoftNDCGLoss, dict(regularization_strength=0.2, k=5)),
    (losses.TopKCrossEntropy, dict(k=2.5, regularization_strength=0.5)),
    (metrics.SpearmanCorrelation, dict(name="rho")),
]


@pytest.mark.parametrize("cls,kwargs", CLASSES, ids=[c.__name__ for c, _ in CLASSES])
def test_config_round_trip(cls, kwargs):
    obj = cls(**kwargs)
    config = obj.get_config()
    clone = cls.from_config(config)
    assert clone.get_config() == config
    for key in kwargs:
        if key in config and key != "direction":
            assert config[key] == kwargs[key]
    # Registered under package "tfsort" for .keras files.
    assert keras.saving.get_registered_name(cls) == f"tfsort>{cls.__name__}"
    again = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(obj))
    assert type(again) is cls and again.get_config() == config


BAD_ARGS = [
    (layers.SoftSort, dict(regularization="l1"), "regularization"),
    (layers.SoftSort, dict(regularization_strength=0.0), "regularization_strength"),
    (layers.SoftRank, dict(regularization_strength=float("nan")), "regularization_strength"),
    (layers.SoftRank, dict(direction="up"), "direction"),
    (layers.SoftRank, dict(axis=1.5), "axis"),
    (layers.DiffSort, dict(network="bubble"), "network"),
    (layers.DiffSort, dict(relaxation="tanh"), "relaxation"),
    (layers.DiffSort, dict(steepness=-1.0), "steepness"),
    (layers.SoftTopK, dict(k=0), "k"),
    (layers.SoftTopK, dict(k=2.5, method="sparse"), "k"),
    (layers.SoftTopK, dict(k=2, method="argmax"), "method"),
    (losses.SpearmanLoss, dict(regularization_strength=float("inf")), "regularization_strength"),
    (losses.SpearmanLoss, dict(regularization="entropy"), "regularization"),
    (losses.SoftNDCGLoss, dict(k=0), "k"),
    (losses.SoftNDCGLoss, dict(regularization_strength=-2.0), "regularization_strength"),
    (losses.TopKCrossEntropy, dict(k=-1), "k"),
    (losses.TopKCrossEntropy, dict(k=2, method="hard"), "method"),
]


@pytest.mark.parametrize("cls,kwargs,name", BAD_ARGS)
def test_bad_arguments_raise_at_construction(cls, kwargs, name):
    if cls is layers.SoftTopK or cls is losses.TopKCrossEntropy:
        kwargs = {"k": 2, **kwargs}
    with pytest.raises((ValueError, TypeError), match=name):
        cls(**kwargs)


def test_axis_out_of_range_raises_at_build():
    inp = keras.Input((4, 5))
    with pytest.raises(ValueError, match="axis"):
        layers.SoftRank(axis=3)(inp)


# --------------------------------------------------------------------------- layers


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("direction", ["ASCENDING", "DESCENDING"])
def test_soft_layers_match_functions(mode, direction):
    x = rng().normal(size=(3, 4, 6)).astype("float32")
    for layer_cls, fn in [(layers.SoftSort, tfsort.soft_sort), (layers.SoftRank, tfsort.soft_rank)]:
        layer = layer_cls(regularization_strength=0.3, direction=direction, axis=1)
        got = run(mode, layer, x)
        want = fn(x, regularization_strength=0.3, direction=direction, axis=1).numpy()
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


def test_functional_api_symbolic_and_unknown_batch():
    inp = keras.Input((7,))
    out = layers.SoftRank(direction="DESCENDING")(layers.SoftSort()(inp))
    assert tuple(out.shape) == (None, 7)
    model = keras.Model(inp, out)
    x = rng().normal(size=(5, 7)).astype("float32")
    f = tf.function(model, input_signature=[tf.TensorSpec((None, 7), tf.float32)])
    np.testing.assert_allclose(f(x).numpy(), model(x).numpy(), rtol=1e-6)
    for layer in model.layers[1:]:
        assert layer.supports_jit is False
        assert layer.compute_output_shape((None, 7)) == (None, 7)


def _ranking_model(n=8, features=3):
    """Scores per item from features; a SoftSort branch feeds the sorted scores back."""
    inp = keras.Input((n, features))
    scores = keras.layers.Reshape((n,))(keras.layers.Dense(1)(inp))
    sorted_scores = layers.SoftSort(regularization_strength=0.5)(scores)
    out = keras.layers.Add()([scores, keras.layers.Dense(n)(sorted_scores)])
    return keras.Model(inp, out)


def _ranking_data(samples=64, n=8, features=3, seed=0):
    r = rng(seed)
    x = r.normal(size=(samples, n, features)).astype("float32")
    y = (np.tanh(x @ np.array([1.0, -2.0, 0.5])) + 0.1 * r.normal(size=(samples, n)))
    return x, y.astype("float32")


def test_fit_spearman_loss_with_soft_sort_layer_decreases_loss():
    keras.utils.set_random_seed(0)
    x, y = _ranking_data()
    model = _ranking_model()
    model.compile(keras.optimizers.Adam(0.05), loss=spearman_01())
    hist = model.fit(x, y, batch_size=16, epochs=6, verbose=0).history["loss"]
    assert np.all(np.isfinite(hist))
    assert hist[-1] < hist[0] - 0.1, hist


def test_keras_save_load_round_trip(tmp_path):
    keras.utils.set_random_seed(1)
    inp = keras.Input((6,))
    h = keras.layers.Dense(6)(inp)
    ranks = layers.SoftRank(regularization_strength=0.2, direction="DESCENDING", name="rank")(h)
    out = keras.layers.Add()([layers.SoftSort(regularization="kl", name="sort")(h), ranks])
    model = keras.Model(inp, out)
    model.compile("adam", loss=losses.SpearmanLoss(regularization_strength=0.5),
                  metrics=[metrics.SpearmanCorrelation()])
    x = rng().normal(size=(8, 6)).astype("float32")
    model.fit(x, x, epochs=1, verbose=0)
    path = str(tmp_path / "model.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-6)
    assert isinstance(loaded.get_layer("rank"), layers.SoftRank)
    assert loaded.get_layer("rank").direction == "DESCENDING"
    assert isinstance(loaded.loss, losses.SpearmanLoss)
    assert loaded.loss.regularization_strength == 0.5
    # Both evaluate to the same loss and metric after the reload.
    np.testing.assert_allclose(
        loaded.evaluate(x, x, verbose=0), model.evaluate(x, x, verbose=0), rtol=1e-5
    )


def test_saved_model_export_reload_outputs_and_gradients(tmp_path):
    keras.utils.set_random_seed(2)
    inp = keras.Input((6,))
    out = layers.SoftRank(regularization_strength=0.5)(keras.layers.Dense(6)(inp))
    model = keras.Model(inp, layers.SoftSort(regularization_strength=0.5)(out))
    path = str(tmp_path / "exported")
    model.export(path, verbose=False)
    reloaded = tf.saved_model.load(path)
    x = tf.constant(rng().normal(size=(3, 6)).astype("float32"))
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        want, got = model(x), reloaded.serve(x)
        want_sum, got_sum = tf.reduce_sum(want * want), tf.reduce_sum(got * got)
    np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-6)
    np.testing.assert_allclose(
        tape.gradient(got_sum, x).numpy(), tape.gradient(want_sum, x).numpy(), rtol=1e-5, atol=1e-6
    )


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision_trains(policy):
    before = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(policy)
    try:
        keras.utils.set_random_seed(0)
        x, y = _ranking_data(samples=32)
        model = _ranking_model()
        sort_layer = [l for l in model.layers if isinstance(l, layers.SoftSort)][0]
        assert sort_layer.compute_dtype == policy.split("_")[1]
        assert model(x[:2]).dtype == policy.split("_")[1]
        model.compile(keras.optimizers.Adam(0.05), loss=spearman_01())
        hist = model.fit(x, y, batch_size=16, epochs=4, verbose=0).history["loss"]
        assert np.all(np.isfinite(hist)) and hist[-1] < hist[0], hist
    finally:
        keras.mixed_precision.set_global_policy(before)


@needs_xla
def test_jit_compile_with_spearman_loss():
    keras.utils.set_random_seed(0)
    x, y = _ranking_data(samples=32)
    inp = keras.Input((8, 3))
    out = keras.layers.Reshape((8,))(keras.layers.Dense(1)(inp))
    model = keras.Model(inp, out)
    model.compile(keras.optimizers.Adam(0.05), loss=spearman_01(),
                  jit_compile=True)
    hist = model.fit(x, y, batch_size=16, epochs=4, verbose=0).history["loss"]
    assert model.jit_compile
    assert np.all(np.isfinite(hist)) and hist[-1] < hist[0], hist


def test_mirrored_strategy_in_subprocess():
    """tests/test_distribute.py needs 2 logical CPUs, set before TF starts: own process."""
    here = os.path.dirname(os.path.abspath(__file__))
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider",
         os.path.join(here, "test_distribute.py")],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "1 passed" in proc.stdout, proc.stdout[-2000:]


# --------------------------------------------------------------------------- losses


@pytest.mark.parametrize("mode", MODES)
def test_spearman_loss_matches_spearmanr(mode):
    r = rng(2)
    y_true = r.normal(size=(4, 9)).astype("float32")
    y_pred = r.normal(size=(4, 9)).astype("float32")
    loss = losses.SpearmanLoss(regularization_strength=0.01, reduction=None)
    got = run(mode, loss, y_true, y_pred)
    want = [1.0 - scipy.stats.spearmanr(y_true[i], y_pred[i])[0] for i in range(4)]
    np.testing.assert_allclose(got, want, atol=1e-5)
    reduced = run(mode, losses.SpearmanLoss(regularization_strength=0.01), y_true, y_pred)
    np.testing.assert_allclose(reduced, np.mean(want), atol=1e-5)


def test_spearman_loss_gradient_and_float16_inputs():
    y_true = tf.constant(rng(3).normal(size=(2, 5)), tf.float16)
    y_pred = tf.Variable(rng(4).normal(size=(2, 5)).astype("float16"))
    with tf.GradientTape() as tape:
        value = losses.SpearmanLoss()(y_true, y_pred)
    assert value.dtype == tf.float32
    grad = tape.gradient(value, y_pred)
    assert grad is not None and np.all(np.isfinite(grad.numpy()))


@pytest.mark.parametrize("cls", [losses.SpearmanLoss, losses.SoftNDCGLoss])
def test_ranked_losses_reject_bad_shapes(cls):
    loss = cls()
    with pytest.raises(ValueError, match="y_true and y_pred"):
        loss(np.zeros((2, 5), "float32"), np.zeros((2, 6), "float32"))
    with pytest.raises(ValueError, match="rank >= 2"):
        loss(np.zeros((5,), "float32"), np.zeros((5,), "float32"))
    # Also at trace time in a functional graph.
    with pytest.raises(ValueError, match="y_true and y_pred"):
        tf.function(loss).get_concrete_function(
            tf.TensorSpec((None, 4)), tf.TensorSpec((None, 3)))


def _numpy_ndcg(rel, scores, k=None):
    n = scores.shape[-1]
    k = n if k is None else k
    out = []
    for r, s in zip(rel, scores):
        gains = 2.0 ** r - 1.0
        ranks = np.empty(n)
        ranks[np.argsort(-s, kind="stable")] = np.arange(1, n + 1)
        dcg = np.sum(np.where(ranks <= k, gains / np.log2(1 + ranks), 0.0))
        ideal = np.sort(gains)[::-1][:k]
        idcg = np.sum(ideal / np.log2(2 + np.arange(len(ideal))))
        out.append(dcg / idcg if idcg > 0 else 1.0)
    return np.array(out)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("k", [None, 3])
def test_soft_ndcg_loss_matches_hard_ndcg_at_small_eps(mode, k):
    r = rng(5)
    rel = r.integers(0, 4, size=(6, 10)).astype("float32")
    rel[0] = 0.0  # an all-zero list: loss 0 by convention
    scores = r.normal(size=(6, 10)).astype("float32")
    loss = losses.SoftNDCGLoss(regularization_strength=1e-4, k=k, reduction=None)
    got = run(mode, loss, rel, scores)
    np.testing.assert_allclose(got, 1.0 - _numpy_ndcg(rel, scores, k), atol=1e-5)
    assert got[0] == 0.0


def test_soft_ndcg_loss_gradient_improves_ranking():
    rel = tf.constant([[3.0, 0.0, 1.0, 2.0, 0.0]])
    scores = tf.Variable([[0.0, 1.0, 0.5, -0.5, 0.2]])
    loss = losses.SoftNDCGLoss(regularization_strength=0.5)
    before = float(loss(rel, scores))
    for _ in range(50):
        with tf.GradientTape() as tape:
            value = loss(rel, scores)
        scores.assign_sub(0.5 * tape.gradient(value, scores))
    assert float(loss(rel, scores)) < before - 0.1


# --------------------------------------------------------------------------- metric


@pytest.mark.parametrize("mode", MODES)
def test_spearman_correlation_matches_scipy_with_ties(mode):
    r = rng(6)
    y_true = r.integers(0, 4, size=(7, 11)).astype("float32")
    y_pred = r.integers(0, 5, size=(7, 11)).astype("float32")
    y_pred[2] = 1.0  # constant row: scipy gives NaN, the metric counts 0
    weights = r.uniform(0.5, 2.0, size=(7,)).astype("float32")
    with np.errstate(all="ignore"), pytest.warns(scipy.stats.ConstantInputWarning):
        want = np.array([scipy.stats.spearmanr(y_true[i], y_pred[i])[0] for i in range(7)])
    want = np.nan_to_num(want)
    metric = metrics.SpearmanCorrelation()

    def update(a, b, w):
        metric.update_state(a, b, sample_weight=w)
        return metric.result()

    got = run(mode, update, y_true[:4], y_pred[:4], weights[:4])
    got = run(mode, update, y_true[4:], y_pred[4:], weights[4:])  # accumulates over calls
    np.testing.assert_allclose(got, np.average(want, weights=weights), atol=1e-6)
    metric.reset_state()
    metric.update_state(y_true, y_pred)
    np.testing.assert_allclose(metric.result().numpy(), want.mean(), atol=1e-6)


def test_spearman_correlation_under_xla_and_rejects_bad_shapes():
    r = rng(7)
    a = r.integers(0, 3, size=(4, 9)).astype("float32")
    b = r.normal(size=(4, 9)).astype("float32")
    xla = tf.function(metrics.spearman_correlation, jit_compile=True)(a, b).numpy()
    want = [scipy.stats.spearmanr(a[i], b[i])[0] for i in range(4)]
    np.testing.assert_allclose(xla, want, atol=1e-12)
    np.testing.assert_array_equal(
        metrics.average_ranks(a).numpy(), scipy.stats.rankdata(a, axis=-1))
    with pytest.raises(ValueError, match="same shape"):
        metrics.SpearmanCorrelation().update_state(a, b[:, :5])


# --------------------------------------------------------------------------- diff_sort / soft_topk


@needs_diff_sort
@pytest.mark.parametrize("mode", MODES)
def test_diff_sort_layer_matches_function(mode):
    x = rng(8).normal(size=(3, 6)).astype("float32")
    layer = layers.DiffSort(network="odd_even", relaxation="logistic", steepness=20.0,
                            direction="DESCENDING")
    got = run(mode, layer, x)
    want = tfsort.diff_sort(x, network="odd_even", relaxation="logistic", steepness=20.0,
                            direction="DESCENDING").numpy()
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
    inp = keras.Input((6,))
    assert tuple(layers.DiffSort()(inp).shape) == (None, 6)


@needs_diff_sort
def test_diff_sort_layer_save_load(tmp_path):
    inp = keras.Input((5,))
    model = keras.Model(inp, layers.DiffSort(steepness=15.0)(keras.layers.Dense(5)(inp)))
    x = rng(9).normal(size=(4, 5)).astype("float32")
    path = str(tmp_path / "d.keras")
    model.save(path)
    reloaded = keras.models.load_model(path)
    np.testing.assert_allclose(reloaded(x).numpy(), model(x).numpy(), rtol=1e-6)


@needs_soft_topk
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("method,k", [("sigmoid", 2.5), ("sparse", 2)])
def test_soft_topk_layer_matches_function(mode, method, k):
    x = rng(10).normal(size=(3, 7)).astype("float32")
    layer = layers.SoftTopK(k=k, regularization_strength=0.3, method=method)
    got = run(mode, layer, x)
    want = tfsort.soft_topk(x, k, regularization_strength=0.3, method=method).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(got.sum(-1), k, rtol=1e-4)
    with pytest.raises(ValueError, match="k"):
        layers.SoftTopK(k=7)(keras.Input((7,)))


@needs_soft_topk
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("method", ["sigmoid", "sparse"])
def test_top_k_cross_entropy_ids_and_one_hot(mode, method):
    r = rng(11)
    logits = r.normal(size=(5, 6)).astype("float32")
    ids = r.integers(0, 6, size=(5,))
    m = tfsort.soft_topk(logits, 2, regularization_strength=0.5, method=method).numpy()
    want = -np.log(np.maximum(m[np.arange(5), ids], 1e-7))
    loss = losses.TopKCrossEntropy(k=2, regularization_strength=0.5, method=method, reduction=None)
    for y_true in (ids, ids[:, None], np.eye(6, dtype="float32")[ids]):
        np.testing.assert_allclose(run(mode, loss, y_true, logits), want, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="y_true"):
        loss(np.zeros((5, 4)), logits)


@needs_soft_topk
def test_top_k_cross_entropy_trains():
    keras.utils.set_random_seed(0)
    r = rng(12)
    x = r.normal(size=(64, 4)).astype("float32")
    y = np.argmax(x @ r.normal(size=(4, 5)), axis=-1)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(5)])
    model.compile(keras.optimizers.Adam(0.05), loss=losses.TopKCrossEntropy(k=2))
    hist = model.fit(x, y, batch_size=16, epochs=5, verbose=0).history["loss"]
    assert np.all(np.isfinite(hist)) and hist[-1] < hist[0], hist


# --------------------------------------------------------------------------- docstrings


def test_docstring_examples_run():
    import doctest

    needs = {
        "DiffSort": HAS_DIFF_SORT,
        "SoftTopK": HAS_SOFT_TOPK,
        "TopKCrossEntropy": HAS_SOFT_TOPK,
    }
    finder = doctest.DocTestFinder()
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    ran = 0
    for module in (layers, losses, metrics):
        for test in finder.find(module, globs={"tfsort": tfsort, "np": np, "tf": tf}):
            if not test.examples or not needs.get(test.name.split(".")[-1], True):
                continue
            runner.run(test)
            ran += 1
    assert ran >= 5
    assert runner.summarize(verbose=False).failed == 0


@pytest.mark.parametrize(
    "make_loss, kind",
    [
        (lambda: losses.SpearmanLoss(regularization_strength=0.5), "scores"),
        (lambda: losses.SpearmanLoss(regularization="kl"), "scores"),
        (lambda: losses.SoftNDCGLoss(regularization_strength=0.3), "relevance"),
        (lambda: losses.SoftNDCGLoss(regularization_strength=0.3, k=3), "relevance"),
        (lambda: losses.TopKCrossEntropy(2), "ids"),
        (lambda: losses.TopKCrossEntropy(2, 0.5, method="sparse"), "ids"),
    ],
)
def test_every_loss_under_xla_matches_eager(make_loss, kind):
    """Keras never asks losses whether they support XLA: each must compile with
    jit_compile=True (through the composite paths) and give the eager custom-op numbers."""
    rng = np.random.default_rng(5)
    y_pred = tf.constant(rng.normal(size=(4, 7)).astype(np.float32))
    if kind == "scores":
        y_true = tf.constant(rng.normal(size=(4, 7)).astype(np.float32))
    elif kind == "relevance":
        y_true = tf.constant(rng.integers(0, 4, size=(4, 7)).astype(np.float32))
    else:
        y_true = tf.constant(rng.integers(0, 7, size=(4,)))
    loss = make_loss()

    def value_and_grad(p):
        with tf.GradientTape() as tape:
            tape.watch(p)
            v = loss(y_true, p)
        return v, tape.gradient(v, p)

    v0, g0 = value_and_grad(y_pred)
    v1, g1 = tf.function(value_and_grad, jit_compile=True)(y_pred)
    np.testing.assert_allclose(v1.numpy(), v0.numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(g1.numpy(), g0.numpy(), rtol=1e-4, atol=1e-5)
    assert np.abs(g0.numpy()).sum() > 0
