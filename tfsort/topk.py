"""Differentiable top-k masks: sigmoid threshold and sparse (capped-simplex) projection.

Notation: one row x of length n, eps = regularization_strength, 0 < k < n.

* ``method="sigmoid"``: m = sigmoid((x + t) / eps) with the per-row threshold t chosen so
  that sum(m) = k (safeguarded Newton in a fused C++ kernel). With v = m (1 - m) / eps the
  Jacobian is diag(v) - v v^T / sum(v), symmetric, applied in O(n) by a gradient op.
* ``method="sparse"``: the Euclidean projection of x / eps onto {0 <= m <= 1, sum m = k}
  (Sander, Puigcerver, Djolonga, Peyre and Blondel, "Fast, Differentiable and Sparse
  Top-k: a Convex Analysis Perspective", ICML 2023). On the descending-sorted row s it is
  s - isotonic_l2(s - w) with w = (1, ..., 1, 0, ..., 0) (k ones), computed by one sort and
  one pool-adjacent-violators pass (tfsort/cc/kernels/topk.h reuses isotonic.h). The mask
  has exact 0s and 1s; its Jacobian is (I - 1 1^T / |F|) / eps on the fractional entries F.

Under XLA (tf.function(jit_compile=True), Keras jit_compile) custom ops cannot run, so a
composite path of plain TF ops is chosen automatically: bisection with a fixed iteration
count on the threshold (sigmoid) or on the clip threshold of the capped-simplex
projection (sparse), finished exactly, with gradients by autodiff of the converged
threshold. It agrees with the kernels within float32 rounding.
"""

import math
import numbers

import numpy as np
import tensorflow as tf

from tfsort import _utils
from tfsort._ops import ops as _raw

__all__ = ["soft_topk"]

_METHODS = ("sigmoid", "sparse")
# Bounds of the doubles that round to a positive finite float32: eps outside them would
# overflow x / eps or (x + t) / eps in the float32 compute type.
_F32_ROUNDS_TO_ZERO = 7.006492321624086e-46
_F32_ROUNDS_TO_INF = 3.4028235677973366e38
_XLA_BISECTION_STEPS = 64


def soft_topk(
    values,
    k,
    regularization_strength: float = 1.0,
    method: str = "sigmoid",
    axis: int = -1,
) -> tf.Tensor:
    """A soft top-k mask in [0, 1] that sums to k along an axis.

    As eps -> 0 both methods tend to the hard top-k indicator; "sparse" reaches it
    exactly (once the k-th and (k+1)-th values are more than eps apart), "sigmoid" only in
    the limit. Large eps spreads the mass towards k / n everywhere.

    Args:
      values: tensor of rank >= 1 (float16, bfloat16, float32 or float64; integers and
        Python numbers become float32). At least 2 entries along `axis`.
      k: the mask's sum, with 0 < k < n (n = size of `axis`): a Python number, or a tensor
        with one value per row (shape () or the batch shape, i.e. the shape of `values`
        without `axis`, optionally with a trailing 1). "sigmoid" accepts a real k;
        "sparse" needs an integer. No gradient flows to k.
      regularization_strength: eps > 0, finite, within float32's range (about 1.2e-38 to
        3.4e38). The ops take it as a float64 scalar, so float64 values see it unrounded.
      method: "sigmoid" or "sparse" (case-insensitive).
      axis: the axis to select along; every other axis is batch.

    Returns:
      The mask, with the shape and dtype of `values` (float16 / bfloat16 are computed in
      float32). Rows containing NaN or +-inf give a NaN mask (and NaN gradients) in that
      row only.

    Raises:
      ValueError: k outside 0 < k < n, of the wrong shape or (for "sparse") not an
        integer; bad regularization_strength, method or axis; fewer than 2 entries along
        axis. With a k tensor whose value is only known when the graph runs, a bad value
        raises tf.errors.InvalidArgumentError instead.
      TypeError: non-numeric values or k.

    Example:
      >>> x = tf.constant([[1., 5., 3., 4.]])
      >>> tfsort.soft_topk(x, 2, regularization_strength=0.1, method="sparse").numpy()
      array([[0., 1., 0., 1.]], dtype=float32)
      >>> m = tfsort.soft_topk(x, 2, regularization_strength=0.1)
      >>> float(tf.reduce_sum(m))
      2.0
    """
    if (type(values) is _utils.EAGER_TENSOR and type(axis) is int and axis == -1
            and type(k) in (int, float)):
        # An eager call on the last axis with a Python k: the fused op run and recorded by
        # _utils.make_eager_op's fast path (sigmoid only; None: take the path below, which
        # also raises the errors).
        out = _utils.run_fast_path(
            _EAGER_TOPK, (type(k), k, type(regularization_strength), regularization_strength,
                          method), _eager_topk_op, values)
        if out is not None:
            return out
    values = _utils.convert_values(values)
    method = _utils.check_choice(method, "method", _METHODS)
    eps = _utils.check_strength(regularization_strength)
    if not _F32_ROUNDS_TO_ZERO < eps < _F32_ROUNDS_TO_INF:
        raise ValueError(
            "regularization_strength must be a positive finite float32 value "
            f"(about 1.2e-38 to 3.4e38), got {eps}"
        )
    axis = _utils.normalize_axis(axis, values.shape.rank)
    x, perm = _utils.move_axis_last(values, axis)
    n = x.shape[-1]
    if n is not None and n < 2:
        raise ValueError(
            f"values must have at least 2 entries along axis {axis} for a top-k with "
            f"0 < k < n, got n = {n}"
        )
    k_t = _check_k(k, x, method)
    if not tf.executing_eagerly() and _utils.in_xla_context():
        if method == "sigmoid":
            out = _sigmoid_topk_composite(x, _k_column(k_t, x), eps)
        else:
            out = _sparse_topk_composite(x, _k_column(k_t, x), eps)
    elif method == "sigmoid":
        out = _raw.tf_sort_sigmoid_top_k(x, k_t, _utils.float64_scalar(eps))
    else:
        out = _raw.tf_sort_sparse_top_k(x, k_t, _utils.float64_scalar(eps))[0]
    return _utils.restore_axis(out, perm)


