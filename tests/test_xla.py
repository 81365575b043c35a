"""The XLA composite path (tfsort/_xla.py) against the custom ops.

Each public function runs under tf.function(jit_compile=True), where it dispatches to the
composite path, and is compared (values and a VJP with a random cotangent) with the eager
custom op.
"""

import numpy as np
import pytest
import tensorflow as tf

import tfsort
from tfsort import _utils, _xla

REGS = ["l2", "kl"]


@pytest.fixture(autouse=True, params=["loop", "matrix"])
def xla_path(request, monkeypatch):
    """Runs every test on both composite paths (tfsort/_xla.py): the PAV loop (what CPU-only
    machines and long rows use) and the O(n^2) matrix formulas (short rows on GPU
    machines), forced through the row-length bound."""
    monkeypatch.setattr(_xla, "_MATRIX_MAX_N", 0 if request.param == "loop" else 1 << 20)
    return request.param
DIRECTIONS = ["ASCENDING", "DESCENDING"]
TOL = {tf.float32: 1e-5, tf.float64: 1e-10, tf.float16: 2e-3, tf.bfloat16: 2e-2}


def _data(shape, dtype, seed=0, scale=1.0):
    rng = np.random.default_rng(seed)
    return tf.constant(scale * rng.normal(size=shape), dtype)


def _value_and_vjp(fn, args, cot):
    with tf.GradientTape() as tape:
        tape.watch(args)
        out = fn(*args)
        loss = tf.reduce_sum(tf.cast(out, tf.float64) * tf.cast(cot, tf.float64))
    return out, tape.gradient(loss, args)


def _compare(fn, args, dtype, cot_shape=None):
    """Eager custom op vs jit composite: values and gradients within TOL[dtype]."""
    _compare_many([(fn, args, cot_shape)], dtype)


def _compare_many(cases, dtype):
    """_compare for several (fn, args, cot_shape) cases in ONE jit function (one compile)."""
    cots = [_data(c or a[0].shape, tf.float64, seed=7) for _, a, c in cases]
    want = [_value_and_vjp(fn, args, cot) for (fn, args, _), cot in zip(cases, cots)]

    @tf.function(jit_compile=True)
    def jitted(all_args):
        return [_value_and_vjp(fn, list(a), cot)
                for (fn, _, _), a, cot in zip(cases, all_args, cots)]

    got = jitted([args for _, args, _ in cases])
    tol = TOL[dtype]
    for (g_out, g_grads), (w_out, w_grads) in zip(got, want):
        assert g_out.dtype == w_out.dtype == dtype
        for g, w in zip([g_out, *g_grads], [w_out, *w_grads]):
            assert g.dtype == dtype
            np.testing.assert_allclose(
                tf.cast(g, tf.float64), tf.cast(w, tf.float64), rtol=tol, atol=tol
            )


# --- in_xla_context ---------------------------------------------------------------------


def test_in_xla_context():
    seen = {}

    def probe(key):
        def f(x):
            seen[key] = _utils.in_xla_context()
            return x

        return f

    seen["eager"] = _utils.in_xla_context()
    tf.function(probe("function"))(tf.ones(2))
    tf.function(probe("jit"), jit_compile=True)(tf.ones(2))
    inner = tf.function(probe("jit_nested"), jit_compile=True)

    @tf.function
    def outer(x):
        x = inner(x)
        return probe("after_jit_nested")(x)

    outer(tf.ones(2))
    assert seen == {"eager": False, "function": False, "jit": True, "jit_nested": True,
                    "after_jit_nested": False}


@pytest.mark.parametrize("jit", [True, False])
def test_in_xla_context_keras_train_step(jit):
    import keras

    seen = []

    def loss(y_true, y_pred):
        seen.append(_utils.in_xla_context())
        return tf.reduce_mean(tf.square(y_true - y_pred), axis=-1)

    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(3)])
    model.compile("sgd", loss=loss, jit_compile=jit)
    model.fit(np.ones((4, 3)), np.ones((4, 3)), epochs=1, verbose=0)
    assert seen and all(s == jit for s in seen)


# --- values and gradients under jit ---------------------------------------------------------


@pytest.mark.parametrize("dtype", [tf.float32, tf.float64])
@pytest.mark.parametrize("reg", REGS)
@pytest.mark.parametrize("op", ["soft_rank", "soft_sort"])
def test_soft_ops(op, reg, dtype):
    # eps values are float32-exact: see test_eps_rounding.
    fn = getattr(tfsort, op)
    x = _data((3, 9), dtype)
    _compare_many(
        [
            (lambda v, e=eps, d=direction: fn(v, reg, e, d), [x], None)
            for direction in DIRECTIONS
            for eps in (0.125, 1.0, 8.0)
        ],
        dtype,
    )


@pytest.mark.parametrize("dtype", [tf.float32, tf.float64])
@pytest.mark.parametrize("reg", REGS)
def test_isotonic(reg, dtype):
    y, w = _data((4, 11), dtype, seed=1), _data((4, 11), dtype, seed=2)
    if reg == "l2":
        cases = [(lambda a, d=dec: tfsort.isotonic_regression(a, decreasing=d), [y], None)
                 for dec in (True, False)]
    else:
        cases = [(lambda a, b, d=dec: tfsort.isotonic_regression(a, b, "kl", decreasing=d),
                  [y, w], None) for dec in (True, False)]
    _compare_many(cases, dtype)


