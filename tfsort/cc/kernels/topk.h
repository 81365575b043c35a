// Differentiable top-k row kernels. Pure algorithm: no TensorFlow types, compiles under
// g++ and nvcc (TFSORT_HD).
//
// Sigmoid top-k (one row x of length n, eps = regularization_strength, 0 < k < n):
//   p_i = sigmoid((x_i + t) / eps),   t such that f(t) = sum_i p_i - k = 0.
// f is increasing, f(lo) <= 0 <= f(hi) on the bracket
//   [eps * logit(k / n) - max x, eps * logit(k / n) - min x],
// and f'(t) = sum_i v_i with v_i = p_i (1 - p_i) / eps. SigmoidTopKRow runs Newton's method
// (on the log of the smaller side's mass, which is nearly exponential in t where a small
// k's threshold lies) safeguarded by that bracket: a Newton step is taken only when it lands
// strictly inside the bracket and the previous step at least halved |f|; otherwise the
// bracket is bisected in the ordered-integer key space of doubles, which halves the number
// of representable values left on every step (so even a bracket of width 1e300 closes in at
// most 64 bisections). Iterations are capped (kMaxIterations), so no input can hang the
// kernel. It starts from the large-eps solution eps * logit(k / n) - mean(x), or, when eps
// is small against the spread of x, between the k-th and (k+1)-th largest values. Typical
// rows converge in 2-3 evaluations (about 12 at eps = 1e-3 on N(0, 1) data), each O(n) with
// one exp per element.
// Jacobian: J = diag(v) - v v^T / sum(v) (symmetric; 0 where sum(v) == 0), applied in O(n)
// by SigmoidTopKVjp.
//
// Sparse top-k (Sander et al., "Fast, Differentiable and Sparse Top-k", ICML 2023): the L2
// projection of z = x / eps onto {0 <= m <= 1, sum m = k} is, on the descending-sorted row
// s, m = s - isotonic_l2(s - w) with w = (1, ..., 1, 0, ..., 0) (k ones); see
// SparseTopKSortedRow, which reuses isotonic::PavL2.
//
// Every function works on one row with caller-provided buffers (CPU shards rows over
// threads; a GPU kernel can run one row per thread).

#ifndef TFSORT_CC_KERNELS_TOPK_H_
#define TFSORT_CC_KERNELS_TOPK_H_

#include <cmath>
#include <cstdint>
#include <cstring>

#ifndef __CUDA_ARCH__
#include <algorithm>
#endif

#include "tfsort/cc/kernels/isotonic.h"

