"""Side-by-side CPU benchmark of tfsort's isotonic family against its peers (float32).

Contenders, timed in one process and one run (medians, benchmarks/timing.py):

* ``tfsort.soft_rank`` / ``tfsort.soft_sort`` (L2, eps = 1) against torchsort's CPU kernel
  (``torchsort.soft_rank`` / ``torchsort.soft_sort``, same defaults) when torchsort is
  importable, and against ``tf.sort`` alone, the floor reference.
* ``tfsort.isotonic_regression`` (L2, decreasing) against ``tf.nn.isotonic_regression``.

"fwd" is the forward call. "fwd+bwd" is the forward plus the gradient of
``sum(out * w)`` for a fixed random cotangent ``w``, for every contender: a
``tf.GradientTape`` for TF, ``(out * w).sum().backward()`` for torch. Eager mode is the
primary comparison (it is how torchsort is used); tfsort's fwd+bwd wrapped in one
``tf.function`` is an extra column. The script also measures TF's eager floor (fwd+bwd of
``tf.negative`` on a 1x16 tensor, the cheapest op with a registered gradient), so small
shapes can be compared with what any TF op costs. The eager fwd+bwd and VJP timings of a
row's contenders and of that floor are interleaved call by call
(``timing.interleaved_medians_us``): on a shared machine whose speed drifts for minutes, a
row and the floor it is judged against then see the same periods.

Targets (design.md section 7): soft_rank / soft_sort fwd+bwd faster than torchsort at every
shape and within 2x of tf.sort alone (or within 1.25x of TF's eager floor where torchsort is
below it); isotonic_regression fwd+bwd at least 5x faster than tf.nn.isotonic_regression
(or, where a fifth of tf.nn's time is below TF's eager floor, within 1.25x of the floor).

The peers are benchmark-only dependencies; see benchmarks/README.md for how to install them.

Usage:
    python benchmarks/bench_isotonic.py                # every shape
    python benchmarks/bench_isotonic.py --quick        # a small subset
    python benchmarks/bench_isotonic.py --shapes 1x16,256x8192 --out /tmp/iso.json
    python benchmarks/bench_isotonic.py --rounds 3     # min of 3 medians per cell (busy box)
    python benchmarks/bench_isotonic.py --profile      # where soft_rank's time goes at 1x16
"""

import argparse
import itertools
import os
import sys
import time

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(1, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import tfsort  # noqa: E402
from timing import fmt_us, interleaved_medians_us, median_us, ratio, write_json  # noqa: E402

try:
    import torch
    import torchsort
except ImportError as e:  # benchmark-only peer: compare with what is there
    torch = torchsort = None
    _TORCH_MISSING = str(e)

BATCHES = (1, 16, 256)
LENGTHS = (16, 128, 1024, 8192)
ALL_SHAPES = [(b, n) for b in BATCHES for n in LENGTHS]
QUICK_SHAPES = [(1, 16), (16, 128), (1, 1024), (256, 1024)]
DEFAULT_OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "isotonic.json")


def parse_shapes(text):
    shapes = []
    for item in text.split(","):
        b, n = item.lower().strip().split("x")
        shapes.append((int(b), int(n)))
    return shapes


# ---------------------------------------------------------------------------------------
# Timed callables. Each factory returns a zero-argument function doing one full call.


def _feeder(*inputs):
    """A zero-argument function returning the next input tuple. Each argument is one tensor
    (the same input every call) or a list of them (cycled through, see input_pool)."""
    if not isinstance(inputs[0], list):
        return lambda: inputs
    return itertools.cycle(list(zip(*inputs))).__next__


def tf_fwd(fn, x):
    nxt = _feeder(x)
    return lambda: fn(nxt()[0])


def tf_fwd_bwd(fn, x, w):
    nxt = _feeder(x, w)

    def run():
        x, w = nxt()
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_sum(fn(x) * w)
        return tape.gradient(loss, x)

    return run


def tf_function_fwd_bwd(fn, x, w):
    @tf.function(reduce_retracing=True)
    def step(x, w):
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_sum(fn(x) * w)
        return tape.gradient(loss, x)

    nxt = _feeder(x, w)
    return lambda: step(*nxt())


def tf_vjp(fn, x, w):
    """The same gradient as tf_fwd_bwd, with w passed as the output cotangent: no mul/sum."""
    nxt = _feeder(x, w)

    def run():
        x, w = nxt()
        with tf.GradientTape() as tape:
            tape.watch(x)
            out = fn(x)
        return tape.gradient(out, x, output_gradients=w)

    return run


