"""Benchmark of the isotonic family's CUDA launchers (soft_rank / soft_sort) on a GPU.

Median times over CUDA events of the raw launchers (through the TF-free harness, so no
TensorFlow dispatch is included) for forward and forward+backward, next to torch.sort
(values + indices) and torchsort's CUDA soft_rank / soft_sort (forward and forward+backward
with autograd), when torchsort is importable. Prints one line per shape with the ratios
(> 1 means tfsort is faster).

    python tests/gpu/bench_isotonic_gpu.py [--dtype float32] [--reps 50] [--max-elems 67108864]

Shapes: (batch, n) in {1, 16, 256, 65536} x {16, 128, 1024, 8192, 65536}, skipping shapes
with more than --max-elems elements. regularization "l2", strength 1.0, ascending.
"""

import argparse
import ctypes
import importlib.util
import os
import statistics
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
BATCHES = [1, 16, 256, 65536]
NS = [16, 128, 1024, 8192, 65536]
SFX = {"float16": "f16", "bfloat16": "bf16", "float32": "f32", "float64": "f64"}


def load_harness():
    path = os.path.join(HERE, "build.py")
    spec = importlib.util.spec_from_file_location("tfsort_gpu_build", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return ctypes.CDLL(module.build())


def median_ms(fn, reps):
    fn()  # warm-up (and CUB / torch lazy initialisation)
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dtype", default="float32", choices=list(SFX))
    ap.add_argument("--reps", type=int, default=50)
    ap.add_argument("--max-elems", type=int, default=1 << 26)
    args = ap.parse_args()
    if not torch.cuda.is_available():
        sys.exit("no GPU visible")
    lib = load_harness()
    sfx = SFX[args.dtype]
    dtype = getattr(torch, args.dtype)
    I64, I32, F64 = ctypes.c_int64, ctypes.c_int, ctypes.c_double
    VP, SZ = ctypes.c_void_p, ctypes.c_size_t
    fwd = getattr(lib, "tfsort_h_soft_sort_rank_" + sfx)
    fwd.restype, fwd.argtypes = I32, [VP, F64, VP, VP, I64, I64, I32, I32, I32, VP, SZ, VP]
    fwd_ws = getattr(lib, "tfsort_h_soft_sort_rank_workspace_" + sfx)
    fwd_ws.restype, fwd_ws.argtypes = SZ, [I64, I64]
    bwd = getattr(lib, "tfsort_h_soft_sort_rank_grad_" + sfx)
    bwd.restype = I32
    bwd.argtypes = [VP, VP, F64, VP, VP, I64, I64, I32, I32, I32, I32, VP, SZ, VP]
    bwd_ws = getattr(lib, "tfsort_h_soft_sort_rank_grad_workspace_" + sfx)
    bwd_ws.restype, bwd_ws.argtypes = SZ, [I64, I64, I32]
    try:
        import torchsort
    except ImportError:
        torchsort = None
    p = lambda t: ctypes.c_void_p(t.data_ptr())  # noqa: E731
    print("dtype %s, median of %d CUDA-event timings in ms; ratio = other / tfsort"
          % (args.dtype, args.reps))
    print("%-5s %6s %7s | %9s %9s | %9s | %9s %9s | %8s %8s" % (
        "op", "batch", "n", "tfs fwd", "tfs f+b", "torch.sort", "tsort fwd", "tsort f+b",
        "vs sort", "vs tsort"))
    for rank in (1, 0):
        name = "rank" if rank else "sort"
        for batch in BATCHES:
            for n in NS:
                if batch * n > args.max_elems:
                    continue
                x = torch.randn(batch, n, device="cuda", dtype=dtype)
                g = torch.randn(batch, n, device="cuda", dtype=dtype)
                out = torch.empty_like(x)
                gout = torch.empty_like(x)
                aux = torch.empty(batch, n, dtype=torch.int32, device="cuda")
                nb = max(fwd_ws(batch, n), bwd_ws(batch, n, 1), 1)
                ws = torch.empty(nb, dtype=torch.uint8, device="cuda")
                stream = ctypes.c_void_p(torch.cuda.current_stream().cuda_stream)

                def run_fwd():
                    err = fwd(p(x), 1.0, p(out), p(aux), batch, n, rank, 0, 0, p(ws), nb, stream)
                    assert err == 0

                def run_fb():
                    run_fwd()
                    assert bwd(p(g), p(x), 1.0, p(aux), p(gout), batch, n, rank, 0, 0, 0, p(ws),
                               nb, stream) == 0

                t_fwd = median_ms(run_fwd, args.reps)
                t_fb = median_ms(run_fb, args.reps)
                t_sort = median_ms(lambda: torch.sort(x, dim=-1), args.reps)
                t_ts = t_tsb = float("nan")
                if torchsort is not None and dtype in (torch.float32, torch.float64):
                    op = torchsort.soft_rank if rank else torchsort.soft_sort
                    t_ts = median_ms(lambda: op(x, regularization_strength=1.0), args.reps)
                    xr = x.clone().requires_grad_(True)

                    def ts_fb():
                        y = op(xr, regularization_strength=1.0)
                        y.backward(g)

                    t_tsb = median_ms(ts_fb, args.reps)
                print("%-5s %6d %7d | %9.4f %9.4f | %9.4f | %9.4f %9.4f | %8.2f %8.2f" % (
                    name, batch, n, t_fwd, t_fb, t_sort, t_ts, t_tsb, t_sort / t_fwd,
                    t_tsb / t_fb), flush=True)
                del x, g, out, gout, aux, ws


if __name__ == "__main__":
    main()