namespace tfsort {
namespace topk {

constexpr int kMaxIterations = 160;

// Order-preserving map of a double to a signed 64-bit integer (for key-space bisection).
TFSORT_HD inline int64_t DoubleToKey(double d) {
  int64_t i;
  std::memcpy(&i, &d, sizeof(i));
  return i >= 0 ? i : static_cast<int64_t>(0x8000000000000000ull) - i;
}
TFSORT_HD inline double KeyToDouble(int64_t i) {
  if (i < 0) i = static_cast<int64_t>(0x8000000000000000ull) - i;
  double d;
  std::memcpy(&d, &i, sizeof(d));
  return d;
}

// A double strictly between lo < hi, halving the key distance; returns lo when they are
// adjacent doubles.
TFSORT_HD inline double KeyMidpoint(double lo, double hi) {
  const int64_t a = DoubleToKey(lo);
  const int64_t b = DoubleToKey(hi);
  // a/2 + b/2 without overflow, rounded towards a.
  const uint64_t half = (static_cast<uint64_t>(b) - static_cast<uint64_t>(a)) / 2;
  const int64_t mid = a + static_cast<int64_t>(half);
  return KeyToDouble(mid);
}

// exp(x) for x <= 0. The float version is a branch-free Cephes-style polynomial (about
// 1 ulp; 0 below -87, where expf is denormal or 0) that the compiler vectorizes, unlike a
// call to expf; it dominates the sigmoid kernel's time.
TFSORT_HD inline double ExpNonPositive(double x) { return std::exp(x); }
TFSORT_HD inline float ExpNonPositive(float x) {
  // Clamp to -87 on the bits (x <= 0: a larger magnitude is a larger unsigned pattern):
  // an integer select keeps the loop vectorizable under GCC's default -ftrapping-math,
  // where an ordered float comparison feeding arithmetic is not if-converted.
  union {
    float f;
    uint32_t u;
  } in;
  in.f = x;
  const bool underflow = in.u > 0xC2AE0000u;
  in.u = underflow ? 0xC2AE0000u : in.u;
  x = in.f;
  // n = round(x / ln 2) by the 1.5 * 2^23 trick (round-to-nearest, no libm call).
  const float kShift = 12582912.0f;
  const float n = (x * 1.44269504088896341f + kShift) - kShift;
  const float r = (x - n * 0.693359375f) - n * -2.12194440e-4f;
  const float z = r * r;
  float y = 1.9875691500e-4f;
  y = y * r + 1.3981999507e-3f;
  y = y * r + 8.3334519073e-3f;
  y = y * r + 4.1665795894e-2f;
  y = y * r + 1.6666665459e-1f;
  y = y * r + 5.0000001201e-1f;
  y = y * z + r + 1.0f;
  // 2^n from the exponent bits (a union, not memcpy, so the loop still vectorizes; GCC,
  // Clang and nvcc define this type pun).
  union {
    int32_t i;
    float f;
  } scale;
  scale.i = (static_cast<int32_t>(n) + 127) << 23;
  union {
    float f;
    uint32_t u;
  } out;
  out.f = y * scale.f;
  // exp(x < -87) flushes to 0 (an integer mask, not a select, keeps the loop vectorized).
  out.u &= 0u - static_cast<uint32_t>(!underflow);
  return out.f;
}

// One element of EvalSigmoid: p = sigmoid(u), c = 1 - p = sigmoid(-u) (without
// cancellation) and v = p (1 - p) / eps, at u = ((x + th) + tl) * ie (t = th + tl, ie = 1/eps).
template <typename C>
TFSORT_HD inline void SigmoidElem(C x, C th, C tl, C ie, C* p, C* c, C* v) {
  const C u = ((x + th) + tl) * ie;
  const C e = ExpNonPositive(-std::fabs(u));
  const C r = C(1) / (C(1) + e);
  const C er = e * r;
#ifdef __CUDA_ARCH__
  const bool pos = u >= C(0);  // u is not NaN: rows are checked finite first
#else
  const bool pos = std::isgreaterequal(u, C(0));  // quiet compare: vectorizes
#endif
  *p = pos ? r : er;
  *c = pos ? er : r;
  *v = er * r * ie;
}

// t split into th + tl in C (tl = 0 for double); see EvalSigmoidImpl.
template <typename C>
TFSORT_HD inline void SplitThreshold(double t, C* th, C* tl) {
  *th = static_cast<C>(t);
  *tl = static_cast<C>(t - static_cast<double>(*th));
}

// Evaluates, at threshold t, p_i = sigmoid(u_i), c_i = 1 - p_i = sigmoid(-u_i) (without
// cancellation) and v_i = p_i (1 - p_i) / eps, u_i = (x_i + t) / eps. Returns sum p;
// sets sum v and sum c. The element loop has no reductions so that it vectorizes; sums are
// accumulated in double with four partial sums in a fixed order (deterministic).
template <typename C>
TFSORT_HD inline double EvalSigmoidImpl(const C* x, int n, double t, double inv_eps, C* p,
                                        C* c, C* v, double* sum_v, double* sum_c) {
  const C ie = static_cast<C>(inv_eps);
  // t as an unevaluated sum th + tl (tl = 0 for double). Near the threshold x_i + th
  // cancels exactly (Sterbenz), so u keeps full precision where the mask is not saturated
  // while the loop stays in C (four floats per SSE vector instead of two doubles).
  C th, tl;
  SplitThreshold(t, &th, &tl);
  for (int i = 0; i < n; ++i) SigmoidElem(x[i], th, tl, ie, p + i, c + i, v + i);
  double sp[4] = {0, 0, 0, 0}, sc[4] = {0, 0, 0, 0}, sv[4] = {0, 0, 0, 0};
  int i = 0;
  for (; i + 4 <= n; i += 4) {
    for (int j = 0; j < 4; ++j) {
      sp[j] += static_cast<double>(p[i + j]);
      sc[j] += static_cast<double>(c[i + j]);
      sv[j] += static_cast<double>(v[i + j]);
    }
  }
  for (; i < n; ++i) {
    sp[0] += static_cast<double>(p[i]);
    sc[0] += static_cast<double>(c[i]);
    sv[0] += static_cast<double>(v[i]);
  }
  *sum_v = (sv[0] + sv[1]) + (sv[2] + sv[3]);
  *sum_c = (sc[0] + sc[1]) + (sc[2] + sc[3]);
  return (sp[0] + sp[1]) + (sp[2] + sp[3]);
}

// On x86-64 hosts with GCC the float evaluation is also compiled for AVX2 and picked at
// run time (function multi-versioning). Same IEEE operations in the same order (no FMA), so
// results are bit-identical to the baseline build.
#if defined(__GNUC__) && !defined(__clang__) && !defined(__CUDACC__) && defined(__x86_64__)
#define TFSORT_CPU_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define TFSORT_CPU_CLONES
#endif

TFSORT_CPU_CLONES TFSORT_HD inline double EvalSigmoid(const float* x, int n, double t,
                                                      double inv_eps, float* p, float* c,
                                                      float* v, double* sum_v, double* sum_c) {
  return EvalSigmoidImpl(x, n, t, inv_eps, p, c, v, sum_v, sum_c);
}
TFSORT_HD inline double EvalSigmoid(const double* x, int n, double t, double inv_eps,
                                    double* p, double* c, double* v, double* sum_v,
                                    double* sum_c) {
  return EvalSigmoidImpl(x, n, t, inv_eps, p, c, v, sum_v, sum_c);
}

// The threshold iteration of SigmoidTopKRow as a state machine, so that a GPU kernel can
// evaluate the sums cooperatively and run the same control logic: Init, then repeatedly
// evaluate the sums at t and call Update until it returns something other than kContinue.
// The mask is then p(t) (kDone), or p(t) + v(t) dt clipped to [0, 1] (kFirstOrder, the
// converged Newton step's first-order finish), with p, v evaluated at the final t.
struct SigmoidSolver {
  enum Action { kContinue = 0, kDone = 1, kFirstOrder = 2 };
  double k = 0, n = 0, eps = 0, lo = 0, hi = 0, t = 0, dt = 0;
  double tol_u = 0, tol_t = 0, prev_abs_f = 0;
  bool last_newton = false;
  int it = 0;

