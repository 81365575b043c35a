"""Shared timing helpers for the benchmark scripts: medians of repeated calls, JSON output.

Every script times the contenders side by side in one process and one run, so the
numbers are comparable on a shared, noisy machine. Use medians, never means.
"""

import json
import os
import platform
import statistics
import time


def median_us(fn, min_time=0.2, min_reps=5, max_reps=2000, warmup=2):
    """Median wall time of fn() in microseconds."""
    for _ in range(warmup):
        fn()
    times = []
    start = time.perf_counter()
    while len(times) < min_reps or (
        time.perf_counter() - start < min_time and len(times) < max_reps
    ):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e6


def interleaved_medians_us(fns, min_time=0.2, block_time=0.04, block_warmup=2, max_reps=2000):
    """Median wall time (us) of each fn, timed in alternating blocks: f0 for block_time,
    f1 for block_time, ..., f0 again, until each has had min_time.

    On a shared machine whose speed drifts over seconds, timing one contender after another
    compares different periods; alternating blocks makes every contender see the same
    ones, so their ratios hold even where the absolute numbers do not. Blocks rather than
    single calls, and the first block_warmup calls of each block left out: switching
    workloads call by call costs each call cache and branch-predictor misses (measured
    here: up to 1.6x on TF's 1x16 floor next to torch calls), which would distort the very
    ratios being measured."""
    times = [[] for _ in fns]
    spent = [0.0 for _ in fns]
    while min(spent) < min_time and min(len(t) for t in times) < max_reps:
        for fn, ts, i in zip(fns, times, range(len(fns))):
            for _ in range(block_warmup):
                fn()
            start = time.perf_counter()
            while True:
                t0 = time.perf_counter()
                fn()
                t1 = time.perf_counter()
                ts.append(t1 - t0)
                if t1 - start >= block_time:
                    break
            spent[i] += time.perf_counter() - start
    return [statistics.median(ts) * 1e6 for ts in times]


def fmt_us(us):
    if us is None:
        return "-"
    if us >= 1e4:
        return f"{us / 1e3:.1f} ms"
    return f"{us:.0f} us"


def ratio(a, b):
    """a / b formatted, or '-' when either is missing."""
    if a is None or b is None:
        return "-"
    return f"{a / b:.2f}x"


def write_json(path, rows, **meta):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    meta.setdefault("machine", platform.platform())
    meta.setdefault("cpus", os.cpu_count())
    with open(path, "w") as f:
        json.dump({"meta": meta, "rows": rows}, f, indent=1)
    print(f"wrote {path}")
