"""Isotonic regression, soft sort, soft rank and soft Spearman correlation.

Implements Blondel, Teboul, Berthet and Djolonga, "Fast Differentiable Sorting and Ranking"
(ICML 2020) with fused C++ ops: each soft sort / soft rank call sorts, runs one
pool-adjacent-violators (PAV) pass and un-permutes in a single kernel, O(n log n) per row.

Notation (README, "The math"): one row x of length n, eps = regularization_strength,
rho = (n, n-1, ..., 1). Ranks start at 1, like torchsort.
"""

import tensorflow as tf

from tfsort import _utils
from tfsort._ops import ops as _raw

__all__ = ["isotonic_regression", "soft_rank", "soft_sort", "spearmanr"]


# Validated (regularization, eps, descending) per distinct argument tuple: validation runs
# once, not on every eager call (small shapes are overhead-bound).
_SOFT_CONFIG = {}


def _soft_config(regularization, regularization_strength, direction):
    key = (regularization, type(regularization_strength), regularization_strength, direction)
    try:
        return _SOFT_CONFIG[key]
    except (KeyError, TypeError):  # new, or unhashable (validated; most likely rejected)
        pass
    reg = _utils.check_regularization(regularization)
    eps = _utils.check_strength(regularization_strength)
    desc = _utils.check_descending(direction)
    # The last entry is the eager ops' flags (see _EAGER_OP_TYPES).
    cfg = (reg, eps, desc, (_FLAG_KL if reg == "kl" else 0) | (_FLAG_DESCENDING if desc else 0))
    return _utils.remember(_SOFT_CONFIG, key, cfg)


def _soft(op, name, values, regularization, regularization_strength, direction, axis):
    """Shared body of soft_rank and soft_sort: validate, move axis last, run the fused op."""
    if type(values) is _utils.EAGER_TENSOR and type(axis) is int and axis == -1:
        # An eager tensor on the last axis (the common small-call case): the eager-only
        # twin of the op (one `flags` attribute, no aux output; see _EAGER_OP_TYPES), run
        # and recorded by _utils.make_eager_op's fast path. Kept to a dict lookup: at 1x16
        # the whole fwd+bwd is ~130 us, nearly all of it TF's.
        out = _utils.run_fast_path(
            _EAGER_SOFT, (name, regularization, type(regularization_strength),
                          regularization_strength, direction), _eager_soft_op, values)
        if out is not None:
            return out
        # None: graph mode, an integer input, op callbacks, an error (raised below), or a
        # tape recording a call too big for the stash (the graph op below, whose aux output
        # the gradient reuses).
    eager = tf.executing_eagerly()
    if not eager and _utils.in_xla_context():
        from tfsort import _xla  # noqa: PLC0415  (only needed under XLA)

        return getattr(_xla, name)(
            values, regularization, regularization_strength, direction, axis
        )
    reg, eps, desc, _ = _soft_config(regularization, regularization_strength, direction)
    values = _utils.convert_values(values)
    shape = values.shape
    if type(axis) is int and axis == -1 and shape.rank is not None:
        x, perm = values, None
    else:
        x, perm = _utils.move_axis_last(values, _utils.normalize_axis(axis, shape.rank))
    num_aux = _eager_num_aux(shape.num_elements()) if eager else 1
    out = op(x, _utils.float64_scalar(eps), num_aux=num_aux, regularization=reg,
             descending=desc)[0]
    return _utils.restore_axis(out, perm)


# The eager fast path runs eager-only twins of SoftRank / SoftSort: the same kernels, with
# one int `flags` attribute for regularization, direction and stashing, and no aux output.
# TF's eager machinery costs a few microseconds per attribute and per list output on every
# call and again when the tape records it, ~7 us of a ~150 us fwd+bwd at 1x16
# (docs/design_notes.md). Graphs, SavedModels, the slow eager path and eager calls too big
# for the stash (_STASH_MAX_ELEMENTS, whose gradient reuses the aux output) keep
# SoftRank / SoftSort.
_EAGER_OP_TYPES = {"soft_rank": "TFSort>SoftRankEager", "soft_sort": "TFSort>SoftSortEager"}
# (op type, generated wrapper) of their gradient ops.
_EAGER_GRADS = {
    "soft_rank": ("TFSort>SoftRankEagerGrad", _raw.tf_sort_soft_rank_eager_grad),
    "soft_sort": ("TFSort>SoftSortEagerGrad", _raw.tf_sort_soft_sort_eager_grad),
}
# Flag bits of the eager ops (tfsort/cc/ops/isotonic_ops.cc).
_FLAG_KL, _FLAG_DESCENDING, _FLAG_ADJOINT, _FLAG_STASH = 1, 2, 4, 8
_FLAG_INCREASING = 1  # IsotonicL2Eager(Grad)
_L2_NAMES = frozenset(("l2", "L2"))
# Eager fast paths of IsotonicL2Eager per `flags` (_utils.make_eager_op), built on first use.
_ISOTONIC_L2_OPS = _utils.eager_op_cache()


