"""Tests for tfsort.soft_topk: values vs float64 NumPy references, gradients (closed form,
finite differences, second order, forward mode), XLA composite path, low precision, bad
input and non-finite rows."""

import numpy as np
import pytest
import tensorflow as tf

import tfsort
from tfsort import topk as topk_module

METHODS = ["sigmoid", "sparse"]


# ---------------------------------------------------------------------------------------
# float64 NumPy references.


def ref_sigmoid_topk(x, k, eps):
    """Bisection on the threshold to full float64 precision, row by row."""
    x = np.asarray(x, np.float64)
    k = np.broadcast_to(np.asarray(k, np.float64), x.shape[:-1])
    out = np.empty_like(x)
    for idx in np.ndindex(x.shape[:-1]):
        row, kk = x[idx], float(k[idx])
        n = row.size
        base = eps * np.log(kk / (n - kk))
        lo, hi = base - row.max(), base - row.min()
        for _ in range(400):
            mid = 0.5 * (lo + hi)
            if mid in (lo, hi):
                break
            if (1.0 / (1.0 + np.exp(-(row + mid) / eps))).sum() < kk:
                lo = mid
            else:
                hi = mid
        out[idx] = 1.0 / (1.0 + np.exp(-(row + 0.5 * (lo + hi)) / eps))
    return out


def ref_sparse_topk(x, k, eps):
    """Projection onto the capped simplex by bisection on the clip threshold, finished
    exactly on the fractional set."""
    z = np.asarray(x, np.float64) / eps
    k = np.broadcast_to(np.asarray(k, np.float64), z.shape[:-1])
    out = np.empty_like(z)
    for idx in np.ndindex(z.shape[:-1]):
        row, kk = z[idx], float(k[idx])
        lo, hi = -row.max(), 1.0 - row.min()
        for _ in range(400):
            mid = 0.5 * (lo + hi)
            if mid in (lo, hi):
                break
            if np.clip(row + mid, 0, 1).sum() < kk:
                lo = mid
            else:
                hi = mid
        tau = 0.5 * (lo + hi)
        u = row + tau
        frac = (u > 0) & (u < 1)
        if frac.any():
            tau = (kk - (u >= 1).sum() - row[frac].sum()) / frac.sum()
        out[idx] = np.clip(row + tau, 0, 1)
    return out


def ref(x, k, eps, method):
    return (ref_sigmoid_topk if method == "sigmoid" else ref_sparse_topk)(x, k, eps)


def closed_form_jacobian(m, eps):
    v = m * (1 - m) / eps
    s = v.sum()
    return np.diag(v) - (np.outer(v, v) / s if s > 0 else 0.0)


def rand(shape, seed=0, dtype=np.float64):
    return np.random.default_rng(seed).normal(size=shape).astype(dtype)


def call(mode, fn, *args):
    if mode == "eager":
        return fn(*args)
    return tf.function(fn)(*args)


# ---------------------------------------------------------------------------------------
# Values.


@pytest.mark.parametrize("mode", ["eager", "function"])
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("eps", [1 / 64, 0.25, 1.0, 8.0])
def test_values_match_reference_float64(mode, method, eps):
    x = rand((5, 17), seed=1)
    out = call(mode, lambda v: tfsort.soft_topk(v, 4, eps, method=method), tf.constant(x))
    np.testing.assert_allclose(out.numpy(), ref(x, 4, eps, method), atol=1e-10, rtol=1e-9)
    np.testing.assert_allclose(out.numpy().sum(-1), 4.0, atol=1e-10)
    assert out.dtype == tf.float64