  // Bracket, tolerances and the large-eps start t = eps logit(k / n) - mean. c_bytes is
  // sizeof(C), the element compute type.
  TFSORT_HD void Init(int n_, double k_, double eps_, double xmin, double xmax, double mean,
                      int c_bytes) {
    k = k_;
    eps = eps_;
    n = static_cast<double>(n_);
    const double base = eps * std::log(k / (n - k));
    lo = base - xmax;
    hi = base - xmin;
    // The mean lies in [min, max], so t0 lies in the bracket; for a constant row t0 is
    // exact (see Start for the small-eps start).
    t = base - mean;
    // Newton's error after a step dt is O(dt^2 / eps) in t, so once |dt| / eps is below the
    // square root of the working precision the first-order update p += v * dt finishes the
    // solve (mask error below one rounding of C); tol_t covers rounding of t itself.
    tol_u = (c_bytes == 4 ? 2e-4 : 1e-8) * eps;
    tol_t = (c_bytes == 4 ? 2e-7 : 4e-16);
    prev_abs_f = HUGE_VAL;
    last_newton = false;
    it = 0;
    dt = 0.0;
    Clamp();
  }

  // Replaces the start (clamped to the bracket).
  TFSORT_HD void Start(double t0) {
    t = t0;
    Clamp();
  }

  TFSORT_HD void Clamp() {
    if (!(t >= lo)) t = lo;
    if (!(t <= hi)) t = hi;
  }

