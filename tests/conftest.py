"""Shared pytest fixtures: quiet TF logs, `reference` importable, eager/tf.function modes."""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402


@pytest.fixture(params=["eager", "function"])
def mode(request):
    """Returns wrap(fn): fn itself (eager) or tf.function(fn) (graph), same call signature."""

    def wrap(fn, **function_kwargs):
        if request.param == "eager":
            return fn
        return tf.function(fn, **function_kwargs)

    wrap.name = request.param
    return wrap


# --- The eager fast paths (tfsort/_utils.py: make_eager_op) ---------------------------


@pytest.fixture(params=["cpp", "python"])
def eager_impl(request, monkeypatch):
    """Runs a test with each eager fast path: the C++ extension tfsort._eager_fast_path
    (skipped where it was not built) and its Python equivalent _utils.PyEagerOp."""
    import tfsort  # noqa: PLC0415

    if request.param == "cpp":
        if tfsort._utils._CEagerOp is None:
            pytest.skip("the C++ eager fast path (tfsort._eager_fast_path) is not built")
        impl = tfsort._utils._CEagerOp
    else:
        impl = tfsort._utils.PyEagerOp
    monkeypatch.setattr(tfsort._utils, "EagerOp", impl)
    tfsort._utils.clear_eager_ops()
    yield request.param
    tfsort._utils.clear_eager_ops()  # before monkeypatch restores EagerOp


# Generated wrappers of the gradient ops that the fast paths record, and their op types.
_GRAD_WRAPPERS = {
    "tf_sort_soft_rank_eager_grad": "TFSort>SoftRankEagerGrad",
    "tf_sort_soft_sort_eager_grad": "TFSort>SoftSortEagerGrad",
    "tf_sort_isotonic_l2_eager_grad": "TFSort>IsotonicL2EagerGrad",
    "tf_sort_sigmoid_top_k_grad": "TFSort>SigmoidTopKGrad",
    "tf_sort_sorting_network_grad": "TFSort>SortingNetworkGrad",
}


@pytest.fixture
def fast_path_spy(monkeypatch):
    """A list that receives the op type of every op the eager fast paths run: in C++
    through the extension's trace hook, in Python through _utils._fast_path_execute, and
    every call of the gradient ops' generated wrappers (the Python path's registered
    gradients, the C++ path's fallback)."""
    import tfsort  # noqa: PLC0415

    seen = []
    real_fast = tfsort._utils._fast_path_execute

    def fast(ctx, op_type, *args):
        seen.append(op_type)
        return real_fast(ctx, op_type, *args)

    def spy_wrapper(op_type, real):
        def wrapper(*args, **kwargs):
            seen.append(op_type)
            return real(*args, **kwargs)

        return wrapper

    monkeypatch.setattr(tfsort._utils, "_fast_path_execute", fast)
    for name, op_type in _GRAD_WRAPPERS.items():
        monkeypatch.setattr(tfsort._ops.ops, name,
                            spy_wrapper(op_type, getattr(tfsort._ops.ops, name)))
    trace = None
    if tfsort._utils._CEagerOp is not None:
        from tfsort import _eager_fast_path as trace  # noqa: PLC0415

        trace.set_trace(seen)
    tfsort._utils.clear_eager_ops()  # the C++ fallbacks bind the wrappers when built
    yield seen
    if trace is not None:
        trace.set_trace(None)
    tfsort._utils.clear_eager_ops()  # before monkeypatch restores the wrappers