@pytest.mark.parametrize("mode", ["eager", "function"])
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("eps", [0.3, 0.1, 7.1])
def test_float64_strength_is_not_rounded_to_float32(mode, method, eps):
    # regularization_strength reaches the float64 kernels unrounded (a float64 scalar
    # input): with eps rounded to float32 (relative error ~1e-8) these would fail.
    assert float(np.float32(eps)) != eps
    x = rand((4, 13), seed=5)
    xt = tf.constant(x)

    def f(v):
        with tf.GradientTape() as tape:
            tape.watch(v)
            m = tfsort.soft_topk(v, 3, eps, method=method)
            loss = tf.reduce_sum(m * tf.constant(np.arange(13.0)))
        return m, tape.gradient(loss, v)

    m, g = call(mode, f, xt)
    want = ref(x, 3, eps, method)
    np.testing.assert_allclose(m.numpy(), want, rtol=1e-12, atol=1e-14)
    for r in range(4):
        if method == "sigmoid":
            jac = closed_form_jacobian(want[r], eps)
        else:
            frac = (want[r] > 0) & (want[r] < 1)
            jac = (np.diag(frac * 1.0) - np.outer(frac, frac) / max(frac.sum(), 1)) / eps
        np.testing.assert_allclose(g.numpy()[r], jac @ np.arange(13.0), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("axis", [0, 1, -1])
def test_float32_and_axis(method, axis):
    x = rand((6, 7, 9), seed=2, dtype=np.float32)
    out = tfsort.soft_topk(x, 3, 0.5, method=method, axis=axis).numpy()
    xm = np.moveaxis(x, axis, -1)
    expected = np.moveaxis(ref(xm, 3, 0.5, method), -1, axis)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, expected, atol=2e-6)
    np.testing.assert_allclose(out.sum(axis), 3.0, atol=1e-5)


def test_sigmoid_real_k_and_per_row_k():
    x = rand((4, 11), seed=3)
    k = np.array([1.5, 2.0, 7.25, 10.5])
    for kk in (k, k[:, None], tf.constant(k, tf.float32)):
        out = tfsort.soft_topk(x, kk, 0.75).numpy()
        np.testing.assert_allclose(out, ref_sigmoid_topk(x, k, 0.75), atol=2e-7 if
                                   isinstance(kk, tf.Tensor) else 1e-10)
    np.testing.assert_allclose(out.sum(-1), k, atol=1e-5)


def test_sparse_per_row_integer_k_and_exact_sparsity():
    x = rand((3, 10), seed=4)
    k = tf.constant([[1], [5], [9]])
    out = tfsort.soft_topk(x, k, 0.0625, method="sparse").numpy()
    np.testing.assert_allclose(out, ref_sparse_topk(x, [1, 5, 9], 0.0625), atol=1e-12)
    # small eps: exactly the hard top-k indicator.
    hard = tfsort.soft_topk(x, 3, 1e-4, method="sparse").numpy()
    top = np.argsort(-x, axis=-1)[:, :3]
    expected = np.zeros_like(x)
    np.put_along_axis(expected, top, 1.0, axis=-1)
    np.testing.assert_array_equal(hard, expected)
    # exact 0s and 1s at moderate eps too.
    m = tfsort.soft_topk(rand((1, 200), 5), 20, 0.3, method="sparse").numpy()
    assert ((m == 0) | (m == 1) | ((m > 0) & (m < 1))).all()
    assert (m == 1).sum() > 0 and (m == 0).sum() > 100


def test_sigmoid_limits():
    x = np.array([[0.3, 2.0, -1.0, 1.2, 0.0]])
    hard = tfsort.soft_topk(x, 2, 1e-3).numpy()
    np.testing.assert_allclose(hard, [[0, 1, 0, 1, 0]], atol=1e-12)
    # float32 saturates to exact 0s and 1s (no denormal floor from the fast exp).
    hard32 = tfsort.soft_topk(tf.constant(x, tf.float32), 2, 1e-3).numpy()
    np.testing.assert_array_equal(hard32, [[0, 1, 0, 1, 0]])
    flat = tfsort.soft_topk(x, 2, 1e6).numpy()
    np.testing.assert_allclose(flat, 0.4, atol=1e-5)
    const = tfsort.soft_topk(np.ones((2, 4)), 1, 1.0).numpy()
    np.testing.assert_allclose(const, 0.25, atol=1e-15)


