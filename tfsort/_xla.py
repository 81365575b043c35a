"""XLA-compatible composite paths for isotonic regression, soft sort and soft rank.

XLA cannot compile tfsort's custom ops, and Keras 3 compiles train steps with XLA by default
on GPU machines (``jit_compile="auto"``) without asking losses. Inside an XLA context
(``tf.function(jit_compile=True)``, Keras ``jit_compile``; see
:func:`tfsort._utils.in_xla_context`) the public functions of :mod:`tfsort.isotonic` call
the functions here instead: the same formulas (README, "The math"; Blondel et al., "Fast
Differentiable Sorting and Ranking", ICML 2020) written with plain TF ops.

Isotonic regression without a PAV loop. For decreasing constraints and a separable convex
loss whose block values have the mediant property (the value of two adjacent blocks pooled
lies between their values: L2 mean(y_B); KL LSE(y_B) - LSE(w_B)), the PAV blocks are the
edges of the least concave majorant of the cumulative diagram, so with
value(j..k) the value of the block y[j..k]:

    a block starts at k  <=>  min_{j<k} value(j..k-1)  >  max_{b>=k} value(k..b)

(strict, because PAV pools ties). Every value(j..k) comes from one n x n cumulative sum
(L2) or cumulative log-sum-exp (KL) per row, computed from each start j so nothing is
subtracted (no cancellation). The boundaries give an int segment id per position, and the
output is recomputed from the segments with differentiable masked reductions, so autodiff
yields exactly the PAV Jacobian (block diagonal: 1/|B| for L2, softmax(y_B) and
-softmax(w_B) for KL), ties pooled as in the custom ops. Increasing constraints reverse
the row.

Cost of these formulas (the "matrix path"): O(n^2) memory per row (a few [rows, n, n]
temporaries, float64 for float32 inputs: about 40 n^2 bytes per row at the peak, e.g.
40 MiB for one row of n = 1024) and O(n^2) time for L2, O(n^2 log n) for KL (a
log-sum-exp scan). Since session 5 they serve only short rows on GPU machines; everything
else takes the "loop path" (see _MATRIX_MAX_N below): the same blocks found by PAV in one
batched tf.while_loop, O(n) memory, values equal to the custom ops' (the merges happen in
the same order). Measured on 2 shared CPU cores, 8 rows, soft_rank fwd+bwd under jit,
n = 1024: 5 ms on the loop path against 110 ms (L2) / 1.1 s (KL) on the matrix path.

Precision mirrors the custom ops' accumulation type: float32 and float64 inputs compute in
float64 (so float32 results agree with the custom ops to about one ulp), float16 and
bfloat16 in float32. Rows with NaN or +-inf give all-NaN rows and NaN gradients in that row
only, like the custom ops.
"""

import numpy as np
import tensorflow as tf

from tfsort import _utils

__all__ = ["isotonic_regression", "soft_rank", "soft_sort"]


def _acc_dtype(dtype):
    """The custom ops' accumulation type: float32 for half types, float64 otherwise."""
    return tf.float32 if dtype in (tf.float16, tf.bfloat16) else tf.float64


def _rows(x):
    """Reshapes [..., n] to [rows, n] (works for empty batches and empty rows)."""
    shape = tf.shape(x)
    n = shape[-1]
    rows = tf.reduce_prod(shape[:-1])
    return tf.reshape(x, tf.stack([rows, n])), shape


def _bad_rows(*tensors):
    """[rows, 1] bool: True where any of the [rows, n] tensors has a NaN or +-inf."""
    bad = None
    for t in tensors:
        b = tf.reduce_any(tf.logical_not(tf.math.is_finite(t)), axis=-1, keepdims=True)
        bad = b if bad is None else tf.logical_or(bad, b)
    return bad


def _nan_guard(x, bad):
    """Zeros the rows flagged `bad` in the forward pass and makes their gradient NaN.

    The zeros keep NaN/inf out of the computation (and out of the other rows' gradients);
    the NaN gradient matches the custom ops, whose VJP of a non-finite row is NaN.
    """

    @tf.custom_gradient
    def guard(t):
        def grad(g):
            return tf.where(bad, tf.constant(float("nan"), g.dtype), g)

        return tf.where(bad, tf.zeros_like(t), t), grad

    return guard(x)