def _isotonic_l2_op(flags):
    """Builds and caches the fast path for an _ISOTONIC_L2_OPS key (the op's flags)."""
    op = _utils.make_eager_op(
        "TFSort>IsotonicL2Eager", {"flags": flags}, (), "TFSort>IsotonicL2EagerGrad",
        (_utils.COTANGENT, _utils.FROM_X), {"flags": flags},
        _raw.tf_sort_isotonic_l2_eager_grad,
        recording_attrs={"flags": flags | _FLAG_STASH},
        max_stash_elements=_STASH_MAX_ELEMENTS)
    return _utils.remember(_ISOTONIC_L2_OPS, flags, op)


def _last_axis_call(values, axis, fn):
    """Applies fn (which works on the last axis) along `axis`."""
    axis = _utils.normalize_axis(axis, values.shape.rank)
    x, perm = _utils.move_axis_last(values, axis)
    return _utils.restore_axis(fn(x), perm)


def soft_rank(
    values,
    regularization="l2",
    regularization_strength=1.0,
    direction="ASCENDING",
    axis=-1,
):
    """Differentiable ranks along an axis.

    The soft rank is the projection of x / eps onto the permutahedron of rho (L2) or its
    KL analogue. As eps -> 0 it tends to the hard ranks (1 for the smallest value when
    ASCENDING); for large eps it tends to the affine map (n + 1) / 2 + (x - mean(x)) / eps.

    Args:
      values: tensor of rank >= 1 (float16, bfloat16, float32 or float64; integers and
        Python numbers become float32).
      regularization: "l2" or "kl" (case-insensitive).
      regularization_strength: eps > 0, finite. Smaller is closer to hard ranks.
      direction: "ASCENDING" (rank 1 = smallest) or "DESCENDING" (rank 1 = largest).
      axis: the axis to rank along; every other axis is batch.

    Returns:
      Soft ranks with the shape and dtype of `values`. Rows containing NaN or +-inf give NaN
      ranks (and NaN gradients) in that row only.

    Raises:
      ValueError, TypeError: naming the offending argument.

    Example:
      >>> x = tf.constant([[8., 0., 5., 3., 2., 1., 6., 7., 9.]])
      >>> tfsort.soft_rank(x, regularization_strength=0.001).numpy()
      array([[8., 1., 5., 4., 3., 2., 6., 7., 9.]], dtype=float32)
    """
    return _soft(
        _raw.tf_sort_soft_rank, "soft_rank", values, regularization, regularization_strength,
        direction, axis,
    )


def soft_sort(
    values,
    regularization="l2",
    regularization_strength=1.0,
    direction="ASCENDING",
    axis=-1,
):
    """Differentiable sort along an axis.

    As eps -> 0 this is the hard sort; as eps grows every value tends to the row mean (L2).

    Args:
      values: tensor of rank >= 1 (see soft_rank).
      regularization: "l2" or "kl".
      regularization_strength: eps > 0, finite.
      direction: "ASCENDING" or "DESCENDING".
      axis: the axis to sort along.

    Returns:
      Softly sorted values, same shape and dtype as `values`.

    Example:
      >>> tfsort.soft_sort([[3., 1., 2.]], regularization_strength=0.01).numpy()
      array([[1., 2., 3.]], dtype=float32)
    """
    return _soft(
        _raw.tf_sort_soft_sort, "soft_sort", values, regularization, regularization_strength,
        direction, axis,
    )