def test_unknown_batch_and_empty_batch():
    f = tf.function(
        lambda v: tfsort.soft_topk(v, 2, 1.0),
        input_signature=[tf.TensorSpec([None, 6], tf.float32)],
    )
    x = rand((3, 6), 6, np.float32)
    np.testing.assert_allclose(f(x).numpy(), tfsort.soft_topk(x, 2, 1.0).numpy(), atol=1e-7)
    for method in METHODS:
        e = tf.zeros([0, 6])
        with tf.GradientTape() as tape:
            tape.watch(e)
            out = tfsort.soft_topk(e, 2, method=method)
        assert out.shape == (0, 6)
        assert tape.gradient(out, e).shape == (0, 6)
        assert tfsort.soft_topk(tf.zeros([2, 0, 5]), 2, method=method).shape == (2, 0, 5)


def test_python_lists_and_integers():
    out = tfsort.soft_topk([[1, 5, 3, 4]], 2, 0.1, method="sparse")
    assert out.dtype == tf.float32
    np.testing.assert_array_equal(out.numpy(), [[0, 1, 0, 1]])


# ---------------------------------------------------------------------------------------
# Gradients.


@pytest.mark.parametrize("mode", ["eager", "function"])
def test_sigmoid_vjp_equals_closed_form(mode):
    x = rand((3, 8), seed=7)
    g = rand((3, 8), seed=8)

    def fn(v):
        with tf.GradientTape() as tape:
            tape.watch(v)
            m = tfsort.soft_topk(v, 3, 0.375)
        return m, tape.gradient(m, v, output_gradients=tf.constant(g))

    m, grad = call(mode, fn, tf.constant(x))
    for r in range(3):
        jac = closed_form_jacobian(m.numpy()[r], 0.375)
        np.testing.assert_allclose(grad.numpy()[r], jac @ g[r], atol=1e-12)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("eps", [0.1, 1.0, 5.0])
def test_compute_gradient_float64(method, eps):
    x = rand((3, 7), seed=9) * 0.5
    k = tf.constant([2.0, 3.0, 5.0] if method == "sparse" else [1.5, 3.0, 5.5], tf.float64)
    theo, num = tf.test.compute_gradient(
        lambda v: tfsort.soft_topk(v, k, eps, method=method), [tf.constant(x)], delta=1e-6
    )
    np.testing.assert_allclose(theo[0], num[0], atol=1e-6)


def test_sparse_gradient_structure():
    x = tf.constant(rand((1, 12), seed=10))
    with tf.GradientTape() as tape:
        tape.watch(x)
        m = tfsort.soft_topk(x, 4, 0.5, method="sparse")
    jac = tape.jacobian(m, x).numpy()[0, :, 0, :]
    frac = (m.numpy()[0] > 0) & (m.numpy()[0] < 1)
    nf = frac.sum()
    expected = np.zeros((12, 12))
    expected[np.ix_(frac, frac)] = (np.eye(nf) - 1.0 / nf) / 0.5
    np.testing.assert_allclose(jac, expected, atol=1e-12)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("mode", ["eager", "function"])
def test_second_order_vs_finite_differences(method, mode):
    eps = 0.7
    x0 = rand((2, 6), seed=11)
    c = tf.constant(rand((2, 6), seed=12))
    h = tf.constant(rand((2, 6), seed=13))

    def grad_of(v):
        with tf.GradientTape() as tape:
            tape.watch(v)
            m = tfsort.soft_topk(v, 2, eps, method=method)
            loss = tf.reduce_sum(c * m * m)
        return tape.gradient(loss, v)

    def hvp(v):
        with tf.GradientTape() as outer:
            outer.watch(v)
            g = grad_of(v)
            s = tf.reduce_sum(g * h)
        return outer.gradient(s, v)

    got = call(mode, hvp, tf.constant(x0)).numpy()
    d = 1e-5
    fd = (
        grad_of(tf.constant(x0 + d * h.numpy())).numpy()
        - grad_of(tf.constant(x0 - d * h.numpy())).numpy()
    ) / (2 * d)
    np.testing.assert_allclose(got, fd, atol=1e-6)


