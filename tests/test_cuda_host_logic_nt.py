"""Host tests of the GPU launchers' logic for the network (and top-k) families.

The CUDA kernels in tfsort/cuda/networks.cu.cc call host+device functions from
tfsort/cuda/networks_steps.h for every element and comparator. tests/cuda_host/
nt_host_driver.cc runs those same functions on the host with g++, in the kernels' structure
(phases, layer by layer, the comparators of each layer in a shuffled order, since a GPU runs
them in parallel), and this test compares the result with the CPU ops, which run networks.h's
row functions. So the GPU code's bookkeeping (initial values, descending flips, saved and
scratch layouts, phase order) is checked without a GPU; the device execution itself is not.

Skipped when g++ or the CUDA headers (cuda_runtime_api.h, for the launcher header's types)
are missing.
"""

import ctypes
import os
import shutil
import subprocess

import numpy as np
import pytest
import tensorflow as tf

from tfsort._ops import ops as _raw

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RELAXATIONS = ("logistic", "logistic_phi", "gaussian", "reciprocal", "cauchy", "optimal", "softmax")
NETWORKS = ("bitonic", "odd_even")
FORWARD_SORT, FORWARD_RANK, GRAD_SORT, GRAD_RANK, GRAD_ADJOINT = range(5)


def _cuda_include():
    for base in (os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"):
        if base and os.path.exists(os.path.join(base, "include", "cuda_runtime_api.h")):
            return os.path.join(base, "include")
    nvcc = shutil.which("nvcc")
    if nvcc:
        inc = os.path.join(os.path.dirname(os.path.dirname(nvcc)), "include")
        if os.path.exists(os.path.join(inc, "cuda_runtime_api.h")):
            return inc
    return None


@pytest.fixture(scope="module")
def driver(tmp_path_factory):
    cxx = shutil.which(os.environ.get("CXX", "g++"))
    inc = _cuda_include()
    if cxx is None or inc is None:
        pytest.skip("needs g++ and the CUDA headers")
    out = str(tmp_path_factory.mktemp("nt_host") / "nt_host_driver.so")
    src = os.path.join(ROOT, "tests", "cuda_host", "nt_host_driver.cc")
    subprocess.check_call(
        [cxx, "-std=c++17", "-O2", "-shared", "-fPIC", "-I" + ROOT, "-I" + inc, src, "-o", out]
    )
    lib = ctypes.CDLL(out)
    lib.nt_host_num_comparators.restype = ctypes.c_int64
    lib.nt_host_num_comparators.argtypes = [ctypes.c_int, ctypes.c_int64]
    lib.nt_host_network.restype = ctypes.c_int
    lib.nt_host_network.argtypes = [ctypes.c_int, ctypes.c_int] + [ctypes.c_void_p] * 7 + [
        ctypes.c_int64,
        ctypes.c_int64,
        ctypes.c_int,
        ctypes.c_int,
        ctypes.c_double,
        ctypes.c_int,
        ctypes.c_uint,
    ]
    lib.nt_host_sigmoid_topk.restype = ctypes.c_int
    lib.nt_host_sigmoid_topk.argtypes = [
        ctypes.c_int,
        ctypes.c_void_p,
        ctypes.c_void_p,
        ctypes.c_double,
        ctypes.c_double,
        ctypes.c_void_p,
        ctypes.c_int64,
        ctypes.c_int64,
        ctypes.c_int,
    ]
    lib.nt_host_sigmoid_topk_grad.restype = ctypes.c_int
    lib.nt_host_sigmoid_topk_grad.argtypes = [
        ctypes.c_int,
        ctypes.c_void_p,
        ctypes.c_void_p,
        ctypes.c_double,
        ctypes.c_void_p,
        ctypes.c_int64,
        ctypes.c_int64,
        ctypes.c_int,
    ]
    return lib


def _p(a):
    return None if a is None else a.ctypes.data_as(ctypes.c_void_p)


def _host(lib, mode, dtype, in0, n, network, rel, s, desc, in1=None, saved=None, gdiffs=None):
    batch = in0.shape[0]
    num = lib.nt_host_num_comparators(NETWORKS.index(network), n)
    per_row = num * (2 if mode in (FORWARD_RANK, GRAD_RANK) else 1)
    out = np.zeros_like(in0)
    if saved is None:
        saved = np.zeros((batch, per_row), dtype)
    dsaved = np.zeros((batch, num), dtype) if mode == GRAD_ADJOINT else None
    dgd = np.zeros((batch, num), dtype) if mode == GRAD_ADJOINT else None
    rc = lib.nt_host_network(
        int(dtype == np.float64),
        mode,
        _p(in0),
        _p(in1),
        _p(out),
        _p(saved),
        _p(gdiffs),
        _p(dsaved),
        _p(dgd),
        batch,
        n,
        NETWORKS.index(network),
        RELAXATIONS.index(rel),
        s,
        int(desc),
        1234,
    )
    assert rc == 0
    return out, saved, dsaved, dgd


def _rows(rng, batch, n, dtype):
    x = rng.normal(size=(batch, n))
    if n >= 4:
        x[0, : n // 2] = x[0, 0]  # ties
        x[-1, 1] = x[-1, 3]
    return np.ascontiguousarray(x.astype(dtype))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("desc", [False, True])
@pytest.mark.parametrize("network", NETWORKS)
@pytest.mark.parametrize("n", [1, 2, 5, 16, 37])
def test_network_steps_match_cpu_op(driver, dtype, desc, network, n):
    _check_network_steps(driver, dtype, desc, network, n, RELAXATIONS)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("desc", [False, True])
@pytest.mark.parametrize("n", [4100, 6000])
def test_network_tile_path_matches_cpu_op(driver, dtype, desc, n):
    """Long bitonic rows: runs of tile-local layers go through the TileKernel structure
    (tiles of kNetTile = 2048, the last one partial)."""
    _check_network_steps(driver, dtype, desc, "bitonic", n, ("logistic_phi", "cauchy", "softmax"))


def _check_network_steps(driver, dtype, desc, network, n, rels):
    rng = np.random.default_rng(n * 7 + desc)
    tol = dict(rtol=1e-12, atol=1e-12) if dtype == np.float64 else dict(rtol=2e-5, atol=2e-5)
    s = 3.7
    s_t = tf.constant(s, tf.float64)
    tdt = tf.as_dtype(dtype)
    for rel in rels:
        attrs = dict(network=network, relaxation=rel, descending=desc)
        x = _rows(rng, 3, n, dtype)
        g = np.ascontiguousarray(rng.normal(size=x.shape).astype(dtype))
        tan = np.ascontiguousarray(rng.normal(size=x.shape).astype(dtype))
        for ranks in (False, True):
            out, saved = _raw.tf_sort_sorting_network(
                x, s_t, Tacc=tdt, compute_ranks=ranks, **attrs
            )
            mode = FORWARD_RANK if ranks else FORWARD_SORT
            h_out, h_saved, _, _ = _host(driver, mode, dtype, x, n, network, rel, s, desc)
            np.testing.assert_allclose(h_out, out.numpy(), **tol, err_msg=f"{rel} fwd {ranks}")
            np.testing.assert_allclose(h_saved, saved.numpy(), **tol, err_msg=f"{rel} saved")
            saved_np = np.ascontiguousarray(saved.numpy())
            gd = None
            if not ranks and saved_np.shape[-1] > 0:
                gd = np.ascontiguousarray(rng.normal(size=saved_np.shape).astype(dtype))
            gd_t = tf.constant(gd) if gd is not None else tf.zeros([0], tdt)
            ref = _raw.tf_sort_sorting_network_grad(g, saved, gd_t, s_t, compute_ranks=ranks, **attrs)
            mode = GRAD_RANK if ranks else GRAD_SORT
            h_g, _, _, _ = _host(
                driver, mode, dtype, g, n, network, rel, s, desc, saved=saved_np, gdiffs=gd
            )
            np.testing.assert_allclose(h_g, ref.numpy(), **tol, err_msg=f"{rel} grad {ranks}")
            if ranks:
                continue
            jvp, d_saved, d_gd = _raw.tf_sort_sorting_network_grad_adjoint(
                tan, g, saved, gd_t, s_t, **attrs
            )
            h_j, _, h_ds, h_dgd = _host(
                driver, GRAD_ADJOINT, dtype, g, n, network, rel, s, desc, in1=tan,
                saved=saved_np, gdiffs=gd,
            )
            np.testing.assert_allclose(h_j, jvp.numpy(), **tol, err_msg=f"{rel} jvp")
            np.testing.assert_allclose(h_ds, d_saved.numpy(), **tol, err_msg=f"{rel} d_saved")
            np.testing.assert_allclose(h_dgd, d_gd.numpy(), **tol, err_msg=f"{rel} d_gd")


# ---------------------------------------------------------------------------------------
# Sigmoid top-k: the warp (32 threads) and block (512 threads) phases of topk.cu.cc.


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("nth", [32, 512])
@pytest.mark.parametrize("n", [2, 7, 100, 3000])
@pytest.mark.parametrize("eps", [1e-3, 0.1, 10.0])
def test_sigmoid_topk_phases_match_cpu_op(driver, dtype, nth, n, eps):
    rng = np.random.default_rng(n + nth)
    batch = 4
    x = rng.normal(size=(batch, n)).astype(dtype)
    x[1, : n // 2 + 1] = 0.5  # ties
    x[2] = 3.0  # a constant row
    if n > 3:
        x[3, 2] = np.nan  # a non-finite row gives a NaN row
    x = np.ascontiguousarray(x)
    k = np.array([1.0, n / 2.0, n - 1.0, 1.5])[:batch] if n > 2 else np.full(batch, 1.0)
    eps_t = tf.constant(eps, tf.float64)
    ref = _raw.tf_sort_sigmoid_top_k(x, tf.constant(k), eps_t).numpy()
    out = np.zeros_like(x)
    kk = np.ascontiguousarray(k)
    f64 = int(dtype == np.float64)
    assert driver.nt_host_sigmoid_topk(f64, _p(x), _p(kk), 0.0, eps, _p(out), batch, n, nth) == 0
    tol = dict(rtol=1e-10, atol=1e-12) if f64 else dict(rtol=2e-5, atol=2e-6)
    np.testing.assert_allclose(out, ref, **tol)
    fin = np.isfinite(ref).all(axis=1)
    np.testing.assert_allclose(out[fin].sum(axis=1), k[fin], rtol=1e-4 if not f64 else 1e-9)
    # Scalar k.
    ref1 = _raw.tf_sort_sigmoid_top_k(x, tf.constant(1.0, tf.float64), eps_t).numpy()
    assert driver.nt_host_sigmoid_topk(f64, _p(x), None, 1.0, eps, _p(out), batch, n, nth) == 0
    np.testing.assert_allclose(out, ref1, **tol)
    # Gradient.
    g = np.ascontiguousarray(rng.normal(size=x.shape).astype(dtype))
    p = np.ascontiguousarray(np.nan_to_num(ref, nan=0.25).astype(dtype))
    gref = _raw.tf_sort_sigmoid_top_k_grad(g, p, eps_t).numpy()
    gout = np.zeros_like(g)
    assert driver.nt_host_sigmoid_topk_grad(f64, _p(g), _p(p), eps, _p(gout), batch, n, nth) == 0
    gtol = dict(rtol=1e-10, atol=1e-12) if f64 else dict(rtol=1e-5, atol=1e-5 / eps)
    np.testing.assert_allclose(gout, gref, **gtol)


# ---------------------------------------------------------------------------------------
# The GPU harness's NumPy references (tests/gpu/reference_networks_topk.py) against the CPU
# ops, so that a GPU run compares with a reference already known to agree with the CPU.


def _gpu_reference():
    import importlib.util

    path = os.path.join(ROOT, "tests", "gpu", "reference_networks_topk.py")
    spec = importlib.util.spec_from_file_location("reference_networks_topk", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("network", NETWORKS)
@pytest.mark.parametrize("desc", [False, True])
@pytest.mark.parametrize("n", [1, 7, 16])
def test_gpu_reference_matches_cpu_ops(network, desc, n):
    import tfsort

    ref = _gpu_reference()
    sched = tfsort.sorting_network(n, network)
    lays = [(np.array([c[0] for c in layer]), np.array([c[1] for c in layer])) for layer in sched]
    rng = np.random.default_rng(n)
    x = rng.normal(size=(3, n))
    g = rng.normal(size=(3, n))
    t = rng.normal(size=(3, n))
    s = 2.5
    s_t = tf.constant(s, tf.float64)
    for rel in RELAXATIONS:
        attrs = dict(network=network, relaxation=rel, descending=desc)
        out, saved = _raw.tf_sort_sorting_network(x, s_t, Tacc=tf.float64, **attrs)
        r_out, us = ref.network_forward(x, lays, rel, s, desc)
        np.testing.assert_allclose(r_out, out.numpy(), rtol=1e-10, atol=1e-10)
        u_flat = np.concatenate(us, axis=1) if us else np.zeros((3, 0))
        np.testing.assert_allclose(u_flat, saved.numpy(), rtol=1e-10, atol=1e-10)
        ranks, _ = _raw.tf_sort_sorting_network(x, s_t, Tacc=tf.float64, compute_ranks=True, **attrs)
        r_rank, _ = ref.network_forward(x, lays, rel, s, desc, ranks=True)
        np.testing.assert_allclose(r_rank, ranks.numpy(), rtol=1e-10, atol=1e-10)
        gd = rng.normal(size=saved.shape)
        gd_layers = np.split(gd, np.cumsum([len(lo) for lo, _ in lays])[:-1], axis=1) if us else None
        grad = _raw.tf_sort_sorting_network_grad(g, saved, gd if us else tf.zeros([0], tf.float64), s_t, **attrs)
        r_grad = ref.network_vjp(g, us, lays, rel, s, desc, gd_layers)
        np.testing.assert_allclose(r_grad, grad.numpy(), rtol=1e-9, atol=1e-10)
        jvp, _, _ = _raw.tf_sort_sorting_network_grad_adjoint(
            t, g, saved, tf.zeros([0], tf.float64), s_t, **attrs
        )
        np.testing.assert_allclose(ref.network_jvp(t, us, lays, rel, s, desc), jvp.numpy(), rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("eps", [1e-2, 1.0])
def test_gpu_topk_reference_matches_cpu_ops(eps):
    ref = _gpu_reference()
    rng = np.random.default_rng(3)
    x = rng.normal(size=(4, 50))
    k = np.array([1.0, 2.5, 25.0, 49.0])
    m = _raw.tf_sort_sigmoid_top_k(x, tf.constant(k), tf.constant(eps, tf.float64)).numpy()
    np.testing.assert_allclose(ref.sigmoid_topk(x, k, eps), m, rtol=1e-9, atol=1e-12)
    g = rng.normal(size=x.shape)
    gr = _raw.tf_sort_sigmoid_top_k_grad(g, m, tf.constant(eps, tf.float64)).numpy()
    np.testing.assert_allclose(ref.sigmoid_topk_vjp(g, m, eps), gr, rtol=1e-9, atol=1e-12)
