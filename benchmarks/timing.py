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