@pytest.mark.parametrize("method", METHODS)
def test_forward_mode(method):
    x = tf.constant(rand((2, 7), seed=14))
    t = tf.constant(rand((2, 7), seed=15))
    with tf.autodiff.ForwardAccumulator(x, t) as acc:
        m = tfsort.soft_topk(x, 3, 0.6, method=method)
    jvp = acc.jvp(m).numpy()
    with tf.GradientTape() as tape:
        tape.watch(x)
        m2 = tfsort.soft_topk(x, 3, 0.6, method=method)
    jac = tape.batch_jacobian(m2, x).numpy()
    np.testing.assert_allclose(jvp, np.einsum("bij,bj->bi", jac, t.numpy()), atol=1e-12)


# ---------------------------------------------------------------------------------------
# XLA composite path.


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("eps", [0.05, 1.0, 10.0])
def test_xla_matches_kernel(method, eps):
    x = tf.constant(rand((4, 33), seed=16, dtype=np.float32))
    g = tf.constant(rand((4, 33), seed=17, dtype=np.float32))

    def fwd_bwd(v):
        with tf.GradientTape() as tape:
            tape.watch(v)
            m = tfsort.soft_topk(v, 5, eps, method=method)
        return m, tape.gradient(m, v, output_gradients=g)

    m0, g0 = fwd_bwd(x)
    m1, g1 = tf.function(fwd_bwd, jit_compile=True)(x)
    np.testing.assert_allclose(m1.numpy(), m0.numpy(), atol=1e-5)
    np.testing.assert_allclose(g1.numpy(), g0.numpy(), atol=1e-5 * max(1.0, 1.0 / eps))
    assert m1.dtype == tf.float32


def test_xla_per_row_k():
    x = tf.constant(rand((3, 9), seed=18, dtype=np.float32))
    k = tf.constant([[1.0], [4.0], [8.0]])
    for method in METHODS:
        m0 = tfsort.soft_topk(x, k, 0.3, method=method)
        m1 = tf.function(lambda v: tfsort.soft_topk(v, k, 0.3, method=method), jit_compile=True)(x)
        np.testing.assert_allclose(m1.numpy(), m0.numpy(), atol=1e-5)


# ---------------------------------------------------------------------------------------
# Low precision.


@pytest.mark.parametrize("dtype,atol", [(tf.float16, 2e-3), (tf.bfloat16, 1e-2)])
@pytest.mark.parametrize("method", METHODS)
def test_low_precision(dtype, atol, method):
    x = rand((3, 10), seed=19, dtype=np.float32)
    xl = tf.cast(x, dtype)
    with tf.GradientTape() as tape:
        tape.watch(xl)
        m = tfsort.soft_topk(xl, 3, 0.5, method=method)
    g = tape.gradient(m, xl, output_gradients=tf.cast(tf.range(10.0) * tf.ones([3, 1]), dtype))
    assert m.dtype == dtype and g.dtype == dtype
    expected = ref(tf.cast(xl, tf.float64).numpy(), 3, 0.5, method)
    np.testing.assert_allclose(tf.cast(m, tf.float64).numpy(), expected, atol=atol)
    assert np.isfinite(tf.cast(g, tf.float32).numpy()).all()


# ---------------------------------------------------------------------------------------
# Bad input.


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(k=0), "k must satisfy"),
        (dict(k=-1), "k must satisfy"),
        (dict(k=5), "k must satisfy"),
        (dict(k=7.5), "k must satisfy"),
        (dict(k=float("nan")), "k must be finite"),
        (dict(k=2, regularization_strength=0.0), "regularization_strength"),
        (dict(k=2, regularization_strength=-1.0), "regularization_strength"),
        (dict(k=2, regularization_strength=float("inf")), "regularization_strength"),
        (dict(k=2, regularization_strength=float("nan")), "regularization_strength"),
        (dict(k=2, regularization_strength=1e-300), "regularization_strength"),
        (dict(k=2, regularization_strength=1e300), "regularization_strength"),
        (dict(k=2, method="softmax"), "method"),
        (dict(k=2.5, method="sparse"), "integer"),
        (dict(k=np.array([1, 2, 3]), method="sparse"), "shape"),
        (dict(k=np.ones((2, 2))), "shape"),
        (dict(k=np.array([1.0, 2.0, 5.0, 1.0])), "k must satisfy"),
        (dict(k=np.array([1.0, 2.5, 3.0, 1.0]), method="sparse"), "integer"),
        (dict(k=2, axis=2), "axis"),
    ],
)
def test_bad_input_raises_value_error(kwargs, match):
    x = tf.constant(rand((4, 5), seed=20))
    with pytest.raises(ValueError, match=match):
        tfsort.soft_topk(x, **kwargs)


