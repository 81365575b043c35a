"""ctypes glue for the network and top-k launchers in the nvcc-only harness library.

Used by test_networks_gpu.py, test_topk_gpu.py and bench_networks_topk_gpu.py. Device memory
comes from torch tensors; every launcher call gets torch's current CUDA stream.
"""

import ctypes
import importlib.util
import os

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
# "cuda" normally. TFSORT_NT_EMULATE=1 (development without a GPU; see
# tests/cuda_host/nt_emulate_plugin.py for the command) runs the tests on CPU tensors against
# the host emulation of the tfsort_h_* entry points (float32 and float64 only); it checks
# the harness and the references, not the kernels.
EMULATE = os.environ.get("TFSORT_NT_EMULATE") == "1"
DEVICE = "cpu" if EMULATE else "cuda"
RELAXATIONS = ("logistic", "logistic_phi", "gaussian", "reciprocal", "cauchy", "optimal", "softmax")
NETWORKS = ("bitonic", "odd_even")
FORWARD_SORT, FORWARD_RANK, GRAD_SORT, GRAD_RANK, GRAD_ADJOINT = range(5)

c_p, c_i64, c_int, c_dbl, c_u64 = (
    ctypes.c_void_p,
    ctypes.c_int64,
    ctypes.c_int,
    ctypes.c_double,
    ctypes.c_uint64,
)