def _upper(n):
    """[n, n] bool, True where j <= k (row j, column k)."""
    r = tf.range(n)
    return r[:, None] <= r[None, :]


def _scan(a, combine, fallback):
    """Inclusive scan of `combine` along the last axis (used for log-sum-exp).

    With a static length: Hillis-Steele doubling with static slices, O(n log n) per scanned
    row (XLA:CPU lowers tf.math.cumulative_logsumexp to a reduce-window that is O(n^2) per
    row, which made the whole path cubic). Otherwise `fallback` (the TF cumulative op).
    """
    n = a.shape[-1]
    if n is None:
        return fallback(a, axis=-1)
    step = 1
    while step < n:
        a = tf.concat([a[..., :step], combine(a[..., step:], a[..., :-step])], axis=-1)
        step *= 2
    return a


def _logaddexp(a, b):
    hi = tf.maximum(a, b)
    return hi + tf.math.log1p(tf.exp(tf.minimum(a, b) - hi))


def _block_values_matrix(y, w):
    """value(j..k) at [.., j, k] for j <= k (garbage elsewhere), without cancellation.

    L2 (w is None): mean(y[j..k]). KL: LSE(y[j..k]) - LSE(w[j..k]).
    """
    n = tf.shape(y)[-1]
    upper = _upper(n)
    if w is None:
        masked = tf.where(upper, y[..., None, :], tf.zeros_like(y[..., None, :]))
        sums = tf.cumsum(masked, axis=-1)  # XLA's own cumsum is already O(n) per row
        r = tf.range(n)
        count = tf.cast(tf.maximum(r[None, :] - r[:, None] + 1, 1), y.dtype)
        return sums / count

    # Cumulative log-sum-exp from each start j. Entries k < j are masked with the row's
    # smallest value minus a margin that makes their weight vanish (exp(-1e4) == 0), so
    # no -inf reaches log-add-exp (-inf - -inf is NaN).
    def cum_lse(t):
        low = tf.reduce_min(t, axis=-1, keepdims=True)[..., None] - 1e4
        masked = tf.where(upper, t[..., None, :], low)
        return _scan(masked, _logaddexp, tf.math.cumulative_logsumexp)

    return cum_lse(y) - cum_lse(w)


# Two ways to find the blocks and apply them:
# * the loop path: a batched PAV tf.while_loop for the blocks (_segments_pav), segment
#   reductions for the block values and gathers for the sort; O(n) memory, 2n - 1
#   sequential steps of O(rows) work. On CPU it measured faster at every row length
#   (soft_rank fwd+bwd, 8 rows, jit: n = 16 0.3 vs 0.4 ms, n = 256 1.3 vs 6.8 ms (L2) and
#   1.2 vs 43 ms (KL), n = 1024 5 vs 110 / 1100 ms).
# * the matrix path: the O(n^2) formulas above, one data-parallel pass. On a GPU each loop
#   step costs a kernel launch and a host round trip, so for short rows the matrix path is
#   expected to win there (not measured: no GPU on the dev machine).
# So rows of a static length up to _GPU_MATRIX_MAX_N take the matrix path when TF sees a
# GPU (where Keras compiles train steps with XLA by default); every other row, including
# rows of unknown length, takes the loop path.
_GPU_MATRIX_MAX_N = 256
_MATRIX_MAX_N = None  # the bound in use: resolved on first use (tests set it)


def _use_matrix(t):
    """Whether [rows, n] t takes the matrix path (a static n <= _MATRIX_MAX_N)."""
    global _MATRIX_MAX_N
    if _MATRIX_MAX_N is None:
        _MATRIX_MAX_N = _GPU_MATRIX_MAX_N if tf.config.list_logical_devices("GPU") else 0
    n = t.shape[-1]
    return n is not None and n <= _MATRIX_MAX_N