def isotonic_regression(y, w=None, regularization="l2", decreasing=True, axis=-1):
    """Batched isotonic regression along an axis (one PAV pass per row).

    * "l2": argmin_v 1/2 ||v - y||^2 subject to v monotone; equals
      ``tf.nn.isotonic_regression(y, decreasing=decreasing, axis=axis)[0]``.
    * "kl": argmin_v sum exp(y - v) + sum exp(w) * v subject to v monotone; `w` (same shape
      as `y`) is required.

    Args:
      y: tensor of rank >= 1.
      w: for "kl" only: tensor of the shape of y.
      regularization: "l2" or "kl".
      decreasing: True for v_1 >= v_2 >= ..., False for increasing.
      axis: the axis along which the constraints apply.

    Returns:
      The solution, with the shape and dtype of y. Rows with NaN or +-inf are NaN.

    Example:
      >>> tfsort.isotonic_regression([[1., 3., 2., 4.]], decreasing=False).numpy()
      array([[1. , 2.5, 2.5, 4. ]], dtype=float32)
    """
    if (w is None and type(regularization) is str and regularization in _L2_NAMES
            and type(decreasing) is bool and type(axis) is int and axis == -1
            and _utils.is_eager_float(y)):
        # Eager L2 on the last axis: the eager-only op (no segments output; see
        # _EAGER_OP_TYPES), run and recorded by _utils.make_eager_op's fast path. None: see
        # _soft.
        out = _utils.run_fast_path(_ISOTONIC_L2_OPS, 0 if decreasing else _FLAG_INCREASING,
                                   _isotonic_l2_op, y)
        if out is not None:
            return out
    if not tf.executing_eagerly() and _utils.in_xla_context():
        from tfsort import _xla  # noqa: PLC0415

        return _xla.isotonic_regression(y, w, regularization, decreasing, axis)
    y, w, reg = _utils.check_isotonic_args(y, w, regularization, decreasing)
    if reg == "l2":
        return _last_axis_call(
            y, axis, lambda v: _raw.tf_sort_isotonic_l2(v, increasing=not decreasing)[0]
        )
    axis = _utils.normalize_axis(axis, y.shape.rank)
    yt, perm = _utils.move_axis_last(y, axis)
    wt, _ = _utils.move_axis_last(w, axis)
    return _utils.restore_axis(_raw.tf_sort_isotonic_kl(yt, wt, increasing=not decreasing)[0], perm)


def spearmanr(pred, target, axis=-1, **soft_rank_kwargs):
    """Soft Spearman correlation per row.

    Soft-ranks both `pred` and `target` with the same settings (as in torchsort's README),
    centres and normalises each row and returns the Pearson correlation of the ranks.
    A constant row (zero variance) gives 0, not NaN.

    Args:
      pred: tensor of rank >= 1.
      target: tensor of the same shape.
      axis: the axis holding each row's items.
      **soft_rank_kwargs: regularization, regularization_strength, direction.

    Returns:
      Correlations in [-1, 1], with `axis` removed from the shape.

    Example:
      >>> float(tfsort.spearmanr([1., 2., 3., 4.], [1., 3., 2., 4.],
      ...                        regularization_strength=1e-3))
      0.8
    """
    unknown = set(soft_rank_kwargs) - {"regularization", "regularization_strength", "direction"}
    if unknown:
        raise TypeError(f"spearmanr got unexpected keyword arguments {sorted(unknown)}")
    pred = _utils.convert_values(pred, "pred")
    target = _utils.convert_values(target, "target")
    if target.dtype != pred.dtype:
        target = tf.cast(target, pred.dtype)
    if not pred.shape.is_compatible_with(target.shape):
        raise ValueError(
            f"pred and target must have the same shape, got {pred.shape} and {target.shape}"
        )
    rp = soft_rank(pred, axis=axis, **soft_rank_kwargs)
    rt = soft_rank(target, axis=axis, **soft_rank_kwargs)
    return _pearson(rp, rt, axis)


def _pearson(a, b, axis):
    """Row-wise Pearson correlation; 0 where either row is constant (safe gradients too).

    A row counts as constant when every deviation from its mean is below a few ulps of the
    mean (a constant row's soft ranks are all (n + 1) / 2 up to rounding). The threshold
    only decides that; the correlation itself uses the raw deviations, so an entry that
    happens to sit at the mean (the median of an odd row) still gets its gradient.
    """
    dtype = a.dtype
    compute = _utils.compute_dtype(dtype)
    ulp = 8.0 * float(tf.experimental.numpy.finfo(compute.as_numpy_dtype).eps)

    def centre(v):
        v = tf.cast(v, compute)
        mean = tf.reduce_mean(v, axis=axis, keepdims=True)
        d = v - mean
        varies = tf.reduce_any(tf.abs(d) > ulp * (tf.abs(mean) + 1.0), axis=axis)
        return d, varies

    a, a_varies = centre(a)
    b, b_varies = centre(b)
    cov = tf.reduce_sum(a * b, axis=axis)
    var = tf.reduce_sum(a * a, axis=axis) * tf.reduce_sum(b * b, axis=axis)
    ok = a_varies & b_varies & (var > 0)
    safe = tf.where(ok, var, tf.ones_like(var))
    return tf.cast(tf.where(ok, cov * tf.math.rsqrt(safe), tf.zeros_like(cov)), dtype)


