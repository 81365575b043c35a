"""NumPy float64 references for the isotonic family, written from design.md section 3.

Deliberately independent of tfsort: plain Python PAV on one row at a time, with the
projections onto the permutahedron and the soft sort / soft rank / Spearman built on it.
Slow but obviously correct; every function takes a 1-D row except the batched helpers.

Notation: x one row of length n, eps = regularization_strength, rho = (n, n-1, ..., 1).
"""

import numpy as np


def _lse(a):
    m = np.max(a)
    return m + np.log(np.sum(np.exp(a - m)))


def _pav(y, value_fn, merge_fn, stats):
    """Generic decreasing PAV. stats[i] are a block's sufficient statistics for y[i]."""
    blocks = []  # [stat, start, length]
    for i in range(len(y)):
        blocks.append([stats[i], i, 1])
        while len(blocks) > 1 and value_fn(blocks[-1][0]) >= value_fn(blocks[-2][0]):
            last = blocks.pop()
            blocks[-1][0] = merge_fn(blocks[-1][0], last[0])
            blocks[-1][2] += last[2]
    sol = np.empty(len(y))
    for stat, start, length in blocks:
        sol[start : start + length] = value_fn(stat)
    return sol


def isotonic_l2(y, decreasing=True):
    """argmin_v 1/2 ||v - y||^2 subject to v monotone."""
    y = np.asarray(y, np.float64)
    if not decreasing:
        return -isotonic_l2(-y, decreasing=True)
    return _pav(
        y,
        lambda s: s[0] / s[1],
        lambda a, b: (a[0] + b[0], a[1] + b[1]),
        [(v, 1) for v in y],
    )


def isotonic_kl(y, w, decreasing=True):
    """argmin_v sum exp(y - v) + sum exp(w) v subject to v monotone.

    Block value LSE(y_B) - LSE(w_B); the increasing problem is the decreasing one on the
    reversed row (the objective is separable, only the order constraint flips).
    """
    y = np.asarray(y, np.float64)
    w = np.asarray(w, np.float64)
    if not decreasing:
        return isotonic_kl(y[::-1], w[::-1], decreasing=True)[::-1]
    return _pav(
        y,
        lambda s: s[0] - s[1],
        lambda a, b: (np.logaddexp(a[0], b[0]), np.logaddexp(a[1], b[1])),
        [(a, b) for a, b in zip(y, w)],
    )


def _sort_desc(z):
    perm = np.argsort(-z, kind="stable")
    return perm, z[perm]


def project_l2(z, w):
    """Euclidean projection of z onto the permutahedron of w (w sorted descending)."""
    z = np.asarray(z, np.float64)
    perm, s = _sort_desc(z)
    out = np.empty_like(s)
    out[perm] = s - isotonic_l2(s - w)
    return out


def project_kl(z, w):
    """KL projection (log domain): s - isotonic_kl(s, w), scattered back."""
    z = np.asarray(z, np.float64)
    perm, s = _sort_desc(z)
    out = np.empty_like(s)
    out[perm] = s - isotonic_kl(s, w)
    return out


def soft_rank(x, eps=1.0, regularization="l2", direction="ASCENDING"):
    x = np.asarray(x, np.float64)
    n = x.shape[0]
    rho = np.arange(n, 0, -1, dtype=np.float64)
    z = (-x if direction.upper() == "DESCENDING" else x) / eps
    if regularization == "l2":
        return project_l2(z, rho)
    return np.exp(project_kl(z, np.log(rho)))


def soft_sort(x, eps=1.0, regularization="l2", direction="ASCENDING"):
    x = np.asarray(x, np.float64)
    n = x.shape[0]
    rho = np.arange(n, 0, -1, dtype=np.float64)
    sign = 1.0 if direction.upper() == "DESCENDING" else -1.0
    s = np.sort(sign * x)[::-1]
    if regularization == "l2":
        v = isotonic_l2(rho / eps - s)
    else:
        v = isotonic_kl(rho / eps, s)
    return sign * (rho / eps - v)


def spearmanr(pred, target, **kw):
    """Soft Spearman: Pearson correlation of the soft ranks of both rows (0 if constant)."""
    a = soft_rank(pred, **kw)
    b = soft_rank(target, **kw)
    a = a - a.mean()
    b = b - b.mean()
    den = np.sqrt(np.sum(a * a) * np.sum(b * b))
    return 0.0 if den == 0 else float(np.sum(a * b) / den)


def along_axis(fn, x, axis=-1, *args, **kw):
    """Applies a 1-D reference fn to every row of x along axis (float64)."""
    x = np.asarray(x, np.float64)
    return np.apply_along_axis(lambda r: fn(r, *args, **kw), axis, x)


def along_axis2(fn, y, w, axis=-1, **kw):
    """Applies fn(y_row, w_row) along axis."""
    y = np.moveaxis(np.asarray(y, np.float64), axis, -1)
    w = np.moveaxis(np.asarray(w, np.float64), axis, -1)
    out = np.empty_like(y)
    for idx in np.ndindex(y.shape[:-1]):
        out[idx] = fn(y[idx], w[idx], **kw)
    return np.moveaxis(out, -1, axis)