  // Takes the sums at the current t (sp = sum p, sv = sum v, sq = sum (1 - p)); returns
  // kContinue with a new t, or the final action (t then is the final threshold and, for
  // kFirstOrder, dt the last step).
  TFSORT_HD Action Update(double sp, double sv, double sq) {
    const double f = sp - k;
    if (f == 0.0 || lo == hi) return kDone;
    if (f < 0.0) {
      lo = t;
    } else {
      hi = t;
    }
    const double abs_f = f < 0.0 ? -f : f;
    // After a Newton step, take another only if that one at least halved |f|.
    const bool newton_ok = sv > 0.0 && (!last_newton || abs_f <= 0.5 * prev_abs_f);
    prev_abs_f = abs_f;
    last_newton = false;
    if (newton_ok) {
      // Newton on log(sum p) - log(k) when k <= n / 2, else on log(sum(1 - p)) - log(n - k):
      // the selected side's mass is nearly exponential in t in the tail where the root of a
      // small k lies, where plain Newton crawls by about eps per step and the log form is
      // nearly exact.
      double step = -f / sv;
      if (2.0 * k <= n && sp > 0.0) {
        step = std::log(k / sp) * sp / sv;
      } else if (2.0 * k > n && sq > 0.0) {
        step = -std::log((n - k) / sq) * sq / sv;
      }
      const double tn = t + step;
      const double abs_dt = step < 0.0 ? -step : step;
      if (abs_dt <= tol_u || abs_dt <= tol_t * ((t < 0.0 ? -t : t) + eps)) {
        dt = step;
        return kFirstOrder;
      }
      if (tn > lo && tn < hi) {
        t = tn;
        last_newton = true;
        return Next();
      }
    }
    const double mid = KeyMidpoint(lo, hi);
    if (mid == lo || mid == hi) return kDone;  // bracket closed to adjacent doubles
    t = mid;
    return Next();
  }