def torch_vjp(fn, x, w):
    nxt = _feeder(x, w)

    def run():
        x, w = nxt()
        x.grad = None
        fn(x).backward(w)
        return x.grad

    return run


def torch_fwd(fn, x):
    nxt = _feeder(x)

    def run():
        with torch.no_grad():
            return fn(nxt()[0])

    return run


def torch_fwd_bwd(fn, x, w):
    nxt = _feeder(x, w)

    def run():
        x, w = nxt()
        x.grad = None
        (fn(x) * w).sum().backward()
        return x.grad

    return run


# Distinct inputs per timed cell. Timing one input over and over lets the CPU's branch
# predictor learn that row's sort and PAV decisions: measured here, std::sort of a repeated
# 16x128 input ran 2x faster than of fresh ones, which flatters comparison-sort code (ours
# and the peers') at small shapes and hides what training on new batches costs. Every
# contender cycles through the same pool; --fixed-input restores the single input.
POOL_ELEMENTS = 1 << 22
FIXED_INPUT = False


def input_pool(make, shape):
    """NumPy arrays make(shape) for the pool of one cell: up to 256 of them, fewer for big
    shapes (at most POOL_ELEMENTS elements in all, and at least 4 inputs)."""
    count = 1 if FIXED_INPUT else max(4, min(256, POOL_ELEMENTS // max(1, int(np.prod(shape)))))
    return [make(shape) for _ in range(count)]


def time_or_none(make, *args, min_time):
    try:
        return median_us(make(*args), min_time=min_time)
    except Exception as e:  # noqa: BLE001  (report and carry on with the other contenders)
        print(f"    failed: {type(e).__name__}: {e}", file=sys.stderr)
        return None


# ---------------------------------------------------------------------------------------


def tf_sort_asc(x):
    return tf.sort(x, axis=-1)


def tf_nn_isotonic(y):
    return tf.nn.isotonic_regression(y, decreasing=True, axis=-1)[0]


def tfsort_isotonic(y):
    return tfsort.isotonic_regression(y, decreasing=True, axis=-1)


SOFT_OPS = {
    "soft_rank": (tfsort.soft_rank, "soft_rank"),
    "soft_sort": (tfsort.soft_sort, "soft_sort"),
}


def untied(x):
    """Mask of the entries whose value occurs once in its row. Between tied inputs the sort
    order (hence which one gets which gradient) is arbitrary, and libraries differ."""
    mask = np.ones(x.shape, bool)
    for i, row in enumerate(x.reshape(-1, x.shape[-1])):
        values, inverse, counts = np.unique(row, return_inverse=True, return_counts=True)
        mask.reshape(-1, x.shape[-1])[i] = counts[inverse] == 1
    return mask


def check_close(name, a, b, shape, atol, mask=None):
    """Prints a warning when two contenders disagree (they should compute the same thing)."""
    diff = np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))
    if mask is not None:
        diff = np.where(mask, diff, 0.0)
    err = float(np.max(diff)) if diff.size else 0.0
    if not err <= atol:
        print(f"  WARNING {name} {shape}: max |difference| = {err:.3g} > {atol}")
    return err


def time_tf_contender(row, prefix, fn, x, w, min_time, fwd_bwd=True):
    """Eager forward, eager fwd+bwd (sum(out*w); unless the caller times it interleaved)
    and tf.function fwd+bwd of one TF fn."""
    row[f"{prefix}_fwd_us"] = time_or_none(tf_fwd, fn, x, min_time=min_time)
    if fwd_bwd:
        row[f"{prefix}_fwd_bwd_us"] = time_or_none(tf_fwd_bwd, fn, x, w, min_time=min_time)
    row[f"{prefix}_tf_function_fwd_bwd_us"] = time_or_none(
        tf_function_fwd_bwd, fn, x, w, min_time=min_time
    )


def floor_inputs():
    """The 1x16 input and cotangent of TF's eager floor (tf.negative)."""
    x = tf.constant(np.random.default_rng(1).standard_normal((1, 16)).astype(np.float32))
    w = tf.constant(np.random.default_rng(2).standard_normal((1, 16)).astype(np.float32))
    return x, w