def test_bad_input_types_and_sizes():
    with pytest.raises(ValueError, match="at least 2"):
        tfsort.soft_topk(tf.ones([3, 1]), 1)
    with pytest.raises(ValueError, match="rank"):
        tfsort.soft_topk(tf.constant(1.0), 1)
    with pytest.raises(TypeError):
        tfsort.soft_topk(tf.constant([True, False]), 1)
    with pytest.raises(TypeError):
        tfsort.soft_topk(tf.ones([2, 3]), True)
    with pytest.raises(TypeError):
        tfsort.soft_topk(tf.ones([2, 3]), 1, regularization_strength=tf.constant(1.0))


def test_bad_dynamic_k_raises_at_run_time():
    f = tf.function(
        lambda v, k: tfsort.soft_topk(v, k, method="sparse"),
        input_signature=[tf.TensorSpec([2, 4]), tf.TensorSpec([2])],
    )
    with pytest.raises(tf.errors.InvalidArgumentError, match="k must"):
        f(tf.ones([2, 4]), tf.constant([1.0, 4.0]))
    with pytest.raises(tf.errors.InvalidArgumentError, match="integer"):
        f(tf.ones([2, 4]), tf.constant([1.0, 1.5]))


# ---------------------------------------------------------------------------------------
# Non-finite and saturated rows.


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_row_is_isolated(method, bad):
    x = rand((3, 6), seed=21)
    x[1, 2] = bad
    xt = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(xt)
        m = tfsort.soft_topk(xt, 2, 0.5, method=method)
    g = tape.gradient(m, xt, output_gradients=tf.ones_like(xt) * tf.range(6.0, dtype=tf.float64))
    m, g = m.numpy(), g.numpy()
    assert np.isnan(m[1]).all()
    clean = np.delete(x, 1, axis=0)
    np.testing.assert_allclose(np.delete(m, 1, axis=0), ref(clean, 2, 0.5, method), atol=1e-10)
    assert np.isfinite(np.delete(g, 1, axis=0)).all()


@pytest.mark.parametrize("method", METHODS)
def test_saturated_rows_have_finite_gradients(method):
    x = np.array(
        [
            [1e30, -1e30, 0.0, 1.0, 2.0],
            [1e6, 2e6, -3e6, 4e6, 5e6],
            [1.0, 1.0 + 1e-12, 1.0, 1.0, 1.0],
            [3e38, -3e38, 1e-30, 0.0, 7.0],
        ]
    )
    for eps in (1e-6, 1e-3, 1.0):
        xt = tf.constant(x)
        with tf.GradientTape() as tape:
            tape.watch(xt)
            m = tfsort.soft_topk(xt, 2, eps, method=method)
        g = tape.gradient(m, xt, output_gradients=tf.constant(rand((4, 5), 22)))
        assert np.isfinite(m.numpy()).all()
        np.testing.assert_allclose(m.numpy().sum(-1), 2.0, atol=1e-9)
        assert np.isfinite(g.numpy()).all()
    # float32 too, and a huge row with tiny eps gives the hard top-k.
    m32 = tfsort.soft_topk(tf.constant(x[:2], tf.float32), 2, 1e-6, method=method).numpy()
    np.testing.assert_allclose(m32, [[1, 0, 0, 0, 1], [0, 0, 0, 1, 1]], atol=1e-6)


