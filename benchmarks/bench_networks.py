"""diff_sort forward and forward+backward: tfsort vs diffsort vs differentiable-sorting.

Contenders, timed side by side in one process (medians, see timing.py):
* tfsort.diff_sort (bitonic, cauchy, steepness 10): the fused C++ op and its gradient op.
* diffsort.DiffSortNet("bitonic", n, steepness=10) (Petersen et al., PyTorch). It always
  builds the n x n relaxed permutation matrix with dense per-layer matmuls, so it is run
  only up to --diffsort-max-n (default 256; 1024 takes minutes per call on 2 cores).
* differentiable_sorting (johnhw, PyTorch): log-sum-exp bitonic sort with dense per-layer
  matrices, compared against tfsort's relaxation="softmax", steepness=1 (the same math).
Missing packages are skipped. Writes benchmarks/results/networks.json.

Usage: python benchmarks/bench_networks.py [--batch 16] [--sizes 16,128,1024,4096,65536]
"""

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(1, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import tensorflow as tf  # noqa: E402
from timing import fmt_us, median_us, ratio, write_json  # noqa: E402

import tfsort  # noqa: E402

ROOT = os.path.dirname(os.path.abspath(__file__))


def tfsort_fns(x, relaxation, steepness, perm=False):
    x = tf.constant(x)
    w = tf.constant(np.random.RandomState(1).randn(*x.shape).astype(np.float32))
    kw = dict(relaxation=relaxation, steepness=steepness, return_permutation=perm)

    def fwd():
        return tf.nest.map_structure(lambda t: t.numpy(), tfsort.diff_sort(x, **kw))

    def fwd_bwd():
        # With P, the loss uses P too (as diffsort's permutation losses do).
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = tfsort.diff_sort(x, **kw)
            loss = tf.reduce_sum(y[0] * w) + tf.reduce_sum(y[1][..., 0]) if perm else y
        if perm:
            return tape.gradient(loss, x).numpy()
        return tape.gradient(y, x, output_gradients=w).numpy()

    return fwd, fwd_bwd


def diffsort_fns(x, steepness):
    try:
        import diffsort
        import torch
    except ImportError:
        return None
    torch.set_num_threads(os.cpu_count() or 1)
    n = x.shape[-1]
    net = diffsort.DiffSortNet("bitonic", n, steepness=steepness, distribution="cauchy")
    xt = torch.tensor(x)
    w = torch.tensor(np.random.RandomState(1).randn(*x.shape).astype(np.float32))

    def fwd():
        with torch.no_grad():
            return net(xt)[0].numpy()

    def fwd_bwd():
        v = xt.clone().requires_grad_(True)
        y, p = net(v)
        (y * w).sum().backward()
        return v.grad.numpy()

    def fwd_bwd_perm():
        v = xt.clone().requires_grad_(True)
        y, p = net(v)
        ((y * w).sum() + p[:, 0, :].sum()).backward()
        return v.grad.numpy()

    return fwd, fwd_bwd, fwd_bwd_perm


def johnhw_fns(x):
    try:
        import torch
        from differentiable_sorting.torch import bitonic_matrices, diff_sort
        from differentiable_sorting.torch import softmax as torch_lse
    except ImportError:
        return None
    n = x.shape[-1]
    if n & (n - 1):
        return None
    mats = bitonic_matrices(n)
    xt = torch.tensor(x).T.contiguous()  # it sorts along the first axis
    w = torch.tensor(np.random.RandomState(1).randn(*x.shape).astype(np.float32)).T

    def fwd():
        with torch.no_grad():
            return diff_sort(mats, xt, softmax=torch_lse).numpy()

    def fwd_bwd():
        v = xt.clone().requires_grad_(True)
        (diff_sort(mats, v, softmax=torch_lse) * w).sum().backward()
        return v.grad.numpy()

    return fwd, fwd_bwd


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--sizes", default="16,128,1024,4096,65536")
    ap.add_argument("--diffsort-max-n", type=int, default=256)
    ap.add_argument("--johnhw-max-n", type=int, default=1024)
    ap.add_argument("--perm-max-n", type=int, default=1024)
    ap.add_argument("--min-time", type=float, default=0.3)
    ap.add_argument("--out", default=os.path.join(ROOT, "results", "networks.json"))
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    rows = []
    print(f"batch {args.batch}; medians; ratio = other / tfsort")
    print("diffsort always builds P; tfsort+P is diff_sort(..., return_permutation=True)")
    head = f"{'n':>6} {'mode':8} {'tfsort':>9} {'tfsort+P':>9} {'diffsort':>9} {'ratio':>8}"
    print(head + f" {'ratio(P)':>8} {'tfsort-lse':>10} {'johnhw':>9} {'ratio':>8}")
    for n in sizes:
        batch = args.batch if n <= 4096 else 1
        x = np.random.RandomState(n).randn(batch, n).astype(np.float32)
        mt = args.min_time
        ours = tfsort_fns(x, "cauchy", 10.0)
        ours_p = tfsort_fns(x, "cauchy", 10.0, perm=True) if n <= args.perm_max_n else None
        ours_lse = tfsort_fns(x, "softmax", 1.0)
        ds = diffsort_fns(x, 10.0) if n <= args.diffsort_max_n else None
        jh = johnhw_fns(x) if n <= args.johnhw_max_n else None
        for mode, k in (("forward", 0), ("fwd+bwd", 1)):
            t = median_us(ours[k], min_time=mt)
            t_p = median_us(ours_p[k], min_time=mt) if ours_p else None
            t_lse = median_us(ours_lse[k], min_time=mt)
            t_ds = median_us(ds[k], min_time=mt, min_reps=3) if ds else None
            # diffsort's fwd+bwd through P as well as the values, against tfsort+P.
            t_dsp = median_us(ds[2], min_time=mt, min_reps=3) if ds and k == 1 else t_ds
            t_jh = median_us(jh[k], min_time=mt, min_reps=3) if jh else None
            print(
                f"{n:>6} {mode:8} {fmt_us(t):>9} {fmt_us(t_p):>9} {fmt_us(t_ds):>9}"
                f" {ratio(t_ds, t):>8} {ratio(t_dsp, t_p):>8}"
                f" {fmt_us(t_lse):>10} {fmt_us(t_jh):>9} {ratio(t_jh, t_lse):>8}",
                flush=True,
            )
            rows.append(
                dict(n=n, batch=batch, mode=mode, tfsort_us=t, tfsort_perm_us=t_p,
                     diffsort_us=t_ds, diffsort_perm_loss_us=t_dsp,
                     tfsort_softmax_us=t_lse, johnhw_us=t_jh)
            )
    write_json(args.out, rows, bench="networks", network="bitonic")


if __name__ == "__main__":
    main()
