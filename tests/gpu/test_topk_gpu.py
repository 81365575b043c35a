"""GPU checks of the sigmoid top-k launchers (tfsort/cuda/topk.cu.cc) against the NumPy
float64 reference (reference_networks_topk.py), through the nvcc-only harness library.

Covers n = 2, non-powers of two, the warp path (n <= 2048) and the block path (2049,
65536), batch 1 and 65536, ties, constant rows, NaN/inf rows, scalar and per-row k, and all
four dtypes. Skipped unless torch sees a CUDA GPU (tests/gpu/conftest.py).
"""

import importlib.util
import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")


def _load(name):
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), name + ".py")
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


H = _load("nt_harness")
ref = H.load_reference()
DEV = H.DEVICE
if DEV == "cuda" and not torch.cuda.is_available():
    pytest.skip("no CUDA GPU visible to torch", allow_module_level=True)


DTYPES = H.dtypes(torch)
# Mask tolerance per dtype (the mask is rounded to the dtype; float computes in float32).
TOL = {torch.float16: 2e-3, torch.bfloat16: 1.2e-2, torch.float32: 2e-5, torch.float64: 1e-10}


@pytest.fixture(scope="module")
def topk(harness):
    return H.TopK(torch, harness)


def _inputs(batch, n, dtype, seed):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, n, generator=gen, dtype=torch.float64)
    if n >= 4 and batch >= 2:
        x[0, : n // 2 + 1] = 0.25  # ties
        x[1] = 1.5  # a constant row
    return x.to(dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: str(d).split(".")[-1])
@pytest.mark.parametrize("n,batch", [(2, 3), (7, 3), (100, 4), (2048, 2), (2049, 3), (65536, 1), (65536, 2)])
@pytest.mark.parametrize("eps", [1e-2, 1.0])
def test_sigmoid_topk_and_grad(topk, dtype, n, batch, eps):
    H.skip_emulated(torch, dtype)
    x = _inputs(batch, n, dtype, seed=n)
    xd = x.double().numpy()
    xc = x.to(DEV)
    # Per-row k (a fractional one included) and a scalar k.
    ks = np.array([1.0, n / 2.0, n - 1.0, 1.5][:batch] + [1.0] * max(0, batch - 4))
    ks = np.clip(ks, 0.5, n - 0.5)
    for k in (torch.tensor(ks, dtype=torch.float64, device=DEV), 1.0):
        m = topk.forward(xc, k, eps)
        kk = ks if isinstance(k, torch.Tensor) else np.full(batch, 1.0)
        m_ref = ref.sigmoid_topk(xd, kk, eps)
        np.testing.assert_allclose(m.double().cpu().numpy(), m_ref, rtol=TOL[dtype], atol=TOL[dtype])
        # The sum is k up to the dtype's rounding of each entry.
        np.testing.assert_allclose(m.double().sum(dim=1).cpu().numpy(), kk, rtol=TOL[dtype],
                                   atol=TOL[dtype] * n * (1 if dtype == torch.float64 else 0.5))
    g = _inputs(batch, n, dtype, seed=n + 1).to(DEV)
    grad = topk.grad(g, m, eps)
    g_ref = ref.sigmoid_topk_vjp(g.double().cpu().numpy(), m.double().cpu().numpy(), eps)
    scale = max(1.0, float(np.abs(g_ref).max()))
    np.testing.assert_allclose(grad.double().cpu().numpy(), g_ref, rtol=10 * TOL[dtype],
                               atol=10 * TOL[dtype] * scale)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: str(d).split(".")[-1])
@pytest.mark.parametrize("n", [5, 3000])
def test_non_finite_rows_give_nan_rows(topk, dtype, n):
    H.skip_emulated(torch, dtype)
    x = _inputs(4, n, dtype, seed=3)
    x[2, 1] = float("nan")
    x[3, 0] = float("inf")
    m = topk.forward(x.to(DEV), 2.0, 0.5).double().cpu()
    assert torch.isnan(m[2:]).all()
    assert torch.isfinite(m[:2]).all()
    ref_ok = ref.sigmoid_topk(x[:2].double().numpy(), 2.0, 0.5)
    np.testing.assert_allclose(m[:2].numpy(), ref_ok, rtol=TOL[dtype], atol=TOL[dtype])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["f32", "bf16"])
def test_batch_65536(topk, dtype):
    H.skip_emulated(torch, dtype)
    x = _inputs(65536, 16, dtype, seed=9)
    m = topk.forward(x.to(DEV), 3.0, 0.1)
    np.testing.assert_allclose(m.double().cpu().numpy(), ref.sigmoid_topk(x.double().numpy(), 3.0, 0.1),
                               rtol=TOL[dtype], atol=TOL[dtype])
    g = _inputs(65536, 16, dtype, seed=10).to(DEV)
    grad = topk.grad(g, m, 0.1)
    g_ref = ref.sigmoid_topk_vjp(g.double().cpu().numpy(), m.double().cpu().numpy(), 0.1)
    np.testing.assert_allclose(grad.double().cpu().numpy(), g_ref, rtol=10 * TOL[dtype],
                               atol=10 * TOL[dtype] * max(1.0, float(np.abs(g_ref).max())))


def test_grad_aliases_its_input(topk):
    """out may alias grad (TF forwards the input buffer)."""
    x = _inputs(3, 50, torch.float32, seed=4).to(DEV)
    m = topk.forward(x, 5.0, 0.3)
    g = _inputs(3, 50, torch.float32, seed=5).to(DEV)
    expected = topk.grad(g.clone(), m, 0.3)
    topk.grad(g, m, 0.3, out=g)
    torch.testing.assert_close(g, expected)


def test_empty_shapes_launch_nothing(topk):
    x = torch.empty(0, 8, dtype=torch.float32, device=DEV)
    assert topk.forward(x, 2.0, 1.0).shape == (0, 8)