def time_paired(row, contenders, min_time):
    """Times the eager fwd+bwd (sum(out*w)) and VJP forms of each contender interleaved call
    by call with TF's floor in the same form (timing.interleaved_medians_us), so a cell and
    the floor it is judged against see the same machine. contenders: {prefix: (sum-form
    callable, VJP-form callable)}, None for a missing peer. Writes {prefix}_fwd_bwd_us,
    {prefix}_vjp_us, floor_fwd_bwd_us and floor_vjp_us."""
    fx, fw = floor_inputs()
    floors = {"fwd_bwd": tf_fwd_bwd(tf.negative, fx, fw), "vjp": tf_vjp(tf.negative, fx, fw)}
    for form, k in (("fwd_bwd", 0), ("vjp", 1)):
        names = [p for p, fns in contenders.items() if fns is not None]
        fns = [contenders[p][k] for p in names] + [floors[form]]
        try:
            medians = interleaved_medians_us(fns, min_time=min_time)
        except Exception as e:  # noqa: BLE001  (time them one by one; a failure shows as None)
            print(f"    interleaved timing failed ({type(e).__name__}: {e}); timing separately",
                  file=sys.stderr)
            medians = [time_or_none(lambda f=f: f, min_time=min_time) for f in fns]
        for p in contenders:
            row[f"{p}_{form}_us"] = medians[names.index(p)] if p in names else None
        row[f"floor_{form}_us"] = medians[-1]


def bench_soft(op_name, shape, min_time, rng):
    tf_fn, torch_name = SOFT_OPS[op_name]
    b, n = shape
    xs_np = input_pool(lambda s: rng.standard_normal(s).astype(np.float32), shape)
    ws_np = input_pool(lambda s: rng.standard_normal(s).astype(np.float32), shape)
    x_np, w_np = xs_np[0], ws_np[0]
    x, w = tf.constant(x_np), tf.constant(w_np)  # the first input, for the checks below
    xs, ws = [tf.constant(v) for v in xs_np], [tf.constant(v) for v in ws_np]
    row = {"op": op_name, "batch": b, "n": n, "inputs": len(xs)}

    time_tf_contender(row, "tfsort", tf_fn, xs, ws, min_time, fwd_bwd=False)
    # tf.sort's registered gradient (TopKV2's) is ~40 small eager ops; inside a tf.function
    # it is one graph, the fairer floor where the kernel, not dispatch, matters.
    time_tf_contender(row, "tf_sort", tf_sort_asc, xs, ws, min_time)

    contenders = {"tfsort": (tf_fwd_bwd(tf_fn, xs, ws), tf_vjp(tf_fn, xs, ws)), "torchsort": None}
    row["torchsort_fwd_us"] = None
    if torchsort is not None:
        t_fn = getattr(torchsort, torch_name)
        xts = [torch.from_numpy(v.copy()) for v in xs_np]
        wts = [torch.from_numpy(v.copy()) for v in ws_np]
        xgs = [v.clone().requires_grad_(True) for v in xts]
        xt, wt, xg = xts[0], wts[0], xgs[0]
        row["torchsort_fwd_us"] = time_or_none(torch_fwd, t_fn, xts, min_time=min_time)
        contenders["torchsort"] = (torch_fwd_bwd(t_fn, xgs, wts), torch_vjp(t_fn, xgs, wts))
    time_paired(row, contenders, min_time)
    if torchsort is not None:
        # Same math, same numbers (values and gradients), or the comparison means nothing.
        row["max_abs_diff_vs_torchsort"] = check_close(
            op_name, tf_fn(x).numpy(), t_fn(xt).numpy(), shape, atol=1e-3 * max(1, n / 128)
        )
        g_tf = tf_fwd_bwd(tf_fn, x, w)().numpy()
        g_t = torch_fwd_bwd(t_fn, xg, wt)().numpy()
        mask = untied(x_np)
        row["tied_inputs"] = int(mask.size - mask.sum())
        row["max_abs_grad_diff_vs_torchsort"] = check_close(
            op_name + " gradient (untied inputs)", g_tf, g_t, shape, atol=1e-3, mask=mask
        )
    return row


