"""GPU checks of the isotonic family's CUDA launchers against the NumPy reference.

Runs through the TF-free harness (tests/gpu/build.py, capi_isotonic.cu.cc): device memory
from torch, one launcher call per kernel, results compared with tests/reference.py (written
from the math) and with NumPy implementations of the block-diagonal VJPs. Shapes: n = 1,
n not a power of two, n = 65536 (block-parallel PAV), batch 1 and batch 65536, ties.
Skipped unless torch with CUDA and a GPU are present (conftest.py).
"""

import ctypes

import numpy as np
import pytest

import reference

torch = pytest.importorskip("torch")

DTYPES = {"f16": "float16", "bf16": "bfloat16", "f32": "float32", "f64": "float64"}
# Relative tolerances against float64 references (low precision computes in float32 but
# rounds inputs and outputs).
RTOL = {"f16": 3e-3, "bf16": 2e-2, "f32": 2e-5, "f64": 1e-10}

I64, I32, F64 = ctypes.c_int64, ctypes.c_int, ctypes.c_double
VP, SZ = ctypes.c_void_p, ctypes.c_size_t
SIGNATURES = {
    "isotonic_workspace": (SZ, [I64, I64, I32]),
    "isotonic": (I32, [VP, VP, VP, VP, I64, I64, I32, I32, VP, SZ, VP]),
    "isotonic_l2_grad_workspace": (SZ, [I64, I64]),
    "isotonic_l2_grad": (I32, [VP, VP, VP, I64, I64, VP, SZ, VP]),
    "isotonic_kl_grad_workspace": (SZ, [I64, I64]),
    "isotonic_kl_grad": (I32, [VP, VP, VP, VP, VP, VP, I64, I64, I32, VP, SZ, VP]),
    "soft_sort_rank_workspace": (SZ, [I64, I64]),
    "soft_sort_rank": (I32, [VP, F64, VP, VP, I64, I64, I32, I32, I32, VP, SZ, VP]),
    "soft_sort_rank_grad_workspace": (SZ, [I64, I64, I32]),
    "soft_sort_rank_grad": (I32, [VP, VP, F64, VP, VP, I64, I64, I32, I32, I32, I32, VP, SZ, VP]),
}


class Api:
    """Typed access to tfsort_h_<kernel>_<dtype>; launches check the returned cudaError_t."""

    def __init__(self, lib, ptr, stream):
        self.lib, self.ptr, self.stream = lib, ptr, stream

    def fn(self, kernel, sfx):
        f = getattr(self.lib, "tfsort_h_%s_%s" % (kernel, sfx))
        f.restype, f.argtypes = SIGNATURES[kernel]
        return f

    def p(self, t):
        return None if t is None else self.ptr(t)

    def workspace(self, nbytes):
        return torch.empty(max(int(nbytes), 1), dtype=torch.uint8, device="cuda")

    def launch(self, kernel, sfx, *args):
        err = self.fn(kernel, sfx)(*args)
        assert err == 0, "tfsort_h_%s_%s returned cudaError %d" % (kernel, sfx, err)

    def isotonic(self, y, w, kl, increasing, sfx):
        b, n = y.shape
        sol = torch.empty_like(y)
        seg = torch.empty(y.shape, dtype=torch.int32, device="cuda")
        nb = self.fn("isotonic_workspace", sfx)(b, n, kl)
        ws = self.workspace(nb)
        self.launch("isotonic", sfx, self.p(y), self.p(w), self.p(sol), self.p(seg), b, n, kl,
                    increasing, self.p(ws), nb, self.stream())
        return sol, seg

    def l2_grad(self, g, seg, sfx):
        b, n = g.shape
        out = torch.empty_like(g)
        nb = self.fn("isotonic_l2_grad_workspace", sfx)(b, n)
        ws = self.workspace(nb)
        self.launch("isotonic_l2_grad", sfx, self.p(g), self.p(seg), self.p(out), b, n,
                    self.p(ws), nb, self.stream())
        return out

    def kl_grad(self, g, y, w, seg, adjoint, sfx):
        b, n = g.shape
        gy, gw = torch.empty_like(g), torch.empty_like(g)
        nb = self.fn("isotonic_kl_grad_workspace", sfx)(b, n)
        ws = self.workspace(nb)
        self.launch("isotonic_kl_grad", sfx, self.p(g), self.p(y), self.p(w), self.p(seg),
                    self.p(gy), self.p(gw), b, n, adjoint, self.p(ws), nb, self.stream())
        return gy, gw

    def soft(self, x, eps, rank, kl, desc, sfx, with_aux=True):
        b, n = x.shape
        out = torch.empty_like(x)
        aux = torch.empty(x.shape, dtype=torch.int32, device="cuda") if with_aux else None
        nb = self.fn("soft_sort_rank_workspace", sfx)(b, n)
        ws = self.workspace(nb)
        self.launch("soft_sort_rank", sfx, self.p(x), eps, self.p(out), self.p(aux), b, n,
                    rank, kl, desc, self.p(ws), nb, self.stream())
        return out, aux

    def soft_grad(self, g, x, eps, aux, rank, kl, desc, adjoint, sfx):
        b, n = g.shape
        out = torch.empty_like(g)
        nb = self.fn("soft_sort_rank_grad_workspace", sfx)(b, n, aux is not None)
        ws = self.workspace(nb)
        self.launch("soft_sort_rank_grad", sfx, self.p(g), self.p(x), eps, self.p(aux),
                    self.p(out), b, n, rank, kl, desc, adjoint, self.p(ws), nb, self.stream())
        return out