 private:
  // Counts an iteration; at the cap the mask is p at the (unevaluated) new t.
  TFSORT_HD Action Next() { return ++it < kMaxIterations ? kContinue : kDone; }
};

// Solves for the threshold of one finite row and writes the mask into p (v and c are
// scratch of n elements). Returns the threshold t. Requires 0 < k < n and eps > 0.
template <typename C>
TFSORT_HD double SigmoidTopKRow(const C* x, int n, double k, double eps, C* p, C* v, C* c) {
  const double inv_eps = 1.0 / eps;
  double xmax = static_cast<double>(x[0]), xmin = xmax, mean = 0.0;
  for (int i = 0; i < n; ++i) {
    const double xi = static_cast<double>(x[i]);
    xmax = xi > xmax ? xi : xmax;
    xmin = xi < xmin ? xi : xmin;
    mean += xi;
  }
  mean /= n;
  SigmoidSolver solver;
  solver.Init(n, k, eps, xmin, xmax, mean, static_cast<int>(sizeof(C)));
  // Init starts from the large-eps solution. When eps is small against the spread the mask
  // is near the hard top-k, whose threshold lies between the k-th and (k+1)-th largest
  // values, so start there instead (an O(n) selection, worth about one evaluation, where
  // Newton from the mean would crawl through the order statistics for many).
#ifndef __CUDA_ARCH__
  if (16.0 * eps < xmax - xmin) {
    int kk = static_cast<int>(k + 0.5);
    kk = kk < 1 ? 1 : (kk > n - 1 ? n - 1 : kk);
    for (int i = 0; i < n; ++i) v[i] = x[i];
    std::nth_element(v, v + (kk - 1), v + n, [](C a, C b) { return a > b; });
    C next = v[kk];
    for (int i = kk + 1; i < n; ++i) next = v[i] > next ? v[i] : next;
    solver.Start(-0.5 * (static_cast<double>(v[kk - 1]) + static_cast<double>(next)));
  }
#endif
  for (;;) {
    double sv, sq;
    const double sp = EvalSigmoid(x, n, solver.t, inv_eps, p, c, v, &sv, &sq);
    const SigmoidSolver::Action act = solver.Update(sp, sv, sq);
    if (act == SigmoidSolver::kContinue) continue;
    if (act == SigmoidSolver::kFirstOrder) {
      // Converged: a first-order update of p finishes the last (tiny) step.
      const C cdt = static_cast<C>(solver.dt);
      for (int i = 0; i < n; ++i) {
        C pi = p[i] + v[i] * cdt;
        p[i] = pi < C(0) ? C(0) : (pi > C(1) ? C(1) : pi);
      }
      return solver.t + solver.dt;
    }
    // kDone: p must hold p(t); after the iteration cap t is new and not yet evaluated.
    if (solver.it >= kMaxIterations) EvalSigmoid(x, n, solver.t, inv_eps, p, c, v, &sv, &sq);
    return solver.t;
  }
}

// VJP (= JVP, J is symmetric) of the sigmoid top-k mask given the mask p:
// out = v * g - v * (v . g) / sum(v), v = p (1 - p) / eps. out may alias g.
template <typename C>
TFSORT_HD void SigmoidTopKVjp(const C* p, const C* g, int n, double inv_eps, C* out) {
  double sv = 0.0, svg = 0.0;
  for (int i = 0; i < n; ++i) {
    const double vi = static_cast<double>(p[i]) * (1.0 - static_cast<double>(p[i]));
    sv += vi;
    svg += vi * static_cast<double>(g[i]);
  }
  const double c = sv > 0.0 ? svg / sv : 0.0;
  for (int i = 0; i < n; ++i) {
    const double vi = static_cast<double>(p[i]) * (1.0 - static_cast<double>(p[i]));
    out[i] = static_cast<C>(vi * inv_eps * (static_cast<double>(g[i]) - c));
  }
}

// Sparse top-k on one descending-sorted row s (already divided by eps), integer 0 < k < n.
// Writes the mask m (sorted order) and support[i] = 1 for the entries of the fractional
// block (whose mask lies strictly between the caps and moves with s), 0 elsewhere.
// y, sol and seg are scratch of n elements; pav is PavL2 scratch.
//
// With v = isotonic_l2(s - w) the projection is m = s - v. Blocks that do not straddle the
// k-th position only pool exact ties and have m = w exactly; the straddling block (if any)
// gives the clip threshold tau = -v, and m = clip(s + tau, 0, 1) writes exact 0s and 1s
// outside it (s - v would round them).
template <typename A>
TFSORT_HD void SparseTopKSortedRow(const A* s, int n, int k, A* m, int32_t* support, A* y,
                                   A* sol, int32_t* seg, isotonic::PavScratch<A> pav) {
  for (int i = 0; i < n; ++i) y[i] = i < k ? s[i] - A(1) : s[i];
  isotonic::PavL2<A>(y, n, sol, seg, pav);
  if (seg[k - 1] != seg[k]) {
    for (int i = 0; i < n; ++i) {
      m[i] = i < k ? A(1) : A(0);
      support[i] = 0;
    }
    return;
  }
  const A tau = -sol[k];
  const int32_t b = seg[k];
  for (int i = 0; i < n; ++i) {
    const A mi = s[i] + tau;
    m[i] = mi < A(0) ? A(0) : (mi > A(1) ? A(1) : mi);
    support[i] = seg[i] == b ? 1 : 0;
  }
}

// VJP of the sparse top-k mask with respect to z (multiply by 1/eps for x): on the support
// F, g_i - mean_F(g); 0 elsewhere. Linear and self-adjoint. out may alias g.
template <typename A>
TFSORT_HD void SparseTopKVjp(const int32_t* support, const A* g, int n, A scale, A* out) {
  A sum = 0;
  int cnt = 0;
  for (int i = 0; i < n; ++i) {
    if (support[i] == 1) {
      sum += g[i];
      ++cnt;
    }
  }
  const A mean = cnt > 0 ? sum / static_cast<A>(cnt) : A(0);
  for (int i = 0; i < n; ++i) out[i] = support[i] == 1 ? scale * (g[i] - mean) : A(0);
}

}  // namespace topk
}  // namespace tfsort

#endif  // TFSORT_CC_KERNELS_TOPK_H_
