"""Differentiable sorting networks: diff_sort, diff_rank, compare_swap and the schedules.

Implements the relaxed sorting networks of Petersen, Borgelt, Kuehne and Deussen,
"Differentiable Sorting Networks for Scalable Sorting and Ranking Supervision" (ICML 2021)
and "Monotonic Differentiable Sorting Networks" (ICLR 2022), with a fused C++ op that runs
the whole network over a batch of rows (index-based, O(n log^2 n) per row for bitonic).

Notation. A network is a list of layers of disjoint comparators (i, j), i < j. A comparator
on (a, b) = (x_i, x_j) with d = steepness * (b - a) and alpha = F(d) writes the relaxed
minimum alpha a + (1 - alpha) b to i and the relaxed maximum (1 - alpha) a + alpha b to j.
F is one of (same definitions as diffsort):

* "logistic": sigmoid(d); "logistic_phi": sigmoid(d / (|b - a| + 1e-10)^0.25);
* "gaussian": the standard normal CDF Phi(d); "reciprocal": (d / (2 + |d|) + 1) / 2;
* "cauchy": atan(d) / pi + 1/2;
* "optimal": clip(d, -1/4, 1/4) + 1/2 + sign(d) (1/4 - 1 / (16 |d|)) where |d| > 1/4;
* "softmax": the log-sum-exp pair max = log(e^{sa} + e^{sb}) / s, min = a + b - max
  (s = steepness); its mixing weight for P and ranks is sigmoid(s (b - a)).

"reciprocal", "cauchy" and "optimal" are monotonic: every sorted output is non-decreasing
in every input.

Padding rule (n that is not a power of two, bitonic). The bitonic network is used in its
"flip" form, where every comparator puts the minimum at the lower index. The row is padded
to m = 2^ceil(log2 n) with +inf sentinels at positions n..m-1. A comparator (i, j) with
j >= n meets a sentinel at j and, exactly (not through a huge finite number that would
saturate or break a relaxation), leaves both wires as they are: min = x_i, max = +inf. Such
comparators are therefore dropped from the schedule, so sentinels never move, never mix with
real values and never receive gradient, and every comparator preserves a + b, so the row sum
is preserved. For n = 2^k this is exactly the bitonic network of diffsort, up to relabelling
wires inside the descending half-blocks of its alternating form (the relaxed comparators are
symmetric, F(-d) = 1 - F(d)), so both give the same numbers; for other n, diffsort's own
networks differ. "odd_even" (odd-even transposition) needs no padding.

Direction. DESCENDING returns the ascending relaxed sort reversed (which, as F is symmetric,
equals running the mirrored network). Ranks: with P from the ASCENDING sort
(P[i, j] = weight that input j lands in sorted position i), rank_j = sum_i (i + 1) P[i, j]
(ranks start at 1); DESCENDING gives rank_j = sum_i (n - i) P[i, j] = n + 1 - ascending rank,
so rank 1 goes to the largest value. The fused op computes ranks as P^T r without forming P:
one extra backward walk over the comparators.

Memory. The op stores u = b - a per comparator, (n/2) log2(n) (log2(n) + 1) / 2 floats per
row for bitonic (plus as many again for ranks), and recomputes the relaxation in the
backward pass. With return_permutation=True a second fused op propagates the rows of P
through the comparators (no matrix per layer); its gradient op recomputes P from
checkpoints every sqrt(#comparators * n) comparators, so a row in flight needs
O(n^2 sqrt(log^2 n)) scratch instead of one n x n matrix per layer.

Second derivatives (and tf.autodiff.ForwardAccumulator, which differentiates the gradient
op) are exact for diff_sort: each comparator's Jacobian [[c, 1 - c], [1 - c, c]] is
symmetric, so the gradient op's adjoint is one forward walk with the same c, and its
derivative w.r.t. the values runs through c(u) (SortingNetworkGradAdjoint); the same holds
for compare_swap. For diff_rank and return_permutation=True they raise
NotImplementedError.

Under XLA (tf.function(jit_compile=True), Keras jit_compile) a composite path of plain TF
ops (one gather and a few elementwise ops per layer) is used, with the same numbers.
"""

