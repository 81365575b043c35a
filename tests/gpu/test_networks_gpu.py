"""GPU checks of the sorting-network launchers (tfsort/cuda/networks.cu.cc) against the NumPy
float64 reference (reference_networks_topk.py), through the nvcc-only harness library.

Covers n = 1, non-powers of two, the shared-memory path (n <= 2048) and the per-layer path
(2049, 65536), batch 1 and 65536, ties, every relaxation, both networks, descending, and all
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
# Tolerance relative to the row's scale, per dtype (outputs are rounded to the dtype).
TOL = {torch.float16: 1.5e-2, torch.bfloat16: 6e-2, torch.float32: 2e-4, torch.float64: 1e-9}


@pytest.fixture(scope="module")
def nets(harness):
    return H.Networks(torch, harness)


_SCHEDULES = {}


def _sched(harness, network, n):
    key = (network, n)
    if key not in _SCHEDULES:
        _SCHEDULES[key] = H.Schedule(torch, harness, network, n)
    return _SCHEDULES[key]


def _inputs(batch, n, dtype, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, n, generator=g, dtype=torch.float64)
    if n >= 4:
        x[0, : n // 2] = x[0, 0]  # ties
        x[-1, 1] = x[-1, 3]
    return x.to(dtype).to(DEV)


def _close(actual, expected, dtype, scale=None, what=""):
    a = actual.double().cpu().numpy() if hasattr(actual, "cpu") else np.asarray(actual)
    e = np.asarray(expected, np.float64)
    scale = max(1.0, float(np.abs(e).max()) if e.size else 1.0) if scale is None else scale
    np.testing.assert_allclose(a, e, rtol=TOL[dtype], atol=TOL[dtype] * scale, err_msg=what)


def _split(saved_np, sched):
    s = sched.host_start
    return [saved_np[:, s[i] : s[i + 1]] for i in range(sched.num_layers)]


CASES = [
    # (network, n, batch, relaxations)
    ("bitonic", 1, 3, ref.RELAXATIONS),
    ("bitonic", 2, 3, ref.RELAXATIONS),
    ("bitonic", 7, 3, ref.RELAXATIONS),
    ("bitonic", 16, 3, ref.RELAXATIONS),
    ("bitonic", 100, 2, ref.RELAXATIONS),
    ("bitonic", 2048, 1, ("cauchy", "softmax")),
    ("bitonic", 2049, 2, ("cauchy", "optimal", "softmax")),
    ("bitonic", 65536, 1, ("cauchy", "softmax")),
    ("odd_even", 1, 3, ref.RELAXATIONS),
    ("odd_even", 7, 3, ref.RELAXATIONS),
    ("odd_even", 100, 2, ("logistic", "cauchy", "softmax")),
    ("odd_even", 2049, 1, ("cauchy",)),
]


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: str(d).split(".")[-1])
@pytest.mark.parametrize("desc", [False, True])
@pytest.mark.parametrize("network,n,batch,rels", CASES, ids=lambda c: str(c) if not isinstance(c, tuple) else "rels")
def test_sort_forward_grad_adjoint(harness, nets, dtype, desc, network, n, batch, rels):
    H.skip_emulated(torch, dtype)
    sched = _sched(harness, network, n)
    lays = sched.layers()
    x = _inputs(batch, n, dtype, seed=n + batch)
    g = _inputs(batch, n, dtype, seed=n + 1)
    t = _inputs(batch, n, dtype, seed=n + 2)
    xd, gd, td = (v.double().cpu().numpy() for v in (x, g, t))
    s = 3.0
    for rel in rels:
        out, saved = nets.forward(x, sched, rel, s, desc)
        r_out, r_us = ref.network_forward(xd, lays, rel, s, desc)
        _close(out, r_out, dtype, what=f"{rel} sorted")
        if dtype in (torch.float32, torch.float64) and sched.num:
            _close(saved, np.concatenate(r_us, axis=1), dtype, what=f"{rel} saved")
        # Gradients are checked against the reference walk on the kernel's own saved u, so
        # that low-precision rounding of the forward pass does not count against them.
        us = _split(saved.double().cpu().numpy(), sched)
        gsaved = torch.randn(saved.shape, dtype=saved.dtype, device=DEV) if sched.num else None
        for gs in (None, gsaved):
            gs_layers = _split(gs.double().cpu().numpy(), sched) if gs is not None else None
            grad = nets.grad(g, saved, sched, rel, s, desc, grad_saved=gs)
            _close(grad, ref.network_vjp(gd, us, lays, rel, s, desc, gs_layers), dtype, what=f"{rel} grad")
        jvp, _, dgs = nets.grad_adjoint(t, g, saved, sched, rel, s, desc)
        _close(jvp, ref.network_jvp(td, us, lays, rel, s, desc), dtype, what=f"{rel} jvp")
    if DEV == "cuda":
        torch.cuda.synchronize()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("network,n", [("bitonic", 7), ("bitonic", 16), ("odd_even", 9), ("bitonic", 2049)])
def test_adjoint_saved_derivatives_by_finite_differences(harness, nets, dtype, network, n):
    """d_saved and d_grad_saved are the derivatives of <tangent, Grad(grad, saved, gs)>."""
    H.skip_emulated(torch, dtype)
    sched = _sched(harness, network, n)
    x, g, t = (_inputs(2, n, torch.float64, seed=n + i) for i in range(3))
    for rel in ("logistic", "cauchy", "softmax"):
        _, saved = nets.forward(x, sched, rel, 2.0)
        gs = torch.randn_like(saved)
        _, ds, dgs = nets.grad_adjoint(t, g, saved, sched, rel, 2.0, grad_saved=gs)
        d = torch.randn_like(saved)
        h = 1e-6

        def f(sv, gsv):
            return float((t * nets.grad(g, sv, sched, rel, 2.0, grad_saved=gsv)).sum())

        fd_s = (f(saved + h * d, gs) - f(saved - h * d, gs)) / (2 * h)
        fd_g = (f(saved, gs + h * d) - f(saved, gs - h * d)) / (2 * h)
        np.testing.assert_allclose(float((ds * d).sum()), fd_s, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(float((dgs * d).sum()), fd_g, rtol=1e-5, atol=1e-6)
        if dtype == torch.float32:
            # The float launchers agree with the double ones.
            _, ds32, dgs32 = nets.grad_adjoint(t.float(), g.float(), saved.float(), sched, rel, 2.0,
                                                grad_saved=gs.float())
            _close(ds32, ds.cpu().numpy(), torch.float32, what="d_saved f32")
            _close(dgs32, dgs.cpu().numpy(), torch.float32, what="d_grad_saved f32")


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: str(d).split(".")[-1])
@pytest.mark.parametrize("desc", [False, True])
@pytest.mark.parametrize("network,n,batch", [("bitonic", 1, 2), ("bitonic", 7, 3), ("odd_even", 7, 3),
                                             ("bitonic", 64, 2), ("bitonic", 2049, 1)])
def test_ranks_forward_and_grad(harness, nets, dtype, desc, network, n, batch):
    H.skip_emulated(torch, dtype)
    sched = _sched(harness, network, n)
    lays = sched.layers()
    x = _inputs(batch, n, dtype, seed=5 * n)
    xd = x.double().cpu().numpy()
    for rel in ("logistic", "gaussian", "cauchy", "optimal", "softmax"):
        r, saved = nets.forward(x, sched, rel, 2.0, desc, ranks=True)
        r_ref, _ = ref.network_forward(xd, lays, rel, 2.0, desc, ranks=True)
        _close(r, r_ref, dtype, scale=float(n), what=f"{rel} ranks")
        if n > 64:
            continue
        # The rank gradient against central differences of the float64 reference.
        g = np.random.default_rng(n).normal(size=xd.shape)
        grad = nets.grad(torch.tensor(g).to(dtype).to(DEV), saved, sched, rel, 2.0, desc, ranks=True)
        gq = torch.tensor(g).to(dtype).double().numpy()
        v = np.random.default_rng(n + 1).normal(size=xd.shape)
        h = 1e-6

        def f(z):
            return float((gq * ref.network_forward(z, lays, rel, 2.0, desc, ranks=True)[0]).sum())

        fd = (f(xd + h * v) - f(xd - h * v)) / (2 * h)
        got = float((grad.double().cpu().numpy() * v).sum())
        np.testing.assert_allclose(got, fd, rtol=50 * TOL[dtype], atol=50 * TOL[dtype] * n)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["f32", "f16"])
@pytest.mark.parametrize("n", [16, 5])
def test_batch_65536(harness, nets, dtype, n):
    H.skip_emulated(torch, dtype)
    sched = _sched(harness, "bitonic", n)
    lays = sched.layers()
    x = _inputs(65536, n, dtype, seed=1)
    g = _inputs(65536, n, dtype, seed=2)
    out, saved = nets.forward(x, sched, "cauchy", 5.0)
    r_out, _ = ref.network_forward(x.double().cpu().numpy(), lays, "cauchy", 5.0)
    _close(out, r_out, dtype)
    us = _split(saved.double().cpu().numpy(), sched)
    grad = nets.grad(g, saved, sched, "cauchy", 5.0)
    _close(grad, ref.network_vjp(g.double().cpu().numpy(), us, lays, "cauchy", 5.0), dtype)
    r, _ = nets.forward(x, sched, "cauchy", 5.0, ranks=True)
    r_ref, _ = ref.network_forward(x.double().cpu().numpy(), lays, "cauchy", 5.0, ranks=True)
    _close(r, r_ref, dtype, scale=float(n))


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: str(d).split(".")[-1])
@pytest.mark.parametrize("n", [9, 3000])
def test_compare_swap_layer(harness, nets, dtype, n):
    """The CompareSwap ops: one layer of arbitrary disjoint comparators (some with
    left > right), on the shared-memory path (n = 9) and the global one (n = 3000)."""
    H.skip_emulated(torch, dtype)
    perm = np.random.default_rng(n).permutation(n)
    m = n // 2 - 1
    lo, hi = perm[:m], perm[m : 2 * m]
    layer = H.CustomLayer(torch, lo, hi)
    lays = layer.layers()
    x, g, t = (_inputs(3, n, dtype, seed=n + i) for i in range(3))
    xd, gd, td = (v.double().cpu().numpy() for v in (x, g, t))
    for rel in ("logistic_phi", "cauchy", "softmax"):
        out, diffs = nets.forward(x, layer, rel, 4.0)
        r_out, r_us = ref.network_forward(xd, lays, rel, 4.0)
        _close(out, r_out, dtype, what=f"{rel} swapped")
        us = [diffs.double().cpu().numpy()]
        gdiffs = torch.randn(diffs.shape, dtype=diffs.dtype, device=DEV)
        grad = nets.grad(g, diffs, layer, rel, 4.0, grad_saved=gdiffs)
        _close(grad, ref.network_vjp(gd, us, lays, rel, 4.0, gdiffs=[gdiffs.double().cpu().numpy()]),
               dtype, what=f"{rel} grad")
        jvp, _, _ = nets.grad_adjoint(t, g, diffs, layer, rel, 4.0)
        _close(jvp, ref.network_jvp(td, us, lays, rel, 4.0), dtype, what=f"{rel} jvp")


def test_empty_shapes_launch_nothing(harness, nets):
    sched = _sched(harness, "bitonic", 4)
    x = torch.empty(0, 4, dtype=torch.float32, device=DEV)
    out, saved = nets.forward(x, sched, "cauchy", 1.0)
    assert out.shape == (0, 4) and saved.shape == (0, sched.num)
    sched0 = _sched(harness, "bitonic", 0)
    x0 = torch.empty(3, 0, dtype=torch.float32, device=DEV)
    out0, _ = nets.forward(x0, sched0, "cauchy", 1.0)
    assert out0.shape == (3, 0)