# How the fused ops hand the sorting permutation and PAV blocks ("aux") to their gradient.
# In a graph (tf.function, SavedModel) aux is a second op output (num_aux = 1): free there.
# In eager mode an extra output costs ~20 us of TF backprop bookkeeping per call (a zeros
# cotangent, trainability checks), more than the kernels at small shapes, so while a tape
# records, calls of up to _STASH_MAX_ELEMENTS elements pass num_aux = 0: the CPU kernel
# keeps aux in a bounded stash keyed by its input tensor and the gradient kernel takes it
# back (tfsort/cc/kernels/aux_stash.h; a miss, or a GPU kernel, re-sorts instead, with
# bit-identical results). Without a tape (inference) there is nothing to hand over and
# nothing is stashed: num_aux = 1 and the aux output is dropped. Must not exceed
# AuxStash::kMaxElements.
_STASH_MAX_ELEMENTS = 1 << 16


def _eager_num_aux(num_elements):
    """num_aux for an eager fused-op call on num_elements values (None: unknown)."""
    if num_elements is None or num_elements > _STASH_MAX_ELEMENTS or not _utils.recording():
        return 1
    return 0


# (name, regularization, type(eps), eps, direction) -> the eager fast path
# (_utils.make_eager_op) of the eager-only op in that configuration, built on first use.
_EAGER_SOFT = _utils.eager_op_cache()


def _eager_soft_op(key):
    """Builds and caches the fast path for an _EAGER_SOFT key (invalid arguments raise)."""
    name, regularization, _, regularization_strength, direction = key
    _, eps, _, flags = _soft_config(regularization, regularization_strength, direction)
    grad_type, grad_wrapper = _EAGER_GRADS[name]
    eps_t = _utils.float64_scalar(eps, True)
    op = _utils.make_eager_op(
        _EAGER_OP_TYPES[name], {"flags": flags}, (eps_t,), grad_type,
        (_utils.COTANGENT, _utils.FROM_X, eps_t), {"flags": flags}, grad_wrapper,
        recording_attrs={"flags": flags | _FLAG_STASH}, max_stash_elements=_STASH_MAX_ELEMENTS)
    return _utils.remember(_EAGER_SOFT, key, op)


# ---------------------------------------------------------------------------------------
# Gradients, registered on the op types (cheaper per eager call than tf.custom_gradient,
# and found again after a SavedModel reload once `import tfsort` ran).
#
# Every VJP op is linear in its cotangent, and its adjoint is either itself (the L2 ops
# and the KL soft rank are self-adjoint) or the same op with adjoint=True, so second-order
# gradients and forward mode (tf.autodiff.ForwardAccumulator) work. For the KL ops the
# VJP also depends on the values through block softmaxes; that second-order term is
# written below in composite TF ops (it only runs when a second derivative is taken).


_SOFT_ATTRS = ("regularization", "descending")
# Parsed attrs per eager attr tuple (the tuple is hashable and small; callers never mutate
# the returned dict: it is only splatted into keyword arguments).
_SOFT_ATTRS_CACHE = {}


def _op_attr(op, name):
    """One attribute of op, or of the eager tape's mock op (whose flat attrs tuple is read
    directly: cheaper than its get_attr)."""
    if type(op).__name__ == "_MockOp":
        flat = op.attrs
        return flat[2 * flat[::2].index(name) + 1]
    return op.get_attr(name)


# The eager-only op types (see _EAGER_OP_TYPES and isotonic_regression), forward and
# gradient.
_EAGER_OPS = frozenset((
    "TFSort>SoftRankEager", "TFSort>SoftSortEager",
    "TFSort>SoftRankEagerGrad", "TFSort>SoftSortEagerGrad",
    "TFSort>IsotonicL2Eager", "TFSort>IsotonicL2EagerGrad",
))