def _segments(y, w):
    """int32 [rows, n] block ids (0, 1, ...) of the decreasing isotonic solution."""
    if not _use_matrix(y):
        return _segments_pav(y, w)
    n = tf.shape(y)[-1]
    upper = _upper(n)
    vals = _block_values_matrix(y, w)
    big = tf.constant(float("inf"), vals.dtype)
    # colmin[c] = min_{j<=c} value(j..c); rowmax[r] = max_{k>=r} value(r..k).
    colmin = tf.reduce_min(tf.where(upper, vals, big), axis=-2)
    rowmax = tf.reduce_max(tf.where(upper, vals, -big), axis=-1)
    # Ties pool (as in PAV), and so do near-ties within a few ulps: the block values come
    # from log-sum-exps and sums accumulated in another order than PAV's merges, so an
    # exact tie may round either way. Pooling two blocks that differ by a few ulps moves
    # the solution by a few ulps and gives the Jacobian PAV gives at the exact tie.
    tol = 64.0 * float(np.finfo(vals.dtype.as_numpy_dtype).eps)
    left, right = colmin[..., :-1], rowmax[..., 1:]
    starts = left - right > tol * (tf.abs(left) + tf.abs(right))
    # Position 0 always starts a block (colmin[..., :1] is empty only when n == 0).
    first = tf.zeros_like(colmin[..., :1], dtype=tf.bool)
    starts = tf.concat([first, starts], axis=-1)
    return tf.cumsum(tf.cast(starts, tf.int32), axis=-1)


def _segments_pav(y, w):
    """_segments by pool-adjacent-violators, all rows in one tf.while_loop: O(n) memory.

    Each step, every row either pools its top two blocks (when they violate the decreasing
    order; ties pool, as in the custom ops) or pushes its next element as a new block, or
    idles once done: at most 2n - 1 steps. Block statistics are (sum, count) for L2 and
    (LSE(y_B), LSE(w_B)) for KL, merged exactly as the custom ops' PAV merges them.
    """
    shape = tf.shape(y)
    rows, n = shape[0], shape[1]
    row = tf.range(rows)
    kl = w is not None
    ones = tf.ones([rows], y.dtype)

    def at(t, k):  # t[r, k[r]] for every row r (k clipped into range)
        return tf.gather_nd(t, tf.stack([row, tf.clip_by_value(k, 0, n - 1)], axis=1))

    def value(a, b):
        return a - b if kl else a / b

    def step(i, busy, nxt, top, a, b, start):
        a1, b1, a2, b2 = at(a, top - 2), at(b, top - 2), at(a, top - 1), at(b, top - 1)
        merge = tf.logical_and(top >= 2, value(a1, b1) <= value(a2, b2))
        push = tf.logical_and(tf.logical_not(merge), nxt < n)
        if kl:
            merged_a, merged_b = _logaddexp(a1, a2), _logaddexp(b1, b2)
            pushed_b = at(w, nxt)
        else:
            merged_a, merged_b = a1 + a2, b1 + b2
            pushed_b = ones
        # The slot written: the lower block of a merge, the new top of a push; rows that
        # idle write their current value back.
        slot = tf.where(merge, top - 2, top)
        idx = tf.stack([row, tf.clip_by_value(slot, 0, n - 1)], axis=1)
        a = tf.tensor_scatter_nd_update(
            a, idx, tf.where(merge, merged_a, tf.where(push, at(y, nxt), at(a, slot))))
        b = tf.tensor_scatter_nd_update(
            b, idx, tf.where(merge, merged_b, tf.where(push, pushed_b, at(b, slot))))
        start = tf.tensor_scatter_nd_update(start, idx, tf.where(push, nxt, at(start, slot)))
        top = top + tf.cast(push, tf.int32) - tf.cast(merge, tf.int32)
        nxt = nxt + tf.cast(push, tf.int32)
        return i + 1, tf.reduce_any(tf.logical_or(merge, push)), nxt, top, a, b, start

    zeros = tf.zeros([rows], tf.int32)
    _, _, _, top, _, _, start = tf.while_loop(
        lambda i, busy, *_: tf.logical_and(busy, i < 2 * n - 1),
        step,
        [tf.constant(0), tf.constant(True), zeros, zeros, tf.zeros_like(y), tf.zeros_like(y),
         tf.zeros(shape, tf.int32)],
    )
    # Mark the start of every block after the first; the running count is the block id.
    k = tf.range(n)[None, :]
    first_or_unused = tf.logical_or(k < 1, k >= top[:, None])
    idx = tf.stack([tf.broadcast_to(row[:, None], shape), start], axis=-1)
    marks = tf.tensor_scatter_nd_add(tf.zeros(shape, tf.int32), tf.reshape(idx, [-1, 2]),
                                     tf.reshape(tf.where(first_or_unused, 0, 1), [-1]))
    return tf.cumsum(marks, axis=-1)