def bench_isotonic(shape, min_time, rng):
    b, n = shape
    # A noisy decreasing trend, so PAV pools blocks of many sizes (pure noise pools into a
    # few big blocks, a sorted row into none).
    trend = np.linspace(1.0, -1.0, n, dtype=np.float32) * np.sqrt(n) / 4
    ys = [tf.constant(v) for v in input_pool(
        lambda s: (trend + rng.standard_normal(s)).astype(np.float32), shape)]
    ws = [tf.constant(v) for v in input_pool(
        lambda s: rng.standard_normal(s).astype(np.float32), shape)]
    y, w = ys[0], ws[0]
    row = {"op": "isotonic_regression", "batch": b, "n": n, "inputs": len(ys)}
    time_tf_contender(row, "tfsort", tfsort_isotonic, ys, ws, min_time, fwd_bwd=False)
    time_tf_contender(row, "tf_nn", tf_nn_isotonic, ys, ws, min_time, fwd_bwd=False)
    # Both forms: the VJP form leaves out the shared mul/sum loss ops (~300 us of each
    # eager fwd+bwd at batch 1).
    time_paired(row, {
        "tfsort": (tf_fwd_bwd(tfsort_isotonic, ys, ws), tf_vjp(tfsort_isotonic, ys, ws)),
        "tf_nn": (tf_fwd_bwd(tf_nn_isotonic, ys, ws), tf_vjp(tf_nn_isotonic, ys, ws)),
    }, min_time)
    row["max_abs_diff_vs_tf_nn"] = check_close(
        "isotonic_regression", tfsort_isotonic(y).numpy(), tf_nn_isotonic(y).numpy(), shape, 1e-4
    )
    row["max_abs_grad_diff_vs_tf_nn"] = check_close(
        "isotonic_regression gradient",
        tf_fwd_bwd(tfsort_isotonic, y, w)().numpy(),
        tf_fwd_bwd(tf_nn_isotonic, y, w)().numpy(),
        shape,
        1e-4,
    )
    return row


def merge_min(a, b):
    """Per timing cell, the smaller median of two rounds (None-aware)."""
    out = dict(a)
    for k, v in b.items():
        if k.endswith("_us") and v is not None:
            out[k] = v if a.get(k) is None else min(a[k], v)
    return out


def eager_floor(min_time):
    """TF's eager floor: fwd+bwd of the cheapest op with a registered gradient (1x16)."""
    x = tf.constant(np.random.default_rng(1).standard_normal((1, 16)).astype(np.float32))
    w = tf.constant(np.random.default_rng(2).standard_normal((1, 16)).astype(np.float32))

    return {
        # The same loss construction as every fwd+bwd column: negative, mul, sum + grads.
        "floor_negative_fwd_bwd_us": median_us(tf_fwd_bwd(tf.negative, x, w), min_time=min_time),
        "floor_negative_bare_fwd_bwd_us": median_us(tf_vjp(tf.negative, x, w), min_time=min_time),
        "floor_negative_fwd_us": median_us(tf_fwd(tf.negative, x), min_time=min_time),
        # Context, not a floor: TF's own op of the same shape as ours (a second, non-float
        # input, attrs, a gradient that is one more op of the same kind).
        "tf_cumsum_bare_fwd_bwd_us": median_us(
            tf_vjp(lambda v: tf.math.cumsum(v, axis=-1), x, w), min_time=min_time
        ),
    }


# ---------------------------------------------------------------------------------------
# Reports