@pytest.mark.parametrize("dtype", [tf.float16, tf.bfloat16])
@pytest.mark.parametrize("reg", REGS)
def test_low_precision(reg, dtype):
    x = _data((2, 8), dtype)
    _compare_many([(lambda v: tfsort.soft_rank(v, reg, 0.5), [x], None),
                   (lambda v: tfsort.soft_sort(v, reg, 0.5, "DESCENDING"), [x], None)], dtype)


@pytest.mark.parametrize("axis", [0, 1, -3])
def test_axis(axis):
    x = _data((4, 5, 6), tf.float32)
    _compare_many([(lambda v: tfsort.soft_rank(v, "kl", 0.3, axis=axis), [x], None),
                   (lambda v: tfsort.isotonic_regression(v, axis=axis), [x], None)], tf.float32)


def test_long_rows_wide_range():
    # Small eps: wide block-value range and many blocks (KL exercises the stable LSEs).
    x = _data((2, 200), tf.float32, scale=5.0)
    _compare_many([(lambda v, r=reg, f=fn: f(v, r, 0.01), [x], None)
                   for reg in REGS for fn in (tfsort.soft_rank, tfsort.soft_sort)], tf.float32)


def test_ties_pool_like_pav():
    # Exact ties: PAV pools equal neighbours, and so does the composite (values and the
    # block-diagonal Jacobian).
    y = tf.constant([[1.0, 1.0, 3.0, 2.0, 2.0, 0.0], [2.0, 2.0, 2.0, 2.0, 2.0, 2.0]], tf.float64)
    _compare_many([(lambda v: tfsort.isotonic_regression(v), [y], None),
                   (lambda v: tfsort.isotonic_regression(v, decreasing=False), [y], None),
                   (lambda v: tfsort.soft_rank(v, "l2", 100.0), [y], None),
                   (lambda v: tfsort.isotonic_regression(v, v * 0 + 1, "kl"), [y], None)],
                  tf.float64)
    # Many ties, both regularizations: integer-valued rows (float32).
    x = tf.constant(np.random.default_rng(1).integers(0, 4, size=(16, 12)), tf.float32)
    _compare_many([(lambda v, r=reg, f=fn: f(v, r, 0.5), [x], None)
                   for reg in REGS for fn in (tfsort.soft_rank, tfsort.soft_sort)], tf.float32)


@pytest.mark.parametrize("n", [0, 1, 2])
def test_small_and_empty_rows(n):
    for shape in [(3, n), (0, n)]:
        x = _data(shape, tf.float32)
        _compare_many([(lambda v: tfsort.soft_rank(v, "kl"), [x], None),
                       (lambda v: tfsort.soft_sort(v), [x], None),
                       (lambda a, b: tfsort.isotonic_regression(a, b, "kl"),
                        [x, x * 0.5 + 0.1], None)],
                      tf.float32)


def test_non_finite_rows_are_nan():
    x = np.random.default_rng(3).normal(size=(4, 5)).astype(np.float32)
    x[1, 2] = np.nan
    x[3, 0] = np.inf
    x = tf.constant(x)
    for fn in (
        lambda v: tfsort.soft_rank(v, "kl"),
        lambda v: tfsort.soft_sort(v),
        lambda v: tfsort.isotonic_regression(v, v, "kl"),
    ):
        cot = tf.ones_like(x, tf.float64)
        want, want_g = _value_and_vjp(fn, [x], cot)
        got, got_g = tf.function(lambda v: _value_and_vjp(fn, [v], cot), jit_compile=True)(x)
        np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
        np.testing.assert_array_equal(np.isnan(got)[[1, 3]], True)
        np.testing.assert_allclose(got, want, atol=1e-5)
        np.testing.assert_array_equal(np.isnan(got_g[0]), np.isnan(want_g[0]))
        np.testing.assert_allclose(got_g[0], want_g[0], atol=1e-5)


def test_unknown_batch_dimension():
    fn = tf.function(
        lambda v: tfsort.soft_rank(v, "kl", 0.5),
        jit_compile=True,
        input_signature=[tf.TensorSpec([None, 6], tf.float32)],
    )
    for rows in (1, 4):
        x = _data((rows, 6), tf.float32, seed=rows)
        np.testing.assert_allclose(fn(x), tfsort.soft_rank(x, "kl", 0.5), rtol=1e-5, atol=1e-5)
    # unknown row length too (the KL scan then uses tf.math.cumulative_logsumexp)
    fn = tf.function(
        lambda v: (tfsort.soft_sort(v), tfsort.soft_rank(v, "kl", 0.5)),
        jit_compile=True,
        input_signature=[tf.TensorSpec([None, None], tf.float32)],
    )
    x = _data((3, 7), tf.float32)
    got_sort, got_rank = fn(x)
    np.testing.assert_allclose(got_sort, tfsort.soft_sort(x), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got_rank, tfsort.soft_rank(x, "kl", 0.5), rtol=1e-5, atol=1e-5)