def _soft_attrs(op):
    """The fused ops' attributes (of the graph ops, or decoded from an eager op's flags) as
    keyword arguments for the graph ops.

    In eager mode the tape hands gradient functions a mock op whose `attrs` is the flat
    (name, value, ...) tuple the op ran with; reading it directly is several microseconds
    cheaper per call than get_attr lookups, which matters at small shapes.
    """
    if op.type in _EAGER_OPS:
        flags = _op_attr(op, "flags")
        return {"regularization": "kl" if flags & _FLAG_KL else "l2",
                "descending": bool(flags & _FLAG_DESCENDING)}
    flat = op.attrs if type(op).__name__ == "_MockOp" else None
    if flat is not None:
        attrs = _SOFT_ATTRS_CACHE.get(flat)
        if attrs is not None:
            return attrs
        d = dict(zip(flat[::2], flat[1::2]))
        attrs = {k: d[k] for k in _SOFT_ATTRS}
    else:
        attrs = {k: op.get_attr(k) for k in _SOFT_ATTRS}
    if isinstance(attrs["regularization"], bytes):
        attrs["regularization"] = attrs["regularization"].decode()
    if flat is not None:
        if len(_SOFT_ATTRS_CACHE) >= 256:
            _SOFT_ATTRS_CACHE.clear()
        _SOFT_ATTRS_CACHE[flat] = attrs
    return attrs


def _soft_adjoint(op):
    """The adjoint attribute of a SoftSortGrad or SoftSortEagerGrad op."""
    if op.type in _EAGER_OPS:
        return bool(_op_attr(op, "flags") & _FLAG_ADJOINT)
    return op.get_attr("adjoint")


def _soft_vjp(op, grad, op_type, wrapper, *extra_attrs):
    """SoftRankGrad / SoftSortGrad for the forward op `op` and cotangent `grad`.
    extra_attrs: flat (name, value) pairs beyond the shared ones. The fast path records
    only the attributes it is given, and second-order gradients read them all back."""
    values, eps = op.inputs
    aux = op.outputs[1:]
    attrs = _soft_attrs(op)
    ctx = _utils.eager_context()
    if ctx is not None:  # eager backprop: run the op directly (see _utils.fast_execute)
        out = _utils.fast_execute(ctx, op_type, grad, values, eps, aux,
                                  "regularization", attrs["regularization"],
                                  "descending", attrs["descending"], *extra_attrs)
        if out is not None:
            return [out, None]
    kwargs = dict(zip(extra_attrs[::2], extra_attrs[1::2]))
    return [wrapper(grad, values, eps, aux, **attrs, **kwargs), None]


@tf.RegisterGradient("TFSort>SoftRank")
def _soft_rank_grad(op, grad, *_unused_aux_grads):
    return _soft_vjp(op, grad, "TFSort>SoftRankGrad", _raw.tf_sort_soft_rank_grad)


@tf.RegisterGradient("TFSort>SoftSort")
def _soft_sort_grad(op, grad, *_unused_aux_grads):
    return _soft_vjp(op, grad, "TFSort>SoftSortGrad", _raw.tf_sort_soft_sort_grad,
                     "adjoint", False)


def _soft_grad_grad(op, hess, rank):
    """Gradient of SoftRankGrad / SoftSortGrad: the VJP op is linear in its cotangent, so
    d/d(grad) is its adjoint; d/d(values) is zero for L2 and a composite for KL."""
    grad, values, eps, *aux = op.inputs
    attrs = _soft_attrs(op)
    if rank:  # SoftRankGrad is self-adjoint
        d_grad = _raw.tf_sort_soft_rank_grad(hess, values, eps, aux, **attrs)
    else:
        adjoint = _soft_adjoint(op)
        d_grad = _raw.tf_sort_soft_sort_grad(hess, values, eps, aux, adjoint=not adjoint, **attrs)
    if attrs["regularization"] == "kl":
        forward = _raw.tf_sort_soft_rank if rank else _raw.tf_sort_soft_sort
        perm, seg = _perm_and_segments(values, eps, aux, attrs, forward)
        if rank:
            d_values = _kl_rank_second_order(hess, grad, values, eps, perm, seg, attrs)
        else:
            d_values = _kl_sort_second_order(hess, grad, values, perm, seg, attrs, adjoint)
    else:
        d_values = tf.zeros_like(values)
    return [d_grad, d_values, None] + [None] * len(aux)


