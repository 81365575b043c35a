"""GPU benchmark of the sorting-network and sigmoid top-k launchers (nvcc-only harness).

    python tests/gpu/bench_networks_topk_gpu.py [--repeats 50] [--json out.json]

Prints, per shape (batch x n, float32), the median time over --repeats runs measured with
CUDA events of:
  * diff_sort forward + backward (SortingNetwork + SortingNetworkGrad launchers, bitonic,
    cauchy), against torch.sort (forward only, values + indices) and, when importable,
    diffsort's DiffSortNet on the GPU (forward + backward; it builds n x n matrices, so
    only for n <= 1024 and batch x n x n <= 2^28);
  * soft top-k forward + backward (SigmoidTopK + SigmoidTopKGrad launchers, k = n / 8,
    eps = 0.1), against torch.topk (forward only).
Ratios are other / ours (> 1 means tfsort is faster). Needs torch with CUDA and the harness
library (built by tests/gpu/build.py when missing).
"""

import argparse
import ctypes
import importlib.util
import json
import os
import subprocess
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
LIB = os.path.join(ROOT, "build", "gpu_harness", "libtfsort_gpu_harness.so")

SHAPES = [(1, 16), (256, 16), (65536, 16), (1, 128), (256, 128), (1, 1024), (256, 1024),
          (16, 8192), (1, 65536), (16, 65536)]


def _load(name):
    spec = importlib.util.spec_from_file_location(name, os.path.join(HERE, name + ".py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def median_ms(torch, fn, repeats, warmup=3):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = torch.cuda.Event(enable_timing=True)
        end = torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return float(np.median(times))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=50)
    ap.add_argument("--json", default=None, help="also write the results here")
    args = ap.parse_args()

    import torch

    if not torch.cuda.is_available():
        print("no CUDA GPU visible to torch; nothing to benchmark")
        return 0
    if not os.path.exists(LIB):
        subprocess.check_call([sys.executable, os.path.join(HERE, "build.py")])
    H = _load("nt_harness")
    lib = ctypes.CDLL(LIB)
    nets, topk = H.Networks(torch, lib), H.TopK(torch, lib)
    try:
        from diffsort import DiffSortNet
    except ImportError:
        DiffSortNet = None
    print(f"device: {torch.cuda.get_device_name()}; float32; median of {args.repeats} (ms)")
    rows = []
    header = (f"{'batch x n':>14} | {'diff_sort f+b':>13} {'torch.sort':>10} {'ratio':>6} "
              f"{'diffsort f+b':>12} {'ratio':>7} | {'soft_topk f+b':>13} {'torch.topk':>10} {'ratio':>6}")
    print(header)
    print("-" * len(header))
    for batch, n in SHAPES:
        x = torch.randn(batch, n, device="cuda")
        g = torch.randn(batch, n, device="cuda")
        sched = H.Schedule(torch, lib, "bitonic", n)
        out = torch.empty_like(x)
        acc = torch.float32
        saved = torch.empty(batch, sched.num, dtype=acc, device="cuda")
        ws_f = nets._workspace(H.FORWARD_SORT, batch, n, sched, acc)
        ws_b = nets._workspace(H.GRAD_SORT, batch, n, sched, acc)

        def ours_sort():
            nets.forward(x, sched, "cauchy", 10.0, out=out, saved=saved, ws=ws_f)
            nets.grad(g, saved, sched, "cauchy", 10.0, ws=ws_b)

        t_ours = median_ms(torch, ours_sort, args.repeats)
        t_tsort = median_ms(torch, lambda: torch.sort(x, dim=-1), args.repeats)
        t_diff = None
        if DiffSortNet is not None and n <= 1024 and batch * n * n <= 2**28 and n & (n - 1) == 0:
            net = DiffSortNet("bitonic", n, steepness=10.0, device="cuda", distribution="cauchy")
            xr = x.clone().requires_grad_(True)

            def diffsort_fb():
                sorted_x, _ = net(xr)
                sorted_x.backward(g)

            t_diff = median_ms(torch, diffsort_fb, max(5, args.repeats // 5))
        mask = torch.empty_like(x)
        k = max(1.0, n / 8.0) if n > 1 else 0.5

        def ours_topk():
            topk.forward(x, k, 0.1, out=mask)
            topk.grad(g, mask, 0.1)

        t_topk = median_ms(torch, ours_topk, args.repeats)
        t_ttopk = median_ms(torch, lambda: torch.topk(x, max(1, int(k)), dim=-1), args.repeats)
        diff_s = f"{t_diff:12.4f} {t_diff / t_ours:7.1f}" if t_diff else f"{'-':>12} {'-':>7}"
        print(f"{batch:>6} x {n:<6} | {t_ours:13.4f} {t_tsort:10.4f} {t_tsort / t_ours:6.2f} "
              f"{diff_s} | {t_topk:13.4f} {t_ttopk:10.4f} {t_ttopk / t_topk:6.2f}")
        rows.append(dict(batch=batch, n=n, diff_sort_fb_ms=t_ours, torch_sort_ms=t_tsort,
                         diffsort_fb_ms=t_diff, soft_topk_fb_ms=t_topk, torch_topk_ms=t_ttopk))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(device=torch.cuda.get_device_name(), results=rows), f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