def _block_reduce(seg):
    """(reduce, spread) for the blocks `seg` of [rows, n] rows: reduce(op, t) applies a
    segment reduction per block, spread(v) gives each position its block's entry."""
    shape = tf.shape(seg)
    ids = seg + (tf.range(shape[0]) * shape[1])[:, None]
    num = shape[0] * shape[1]
    return (lambda op, t: op(t, ids, num)), (lambda v: tf.gather(v, ids))


def _iso_rows(y, w, decreasing):
    """Isotonic regression of [rows, n] finite y (w for KL, else None) in y's dtype."""
    if w is not None and not _use_matrix(y):
        w = tf.broadcast_to(w, tf.shape(y))  # (soft ops pass log rho as one [1, n] row)
    if not decreasing:
        y = tf.reverse(y, axis=[-1])
        w = None if w is None else tf.reverse(w, axis=[-1])
    # The blocks are piecewise constant in (y, w): no gradient flows through them.
    seg = tf.stop_gradient(
        _segments(tf.stop_gradient(y), None if w is None else tf.stop_gradient(w))
    )
    if not _use_matrix(y):
        # O(n) memory: per-block segment reductions, spread back with a gather. Unused
        # segment ids (more ids than blocks) are never gathered; the max(., 1) keeps their
        # 0 / 0 out of the gradient.
        reduce, spread = _block_reduce(seg)
        if w is None:
            total = reduce(tf.math.unsorted_segment_sum, y)
            count = reduce(tf.math.unsorted_segment_sum, tf.ones_like(y))
            out = spread(total / tf.maximum(count, 1))
        else:

            def block_lse(t):
                top = tf.stop_gradient(spread(reduce(tf.math.unsorted_segment_max, t)))
                total = reduce(tf.math.unsorted_segment_sum, tf.exp(t - top))
                return spread(tf.math.log(tf.maximum(total, 1))) + top

            out = block_lse(y) - block_lse(w)
        return out if decreasing else tf.reverse(out, axis=[-1])
    same = tf.equal(seg[..., :, None], seg[..., None, :])  # [rows, n, n] block membership
    if w is None:
        total = tf.reduce_sum(tf.where(same, y[..., None, :], tf.zeros_like(y[..., None, :])), -1)
        count = tf.reduce_sum(tf.cast(same, y.dtype), axis=-1)
        out = total / count
    else:
        ninf = tf.constant(float("-inf"), y.dtype)

        def block_lse(t):
            return tf.reduce_logsumexp(tf.where(same, t[..., None, :], ninf), axis=-1)

        out = block_lse(y) - block_lse(w)
    return out if decreasing else tf.reverse(out, axis=[-1])


def _last_axis(values, axis, fn):
    axis = _utils.normalize_axis(axis, values.shape.rank)
    x, perm = _utils.move_axis_last(values, axis)
    return _utils.restore_axis(fn(x), perm)


def _finish(out, bad, dtype, shape):
    out = tf.where(bad, tf.constant(float("nan"), out.dtype), out)
    return tf.reshape(tf.cast(out, dtype), shape)