@tf.RegisterGradient("TFSort>SoftRankGrad")
@tf.RegisterGradient("TFSort>SoftRankEagerGrad")
def _soft_rank_grad_grad(op, hess):
    return _soft_grad_grad(op, hess, rank=True)


@tf.RegisterGradient("TFSort>SoftSortGrad")
@tf.RegisterGradient("TFSort>SoftSortEagerGrad")
def _soft_sort_grad_grad(op, hess):
    return _soft_grad_grad(op, hess, rank=False)


# With the C++ extension the eager fast paths record their own backward step
# (_utils.make_eager_op); these registrations serve every other recording of the eager-only
# forward ops (the Python fast path _utils.PyEagerOp, the generated wrappers, tf.raw_ops).
def _eager_soft_vjp(op, grad, wrapper):
    """SoftRankEagerGrad / SoftSortEagerGrad (wrapper) with the forward op's flags minus the
    stash bit."""
    values, eps = op.inputs
    flags = _op_attr(op, "flags") & (_FLAG_KL | _FLAG_DESCENDING)
    return [wrapper(grad, values, eps, flags=flags), None]


@tf.RegisterGradient("TFSort>SoftRankEager")
def _soft_rank_eager_grad(op, grad):
    return _eager_soft_vjp(op, grad, _raw.tf_sort_soft_rank_eager_grad)


@tf.RegisterGradient("TFSort>SoftSortEager")
def _soft_sort_eager_grad(op, grad):
    return _eager_soft_vjp(op, grad, _raw.tf_sort_soft_sort_eager_grad)


@tf.RegisterGradient("TFSort>IsotonicL2")
def _isotonic_l2_grad(op, grad, _unused_seg_grad):
    return _raw.tf_sort_isotonic_l2_grad(grad, op.outputs[1])


@tf.RegisterGradient("TFSort>IsotonicL2Grad")
def _isotonic_l2_grad_grad(op, hess):
    return [_raw.tf_sort_isotonic_l2_grad(hess, op.inputs[1]), None]


@tf.RegisterGradient("TFSort>IsotonicL2Eager")
def _isotonic_l2_eager_grad(op, grad):
    flags = _op_attr(op, "flags") & _FLAG_INCREASING
    return _raw.tf_sort_isotonic_l2_eager_grad(grad, op.inputs[0], flags=flags)


@tf.RegisterGradient("TFSort>IsotonicL2EagerGrad")
def _isotonic_l2_eager_grad_grad(op, hess):
    # Linear in grad and self-adjoint (block means); piecewise constant in y, as
    # IsotonicL2Grad is through its integer segments.
    y = op.inputs[1]
    return [_raw.tf_sort_isotonic_l2_eager_grad(hess, y, flags=_op_attr(op, "flags")), None]


@tf.RegisterGradient("TFSort>IsotonicKL")
def _isotonic_kl_grad(op, grad, _unused_seg_grad):
    y, w = op.inputs
    return list(_raw.tf_sort_isotonic_kl_grad(grad, y, w, op.outputs[1]))


@tf.RegisterGradient("TFSort>IsotonicKLGrad")
def _isotonic_kl_grad_grad(op, hy, hw):
    g, y, w, seg = op.inputs
    adjoint = op.get_attr("adjoint")
    # The op maps g -> (A_y g, A_w g); its adjoint maps (hy, hw) -> A_y^T hy + A_w^T hw.
    d_grad = (
        _raw.tf_sort_isotonic_kl_grad(hy, y, w, seg, adjoint=not adjoint)[0]
        + _raw.tf_sort_isotonic_kl_grad(hw, y, w, seg, adjoint=not adjoint)[1]
    )
    rows = _Rows(seg)
    if adjoint:
        d_y = rows.softmax_jvp(y, g, hy)
        d_w = -rows.softmax_jvp(w, g, hw)
    else:
        d_y = rows.softmax_jvp(y, hy, g)
        d_w = -rows.softmax_jvp(w, hw, g)
    return [d_grad, d_y, d_w, None]


def _perm_and_segments(values, eps, aux, attrs, forward_op):
    """Unpacks the forward op's aux tensor (recomputing it if the op ran without one) into
    the sorting permutation and a PAV block id per sorted position."""
    if not aux:
        aux = forward_op(values, eps, num_aux=1, **attrs)[1]
    packed = aux[0]
    n = tf.shape(packed)[-1]
    # A non-finite row is all -1; its values are NaN, so any in-range index will do.
    perm = tf.minimum(tf.bitwise.bitwise_and(packed, 0x7FFFFFFF), n - 1)
    seg = tf.cumsum(tf.cast(packed < 0, tf.int32), axis=-1) - 1
    return perm, seg