def test_extreme_magnitudes_terminate():
    # Brackets spanning 1e300 and eps far from the data scale: the solver's iteration cap
    # and key-space bisection keep it finite and fast.
    x = tf.constant(
        [[1e300, -1e300, 0.0, 1e-300, 5.0], [1e-300, 2e-300, 0.0, -1e-300, 3e-300]], tf.float64
    )
    for eps in (1e-30, 1e30):
        for k in (1.0, 2.5, 4.0):
            with tf.GradientTape() as tape:
                tape.watch(x)
                m = tfsort.soft_topk(x, k, eps)
            g = tape.gradient(m, x, output_gradients=tf.ones_like(x))
            np.testing.assert_allclose(m.numpy().sum(-1), k, rtol=1e-12)
            assert np.isfinite(g.numpy()).all()


def test_deterministic_across_calls():
    x = tf.constant(rand((64, 300), seed=23, dtype=np.float32))
    for method in METHODS:
        a = tfsort.soft_topk(x, 17, 0.2, method=method).numpy()
        b = tfsort.soft_topk(x, 17, 0.2, method=method).numpy()
        np.testing.assert_array_equal(a, b)


def test_composite_functions_directly():
    # The composite paths are also usable (and used by the benchmark) outside XLA.
    x = tf.constant(rand((2, 9), seed=24))
    k = tf.constant(3.0, tf.float64)
    np.testing.assert_allclose(
        topk_module._sigmoid_topk_composite(x, k, 0.375).numpy(), ref_sigmoid_topk(x, 3, 0.375),
        atol=1e-12,
    )
    np.testing.assert_allclose(
        topk_module._sparse_topk_composite(x, k, 0.375).numpy(), ref_sparse_topk(x, 3, 0.375),
        atol=1e-12,
    )


def test_eager_sigmoid_calls_take_the_fast_path_and_graphs_do_not(eager_impl, fast_path_spy):
    """An eager last-axis sigmoid soft_topk with a Python k runs SigmoidTopK and, for its
    gradient, SigmoidTopKGrad on the op's output through _utils.make_eager_op's fast path;
    sparse calls and tensor k take the generic path; a tf.function records the same op
    with its registered gradient."""
    seen = fast_path_spy
    rng = np.random.default_rng(61)
    x = tf.constant(rng.normal(size=(3, 9)))
    w = tf.constant(rng.normal(size=(3, 9)))

    def vjp(a, k=3, method="sigmoid"):
        with tf.GradientTape() as tape:
            tape.watch(a)
            out = tfsort.soft_topk(a, k, 0.5, method)
        return out, tape.gradient(out, a, output_gradients=w)

    eager = vjp(x)
    assert seen == ["TFSort>SigmoidTopK", "TFSort>SigmoidTopKGrad"]
    graph = tf.function(vjp)(x)
    for got, want in zip(eager, graph):
        np.testing.assert_array_equal(got.numpy(), want.numpy())
    seen.clear()
    vjp(x, method="sparse")
    vjp(x, k=tf.constant(3.0))  # its registered gradient calls the wrapper
    assert seen == ["TFSort>SigmoidTopKGrad"]
    seen.clear()
    tfsort.soft_topk(x, 2)  # no tape: the fast path, nothing recorded
    assert seen == ["TFSort>SigmoidTopK"]


@pytest.mark.parametrize("kwargs,match", [
    ({"k": 9}, "k must satisfy"), ({"k": 0}, "k must satisfy|positive"),
    ({"k": float("nan")}, "finite"), ({"k": 2, "regularization_strength": 0.0}, "positive"),
    ({"k": 2, "method": "soft"}, "method"),
])
def test_fast_path_leaves_bad_arguments_to_the_checks(eager_impl, kwargs, match):
    """Arguments the kernel or the cache builder reject reach the generic path's checks,
    with or without a tape."""
    x = tf.constant(np.random.default_rng(62).normal(size=(2, 9)))
    for record in (False, True):
        with tf.GradientTape() as tape:
            if record:
                tape.watch(x)
            with pytest.raises(ValueError, match=match):
                tfsort.soft_topk(x, **kwargs)
