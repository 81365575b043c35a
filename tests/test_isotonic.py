"""Tests for tfsort.isotonic: soft_rank, soft_sort, isotonic_regression, spearmanr.

Every numerical claim is checked against tests/reference.py (NumPy float64, written from
design.md section 3 without tfsort), scikit-learn, tf.nn.isotonic_regression, scipy, closed
forms, or finite differences. Each test runs eagerly and inside tf.function (`mode`).
"""

import numpy as np
import pytest
import reference as ref
import scipy.stats
import sklearn.isotonic
import tensorflow as tf

import tfsort

REGS = ["l2", "kl"]
DIRS = ["ASCENDING", "DESCENDING"]
SOFT = {
    "soft_rank": (tfsort.soft_rank, ref.soft_rank),
    "soft_sort": (tfsort.soft_sort, ref.soft_sort),
}
# Tolerances for comparing against the float64 reference (relative to the output scale).
TOL = {tf.float32: 2e-5, tf.float64: 1e-11}


def _rng(seed=0):
    return np.random.default_rng(seed)


def _with_ties(rng, shape):
    """Random values where about half the entries are small integers (so exact ties occur)."""
    x = rng.normal(size=shape) * 2.0
    ints = rng.integers(-3, 4, size=shape).astype(np.float64)
    return np.where(rng.random(shape) < 0.5, ints, x)


def _separated(rng, shape, gap=0.37):
    """Rows of distinct values, consecutive sorted values at least `gap` apart and irregular
    (so no PAV decision is near a tie and finite differences are valid)."""
    n = shape[-1]
    rows = int(np.prod(shape[:-1]))
    out = np.empty((rows, n))
    for r in range(rows):
        steps = gap + rng.random(n) * 1.3
        out[r] = rng.permutation(np.cumsum(steps) - steps.sum() / 2)
    return out.reshape(shape)


def _raw_segments(op, x, eps, **attrs):
    """PAV block id per sorted position, unpacked from a fused op's aux output (block
    starts are flagged in the sign bit)."""
    aux = op(tf.constant(x), tf.constant(eps, tf.float64), num_aux=1, **attrs)[1][0].numpy()
    return np.cumsum(aux < 0, axis=-1) - 1


def _partially_pooled(name, reg, eps, direction, shape, seed):
    """Separated inputs, scaled so every row's PAV pass pools some items but not all.

    Only the block structure (segments from the raw op) picks the scale; with irregular
    gaps no PAV decision is near a tie, so finite differences stay valid. Without this a
    gradient test could pass on a trivial Jacobian (no pooling: 0 or a permutation)."""
    base = _separated(_rng(seed), shape)
    raw = tfsort._ops.ops
    op = raw.tf_sort_soft_rank if name == "soft_rank" else raw.tf_sort_soft_sort
    for scale in np.geomspace(1e-3, 1e4, 281):
        seg = _raw_segments(op, base * scale, eps, regularization=reg,
                            descending=direction == "DESCENDING")
        blocks = seg.reshape(-1, shape[-1]).max(-1) + 1
        if ((blocks >= 2) & (blocks < shape[-1])).all():
            return base * scale
    raise AssertionError(f"no partially pooled scale for {name} {reg} {eps} {direction}")


def _assert_close(got, want, tol):
    got = np.asarray(got, np.float64)
    want = np.asarray(want, np.float64)
    scale = max(1.0, float(np.max(np.abs(want))) if want.size else 1.0)
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol * scale)


def _ref_soft(name, x, eps, reg, direction, axis=-1):
    return ref.along_axis(
        SOFT[name][1], x, axis, eps=eps, regularization=reg, direction=direction
    )


# --------------------------------------------------------------------------------------
# Values against the float64 reference.