class _Rows:
    """Block (segment) reductions over a [..., n] tensor in composite TF ops."""

    def __init__(self, seg):
        self.shape = tf.shape(seg)
        n = self.shape[-1]
        seg2 = tf.reshape(seg, [-1, n])
        rows = tf.shape(seg2)[0]
        offsets = tf.range(rows)[:, None] * n
        self.ids = tf.reshape(tf.maximum(seg2, 0) + offsets, [-1])
        self.num = rows * n

    def flat(self, v):
        return tf.reshape(v, [-1])

    def block_sum(self, v):
        s = tf.math.unsorted_segment_sum(self.flat(v), self.ids, self.num)
        return tf.reshape(tf.gather(s, self.ids), self.shape)

    def softmax(self, x):
        m = tf.math.unsorted_segment_max(self.flat(x), self.ids, self.num)
        e = tf.exp(x - tf.reshape(tf.gather(m, self.ids), self.shape))
        return e / self.block_sum(e)

    def softmax_jvp(self, x, a, c):
        """C_B p_k (a_k - E_p a) with p = softmax(x_B), C_B = sum_B c: the derivative of
        sum_B C_B E_p(a) with respect to x."""
        dtype = x.dtype
        compute = _utils.compute_dtype(dtype)
        x, a, c = (tf.cast(t, compute) for t in (x, a, c))
        p = self.softmax(x)
        out = self.block_sum(c) * p * (a - self.block_sum(p * a))
        return tf.cast(out, dtype)


def _sorted_view(values, perm, attrs, rank, eps=None):
    """Returns (s, c, compute dtype): s = c * values[perm] in compute precision."""
    dtype = values.dtype
    compute = _utils.compute_dtype(dtype)
    desc = attrs["descending"]
    if rank:
        c = (-1.0 if desc else 1.0) / tf.cast(eps, compute)
    else:
        c = 1.0 if desc else -1.0
    x = tf.gather(tf.cast(values, compute), perm, batch_dims=values.shape.rank - 1)
    return c * x, c, compute


def _unsort(v, perm):
    """out[..., perm[k]] = v[..., k]."""
    inv = tf.argsort(perm, axis=-1, stable=True)
    return tf.gather(v, inv, batch_dims=v.shape.rank - 1)


def _kl_rank_second_order(hess, grad, values, eps, perm, seg, attrs):
    # In sorted coordinates the KL soft-rank VJP is c W_B (diag(p) - p p^T) u; its
    # derivative along s, contracted with h, is c W_B p_k [(h_k - E h)(u_k - E u) - Cov(h, u)].
    s, c, compute = _sorted_view(values, perm, attrs, rank=True, eps=eps)
    b = values.shape.rank - 1
    u = tf.gather(tf.cast(grad, compute), perm, batch_dims=b)
    h = tf.gather(tf.cast(hess, compute), perm, batch_dims=b)
    rows = _Rows(seg)
    p = rows.softmax(s)
    n = tf.shape(s)[-1]
    rho = tf.cast(n - tf.range(n), compute) * tf.ones_like(s)
    w = rows.block_sum(rho)
    dh = h - rows.block_sum(p * h)
    du = u - rows.block_sum(p * u)
    cov = rows.block_sum(p * dh * du)
    d_s = c * w * p * (dh * du - cov)
    return tf.cast(_unsort(c * d_s, perm), values.dtype)


def _kl_sort_second_order(hess, grad, values, perm, seg, attrs, adjoint):
    s, c, compute = _sorted_view(values, perm, attrs, rank=False)
    b = values.shape.rank - 1
    rows = _Rows(seg)
    if adjoint:
        # op: out_i = E_p(u) over the block, u = grad[perm]; hess lives in sorted order.
        u = tf.gather(tf.cast(grad, compute), perm, batch_dims=b)
        d_s = rows.softmax_jvp(s, u, tf.cast(hess, compute))
    else:
        # op: out[perm_k] = p_k G_B; hess lives in input order.
        h = tf.gather(tf.cast(hess, compute), perm, batch_dims=b)
        d_s = rows.softmax_jvp(s, h, tf.cast(grad, compute))
    return tf.cast(_unsort(c * d_s, perm), values.dtype)