import functools
import string

import numpy as np
import tensorflow as tf

from tfsort import _utils
from tfsort._ops import ops as _raw

__all__ = [
    "NETWORKS",
    "RELAXATIONS",
    "compare_swap",
    "diff_rank",
    "diff_sort",
    "diff_sort_by_key",
    "pretty_network",
    "sorting_network",
]

NETWORKS = ("bitonic", "odd_even")
RELAXATIONS = (
    "logistic",
    "logistic_phi",
    "gaussian",
    "reciprocal",
    "cauchy",
    "optimal",
    "softmax",
)
_LOW_PRECISION = (tf.float16, tf.bfloat16)


# ---------------------------------------------------------------------------------------
# Schedules


def _check_n(n):
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise ValueError(f"n must be a non-negative integer, got {n!r}")
    return int(n)


@functools.lru_cache(maxsize=64)
def _layers(n, network):
    """The schedule as a tuple of layers (tuples of (i, j) pairs); mirrors networks.h."""
    layers = []
    if n < 2:
        return ()
    if network == "odd_even":
        for t in range(n):
            layers.append(tuple((i, i + 1) for i in range(t % 2, n - 1, 2)))
        return tuple(layer for layer in layers if layer)
    m = 1
    while m < n:
        m *= 2
    size = 2
    while size <= m:
        layer = []
        for b in range(0, n, size):
            for t in range(size // 2):
                if b + size - 1 - t < n:
                    layer.append((b + t, b + size - 1 - t))
        layers.append(tuple(layer))
        h = size // 4
        while h >= 1:
            layers.append(
                tuple((i, i + h) for b in range(0, n, 2 * h) for i in range(b, b + h) if i + h < n)
            )
            h //= 2
        size *= 2
    return tuple(layer for layer in layers if layer)


def sorting_network(n, network="bitonic"):
    """The comparator schedule of a sorting network on n wires.

    Args:
      n: number of wires (>= 0).
      network: "bitonic" (any n; comparators that would touch padding are dropped, see the
        module docstring) or "odd_even" (odd-even transposition sort, n layers).

    Returns:
      A list of layers; each layer is a list of disjoint (i, j) pairs with i < j. A
      comparator moves the minimum to i and the maximum to j.

    Example:
      >>> tfsort.sorting_network(4)
      [[(0, 1), (2, 3)], [(0, 3), (1, 2)], [(0, 1), (2, 3)]]
    """
    n = _check_n(n)
    network = _utils.check_choice(network, "network", NETWORKS)
    return [list(layer) for layer in _layers(n, network)]


def pretty_network(n, network="bitonic"):
    """A text drawing of the schedule, one line per layer.

    Each column is a wire (0 .. n-1). In a layer, the two ends of one comparator share a
    letter: lower case at the minimum end (i), upper case at the maximum end (j); "." marks
    an idle wire. The pairs follow the drawing.

    Example:
      >>> print(tfsort.pretty_network(4))
      wire     0123
      layer 1  aAbB  (0,1) (2,3)
      layer 2  abBA  (0,3) (1,2)
      layer 3  aAbB  (0,1) (2,3)
    """
    layers = sorting_network(n, network)
    width = len(str(len(layers)))
    head = "".join(str(w % 10) for w in range(n))
    lines = ["wire " + " " * (width + 1) + "  " + head]
    for k, layer in enumerate(layers):
        cells = ["."] * n
        for c, (i, j) in enumerate(layer):
            letter = string.ascii_lowercase[c % 26]
            cells[i] = letter
            cells[j] = letter.upper()
        pairs = " ".join(f"({i},{j})" for i, j in layer)
        lines.append(f"layer {k + 1:<{width}}  {''.join(cells)}  {pairs}")
    return "\n".join(lines)


@functools.lru_cache(maxsize=64)
def _layer_arrays(n, network):
    """Per layer: partner[p] (p itself when idle), is_lo[p], active[p] as NumPy arrays."""
    out = []
    for layer in _layers(n, network):
        partner = np.arange(n, dtype=np.int32)
        is_lo = np.zeros(n, dtype=bool)
        active = np.zeros(n, dtype=bool)
        for i, j in layer:
            partner[i], partner[j] = j, i
            is_lo[i] = True
            active[i] = active[j] = True
        out.append((partner, is_lo, active))
    return tuple(out)


# ---------------------------------------------------------------------------------------
# Argument handling


def _check_args(network, relaxation, steepness, direction):
    network = _utils.check_choice(network, "network", NETWORKS)
    relaxation = _utils.check_choice(relaxation, "relaxation", RELAXATIONS)
    steepness = _utils.check_strength(steepness, "steepness")
    desc = _utils.check_descending(direction)
    return network, relaxation, steepness, desc


# ---------------------------------------------------------------------------------------
# Composite path (plain TF ops): used under XLA and for permutation matrices.


def _relax_alpha(relaxation, s, u):
    """alpha = F(s u) in plain TF ops (u = b - a)."""
    d = s * u
    if relaxation in ("logistic", "softmax"):
        return tf.sigmoid(d)
    if relaxation == "logistic_phi":
        return tf.sigmoid(d / tf.pow(tf.abs(u) + 1e-10, 0.25))
    if relaxation == "gaussian":
        return 0.5 * tf.math.erfc(-d * np.sqrt(0.5))
    if relaxation == "reciprocal":
        return 0.5 * (d / (2.0 + tf.abs(d)) + 1.0)
    if relaxation == "cauchy":
        return tf.atan(d) / np.pi + 0.5
    # optimal
    ad = tf.abs(d)
    safe = tf.maximum(ad, 0.25)
    tail = tf.sign(d) * (0.25 - 1.0 / (16.0 * safe))
    return tf.clip_by_value(d, -0.25, 0.25) + 0.5 + tf.where(ad > 0.25, tail, tf.zeros_like(d))


def _composite(x, network, relaxation, s, want_perm=False, want_rank=False, desc=False):
    """Relaxed network on the last axis of x (compute dtype) in plain TF ops.

    Returns (ascending sorted, P or None, ranks or None). P[..., i, j] = weight of input j
    in ascending position i. Each layer: new_p = w_p x_p + (1 - w_p) x_partner(p), with
    w_p = alpha of p's comparator (1 when idle), except the softmax values.
    """
    n = x.shape[-1]
    layers = _layer_arrays(n, network)
    dtype = x.dtype
    perm = None
    if want_perm:
        eye = tf.eye(n, dtype=dtype)
        perm = tf.broadcast_to(eye, tf.concat([tf.shape(x), [n]], 0))
    weights = []
    for partner, is_lo, active in layers:
        xp = tf.gather(x, partner, axis=-1)
        u = tf.where(is_lo, xp - x, x - xp)
        alpha = _relax_alpha(relaxation, s, u)
        w = tf.where(active, alpha, tf.ones_like(alpha))
        if relaxation == "softmax":
            # min = a + b - LSE_s(a, b) at lo, LSE_s(a, b) at hi; idle wires pass through.
            hi_val = tf.maximum(x, xp) + tf.math.log1p(tf.exp(-s * tf.abs(u))) / s
            new = tf.where(is_lo, x + xp - hi_val, hi_val)
            new = tf.where(active, new, x)
        else:
            new = w * x + (1.0 - w) * xp
        if want_perm:
            perm = w[..., :, None] * perm + (1.0 - w[..., :, None]) * tf.gather(
                perm, partner, axis=-2
            )
        if want_rank:
            weights.append((partner, w))
        x = new
    ranks = None
    if want_rank:
        pos = tf.range(n, dtype=dtype)
        r = (float(n) - pos) if desc else pos + 1.0
        r = tf.broadcast_to(r, tf.shape(x))
        for partner, w in reversed(weights):
            r = w * r + (1.0 - w) * tf.gather(r, partner, axis=-1)
        ranks = r
    return x, perm, ranks


# ---------------------------------------------------------------------------------------
# Public functions


# (network, relaxation, type(steepness), steepness, direction, ranks, dtype enum) -> the
# eager fast path (_utils.make_eager_op) of SortingNetwork, or None for invalid arguments.
_EAGER_NETS = _utils.eager_op_cache()


def _eager_net_op(key):
    """Builds (and caches) the fast path for `key` (see _EAGER_NETS); None for arguments
    the generic path must reject or convert."""
    network, relaxation, _, steepness, direction, ranks, dtype_enum = key
    try:
        network, relaxation, s, desc = _check_args(network, relaxation, steepness, direction)
    except (TypeError, ValueError):
        return None
    fast = None
    dtype = tf.dtypes.as_dtype(dtype_enum)
    if dtype in _utils.FLOAT_DTYPES:
        tacc = _utils.compute_dtype(dtype)
        s_t = _utils.float64_scalar(s, True)
        attrs = {"network": network, "relaxation": relaxation, "descending": desc,
                 "compute_ranks": ranks}
        # The cotangent of `saved`: second-order terms in sort mode (a [0] tensor when TF
        # has none); ranks never use it (their second derivatives raise).
        saved_grad = (_empty(tacc) if ranks
                      else (_utils.COTANGENT + 1, _empty(tacc)))
        fast = _utils.make_eager_op(
            "TFSort>SortingNetwork", dict(attrs, Tacc=tacc), (s_t,),
            "TFSort>SortingNetworkGrad",
            (_utils.COTANGENT, _utils.OUTPUT + 1, saved_grad, s_t), attrs,
            _raw.tf_sort_sorting_network_grad, num_outputs=2)
    return _utils.remember(_EAGER_NETS, key, fast)


def _run(values, network, relaxation, steepness, direction, axis, ranks, return_permutation):
    if (type(values) is _utils.EAGER_TENSOR and type(axis) is int and axis == -1
            and not return_permutation):
        # An eager call on the last axis: SortingNetwork run and recorded by
        # _utils.make_eager_op's fast path (None: the path below, which also raises).
        out = _utils.run_fast_path(
            _EAGER_NETS, (network, relaxation, type(steepness), steepness, direction, ranks,
                          values._datatype_enum()), _eager_net_op, values)
        if out is not None:
            return out
    values = _utils.convert_values(values)
    network, relaxation, s, desc = _check_args(network, relaxation, steepness, direction)
    axis = _utils.normalize_axis(axis, values.shape.rank)
    x, perm = _utils.move_axis_last(values, axis)
    dtype = x.dtype
    n = x.shape[-1]
    if _utils.in_xla_context():
        if n is None:
            raise ValueError("under XLA the sorted axis must have a static length")
        xc = tf.cast(x, tf.float32) if dtype in _LOW_PRECISION else x
        out, p, r = _composite(xc, network, relaxation, s, return_permutation, ranks, desc)
        if ranks:
            return _utils.restore_axis(tf.cast(r, dtype), perm)
        if desc:
            out = tf.reverse(out, [-1])
            if p is not None:
                p = tf.reverse(p, [-2])
        out = _utils.restore_axis(tf.cast(out, dtype), perm)
        if return_permutation:
            return out, tf.cast(p, dtype)
        return out
    if return_permutation:
        out, p, _ = _raw.tf_sort_sorting_network_permutation(
            x,
            _utils.float64_scalar(s),
            Tacc=_utils.compute_dtype(dtype),
            network=network,
            relaxation=relaxation,
            descending=desc,
        )
        return _utils.restore_axis(out, perm), p
    res = _raw.tf_sort_sorting_network(
        x,
        _utils.float64_scalar(s),
        Tacc=_utils.compute_dtype(dtype),
        network=network,
        relaxation=relaxation,
        descending=desc,
        compute_ranks=ranks,
    )
    return _utils.restore_axis(res[0], perm)


def diff_sort(
    values,
    network="bitonic",
    relaxation="cauchy",
    steepness=10.0,
    direction="ASCENDING",
    axis=-1,
    return_permutation=False,
):
    """Differentiable sort through a relaxed sorting network.

    Args:
      values: tensor of rank >= 1 (float16, bfloat16, float32, float64; integers and Python
        numbers become float32). float16/bfloat16 compute in float32.
      network: "bitonic" (any n, see the padding rule in the module docstring) or
        "odd_even".
      relaxation: "logistic", "logistic_phi", "gaussian", "reciprocal", "cauchy",
        "optimal" or "softmax".
      steepness: s > 0, finite; larger is closer to the hard sort. Passed to the ops as a
        float64 scalar, so float64 values see it unrounded.
      direction: "ASCENDING" or "DESCENDING".
      axis: the axis to sort along; every other axis is batch.
      return_permutation: also return the relaxed permutation matrix P, of shape
        (..., n, n) with the sorted axis moved to the end
        (sorted[..., i] = sum_j P[..., i, j] x[..., j]). P is doubly stochastic. For
        "softmax", P holds the log-sum-exp's mixing weights sigmoid(s (b - a)), and
        P @ x equals the sorted values only as s grows.

    Returns:
      The relaxed sorted values (shape and dtype of `values`), or (sorted, P).

    Raises:
      ValueError, TypeError: naming the offending argument.

    Example:
      >>> tfsort.diff_sort([[3., 1., 2.]], relaxation="logistic", steepness=1e4).numpy()
      array([[1., 2., 3.]], dtype=float32)
    """
    if not isinstance(return_permutation, bool):
        raise TypeError(f"return_permutation must be a bool, got {return_permutation!r}")
    return _run(values, network, relaxation, steepness, direction, axis, False, return_permutation)


def diff_rank(
    values,
    network="bitonic",
    relaxation="cauchy",
    steepness=10.0,
    direction="ASCENDING",
    axis=-1,
):
    """Differentiable ranks through a relaxed sorting network; ranks start at 1.

    With P the relaxed permutation matrix of the ASCENDING sort,
    rank_j = sum_i (i + 1) P[i, j]; DESCENDING gives n + 1 minus that (rank 1 = largest).
    Computed without forming P (one extra backward walk over the comparators).

    Args: as diff_sort (without return_permutation).

    Returns:
      Soft ranks with the shape and dtype of `values`.

    Example:
      >>> tfsort.diff_rank([[3., 1., 2.]], relaxation="logistic", steepness=1e4).numpy()
      array([[3., 1., 2.]], dtype=float32)
    """
    return _run(values, network, relaxation, steepness, direction, axis, True, False)


def diff_sort_by_key(
    values,
    keys,
    network="bitonic",
    relaxation="cauchy",
    steepness=10.0,
    direction="ASCENDING",
    return_permutation=False,
):
    """Sorts the rows of a (..., n, d) tensor by a key, carrying whole rows (vector sort).

    The keys go through the relaxed network; the rows of `values` are mixed with the same
    weights: out = P @ values, with P from diff_sort(keys, return_permutation=True).

    Args:
      values: tensor of shape (..., n, d).
      keys: tensor of shape (..., n), or a callable mapping values to such keys.
      network, relaxation, steepness, direction: as diff_sort.
      return_permutation: also return P, shape (..., n, n).

    Returns:
      Sorted rows, shape (..., n, d) (and P).

    Raises:
      ValueError: when keys does not have the shape values.shape[:-1].

    Example:
      >>> v = tf.constant([[[1., 10.], [0., 20.]]])
      >>> tfsort.diff_sort_by_key(v, keys=v[..., 0], relaxation="logistic",
      ...                         steepness=1e4).numpy()
      array([[[ 0., 20.],
              [ 1., 10.]]], dtype=float32)
    """
    values = _utils.convert_values(values)
    if values.shape.rank is not None and values.shape.rank < 2:
        raise ValueError(f"values must have shape (..., n, d), got {values.shape}")
    if callable(keys):
        keys = keys(values)
    keys = _utils.convert_values(keys, "keys")
    if keys.dtype != values.dtype:
        keys = tf.cast(keys, values.dtype)
    if not keys.shape.is_compatible_with(values.shape[:-1]):
        raise ValueError(
            f"keys must have shape values.shape[:-1] = {values.shape[:-1]}, got {keys.shape}"
        )
    _, p = diff_sort(
        keys, network, relaxation, steepness, direction, axis=-1, return_permutation=True
    )
    out = tf.matmul(p, values)
    return (out, p) if return_permutation else out


def compare_swap(values, left, right, relaxation="cauchy", steepness=10.0, axis=-1):
    """One layer of relaxed comparators.

    For each k, the relaxed minimum of (x[left[k]], x[right[k]]) goes to left[k] and the
    maximum to right[k]; positions must be distinct within the layer, others pass through.

    Args:
      values: tensor of rank >= 1.
      left, right: int vectors (lists or tensors) of one length, the comparators' ends.
      relaxation, steepness: as diff_sort.
      axis: the axis the indices refer to.

    Returns:
      A tensor of the shape and dtype of values.

    Example:
      >>> tfsort.compare_swap([[2., 1., 4., 3.]], [0, 2], [1, 3], "logistic", 1e4).numpy()
      array([[1., 2., 3., 4.]], dtype=float32)
    """
    values = _utils.convert_values(values)
    relaxation = _utils.check_choice(relaxation, "relaxation", RELAXATIONS)
    s = _utils.check_strength(steepness, "steepness")
    left = tf.cast(tf.reshape(tf.convert_to_tensor(left), [-1]), tf.int32)
    right = tf.cast(tf.reshape(tf.convert_to_tensor(right), [-1]), tf.int32)
    if left.shape[0] is not None and right.shape[0] is not None and left.shape != right.shape:
        raise ValueError(f"left and right must have one length, got {left.shape} and {right.shape}")
    axis = _utils.normalize_axis(axis, values.shape.rank)
    x, perm = _utils.move_axis_last(values, axis)
    if _utils.in_xla_context():
        return _utils.restore_axis(_compare_swap_composite(x, left, right, relaxation, s), perm)
    out = _raw.tf_sort_compare_swap(
        x, left, right, _utils.float64_scalar(s), Tacc=_utils.compute_dtype(x.dtype),
        relaxation=relaxation,
    )[0]
    return _utils.restore_axis(out, perm)


def _compare_swap_composite(x, left, right, relaxation, s):
    dtype = x.dtype
    xc = tf.cast(x, tf.float32) if dtype in _LOW_PRECISION else x
    n = tf.shape(xc)[-1]
    pos = tf.range(n)
    partner = tf.tensor_scatter_nd_update(pos, left[:, None], right)
    partner = tf.tensor_scatter_nd_update(partner, right[:, None], left)
    is_lo = tf.scatter_nd(left[:, None], tf.ones_like(left), [n]) > 0
    active = partner != pos
    xp = tf.gather(xc, partner, axis=-1)
    u = tf.where(is_lo, xp - xc, xc - xp)
    alpha = _relax_alpha(relaxation, s, u)
    if relaxation == "softmax":
        hi_val = tf.maximum(xc, xp) + tf.math.log1p(tf.exp(-s * tf.abs(u))) / s
        new = tf.where(is_lo, xc + xp - hi_val, hi_val)
    else:
        new = alpha * xc + (1.0 - alpha) * xp
    return tf.cast(tf.where(active, new, xc), dtype)


# ---------------------------------------------------------------------------------------
# Gradients, registered on the op types (see design.md section 5).


def _net_attrs(op, ranks=True):
    attrs = {
        "network": op.get_attr("network"),
        "relaxation": op.get_attr("relaxation"),
        "descending": op.get_attr("descending"),
    }
    if ranks:
        attrs["compute_ranks"] = op.get_attr("compute_ranks")
    return attrs


_EMPTY = {}


def _empty(dtype):
    """A [0] tensor: tells the gradient op that a cotangent is zero (an unused output).
    Cached in eager mode, where building even a tiny constant costs tens of microseconds."""
    if not tf.executing_eagerly():
        return tf.zeros([0], dtype)
    t = _EMPTY.get(dtype)
    if t is None:
        t = _EMPTY[dtype] = tf.zeros([0], dtype)
    return t


@tf.RegisterGradient("TFSort>SortingNetwork")
def _sorting_network_grad(op, grad, saved_grad):
    x, steepness = op.inputs
    attrs = _net_attrs(op)
    if grad is None and saved_grad is None:
        return [tf.zeros_like(x), None]
    if grad is None:
        grad = tf.zeros_like(x)
    # saved's cotangent is non-zero only in second-order gradients (sort mode; ranks raise
    # in _sorting_network_grad_grad before one could arise).
    if saved_grad is None or attrs["compute_ranks"]:
        saved_grad = _empty(op.outputs[1].dtype)
    g = _raw.tf_sort_sorting_network_grad(grad, op.outputs[1], saved_grad, steepness, **attrs)
    return [g, None]


@tf.RegisterGradient("TFSort>SortingNetworkGrad")
def _sorting_network_grad_grad(op, hess):
    # SortingNetworkGrad is linear in grad with a symmetric Jacobian per comparator, so its
    # gradient w.r.t. grad is the forward (JVP) walk; its dependence on the values runs
    # through saved (u per comparator) and is returned as saved's cotangent, which
    # SortingNetwork's gradient chains back to the values.
    attrs = _net_attrs(op)
    if attrs.pop("compute_ranks"):
        raise NotImplementedError(
            "second derivatives of tfsort.diff_rank (SortingNetworkGrad with compute_ranks) "
            "are not implemented; diff_sort and its gradient support them"
        )
    grad, saved, grad_saved, steepness = op.inputs
    if hess is None:
        hess = tf.zeros_like(grad)
    jvp, d_saved, d_grad_saved = _raw.tf_sort_sorting_network_grad_adjoint(
        hess, grad, saved, grad_saved, steepness, **attrs
    )
    if grad_saved.shape.as_list() == [0]:  # the zero placeholder, not a real cotangent
        d_grad_saved = None
    return [jvp, d_saved, d_grad_saved, None]


def _no_higher_order(what):
    def grad_fn(op, *grads):
        raise NotImplementedError(
            f"gradients of {what} ({op.type}) are not implemented in tfsort"
        )

    return grad_fn


tf.RegisterGradient("TFSort>SortingNetworkGradAdjoint")(
    _no_higher_order("third derivatives of diff_sort")
)
tf.RegisterGradient("TFSort>SortingNetworkPermutationGrad")(
    _no_higher_order("second derivatives of diff_sort(..., return_permutation=True)")
)
tf.RegisterGradient("TFSort>CompareSwapGradAdjoint")(
    _no_higher_order("third derivatives of compare_swap")
)


@tf.RegisterGradient("TFSort>SortingNetworkPermutation")
def _sorting_network_perm_grad(op, g_sorted, g_perm, _unused_d):
    x, steepness = op.inputs
    if g_sorted is None and g_perm is None:
        return [tf.zeros_like(x), None]
    if g_sorted is None:
        g_sorted = _empty(x.dtype)
    if g_perm is None:
        g_perm = _empty(x.dtype)
    attrs = _net_attrs(op, ranks=False)
    g = _raw.tf_sort_sorting_network_permutation_grad(
        g_sorted, g_perm, op.outputs[2], steepness, **attrs
    )
    return [g, None]


@tf.RegisterGradient("TFSort>CompareSwap")
def _compare_swap_grad(op, grad, diffs_grad):
    x, left, right, steepness = op.inputs
    if grad is None and diffs_grad is None:
        return [tf.zeros_like(x), None, None, None]
    if grad is None:
        grad = tf.zeros_like(x)
    diffs = op.outputs[1]
    if diffs_grad is None:  # non-zero only in second-order gradients
        diffs_grad = _empty(diffs.dtype)
    g = _raw.tf_sort_compare_swap_grad(
        grad, diffs, left, right, diffs_grad, steepness, relaxation=op.get_attr("relaxation")
    )
    return [g, None, None, None]


@tf.RegisterGradient("TFSort>CompareSwapGrad")
def _compare_swap_grad_grad(op, hess):
    # As _sorting_network_grad_grad, for one layer.
    grad, diffs, left, right, grad_diffs, steepness = op.inputs
    if hess is None:
        hess = tf.zeros_like(grad)
    jvp, d_diffs, d_grad_diffs = _raw.tf_sort_compare_swap_grad_adjoint(
        hess, grad, diffs, left, right, grad_diffs, steepness,
        relaxation=op.get_attr("relaxation"),
    )
    if grad_diffs.shape.as_list() == [0]:  # the zero placeholder, not a real cotangent
        d_grad_diffs = None
    return [jvp, d_diffs, None, None, d_grad_diffs, None]