# (type(k), k, type(eps), eps, method) -> the eager fast path (_utils.make_eager_op) of
# SigmoidTopK, or None where none applies (method="sparse").
_EAGER_TOPK = _utils.eager_op_cache()


def _eager_topk_op(key):
    """Builds (and caches) the fast path for an _EAGER_TOPK key with valid arguments; None
    otherwise (the caller's generic path then raises, or handles method="sparse")."""
    _, k, _, regularization_strength, method = key
    try:
        method = _utils.check_choice(method, "method", _METHODS)
        eps = _utils.check_strength(regularization_strength)
    except (TypeError, ValueError):
        return None
    if not (_F32_ROUNDS_TO_ZERO < eps < _F32_ROUNDS_TO_INF and math.isfinite(k) and k > 0):
        return None  # 0 < k < n itself is checked by the kernel (n is per call)
    fast = None
    if method == "sigmoid":
        eps_t = _utils.float64_scalar(eps, True)
        fast = _utils.make_eager_op(
            "TFSort>SigmoidTopK", {}, (_k_constant(float(k)), eps_t), "TFSort>SigmoidTopKGrad",
            (_utils.COTANGENT, _utils.OUTPUT, eps_t), {}, _raw.tf_sort_sigmoid_top_k_grad)
    return _utils.remember(_EAGER_TOPK, key, fast)


def _check_k(k, x, method):
    """Validates k; returns a float64 tensor of shape [] or [rows] for the kernels."""
    n = x.shape[-1]
    if isinstance(k, bool):
        raise TypeError(f"k must be a number or a tensor, got {k!r}")
    if isinstance(k, (numbers.Real, np.number)):
        k = float(k)
        _check_scalar_k(k, n, method)
        return _k_constant(k)
    if not isinstance(k, (tf.Tensor, tf.Variable)):
        try:
            k = tf.convert_to_tensor(k)
        except (TypeError, ValueError) as e:
            raise TypeError(f"k must be a number or a tensor of numbers: {e}") from e
    if not (k.dtype.is_integer or k.dtype.is_floating) or k.dtype == tf.bool:
        raise TypeError(f"k must be an integer or floating tensor, got dtype {k.dtype.name}")
    batch = x.shape[:-1]
    kshape = k.shape
    if kshape.rank is None:
        raise ValueError("k must have a known rank: shape () or the batch shape of values")
    if kshape.rank != 0:
        ok = kshape.is_compatible_with(batch) or kshape.is_compatible_with(
            batch.concatenate([1])
        )
        if not ok:
            raise ValueError(
                f"k must have shape () or the batch shape {batch} of values (optionally with "
                f"a trailing 1), got {kshape}"
            )
    static = tf.get_static_value(k)
    if static is not None:
        _check_k_values(np.asarray(static, dtype=np.float64), n, method)
    k = tf.cast(k, tf.float64)
    if kshape.rank != 0:
        k = tf.reshape(k, [-1])
    return k


def _check_scalar_k(k, n, method):
    """Pure-Python twin of _check_k_values for a Python number (the common, hot case)."""
    if not math.isfinite(k):
        raise ValueError(f"k must be finite, got {k}")
    if n is not None and not 0 < k < n:
        raise ValueError(f"k must satisfy 0 < k < n = {n} (the size of axis), got k = {k}")
    if n is None and not k > 0:
        raise ValueError(f"k must be positive, got k = {k}")
    if method == "sparse" and not k.is_integer():
        raise ValueError(f'k must be an integer for method="sparse", got k = {k}')


