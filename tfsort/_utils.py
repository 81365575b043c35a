"""Argument validation and axis handling shared by every public tfsort function.

Every public function converts its input with :func:`convert_values`, validates its
arguments with the ``check_*`` helpers (which raise ``ValueError``/``TypeError`` naming the
argument), moves ``axis`` last with :func:`move_axis_last`, calls the raw op and moves the
axis back. Kept cheap: these run on every eager call.
"""

import math
import numbers

import numpy as np
import tensorflow as tf

FLOAT_DTYPES = (tf.float16, tf.bfloat16, tf.float32, tf.float64)
_FLOAT_SET = frozenset(FLOAT_DTYPES)


# Eager fast path of convert_values: the dtype enum of an EagerTensor is an int, read
# without building a DType (small eager calls are overhead-bound: see docs/design_notes.md).
_EAGER_TENSOR = EAGER_TENSOR = type(tf.constant(0.0))
_FLOAT_ENUMS = frozenset(d.as_datatype_enum for d in FLOAT_DTYPES)


def is_eager_float(values):
    """Whether values is an eager floating tensor of rank >= 1 (needs no conversion)."""
    return (type(values) is _EAGER_TENSOR and values._datatype_enum() in _FLOAT_ENUMS
            and values._rank() > 0)


# Direct eager op execution, as TF's generated op wrappers do it, minus their Python layers
# (a function call with keyword arguments and a namedtuple per call: ~2 us of a ~160 us
# eager fwd+bwd at 1x16). Private TF API, pinned with tensorflow==2.21; without it (or when
# it raises) callers use the generated wrappers, which also produce the error messages.
try:
    from tensorflow.python import pywrap_tfe as _pywrap_tfe
    from tensorflow.python.eager import context as _context

    _fast_path_execute = _pywrap_tfe.TFE_Py_FastPathExecute
    _tape_set_is_empty = _pywrap_tfe.TFE_Py_TapeSetIsEmpty
except (ImportError, AttributeError):  # pragma: no cover
    _context = _fast_path_execute = None

    def _tape_set_is_empty():  # unknown: assume a tape records
        return False


def recording():
    """Whether an eager gradient tape (or forward accumulator) is recording right now."""
    return not _tape_set_is_empty()


def eager_context():
    """TF's eager context when executing eagerly; None in graphs (or without the fast path)."""
    if _fast_path_execute is None:
        return None
    try:
        ctx = _context._context or _context.context()
        return ctx if ctx._thread_local_data.is_eager else None
    except AttributeError:  # pragma: no cover
        return None


def fast_execute(ctx, op_type, *inputs_and_attrs):
    """Runs op_type eagerly: inputs first, then flat attribute (name, value) pairs, as
    TFE_Py_FastPathExecute takes them. Returns the op's outputs, or None if the fast path
    declined or failed; the caller then calls the generated wrapper (which raises)."""
    try:
        return _fast_path_execute(ctx, op_type, None, *inputs_and_attrs)
    except Exception:  # noqa: BLE001  (the generated wrapper reports it properly)
        return None


class PyEagerOp:
    """The Python equivalent of tfsort._eager_fast_path.EagerOp (see make_eager_op), used
    when that extension was not built (setup.py: build_fast_path): op(ctx, x) runs
    op_type(x, *extra) with `attrs` (`recording_attrs` while a tape records) through
    TFE_Py_FastPathExecute, and TF records it with the op's registered gradient. Returns
    its first output, or None where the caller must take the generic path: x is not an
    eager tensor, execution is asynchronous (kernel errors would surface later, in place
    of the generic path's argument checks), the op failed (the generated wrapper then
    raises TF's error), or a tape records and x has more than max_stash_elements elements
    (the kernels' aux stash is bounded)."""

    __slots__ = ("op_type", "attrs", "recording_attrs", "extra", "max_stash_elements",
                 "num_outputs")

    def __init__(self, op_type, attrs, extra, grad_type, grad_inputs, grad_attrs,
                 grad_fallback, recording_attrs=None, max_stash_elements=1 << 62,
                 num_outputs=1):
        del grad_type, grad_inputs, grad_attrs, grad_fallback  # the registered gradient
        self.op_type, self.extra = op_type, tuple(extra)
        self.attrs = tuple(v for item in attrs.items() for v in item)
        self.recording_attrs = self.attrs if recording_attrs is None else tuple(
            v for item in recording_attrs.items() for v in item)
        self.max_stash_elements, self.num_outputs = max_stash_elements, num_outputs

    def __call__(self, ctx, x):
        if type(x) is not _EAGER_TENSOR or ctx.is_async():
            return None
        attrs = self.attrs
        if not _tape_set_is_empty():
            if x._num_elements() > self.max_stash_elements:
                return None
            attrs = self.recording_attrs
        out = fast_execute(ctx, self.op_type, x, *self.extra, *attrs)
        return out if out is None or self.num_outputs == 1 else out[0]


