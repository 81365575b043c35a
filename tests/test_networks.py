"""Tests for tfsort.networks: schedules, relaxed sort/rank, gradients, XLA path, edge cases.

The NumPy float64 reference below is written from the math in design.md (section 2), not
from the C++ kernel: it runs the comparator list with explicit alphas and builds P.
"""

import itertools
import math
import resource

import numpy as np
import pytest
import tensorflow as tf
from scipy.special import ndtr

import tfsort
from tfsort.networks import RELAXATIONS

MONOTONIC = ("reciprocal", "cauchy", "optimal")


# ---------------------------------------------------------------------------------------
# NumPy reference


def ref_alpha(rel, s, a, b):
    u = b - a
    d = s * u
    if rel in ("logistic", "softmax"):
        return 1.0 / (1.0 + np.exp(-d))
    if rel == "logistic_phi":
        return 1.0 / (1.0 + np.exp(-d / (abs(u) + 1e-10) ** 0.25))
    if rel == "gaussian":
        return ndtr(d)
    if rel == "reciprocal":
        return (d / (2.0 + abs(d)) + 1.0) / 2.0
    if rel == "cauchy":
        return math.atan(d) / math.pi + 0.5
    assert rel == "optimal"
    out = min(max(d, -0.25), 0.25) + 0.5
    if abs(d) > 0.25:
        out += np.sign(d) * (0.25 - 1.0 / (16.0 * abs(d)))
    return out


def ref_network(x, layers, rel, s):
    """Returns (ascending relaxed sort, P) of one row, in float64."""
    x = np.array(x, dtype=np.float64)
    n = len(x)
    p = np.eye(n)
    for layer in layers:
        for i, j in layer:
            a, b = x[i], x[j]
            al = ref_alpha(rel, s, a, b)
            if rel == "softmax":
                mx = np.logaddexp(s * a, s * b) / s
                x[i], x[j] = a + b - mx, mx
            else:
                x[i], x[j] = al * a + (1 - al) * b, (1 - al) * a + al * b
            pi, pj = p[i].copy(), p[j].copy()
            p[i], p[j] = al * pi + (1 - al) * pj, (1 - al) * pi + al * pj
    return x, p