def test_spearmanr_under_jit():
    pred, target = _data((3, 10), tf.float32, seed=4), _data((3, 10), tf.float32, seed=5)
    _compare_many(
        [(lambda p, t, r=reg: tfsort.spearmanr(p, t, regularization=r,
                                               regularization_strength=0.1),
          [pred, target], (3,)) for reg in REGS],
        tf.float32,
    )


def test_argument_errors_under_jit():
    x = tf.ones((2, 3))
    cases = [
        (lambda v: tfsort.soft_rank(v, "l1"), ValueError, "regularization"),
        (lambda v: tfsort.soft_sort(v, regularization_strength=0.0), ValueError,
         "regularization_strength"),
        (lambda v: tfsort.soft_rank(v, direction="UP"), ValueError, "direction"),
        (lambda v: tfsort.soft_rank(v, axis=2), ValueError, "axis"),
        (lambda v: tfsort.isotonic_regression(v, v), ValueError, "w"),
        (lambda v: tfsort.isotonic_regression(v, None, "kl"), ValueError, "w"),
        (lambda v: tfsort.isotonic_regression(v, v[:, :2], "kl"), ValueError, "w"),
        (lambda v: tfsort.isotonic_regression(v, decreasing=1), TypeError, "decreasing"),
    ]
    for fn, err, word in cases:
        with pytest.raises(err, match=word):
            tf.function(fn, jit_compile=True)(x)


def test_composite_matches_eagerly():
    # The composite also runs outside XLA (useful for debugging it).
    x = _data((3, 8), tf.float64)
    np.testing.assert_allclose(_xla.soft_rank(x, "kl", 0.25), tfsort.soft_rank(x, "kl", 0.25),
                               rtol=1e-12, atol=1e-12)


def test_keras_jit_training_with_spearman_loss():
    import keras

    def loss(y_true, y_pred):
        return 1.0 - tfsort.spearmanr(y_pred, y_true, regularization_strength=0.1)

    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 5)).astype(np.float32)
    y = (x @ rng.normal(size=(5, 8))).astype(np.float32)
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((5,)), keras.layers.Dense(8)])
    model.compile(keras.optimizers.Adam(0.05), loss=loss, jit_compile=True)
    hist = model.fit(x, y, batch_size=16, epochs=3, verbose=0).history["loss"]
    assert np.all(np.isfinite(hist)) and hist[-1] < hist[0]


def _pav_decreasing(y):
    blocks = []
    for v in y:
        blocks.append([v, 1])
        while len(blocks) > 1 and blocks[-1][0] / blocks[-1][1] >= blocks[-2][0] / blocks[-2][1]:
            s, c = blocks.pop()
            blocks[-1][0] += s
            blocks[-1][1] += c
    return np.concatenate([[s / c] * c for s, c in blocks])


def test_eps_not_rounded_in_float64():
    # Both paths keep eps = 0.1 in float64 (the custom ops take it as a float64 scalar
    # input, not a float32 attr), so both match a float64 NumPy reference tightly.
    x = np.random.default_rng(0).normal(size=9)
    eps = 0.1
    z = x / eps
    perm = np.argsort(-z, kind="stable")
    s = z[perm]
    ref = np.empty(9)
    ref[perm] = s - _pav_decreasing(s - np.arange(9, 0, -1.0))
    got = tf.function(lambda v: tfsort.soft_rank(v, "l2", eps), jit_compile=True)(
        tf.constant(x[None])
    )
    np.testing.assert_allclose(got[0], ref, rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(tfsort.soft_rank(x[None], "l2", eps)[0], ref, rtol=1e-13, atol=1e-13)


def test_path_choice_by_row_length(monkeypatch, xla_path):
    """With the GPU bound, static rows up to 256 take the matrix path and longer rows (or
    rows of unknown length) the loop path, whose memory is O(n): a 4 x 3000 KL soft_rank
    (the matrix path would hold several [4, 3000, 3000] float64 temporaries, ~1.4 GiB)
    matches the custom op."""
    if xla_path == "matrix":
        pytest.skip("sets the bound itself")
    monkeypatch.setattr(_xla, "_MATRIX_MAX_N", _xla._GPU_MATRIX_MAX_N)
    calls = []
    real = _xla._segments_pav
    monkeypatch.setattr(_xla, "_segments_pav", lambda y, w: calls.append(1) or real(y, w))
    for n, loop in [(256, False), (257, True)]:
        calls.clear()
        tf.function(lambda v: tfsort.soft_rank(v), jit_compile=True)(_data((2, n), tf.float32))
        assert bool(calls) == loop, n
    calls.clear()
    tf.function(lambda v: tfsort.soft_sort(v), jit_compile=True,
                input_signature=[tf.TensorSpec([None, None], tf.float32)])(
                    _data((2, 5), tf.float32))
    assert calls
    _compare_many([(lambda v: tfsort.soft_rank(v, "kl", 0.1), [_data((4, 3000), tf.float32)],
                    None)], tf.float32)