try:  # built by setup.py next to the op library (optional: see PyEagerOp)
    from tfsort._eager_fast_path import EagerOp as _CEagerOp
except ImportError:
    _CEagerOp = None
# What make_eager_op builds (tests switch it to PyEagerOp to cover the Python path).
EagerOp = PyEagerOp if _CEagerOp is None else _CEagerOp
# Every cache of fast paths (dicts), emptied by clear_eager_ops.
_EAGER_OP_CACHES = []


# make_eager_op's grad_inputs codes: the forward input x, forward output i (OUTPUT + i,
# OUTPUT = 0) and the cotangent of output i (COTANGENT + i).
FROM_X, OUTPUT, COTANGENT = -1, 0, 100


def make_eager_op(op_type, attrs, extra, grad_type, grad_inputs, grad_attrs, grad_fallback,
                  recording_attrs=None, max_stash_elements=1 << 62, num_outputs=1):
    """An eager fast path for one of tfsort's ops in one configuration: op(ctx, x) runs
    op_type(x, *extra) with the attribute dict `attrs` (`recording_attrs` while a tape
    records; types of inputs are inferred) and returns its first output, or None where the
    caller must take the generic path (see PyEagerOp).

    With the C++ extension (tfsort/pyext/eager_fast_path.cc) the call builds and runs the op
    through TF's C API and records all its outputs on the active tapes with a C++ backward
    step: grad_type(*grad_inputs) with `grad_attrs`, where grad_inputs holds eager tensors
    and the codes FROM_X, OUTPUT + i and COTANGENT + i, each alone or as (code, tensor to
    use if the value is None). That is ~27 us less than TF's
    generic path per small eager forward + backward (docs/design_notes.md). grad_fallback
    is the gradient op's generated wrapper, called as grad_fallback(*grad_inputs,
    **grad_attrs) where that step cannot run directly (graph tensors, a tape recording the
    backward pass). Without the extension, PyEagerOp runs the op and TF records it with its
    registered gradient, which must compute the same thing."""
    return EagerOp(op_type, attrs, tuple(extra), grad_type, tuple(grad_inputs), grad_attrs,
                   grad_fallback, recording_attrs, max_stash_elements, num_outputs)


def eager_op_cache():
    """A new dict for caching fast paths by configuration, emptied by clear_eager_ops."""
    cache = {}
    _EAGER_OP_CACHES.append(cache)
    return cache


def run_fast_path(cache, key, build, x):
    """Runs the eager fast path cached under `key` on x (build(key) makes it, stores it
    with remember and returns it, or None where no fast path applies). Returns its output,
    or None where the caller must take the generic path: not executing eagerly, no fast
    path for these arguments, or one of PyEagerOp's cases."""
    ctx = eager_context()
    if ctx is None:
        return None
    try:
        fast = cache[key]
    except (KeyError, TypeError):  # new, or an unhashable argument (then never cached)
        fast = build(key)
    return None if fast is None else fast(ctx, x)


def remember(cache, key, value, bound=1024):
    """cache[key] = value, emptying the cache first when it holds `bound` entries; an
    unhashable key (a valid but unusual argument) is not cached. Returns value."""
    try:
        if len(cache) >= bound:
            cache.clear()
        cache[key] = value
    except TypeError:
        pass
    return value


def clear_eager_ops():
    """Forgets every fast path built so far (tests switch EagerOp)."""
    for cache in _EAGER_OP_CACHES:
        cache.clear()


def convert_values(values, name="values"):
    """Converts to a floating tensor of rank >= 1 (integers become float32).

    Raises:
      TypeError: for bool, string or complex inputs.
      ValueError: for a rank-0 input.
    """
    if is_eager_float(values):
        return values
    if not isinstance(values, (tf.Tensor, tf.Variable)):
        try:
            values = tf.convert_to_tensor(values)
        except (TypeError, ValueError) as e:
            raise TypeError(f"{name} must be a real number tensor: {e}") from e
    dtype = values.dtype
    if dtype not in _FLOAT_SET:
        if not dtype.is_integer:
            raise TypeError(
                f"{name} must be a floating or integer tensor, got dtype {dtype.name}"
            )
        values = tf.cast(values, tf.float32)
    if values.shape.rank == 0:
        raise ValueError(f"{name} must have rank >= 1, got a scalar")
    return values


def check_strength(value, name="regularization_strength"):
    """Returns value as a Python float, requiring it to be positive and finite."""
    if isinstance(value, (tf.Tensor, tf.Variable)):
        raise TypeError(f"{name} must be a Python number, got a tensor")
    if isinstance(value, bool) or not isinstance(value, (numbers.Real, np.number)):
        raise TypeError(f"{name} must be a positive finite number, got {value!r}")
    value = float(value)
    if not (value > 0.0 and math.isfinite(value)):
        raise ValueError(f"{name} must be positive and finite, got {value}")
    return value