def soft_table(rows, op_name, floor_us):
    lines = [
        f"\n### {op_name} (L2, eps=1, float32, eager unless noted)\n",
        "| shape | tfsort fwd | torchsort fwd | tfsort fwd+bwd | torchsort fwd+bwd "
        "| torchsort/tfsort | TF floor | tfsort/floor | tf.sort fwd+bwd | tfsort/tf.sort "
        "| tfsort fwd+bwd tf.function | tf.sort fwd+bwd tf.function "
        "| tfsort/tf.sort tf.function | target |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if r["op"] != op_name:
            continue
        lines.append(
            f"| {r['batch']}x{r['n']} | {fmt_us(r['tfsort_fwd_us'])} "
            f"| {fmt_us(r['torchsort_fwd_us'])} | {fmt_us(r['tfsort_fwd_bwd_us'])} "
            f"| {fmt_us(r['torchsort_fwd_bwd_us'])} "
            f"| {ratio(r['torchsort_fwd_bwd_us'], r['tfsort_fwd_bwd_us'])} "
            f"| {fmt_us(r.get('floor_fwd_bwd_us') or floor_us)} "
            f"| {ratio(r['tfsort_fwd_bwd_us'], r.get('floor_fwd_bwd_us') or floor_us)} "
            f"| {fmt_us(r['tf_sort_fwd_bwd_us'])} "
            f"| {ratio(r['tfsort_fwd_bwd_us'], r['tf_sort_fwd_bwd_us'])} "
            f"| {fmt_us(r['tfsort_tf_function_fwd_bwd_us'])} "
            f"| {fmt_us(r['tf_sort_tf_function_fwd_bwd_us'])} "
            f"| {ratio(r['tfsort_tf_function_fwd_bwd_us'], r['tf_sort_tf_function_fwd_bwd_us'])} "
            f"| {soft_verdict(r, floor_us)} |"
        )
    return "\n".join(lines)


def vjp_table(rows, ops, floor_bare_us):
    lines = [
        "\n### The same gradients as a direct VJP (eager; TF: tape.gradient(out, x, "
        "output_gradients=w), torch: out.backward(w)): no mul/sum ops, so TF's loss overhead "
        "drops out. TF floor: tf.negative 1x16 in this form, timed interleaved with the row\n",
        "| op | shape | tfsort vjp | torchsort vjp | torchsort/tfsort | TF floor | tfsort/floor "
        "| target |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if r["op"] not in ops or "tfsort_vjp_us" not in r:
            continue
        lines.append(
            f"| {r['op']} | {r['batch']}x{r['n']} | {fmt_us(r['tfsort_vjp_us'])} "
            f"| {fmt_us(r['torchsort_vjp_us'])} "
            f"| {ratio(r['torchsort_vjp_us'], r['tfsort_vjp_us'])} "
            f"| {fmt_us(r.get('floor_vjp_us') or floor_bare_us)} "
            f"| {ratio(r['tfsort_vjp_us'], r.get('floor_vjp_us') or floor_bare_us)} "
            f"| {vjp_verdict(r, floor_bare_us)} |"
        )
    return "\n".join(lines)


def vjp_verdict(r, floor_us):
    """design.md section 7 in the VJP form: beat torchsort, or stay within 1.25x of TF's
    floor where torchsort is below it (the floor timed alongside the row when there is one)."""
    floor_us = r.get("floor_vjp_us") or floor_us
    t, ts = r.get("tfsort_vjp_us"), r.get("torchsort_vjp_us")
    if t is None or ts is None:
        return "-"
    if ts < floor_us:
        return "ok" if t <= 1.25 * floor_us else "MISS: >1.25x floor"
    return "ok" if t < ts else "MISS: slower than torchsort"


def soft_verdict(r, floor_us):
    """design.md section 7, for one row: 'ok' or what is missed (against the floor timed
    alongside the row when there is one)."""
    floor_us = r.get("floor_fwd_bwd_us") or floor_us
    t, ts, srt = r["tfsort_fwd_bwd_us"], r["torchsort_fwd_bwd_us"], r["tf_sort_fwd_bwd_us"]
    if t is None:
        return "-"
    missed = []
    if ts is not None:
        if ts < floor_us:  # torchsort below TF's floor: stay within 1.25x of the floor
            if t > 1.25 * floor_us:
                missed.append(">1.25x floor")
        elif t >= ts:
            missed.append("slower than torchsort")
        f, tsf = r["tfsort_fwd_us"], r["torchsort_fwd_us"]
        if f is not None and tsf is not None and f >= tsf:
            missed.append("fwd slower")
    if srt is not None and t > 2 * srt:
        missed.append(">2x tf.sort")
    return "ok" if not missed else "MISS: " + ", ".join(missed)


def five_x(t, nn, floor_us):
    """The isotonic target (tf.nn at least 5x tfsort's time) for one pair of timings. Where
    a fifth of tf.nn's time lies below TF's eager floor in that form, no TF op can reach it,
    and design.md section 7's floor rule applies instead, as it does where torchsort is
    below the floor: stay within 1.25x of the floor (marked as such)."""
    if t is None or nn is None:
        return "-"
    if nn >= 5 * t:
        return "ok"
    if nn < 5 * floor_us:
        return "ok (tf.nn/5 below floor; <= 1.25x floor)" if t <= 1.25 * floor_us else \
            "MISS: >1.25x floor"
    return "MISS"


def isotonic_table(rows, floor_us, floor_bare_us):
    lines = [
        "\n### isotonic_regression (L2, decreasing, float32, eager unless noted)\n",
        "| shape | tfsort fwd | tf.nn fwd | tfsort fwd+bwd | tf.nn fwd+bwd | tf.nn/tfsort "
        "| tfsort fwd+bwd tf.function | tf.nn fwd+bwd tf.function | tf.nn/tfsort tf.function "
        "| tfsort vjp | tf.nn vjp | tf.nn/tfsort vjp | target (5x) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if r["op"] != "isotonic_regression":
            continue
        t, nn = r["tfsort_fwd_bwd_us"], r["tf_nn_fwd_bwd_us"]
        vjp_ok = five_x(r.get("tfsort_vjp_us"), r.get("tf_nn_vjp_us"),
                        r.get("floor_vjp_us") or floor_bare_us)
        ok = f"sum: {five_x(t, nn, r.get('floor_fwd_bwd_us') or floor_us)}, vjp: {vjp_ok}"
        lines.append(
            f"| {r['batch']}x{r['n']} | {fmt_us(r['tfsort_fwd_us'])} | {fmt_us(r['tf_nn_fwd_us'])} "
            f"| {fmt_us(t)} | {fmt_us(nn)} | {ratio(nn, t)} "
            f"| {fmt_us(r['tfsort_tf_function_fwd_bwd_us'])} "
            f"| {fmt_us(r['tf_nn_tf_function_fwd_bwd_us'])} "
            f"| {ratio(r['tf_nn_tf_function_fwd_bwd_us'], r['tfsort_tf_function_fwd_bwd_us'])} "
            f"| {fmt_us(r.get('tfsort_vjp_us'))} | {fmt_us(r.get('tf_nn_vjp_us'))} "
            f"| {ratio(r.get('tf_nn_vjp_us'), r.get('tfsort_vjp_us'))} "
            f"| {ok} |"
        )
    return "\n".join(lines)


def plot(rows, floor_us, path):
    try:
        import matplotlib  # noqa: PLC0415  (optional, benchmark-only)

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # noqa: PLC0415
    except ImportError:
        print("matplotlib is not installed: skipping the plot (pip install matplotlib)")
        return
    present = {r["op"] for r in rows}
    ops = [o for o in ("soft_rank", "soft_sort", "isotonic_regression") if o in present]
    batches = sorted({r["batch"] for r in rows})
    if not ops or not batches:
        return
    curves = {
        "soft_rank": [
            ("tfsort_fwd_bwd_us", "tfsort eager", "C0", "-"),
            ("tfsort_tf_function_fwd_bwd_us", "tfsort tf.function", "C0", ":"),
            ("torchsort_fwd_bwd_us", "torchsort", "C1", "-"),
            ("tf_sort_fwd_bwd_us", "tf.sort eager", "C2", "--"),
            ("tf_sort_tf_function_fwd_bwd_us", "tf.sort tf.function", "C2", ":"),
        ],
        "isotonic_regression": [
            ("tfsort_fwd_bwd_us", "tfsort eager", "C0", "-"),
            ("tfsort_tf_function_fwd_bwd_us", "tfsort tf.function", "C0", ":"),
            ("tf_nn_fwd_bwd_us", "tf.nn.isotonic_regression", "C3", "-"),
            ("tf_nn_tf_function_fwd_bwd_us", "tf.nn tf.function", "C3", ":"),
        ],
    }
    curves["soft_sort"] = curves["soft_rank"]
    fig, axes = plt.subplots(
        len(ops), len(batches), figsize=(4 * len(batches), 3.3 * len(ops)), squeeze=False
    )
    for i, op in enumerate(ops):
        for j, b in enumerate(batches):
            ax = axes[i][j]
            sel = sorted(
                (r for r in rows if r["op"] == op and r["batch"] == b), key=lambda r: r["n"]
            )
            for key, label, color, style in curves[op]:
                pts = [(r["n"], r[key]) for r in sel if r.get(key) is not None]
                if pts:
                    ax.plot(*zip(*pts), style, color=color, marker="o", ms=3, label=label)
            ax.axhline(floor_us, color="gray", lw=0.8, ls="-.", label="TF eager floor")
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_title(f"{op} fwd+bwd, batch {b}", fontsize=9)
            ax.set_xlabel("n")
            ax.set_ylabel("us (median)")
            ax.grid(True, which="both", alpha=0.3)
            if j == 0:
                ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"wrote {path}")


# ---------------------------------------------------------------------------------------
# Profile: where soft_rank's time goes at a small shape, eager fwd+bwd.


def profile(shape, min_time):
    import cProfile  # noqa: PLC0415
    import pstats  # noqa: PLC0415

    from tfsort import _utils  # noqa: PLC0415
    from tfsort._ops import ops as raw  # noqa: PLC0415

    rng = np.random.default_rng(0)
    x = tf.constant(rng.standard_normal(shape).astype(np.float32))
    w = tf.constant(rng.standard_normal(shape).astype(np.float32))
    attrs = dict(regularization="l2", descending=False)
    eps = tf.constant(1.0, tf.float64)

    def raw_rank(v):
        return raw.tf_sort_soft_rank(v, eps, num_aux=0, **attrs)[0]

    _, aux = raw.tf_sort_soft_rank(x, eps, num_aux=1, **attrs)

    def wrapper_python_only():  # the validation the public function does before the op
        _utils.in_xla_context()
        v = _utils.convert_values(x)
        _utils.check_regularization("l2")
        _utils.check_strength(1.0)
        _utils.check_descending("ASCENDING")
        a = _utils.normalize_axis(-1, v.shape.rank)
        _utils.move_axis_last(v, a)

    def bare_tape(fn):
        def run():
            with tf.GradientTape() as tape:
                tape.watch(x)
                out = fn(x)
            return tape.gradient(out, x, output_gradients=w)

        return run

    persistent = tf.GradientTape(persistent=True)
    with persistent:
        persistent.watch(x)
        out_p = tfsort.soft_rank(x)

    items = [
        ("tfsort.soft_rank fwd (public)", tf_fwd(tfsort.soft_rank, x)),
        ("raw op tf_sort_soft_rank fwd", tf_fwd(raw_rank, x)),
        ("python validation in soft_rank (no op)", wrapper_python_only),
        ("  of which _utils.in_xla_context()", _utils.in_xla_context),
        (
            "raw grad op tf_sort_soft_rank_grad",
            lambda: raw.tf_sort_soft_rank_grad(w, x, eps, aux, **attrs),
        ),
        ("tfsort.soft_rank fwd+bwd, sum(out*w) (tables)", tf_fwd_bwd(tfsort.soft_rank, x, w)),
        ("raw op fwd+bwd, sum(out*w)", tf_fwd_bwd(raw_rank, x, w)),
        ("tfsort.soft_rank fwd+bwd, output_gradients=w", bare_tape(tfsort.soft_rank)),
        ("raw op fwd+bwd, output_gradients=w", bare_tape(raw_rank)),
        ("tape.gradient only (persistent tape, recorded soft_rank)",
         lambda: persistent.gradient(out_p, x, output_gradients=w)),
        ("floor: tf.negative fwd+bwd, sum(out*w)", tf_fwd_bwd(tf.negative, x, w)),
        ("floor: tf.negative fwd+bwd, output_gradients=w", bare_tape(tf.negative)),
        ("tf.sort fwd+bwd, sum(out*w)", tf_fwd_bwd(tf_sort_asc, x, w)),
        ("tf.reduce_sum(out*w) alone (2 eager ops)", lambda: tf.reduce_sum(x * w)),
        ("tf.GradientTape() enter+exit, empty", _empty_tape),
    ]
    print(f"\n### Profile: soft_rank at {shape[0]}x{shape[1]}, eager (median us)\n")
    print("| what | median |\n|---|---|")
    results = {}
    for name, fn in items:
        us = median_us(fn, min_time=min_time)
        results[name] = us
        print(f"| {name} | {us:.1f} us |")
    if torchsort is not None:
        xg = torch.from_numpy(x.numpy()).requires_grad_(True)
        wt = torch.from_numpy(w.numpy())
        us = median_us(torch_fwd_bwd(torchsort.soft_rank, xg, wt), min_time=min_time)
        results["torchsort.soft_rank fwd+bwd"] = us
        print(f"| torchsort.soft_rank fwd+bwd | {us:.1f} us |")

    for label, run in (
        ("fwd+bwd of sum(out*w)", tf_fwd_bwd(tfsort.soft_rank, x, w)),
        ("VJP (output_gradients=w)", tf_vjp(tfsort.soft_rank, x, w)),
    ):
        for _ in range(200):
            run()
        prof = cProfile.Profile()
        reps = 3000
        prof.enable()
        for _ in range(reps):
            run()
        prof.disable()
        print(f"\ncProfile of {reps} eager soft_rank {label} calls (cProfile inflates Python "
              "time several-fold; read the shares, not the absolute numbers):")
        stats = pstats.Stats(prof)
        stats.sort_stats("tottime").print_stats(15)
        stats.sort_stats("cumulative").print_stats(25)
    return results


def _empty_tape():
    with tf.GradientTape():
        pass


# ---------------------------------------------------------------------------------------


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help=f"only {QUICK_SHAPES}")
    p.add_argument("--shapes", help="comma-separated BATCHxN, e.g. 1x16,256x8192")
    p.add_argument(
        "--ops",
        default="soft_rank,soft_sort,isotonic_regression",
        help="comma-separated subset of soft_rank,soft_sort,isotonic_regression",
    )
    p.add_argument("--out", default=DEFAULT_OUT, help="JSON output; the PNG goes next to it")
    p.add_argument("--min-time", type=float, default=0.2, help="seconds per measurement")
    p.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="measure every shape this many times (interleaved) and keep each cell's "
        "smallest median: on a shared machine the least-disturbed round is the best estimate",
    )
    p.add_argument(
        "--fixed-input",
        action="store_true",
        help="time one input over and over instead of cycling through a pool of fresh ones "
        "(the branch predictor then learns it; see input_pool)",
    )
    p.add_argument("--no-plot", action="store_true")
    p.add_argument("--profile", action="store_true", help="profile soft_rank at 1x16 and exit")
    args = p.parse_args(argv)
    global FIXED_INPUT
    FIXED_INPUT = args.fixed_input

    threads = os.cpu_count() or 1
    if torch is not None:
        torch.set_num_threads(threads)
    print(
        f"TensorFlow {tf.__version__} (default threading: intra_op="
        f"{tf.config.threading.get_intra_op_parallelism_threads()}, inter_op="
        f"{tf.config.threading.get_inter_op_parallelism_threads()}; 0 = TF's choice), "
        f"tfsort {tfsort.__version__}, numpy {np.__version__}"
    )
    if torch is not None:
        print(
            f"torch {torch.__version__}, torchsort "
            f"{getattr(torchsort, '__version__', '?')}: torch.set_num_threads({threads}) "
            f"(os.cpu_count()), now {torch.get_num_threads()} threads"
        )
    else:
        print(f"torchsort not importable ({_TORCH_MISSING}): its columns are '-'")
    print(f"cpus: {os.cpu_count()}, timing: median of >= 5 calls over >= {args.min_time}s each")
    print("inputs: " + ("one per cell, reused (--fixed-input)" if FIXED_INPUT else
                        "a pool of distinct inputs per cell, cycled (up to 256, see input_pool)"))

    if args.profile:
        profile((1, 16), args.min_time)
        return

    if args.shapes:
        shapes = parse_shapes(args.shapes)
    else:
        shapes = QUICK_SHAPES if args.quick else ALL_SHAPES
    ops = [o.strip() for o in args.ops.split(",") if o.strip()]
    for o in ops:
        if o not in ("soft_rank", "soft_sort", "isotonic_regression"):
            p.error(f"unknown op {o!r} in --ops")

    floor = eager_floor(args.min_time)

    rows = []
    start = time.perf_counter()
    for rnd in range(max(1, args.rounds)):
        if rnd:  # the floor is as noisy as everything else: keep its least-disturbed round
            floor = merge_min(floor, eager_floor(args.min_time))
        rng = np.random.default_rng(0)  # the same data every round
        i = 0
        for shape in shapes:
            for op in ops:
                print(f"  round {rnd + 1}: {op} {shape[0]}x{shape[1]} ...", flush=True)
                if op == "isotonic_regression":
                    row = bench_isotonic(shape, args.min_time, rng)
                else:
                    row = bench_soft(op, shape, args.min_time, rng)
                if rnd == 0:
                    rows.append(row)
                else:
                    rows[i] = merge_min(rows[i], row)
                i += 1
    print(f"(measured in {time.perf_counter() - start:.0f} s)")
    print(
        f"TF eager floor (1x16 tf.negative): fwd {floor['floor_negative_fwd_us']:.0f} us, "
        f"fwd+bwd with sum(out*w) {floor['floor_negative_fwd_bwd_us']:.0f} us, "
        f"fwd+bwd with output_gradients {floor['floor_negative_bare_fwd_bwd_us']:.0f} us; "
        f"for context TF's tf.math.cumsum fwd+bwd with output_gradients "
        f"{floor['tf_cumsum_bare_fwd_bwd_us']:.0f} us. The tables judge each row against "
        f"the floor timed interleaved with it (its TF floor column)."
    )
    floor_us = floor["floor_negative_fwd_bwd_us"]

    for op in ("soft_rank", "soft_sort"):
        if op in ops:
            print(soft_table(rows, op, floor_us))
    soft = [o for o in ops if o != "isotonic_regression"]
    if soft:
        print(vjp_table(rows, soft, floor["floor_negative_bare_fwd_bwd_us"]))
    if "isotonic_regression" in ops:
        print(isotonic_table(rows, floor_us, floor["floor_negative_bare_fwd_bwd_us"]))
    print(
        "\nRatios: torchsort/tfsort > 1 and tf.nn/tfsort > 1 mean tfsort is faster; "
        "tfsort/tf.sort is tfsort's cost relative to sorting alone (target <= 2x)."
    )

    meta = dict(
        benchmark="isotonic",
        dtype="float32",
        tensorflow=tf.__version__,
        torch=None if torch is None else torch.__version__,
        torch_threads=None if torch is None else torch.get_num_threads(),
        argv=sys.argv[1:],
        rounds=max(1, args.rounds),
        fixed_input=FIXED_INPUT,
        **floor,
    )
    write_json(args.out, rows, **meta)
    if not args.no_plot:
        plot(rows, floor_us, os.path.splitext(args.out)[0] + ".png")


if __name__ == "__main__":
    main()
