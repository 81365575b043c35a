"""soft_topk forward+backward: tfsort's fused C++ op against the same algorithm in plain TF.

The baseline ("plain TF") is the sigmoid threshold solved by 64 bisection steps in a
tf.while_loop of ordinary TF ops (float32, like the input), with the gradient taken by
tf.GradientTape autodiff of the converged threshold through the implicit-function
identity t(x) = t* - (sum sigmoid((x + t*) / eps) - k) / stop_gradient(sum v), which gives
exactly the closed-form Jacobian diag(v) - v v^T / sum(v). The baseline runs inside
tf.function (its best case: one graph instead of ~300 eager ops); tfsort runs both eagerly
and inside tf.function. Every contender is timed as forward + backward under a
GradientTape with a random cotangent. Medians, side by side in one process.

Usage: python benchmarks/bench_topk.py [--quick]
Writes benchmarks/results/topk.json.
"""

import argparse
import os
import sys

import numpy as np
import tensorflow as tf

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import tfsort  # noqa: E402
from timing import fmt_us, median_us, ratio, write_json  # noqa: E402

SHAPES = [(1, 1024), (16, 1024), (256, 128), (256, 1024), (32, 8192)]
QUICK_SHAPES = [(16, 1024), (256, 1024)]
K = 10
EPS = 1.0
STEPS = 64


def plain_tf_sigmoid_topk(x, k, eps, steps=STEPS):
    """Bisection on the threshold in plain TF ops; closed-form gradient via autodiff."""
    xs = tf.stop_gradient(x)
    n = tf.cast(tf.shape(x)[-1], x.dtype)
    base = eps * (tf.math.log(k) - tf.math.log(n - k))
    lo = base - tf.reduce_max(xs, axis=-1, keepdims=True)
    hi = base - tf.reduce_min(xs, axis=-1, keepdims=True)

    def body(i, lo, hi):
        mid = 0.5 * (lo + hi)
        below = tf.reduce_sum(tf.sigmoid((xs + mid) / eps), -1, keepdims=True) < k
        return i + 1, tf.where(below, mid, lo), tf.where(below, hi, mid)

    _, lo, hi = tf.while_loop(lambda i, lo, hi: i < steps, body, (0, lo, hi))
    t = tf.stop_gradient(0.5 * (lo + hi))
    p0 = tf.sigmoid((x + t) / eps)
    sv = tf.stop_gradient(tf.reduce_sum(p0 * (1 - p0), -1, keepdims=True) / eps)
    s0 = tf.reduce_sum(p0, -1, keepdims=True)
    t_x = t - tf.math.divide_no_nan(s0 - tf.stop_gradient(s0), sv)
    return tf.sigmoid((x + t_x) / eps)


def fwd_bwd(fn):
    def run(x, g):
        with tf.GradientTape() as tape:
            tape.watch(x)
            m = fn(x)
        return tape.gradient(m, x, output_gradients=g)

    return run


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results",
                                                      "topk.json"))
    args = parser.parse_args()
    shapes = QUICK_SHAPES if args.quick else SHAPES
    rng = np.random.default_rng(0)
    rows = []
    hdr = f"{'shape':>12} {'method':>8} {'tfsort eager':>13} {'tfsort fn':>10} " \
          f"{'plain TF fn':>12} {'speedup':>8}"
    print(hdr)
    for b, n in shapes:
        x = tf.constant(rng.normal(size=(b, n)).astype(np.float32))
        g = tf.constant(rng.normal(size=(b, n)).astype(np.float32))
        k = float(min(K, n // 2))
        ours = fwd_bwd(lambda v: tfsort.soft_topk(v, k, EPS))
        ours_fn = tf.function(ours)
        base_fn = tf.function(fwd_bwd(lambda v: plain_tf_sigmoid_topk(v, k, EPS)))
        # Same numbers first.
        err = float(tf.reduce_max(tf.abs(ours(x, g) - base_fn(x, g))))
        t_eager = median_us(lambda: ours(x, g).numpy())
        t_fn = median_us(lambda: ours_fn(x, g).numpy())
        t_base = median_us(lambda: base_fn(x, g).numpy())
        best = min(t_eager, t_fn)
        print(f"{str((b, n)):>12} {'sigmoid':>8} {fmt_us(t_eager):>13} {fmt_us(t_fn):>10} "
              f"{fmt_us(t_base):>12} {ratio(t_base, best):>8}  (max |grad diff| {err:.1e})")
        rows.append(dict(batch=b, n=n, k=k, eps=EPS, method="sigmoid", tfsort_eager_us=t_eager,
                         tfsort_function_us=t_fn, plain_tf_function_us=t_base,
                         speedup=t_base / best, max_abs_grad_diff=err))
        sparse = fwd_bwd(lambda v: tfsort.soft_topk(v, int(k), EPS, method="sparse"))
        t_sparse = median_us(lambda: sparse(x, g).numpy())
        print(f"{str((b, n)):>12} {'sparse':>8} {fmt_us(t_sparse):>13}")
        rows.append(dict(batch=b, n=n, k=k, eps=EPS, method="sparse", tfsort_eager_us=t_sparse))
    write_json(args.out, rows, baseline="plain TF ops in tf.function: 64-step bisection, "
               "closed-form gradient by autodiff of the converged threshold",
               note="medians; 2-core machine shared with other jobs")


if __name__ == "__main__":
    main()
