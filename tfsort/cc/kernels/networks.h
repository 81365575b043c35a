// Relaxed sorting networks (Petersen et al., "Differentiable Sorting Networks", ICML 2021;
// "Monotonic Differentiable Sorting Networks", ICLR 2022). Pure algorithm: no TensorFlow
// types; the per-comparator and per-row functions compile under g++ and nvcc.
//
// A network is a flat list of comparators (i, j), i < j, in layer order; comparators of one
// layer are disjoint, so running them in list order is the same as running layer by layer.
// A comparator on (a, b) = (x_i, x_j) with u = b - a, d = steepness * u and alpha = F(d):
//   x_i <- alpha a + (1 - alpha) b        (relaxed min)
//   x_j <- (1 - alpha) a + alpha b        (relaxed max)
// "softmax" instead uses max = LSE_s(a, b) = log(e^{sa} + e^{sb}) / s and min = a + b - max;
// its mixing weight (for permutation matrices and ranks) is alpha = sigmoid(s u).
//
// Jacobian of one comparator: [[c, 1 - c], [1 - c, c]] with c = d(min)/da = alpha + u dalpha/du
// (for softmax c = alpha). It is symmetric, so the VJP of a comparator is the same 2x2 map.
// The forward pass stores u per comparator (O(n log^2 n) floats per row for bitonic); the
// backward pass recomputes alpha, c and dalpha/du from u.
//
// Bitonic schedule ("flip" form, every comparator puts the minimum at the lower index), for
// m = 2^k >= n: for size = 2, 4, ..., m: one flip layer (b + t, b + size - 1 - t) per block
// of `size`, then half-cleaners (i, i + h), i & h == 0, for h = size / 4, ..., 1. Any n: pad
// to m with +inf sentinels. A comparator (i, j) with j >= n meets a sentinel at j, which it
// leaves in place exactly (min = x_i, max = +inf), so those comparators are simply dropped:
// sentinels never move and never mix with real values. Odd-even transposition: n layers,
// layer t compares (i, i + 1) for i = t mod 2, t mod 2 + 2, ...
//
// Complexity per row: O(n log^2 n) time and stored floats (bitonic), O(n^2) (odd-even).

#ifndef TFSORT_CC_KERNELS_NETWORKS_H_
#define TFSORT_CC_KERNELS_NETWORKS_H_

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#ifdef __CUDACC__
#define TFSORT_HD __host__ __device__
#else
#define TFSORT_HD
#endif

