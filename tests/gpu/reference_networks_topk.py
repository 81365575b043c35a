"""NumPy float64 references for the sorting-network and sigmoid top-k GPU tests.

Written from the math in design.md (sections 2 and 3), vectorised over the batch with one
NumPy step per network layer, so that n = 65536 and batch = 65536 stay affordable. Layers
come from the launcher library's own schedule (tfsort_h_network_schedule), which the CPU
tests check against the design's definition of the networks.
"""

import math

import numpy as np

try:
    from scipy.special import ndtr as _ndtr
except ImportError:  # pragma: no cover - scipy is optional on GPU machines
    _ndtr = np.vectorize(lambda d: 0.5 * math.erfc(-d / math.sqrt(2.0)))

RELAXATIONS = ("logistic", "logistic_phi", "gaussian", "reciprocal", "cauchy", "optimal", "softmax")


def _sigmoid(d):
    return 0.5 * (1.0 + np.tanh(0.5 * d))


def alpha_c(rel, s, u):
    """(alpha, c) per comparator: alpha = weight of a in the minimum, c = d(min)/da."""
    d = s * u
    if rel in ("logistic", "softmax"):
        a = _sigmoid(d)
        da = s * a * (1 - a)
    elif rel == "logistic_phi":
        base = np.abs(u) + 1e-10
        scale = base**-0.25
        a = _sigmoid(d * scale)
        da = a * (1 - a) * s * scale * (1 - 0.25 * np.abs(u) / base)
    elif rel == "gaussian":
        a = _ndtr(d)
        da = s * np.exp(-0.5 * d * d) / math.sqrt(2 * math.pi)
    elif rel == "reciprocal":
        q = 2 + np.abs(d)
        a = 0.5 * (d / q + 1)
        da = s / (q * q)
    elif rel == "cauchy":
        a = np.arctan(d) / math.pi + 0.5
        da = s / (math.pi * (1 + d * d))
    else:  # optimal
        ad = np.abs(d)
        with np.errstate(divide="ignore"):
            far = 0.5 + np.sign(d) * (0.5 - 1.0 / (16.0 * np.maximum(ad, 1e-300)))
            dfar = s / (16.0 * np.maximum(d * d, 1e-300))
        a = np.where(ad <= 0.25, d + 0.5, far)
        da = np.where(ad <= 0.25, s, dfar)
    c = a if rel == "softmax" else a + u * da
    return a, c


def layers(lo, hi, start):
    return [(lo[start[i] : start[i + 1]], hi[start[i] : start[i + 1]]) for i in range(len(start) - 1)]


def network_forward(x, lays, rel, s, descending=False, ranks=False):
    """Relaxed sort (ascending, reversed if descending) or soft ranks; and u per comparator."""
    x = np.array(x, np.float64)
    batch, n = x.shape
    us = []
    for lo, hi in lays:
        a, b = x[:, lo], x[:, hi]
        u = b - a
        us.append(u)
        if rel == "softmax":
            mx = np.logaddexp(s * a, s * b) / s
            x[:, lo], x[:, hi] = a + b - mx, mx
        else:
            al, _ = alpha_c(rel, s, u)
            x[:, lo], x[:, hi] = al * a + (1 - al) * b, (1 - al) * a + al * b
    if not ranks:
        return (x[:, ::-1] if descending else x), us
    r = np.tile(np.arange(n, 0, -1.0) if descending else np.arange(1.0, n + 1), (batch, 1))
    for (lo, hi), u in zip(reversed(lays), reversed(us)):
        al, _ = alpha_c(rel, s, u)
        a, b = r[:, lo], r[:, hi]
        r[:, lo], r[:, hi] = al * a + (1 - al) * b, (1 - al) * a + al * b
    return r, us


def network_vjp(g, us, lays, rel, s, descending=False, gdiffs=None):
    """Sort-mode VJP: the transpose of the comparator Jacobians [[c, 1-c], [1-c, c]] applied
    in reverse, plus a cotangent gdiffs of the stored u (list per layer) if given."""
    g = np.array(g, np.float64)
    if descending:
        g = g[:, ::-1].copy()
    for li in range(len(lays) - 1, -1, -1):
        lo, hi = lays[li]
        _, c = alpha_c(rel, s, us[li])
        a, b = g[:, lo], g[:, hi]
        na, nb = c * a + (1 - c) * b, (1 - c) * a + c * b
        if gdiffs is not None:
            na, nb = na - gdiffs[li], nb + gdiffs[li]
        g[:, lo], g[:, hi] = na, nb
    return g


def network_jvp(t, us, lays, rel, s, descending=False):
    """JVP of the relaxed sort: the comparator Jacobians applied in order."""
    t = np.array(t, np.float64)
    for li, (lo, hi) in enumerate(lays):
        _, c = alpha_c(rel, s, us[li])
        a, b = t[:, lo], t[:, hi]
        t[:, lo], t[:, hi] = c * a + (1 - c) * b, (1 - c) * a + c * b
    return t[:, ::-1] if descending else t


def sigmoid_topk(x, k, eps):
    """Mask sigmoid((x + t) / eps) with sum = k per row, t by bisection in float64."""
    x = np.asarray(x, np.float64)
    k = np.broadcast_to(np.asarray(k, np.float64), x.shape[:1])
    n = x.shape[1]
    base = eps * np.log(k / (n - k))
    lo = base - x.max(axis=1)
    hi = base - x.min(axis=1)
    for _ in range(200):
        t = 0.5 * (lo + hi)
        f = _sigmoid((x + t[:, None]) / eps).sum(axis=1) - k
        lo = np.where(f < 0, t, lo)
        hi = np.where(f < 0, hi, t)
    t = 0.5 * (lo + hi)
    return _sigmoid((x + t[:, None]) / eps)


def sigmoid_topk_vjp(g, p, eps):
    """v g - v (v . g) / sum(v), v = p (1 - p) / eps."""
    g = np.asarray(g, np.float64)
    p = np.asarray(p, np.float64)
    v = p * (1 - p) / eps
    sv = v.sum(axis=1, keepdims=True)
    c = np.where(sv > 0, (v * g).sum(axis=1, keepdims=True) / np.where(sv > 0, sv, 1), 0)
    return v * (g - c)
