"""Host checks of the CUDA kernels' row logic (tfsort/cuda/isotonic_rows.h), no GPU needed.

The CUDA launchers run host+device (TFSORT_HD) functions. tests/cuda_host_driver.cc
compiles that header with g++ and runs it on the CPU: the serial rows (one thread per
row on the GPU) and the block-parallel PAV phases (one thread block per row), the latter
one emulated thread at a time. Results are compared with the NumPy reference and with
the CPU op kernels (values, packed aux, gradients). Skipped when g++ is missing.
"""

import os
import shutil
import subprocess

import numpy as np
import pytest
import tensorflow as tf

import reference
from tfsort._ops import ops as raw

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

pytestmark = pytest.mark.skipif(shutil.which("g++") is None, reason="needs g++")


@pytest.fixture(scope="module")
def driver(tmp_path_factory):
    exe = str(tmp_path_factory.mktemp("cuda_host") / "driver")
    subprocess.check_call(
        ["g++", "-std=c++17", "-O1", "-Wall", "-Wextra", "-Werror", "-I" + ROOT, "-o", exe,
         os.path.join(HERE, "cuda_host_driver.cc")]
    )
    return exe


def _run(driver, mode, text=""):
    out = subprocess.run([driver, mode], input=text, capture_output=True, text=True, check=True)
    return out.stdout


def _parse(stdout):
    cases, cur = [], {}
    for line in stdout.splitlines():
        if line == "end":
            cases.append(cur)
            cur = {}
            continue
        name, *vals = line.split()
        cur[name] = np.array([float(v) for v in vals])
    return cases


def _fmt(v):
    return " ".join(repr(float(x)) for x in v)


def test_block_parallel_pav_matches_serial_pav(driver):
    # Every (n, input kind, chunk count) of the driver's self-check, L2 and KL.
    words = _run(driver, "pav").split()
    stats = dict(zip(words[::2], words[1::2]))
    assert int(stats["cases"]) > 1000
    assert int(stats["seg_mismatch"]) == 0
    assert float(stats["max_err"]) < 1e-12


def test_block_parallel_segmented_vjps_match_serial(driver):
    # Block means, softmax spread / gather, centring and the KL rank VJP, every chunk count.
    words = _run(driver, "seg").split()
    stats = dict(zip(words[::2], words[1::2]))
    assert int(stats["cases"]) > 1000
    assert float(stats["max_err"]) < 1e-12


def _rows(n, seed):
    rng = np.random.default_rng(seed)
    rows = [
        rng.normal(size=n),
        rng.integers(0, 3, size=n).astype(np.float64),  # ties
        np.arange(n, dtype=np.float64),  # already sorted
        -np.arange(n, dtype=np.float64),  # reverse sorted
    ]
    return rows


SIZES = [1, 2, 7, 33, 300, 1025]
CHUNKS = [1, 3, 16, 256]