@pytest.fixture
def api(harness, ptr, stream):
    return Api(harness, ptr, stream)


def dev(a, sfx):
    return torch.as_tensor(np.asarray(a, np.float64)).to(getattr(torch, DTYPES[sfx])).cuda()


def host(t):
    torch.cuda.synchronize()
    return t.double().cpu().numpy() if t.is_floating_point() else t.cpu().numpy()


def inputs(batch, n, seed, ties=False):
    # Exact in every dtype; "+ 0.0" turns -0.0 into +0.0 (the kernels, like the CPU ones,
    # order -0.0 before +0.0, while NumPy's argsort treats them as a tie).
    rng = np.random.default_rng(seed)
    if ties:
        return rng.integers(-3, 4, size=(batch, n)).astype(np.float64) + 0.0
    return np.round(rng.normal(size=(batch, n)) * 8) / 8 + 0.0


# (batch, n, ties): n = 1; not a power of two; few mid rows and long rows (block-parallel
# PAV); many mid rows (thread per row); batch 65536.
SHAPES = [(1, 1, False), (3, 37, False), (16, 100, True), (5000, 70, False), (4, 300, True),
          (2, 1000, False), (1, 65536, False), (65536, 5, True)]


def shape_ok(sfx, batch, n):
    # Ranks of a 65536-row do not fit half precision; keep low precision to moderate n.
    return sfx in ("f32", "f64") or n <= 1000