_K_CACHE = {}


def _k_constant(k):
    """tf.constant(k, float64), cached for eager calls (saves an op dispatch per call)."""
    if not tf.executing_eagerly():
        return tf.constant(k, tf.float64)
    t = _K_CACHE.get(k)
    if t is None:
        if len(_K_CACHE) > 256:
            _K_CACHE.clear()
        t = _K_CACHE[k] = tf.constant(k, tf.float64)
    return t


def _check_k_values(k, n, method):
    if not np.all(np.isfinite(k)):
        raise ValueError(f"k must be finite, got {k}")
    if n is not None and not np.all((k > 0) & (k < n)):
        raise ValueError(f"k must satisfy 0 < k < n = {n} (the size of axis), got k = {k}")
    if n is None and not np.all(k > 0):
        raise ValueError(f"k must be positive, got k = {k}")
    if method == "sparse" and not np.all(np.floor(k) == k):
        raise ValueError(f'k must be an integer for method="sparse", got k = {k}')


def _k_column(k_t, x):
    """k as a [..., 1] tensor broadcastable against x (which has the axis last)."""
    if k_t.shape.rank == 0:
        return k_t
    return tf.reshape(k_t, tf.concat([tf.shape(x)[:-1], [1]], 0))



# The composite paths compute in float64 whatever the input dtype: the kernels form
# (x + t) / eps and x / eps in double, and with small eps float32 would lose digits there.
_COMPOSITE_DTYPE = tf.float64


# ---------------------------------------------------------------------------------------
# Composite paths (plain TF ops; XLA-compilable).


def _bisect(f, lo, hi, steps):
    """Root of a row-wise increasing f (f(lo) < 0 <= f(hi), shapes [..., 1]) by `steps`
    halvings of [lo, hi] in a while_loop (XLA-friendly); returns the final midpoint."""

    def body(i, lo, hi):
        mid = 0.5 * (lo + hi)
        below = f(mid) < 0
        return i + 1, tf.where(below, mid, lo), tf.where(below, hi, mid)

    _, lo, hi = tf.while_loop(
        lambda i, lo, hi: i < steps, body, (tf.constant(0), lo, hi), maximum_iterations=steps
    )
    return 0.5 * (lo + hi)


def _sigmoid_topk_composite(x, k, eps, steps=_XLA_BISECTION_STEPS):
    """Sigmoid top-k along the last axis in plain TF ops: `steps` bisection steps on the
    threshold, two Newton steps inside the final bracket, then a gradient by the implicit
    function theorem (dt/dx = -v / sum(v)), which autodiff picks up from a zero-valued
    correction term."""
    dtype = x.dtype
    compute = _COMPOSITE_DTYPE
    x = tf.cast(x, compute)
    k = tf.cast(k, compute)
    n = tf.cast(tf.shape(x)[-1], compute)
    inv_eps = tf.constant(1.0 / eps, compute)
    xs = tf.stop_gradient(x)
    base = eps * (tf.math.log(k) - tf.math.log(n - k))
    lo = base - tf.reduce_max(xs, axis=-1, keepdims=True)
    hi = base - tf.reduce_min(xs, axis=-1, keepdims=True)

    t = _bisect(
        lambda t: tf.reduce_sum(tf.sigmoid((xs + t) * inv_eps), axis=-1, keepdims=True) - k,
        lo, hi, steps,
    )
    for _ in range(2):
        p = tf.sigmoid((xs + t) * inv_eps)
        sv = tf.reduce_sum(p * (1 - p), axis=-1, keepdims=True) * inv_eps
        f = tf.reduce_sum(p, axis=-1, keepdims=True) - k
        step = tf.math.divide_no_nan(f, sv)
        t = tf.clip_by_value(t - step, lo, hi)
    t = tf.stop_gradient(t)
    p0 = tf.sigmoid((x + t) * inv_eps)
    sv = tf.stop_gradient(tf.reduce_sum(p0 * (1 - p0), axis=-1, keepdims=True) * inv_eps)
    s0 = tf.reduce_sum(p0, axis=-1, keepdims=True)
    # Value t exactly; derivative -(dp0/dx) / sum(v).
    t_x = t - tf.math.divide_no_nan(s0 - tf.stop_gradient(s0), sv)
    out = tf.sigmoid((x + t_x) * inv_eps)
    return tf.cast(out, dtype)