def compute_dtype(dtype):
    """The precision the kernels compute in: float32 for float16/bfloat16, else dtype."""
    return tf.float32 if dtype in (tf.float16, tf.bfloat16) else dtype


# Eager float64 scalar tensors per Python float (regularization_strength, steepness): the
# ops take these as float64 inputs, and building a constant per eager call would cost more
# than the small ops themselves. Bounded; cleared when full.
_SCALARS = {}


def float64_scalar(value, eager=None):
    """A float64 scalar tensor for the validated Python float `value`: cached in eager
    mode, a new constant in graph mode (a graph's constants belong to that graph). eager:
    whether the caller runs eagerly, when it knows (saves asking TF again)."""
    if not (tf.executing_eagerly() if eager is None else eager):
        return tf.constant(value, tf.float64)
    t = _SCALARS.get(value)
    if t is None:
        if len(_SCALARS) >= 1024:
            _SCALARS.clear()
        # On the host whatever device scope the first call ran under: every op reads these
        # scalars as host-memory inputs, so a GPU copy would cost a device-to-host transfer
        # per call.
        with tf.device("/CPU:0"):
            t = _SCALARS[value] = tf.constant(value, tf.float64)
    return t


def check_kl_weights(y, w):
    """Validates w for regularization="kl" against y; returns it as a tensor of y's dtype."""
    if w is None:
        raise ValueError('regularization="kl" needs w, a tensor of the shape of y')
    w = convert_values(w, "w")
    if w.dtype != y.dtype:
        w = tf.cast(w, y.dtype)
    if y.shape.is_fully_defined() and w.shape.is_fully_defined():
        if y.shape != w.shape:
            raise ValueError(f"w must have the shape of y {y.shape}, got {w.shape}")
    elif not y.shape.is_compatible_with(w.shape):
        raise ValueError(f"w must have the shape of y {y.shape}, got {w.shape}")
    return w


def check_isotonic_args(y, w, regularization, decreasing):
    """Validates isotonic_regression's arguments; returns (y, w or None, regularization)."""
    y = convert_values(y, "y")
    reg = check_regularization(regularization)
    if not isinstance(decreasing, bool):
        raise TypeError(f"decreasing must be a bool, got {decreasing!r}")
    if reg == "l2":
        if w is not None:
            raise ValueError('w is only used with regularization="kl"; pass w=None for "l2"')
        return y, None, reg
    return y, check_kl_weights(y, w), reg


def check_choice(value, name, choices, lower=True):
    """Returns the normalized choice or raises ValueError naming the argument."""
    if not isinstance(value, str):
        raise TypeError(f"{name} must be one of {choices}, got {value!r}")
    v = value.lower() if lower else value.upper()
    if v not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")
    return v


def check_regularization(value):
    return check_choice(value, "regularization", ("l2", "kl"))


def check_descending(direction):
    """Maps direction ("ASCENDING"/"DESCENDING", any case) to a bool."""
    return check_choice(direction, "direction", ("ASCENDING", "DESCENDING"), lower=False) == (
        "DESCENDING"
    )


def normalize_axis(axis, rank, name="axis"):
    """Returns axis in [0, rank), or -1 when the rank is unknown and axis is -1."""
    if isinstance(axis, bool) or not isinstance(axis, (numbers.Integral, np.integer)):
        raise TypeError(f"{name} must be an integer, got {axis!r}")
    axis = int(axis)
    if rank is None:
        if axis != -1:
            raise ValueError(f"{name}={axis} needs a known rank; only axis=-1 works otherwise")
        return -1
    if not -rank <= axis < rank:
        raise ValueError(f"{name}={axis} is out of range for a tensor of rank {rank}")
    return axis % rank


def move_axis_last(x, axis):
    """Transposes axis to the end. Returns (x, perm or None); perm is its own inverse key."""
    rank = x.shape.rank
    if axis == -1 or axis == rank - 1:
        return x, None
    perm = [i for i in range(rank) if i != axis] + [axis]
    return tf.transpose(x, perm), perm


def restore_axis(y, perm):
    """Inverse of move_axis_last."""
    if perm is None:
        return y
    return tf.transpose(y, np.argsort(perm).tolist())


def in_xla_context():
    """True while tracing a function that XLA will compile (tf.function(jit_compile=True),
    Keras' jit_compile), where custom ops cannot run and composite paths are used."""
    graph = tf.compat.v1.get_default_graph()
    while graph is not None:
        ctx = getattr(graph, "_get_control_flow_context", lambda: None)()
        while ctx is not None:
            if type(ctx).__name__ == "XLAControlFlowContext":
                return True
            ctx = ctx.outer_context
        graph = getattr(graph, "outer_graph", None)
    return False