def alternating_bitonic(n):
    """diffsort-style bitonic network for n = 2^k: comparators (i, i + m) whose direction
    alternates between blocks; returns layers of (min_position, max_position)."""
    k = int(math.log2(n))
    layers = []
    for block in range(k):
        for layer in range(block + 1):
            m = 2 ** (block - layer)
            cur = []
            for i in range(0, n, 2 * m):
                for j in range(m):
                    a, b = i + j, i + j + m
                    if ((i + j) // 2 ** (block + 1)) % 2 == 1:
                        a, b = b, a
                    cur.append((a, b))
            layers.append(cur)
    return layers


def rows(seed, shape, dtype=np.float64):
    return np.random.RandomState(seed).randn(*shape).astype(dtype)


def distinct(seed, shape):
    """Rows of shuffled integers (gaps of 1, so a steep network sorts them exactly)."""
    rs = np.random.RandomState(seed)
    n = shape[-1]
    flat = np.stack([rs.permutation(n) for _ in range(int(np.prod(shape[:-1])))])
    return flat.reshape(shape).astype(np.float32) - n / 2


def hard_ranks(x, desc=False):
    order = np.argsort(-x if desc else x, axis=-1, kind="stable")
    return np.argsort(order, axis=-1).astype(np.float64) + 1


# ---------------------------------------------------------------------------------------
# Schedules


@pytest.mark.parametrize("k", range(0, 8))
def test_bitonic_layer_count_power_of_two(k):
    n = 2**k
    layers = tfsort.sorting_network(n)
    assert len(layers) == k * (k + 1) // 2
    assert all(len(layer) == n // 2 for layer in layers)


@pytest.mark.parametrize("network", ["bitonic", "odd_even"])
@pytest.mark.parametrize("n", range(0, 11))
def test_schedule_sorts_all_zero_one_inputs(network, n):
    layers = tfsort.sorting_network(n, network)
    for layer in layers:
        ends = [w for pair in layer for w in pair]
        assert len(ends) == len(set(ends))
        assert all(0 <= i < j < n for i, j in layer)
    for bits in itertools.product([0, 1], repeat=n):
        v = list(bits)
        for layer in layers:
            for i, j in layer:
                v[i], v[j] = min(v[i], v[j]), max(v[i], v[j])
        assert v == sorted(bits)


def test_odd_even_layers():
    layers = tfsort.sorting_network(5, "odd_even")
    assert len(layers) == 5
    assert layers[0] == [(0, 1), (2, 3)] and layers[1] == [(1, 2), (3, 4)]


def test_pretty_network():
    text = tfsort.pretty_network(8)
    lines = text.splitlines()
    assert len(lines) == 1 + 6
    assert "(0,7)" in lines[4] and "(0,3)" in lines[2]
    assert tfsort.pretty_network(1, "odd_even").splitlines()[0].startswith("wire")


# ---------------------------------------------------------------------------------------
# Values against the NumPy reference


@pytest.mark.parametrize("relaxation", RELAXATIONS)
@pytest.mark.parametrize("network", ["bitonic", "odd_even"])
@pytest.mark.parametrize("n", [1, 2, 5, 8, 13])
def test_matches_numpy_reference(relaxation, network, n):
    x = rows(n, (3, n))
    s = 2.5
    layers = tfsort.sorting_network(n, network)
    out = tfsort.diff_sort(x, network, relaxation, s).numpy()
    ranks = tfsort.diff_rank(x, network, relaxation, s).numpy()
    for r in range(3):
        want, p = ref_network(x[r], layers, relaxation, s)
        np.testing.assert_allclose(out[r], want, rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(ranks[r], (np.arange(1, n + 1)[:, None] * p).sum(0), 1e-10)


@pytest.mark.parametrize("relaxation", RELAXATIONS)
@pytest.mark.parametrize("s", [0.3, 7.1])
def test_float64_steepness_is_not_rounded_to_float32(relaxation, s):
    # steepness reaches the float64 kernels unrounded (a float64 scalar input): with s
    # rounded to float32 (relative error ~1e-8) these comparisons would fail.
    assert float(np.float32(s)) != s
    n = 7
    x = rows(21, (3, n)) * 3.0
    layers = tfsort.sorting_network(n, "bitonic")
    out = tfsort.diff_sort(x, "bitonic", relaxation, s).numpy()
    ranks = tfsort.diff_rank(x, "bitonic", relaxation, s).numpy()
    _, perm = tfsort.diff_sort(x, "bitonic", relaxation, s, return_permutation=True)
    swapped = tfsort.compare_swap(x, [0, 3], [5, 4], relaxation, s).numpy()
    for r in range(3):
        want, p = ref_network(x[r], layers, relaxation, s)
        np.testing.assert_allclose(out[r], want, rtol=1e-12, atol=1e-13)
        np.testing.assert_allclose(ranks[r], (np.arange(1, n + 1)[:, None] * p).sum(0),
                                   rtol=1e-12)
        np.testing.assert_allclose(perm.numpy()[r], p, rtol=1e-12, atol=1e-13)
        want_cs, _ = ref_network(x[r], [[(0, 5), (3, 4)]], relaxation, s)
        np.testing.assert_allclose(swapped[r], want_cs, rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("relaxation", RELAXATIONS)
@pytest.mark.parametrize("n", [4, 16])
def test_bitonic_equals_alternating_form(relaxation, n):
    x = rows(1, (n,))
    want, _ = ref_network(x, alternating_bitonic(n), relaxation, 3.0)
    got = tfsort.diff_sort(x, relaxation=relaxation, steepness=3.0).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("mode", ["eager", "function"])
@pytest.mark.parametrize("direction", ["ASCENDING", "DESCENDING"])
@pytest.mark.parametrize("n", [1, 2, 3, 5, 8, 100, 1000])
def test_steep_equals_hard_sort_and_ranks(mode, direction, n):
    x = distinct(n, (2, n))
    desc = direction == "DESCENDING"
    kw = dict(relaxation="logistic", steepness=1e4, direction=direction)
    sort_fn = lambda v: tfsort.diff_sort(v, **kw)  # noqa: E731
    rank_fn = lambda v: tfsort.diff_rank(v, **kw)  # noqa: E731
    if mode == "function":
        sort_fn, rank_fn = tf.function(sort_fn), tf.function(rank_fn)
    want = np.sort(x, axis=-1)
    if desc:
        want = want[..., ::-1]
    np.testing.assert_array_equal(sort_fn(tf.constant(x)).numpy(), want)
    np.testing.assert_allclose(rank_fn(tf.constant(x)).numpy(), hard_ranks(x, desc), atol=1e-3)


@pytest.mark.parametrize("n", [3, 8, 20])
def test_odd_even_steep_is_hard_sort(n):
    x = distinct(0, (2, n))
    out = tfsort.diff_sort(x, "odd_even", "logistic", 1e4)
    np.testing.assert_array_equal(out.numpy(), np.sort(x, -1))


def test_descending_is_reversed_ascending_and_ranks_complement():
    x = rows(3, (4, 7))
    asc = tfsort.diff_sort(x).numpy()
    desc = tfsort.diff_sort(x, direction="descending").numpy()
    np.testing.assert_allclose(desc, asc[:, ::-1], rtol=1e-12)
    ra = tfsort.diff_rank(x).numpy()
    rd = tfsort.diff_rank(x, direction="DESCENDING").numpy()
    np.testing.assert_allclose(rd, 8 - ra, rtol=1e-12)


@pytest.mark.parametrize("relaxation", RELAXATIONS)
@pytest.mark.parametrize("network", ["bitonic", "odd_even"])
def test_row_sum_preserved(relaxation, network):
    x = rows(4, (3, 11))
    out = tfsort.diff_sort(x, network, relaxation, 1.0).numpy()
    np.testing.assert_allclose(out.sum(-1), x.sum(-1), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("relaxation", [r for r in RELAXATIONS if r != "softmax"])
@pytest.mark.parametrize("n", [5, 8])
def test_permutation_doubly_stochastic(relaxation, n):
    x = rows(5, (2, 3, n))
    out, p = tfsort.diff_sort(x, relaxation=relaxation, steepness=2.0, return_permutation=True)
    p = p.numpy()
    assert p.shape == (2, 3, n, n)
    assert (p >= -1e-12).all()
    np.testing.assert_allclose(p.sum(-1), 1.0, rtol=1e-12)
    np.testing.assert_allclose(p.sum(-2), 1.0, rtol=1e-12)
    np.testing.assert_allclose(out.numpy(), np.einsum("...ij,...j->...i", p, x), rtol=1e-10)
    np.testing.assert_allclose(out.numpy(), tfsort.diff_sort(x, relaxation=relaxation,
                                                             steepness=2.0).numpy(), 1e-10)
    ranks = tfsort.diff_rank(x, relaxation=relaxation, steepness=2.0).numpy()
    np.testing.assert_allclose(ranks, np.einsum("i,...ij->...j", np.arange(1, n + 1), p), 1e-10)


def test_permutation_descending_and_axis():
    x = rows(6, (5, 2))
    out, p = tfsort.diff_sort(x, direction="DESCENDING", axis=0, return_permutation=True)
    np.testing.assert_allclose(out.numpy(), np.einsum("bij,jb->ib", p.numpy(), x), 1e-10)
    np.testing.assert_allclose(
        out.numpy(), tfsort.diff_sort(x, direction="DESCENDING", axis=0).numpy(), 1e-10
    )


# ---------------------------------------------------------------------------------------
# Gradients


@pytest.mark.parametrize("relaxation", RELAXATIONS)
@pytest.mark.parametrize("n", [5, 8])
@pytest.mark.parametrize("what", ["sort", "rank", "rank_desc"])
def test_gradients_float64(relaxation, n, what):
    x = tf.constant(rows(7 + n, (2, n)))
    kw = dict(relaxation=relaxation, steepness=1.5)
    if what == "sort":
        fn = lambda v: tfsort.diff_sort(v, **kw)  # noqa: E731
    else:
        direction = "DESCENDING" if what == "rank_desc" else "ASCENDING"
        fn = lambda v: tfsort.diff_rank(v, direction=direction, **kw)  # noqa: E731
    theo, num = tf.test.compute_gradient(fn, [x], delta=1e-6)
    np.testing.assert_allclose(theo[0], num[0], atol=1e-6)


@pytest.mark.parametrize("relaxation", ["cauchy", "logistic", "softmax"])
def test_gradients_odd_even_and_both_outputs(relaxation):
    x = tf.constant(rows(11, (2, 6)))

    def fn(v):
        s = tfsort.diff_sort(v, "odd_even", relaxation, 2.0, "DESCENDING")
        return s * 0.3 + tfsort.diff_rank(v, "odd_even", relaxation, 2.0)

    theo, num = tf.test.compute_gradient(fn, [x], delta=1e-6)
    np.testing.assert_allclose(theo[0], num[0], atol=1e-6)


@pytest.mark.parametrize(
    "relaxation, network, n, direction",
    [
        ("cauchy", "bitonic", 5, "ASCENDING"),
        ("logistic_phi", "bitonic", 8, "DESCENDING"),
        ("softmax", "odd_even", 4, "ASCENDING"),
        ("optimal", "bitonic", 16, "ASCENDING"),
    ],
)
def test_permutation_gradient(relaxation, network, n, direction):
    # n = 16 has several checkpoint segments in the kernel's backward pass.
    x = tf.constant(rows(12, (2, n)))
    w = tf.constant(rows(13, (2, n, n)))

    def fn(v):
        out, p = tfsort.diff_sort(v, network, relaxation, 2.0, direction, return_permutation=True)
        return tf.reduce_sum(p * w, -1) + out

    theo, num = tf.test.compute_gradient(fn, [x], delta=1e-6)
    np.testing.assert_allclose(theo[0], num[0], atol=1e-6)


def test_permutation_only_gradient_and_composite_agree():
    x = tf.constant(rows(14, (3, 6)))
    w = tf.constant(rows(15, (3, 6, 6)))
    with tf.GradientTape() as tape:
        tape.watch(x)
        _, p = tfsort.diff_sort(x, relaxation="gaussian", steepness=2.0, return_permutation=True)
        loss = tf.reduce_sum(p * w)
    g = tape.gradient(loss, x)
    with tf.GradientTape() as tape:
        tape.watch(x)
        _, pc, _ = tfsort.networks._composite(x, "bitonic", "gaussian", 2.0, want_perm=True)
        loss_c = tf.reduce_sum(pc * w)
    np.testing.assert_allclose(p.numpy(), pc.numpy(), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(g.numpy(), tape.gradient(loss_c, x).numpy(), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("relaxation", RELAXATIONS)
def test_compare_swap_values_and_gradient(relaxation):
    x = tf.constant(rows(13, (3, 6)))
    left, right = [0, 4, 3], [2, 1, 5]
    out = tfsort.compare_swap(x, left, right, relaxation, 2.0).numpy()
    for r in range(3):
        want = x.numpy()[r].copy()
        for i, j in zip(left, right):
            a, b = want[i], want[j]
            if relaxation == "softmax":
                mx = np.logaddexp(2 * a, 2 * b) / 2
                want[i], want[j] = a + b - mx, mx
            else:
                al = ref_alpha(relaxation, 2.0, a, b)
                want[i], want[j] = al * a + (1 - al) * b, (1 - al) * a + al * b
        np.testing.assert_allclose(out[r], want, rtol=1e-12)
    fn = lambda v: tfsort.compare_swap(v, left, right, relaxation, 2.0)  # noqa: E731
    theo, num = tf.test.compute_gradient(fn, [x], delta=1e-6)
    np.testing.assert_allclose(theo[0], num[0], atol=1e-6)


def test_compare_swap_bad_indices():
    with pytest.raises(tf.errors.InvalidArgumentError, match="more than one"):
        tfsort.compare_swap([1.0, 2.0, 3.0], [0, 1], [1, 2])
    with pytest.raises(tf.errors.InvalidArgumentError, match="out of range"):
        tfsort.compare_swap([1.0, 2.0, 3.0], [0], [3])


@pytest.mark.parametrize("relaxation", MONOTONIC)
@pytest.mark.parametrize("network", ["bitonic", "odd_even"])
def test_monotonic_relaxations_have_nonnegative_jacobian(relaxation, network):
    x = tf.constant(rows(14, (8, 7)) * 0.3)
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = tfsort.diff_sort(x, network, relaxation, 5.0)
    jac = tape.batch_jacobian(y, x).numpy()
    assert jac.min() >= -1e-12


def test_logistic_is_not_monotonic_somewhere():
    # Sanity check that the monotonicity test can fail (Petersen et al. 2022, Fig. 2).
    x = tf.constant(rows(14, (64, 7)) * 0.3)
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = tfsort.diff_sort(x, "bitonic", "logistic", 5.0)
    assert tape.batch_jacobian(y, x).numpy().min() < -1e-4


# ---------------------------------------------------------------------------------------
# Graph modes, XLA, dtypes, shapes


def test_unknown_batch_dimension():
    f = tf.function(
        lambda v: tfsort.diff_rank(v), input_signature=[tf.TensorSpec([None, 6], tf.float32)]
    )
    x = rows(15, (4, 6), np.float32)
    np.testing.assert_allclose(f(x).numpy(), tfsort.diff_rank(x).numpy(), rtol=1e-6)


@pytest.mark.parametrize(
    "network, relaxation", [("bitonic", r) for r in RELAXATIONS] + [("odd_even", "cauchy")]
)
def test_xla_composite_matches(network, relaxation):
    x = tf.constant(rows(16, (3, 7), np.float32))
    kw = dict(network=network, relaxation=relaxation, steepness=3.0)

    @tf.function(jit_compile=True)
    def xla(v):
        with tf.GradientTape() as tape:
            tape.watch(v)
            s = tfsort.diff_sort(v, direction="DESCENDING", **kw)
            r = tfsort.diff_rank(v, **kw)
            loss = tf.reduce_sum(s * tf.range(7.0)) + tf.reduce_sum(r * r)
        return s, r, tape.gradient(loss, v)

    with tf.GradientTape() as tape:
        tape.watch(x)
        s = tfsort.diff_sort(x, direction="DESCENDING", **kw)
        r = tfsort.diff_rank(x, **kw)
        loss = tf.reduce_sum(s * tf.range(7.0)) + tf.reduce_sum(r * r)
    g = tape.gradient(loss, x)
    xs, xr, xg = xla(x)
    np.testing.assert_allclose(xs.numpy(), s.numpy(), atol=1e-5)
    np.testing.assert_allclose(xr.numpy(), r.numpy(), atol=1e-5)
    np.testing.assert_allclose(xg.numpy(), g.numpy(), atol=1e-4)


def test_xla_compare_swap():
    x = tf.constant(rows(17, (2, 5), np.float32))
    f = tf.function(lambda v: tfsort.compare_swap(v, [0, 3], [2, 1]), jit_compile=True)
    np.testing.assert_allclose(f(x).numpy(), tfsort.compare_swap(x, [0, 3], [2, 1]).numpy(),
                               atol=1e-6)


@pytest.mark.parametrize("dtype", [tf.float16, tf.bfloat16, tf.float32])
def test_low_precision_dtypes(dtype):
    x = tf.constant(rows(18, (3, 9), np.float32))
    want = tfsort.diff_sort(tf.cast(x, tf.float64)).numpy()
    out = tfsort.diff_sort(tf.cast(x, dtype))
    assert out.dtype == dtype
    tol = {tf.float16: 1e-2, tf.bfloat16: 5e-2, tf.float32: 1e-5}[dtype]
    np.testing.assert_allclose(tf.cast(out, tf.float64).numpy(), want, atol=tol * 4)
    with tf.GradientTape() as tape:
        xd = tf.cast(x, dtype)
        tape.watch(xd)
        y = tfsort.diff_rank(xd)
    assert tape.gradient(y, xd).dtype == dtype


def test_integers_and_lists_become_float32():
    assert tfsort.diff_sort([3, 1, 2]).dtype == tf.float32
    assert tfsort.diff_rank(np.array([[3, 1, 2]])).dtype == tf.float32


@pytest.mark.parametrize("shape", [(1,), (4, 1), (0, 5), (3, 0), (0,)])
def test_tiny_and_empty(shape):
    x = tf.constant(np.ones(shape, np.float32))
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        s = tfsort.diff_sort(x)
        r = tfsort.diff_rank(x)
    assert s.shape == shape and r.shape == shape
    for y in (s, r):
        g = tape.gradient(y, x)
        assert g is not None and g.shape == shape
    if shape and shape[-1] == 1:
        np.testing.assert_array_equal(r.numpy(), 1.0)


def test_axis():
    x = rows(19, (6, 3, 4))
    out = tfsort.diff_sort(x, axis=0).numpy()
    want = np.moveaxis(tfsort.diff_sort(np.moveaxis(x, 0, -1)).numpy(), -1, 0)
    np.testing.assert_allclose(out, want)


def test_nan_row_does_not_touch_other_rows():
    x = rows(20, (3, 8))
    x[1, 3] = np.nan
    out = tfsort.diff_sort(x).numpy()
    np.testing.assert_allclose(out[[0, 2]], tfsort.diff_sort(x[[0, 2]]).numpy())
    assert np.isnan(out[1]).any()


def test_large_n_bounded_memory():
    n = 65536
    x = tf.constant(rows(21, (1, n), np.float32))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = tfsort.diff_sort(x, steepness=100.0)
        loss = tf.reduce_sum(y * tf.range(n, dtype=tf.float32))
    g = tape.gradient(loss, x)
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    comparators = sum(len(layer) for layer in tfsort.sorting_network(n))
    assert comparators == (n // 2) * 16 * 17 // 2
    assert g.shape == (1, n) and np.isfinite(g.numpy()).all()
    # O(n log^2 n): 4.5M stored floats (18 MB), not n^2 = 4.3G.
    assert grown_mb < 400
    assert np.all(np.diff(y.numpy()[0]) > -0.5)


# ---------------------------------------------------------------------------------------
# Vector sort


def test_diff_sort_by_key():
    v = rows(22, (2, 7, 3), np.float32)
    keys = distinct(22, (2, 7))
    out = tfsort.diff_sort_by_key(v, keys, relaxation="logistic", steepness=1e4).numpy()
    order = np.argsort(keys, -1)
    np.testing.assert_allclose(out, np.take_along_axis(v, order[..., None], 1), atol=1e-6)
    out2, p = tfsort.diff_sort_by_key(
        v, lambda t: t[..., 0], direction="DESCENDING", return_permutation=True
    )
    assert p.shape == (2, 7, 7)
    np.testing.assert_allclose(out2.numpy()[..., 0],
                               tfsort.diff_sort(v[..., 0], direction="DESCENDING").numpy(),
                               atol=1e-5)
    with pytest.raises(ValueError, match="keys"):
        tfsort.diff_sort_by_key(v, keys[:, :5])


# ---------------------------------------------------------------------------------------
# Bad input


@pytest.mark.parametrize(
    "kwargs, name",
    [
        (dict(network="bubble"), "network"),
        (dict(relaxation="sigmoid"), "relaxation"),
        (dict(steepness=0.0), "steepness"),
        (dict(steepness=-1.0), "steepness"),
        (dict(steepness=float("nan")), "steepness"),
        (dict(steepness=float("inf")), "steepness"),
        (dict(direction="up"), "direction"),
        (dict(axis=3), "axis"),
    ],
)
@pytest.mark.parametrize("fn", [tfsort.diff_sort, tfsort.diff_rank])
def test_bad_arguments(fn, kwargs, name):
    with pytest.raises(ValueError, match=name):
        fn([[1.0, 2.0]], **kwargs)


def test_bad_values():
    with pytest.raises(ValueError):
        tfsort.diff_sort(1.0)
    with pytest.raises((TypeError, ValueError)):
        tfsort.diff_sort([True, False])
    with pytest.raises(ValueError, match="network"):
        tfsort.sorting_network(4, "nope")
    with pytest.raises(ValueError, match="relaxation"):
        tfsort.compare_swap([1.0, 2.0], [0], [1], relaxation="x")


# ---------------------------------------------------------------------------------------
# diffsort (Petersen et al.'s PyTorch package), when installed


@pytest.mark.parametrize("relaxation", ["logistic", "logistic_phi", "gaussian", "reciprocal",
                                        "cauchy", "optimal"])
@pytest.mark.parametrize("n", [4, 16, 64])
def test_matches_diffsort(relaxation, n):
    diffsort = pytest.importorskip("diffsort")
    torch = pytest.importorskip("torch")
    x = rows(23, (3, n))
    net = diffsort.DiffSortNet("bitonic", n, steepness=5.0, distribution=relaxation)
    want, want_p = net(torch.tensor(x))
    out, p = tfsort.diff_sort(x, relaxation=relaxation, steepness=5.0, return_permutation=True)
    np.testing.assert_allclose(out.numpy(), want.numpy(), rtol=1e-6, atol=1e-8)
    # diffsort's matrix is X[j, i] = weight of input j in sorted position i.
    np.testing.assert_allclose(p.numpy(), np.swapaxes(want_p.numpy(), -1, -2), atol=1e-6)
    np.testing.assert_allclose(
        tfsort.diff_sort(x, relaxation=relaxation, steepness=5.0).numpy(), want.numpy(),
        rtol=1e-6, atol=1e-8,
    )


def test_xla_permutation_and_vector_sort():
    x = tf.constant(rows(24, (2, 6, 3), np.float32))

    @tf.function(jit_compile=True)
    def xla(v):
        return tfsort.diff_sort_by_key(v, lambda t: t[..., 0], return_permutation=True)

    out, p = xla(x)
    want, want_p = tfsort.diff_sort_by_key(x, x[..., 0], return_permutation=True)
    np.testing.assert_allclose(p.numpy(), want_p.numpy(), atol=1e-5)
    np.testing.assert_allclose(out.numpy(), want.numpy(), atol=1e-5)


def test_docstring_examples():
    import doctest

    import tfsort.networks

    result = doctest.testmod(
        tfsort.networks,
        extraglobs={"tf": tf, "tfsort": tfsort, "np": np},
        optionflags=doctest.NORMALIZE_WHITESPACE,
    )
    assert result.failed == 0 and result.attempted > 0


# ---------------------------------------------------------------------------------------
# Second order


def _first_gradient(network, relaxation, s, direction, w):
    def first(v):
        with tf.GradientTape() as tape:
            tape.watch(v)
            y = tfsort.diff_sort(v, network, relaxation, s, direction)
            loss = tf.reduce_sum(y * w) + tf.reduce_sum(y**3)
        return tape.gradient(loss, v)

    return first


@pytest.mark.parametrize("relaxation", RELAXATIONS)
@pytest.mark.parametrize("network", ["bitonic", "odd_even"])
@pytest.mark.parametrize("direction", ["ASCENDING", "DESCENDING"])
def test_second_order_vs_finite_differences(relaxation, network, direction):
    # Well-separated values keep every comparator away from the relaxations' kinks
    # (logistic_phi at u = 0, optimal at |d| = 1/4), where finite differences break down.
    x = tf.constant(distinct(31, (2, 6)) + 0.1 * rows(32, (2, 6)))
    w = tf.constant(rows(33, (2, 6)))
    first = _first_gradient(network, relaxation, 1.3, direction, w)
    theo, num = tf.test.compute_gradient(first, [x], delta=1e-5)
    np.testing.assert_allclose(theo[0], num[0], atol=1e-6)
    theo, num = tf.test.compute_gradient(tf.function(first), [x], delta=1e-5)
    np.testing.assert_allclose(theo[0], num[0], atol=1e-6)


@pytest.mark.parametrize("relaxation", RELAXATIONS)
@pytest.mark.parametrize("direction", ["ASCENDING", "DESCENDING"])
@pytest.mark.parametrize("n", [5, 8])
def test_forward_accumulator_equals_jacobian(relaxation, direction, n):
    x = tf.constant(rows(34, (3, n)))
    tangent = tf.constant(rows(35, (3, n)))
    with tf.autodiff.ForwardAccumulator(x, tangent) as acc:
        y = tfsort.diff_sort(x, "bitonic", relaxation, 2.3, direction)
    with tf.GradientTape() as tape:
        tape.watch(x)
        y2 = tfsort.diff_sort(x, "bitonic", relaxation, 2.3, direction)
    jac = tape.batch_jacobian(y2, x).numpy()
    want = np.einsum("bij,bj->bi", jac, tangent.numpy())
    np.testing.assert_allclose(acc.jvp(y).numpy(), want, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize(
    "fn",
    [
        lambda v: tfsort.diff_rank(v),
        lambda v: tfsort.diff_sort(v, return_permutation=True)[1],
    ],
)
def test_unsupported_second_order_raises(fn):
    x = tf.constant(rows(36, (2, 4)))
    with pytest.raises(NotImplementedError, match="not implemented"):
        with tf.GradientTape() as outer:
            outer.watch(x)
            with tf.GradientTape() as inner:
                inner.watch(x)
                loss = tf.reduce_sum(fn(x) ** 2)
            g = inner.gradient(loss, x)
        outer.gradient(g, x)


def test_bad_grad_saved_shape_raises():
    from tfsort._ops import ops as raw

    x = tf.constant(rows(37, (2, 4)))
    one = tf.constant(1.0, tf.float64)
    out, saved = raw.tf_sort_sorting_network(x, one, Tacc=tf.float64)
    with pytest.raises((tf.errors.InvalidArgumentError, ValueError), match="grad_saved"):
        raw.tf_sort_sorting_network_grad(out, saved, tf.zeros([3], tf.float64), one)
    with pytest.raises((tf.errors.InvalidArgumentError, ValueError), match="steepness"):
        raw.tf_sort_sorting_network(x, tf.constant(-1.0, tf.float64), Tacc=tf.float64)


@pytest.mark.parametrize("relaxation", RELAXATIONS)
def test_compare_swap_second_order(relaxation):
    x = tf.constant(distinct(38, (2, 6)) + 0.1 * rows(39, (2, 6)))
    w = tf.constant(rows(40, (2, 6)))
    left, right = [0, 4, 3], [2, 1, 5]

    def first(v):
        with tf.GradientTape() as tape:
            tape.watch(v)
            y = tfsort.compare_swap(v, left, right, relaxation, 1.3)
            y = tfsort.compare_swap(y, [0, 1], [3, 2], relaxation, 1.3)
            loss = tf.reduce_sum(y * w) + tf.reduce_sum(y**3)
        return tape.gradient(loss, v)

    theo, num = tf.test.compute_gradient(first, [x], delta=1e-5)
    np.testing.assert_allclose(theo[0], num[0], atol=1e-6)
    tangent = tf.constant(rows(41, (2, 6)))
    with tf.autodiff.ForwardAccumulator(x, tangent) as acc:
        y = tfsort.compare_swap(x, left, right, relaxation, 1.3)
    with tf.GradientTape() as tape:
        tape.watch(x)
        y2 = tfsort.compare_swap(x, left, right, relaxation, 1.3)
    want = np.einsum("bij,bj->bi", tape.batch_jacobian(y2, x).numpy(), tangent.numpy())
    np.testing.assert_allclose(acc.jvp(y).numpy(), want, rtol=1e-12, atol=1e-14)


def test_eager_calls_take_the_fast_path_and_graphs_do_not(eager_impl, fast_path_spy):
    """An eager last-axis diff_sort / diff_rank runs SortingNetwork and, for its gradient,
    SortingNetworkGrad through _utils.make_eager_op's fast path, with the same values and
    VJPs as a tf.function (which records the ops with their registered gradients);
    permutation matrices and other axes take the generic path."""
    seen = fast_path_spy
    rng = np.random.default_rng(71)
    x = tf.constant(rng.normal(size=(3, 10)).astype(np.float32))
    w = tf.constant(rng.normal(size=(3, 10)).astype(np.float32))
    for fn in (lambda a: tfsort.diff_sort(a, steepness=4.0),
               lambda a: tfsort.diff_rank(a, relaxation="logistic", direction="DESCENDING")):
        def vjp(a, fn=fn):
            with tf.GradientTape() as tape:
                tape.watch(a)
                out = fn(a)
            return out, tape.gradient(out, a, output_gradients=w)

        seen.clear()
        eager = vjp(x)
        assert seen == ["TFSort>SortingNetwork", "TFSort>SortingNetworkGrad"]
        for got, want in zip(eager, tf.function(vjp)(x)):
            np.testing.assert_array_equal(got.numpy(), want.numpy())
    seen.clear()
    with tf.GradientTape() as tape:
        tape.watch(x)
        tfsort.diff_sort(x, return_permutation=True)
        tfsort.diff_sort(tf.transpose(x), axis=0)
    assert "TFSort>SortingNetwork" not in seen