@pytest.mark.parametrize("dtype", [tf.float32, tf.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("eps", [0.01, 0.3, 1.0, 10.0])
@pytest.mark.parametrize("direction", DIRS)
@pytest.mark.parametrize("reg", REGS)
@pytest.mark.parametrize("name", sorted(SOFT))
def test_soft_values_match_reference(mode, name, reg, direction, eps, dtype):
    x = _with_ties(_rng(1), (4, 9))
    fn = mode(
        lambda v: SOFT[name][0](
            v, regularization=reg, regularization_strength=eps, direction=direction
        )
    )
    xt = tf.constant(x, dtype)
    got = fn(xt)
    assert got.dtype == dtype and got.shape == x.shape
    want = _ref_soft(name, xt.numpy().astype(np.float64), eps, reg, direction)
    _assert_close(got, want, TOL[dtype])


@pytest.mark.parametrize("dtype", [tf.float32, tf.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("decreasing", [True, False])
@pytest.mark.parametrize("reg", REGS)
def test_isotonic_values_match_reference(mode, reg, decreasing, dtype):
    rng = _rng(2)
    y = _with_ties(rng, (5, 11))
    w = rng.normal(size=(5, 11))
    if reg == "l2":
        fn = mode(lambda a: tfsort.isotonic_regression(a, decreasing=decreasing))
        got = fn(tf.constant(y, dtype))
        want = ref.along_axis(ref.isotonic_l2, y, -1, decreasing=decreasing)
    else:
        fn = mode(
            lambda a, b: tfsort.isotonic_regression(
                a, b, regularization="kl", decreasing=decreasing
            )
        )
        got = fn(tf.constant(y, dtype), tf.constant(w, dtype))
        yd = tf.constant(y, dtype).numpy().astype(np.float64)
        wd = tf.constant(w, dtype).numpy().astype(np.float64)
        want = ref.along_axis2(ref.isotonic_kl, yd, wd, decreasing=decreasing)
    assert got.dtype == dtype
    _assert_close(got, want, TOL[dtype])


def _call(name, x, axis, reg="l2", direction="ASCENDING", w=None):
    if name in SOFT:
        return SOFT[name][0](
            x, regularization=reg, regularization_strength=0.75, direction=direction, axis=axis
        )
    if name == "iso_l2":
        return tfsort.isotonic_regression(x, axis=axis, decreasing=direction == "DESCENDING")
    return tfsort.isotonic_regression(
        x, w, regularization="kl", axis=axis, decreasing=direction == "DESCENDING"
    )


def _ref_call(name, x, axis, reg="l2", direction="ASCENDING", w=None):
    if name in SOFT:
        return _ref_soft(name, x, 0.75, reg, direction, axis)
    dec = direction == "DESCENDING"
    if name == "iso_l2":
        return ref.along_axis(ref.isotonic_l2, x, axis, decreasing=dec)
    return ref.along_axis2(ref.isotonic_kl, x, w, axis, decreasing=dec)


OPS = [("soft_rank", "l2"), ("soft_rank", "kl"), ("soft_sort", "l2"), ("soft_sort", "kl"),
       ("iso_l2", "l2"), ("iso_kl", "kl")]


@pytest.mark.parametrize("axis", [0, 1, -1, 2, -2])
@pytest.mark.parametrize("direction", DIRS)
@pytest.mark.parametrize("name,reg", OPS)
def test_any_axis_rank3(mode, name, reg, direction, axis):
    rng = _rng(3)
    x = _with_ties(rng, (2, 3, 5))
    w = rng.normal(size=(2, 3, 5))
    fn = mode(lambda a, b: _call(name, a, axis, reg, direction, b))
    got = fn(tf.constant(x), tf.constant(w))
    assert got.shape == x.shape
    _assert_close(got, _ref_call(name, x, axis, reg, direction, w), TOL[tf.float64])


@pytest.mark.parametrize("name,reg", OPS)
def test_rank1_input(mode, name, reg):
    rng = _rng(4)
    x = _with_ties(rng, (8,))
    w = rng.normal(size=(8,))
    got = mode(lambda a, b: _call(name, a, -1, reg, "ASCENDING", b))(tf.constant(x), tf.constant(w))
    assert got.shape == (8,)
    _assert_close(got, _ref_call(name, x, -1, reg, "ASCENDING", w), TOL[tf.float64])


@pytest.mark.parametrize(
    "spec_shape,axis,data_shape",
    [([None, 6], -1, (3, 6)), ([None, None], -1, (4, 7)), ([6, None], 0, (6, 2)),
     ([None, None, 5], 1, (2, 3, 5))],
)
@pytest.mark.parametrize("name,reg", OPS)
def test_unknown_dims_in_tf_function(name, reg, spec_shape, axis, data_shape):
    spec = tf.TensorSpec(spec_shape, tf.float64)
    fn = tf.function(
        lambda a, b: _call(name, a, axis, reg, "ASCENDING", b), input_signature=[spec, spec]
    )
    out_spec = fn.get_concrete_function().structured_outputs
    assert out_spec.shape.as_list() == spec_shape  # static shape propagates unchanged
    rng = _rng(5)
    x = _with_ties(rng, data_shape)
    w = rng.normal(size=data_shape)
    got = fn(tf.constant(x), tf.constant(w))
    _assert_close(got, _ref_call(name, x, axis, reg, "ASCENDING", w), TOL[tf.float64])


# --------------------------------------------------------------------------------------
# Other implementations and closed forms.


@pytest.mark.parametrize("dtype", [tf.float32, tf.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("decreasing", [True, False])
def test_l2_matches_sklearn_and_tf_nn(mode, decreasing, dtype):
    y = _with_ties(_rng(6), (6, 40))
    fn = mode(lambda a: tfsort.isotonic_regression(a, decreasing=decreasing))
    got = fn(tf.constant(y, dtype))
    yd = tf.constant(y, dtype).numpy().astype(np.float64)
    sk = np.stack([sklearn.isotonic.isotonic_regression(r, increasing=not decreasing) for r in yd])
    tfn = tf.nn.isotonic_regression(tf.constant(y, dtype), decreasing=decreasing)[0]
    _assert_close(got, sk, TOL[dtype])
    _assert_close(got, tfn, TOL[dtype])


@pytest.mark.parametrize("direction", DIRS)
def test_l2_closed_form_at_large_eps(mode, direction):
    x = _rng(7).normal(size=(3, 10))
    n = 10
    eps = 1e3  # z = x / eps spans far less than 1, the gap between rho entries: one block
    sign = -1.0 if direction == "DESCENDING" else 1.0
    ranks = mode(lambda a: tfsort.soft_rank(a, regularization_strength=eps, direction=direction))(
        tf.constant(x)
    )
    want = (n + 1) / 2 + sign * (x - x.mean(-1, keepdims=True)) / eps
    _assert_close(ranks, want, 1e-12)
    # soft_sort pools too: out_i = mean(x) +- ((i + 1) - (n + 1) / 2) / eps.
    srt = mode(lambda a: tfsort.soft_sort(a, regularization_strength=eps, direction=direction))(
        tf.constant(x)
    )
    pos = np.arange(1, n + 1) - (n + 1) / 2
    _assert_close(srt, x.mean(-1, keepdims=True) + sign * pos / eps, 1e-12)


@pytest.mark.parametrize("eps", [0.25, 1.0, 8.0, 3.0, 0.1])
@pytest.mark.parametrize("reg", REGS)
def test_soft_rank_scales_by_eps_exactly(mode, reg, eps):
    """soft_rank(x, eps) is bit-identical to soft_rank(x / eps, 1) for every eps: the kernel
    divides by eps exactly (it multiplies by 1 / eps only when eps is a power of two, where
    that is exact), so eps never costs the last bit."""
    x = _rng(11).normal(size=(4, 37)) * 3.0
    got = mode(lambda a: tfsort.soft_rank(a, reg, regularization_strength=eps))(tf.constant(x))
    want = mode(lambda a: tfsort.soft_rank(a, reg, regularization_strength=1.0))(
        tf.constant(x / eps)
    )
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want))


@pytest.mark.parametrize("direction", DIRS)
@pytest.mark.parametrize("reg", REGS)
def test_hard_limit_at_small_eps(mode, reg, direction):
    x = _separated(_rng(8), (4, 12))
    eps = 1e-3
    rank = mode(lambda a: tfsort.soft_rank(a, reg, eps, direction))(tf.constant(x, tf.float32))
    srt = mode(lambda a: tfsort.soft_sort(a, reg, eps, direction))(tf.constant(x, tf.float32))
    hard = np.apply_along_axis(scipy.stats.rankdata, -1, x)
    if direction == "DESCENDING":
        hard = 13 - hard
    np.testing.assert_allclose(rank, hard, atol=1e-4)
    s = np.sort(x, -1)
    if direction == "DESCENDING":
        s = s[:, ::-1]
    np.testing.assert_allclose(srt, s, atol=1e-4)


# --------------------------------------------------------------------------------------
# Gradients (float64 finite differences).


def _check_gradient(fn, xs, tol=1e-6):
    theo, num = tf.test.compute_gradient(fn, xs, delta=1e-6)
    for t, n in zip(theo, num):
        scale = max(1.0, float(np.max(np.abs(n))))
        np.testing.assert_allclose(t, n, rtol=tol, atol=tol * scale)


@pytest.mark.parametrize("eps", [0.01, 1.0, 100.0])
@pytest.mark.parametrize("direction", DIRS)
@pytest.mark.parametrize("reg", REGS)
@pytest.mark.parametrize("name", sorted(SOFT))
def test_soft_gradient_finite_differences(mode, name, reg, direction, eps):
    x = _partially_pooled(name, reg, eps, direction, (2, 6), 9)
    fn = mode(lambda a: SOFT[name][0](a, reg, eps, direction))
    _check_gradient(fn, [tf.constant(x)])


@pytest.mark.parametrize("decreasing", [True, False])
@pytest.mark.parametrize("reg", REGS)
def test_isotonic_gradient_finite_differences(mode, reg, decreasing):
    rng = _rng(10)
    y = _separated(rng, (2, 7))
    w = _separated(rng, (2, 7))
    if reg == "l2":
        fn = mode(lambda a: tfsort.isotonic_regression(a, decreasing=decreasing))
        _check_gradient(fn, [tf.constant(y)])
    else:
        fn = mode(lambda a, b: tfsort.isotonic_regression(a, b, "kl", decreasing=decreasing))
        _check_gradient(fn, [tf.constant(y), tf.constant(w)])  # w.r.t. y and w


def test_kl_soft_sort_gradient_at_eps_10(mode):
    """The KL soft-sort VJP weights by softmax over the sorted values (design.md 3)."""
    x = _separated(_rng(11), (3, 8)) * 4.0
    fn = mode(lambda a: tfsort.soft_sort(a, "kl", 10.0))
    _check_gradient(fn, [tf.constant(x)])
    # and the blocks really pool at this scale (otherwise this test would not test that)
    seg = _raw_segments(tfsort._ops.ops.tf_sort_soft_sort, x, 10.0, regularization="kl")
    assert (seg.max(-1) < 7).all()


def _first_grad(fn, c):
    """g(x) = d/dx sum(c * fn(x)^2), computed with an inner tape (so its Jacobian is a
    Hessian that involves both the gradient op's cotangent and its value inputs)."""

    def g(*xs):
        with tf.GradientTape() as tape:
            tape.watch(xs)
            out = fn(*xs)
            loss = tf.reduce_sum(c * out * out)
        grads = tape.gradient(loss, xs)
        return tf.concat([tf.reshape(t, [-1]) for t in grads], 0)

    return g


SECOND = [("soft_rank", "l2"), ("soft_rank", "kl"), ("soft_sort", "l2"), ("soft_sort", "kl"),
          ("iso_l2", "l2"), ("iso_kl", "kl")]


def _op_fn(name, reg, direction, eps=1.0):
    if name in SOFT:
        return lambda a: SOFT[name][0](a, reg, eps, direction)
    dec = direction == "DESCENDING"
    if name == "iso_l2":
        return lambda a: tfsort.isotonic_regression(a, decreasing=dec)
    return lambda a, b: tfsort.isotonic_regression(a, b, "kl", decreasing=dec)


def _op_inputs(name, shape, seed, reg="l2", direction="ASCENDING"):
    rng = _rng(seed)
    x = _separated(rng, shape)
    if name in SOFT:
        x = _partially_pooled(name, reg, 1.0, direction, shape, seed)
    xs = [tf.constant(x)]
    if name == "iso_kl":
        xs.append(tf.constant(_separated(rng, shape)))
    return xs


@pytest.mark.parametrize("direction", DIRS)
@pytest.mark.parametrize("name,reg", SECOND)
def test_second_order_finite_differences(mode, name, reg, direction):
    xs = _op_inputs(name, (2, 6), 12, reg, direction)
    c = tf.constant(_rng(13).normal(size=(2, 6)))
    g = mode(_first_grad(_op_fn(name, reg, direction), c))
    _check_gradient(g, xs, tol=1e-5)


@pytest.mark.parametrize("direction", DIRS)
@pytest.mark.parametrize("name,reg", SECOND)
def test_forward_mode_jvp_equals_jacobian(mode, name, reg, direction):
    xs = _op_inputs(name, (2, 6), 14, reg, direction)
    rng = _rng(15)
    vs = tuple(tf.constant(rng.normal(size=(2, 6))) for _ in xs)
    fn = _op_fn(name, reg, direction)

    def jvp_and_jac(*xs):
        with tf.autodiff.ForwardAccumulator(xs, vs) as acc:
            out = fn(*xs)
        with tf.GradientTape(persistent=True) as tape:
            tape.watch(xs)
            out2 = fn(*xs)
        jac = [tape.jacobian(out2, x) for x in xs]
        return acc.jvp(out), jac

    jvp, jac = mode(jvp_and_jac)(*xs)
    want = sum(
        np.einsum("abij,ij->ab", j.numpy(), v.numpy()) for j, v in zip(jac, vs)
    )
    assert jvp is not None
    _assert_close(jvp, want, 1e-10)


# --------------------------------------------------------------------------------------
# torchsort README examples.

X_README = [[8.0, 0.0, 5.0, 3.0, 2.0, 1.0, 6.0, 7.0, 9.0]]


def test_torchsort_readme_examples(mode):
    x = tf.constant(X_README)
    rank = mode(lambda a: tfsort.soft_rank(a))(x)
    np.testing.assert_allclose(rank, [[8, 1, 5, 4, 3, 2, 6, 7, 9]], atol=1e-6)
    srt = mode(lambda a: tfsort.soft_sort(a))(x)
    np.testing.assert_allclose(srt, [np.arange(9) + 0.5556], atol=1e-4)
    r2 = mode(lambda a: tfsort.soft_rank(a, regularization_strength=2.0))(x)
    want2 = ref.soft_rank(X_README[0], 2.0)
    np.testing.assert_allclose(r2, [want2], rtol=1e-6)
    np.testing.assert_allclose(
        r2, [[6.7222, 2.7222, 5.2222, 4.2222, 3.7222, 3.2222, 5.7222, 6.2222, 7.2222]], atol=1e-4
    )
    rkl = mode(lambda a: tfsort.soft_rank(a, regularization="kl"))(x)
    np.testing.assert_allclose(rkl, [ref.soft_rank(X_README[0], regularization="kl")], rtol=1e-6)
    np.testing.assert_allclose(rkl, [[8, 1, 5, 4, 3, 2, 6, 7, 9]], atol=1e-4)


def test_torchsort_readme_spearman(mode):
    pred = tf.constant([[1.0, 2.0, 3.0, 4.0, 5.0]])
    target = tf.constant([[5.0, 6.0, 7.0, 8.0, 7.0]])

    def f(p, t):
        with tf.GradientTape() as tape:
            tape.watch(p)
            rho = tfsort.spearmanr(p, t)
        return rho, tape.gradient(rho, p)

    rho, grad = mode(f)(pred, target)
    assert rho.shape == (1,)
    want = ref.spearmanr(pred.numpy()[0], target.numpy()[0])
    np.testing.assert_allclose(rho, [want], rtol=1e-6)
    np.testing.assert_allclose(rho, [0.8321], atol=1e-4)  # torchsort README
    assert grad is not None
    # torchsort README: (-5.5470e-02, ~0, 5.5470e-02, 1.1094e-01, -1.1094e-01)
    np.testing.assert_allclose(
        grad, [[-0.05547, 0.0, 0.05547, 0.11094, -0.11094]], atol=1e-5
    )


# --------------------------------------------------------------------------------------
# Extreme strengths and low precision.


@pytest.mark.parametrize("dtype", [tf.float32, tf.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("name", sorted(SOFT))
def test_kl_tiny_eps_has_finite_gradients(mode, name, dtype):
    x = tf.constant(_with_ties(_rng(16), (3, 20)), dtype)

    def f(a):
        with tf.GradientTape() as tape:
            tape.watch(a)
            out = SOFT[name][0](a, "kl", 1e-4)
            loss = tf.reduce_sum(out * tf.range(20, dtype=dtype))
        return out, tape.gradient(loss, a)

    out, grad = mode(f)(x)
    assert np.isfinite(out.numpy()).all()
    assert np.isfinite(grad.numpy()).all()


@pytest.mark.parametrize("eps", [0.1, 1.0])
@pytest.mark.parametrize("reg", REGS)
@pytest.mark.parametrize("name", sorted(SOFT))
def test_float16_large_row_accurate(mode, name, reg, eps):
    x16 = tf.constant(_rng(17).uniform(-1000, 1000, size=(2, 5000)), tf.float16)
    x64 = x16.numpy().astype(np.float64)  # the reference sees exactly the fp16 inputs
    got = mode(lambda a: SOFT[name][0](a, reg, eps))(x16)
    assert got.dtype == tf.float16
    want = _ref_soft(name, x64, eps, reg, "ASCENDING")
    # fp16 output rounding alone is a relative 2^-11 ~ 4.9e-4
    np.testing.assert_allclose(got.numpy().astype(np.float64), want, rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("dtype", [tf.bfloat16, tf.float16], ids=["bf16", "f16"])
@pytest.mark.parametrize("reg", REGS)
@pytest.mark.parametrize("name", sorted(SOFT) + ["iso"])
def test_low_precision_works(mode, name, reg, dtype):
    rng = _rng(18)
    xb = tf.constant(rng.normal(size=(3, 64)) * 10, dtype)
    wb = tf.constant(rng.normal(size=(3, 64)), dtype)
    x64 = tf.cast(xb, tf.float64).numpy()
    w64 = tf.cast(wb, tf.float64).numpy()
    if name == "iso":
        call = (lambda a: tfsort.isotonic_regression(a)) if reg == "l2" else (
            lambda a: tfsort.isotonic_regression(a, wb, "kl"))
        want = (ref.along_axis(ref.isotonic_l2, x64) if reg == "l2"
                else ref.along_axis2(ref.isotonic_kl, x64, w64))
    else:
        call = lambda a: SOFT[name][0](a, reg, 1.0)  # noqa: E731
        want = _ref_soft(name, x64, 1.0, reg, "ASCENDING")

    def f(a):
        with tf.GradientTape() as tape:
            tape.watch(a)
            out = call(a)
            loss = tf.reduce_sum(out * out)
        return out, tape.gradient(loss, a)

    out, grad = mode(f)(xb)
    assert out.dtype == dtype and grad.dtype == dtype
    assert np.isfinite(tf.cast(grad, tf.float32).numpy()).all()
    np.testing.assert_allclose(
        tf.cast(out, tf.float64).numpy(), want, rtol=1e-2, atol=1e-2 * np.abs(want).max()
    )


# --------------------------------------------------------------------------------------
# Bad input.

_X = [[1.0, 2.0, 3.0]]
_EPS = "regularization_strength"
_W = [[0.0, 0.0, 0.0]]

BAD = [
    (lambda: tfsort.soft_rank(_X, regularization="l3"), ValueError, "regularization"),
    (lambda: tfsort.soft_sort(_X, regularization="entropy"), ValueError, "regularization"),
    (lambda: tfsort.isotonic_regression(_X, regularization="l1"), ValueError, "regularization"),
    (lambda: tfsort.soft_rank(_X, direction="UP"), ValueError, "direction"),
    (lambda: tfsort.soft_sort(_X, direction="sideways"), ValueError, "direction"),
    (lambda: tfsort.soft_rank(_X, regularization_strength=0.0), ValueError, _EPS),
    (lambda: tfsort.soft_sort(_X, regularization_strength=-1.0), ValueError, _EPS),
    (lambda: tfsort.soft_rank(_X, regularization_strength=float("nan")), ValueError, _EPS),
    (lambda: tfsort.soft_sort(_X, regularization_strength=float("inf")), ValueError, _EPS),
    (lambda: tfsort.soft_rank(3.0), ValueError, "values"),
    (lambda: tfsort.soft_sort(tf.constant(3.0)), ValueError, "values"),
    (lambda: tfsort.isotonic_regression(3.0), ValueError, r"\by\b"),
    (lambda: tfsort.isotonic_regression(_X, [[0.0, 0.0]], "kl"), ValueError, r"\bw\b"),
    (lambda: tfsort.isotonic_regression(_X, _W, "l2"), ValueError, r"\bw\b"),
    (lambda: tfsort.isotonic_regression(_X, None, "kl"), ValueError, r"\bw\b"),
    (lambda: tfsort.soft_rank(_X, axis=2), ValueError, "axis"),
    (lambda: tfsort.soft_sort(_X, axis=-3), ValueError, "axis"),
    (lambda: tfsort.isotonic_regression(_X, axis=5), ValueError, "axis"),
    (lambda: tfsort.soft_rank([[True, False]]), TypeError, "values"),
    (lambda: tfsort.soft_sort(tf.constant([["a", "b"]])), TypeError, "values"),
    (lambda: tfsort.soft_rank(tf.constant([[1 + 2j, 3j]])), TypeError, "values"),
    (lambda: tfsort.isotonic_regression(np.array([[1 + 1j]])), TypeError, r"\by\b"),
    (lambda: tfsort.isotonic_regression(_X, decreasing="yes"), TypeError, "decreasing"),
    (lambda: tfsort.spearmanr([[1.0, 2.0]], [[1.0, 2.0, 3.0]]), ValueError, "pred and target"),
    # The same checks on the eager fast paths (an eager float tensor, last axis).
    (lambda: tfsort.isotonic_regression(tf.constant(_X), regularization=["l2"]), TypeError,
     "regularization"),
    (lambda: tfsort.isotonic_regression(tf.constant(_X), regularization="l1"), ValueError,
     "regularization"),
    (lambda: tfsort.isotonic_regression(tf.constant(_X), decreasing=1), TypeError, "decreasing"),
    (lambda: tfsort.isotonic_regression(tf.constant(_X), tf.constant(_W)), ValueError, r"\bw\b"),
    (lambda: tfsort.isotonic_regression(tf.constant(3.0)), ValueError, r"\by\b"),
    (lambda: tfsort.soft_rank(tf.constant(_X), regularization=["l2"]), TypeError,
     "regularization"),
    (lambda: tfsort.soft_sort(tf.constant(_X), regularization_strength=0.0), ValueError, _EPS),
    (lambda: tfsort.soft_rank(tf.constant(_X), direction="UP"), ValueError, "direction"),
]


@pytest.mark.parametrize("call,exc,match", BAD, ids=[f"bad{i}" for i in range(len(BAD))])
def test_bad_input_raises_naming_argument(mode, call, exc, match):
    with pytest.raises(exc, match=match):
        mode(call)()


def test_w_shape_mismatch_with_unknown_shapes_raises():
    spec = tf.TensorSpec([None, None], tf.float32)
    fn = tf.function(
        lambda a, b: tfsort.isotonic_regression(a, b, "kl"), input_signature=[spec, spec]
    )
    with pytest.raises((ValueError, tf.errors.InvalidArgumentError), match=r"\bw\b.*shape"):
        fn(tf.zeros([2, 5]), tf.zeros([2, 4]))


# --------------------------------------------------------------------------------------
# Conversions and degenerate shapes.


@pytest.mark.parametrize(
    "values",
    [[[3, 1, 2]], np.array([[3, 1, 2]], np.int64), tf.constant([[3, 1, 2]], tf.int32),
     [[3.0, 1.0, 2.0]]],
    ids=["pylist_int", "np_int64", "tf_int32", "pylist_float"],
)
def test_ints_and_lists_become_float32(mode, values):
    for fn in (tfsort.soft_rank, tfsort.soft_sort, tfsort.isotonic_regression):
        out = mode(lambda: fn(values))()
        assert out.dtype == tf.float32
    r = tfsort.soft_rank(values, regularization_strength=1e-3)
    np.testing.assert_allclose(r, [[3, 1, 2]], atol=1e-5)
    assert tfsort.spearmanr(values, values).dtype == tf.float32


@pytest.mark.parametrize("shape", [(0, 5), (3, 0), (0,), (3, 1), (1,)], ids=str)
@pytest.mark.parametrize("name,reg", OPS)
def test_empty_and_n1(mode, name, reg, shape):
    rng = _rng(19)
    x = tf.constant(rng.normal(size=shape))
    w = tf.constant(rng.normal(size=shape))

    def f(a, b):
        with tf.GradientTape() as tape:
            tape.watch([a, b])
            out = _call(name, a, -1, reg, "ASCENDING", b)
            loss = tf.reduce_sum(out)
        return out, tape.gradient(loss, [a, b])

    out, (ga, gb) = mode(f)(x, w)
    assert out.shape == shape
    assert ga is not None and ga.shape == shape
    n = shape[-1]
    if n == 1:
        if name == "soft_rank":
            np.testing.assert_array_equal(out, np.ones(shape))
            np.testing.assert_array_equal(ga, np.zeros(shape))
        elif name == "iso_kl":
            np.testing.assert_allclose(out, x - w, rtol=1e-15)  # v = y - w
            np.testing.assert_allclose(ga, np.ones(shape))
            np.testing.assert_allclose(gb, -np.ones(shape))
        else:
            np.testing.assert_allclose(out, x, rtol=1e-15)
            np.testing.assert_allclose(ga, np.ones(shape))
    if name == "iso_kl":
        assert gb is not None and gb.shape == shape


@pytest.mark.parametrize("name", sorted(SOFT))
def test_gradient_is_zero_tensor_not_none(mode, name):
    """soft_rank at tiny eps is locally constant: its gradient is zeros, not None."""
    x = tf.constant(_separated(_rng(20), (2, 5)))

    def f(a):
        with tf.GradientTape() as tape:
            tape.watch(a)
            out = tfsort.soft_rank(a, regularization_strength=1e-3)
        return tape.gradient(out, a)

    g = mode(f)(x)
    assert g is not None
    np.testing.assert_array_equal(g, np.zeros((2, 5)))


# --------------------------------------------------------------------------------------
# NaN / inf policy.


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf], ids=["nan", "inf", "-inf"])
@pytest.mark.parametrize("name,reg", OPS)
def test_nonfinite_row_isolated(mode, name, reg, bad):
    rng = _rng(21)
    x = _with_ties(rng, (4, 7))
    w = rng.normal(size=(4, 7))
    x_bad = x.copy()
    x_bad[1, 3] = bad
    good = [0, 2, 3]

    def f(a, b):
        with tf.GradientTape() as tape:
            tape.watch(a)
            out = _call(name, a, -1, reg, "ASCENDING", b)
            loss = tf.reduce_sum(out * out)
        return out, tape.gradient(loss, a)

    fn = mode(f)
    out, grad = fn(tf.constant(x_bad), tf.constant(w))
    out_ok, grad_ok = fn(tf.constant(x[good]), tf.constant(w[good]))
    np.testing.assert_array_equal(out.numpy()[good], out_ok.numpy())  # bit-identical
    np.testing.assert_array_equal(grad.numpy()[good], grad_ok.numpy())
    assert np.isnan(out.numpy()[1]).all()
    assert np.isnan(grad.numpy()[1]).all()


@pytest.mark.parametrize("dtype", [tf.float16, tf.float32], ids=["f16", "f32"])
@pytest.mark.parametrize("decreasing", [True, False])
def test_nonfinite_isotonic_rows_low_precision(mode, decreasing, dtype):
    """float16 / float32 L2 rows are checked for NaN and infinities after PAV, through their
    block sums (isotonic_kernels.cc); every placement (first, last, inside a run, both
    infinities in one row) must still give a NaN row and leave the other rows exact."""
    n = 40
    x = np.round(_rng(33).normal(size=(8, n)), 1)
    rows = {1: [(0, np.nan)], 2: [(n - 1, np.inf)], 3: [(5, -np.inf)],
            4: [(7, np.inf), (30, -np.inf)], 5: [(0, -np.inf), (n - 1, np.nan)],
            6: [(20, np.inf), (21, np.inf)]}
    for r, entries in rows.items():
        for i, v in entries:
            x[r, i] = v
    good = [0, 7]
    w = _rng(34).normal(size=(8, n))

    def f(a, b):
        with tf.GradientTape() as tape:
            tape.watch(a)
            out = tfsort.isotonic_regression(a, decreasing=decreasing)
        return out, tape.gradient(out, a, output_gradients=b)

    fn = mode(f)
    out, grad = fn(tf.constant(x, dtype), tf.constant(w, dtype))
    out_ok, grad_ok = fn(tf.constant(x[good], dtype), tf.constant(w[good], dtype))
    out, grad = out.numpy().astype(np.float64), grad.numpy().astype(np.float64)
    np.testing.assert_array_equal(out[good], out_ok.numpy().astype(np.float64))
    np.testing.assert_array_equal(grad[good], grad_ok.numpy().astype(np.float64))
    assert np.isnan(out[1:7]).all() and np.isnan(grad[1:7]).all()
    want = np.stack([ref.isotonic_l2(r, decreasing=decreasing) for r in x[good]])
    _assert_close(out[good], want, 1e-2 if dtype == tf.float16 else TOL[tf.float32])


def test_nonfinite_w_row_isolated(mode):
    rng = _rng(22)
    y = rng.normal(size=(3, 6))
    w = rng.normal(size=(3, 6))
    w_bad = w.copy()
    w_bad[0, 0] = np.nan
    fn = mode(lambda a, b: tfsort.isotonic_regression(a, b, "kl"))
    out = fn(tf.constant(y), tf.constant(w_bad)).numpy()
    ok = fn(tf.constant(y[1:]), tf.constant(w[1:])).numpy()
    np.testing.assert_array_equal(out[1:], ok)
    assert np.isnan(out[0]).all()


def test_nonfinite_segments_are_minus_one():
    x = tf.constant([[1.0, np.nan, 2.0], [3.0, 1.0, 2.0]])
    _, seg = tfsort._ops.ops.tf_sort_isotonic_l2(x)
    np.testing.assert_array_equal(seg.numpy()[0], [-1, -1, -1])
    assert (seg.numpy()[1] >= 0).all()


# --------------------------------------------------------------------------------------
# Determinism and thread independence.


@pytest.mark.parametrize("name,reg", OPS)
def test_deterministic_and_rowwise(name, reg):
    rng = _rng(23)
    x = tf.constant(_with_ties(rng, (512, 300)).astype(np.float32))
    w = tf.constant(rng.normal(size=(512, 300)).astype(np.float32))

    def f(a, b):
        with tf.GradientTape() as tape:
            tape.watch(a)
            out = _call(name, a, -1, reg, "ASCENDING", b)
            loss = tf.reduce_sum(out * out)
        return out, tape.gradient(loss, a)

    out1, g1 = f(x, w)
    out2, g2 = f(x, w)
    np.testing.assert_array_equal(out1, out2)
    np.testing.assert_array_equal(g1, g2)
    # Each row alone runs on one shard: the batched result must not depend on sharding.
    for r in range(0, 512, 37):
        o, g = f(x[r : r + 1], w[r : r + 1])
        np.testing.assert_array_equal(out1.numpy()[r : r + 1], o)
        np.testing.assert_array_equal(g1.numpy()[r : r + 1], g)


# --------------------------------------------------------------------------------------
# Spearman.


@pytest.mark.parametrize("reg", REGS)
def test_spearman_constant_row_is_zero_with_finite_gradients(mode, reg):
    pred = tf.constant([[2.0, 2.0, 2.0, 2.0], [1.0, 3.0, 2.0, 4.0], [1.0, 2.0, 3.0, 4.0]])
    target = tf.constant([[1.0, 2.0, 3.0, 4.0], [5.0, 5.0, 5.0, 5.0], [1.0, 3.0, 2.0, 4.0]])

    def f(p, t):
        with tf.GradientTape() as tape:
            tape.watch([p, t])
            rho = tfsort.spearmanr(p, t, regularization=reg)
        return rho, tape.gradient(rho, [p, t])

    rho, (gp, gt) = mode(f)(pred, target)
    np.testing.assert_array_equal(rho.numpy()[:2], [0.0, 0.0])
    assert np.isfinite(rho.numpy()).all()
    assert np.isfinite(gp.numpy()).all() and np.isfinite(gt.numpy()).all()
    want = ref.spearmanr(pred.numpy()[2], target.numpy()[2], regularization=reg)
    np.testing.assert_allclose(rho.numpy()[2], want, rtol=1e-5)


@pytest.mark.parametrize("direction", DIRS)
def test_spearman_matches_scipy_at_small_eps(mode, direction):
    rng = _rng(24)
    p = _separated(rng, (5, 15))
    t = _separated(rng, (5, 15))
    rho = mode(
        lambda a, b: tfsort.spearmanr(a, b, regularization_strength=1e-3, direction=direction)
    )(
        tf.constant(p), tf.constant(t)
    )
    want = [scipy.stats.spearmanr(a, b).statistic for a, b in zip(p, t)]
    np.testing.assert_allclose(rho, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("reg", REGS)
def test_spearman_axis0_matches_reference(mode, reg):
    rng = _rng(25)
    p = _with_ties(rng, (9, 4))
    t = _with_ties(rng, (9, 4))
    rho = mode(lambda a, b: tfsort.spearmanr(a, b, axis=0, regularization=reg))(
        tf.constant(p), tf.constant(t)
    )
    assert rho.shape == (4,)
    want = [ref.spearmanr(p[:, j], t[:, j], regularization=reg) for j in range(4)]
    np.testing.assert_allclose(rho, want, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("reg", REGS)
def test_spearman_gradient_finite_differences(mode, reg):
    """Row 0 is symmetric, so its middle soft rank equals the row mean exactly: its
    gradient must still flow (a centring that zeroes 'tiny' deviations would cut it)."""
    pred = tf.constant([[-0.5, 0.0, 0.5], [0.3, -1.2, 0.8]], tf.float64)
    target = tf.constant([[0.3, -0.2, 0.9], [1.0, 0.1, -0.4]], tf.float64)
    fn = mode(lambda p, t: tfsort.spearmanr(p, t, regularization=reg))
    _check_gradient(fn, [pred, target])


@pytest.mark.parametrize(
    "name,x,eps",
    [("soft_rank", [5.0, 4.0, 3.0, 3.0, 4.1, 0.7], 0.3), ("soft_sort", [0.0, 10.0], 0.3),
     ("soft_sort", [0.0, 10.0], 0.1)],
)
def test_float64_strength_not_rounded_to_float32(mode, name, x, eps):
    """float64 inputs compute in float64: eps must not pass through a float32 attr."""
    got = mode(lambda a: SOFT[name][0](a, regularization_strength=eps))(tf.constant(x, tf.float64))
    np.testing.assert_allclose(got, SOFT[name][1](x, eps), rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("name,reg", [("soft_rank", "l2"), ("soft_sort", "kl")])
def test_string_arguments_case_insensitive(mode, name, reg):
    x = tf.constant(_with_ties(_rng(26), (2, 7)))
    canon = SOFT[name][0](x, reg, 0.5, "DESCENDING")
    other = mode(lambda a: SOFT[name][0](a, reg.upper(), 0.5, "descending"))(x)
    np.testing.assert_array_equal(canon, other)


@pytest.mark.parametrize("name,reg", OPS)
def test_unknown_rank_in_tf_function(name, reg):
    spec = tf.TensorSpec(None, tf.float64)
    fn = tf.function(
        lambda a, b: _call(name, a, -1, reg, "ASCENDING", b), input_signature=[spec, spec]
    )
    rng = _rng(27)
    x = _with_ties(rng, (2, 3, 6))
    w = rng.normal(size=(2, 3, 6))
    _assert_close(fn(tf.constant(x), tf.constant(w)), _ref_call(name, x, -1, reg, "ASCENDING", w),
                  TOL[tf.float64])


@pytest.mark.parametrize("reg", REGS)
@pytest.mark.parametrize("name", ["soft_rank", "soft_sort"])
def test_recomputed_and_stored_aux_give_identical_gradients(name, reg):
    """Small eager calls drop the aux output and the gradient op re-sorts; both paths
    must agree bit for bit (incl. ties and a NaN row)."""
    raw = tfsort._ops.ops
    fwd = getattr(raw, f"tf_sort_{name}")
    bwd = getattr(raw, f"tf_sort_{name}_grad")
    x = np.round(_rng(3).normal(size=(4, 33)), 1)  # rounding makes ties
    x[2, 5] = np.nan
    x = tf.constant(x)
    g = tf.constant(_rng(4).normal(size=(4, 33)))
    eps = tf.constant(0.7, tf.float64)
    out0, aux0 = fwd(x, eps, num_aux=0, regularization=reg)
    out1, aux1 = fwd(x, eps, num_aux=1, regularization=reg)
    assert aux0 == [] and len(aux1) == 1
    np.testing.assert_array_equal(out0.numpy(), out1.numpy())
    g0 = bwd(g, x, eps, aux0, regularization=reg).numpy()  # the forward's stashed aux
    g1 = bwd(g, x, eps, aux1, regularization=reg).numpy()
    g2 = bwd(g, x, eps, aux0, regularization=reg).numpy()  # taken already: re-sorts
    np.testing.assert_array_equal(g0, g1)
    np.testing.assert_array_equal(g2, g1)
    assert np.isnan(g0[2]).all() and np.isfinite(np.delete(g0, 2, axis=0)).all()


@pytest.mark.parametrize("name", ["soft_rank", "soft_sort"])
def test_stashed_aux_is_only_used_for_the_same_values_and_attributes(name):
    """num_aux = 0 stashes the forward's aux under its input tensor (aux_stash.h). A
    gradient call with other values of the same shape, or other attributes, must not pick
    it up: its result must equal the aux-output path for its own arguments."""
    raw = tfsort._ops.ops
    fwd = getattr(raw, f"tf_sort_{name}")
    bwd = getattr(raw, f"tf_sort_{name}_grad")
    rng = _rng(11)
    x1 = tf.constant(rng.normal(size=(3, 40)))
    x2 = tf.constant(rng.normal(size=(3, 40)))  # same shape, other order
    g = tf.constant(rng.normal(size=(3, 40)))
    eps1, eps2 = tf.constant(1.0, tf.float64), tf.constant(0.05, tf.float64)

    def expected(x, eps, **attrs):
        _, aux = fwd(x, eps, num_aux=1, **attrs)
        return bwd(g, x, eps, aux, **attrs).numpy()

    for x, eps, attrs in [(x2, eps1, {}), (x1, eps2, {}), (x1, eps1, {"descending": True}),
                          (x1, eps1, {"regularization": "kl"})]:
        fwd(x1, eps1, num_aux=0)  # stashes x1's aux for (eps1, l2, ascending)
        got = bwd(g, x, eps, [], **attrs).numpy()
        np.testing.assert_array_equal(got, expected(x, eps, **attrs))


FLAG_KL, FLAG_DESCENDING, FLAG_ADJOINT, FLAG_STASH = 1, 2, 4, 8  # isotonic_ops.cc


@pytest.mark.parametrize("dtype", [tf.float16, tf.float32, tf.float64], ids=["f16", "f32", "f64"])
@pytest.mark.parametrize("descending", [False, True])
@pytest.mark.parametrize("reg", REGS)
@pytest.mark.parametrize("name", ["soft_rank", "soft_sort"])
def test_eager_ops_match_the_graph_ops_bit_for_bit(name, reg, descending, dtype):
    """The eager fast path's twins (SoftRankEager, ...; one `flags` attribute) run the same
    kernels: outputs and VJPs (stash hit, stash miss, and the adjoint for soft sort) must
    equal the graph ops' with the aux output, bit for bit, ties and a NaN row included."""
    raw = tfsort._ops.ops
    fwd, bwd = getattr(raw, f"tf_sort_{name}"), getattr(raw, f"tf_sort_{name}_grad")
    efwd = getattr(raw, f"tf_sort_{name}_eager")
    ebwd = getattr(raw, f"tf_sort_{name}_eager_grad")
    x = np.round(_rng(21).normal(size=(5, 37)), 1)  # rounding makes ties
    x[3, 7] = np.nan
    x = tf.constant(x, dtype)
    g = tf.constant(_rng(22).normal(size=(5, 37)), dtype)
    eps = tf.constant(0.3, tf.float64)
    attrs = {"regularization": reg, "descending": descending}
    flags = (FLAG_KL if reg == "kl" else 0) | (FLAG_DESCENDING if descending else 0)
    out, aux = fwd(x, eps, num_aux=1, **attrs)
    want = bwd(g, x, eps, aux, **attrs).numpy()
    for stash in (0, FLAG_STASH):
        got = efwd(x, eps, flags=flags | stash)
        np.testing.assert_array_equal(got.numpy(), out.numpy())
        np.testing.assert_array_equal(ebwd(g, x, eps, flags=flags).numpy(), want)  # hit/miss
    if name == "soft_sort":
        want_adj = bwd(g, x, eps, aux, adjoint=True, **attrs).numpy()
        got_adj = ebwd(g, x, eps, flags=flags | FLAG_ADJOINT).numpy()
        np.testing.assert_array_equal(got_adj, want_adj)
    assert np.isnan(want[3]).all() and np.isfinite(np.delete(want, 3, axis=0)).all()


def test_eager_ops_reject_unknown_flags():
    raw = tfsort._ops.ops
    x = tf.constant([[3.0, 1.0, 2.0]])
    eps = tf.constant(1.0, tf.float64)
    for bad in (16, FLAG_ADJOINT):  # unknown bit; adjoint is a gradient-op flag
        with pytest.raises(tf.errors.InvalidArgumentError, match="flags"):
            raw.tf_sort_soft_rank_eager(x, eps, flags=bad)
    for bad in (16, FLAG_STASH):
        with pytest.raises(tf.errors.InvalidArgumentError, match="flags"):
            raw.tf_sort_soft_sort_eager_grad(x, x, eps, flags=bad)
    with pytest.raises(tf.errors.InvalidArgumentError, match="regularization_strength"):
        raw.tf_sort_soft_rank_eager(x, tf.constant(0.0, tf.float64), flags=0)


@pytest.mark.parametrize("name", ["soft_rank", "soft_sort"])
def test_eager_calls_take_the_eager_op_and_graphs_do_not(name, eager_impl, fast_path_spy):
    """An eager last-axis call under a tape runs the eager-only op and, for its gradient,
    the eager-only gradient op (recorded by _utils.make_eager_op's fast path); a
    tf.function records the graph op, which is what SavedModels hold."""
    seen = fast_path_spy
    fn = getattr(tfsort, name)
    x = tf.constant(_rng(23).normal(size=(2, 9)))
    w = tf.constant(_rng(24).normal(size=(2, 9)))

    def vjp(a):
        with tf.GradientTape() as tape:
            tape.watch(a)
            out = fn(a, regularization_strength=0.5)
        return tape.gradient(out, a, output_gradients=w)

    eager = vjp(x)
    op = f"TFSort>{'SoftRank' if name == 'soft_rank' else 'SoftSort'}Eager"
    assert seen == [op, op + "Grad"]
    graph = tf.function(vjp)
    np.testing.assert_array_equal(graph(x).numpy(), eager.numpy())
    ops = {op.type for op in graph.get_concrete_function(x).graph.get_operations()}
    assert f"TFSort>{op[7:-5]}" in ops and not ops & tfsort.isotonic._EAGER_OPS


@pytest.mark.parametrize("dtype", [tf.float16, tf.bfloat16, tf.float32, tf.float64],
                         ids=["f16", "bf16", "f32", "f64"])
@pytest.mark.parametrize("increasing", [False, True])
def test_eager_isotonic_l2_matches_the_graph_op_bit_for_bit(increasing, dtype):
    """IsotonicL2Eager (no segments output) and its gradient op (stashed block starts, or a
    new PAV pass when they are gone) equal IsotonicL2 / IsotonicL2Grad bit for bit."""
    raw = tfsort._ops.ops

    def f64(t):  # exact for every float dtype; NumPy compares bfloat16 NaNs as unequal
        return t.numpy().astype(np.float64)

    y = np.round(_rng(25).normal(size=(4, 300)), 1)  # ties
    y[1, 17] = np.inf
    y = tf.constant(y, dtype)
    g = tf.constant(_rng(26).normal(size=(4, 300)), dtype)
    sol, seg = raw.tf_sort_isotonic_l2(y, increasing=increasing)
    want = f64(raw.tf_sort_isotonic_l2_grad(g, seg))
    flags = 1 if increasing else 0
    for stash in (0, FLAG_STASH):
        got = raw.tf_sort_isotonic_l2_eager(y, flags=flags | stash)
        np.testing.assert_array_equal(f64(got), f64(sol))
        np.testing.assert_array_equal(f64(raw.tf_sort_isotonic_l2_eager_grad(g, y, flags=flags)),
                                      want)
    # A stash entry is keyed by the direction too: the other direction re-runs PAV.
    raw.tf_sort_isotonic_l2_eager(y, flags=flags | FLAG_STASH)
    other = f64(raw.tf_sort_isotonic_l2_eager_grad(g, y, flags=1 - flags))
    _, seg2 = raw.tf_sort_isotonic_l2(y, increasing=not increasing)
    np.testing.assert_array_equal(other, f64(raw.tf_sort_isotonic_l2_grad(g, seg2)))
    assert np.isnan(want[1]).all() and np.isfinite(np.delete(want, 1, axis=0)).all()


def test_eager_isotonic_ops_reject_unknown_flags():
    raw = tfsort._ops.ops
    y = tf.constant([[3.0, 1.0, 2.0]])
    for bad in (2, 16):
        with pytest.raises(tf.errors.InvalidArgumentError, match="flags"):
            raw.tf_sort_isotonic_l2_eager(y, flags=bad)
    for bad in (2, FLAG_STASH):
        with pytest.raises(tf.errors.InvalidArgumentError, match="flags"):
            raw.tf_sort_isotonic_l2_eager_grad(y, y, flags=bad)
    with pytest.raises((tf.errors.InvalidArgumentError, ValueError), match="y"):
        raw.tf_sort_isotonic_l2_eager_grad(y, tf.constant([[1.0, 2.0]]), flags=0)


_RECORDED_FNS = [
    ("soft_rank", lambda a: tfsort.soft_rank(a, regularization_strength=0.5)),
    ("soft_sort_kl_desc", lambda a: tfsort.soft_sort(a, "kl", 0.5, "DESCENDING")),
    ("isotonic", lambda a: tfsort.isotonic_regression(a, decreasing=False)),
    # Its backward step takes the op's output, not x.
    ("soft_topk", lambda a: tfsort.soft_topk(a, 3, 0.5)),
    # Two recorded outputs; the cotangent of the second (saved) feeds second order terms.
    ("diff_sort", lambda a: tfsort.diff_sort(a, steepness=2.0)),
    ("diff_rank_desc", lambda a: tfsort.diff_rank(a, "odd_even", "logistic", 3.0, "DESCENDING")),
]


@pytest.mark.parametrize("fn", [f for _, f in _RECORDED_FNS], ids=[n for n, _ in _RECORDED_FNS])
def test_directly_recorded_backward_steps_match_the_graph_path(fn, eager_impl):
    """The eager fast paths record their backward step (the C++ one directly, the Python
    one through the registered gradients).
    A persistent tape asked twice (the second call misses the stash), both jacobian
    modes (pfor traces the backward step into a graph), and a nested tape taking the
    gradient of a gradient all equal the same computation inside tf.function, which
    records the graph ops with their registered gradients."""
    rng = _rng(41)
    x = tf.constant(rng.normal(size=(2, 7)))
    w = tf.constant(rng.normal(size=(2, 7)))
    v = tf.constant(rng.normal(size=(2, 7)))

    def grads(a):
        with tf.GradientTape(persistent=True) as tape:
            tape.watch(a)
            out = fn(a)
        first = tape.gradient(out, a, output_gradients=w)
        again = tape.gradient(out, a, output_gradients=w)
        jac = tape.jacobian(out, a)
        jac_loop = tape.jacobian(out, a, experimental_use_pfor=False)
        return first, again, jac, jac_loop

    def hvp(a):  # d/da <grad(<fn(a), w>), v>, through the gradient op's own gradient
        with tf.GradientTape() as outer:
            outer.watch(a)
            with tf.GradientTape() as inner:
                inner.watch(a)
                out = fn(a)
            g = inner.gradient(out, a, output_gradients=w)
        return outer.gradient(g, a, output_gradients=v)

    got = grads(x)
    want = tf.function(grads)(x)
    for g, ref in zip(got, want):
        np.testing.assert_allclose(g.numpy(), ref.numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(got[0].numpy(), got[1].numpy())
    np.testing.assert_allclose(np.einsum("ij,ijkl->kl", w.numpy(), got[2].numpy()),
                               got[0].numpy(), rtol=1e-12, atol=1e-12)
    try:
        want_hvp = tf.function(hvp)(x)
    except NotImplementedError:  # diff_rank's second derivatives: the same error eagerly
        with pytest.raises(NotImplementedError, match="second derivatives"):
            hvp(x)
        return
    got_hvp = hvp(x)
    if want_hvp is None:
        assert got_hvp is None
    else:
        np.testing.assert_allclose(got_hvp.numpy(), want_hvp.numpy(), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("dtype", [tf.float16, tf.bfloat16, tf.float32, tf.float64],
                         ids=["f16", "bf16", "f32", "f64"])
@pytest.mark.parametrize("fn", [f for _, f in _RECORDED_FNS], ids=[n for n, _ in _RECORDED_FNS])
def test_directly_recorded_vjps_equal_the_graph_path_in_every_dtype(fn, dtype, eager_impl):
    """The C++ fast path builds its ops through TF's C API, which infers the dtype
    attribute from the input: every dtype gives the graph path's values and VJP bit for
    bit."""
    rng = _rng(44)
    x = tf.constant(rng.normal(size=(3, 20)), dtype)
    w = tf.constant(rng.normal(size=(3, 20)), dtype)

    def vjp(a):
        with tf.GradientTape() as tape:
            tape.watch(a)
            out = fn(a)
        return out, tape.gradient(out, a, output_gradients=w)

    for got, want in zip(vjp(x), tf.function(vjp)(x)):
        assert got.dtype == want.dtype == dtype
        np.testing.assert_array_equal(got.numpy().astype(np.float64),
                                      want.numpy().astype(np.float64))


def test_registered_gradients_of_the_eager_only_ops():
    """The fast paths record their own backward step, but the eager-only ops keep
    registered gradients for other callers (the generated wrappers under a tape): they give
    the public functions' VJPs."""
    raw = tfsort._ops.ops
    rng = _rng(46)
    x = tf.constant(rng.normal(size=(2, 9)))
    w = tf.constant(rng.normal(size=(2, 9)))
    eps = tf.constant(0.5, tf.float64)
    cases = [
        (lambda a: raw.tf_sort_soft_rank_eager(a, eps, flags=FLAG_STASH | 1),
         lambda a: tfsort.soft_rank(a, "kl", 0.5)),
        (lambda a: raw.tf_sort_soft_sort_eager(a, eps, flags=2),
         lambda a: tfsort.soft_sort(a, "l2", 0.5, "DESCENDING")),
        (lambda a: raw.tf_sort_isotonic_l2_eager(a, flags=FLAG_STASH | 1),
         lambda a: tfsort.isotonic_regression(a, decreasing=False)),
    ]
    for raw_fn, public_fn in cases:
        np.testing.assert_array_equal(_vjp(raw_fn, x, w).numpy(), _vjp(public_fn, x, w).numpy())


def test_stop_recording_runs_the_eager_ops_without_recording(eager_impl, fast_path_spy):
    """Under tape.stop_recording() nothing records (and nothing is stashed): the fast
    paths run the eager-only ops as without a tape, and the tape sees no gradient."""
    x = tf.constant(_rng(42).normal(size=(2, 5)))
    seen = fast_path_spy
    for fn, op_type in [(tfsort.soft_rank, "TFSort>SoftRankEager"),
                        (tfsort.isotonic_regression, "TFSort>IsotonicL2Eager")]:
        seen.clear()
        with tf.GradientTape() as tape:
            tape.watch(x)
            with tape.stop_recording():
                out = fn(x)
        assert tape.gradient(out, x) is None
        assert seen == [op_type]


def test_eager_isotonic_call_takes_the_eager_op_and_graphs_do_not(eager_impl, fast_path_spy):
    seen = fast_path_spy
    y = tf.constant(_rng(27).normal(size=(3, 11)))
    w = tf.constant(_rng(28).normal(size=(3, 11)))

    def vjp(a):
        with tf.GradientTape() as tape:
            tape.watch(a)
            out = tfsort.isotonic_regression(a, decreasing=False)
        return tape.gradient(out, a, output_gradients=w)

    eager = vjp(y)
    assert seen == ["TFSort>IsotonicL2Eager", "TFSort>IsotonicL2EagerGrad"]
    graph = tf.function(vjp)
    np.testing.assert_array_equal(graph(y).numpy(), eager.numpy())
    ops = {op.type for op in graph.get_concrete_function(y).graph.get_operations()}
    assert "TFSort>IsotonicL2" in ops and not ops & tfsort.isotonic._EAGER_OPS


def test_eager_calls_above_the_stash_bound_use_the_graph_ops(monkeypatch, eager_impl):
    """Above 65536 elements nothing is stashed, so an eager call under a tape runs the graph
    op, whose aux / segments output the gradient reuses (not the eager-only op, whose
    gradient would sort or run PAV again); small calls run the eager-only ops."""
    seen = []
    real_soft, real_iso = tfsort.isotonic._soft_vjp, tfsort._ops.ops.tf_sort_isotonic_l2_grad

    def soft_spy(op, grad, *args):
        seen.append(op.type)
        return real_soft(op, grad, *args)

    def iso_spy(*args, **kwargs):
        seen.append("TFSort>IsotonicL2")
        return real_iso(*args, **kwargs)

    monkeypatch.setattr(tfsort.isotonic, "_soft_vjp", soft_spy)
    monkeypatch.setattr(tfsort.isotonic._raw, "tf_sort_isotonic_l2_grad", iso_spy)
    rng = _rng(35)
    for n, graph_op in [(70000, True), (1000, False)]:
        x = tf.constant(rng.normal(size=(1, n)).astype(np.float32))
        w = tf.constant(rng.normal(size=(1, n)).astype(np.float32))
        for fn, op_type in [(tfsort.soft_rank, "TFSort>SoftRank"),
                            (tfsort.soft_sort, "TFSort>SoftSort"),
                            (tfsort.isotonic_regression, "TFSort>IsotonicL2")]:
            seen.clear()
            with tf.GradientTape() as tape:
                tape.watch(x)
                out = fn(x)
            got = tape.gradient(out, x, output_gradients=w)
            assert seen == ([op_type] if graph_op else []), (n, op_type, seen)
            want = tf.function(lambda a, fn=fn: _vjp(fn, a, w))(x)
            np.testing.assert_array_equal(got.numpy(), want.numpy())


def test_the_cpp_fast_path_is_used_when_built():
    """setup.py records whether it built tfsort._eager_fast_path; if it did, the extension
    must import and be the fast path in use (a broken build must not silently fall back)."""
    try:
        from tfsort import _build_info  # noqa: PLC0415  (setup.py builds only)
    except ImportError:
        pytest.skip("no tfsort/_build_info.py (not a setup.py build)")
    if not getattr(_build_info, "FAST_PATH", False):
        pytest.skip("setup.py did not build the C++ eager fast path")
    from tfsort import _eager_fast_path  # noqa: PLC0415

    assert tfsort._utils.EagerOp is _eager_fast_path.EagerOp


def test_eager_op_rejects_bad_construction_arguments():
    if tfsort._utils._CEagerOp is None:
        pytest.skip("the C++ eager fast path is not built")
    make = tfsort._utils._CEagerOp
    eps = tf.constant(1.0, tf.float64)
    grad = tfsort._ops.ops.tf_sort_soft_rank_eager_grad
    u = tfsort._utils
    gin = (u.COTANGENT, u.FROM_X, eps)

    def build(op_type="TFSort>SoftRankEager", attrs=None, extra=(eps,), grad_inputs=gin,
              grad_attrs=None, fallback=grad, **kwargs):
        return make(op_type, {"flags": 0} if attrs is None else attrs, extra,
                    "TFSort>SoftRankEagerGrad", grad_inputs,
                    {"flags": 0} if grad_attrs is None else grad_attrs, fallback, **kwargs)

    for kwargs, error, match in [
        ({"extra": (np.float64(1.0),)}, TypeError, "extra"),
        ({"extra": [eps]}, TypeError, "extra"),
        ({"extra": (eps,) * 8}, ValueError, "extra"),
        ({"fallback": None}, TypeError, "grad_fallback"),
        ({"grad_inputs": (u.COTANGENT, 1, eps)}, TypeError, "grad_inputs"),  # no output 1
        ({"grad_inputs": (u.COTANGENT + 1, u.FROM_X)}, TypeError, "grad_inputs"),
        ({"grad_inputs": (-2, u.FROM_X)}, TypeError, "grad_inputs"),
        ({"grad_inputs": ((u.COTANGENT, 1.0), u.FROM_X)}, TypeError, "grad_inputs"),
        ({"attrs": [("flags", 0)]}, TypeError, "attrs"),
        ({"attrs": {"flags": 1.5}}, TypeError, "flags"),
        ({"grad_attrs": {1: 0}}, TypeError, "grad_attrs"),
        ({"recording_attrs": {"flags": None}}, TypeError, "flags"),
        ({"num_outputs": 0}, ValueError, "num_outputs"),
        ({"num_outputs": 5}, ValueError, "num_outputs"),
    ]:
        with pytest.raises(error, match=match):
            build(**kwargs)
    op = build()
    with pytest.raises(TypeError, match="immutable"):
        op.__init__("TFSort>SoftSortEager", {}, (eps,), "TFSort>SoftSortEagerGrad", gin, {},
                    grad)
    with pytest.raises(TypeError, match=r"\(ctx, x\)"):
        op(tf.constant([1.0]))
    # An unknown op type or attribute, or an input the op rejects: None (the caller's
    # generic path then raises TF's error).
    ctx = tfsort._utils.eager_context()
    assert build(op_type="TFSort>NoSuchOp")(ctx, tf.constant([1.0])) is None
    assert build(attrs={"flags": 0, "nope": True})(ctx, tf.constant([1.0])) is None
    assert build(attrs={"flags": 16})(ctx, tf.constant([1.0])) is None  # unknown flag bit
    assert op(ctx, tf.constant(1.0)) is None  # rank 0
    assert op(ctx, [1.0, 2.0]) is None  # not an eager tensor
    np.testing.assert_array_equal(op(ctx, tf.constant([[3.0, 1.0]])).numpy(), [[2.0, 1.0]])


def test_fast_paths_leave_op_callbacks_to_the_generic_path(eager_impl):
    """Op callbacks (here tf.debugging.enable_check_numerics) only run on TF's generic
    path, so with callbacks registered the fast paths step aside: the NaN row that
    soft_rank returns for a NaN input must be reported."""
    x = tf.constant([[1.0, np.nan, 2.0]])
    tf.debugging.enable_check_numerics()
    try:
        for fn in (tfsort.soft_rank, tfsort.isotonic_regression):
            with pytest.raises(tf.errors.InvalidArgumentError, match="NaN"):
                with tf.GradientTape() as tape:
                    tape.watch(x)
                    fn(x)
            with pytest.raises(tf.errors.InvalidArgumentError, match="NaN"):
                fn(x)
    finally:
        tf.debugging.disable_check_numerics()
    assert np.isnan(tfsort.soft_rank(x).numpy()).all()


def test_fast_path_calls_from_many_threads_match_serial_calls(eager_impl):
    """Tapes are per thread and the C++ path releases the GIL while an op runs: calls with
    tapes from several threads at once give the serial results."""
    import concurrent.futures  # noqa: PLC0415

    rng = _rng(47)
    xs = [tf.constant(rng.normal(size=(3, 40))) for _ in range(16)]
    w = tf.constant(rng.normal(size=(3, 40)))
    fns = [lambda a: tfsort.soft_rank(a, regularization_strength=0.3),
           lambda a: tfsort.soft_sort(a, "kl", 2.0, "DESCENDING"),
           lambda a: tfsort.isotonic_regression(a)]

    def work(i):
        fn = fns[i % 3]
        with tf.GradientTape() as tape:
            tape.watch(xs[i])
            out = fn(xs[i])
        return out.numpy(), tape.gradient(out, xs[i], output_gradients=w).numpy()

    serial = [work(i) for i in range(len(xs))]
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        for _ in range(5):
            for got, want in zip(pool.map(work, range(len(xs))), serial):
                np.testing.assert_array_equal(got[0], want[0])
                np.testing.assert_array_equal(got[1], want[1])


def test_fast_paths_hold_no_references_after_the_tape_is_gone(eager_impl):
    """The recorded backward step holds x until the tape is freed, and nothing after."""
    import gc  # noqa: PLC0415
    import sys  # noqa: PLC0415

    x = tf.constant(_rng(48).normal(size=(2, 6)))
    w = tf.constant(_rng(49).normal(size=(2, 6)))
    tfsort.soft_rank(x)  # builds the cached fast path
    gc.collect()
    before = sys.getrefcount(x), sys.getrefcount(w)
    for fn in (tfsort.soft_rank, tfsort.soft_sort, tfsort.isotonic_regression):
        for _ in range(3):
            with tf.GradientTape() as tape:
                tape.watch(x)
                out = fn(x)
            tape.gradient(out, x, output_gradients=w)
            del tape, out
        with tf.GradientTape(persistent=True) as tape:  # never asked for a gradient
            tape.watch(x)
            fn(x)
        del tape
    gc.collect()
    assert (sys.getrefcount(x), sys.getrefcount(w)) == before


def test_fast_paths_run_under_a_device_scope(eager_impl):
    x = tf.constant([[3.0, 1.0, 2.0]])
    with tf.device("/CPU:0"):
        with tf.GradientTape() as tape:
            tape.watch(x)
            out = tfsort.soft_rank(x, regularization_strength=0.01)
        g = tape.gradient(out, x)
    assert out.device.endswith("CPU:0") and g.device.endswith("CPU:0")
    np.testing.assert_allclose(out.numpy(), [[3.0, 1.0, 2.0]])


def test_row_lengths_across_the_cached_scratch_bound():
    """Rows up to 8192 reuse per-thread scratch that only grows; longer rows get their own
    (ShardScratch in isotonic_kernels.cc). A sequence of lengths that shrinks, grows past
    the bound and comes back must stay exact for every op and its gradient (fwd against the
    NumPy references; float64, eagerly, so the eager-only ops and the stash run too)."""
    rng = _rng(31)
    for n in (100, 8192, 7, 10000, 8000, 3, 12289, 64):
        x = rng.normal(size=(2, n)) * 3.0
        w = rng.normal(size=(2, n))
        xt, wt = tf.constant(x), tf.constant(w)
        for name, fn, want_fn in [
            ("soft_rank", lambda a: tfsort.soft_rank(a, regularization_strength=0.5),
             lambda r: ref.soft_rank(r, 0.5)),
            ("soft_sort", lambda a: tfsort.soft_sort(a, regularization_strength=0.5),
             lambda r: ref.soft_sort(r, 0.5)),
            ("isotonic", lambda a: tfsort.isotonic_regression(a, decreasing=False),
             lambda r: ref.isotonic_l2(r, decreasing=False)),
        ]:
            with tf.GradientTape() as tape:
                tape.watch(xt)
                out = fn(xt)
            grad = tape.gradient(out, xt, output_gradients=wt)
            want = np.stack([want_fn(r) for r in x])
            _assert_close(out, want, TOL[tf.float64])
            # The same VJP through the graph ops (aux and segments outputs) in a tf.function.
            graph = tf.function(lambda a, fn=fn: _vjp(fn, a, wt))(xt)
            np.testing.assert_array_equal(grad.numpy(), graph.numpy(), err_msg=f"{name} n={n}")


def _vjp(fn, a, w):
    with tf.GradientTape() as tape:
        tape.watch(a)
        out = fn(a)
    return tape.gradient(out, a, output_gradients=w)


def test_many_untaken_stash_entries_stay_correct():
    """Forward calls whose gradients are never taken overflow the bounded stash; the
    gradients of the calls that are taken are still exact."""
    rng = _rng(12)
    xs = [tf.constant(rng.normal(size=(2, 30))) for _ in range(150)]
    with tf.GradientTape(persistent=True) as tape:
        for x in xs:
            tape.watch(x)
        outs = [tfsort.soft_rank(x, regularization_strength=0.1) for x in xs]
    for i in (0, 75, 149):
        w = rng.normal(size=(2, 30))  # not constant: a constant has a zero VJP (sum of ranks)
        got = tape.gradient(outs[i], xs[i], output_gradients=tf.constant(w))
        # Central differences of the NumPy reference: soft_rank is piecewise linear in x,
        # so they are exact up to rounding away from PAV block changes.
        # (Rows are independent: one row's sum at a time keeps rounding below 1e-8.)
        x, h = xs[i].numpy(), 1e-4
        want = np.zeros_like(x)
        for r, c in np.ndindex(x.shape):
            step = np.zeros(x.shape[1])
            step[c] = h
            up = ref.soft_rank(x[r] + step, 0.1) @ w[r]
            down = ref.soft_rank(x[r] - step, 0.1) @ w[r]
            want[r, c] = (up - down) / (2 * h)
        assert np.abs(want).max() > 1.0
        np.testing.assert_allclose(got.numpy(), want, rtol=1e-6, atol=1e-6)


def test_stash_element_bound_evicts_and_stays_exact():
    """Twenty 65536-element calls exceed the stash's element bound (2^20), so the first ones
    are evicted and re-sort; every gradient must equal the graph path's (aux output)."""
    rng = _rng(13)
    xs = [tf.constant(rng.normal(size=(64, 1024)).astype(np.float32)) for _ in range(20)]
    w = tf.constant(rng.normal(size=(64, 1024)).astype(np.float32))
    with tf.GradientTape(persistent=True) as tape:
        for x in xs:
            tape.watch(x)
        outs = [tfsort.soft_sort(x) for x in xs]

    @tf.function
    def graph_vjp(x):
        with tf.GradientTape() as t:
            t.watch(x)
            out = tfsort.soft_sort(x)
        return t.gradient(out, x, output_gradients=w)

    for i in (0, 10, 19):
        got = tape.gradient(outs[i], xs[i], output_gradients=w)
        np.testing.assert_array_equal(got.numpy(), graph_vjp(xs[i]).numpy())


def test_corrupt_aux_is_an_error_not_a_crash():
    raw = tfsort._ops.ops
    x = tf.constant([[3.0, 1.0, 2.0]])
    eps = tf.constant(1.0, tf.float64)
    bad = tf.constant([[0, 7, 1]], tf.int32)  # index 7 is out of range for n = 3
    with pytest.raises(tf.errors.InvalidArgumentError, match="aux"):
        raw.tf_sort_soft_rank_grad(tf.ones_like(x), x, eps, [bad])
    with pytest.raises((tf.errors.InvalidArgumentError, ValueError), match="aux|shape"):
        raw.tf_sort_soft_rank_grad(tf.ones_like(x), x, eps, [tf.constant([[0, 1]], tf.int32)])
    with pytest.raises(tf.errors.InvalidArgumentError, match="regularization_strength"):
        raw.tf_sort_soft_rank(x, tf.constant(-1.0, tf.float64), num_aux=1)


@pytest.mark.parametrize("dtype", [tf.float16, tf.float32, tf.float64], ids=["f16", "f32", "f64"])
@pytest.mark.parametrize("n", [1, 2, 3, 8, 9, 15, 16, 17, 63, 64, 65, 100, 128, 129, 255, 256, 257,
                               1000, 4095, 4096, 5000])
@pytest.mark.parametrize("name,descending", [("soft_rank", False), ("soft_rank", True),
                                             ("soft_sort", False), ("soft_sort", True)])
def test_fused_sort_order_is_a_stable_argsort(name, descending, n, dtype):
    """The permutation in the aux output is the stable argsort of the row (ties in index
    order) around the sort switches (counting ranks for 8 < n <= 128 with AVX2, falling
    back on ties to a sorting network up to n = 64 or an 8-bit radix sort, 11-bit radix
    from n = 4096), against NumPy, not the kernel's own sort. Rows mix ties, a wide range of
    magnitudes and an all-tied row."""
    raw = tfsort._ops.ops
    rng = _rng(n)
    rows = [rng.integers(-3, 4, size=n),                        # many ties
            rng.normal(size=n) * 10.0 ** rng.integers(-4, 5, size=n),  # magnitudes
            np.full(n, 2.5)]                                     # all tied
    x = np.stack(rows).astype(dtype.as_numpy_dtype)
    op = getattr(raw, f"tf_sort_{name}")
    aux = op(tf.constant(x), tf.constant(1.0, tf.float64), num_aux=1,
             descending=descending)[1][0].numpy()
    perm = aux & 0x7FFFFFFF
    # The kernel sorts sign * x descending: sign = +1 for ascending ranks and for a
    # descending sort (see SoftSign in isotonic_kernels.cc).
    sign = 1.0 if (name == "soft_rank") != descending else -1.0
    key = -sign * x.astype(np.float64)
    want = np.argsort(key, axis=-1, kind="stable")
    np.testing.assert_array_equal(perm, want)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_every_short_row_length_gives_the_stable_argsort(dtype):
    """Rows of 8 < n <= 128 without ties sort by counting ranks on AVX2 CPUs, the others
    with a pruned sorting network per length up to n = 64 (float32 keys), a radix sort
    above, or std::sort (float64 keys) (sort_util.h). Every length from 1 to 140, on rows
    with ties (the fallback), distinct values of both signs over 60 decades (the counting
    path) and monotone rows, gives NumPy's stable argsort."""
    raw = tfsort._ops.ops
    rng = _rng(43)
    eps = tf.constant(1.0, tf.float64)
    for n in range(1, 141):
        # Distinct magnitudes 1..n of both signs (no zero, so no signed-zero question).
        distinct = (rng.permutation(n) + 1) * rng.choice([-1, 1], size=n)
        x = np.stack([rng.integers(-3, 4, size=n), rng.normal(size=n),
                      distinct * 10.0 ** rng.integers(-30, 30, size=n),
                      np.arange(n)[::-1], np.arange(n)]).astype(dtype)
        aux = raw.tf_sort_soft_rank(tf.constant(x), eps, num_aux=1)[1][0].numpy()
        want = np.argsort(-x.astype(np.float64), axis=-1, kind="stable")
        np.testing.assert_array_equal(aux & 0x7FFFFFFF, want, err_msg=f"n={n}")


@pytest.mark.parametrize("reg", ["l2", "kl"])
@pytest.mark.parametrize("direction", ["ASCENDING", "DESCENDING"])
@pytest.mark.parametrize("name", ["soft_rank", "soft_sort"])
def test_rows_of_single_element_blocks(name, direction, reg):
    """Rows whose sorted gaps all lie between eps and 1 / eps leave every PAV block one
    element long (soft_rank pools gaps below eps, soft_sort gaps above 1 / eps), which the
    fused kernels write (and their gradients read) without a loop per block. Such rows,
    next to a row with pooled blocks, match the NumPy reference, their aux marks every
    position as a block start, and their VJP matches finite differences."""
    rng = _rng(45)
    eps = 0.5
    spread = rng.permutation(np.cumsum(rng.uniform(0.7, 1.8, size=12)))  # gaps in (eps, 1/eps)
    mixed = rng.permutation([0.0, 0.01, 0.02, 5.0, 5.01, 10.0, 10.01, 20.0, 20.01, 30.0,
                             30.02, 40.0])                              # tiny and huge gaps
    x = np.stack([spread, mixed, -spread])
    fn = getattr(tfsort, name)
    reference = getattr(ref, name)
    got = fn(tf.constant(x), reg, eps, direction)
    want = np.stack([reference(r, eps, reg, direction) for r in x])
    _assert_close(got, want, TOL[tf.float64])
    op = getattr(tfsort._ops.ops, f"tf_sort_{name}")
    aux = op(tf.constant(x), tf.constant(eps, tf.float64), num_aux=1, regularization=reg,
             descending=direction == "DESCENDING")[1][0].numpy()
    starts = (aux.view(np.uint32) & 0x80000000) != 0
    assert starts[0].all() and starts[2].all() and not starts[1].all()
    _check_gradient(lambda v: fn(v, reg, eps, direction), [tf.constant(x)])


@pytest.mark.parametrize("decreasing", [True, False])
def test_l2_pav_on_runs_plateaus_and_trends_matches_references(decreasing):
    """Rows built from non-decreasing runs, plateaus of equal values and noisy trends (the
    kernel pushes each maximal non-decreasing run as one block): values match the NumPy
    reference and scikit-learn, and the segment ids are the blocks of equal values."""
    rng = _rng(21)
    n = 300
    rows = [
        np.repeat(rng.integers(-5, 5, size=30), 10).astype(np.float64),   # plateaus
        np.concatenate([np.sort(rng.normal(size=50)) for _ in range(6)]),  # increasing runs
        np.linspace(3, -3, n) + rng.normal(size=n),                        # noisy trend
        -np.linspace(3, -3, n) + rng.normal(size=n) * 0.1,                 # one long run
        np.round(rng.normal(size=n), 1),                                   # many ties
    ]
    y = np.stack(rows)
    sol, seg = tfsort._ops.ops.tf_sort_isotonic_l2(tf.constant(y), increasing=not decreasing)
    sol, seg = sol.numpy(), seg.numpy()
    want = np.stack([ref.isotonic_l2(r, decreasing=decreasing) for r in y])
    sk = np.stack([sklearn.isotonic.isotonic_regression(r, increasing=not decreasing)
                   for r in y])
    np.testing.assert_allclose(sol, want, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(sol, sk, rtol=1e-10, atol=1e-10)
    # Block ids step by one exactly where the (decreasing or increasing) solution changes.
    steps = np.diff(seg, axis=-1)
    assert set(np.unique(steps)) <= {0, 1}
    assert seg[:, 0].tolist() == [0] * len(rows)
    changes = np.abs(np.diff(sol, axis=-1)) > 1e-9
    np.testing.assert_array_equal(steps == 1, changes)


def test_fast_paths_step_aside_under_asynchronous_execution(eager_impl):
    """With asynchronous eager execution a kernel's argument error would only surface at
    the next sync point, so the fast paths leave such calls to the generic path: bad
    arguments still raise ValueError at the call, and good ones give the usual results."""
    rng = np.random.default_rng(50)
    x = tf.constant(rng.normal(size=(3, 9)))
    w = tf.constant(rng.normal(size=(3, 9)))
    fns = [tfsort.soft_rank, tfsort.isotonic_regression, tfsort.diff_sort,
           lambda a: tfsort.soft_topk(a, 3)]
    want = [_vjp(fn, x, w).numpy() for fn in fns]
    tf.config.experimental.set_synchronous_execution(False)
    try:
        with pytest.raises(ValueError, match="k must satisfy"):
            tfsort.soft_topk(x, 20)
        with pytest.raises(ValueError, match="rank"):
            tfsort.soft_rank(tf.constant(1.0))
        got = [_vjp(fn, x, w).numpy() for fn in fns]
    finally:
        tf.config.experimental.set_synchronous_execution(True)
    for g, ref in zip(got, want):
        np.testing.assert_array_equal(g, ref)