def isotonic_regression(y, w=None, regularization="l2", decreasing=True, axis=-1):
    """XLA-compilable :func:`tfsort.isotonic_regression` (same arguments and results)."""
    y, w, _ = _utils.check_isotonic_args(y, w, regularization, decreasing)
    dtype = y.dtype
    acc = _acc_dtype(dtype)
    axis = _utils.normalize_axis(axis, y.shape.rank)
    yt, perm = _utils.move_axis_last(y, axis)
    y2, shape = _rows(tf.cast(yt, acc))
    if w is None:
        bad = _bad_rows(y2)
        out = _iso_rows(_nan_guard(y2, bad), None, decreasing)
    else:
        wt, _ = _utils.move_axis_last(w, axis)
        w2, _ = _rows(tf.cast(wt, acc))
        bad = _bad_rows(y2, w2)
        out = _iso_rows(_nan_guard(y2, bad), _nan_guard(w2, bad), decreasing)
    return _utils.restore_axis(_finish(out, bad, dtype, shape), perm)


def _take(v, idx):
    """v[r, idx[r, k]] for [rows, n] v and idx.

    Short rows: an exact masked sum over a [rows, n, n] one-hot (XLA fails to compile the
    gradient of a batched tf.gather when n == 1: "Scatter dimension 0 is of size zero").
    Long rows: a gather from the flattened rows (no [rows, n, n] temporary).
    """
    if not _use_matrix(v):
        shape = tf.shape(v)
        flat = idx + (tf.range(shape[0]) * shape[1])[:, None]
        return tf.gather(tf.reshape(v, [-1]), flat)
    onehot = tf.equal(idx[..., :, None], tf.range(tf.shape(v)[-1])[None, None, :])
    return tf.reduce_sum(tf.where(onehot, v[..., None, :], tf.zeros_like(v[..., None, :])), -1)


def _sorted_desc(z):
    """(s, perm): z sorted descending, ties in index order (as the custom ops sort)."""
    perm = tf.argsort(z, axis=-1, direction="DESCENDING", stable=True)
    return _take(z, perm), perm


def _unsort(v, perm):
    """out[..., perm[k]] = v[..., k]."""
    return _take(v, tf.argsort(perm, axis=-1, stable=True))


def _soft_common(values, regularization, regularization_strength, direction, axis, fn):
    values = _utils.convert_values(values)
    reg = _utils.check_regularization(regularization)
    eps = _utils.check_strength(regularization_strength)
    desc = _utils.check_descending(direction)
    dtype = values.dtype
    acc = _acc_dtype(dtype)

    def row_fn(x):
        x2, shape = _rows(tf.cast(x, acc))
        bad = _bad_rows(x2)
        x2 = _nan_guard(x2, bad)
        n = tf.shape(x2)[-1]
        rho = tf.cast(n - tf.range(n), acc)[None, :]  # (n, n-1, ..., 1)
        out = fn(x2, rho, reg, eps, desc)
        return _finish(out, bad, dtype, shape)

    return _last_axis(values, axis, row_fn)


def _rank_rows(x, rho, reg, eps, desc):
    # z = +-x / eps projected onto the permutahedron of rho (L2) or its KL analogue.
    z = (-x if desc else x) / eps
    s, perm = _sorted_desc(z)
    if reg == "l2":
        r = s - _iso_rows(s - rho, None, decreasing=True)
    else:
        r = tf.exp(s - _iso_rows(s, tf.math.log(rho), decreasing=True))
    return _unsort(r, perm)


def _sort_rows(x, rho, reg, eps, desc):
    sign = 1.0 if desc else -1.0
    s, _ = _sorted_desc(sign * x)
    t = rho / eps * tf.ones_like(s)
    if reg == "l2":
        v = _iso_rows(t - s, None, decreasing=True)
    else:
        v = _iso_rows(t, s, decreasing=True)
    return sign * (t - v)


def soft_rank(values, regularization="l2", regularization_strength=1.0, direction="ASCENDING",
              axis=-1):
    """XLA-compilable :func:`tfsort.soft_rank` (same arguments and results)."""
    return _soft_common(
        values, regularization, regularization_strength, direction, axis, _rank_rows
    )


def soft_sort(values, regularization="l2", regularization_strength=1.0, direction="ASCENDING",
              axis=-1):
    """XLA-compilable :func:`tfsort.soft_sort` (same arguments and results)."""
    return _soft_common(
        values, regularization, regularization_strength, direction, axis, _sort_rows
    )