def _sparse_topk_composite(x, k, eps, steps=_XLA_BISECTION_STEPS):
    """Sparse top-k along the last axis in plain TF ops: bisection on the clip threshold
    tau of m = clip(x / eps + tau, 0, 1), then Newton steps on the piecewise-linear
    sum(m) - k, which are exact once the fractional set F is found."""
    dtype = x.dtype
    compute = _COMPOSITE_DTYPE
    z = tf.cast(x, compute) / tf.constant(eps, compute)
    k = tf.cast(k, compute)
    zs = tf.stop_gradient(z)
    lo = -tf.reduce_max(zs, axis=-1, keepdims=True)
    hi = 1.0 - tf.reduce_min(zs, axis=-1, keepdims=True)

    tau = _bisect(
        lambda t: tf.reduce_sum(tf.clip_by_value(zs + t, 0.0, 1.0), axis=-1, keepdims=True) - k,
        lo, hi, steps,
    )
    # f is piecewise linear with slope |F|, so a Newton step from the bisection point is
    # exact. Written as a step (not as tau = (k - #upper - sum_F z) / |F|) so that an entry
    # on a cap, classified one way by one reduction and the other way by another (XLA may
    # round differently in different fusions), moves tau by at most the rounding in f.
    for _ in range(2):
        u = zs + tau
        frac = (u > 0) & (u < 1)
        nf = tf.reduce_sum(tf.cast(frac, compute), axis=-1, keepdims=True)
        f = tf.reduce_sum(tf.clip_by_value(u, 0.0, 1.0), axis=-1, keepdims=True) - k
        tau = tau - f / tf.maximum(nf, 1.0)
    tau = tf.stop_gradient(tau)
    u = zs + tau
    frac = (u > 0) & (u < 1)
    upper = u >= 1
    nf = tf.reduce_sum(tf.cast(frac, compute), axis=-1, keepdims=True)
    sz = tf.reduce_sum(tf.where(frac, z, tf.zeros_like(z)), axis=-1, keepdims=True)
    # Value tau exactly; derivative -1 / |F| on the fractional entries.
    tau_x = tau - (sz - tf.stop_gradient(sz)) / tf.maximum(nf, 1.0)
    out = tf.where(frac, z + tau_x, tf.cast(upper, compute))
    return tf.cast(out, dtype)


# ---------------------------------------------------------------------------------------
# Gradients, registered on the op types (cheaper per eager call than tf.custom_gradient,
# and found again after a SavedModel reload once `import tfsort` ran). No gradient flows
# to k.


@tf.RegisterGradient("TFSort>SigmoidTopK")
def _sigmoid_topk_grad(op, grad):
    eps = op.inputs[2]
    return [_raw.tf_sort_sigmoid_top_k_grad(grad, op.outputs[0], eps), None, None]


@tf.RegisterGradient("TFSort>SigmoidTopKGrad")
def _sigmoid_topk_grad_grad(op, hess):
    # The op is G(g, p) = v * (g - c), v = p (1 - p) / eps, c = (v . g) / sum(v): linear and
    # self-adjoint in g, so d/dg <hess, G> = G(hess, p). Its dependence on x runs through
    # the mask p only (an output of the forward op), so returning d/dp <hess, G> lets
    # autodiff chain it through the forward op's gradient exactly:
    #   d/dp_j <h, G> = (h_j - d)(g_j - c)(1 - 2 p_j) / eps,  d = (v . h) / sum(v).
    g, p, eps = op.inputs
    d_g = _raw.tf_sort_sigmoid_top_k_grad(hess, p, eps)
    dtype = p.dtype
    compute = _utils.compute_dtype(dtype)
    g, p, h = (tf.cast(t, compute) for t in (g, p, hess))
    v = p * (1 - p)
    sv = tf.reduce_sum(v, axis=-1, keepdims=True)
    c = tf.math.divide_no_nan(tf.reduce_sum(v * g, axis=-1, keepdims=True), sv)
    d = tf.math.divide_no_nan(tf.reduce_sum(v * h, axis=-1, keepdims=True), sv)
    d_p = (h - d) * (g - c) * (1 - 2 * p) / tf.cast(eps, compute)
    return [d_g, tf.cast(d_p, dtype), None]


@tf.RegisterGradient("TFSort>SparseTopK")
def _sparse_topk_grad(op, grad, _unused_support_grad):
    eps = op.inputs[2]
    return [_raw.tf_sort_sparse_top_k_grad(grad, op.outputs[1], eps), None, None]


@tf.RegisterGradient("TFSort>SparseTopKGrad")
def _sparse_topk_grad_grad(op, hess):
    # Linear and self-adjoint in grad; independent of the values (piecewise-constant F).
    return [_raw.tf_sort_sparse_top_k_grad(hess, op.inputs[1], op.inputs[2]), None, None]