namespace tfsort {
namespace networks {

enum class Network { kBitonic = 0, kOddEven = 1 };
enum class Relaxation {
  kLogistic = 0,
  kLogisticPhi = 1,
  kGaussian = 2,
  kReciprocal = 3,
  kCauchy = 4,
  kOptimal = 5,
  kSoftmax = 6,
};

// Parses a name; returns false when unknown.
inline bool ParseNetwork(const char* s, Network* out) {
  const std::string n(s);
  if (n == "bitonic") *out = Network::kBitonic;
  else if (n == "odd_even") *out = Network::kOddEven;
  else return false;
  return true;
}

inline bool ParseRelaxation(const char* s, Relaxation* out) {
  static const char* kNames[] = {"logistic", "logistic_phi", "gaussian", "reciprocal",
                                 "cauchy",   "optimal",      "softmax"};
  for (int i = 0; i < 7; ++i) {
    if (std::string(s) == kNames[i]) {
      *out = static_cast<Relaxation>(i);
      return true;
    }
  }
  return false;
}

// Calls fn(i, j) for every comparator of the network on n wires, in layer order, and
// end_layer() after each non-empty layer.
template <typename Fn, typename EndFn>
void ForEachComparator(Network net, int n, Fn fn, EndFn end_layer) {
  if (n < 2) return;
  if (net == Network::kOddEven) {
    for (int t = 0; t < n; ++t) {
      bool any = false;
      for (int i = t & 1; i + 1 < n; i += 2) {
        fn(i, i + 1);
        any = true;
      }
      if (any) end_layer();
    }
    return;
  }
  int64_t m = 1;
  while (m < n) m <<= 1;
  for (int64_t size = 2; size <= m; size <<= 1) {
    bool any = false;
    for (int64_t b = 0; b < n; b += size) {
      for (int64_t t = 0; t < size / 2; ++t) {
        const int64_t j = b + size - 1 - t;
        if (j < n) {
          fn(static_cast<int>(b + t), static_cast<int>(j));
          any = true;
        }
      }
    }
    if (any) end_layer();
    for (int64_t h = size / 4; h >= 1; h >>= 1) {
      any = false;
      for (int64_t b = 0; b < n; b += 2 * h) {
        for (int64_t t = 0; t < h && b + t + h < n; ++t) {
          fn(static_cast<int>(b + t), static_cast<int>(b + t + h));
          any = true;
        }
      }
      if (any) end_layer();
    }
  }
}

// The comparators as two index arrays (lo, hi), in layer order.
struct Schedule {
  std::vector<int32_t> lo, hi;
  int64_t size() const { return static_cast<int64_t>(lo.size()); }
};

inline int64_t NumComparators(Network net, int n) {
  int64_t count = 0;
  ForEachComparator(net, n, [&](int, int) { ++count; }, [] {});
  return count;
}

inline void BuildSchedule(Network net, int n, Schedule* s) {
  s->lo.clear();
  s->hi.clear();
  const int64_t c = NumComparators(net, n);
  s->lo.reserve(c);
  s->hi.reserve(c);
  ForEachComparator(
      net, n,
      [&](int i, int j) {
        s->lo.push_back(i);
        s->hi.push_back(j);
      },
      [] {});
}

// Relaxation of one comparator at u = b - a: the mixing weight alpha (weight of a in the
// minimum), c = d(min)/da and dalpha = dalpha/du.
template <typename A>
struct Weights {
  A alpha, c, dalpha;
};

template <typename A>
TFSORT_HD inline A Sigmoid(A d) {
  // Stable for large |d|.
  if (d >= A(0)) return A(1) / (A(1) + std::exp(-d));
  const A e = std::exp(d);
  return e / (A(1) + e);
}

template <typename A>
TFSORT_HD inline Weights<A> Relax(Relaxation r, A s, A u) {
  const A d = s * u;
  const A kPi = A(3.14159265358979323846);
  Weights<A> w;
  switch (r) {
    case Relaxation::kLogistic:
    case Relaxation::kSoftmax: {
      w.alpha = Sigmoid(d);
      const A fp = w.alpha * (A(1) - w.alpha);
      w.dalpha = s * fp;
      w.c = r == Relaxation::kSoftmax ? w.alpha : w.alpha + d * fp;
      break;
    }
    case Relaxation::kLogisticPhi: {
      // alpha = sigmoid(s u / (|u| + 1e-10)^(1/4)).
      const A au = std::fabs(u);
      const A base = au + A(1e-10);
      const A scale = A(1) / std::sqrt(std::sqrt(base));
      const A e = d * scale;
      w.alpha = Sigmoid(e);
      const A fp = w.alpha * (A(1) - w.alpha);
      // de/du = s scale (1 - (1/4) |u| / base).
      w.dalpha = fp * s * scale * (A(1) - A(0.25) * au / base);
      w.c = w.alpha + u * w.dalpha;
      break;
    }
    case Relaxation::kGaussian: {
      w.alpha = A(0.5) * std::erfc(-d * A(0.70710678118654752440));
      const A pdf = A(0.39894228040143267794) * std::exp(A(-0.5) * d * d);
      w.dalpha = s * pdf;
      w.c = w.alpha + d * pdf;
      break;
    }
    case Relaxation::kReciprocal: {
      const A q = A(2) + std::fabs(d);
      w.alpha = A(0.5) * (d / q + A(1));
      const A fp = A(1) / (q * q);
      w.dalpha = s * fp;
      w.c = w.alpha + d * fp;
      break;
    }
    case Relaxation::kCauchy: {
      w.alpha = std::atan(d) / kPi + A(0.5);
      const A fp = A(1) / (kPi * (A(1) + d * d));
      w.dalpha = s * fp;
      w.c = w.alpha + d * fp;
      break;
    }
    case Relaxation::kOptimal:
    default: {
      const A ad = std::fabs(d);
      if (ad <= A(0.25)) {
        w.alpha = d + A(0.5);
        w.dalpha = s;
        w.c = w.alpha + d;
      } else {
        const A sg = d > A(0) ? A(1) : A(-1);
        w.alpha = A(0.5) + sg * (A(0.5) - A(1) / (A(16) * ad));
        const A fp = A(1) / (A(16) * d * d);
        w.dalpha = s * fp;
        w.c = w.alpha + d * fp;
      }
      break;
    }
  }
  return w;
}

// One comparator in place on (x[i], x[j]); returns u = x[j] - x[i] (before the swap).
template <typename A>
TFSORT_HD inline A CompareSwap(Relaxation r, A s, A* xi, A* xj) {
  const A a = *xi, b = *xj;
  const A u = b - a;
  if (r == Relaxation::kSoftmax) {
    const A hi = a > b ? a : b;
    const A mx = hi + std::log1p(std::exp(-s * std::fabs(u))) / s;
    *xj = mx;
    *xi = (a + b) - mx;
  } else {
    const A alpha = Relax(r, s, u).alpha;
    *xi = alpha * a + (A(1) - alpha) * b;
    *xj = (A(1) - alpha) * a + alpha * b;
  }
  return u;
}

// (u, v) <- (alpha u + (1 - alpha) v, (1 - alpha) u + alpha v) over n entries.
template <typename A>
TFSORT_HD inline void MixRows(A alpha, A* u, A* v, int n) {
  for (int t = 0; t < n; ++t) {
    const A a = u[t], b = v[t];
    u[t] = alpha * a + (A(1) - alpha) * b;
    v[t] = (A(1) - alpha) * a + alpha * b;
  }
}

// Per-comparator steps. The row functions below run them over the comparator list; a GPU
// kernel runs the comparators of one layer in parallel (they are disjoint), so both execute
// the same operations on every wire in the same order.

// Rank step of comparator k (run in reverse comparator order): mixes the back-propagated
// rank vector (ri, rj) = (r[lo], r[hi]) with alpha(u) and returns r[lo] - r[hi] before.
template <typename A>
TFSORT_HD inline A RankStep(Relaxation rel, A s, A u, A* ri, A* rj) {
  const A alpha = Relax(rel, s, u).alpha;
  const A a = *ri, b = *rj;
  *ri = alpha * a + (A(1) - alpha) * b;
  *rj = (A(1) - alpha) * a + alpha * b;
  return a - b;
}

// Rank-cotangent step of comparator k (forward order): returns dL/dalpha_k =
// rdiff (h[lo] - h[hi]) and mixes (h[lo], h[hi]) with alpha(u).
template <typename A>
TFSORT_HD inline A RankCotangentStep(Relaxation rel, A s, A u, A rdiff, A* hi_, A* hj) {
  const A alpha = Relax(rel, s, u).alpha;
  const A a = *hi_, b = *hj;
  const A lalpha = rdiff * (a - b);
  *hi_ = alpha * a + (A(1) - alpha) * b;
  *hj = (A(1) - alpha) * a + alpha * b;
  return lalpha;
}

// Backward step of comparator k (reverse order) on the cotangent (g[lo], g[hi]): the
// comparator's VJP, then the optional injections (gdiff: cotangent of u_k; lalpha: dL/dalpha_k
// of the rank mode, 0 for none). Returns g[lo] - g[hi] before the VJP (gsnap).
template <typename A>
TFSORT_HD inline A BackwardStep(Relaxation rel, A s, A u, A* gi, A* gj, bool has_gdiff,
                                A gdiff, bool has_lalpha, A lalpha) {
  const Weights<A> w = Relax(rel, s, u);
  const A gmn = *gi, gmx = *gj;
  A ni = w.c * gmn + (A(1) - w.c) * gmx;
  A nj = (A(1) - w.c) * gmn + w.c * gmx;
  if (has_gdiff) {
    ni -= gdiff;
    nj += gdiff;
  }
  if (has_lalpha) {
    // alpha depends on u = x_hi - x_lo.
    const A t = w.dalpha * lalpha;
    ni -= t;
    nj += t;
  }
  *gi = ni;
  *gj = nj;
  return gmn - gmx;
}

// Forward pass of one row (x: n values, overwritten by the relaxed sort, ascending).
// diffs[k] = u of comparator k. When rank is non-null it receives the soft ranks
// rank = P^T r0 (r0 given in rank, overwritten), and rdiffs[k] = r[lo] - r[hi] of the
// back-propagated rank vector at the output of comparator k (for the rank gradient).
template <typename A>
TFSORT_HD void ForwardRow(Relaxation rel, A s, const int32_t* lo, const int32_t* hi,
                          int64_t num, A* x, A* diffs, A* rank, A* rdiffs) {
  for (int64_t k = 0; k < num; ++k) diffs[k] = CompareSwap(rel, s, x + lo[k], x + hi[k]);
  if (rank == nullptr) return;
  // rank = M_1^T ... M_K^T r0; each M is symmetric, so walk comparators backwards.
  for (int64_t k = num - 1; k >= 0; --k) {
    rdiffs[k] = RankStep(rel, s, diffs[k], rank + lo[k], rank + hi[k]);
  }
}

// Backward pass of one row. g: cotangent of the sorted output (ascending order), in place
// becomes the gradient w.r.t. the input. h: cotangent of the ranks (or null); scratch
// lalpha (num entries) is needed when h is given. The rank gradient: with r_l the
// back-propagated rank vector after comparator k and h_{k} the forward propagation of the
// rank cotangent up to comparator k, dL/dalpha_k = (r_l[lo] - r_l[hi]) (h[lo] - h[hi]).
//
// Sort mode (h null) also takes, optionally, gdiffs: a cotangent of the stored diffs
// (u_k = x[hi] - x[lo] at the input of comparator k), injected as -gdiffs[k] at lo and
// +gdiffs[k] at hi after comparator k's VJP; and gsnap: receives g[lo] - g[hi] of the
// cotangent before comparator k's VJP (for BackwardRowAdjoint).
template <typename A>
TFSORT_HD void BackwardRow(Relaxation rel, A s, const int32_t* lo, const int32_t* hi,
                           int64_t num, const A* diffs, A* g, A* h, const A* rdiffs,
                           A* lalpha, const A* gdiffs = nullptr, A* gsnap = nullptr) {
  if (h != nullptr) {
    for (int64_t k = 0; k < num; ++k) {
      lalpha[k] = RankCotangentStep(rel, s, diffs[k], rdiffs[k], h + lo[k], h + hi[k]);
    }
  }
  for (int64_t k = num - 1; k >= 0; --k) {
    const A snap = BackwardStep(rel, s, diffs[k], g + lo[k], g + hi[k], gdiffs != nullptr,
                                gdiffs != nullptr ? gdiffs[k] : A(0), h != nullptr,
                                h != nullptr ? lalpha[k] : A(0));
    if (gsnap != nullptr) gsnap[k] = snap;
  }
}

// dc/du of one comparator (c = d(min)/da, see Relax): 2 dalpha/du + u d2alpha/du2, or
// dalpha/du for softmax (whose c is alpha).
template <typename A>
TFSORT_HD inline A DcDu(Relaxation r, A s, A u, const Weights<A>& w) {
  const A d = s * u;
  const A kPi = A(3.14159265358979323846);
  A d2;  // d2alpha / du2
  switch (r) {
    case Relaxation::kLogistic:
    case Relaxation::kSoftmax:
      d2 = s * w.dalpha * (A(1) - A(2) * w.alpha);
      break;
    case Relaxation::kLogisticPhi: {
      // alpha = sigmoid(e(u)), e = s u base^(-1/4), base = |u| + 1e-10.
      const A au = std::fabs(u);
      const A base = au + A(1e-10);
      const A scale = A(1) / std::sqrt(std::sqrt(base));
      const A de = s * scale * (A(1) - A(0.25) * au / base);
      const A sg = u > A(0) ? A(1) : (u < A(0) ? A(-1) : A(0));
      const A d2e = s * sg * scale / base * (A(-0.5) + A(0.3125) * au / base);
      const A fp = w.alpha * (A(1) - w.alpha);
      d2 = fp * (A(1) - A(2) * w.alpha) * de * de + fp * d2e;
      break;
    }
    case Relaxation::kGaussian:
      d2 = -s * d * w.dalpha;
      break;
    case Relaxation::kReciprocal: {
      const A q = A(2) + std::fabs(d);
      const A sg = d > A(0) ? A(1) : (d < A(0) ? A(-1) : A(0));
      d2 = A(-2) * s * s * sg / (q * q * q);
      break;
    }
    case Relaxation::kCauchy: {
      const A q = A(1) + d * d;
      d2 = A(-2) * s * s * d / (kPi * q * q);
      break;
    }
    case Relaxation::kOptimal:
    default:
      d2 = std::fabs(d) <= A(0.25) ? A(0) : -s * s / (A(8) * d * d * d);
      break;
  }
  if (r == Relaxation::kSoftmax) return w.dalpha;
  return A(2) * w.dalpha + u * d2;
}

// Adjoint step of comparator k (forward order) on the tangent (h[lo], h[hi]): returns
// d<h, G>/du_k, sets *hgdiff = d<h, G>/dgdiffs_k and applies the comparator's Jacobian.
template <typename A>
TFSORT_HD inline A AdjointStep(Relaxation rel, A s, A u, A gsnap, A* hl, A* hh, A* hgdiff) {
  const Weights<A> w = Relax(rel, s, u);
  const A a = *hl, b = *hh;
  *hgdiff = b - a;
  *hl = w.c * a + (A(1) - w.c) * b;
  *hh = (A(1) - w.c) * a + w.c * b;
  return (a - b) * gsnap * DcDu(rel, s, u, w);
}

// Adjoint of the sort-mode BackwardRow, and its derivative w.r.t. the diffs. BackwardRow
// computes G = M_1 ... M_K g (+ the gdiffs injections), M_k = [[c, 1 - c], [1 - c, c]]
// symmetric. For a tangent h (in place, becomes M_K ... M_1 h, the JVP of the forward
// pass), with h_k = M_{k-1} ... M_1 h the tangent at comparator k:
//   hdiffs[k] = d<h, G>/du_k = (h_k[lo] - h_k[hi]) gsnap[k] c'(u_k),
//   hgdiffs[k] = d<h, G>/dgdiffs_k = h_k[hi] - h_k[lo]   (if non-null).
// gsnap comes from BackwardRow on the same g and gdiffs.
template <typename A>
TFSORT_HD void BackwardRowAdjoint(Relaxation rel, A s, const int32_t* lo, const int32_t* hi,
                                  int64_t num, const A* diffs, const A* gsnap, A* h,
                                  A* hdiffs, A* hgdiffs) {
  for (int64_t k = 0; k < num; ++k) {
    A hg;
    hdiffs[k] = AdjointStep(rel, s, diffs[k], gsnap[k], h + lo[k], h + hi[k], &hg);
    if (hgdiffs != nullptr) hgdiffs[k] = hg;
  }
}

// ---------------------------------------------------------------------------------------
// Relaxed permutation matrix P (n x n, row-major; P[i][j] = weight of input j in sorted
// position i). P's rows are propagated through the comparators with the mixing weights
// alpha, so no matrix is formed per layer.

// Forward: x as in ForwardRow; p (n * n) receives P.
template <typename A>
void ForwardPermRow(Relaxation rel, A s, const int32_t* lo, const int32_t* hi, int64_t num,
                    int n, A* x, A* diffs, A* p) {
  for (int64_t i = 0; i < int64_t{n} * n; ++i) p[i] = A(0);
  for (int i = 0; i < n; ++i) p[int64_t{i} * n + i] = A(1);
  for (int64_t k = 0; k < num; ++k) {
    diffs[k] = CompareSwap(rel, s, x + lo[k], x + hi[k]);
    MixRows(Relax(rel, s, diffs[k]).alpha, p + int64_t{lo[k]} * n, p + int64_t{hi[k]} * n, n);
  }
}

// Segment length (in comparators) of the checkpointed backward pass: balances
// (num / seg) checkpoints of n^2 against seg stored row differences of n.
inline int64_t PermSegment(int64_t num, int n) {
  int64_t seg = static_cast<int64_t>(std::sqrt(static_cast<double>(num) * n)) + 1;
  return seg < num ? seg : (num > 0 ? num : 1);
}

// Scratch sizes for BackwardPermRow.
inline int64_t PermScratchSize(int64_t num, int n) {
  const int64_t seg = PermSegment(num, n);
  const int64_t nn = int64_t{n} * n;
  return ((num + seg - 1) / seg) * nn + seg * n + nn + num;
}

// Backward with a cotangent gp (n * n, overwritten) of P and g (n, overwritten by the
// gradient w.r.t. the input) of the sorted values. dL/dalpha_k = (G_lo - G_hi) . (P_lo -
// P_hi), with G the cotangent after comparator k and P the matrix before it; P is
// recomputed from checkpoints (every PermSegment comparators), so memory is
// O(n^2 sqrt(#comparators / n)) instead of O(n^2 #layers).
template <typename A>
void BackwardPermRow(Relaxation rel, A s, const int32_t* lo, const int32_t* hi, int64_t num,
                     int n, const A* diffs, A* g, A* gp, A* scratch) {
  const int64_t seg = PermSegment(num, n);
  const int64_t nn = int64_t{n} * n;
  const int64_t nseg = (num + seg - 1) / seg;
  A* ckpt = scratch;                 // nseg * nn
  A* dp = ckpt + nseg * nn;          // seg * n
  A* p = dp + seg * n;               // nn
  A* lalpha = p + nn;                // num
  for (int64_t i = 0; i < nn; ++i) p[i] = A(0);
  for (int i = 0; i < n; ++i) p[int64_t{i} * n + i] = A(1);
  for (int64_t k = 0; k < num; ++k) {
    if (k % seg == 0) {
      for (int64_t i = 0; i < nn; ++i) ckpt[(k / seg) * nn + i] = p[i];
    }
    MixRows(Relax(rel, s, diffs[k]).alpha, p + int64_t{lo[k]} * n, p + int64_t{hi[k]} * n, n);
  }
  for (int64_t b = nseg - 1; b >= 0; --b) {
    const int64_t k0 = b * seg;
    const int64_t k1 = k0 + seg < num ? k0 + seg : num;
    for (int64_t i = 0; i < nn; ++i) p[i] = ckpt[b * nn + i];
    for (int64_t k = k0; k < k1; ++k) {
      const A* pi = p + int64_t{lo[k]} * n;
      const A* pj = p + int64_t{hi[k]} * n;
      A* d = dp + (k - k0) * n;
      for (int t = 0; t < n; ++t) d[t] = pi[t] - pj[t];
      MixRows(Relax(rel, s, diffs[k]).alpha, p + int64_t{lo[k]} * n, p + int64_t{hi[k]} * n,
              n);
    }
    for (int64_t k = k1 - 1; k >= k0; --k) {
      A* gi = gp + int64_t{lo[k]} * n;
      A* gj = gp + int64_t{hi[k]} * n;
      const A* d = dp + (k - k0) * n;
      A dot = 0;
      for (int t = 0; t < n; ++t) dot += (gi[t] - gj[t]) * d[t];
      lalpha[k] = dot;
      MixRows(Relax(rel, s, diffs[k]).alpha, gi, gj, n);
    }
  }
  for (int64_t k = num - 1; k >= 0; --k) {
    const Weights<A> w = Relax(rel, s, diffs[k]);
    A& gi = g[lo[k]];
    A& gj = g[hi[k]];
    const A gmn = gi, gmx = gj;
    const A t = w.dalpha * lalpha[k];
    gi = w.c * gmn + (A(1) - w.c) * gmx - t;
    gj = (A(1) - w.c) * gmn + w.c * gmx + t;
  }
}

}  // namespace networks
}  // namespace tfsort

#endif  // TFSORT_CC_KERNELS_NETWORKS_H_