def load_reference():
    path = os.path.join(HERE, "reference_networks_topk.py")
    spec = importlib.util.spec_from_file_location("reference_networks_topk", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def dtypes(torch):
    """The four dtypes every launcher is instantiated for."""
    return [torch.float16, torch.bfloat16, torch.float32, torch.float64]


def skip_emulated(torch, dtype):
    """The host emulation (TFSORT_NT_EMULATE=1) has float32 and float64 launchers only."""
    if EMULATE and dtype in (torch.float16, torch.bfloat16):
        import pytest  # noqa: PLC0415

        pytest.skip("the host emulation has float32 and float64 only")


def suffix(torch, dtype):
    return {
        torch.float16: "f16",
        torch.bfloat16: "bf16",
        torch.float32: "f32",
        torch.float64: "f64",
    }[dtype]


def ptr(t):
    return None if t is None else ctypes.c_void_p(t.data_ptr())


def stream(torch):
    if EMULATE:
        return None
    return ctypes.c_void_p(torch.cuda.current_stream().cuda_stream)


# lo, hi, start, host_start, host_tile_local, num_layers, num
_SCHED = [c_p, c_p, c_p, c_p, c_p, c_int, c_i64]


def _declare(lib):
    if getattr(lib, "_nt_declared", False):
        return
    lib.tfsort_h_network_num_comparators.restype = c_i64
    lib.tfsort_h_network_num_comparators.argtypes = [c_int, c_i64]
    lib.tfsort_h_network_num_layers.restype = c_int
    lib.tfsort_h_network_num_layers.argtypes = [c_int, c_i64]
    lib.tfsort_h_network_schedule.restype = c_int
    lib.tfsort_h_network_schedule.argtypes = [c_int, c_i64, c_p, c_p, c_p]
    lib.tfsort_h_network_tile_local.restype = c_int
    lib.tfsort_h_network_tile_local.argtypes = [c_int, c_i64, c_p]
    lib.tfsort_h_sorting_network_workspace.restype = c_u64
    lib.tfsort_h_sorting_network_workspace.argtypes = [c_int, c_i64, c_i64, c_i64, c_int]
    for sfx in ("f16", "bf16", "f32", "f64"):
        if not hasattr(lib, "tfsort_h_sorting_network_" + sfx):  # the host emulation
            continue
        f = getattr(lib, "tfsort_h_sorting_network_" + sfx)
        f.restype = c_int
        f.argtypes = [c_p, c_p, c_p, c_i64, c_i64] + _SCHED + [c_int, c_dbl, c_int, c_int, c_p, c_u64, c_p]
        f = getattr(lib, "tfsort_h_sorting_network_grad_" + sfx)
        f.restype = c_int
        f.argtypes = [c_p, c_p, c_p, c_p, c_i64, c_i64] + _SCHED + [c_int, c_dbl, c_int, c_int, c_p, c_u64, c_p]
        f = getattr(lib, "tfsort_h_sorting_network_grad_adjoint_" + sfx)
        f.restype = c_int
        f.argtypes = [c_p] * 7 + [c_i64, c_i64] + _SCHED + [c_int, c_dbl, c_int, c_p, c_u64, c_p]
        f = getattr(lib, "tfsort_h_sigmoid_topk_" + sfx)
        f.restype = c_int
        f.argtypes = [c_p, c_p, c_dbl, c_dbl, c_p, c_i64, c_i64, c_p]
        f = getattr(lib, "tfsort_h_sigmoid_topk_grad_" + sfx)
        f.restype = c_int
        f.argtypes = [c_p, c_p, c_dbl, c_p, c_i64, c_i64, c_p]
    lib._nt_declared = True


class Schedule:
    """A network's comparator schedule on the device (and layer starts on the host)."""

    def __init__(self, torch, lib, network, n):
        _declare(lib)
        net = NETWORKS.index(network)
        self.num = lib.tfsort_h_network_num_comparators(net, n)
        self.num_layers = lib.tfsort_h_network_num_layers(net, n)
        lo = np.zeros(max(self.num, 1), np.int32)
        hi = np.zeros(max(self.num, 1), np.int32)
        self.host_start = np.zeros(self.num_layers + 1, np.int64)
        lib.tfsort_h_network_schedule(
            net, n, lo.ctypes.data_as(c_p), hi.ctypes.data_as(c_p), self.host_start.ctypes.data_as(c_p)
        )
        self.lo_np, self.hi_np = lo[: self.num], hi[: self.num]
        # 1 for the tile-local layers, which long rows run in shared memory.
        self.tile_local = np.zeros(max(self.num_layers, 1), np.uint8)
        lib.tfsort_h_network_tile_local(net, n, self.tile_local.ctypes.data_as(c_p))
        self.lo = torch.from_numpy(lo).to(DEVICE)
        self.hi = torch.from_numpy(hi).to(DEVICE)
        self.start = torch.from_numpy(self.host_start.copy()).to(DEVICE)

    def args(self):
        return [
            ptr(self.lo),
            ptr(self.hi),
            ptr(self.start),
            self.host_start.ctypes.data_as(c_p),
            None if self.tile_local is None else self.tile_local.ctypes.data_as(c_p),
            self.num_layers,
            self.num,
        ]

    def layers(self):
        s = self.host_start
        return [(self.lo_np[s[i] : s[i + 1]], self.hi_np[s[i] : s[i + 1]]) for i in range(self.num_layers)]


class Networks:
    """Calls the sorting-network launchers on torch tensors of shape [batch, n]."""

    def __init__(self, torch, lib):
        _declare(lib)
        self.torch, self.lib = torch, lib

    def _acc(self, dtype):
        return self.torch.float64 if dtype == self.torch.float64 else self.torch.float32

    def _workspace(self, mode, batch, n, sched, acc):
        nbytes = self.lib.tfsort_h_sorting_network_workspace(mode, batch, n, sched.num, acc.itemsize)
        return self.torch.empty(max(nbytes, 1), dtype=self.torch.uint8, device=DEVICE), nbytes

    def forward(self, x, sched, rel, s, desc=False, ranks=False, out=None, saved=None, ws=None):
        torch = self.torch
        batch, n = x.shape
        acc = self._acc(x.dtype)
        out = torch.empty_like(x) if out is None else out
        if saved is None:
            saved = torch.empty(batch, sched.num * (2 if ranks else 1), dtype=acc, device=DEVICE)
        mode = FORWARD_RANK if ranks else FORWARD_SORT
        ws, nbytes = ws or self._workspace(mode, batch, n, sched, acc)
        fn = getattr(self.lib, "tfsort_h_sorting_network_" + suffix(torch, x.dtype))
        rc = fn(ptr(x), ptr(out), ptr(saved), batch, n, *sched.args(), RELAXATIONS.index(rel), s,
                int(desc), int(ranks), ptr(ws), nbytes, stream(torch))
        assert rc == 0, rc
        return out, saved

    def grad(self, g, saved, sched, rel, s, desc=False, ranks=False, grad_saved=None, ws=None):
        torch = self.torch
        batch, n = g.shape
        acc = self._acc(g.dtype)
        out = torch.empty_like(g)
        mode = GRAD_RANK if ranks else GRAD_SORT
        ws, nbytes = ws or self._workspace(mode, batch, n, sched, acc)
        fn = getattr(self.lib, "tfsort_h_sorting_network_grad_" + suffix(torch, g.dtype))
        rc = fn(ptr(g), ptr(saved), ptr(grad_saved), ptr(out), batch, n, *sched.args(),
                RELAXATIONS.index(rel), s, int(desc), int(ranks), ptr(ws), nbytes, stream(torch))
        assert rc == 0, rc
        return out

    def grad_adjoint(self, t, g, saved, sched, rel, s, desc=False, grad_saved=None):
        torch = self.torch
        batch, n = g.shape
        acc = self._acc(g.dtype)
        jvp = torch.empty_like(g)
        ds = torch.empty(batch, sched.num, dtype=acc, device=DEVICE)
        dgs = torch.empty(batch, sched.num, dtype=acc, device=DEVICE)
        ws, nbytes = self._workspace(GRAD_ADJOINT, batch, n, sched, acc)
        fn = getattr(self.lib, "tfsort_h_sorting_network_grad_adjoint_" + suffix(torch, g.dtype))
        rc = fn(ptr(t), ptr(g), ptr(saved), ptr(grad_saved), ptr(jvp), ptr(ds), ptr(dgs), batch, n,
                *sched.args(), RELAXATIONS.index(rel), s, int(desc), ptr(ws), nbytes, stream(torch))
        assert rc == 0, rc
        return jvp, ds, dgs


class TopK:
    """Calls the sigmoid top-k launchers on torch tensors of shape [batch, n]."""

    def __init__(self, torch, lib):
        _declare(lib)
        self.torch, self.lib = torch, lib

    def forward(self, x, k, eps, out=None):
        """k: a Python number, or a float64 CUDA tensor with one value per row."""
        torch = self.torch
        batch, n = x.shape
        out = torch.empty_like(x) if out is None else out
        k_dev, k_scalar = (k, 0.0) if isinstance(k, torch.Tensor) else (None, float(k))
        fn = getattr(self.lib, "tfsort_h_sigmoid_topk_" + suffix(torch, x.dtype))
        rc = fn(ptr(x), ptr(k_dev), k_scalar, eps, ptr(out), batch, n, stream(torch))
        assert rc == 0, rc
        return out

    def grad(self, g, mask, eps, out=None):
        torch = self.torch
        batch, n = g.shape
        out = torch.empty_like(g) if out is None else out
        fn = getattr(self.lib, "tfsort_h_sigmoid_topk_grad_" + suffix(torch, g.dtype))
        rc = fn(ptr(g), ptr(mask), eps, ptr(out), batch, n, stream(torch))
        assert rc == 0, rc
        return out


class CustomLayer(Schedule):
    """A one-layer schedule of caller-given comparators (what the CompareSwap ops launch):
    lo[k] receives the relaxed minimum, hi[k] the maximum; positions distinct."""

    def __init__(self, torch, lo, hi):
        lo = np.ascontiguousarray(lo, np.int32)
        hi = np.ascontiguousarray(hi, np.int32)
        self.num = len(lo)
        self.num_layers = 1 if self.num else 0
        self.host_start = np.array([0, self.num][: self.num_layers + 1], np.int64)
        self.lo_np, self.hi_np = lo, hi
        self.tile_local = None  # as the CompareSwap kernels: every layer by LayerKernel
        pad = np.zeros(1, np.int32)
        self.lo = torch.from_numpy(lo if self.num else pad).to(DEVICE)
        self.hi = torch.from_numpy(hi if self.num else pad).to(DEVICE)
        self.start = torch.from_numpy(self.host_start.copy()).to(DEVICE)