@pytest.mark.parametrize("rank", [True, False], ids=["rank", "sort"])
@pytest.mark.parametrize("kl", [False, True], ids=["l2", "kl"])
@pytest.mark.parametrize("desc", [False, True], ids=["asc", "desc"])
def test_soft_rows_match_reference_and_cpu_kernel(driver, rank, kl, desc):
    eps_values = [0.1, 1.0, 10.0]
    cases, text = [], []
    for n in SIZES:
        for k, x in enumerate(_rows(n, n)):
            eps = eps_values[k % 3]
            chunks = CHUNKS[(n + k) % len(CHUNKS)]
            g = np.random.default_rng(k).normal(size=n)
            cases.append((x, g, eps))
            text.append("%d %d %d %r %d %d\n%s\n%s\n" % (rank, kl, desc, eps, chunks, n,
                                                         _fmt(x), _fmt(g)))
    x_nan = np.array([1.0, np.nan, 2.0])
    cases.append((x_nan, np.ones(3), 1.0))
    text.append("%d %d %d 1.0 2 3\n%s\n1 1 1\n" % (rank, kl, desc, _fmt(x_nan)))
    results = _parse(_run(driver, "soft", "".join(text)))
    assert len(results) == len(cases)
    reg = "kl" if kl else "l2"
    direction = "DESCENDING" if desc else "ASCENDING"
    fwd = raw.tf_sort_soft_rank if rank else raw.tf_sort_soft_sort
    bwd = raw.tf_sort_soft_rank_grad if rank else raw.tf_sort_soft_sort_grad
    attrs = dict(regularization=reg, descending=desc, num_aux=1)
    for (x, g, eps), res in zip(cases, results):
        eps_t = tf.constant(eps, tf.float64)
        cpu_out, cpu_aux = fwd(tf.constant(x), eps_t, **attrs)
        cpu_aux = cpu_aux[0].numpy()
        if np.all(np.isfinite(x)):
            fn = reference.soft_rank if rank else reference.soft_sort
            ref = fn(x, eps=eps, regularization=reg, direction=direction)
            np.testing.assert_allclose(res["serial"], ref, rtol=1e-9, atol=1e-9)
            np.testing.assert_allclose(res["parallel"], ref, rtol=1e-9, atol=1e-9)
        else:
            assert np.all(np.isnan(res["serial"])) and np.all(np.isnan(res["parallel"]))
        np.testing.assert_allclose(res["serial"], cpu_out.numpy(), rtol=1e-12, atol=1e-12)
        np.testing.assert_array_equal(res["aux"], cpu_aux)
        np.testing.assert_array_equal(res["aux_parallel"], cpu_aux)
        gattrs = dict(regularization=reg, descending=desc)
        cpu_grad = bwd(tf.constant(g), tf.constant(x), eps_t, [tf.constant(cpu_aux)], **gattrs)
        np.testing.assert_allclose(res["grad"], cpu_grad.numpy(), rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(res["grad_parallel"], cpu_grad.numpy(), rtol=1e-11,
                                   atol=1e-11)
        if not rank:
            cpu_adj = bwd(tf.constant(g), tf.constant(x), eps_t, [tf.constant(cpu_aux)],
                          adjoint=True, **gattrs)
            np.testing.assert_allclose(res["grad_adjoint"], cpu_adj.numpy(), rtol=1e-12,
                                       atol=1e-12)
            np.testing.assert_allclose(res["grad_adjoint_parallel"], cpu_adj.numpy(),
                                       rtol=1e-11, atol=1e-11)


@pytest.mark.parametrize("kl", [False, True], ids=["l2", "kl"])
@pytest.mark.parametrize("inc", [False, True], ids=["decreasing", "increasing"])
def test_isotonic_rows_match_reference_and_cpu_kernel(driver, kl, inc):
    cases, text = [], []
    for n in SIZES:
        for k, y in enumerate(_rows(n, 100 + n)):
            rng = np.random.default_rng(k + n)
            w = rng.normal(size=n) if kl else np.zeros(n)
            g = rng.normal(size=n)
            chunks = CHUNKS[(n + k) % len(CHUNKS)]
            cases.append((y, w, g))
            text.append("%d %d %d %d\n%s\n%s\n%s\n" % (kl, inc, chunks, n, _fmt(y), _fmt(w),
                                                       _fmt(g)))
    y_inf = np.array([1.0, np.inf])
    cases.append((y_inf, np.zeros(2), np.ones(2)))
    text.append("%d %d 1 2\n%s\n0 0\n1 1\n" % (kl, inc, _fmt(y_inf)))
    results = _parse(_run(driver, "iso", "".join(text)))
    assert len(results) == len(cases)
    for (y, w, g), res in zip(cases, results):
        if kl:
            cpu_sol, cpu_seg = raw.tf_sort_isotonic_kl(tf.constant(y), tf.constant(w),
                                                       increasing=inc)
        else:
            cpu_sol, cpu_seg = raw.tf_sort_isotonic_l2(tf.constant(y), increasing=inc)
        cpu_seg = cpu_seg.numpy()
        if np.all(np.isfinite(y)):
            ref = (reference.isotonic_kl(y, w, decreasing=not inc) if kl
                   else reference.isotonic_l2(y, decreasing=not inc))
            np.testing.assert_allclose(res["serial"], ref, rtol=1e-9, atol=1e-9)
            np.testing.assert_allclose(res["parallel"], ref, rtol=1e-9, atol=1e-9)
        np.testing.assert_allclose(res["serial"], cpu_sol.numpy(), rtol=1e-12, atol=1e-12)
        np.testing.assert_array_equal(res["seg"], cpu_seg)
        np.testing.assert_array_equal(res["seg_parallel"], cpu_seg)
        seg_t = tf.constant(cpu_seg)
        cpu_l2 = raw.tf_sort_isotonic_l2_grad(tf.constant(g), seg_t)
        np.testing.assert_allclose(res["l2grad"], cpu_l2.numpy(), rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(res["l2grad_parallel"], cpu_l2.numpy(), rtol=1e-11,
                                   atol=1e-11)
        for adjoint, suffix in ((False, ""), (True, "_adjoint")):
            gy, gw = raw.tf_sort_isotonic_kl_grad(tf.constant(g), tf.constant(y),
                                                  tf.constant(w), seg_t, adjoint=adjoint)
            np.testing.assert_allclose(res["klgrad_y" + suffix], gy.numpy(), rtol=1e-12,
                                       atol=1e-12)
            np.testing.assert_allclose(res["klgrad_w" + suffix], gw.numpy(), rtol=1e-12,
                                       atol=1e-12)
            for name, want in (("klgrad_y", gy), ("klgrad_w", gw)):
                np.testing.assert_allclose(res[name + suffix + "_parallel"], want.numpy(),
                                           rtol=1e-11, atol=1e-11)