def rows_to_check(batch):
    return range(batch) if batch <= 8 else range(0, batch, max(1, batch // 64))


def segments_from(sol):
    """Block ids of a reference solution: maximal runs of equal values."""
    return np.concatenate([[0], np.cumsum(sol[1:] != sol[:-1])]).astype(np.int32)


def block_mean(g, seg):
    out = np.empty_like(g)
    for s in np.unique(seg):
        m = seg == s
        out[m] = g[m].mean()
    return out


def softmax(x):
    e = np.exp(x - x.max())
    return e / e.sum()


@pytest.mark.parametrize("sfx", list(DTYPES))
@pytest.mark.parametrize("kl", [0, 1], ids=["l2", "kl"])
@pytest.mark.parametrize("increasing", [0, 1], ids=["dec", "inc"])
@pytest.mark.parametrize("batch,n,ties", SHAPES)
def test_isotonic_and_grads(api, sfx, kl, increasing, batch, n, ties):
    if not shape_ok(sfx, batch, n):
        pytest.skip("shape too large for %s" % sfx)
    y = inputs(batch, n, n, ties)
    w = inputs(batch, n, n + 1) if kl else np.zeros_like(y)
    g = inputs(batch, n, n + 2)
    y_d, w_d, g_d = dev(y, sfx), dev(w, sfx), dev(g, sfx)
    sol, seg = api.isotonic(y_d, w_d if kl else None, kl, increasing, sfx)
    sol, seg = host(sol), host(seg)
    gl2 = host(api.l2_grad(g_d, torch.as_tensor(seg).cuda(), sfx))
    gy, gw = (host(t) for t in api.kl_grad(g_d, y_d, w_d, torch.as_tensor(seg).cuda(), 0, sfx))
    yh, wh, gh = host(y_d), host(w_d), host(g_d)
    for r in rows_to_check(batch):
        yr, wr = yh[r], wh[r]
        ref = (reference.isotonic_kl(yr, wr, decreasing=not increasing) if kl
               else reference.isotonic_l2(yr, decreasing=not increasing))
        np.testing.assert_allclose(sol[r], ref, rtol=RTOL[sfx], atol=RTOL[sfx])
        if sfx == "f64" or (ties and not kl):  # else rounding may split near-equal blocks
            np.testing.assert_array_equal(seg[r], segments_from(ref))
        gr = gh[r]
        np.testing.assert_allclose(gl2[r], block_mean(gr, seg[r]), rtol=RTOL[sfx], atol=RTOL[sfx])
        ey, ew = np.empty(n), np.empty(n)
        for s in np.unique(seg[r]):
            m = seg[r] == s
            ey[m] = softmax(yr[m]) * gr[m].sum()
            ew[m] = -softmax(wr[m]) * gr[m].sum()
        np.testing.assert_allclose(gy[r], ey, rtol=RTOL[sfx], atol=RTOL[sfx])
        np.testing.assert_allclose(gw[r], ew, rtol=RTOL[sfx], atol=RTOL[sfx])


def test_isotonic_nan_row(api):
    y = np.array([[1.0, 2.0, 3.0], [1.0, np.nan, 0.0]])
    sol, seg = api.isotonic(dev(y, "f32"), None, 0, 0, "f32")
    sol, seg = host(sol), host(seg)
    np.testing.assert_allclose(sol[0], [2.0, 2.0, 2.0])
    assert np.all(np.isnan(sol[1])) and np.all(seg[1] == -1)


def soft_reference(x, eps, rank, kl, desc):
    fn = reference.soft_rank if rank else reference.soft_sort
    return fn(x, eps=eps, regularization="kl" if kl else "l2",
              direction="DESCENDING" if desc else "ASCENDING")


@pytest.mark.parametrize("sfx", list(DTYPES))
@pytest.mark.parametrize("rank", [1, 0], ids=["rank", "sort"])
@pytest.mark.parametrize("kl", [0, 1], ids=["l2", "kl"])
@pytest.mark.parametrize("desc", [0, 1], ids=["asc", "desc"])
@pytest.mark.parametrize("batch,n,ties", SHAPES)
def test_soft_forward(api, sfx, rank, kl, desc, batch, n, ties):
    if not shape_ok(sfx, batch, n):
        pytest.skip("shape too large for %s" % sfx)
    eps = 1.0 if n < 1000 else float(n) / 16
    x = inputs(batch, n, n + 3, ties)
    x_d = dev(x, sfx)
    out, aux = api.soft(x_d, eps, rank, kl, desc, sfx)
    out2, _ = api.soft(x_d, eps, rank, kl, desc, sfx, with_aux=False)
    out, aux, out2 = host(out), host(aux), host(out2)
    np.testing.assert_array_equal(out, out2)
    xh = host(x_d)
    for r in rows_to_check(batch):
        ref = soft_reference(xh[r], eps, rank, kl, desc)
        np.testing.assert_allclose(out[r], ref, rtol=RTOL[sfx], atol=RTOL[sfx] * n)
        # aux: the stable sort permutation (ties by index) in the low 31 bits.
        sign = (-1 if desc else 1) if rank else (1 if desc else -1)
        perm = np.argsort(-sign * xh[r], kind="stable")
        np.testing.assert_array_equal(aux[r] & 0x7FFFFFFF, perm)
        assert aux[r][0] < 0  # position 0 always starts a block


@pytest.mark.parametrize("rank", [1, 0], ids=["rank", "sort"])
@pytest.mark.parametrize("kl", [0, 1], ids=["l2", "kl"])
@pytest.mark.parametrize("desc", [0, 1], ids=["asc", "desc"])
@pytest.mark.parametrize("n", [1, 37, 300])
def test_soft_grad_finite_differences(api, rank, kl, desc, n):
    # float64: <g, J v> by central differences of the reference against <grad(g), v>, and the
    # sort's adjoint mode against J v itself.
    batch, eps, h = 3, 2.0, 1e-6
    rng = np.random.default_rng(n)
    x = rng.normal(size=(batch, n)) * 3
    g = rng.normal(size=(batch, n))
    v = rng.normal(size=(batch, n))
    x_d, g_d, v_d = dev(x, "f64"), dev(g, "f64"), dev(v, "f64")
    _, aux = api.soft(x_d, eps, rank, kl, desc, "f64")
    grad = host(api.soft_grad(g_d, x_d, eps, aux, rank, kl, desc, 0, "f64"))
    grad_re = host(api.soft_grad(g_d, x_d, eps, None, rank, kl, desc, 0, "f64"))
    np.testing.assert_array_equal(grad, grad_re)
    for r in range(batch):
        jv = (soft_reference(x[r] + h * v[r], eps, rank, kl, desc)
              - soft_reference(x[r] - h * v[r], eps, rank, kl, desc)) / (2 * h)
        np.testing.assert_allclose(np.dot(grad[r], v[r]), np.dot(g[r], jv), rtol=1e-5, atol=1e-6)
    if not rank:
        jvp = host(api.soft_grad(v_d, x_d, eps, aux, rank, kl, desc, 1, "f64"))
        for r in range(batch):
            jv = (soft_reference(x[r] + h * v[r], eps, rank, kl, desc)
                  - soft_reference(x[r] - h * v[r], eps, rank, kl, desc)) / (2 * h)
            np.testing.assert_allclose(jvp[r], jv, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("sfx", list(DTYPES))
@pytest.mark.parametrize("rank", [1, 0], ids=["rank", "sort"])
@pytest.mark.parametrize("kl", [0, 1], ids=["l2", "kl"])
@pytest.mark.parametrize("batch,n,ties", SHAPES)
def test_soft_grad_matches_float64(api, sfx, rank, kl, batch, n, ties):
    # Every dtype and shape: the gradient equals the float64 one (checked above by finite
    # differences) on the same (exactly representable) inputs, with and without aux.
    if not shape_ok(sfx, batch, n):
        pytest.skip("shape too large for %s" % sfx)
    eps = 1.0 if n < 1000 else float(n) / 16
    x = inputs(batch, n, n + 5, ties)
    g = inputs(batch, n, n + 6)
    def grad(s):
        x_d, g_d = dev(x, s), dev(g, s)
        _, aux = api.soft(x_d, eps, rank, kl, 0, s)
        res = host(api.soft_grad(g_d, x_d, eps, aux, rank, kl, 0, 0, s))
        recomputed = host(api.soft_grad(g_d, x_d, eps, None, rank, kl, 0, 0, s))
        np.testing.assert_array_equal(res, recomputed)
        return res

    got, want = grad(sfx), grad("f64")
    scale = np.abs(want).max() + 1e-30
    np.testing.assert_allclose(got / scale, want / scale, rtol=0, atol=RTOL[sfx] * 10)


def test_soft_nan_row_and_empty(api):
    x = np.array([[3.0, 1.0, 2.0], [1.0, np.inf, 0.0]])
    out, aux = api.soft(dev(x, "f32"), 1.0, 1, 0, 0, "f32")
    out, aux = host(out), host(aux)
    np.testing.assert_allclose(out[0], [3.0, 1.0, 2.0])
    assert np.all(np.isnan(out[1])) and np.all(aux[1] == -1)
    g = host(api.soft_grad(dev(np.ones((2, 3)), "f32"), dev(x, "f32"), 1.0,
                           torch.as_tensor(aux).cuda(), 1, 0, 0, 0, "f32"))
    assert np.all(np.isfinite(g[0])) and np.all(np.isnan(g[1]))
    # batch 0 / n 0 launch nothing and succeed.
    empty = torch.empty((0, 4), device="cuda")
    api.soft(empty, 1.0, 1, 0, 0, "f32")
