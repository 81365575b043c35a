"""Smoke test of the Bazel-built op library (run by `bazel test //tests:test_bazel_library`).

Checks that the library Python loaded is the one Bazel built (through TFSORT_LIBRARY), that it
has every op the Python package calls, and that the isotonic family agrees with small float64
NumPy references written here (independent of tests/reference.py). The full per-family
suites run against the same library as their own Bazel targets (tests/BUILD.bazel). Outside
Bazel the module is skipped: the pip-built library is covered by those suites directly.
"""

import glob
import os
import re

import numpy as np
import pytest

if "TEST_SRCDIR" not in os.environ or "TFSORT_LIBRARY" not in os.environ:
    pytest.skip("runs under `bazel test //tests:test_bazel_library` only", allow_module_level=True)

import tensorflow as tf

import tfsort
from tfsort import _ops


def _pav_decreasing(y):
    """L2 isotonic regression with v_1 >= v_2 >= ... (pool adjacent violators)."""
    blocks = []  # [sum, count]
    for v in y:
        blocks.append([v, 1])
        while len(blocks) > 1 and blocks[-2][0] * blocks[-1][1] <= blocks[-1][0] * blocks[-2][1]:
            s, c = blocks.pop()
            blocks[-1][0] += s
            blocks[-1][1] += c
    return np.concatenate([np.full(c, s / c) for s, c in blocks])


def _pav_kl_decreasing(y, w):
    """KL isotonic regression (non-increasing): block value LSE(y_B) - LSE(w_B)."""

    def value(block):
        lo, hi = block
        return np.logaddexp.reduce(y[lo:hi]) - np.logaddexp.reduce(w[lo:hi])

    blocks = []  # (start, stop)
    for i in range(len(y)):
        blocks.append((i, i + 1))
        while len(blocks) > 1 and value(blocks[-2]) <= value(blocks[-1]):
            stop = blocks.pop()[1]
            blocks[-1] = (blocks[-1][0], stop)
    return np.concatenate([np.full(hi - lo, value((lo, hi))) for lo, hi in blocks])


def _soft_rank_l2(x, eps, descending):
    """README, "The math": r = s - isotonic_l2(s - rho), scattered back."""
    z = (-x if descending else x) / eps
    order = np.argsort(-z, kind="stable")
    s = z[order]
    rho = np.arange(len(x), 0, -1, dtype=np.float64)
    out = np.empty_like(s)
    out[order] = s - _pav_decreasing(s - rho)
    return out


def _soft_sort_l2(x, eps, descending):
    """README, "The math": out = sign (rho/eps - isotonic_l2(rho/eps - s))."""
    sign = 1.0 if descending else -1.0
    s = np.sort(sign * x)[::-1]
    w = np.arange(len(x), 0, -1, dtype=np.float64) / eps
    return sign * (w - _pav_decreasing(w - s))


def test_library_is_the_bazel_one():
    lib = os.environ["TFSORT_LIBRARY"]
    assert _ops.LIBRARY_PATH == lib
    # A Bazel output, not a library built by setup.py into the source tree.
    assert "/bazel-out/" in os.path.realpath(lib)
    # tfsort itself is imported from the source tree in the runfiles, not from an install.
    assert os.path.abspath(tfsort.__file__).startswith(os.environ["TEST_SRCDIR"])
    with open("/proc/self/maps") as f:
        mapped = f.read()
    assert os.path.realpath(lib) in mapped


def test_library_has_every_op_the_package_calls():
    # Catches an op family that the BUILD globs miss: every `_raw.tf_sort_*` wrapper used by
    # tfsort/*.py must be generated from an op registered by the Bazel library.
    package = os.path.dirname(os.path.abspath(tfsort.__file__))
    used = set()
    for path in glob.glob(os.path.join(package, "*.py")):
        with open(path) as f:
            used.update(re.findall(r"\b_raw\.(tf_sort_\w+)", f.read()))
    assert used, "no raw op calls found in " + package
    missing = sorted(name for name in used if not callable(getattr(_ops.ops, name, None)))
    assert not missing, missing


@pytest.mark.parametrize("direction", ["ASCENDING", "DESCENDING"])
@pytest.mark.parametrize("eps", [0.1, 1.0, 10.0])
def test_soft_rank_l2_matches_numpy(eps, direction):
    x = np.random.default_rng(0).normal(size=(4, 9))
    got = tfsort.soft_rank(x, regularization_strength=eps, direction=direction).numpy()
    want = np.stack([_soft_rank_l2(row, eps, direction == "DESCENDING") for row in x])
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("direction", ["ASCENDING", "DESCENDING"])
@pytest.mark.parametrize("eps", [0.1, 1.0, 10.0])
def test_soft_sort_l2_matches_numpy(eps, direction):
    x = np.random.default_rng(1).normal(size=(4, 9))
    got = tfsort.soft_sort(x, regularization_strength=eps, direction=direction).numpy()
    want = np.stack([_soft_sort_l2(row, eps, direction == "DESCENDING") for row in x])
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10)


def test_isotonic_kl_matches_numpy():
    y, w = np.random.default_rng(3).normal(size=(2, 5, 11))
    got = tfsort.isotonic_regression(y, w, regularization="kl").numpy()
    want = np.stack([_pav_kl_decreasing(a, b) for a, b in zip(y, w)])
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10)


def test_isotonic_l2_matches_tf_nn():
    y = np.random.default_rng(2).normal(size=(5, 17)).astype(np.float32)
    got = tfsort.isotonic_regression(y)
    want = tf.nn.isotonic_regression(y)[0]
    np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-6, atol=1e-6)


def test_gradient_runs_on_bazel_library():
    x = tf.constant([[8.0, 0.0, 5.0, 3.0, 2.0, 1.0, 6.0, 7.0, 9.0]], tf.float64)
    theoretical, numerical = tf.test.compute_gradient(
        lambda v: tfsort.soft_rank(v, regularization_strength=2.0), [x]
    )
    np.testing.assert_allclose(theoretical[0], numerical[0], atol=1e-6)
