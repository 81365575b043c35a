// Pool-adjacent-violators (PAV) isotonic regression and the fused soft sort / soft rank
// row kernels built on it. Pure algorithm: no TensorFlow types, compiles under g++ and nvcc.
//
// Problem (decreasing constraints v_0 >= v_1 >= ... >= v_{n-1}):
//   L2: argmin_v 1/2 ||v - y||^2
//   KL: argmin_v sum_i exp(y_i - v_i) + sum_i exp(w_i) v_i
// PAV keeps a stack of blocks with sufficient statistics and merges the newest block into
// its predecessor while the predecessor's value is not larger (ties pool). Each merge
// removes a block, so one left-to-right pass is O(n). Block values:
//   L2: mean(y_B)                      (running sum in Acc, count as an integer)
//   KL: LSE(y_B) - LSE(w_B)            (two running log-sum-exps, merged stably)
//
// Jacobians are block diagonal: L2 blocks are 1/|B| everywhere; KL dv/dy rows are
// softmax(y_B) and dv/dw rows are -softmax(w_B). The soft sort / soft rank of
// Blondel et al., "Fast Differentiable Sorting and Ranking" (ICML 2020), are projections
// onto the permutahedron that reduce to one PAV pass on the sorted row; see
// ../../../README.md ("The math") for the exact formulas used below.
//
// Every function works on one row, with caller-provided scratch, so the CPU kernel shards
// rows across threads and a GPU kernel can run one row per thread.

#ifndef TFSORT_CC_KERNELS_ISOTONIC_H_
#define TFSORT_CC_KERNELS_ISOTONIC_H_

#include <cmath>
#include <cstdint>

#ifdef __CUDACC__
#define TFSORT_HD __host__ __device__
#else
#define TFSORT_HD
#endif

namespace tfsort {
namespace isotonic {

// log(exp(a) + exp(b)) without overflow.
template <typename Acc>
TFSORT_HD inline Acc LogAddExp(Acc a, Acc b) {
  const Acc hi = a > b ? a : b;
  const Acc lo = a > b ? b : a;
  return hi + std::log1p(std::exp(lo - hi));
}

// Scratch for one row of length n: three arrays of n elements.
template <typename Acc>
struct PavScratch {
  Acc* a;      // L2: block sums.   KL: block LSE(y).
  Acc* b;      // L2: block values. KL: block LSE(w) during the pass, block values after.
  int32_t* c;  // L2: block counts. KL: unused.
  int32_t* start;  // first position of each block
};

// The PAV pass alone: leaves the blocks in the scratch (block k starts at s.start[k] and
// has the value s.b[k]) and returns their number. Callers that only walk the blocks (the
// fused kernels) skip writing a per-position solution. y may be of a narrower type than
// Acc (each entry is converted once), so callers need not copy a row to convert it.
//
// Each maximal non-decreasing run y[b] <= ... <= y[e-1] is pushed as one block: PAV would
// pool it anyway (for decreasing constraints a final block's first entry is at most its
// value and its last entry at least it, so y[i] <= y[i+1] never straddles two blocks with
// strictly decreasing values), so the blocks are PAV's, and extending a run touches no
// stack. Measured on fresh rows (session 3): 13.9 -> 9.9 ns per element on noisy trends,
// 3.4 -> 0.8 on soft-rank inputs (which are mostly one increasing run); one flat loop
// over the elements instead of a nested run loop (session 4): 10.8 -> 8.7.
//
// A new block pools with the top of the stack while its mean is not below the top's. With
// kCrossMultiply the test is sum_new * cnt_top >= sum_top * cnt_new (counts are positive),
// which keeps divisions off the loop's critical path, and block values are divided out
// once at the end (8.7 -> 8.3 ns per element on noisy trends, 10.8 -> 9.2 before the flat
// loop). Callers ask for it only where the products cannot overflow Acc: float inputs in
// double, half inputs in float.
template <typename Acc, bool kCrossMultiply = false, typename In>
TFSORT_HD int PavL2Blocks(const In* y, int n, PavScratch<Acc> s) {
  Acc* sum = s.a;
  Acc* val = s.b;
  int32_t* cnt = s.c;
  int top = -1;
  if (n <= 0) return 0;
  // One flat loop: extend the current run [first, i) while y does not decrease, else push
  // it and start the next run at i.
  Acc run = static_cast<Acc>(y[0]);
  int first = 0;
  for (int i = 1; i <= n; ++i) {
    if (i < n && !(y[i] < y[i - 1])) {
      run += static_cast<Acc>(y[i]);
      continue;
    }
    if (kCrossMultiply) {
      // Counts live in val[] as Acc during the pass, which keeps int-to-float conversions
      // off the critical path; block starts are carried, not derived from the counts (a
      // float count is inexact past 2^24).
      Acc c = static_cast<Acc>(i - first);
      while (top >= 0 && run * val[top] >= sum[top] * c) {
        run += sum[top];
        c += val[top];
        first = s.start[top];
        --top;
      }
      ++top;
      sum[top] = run;
      val[top] = c;
    } else {
      int c = i - first;
      Acc mean = c == 1 ? run : run / static_cast<Acc>(c);
      while (top >= 0 && mean >= val[top]) {
        run += sum[top];
        c += cnt[top];
        first = s.start[top];
        mean = run / static_cast<Acc>(c);
        --top;
      }
      ++top;
      sum[top] = run;
      cnt[top] = c;
      val[top] = mean;
    }
    s.start[top] = first;
    if (i < n) {
      run = static_cast<Acc>(y[i]);
      first = i;
    }
  }
  const int blocks = top + 1;
  if (kCrossMultiply) {
    for (int k = 0; k < blocks; ++k) val[k] = val[k] == 1 ? sum[k] : sum[k] / val[k];
  }
  return blocks;
}

// Decreasing KL problem, blocks only (as PavL2Blocks; s.a is left holding LSE(y_B)).
template <typename Acc, typename In>
TFSORT_HD int PavKLBlocks(const In* y, const In* w, int n, PavScratch<Acc> s) {
  Acc* ly = s.a;
  Acc* lw = s.b;
  int top = -1;
  for (int i = 0; i < n; ++i) {
    ++top;
    ly[top] = static_cast<Acc>(y[i]);
    lw[top] = static_cast<Acc>(w[i]);
    s.start[top] = i;
    while (top > 0 && ly[top] - lw[top] >= ly[top - 1] - lw[top - 1]) {
      ly[top - 1] = LogAddExp(ly[top - 1], ly[top]);
      lw[top - 1] = LogAddExp(lw[top - 1], lw[top]);
      --top;
    }
  }
  const int blocks = top + 1;
  for (int k = 0; k < blocks; ++k) lw[k] = ly[k] - lw[k];
  return blocks;
}

// Expands blocks into a value (unless sol is null) and a block id (0, 1, ... from left to
// right) per position.
template <typename Acc>
TFSORT_HD void FillBlocks(int blocks, int n, PavScratch<Acc> s, Acc* sol, int32_t* seg) {
  for (int k = 0; k < blocks; ++k) {
    const int end = k + 1 < blocks ? s.start[k + 1] : n;
    for (int i = s.start[k]; i < end; ++i) {
      if (sol) sol[i] = s.b[k];
      seg[i] = k;
    }
  }
}

// Writes the solution of the decreasing L2 problem into sol[0..n) and a block id per
// position into seg. Returns the number of blocks.
template <typename Acc>
TFSORT_HD int PavL2(const Acc* y, int n, Acc* sol, int32_t* seg, PavScratch<Acc> s) {
  const int blocks = PavL2Blocks<Acc>(y, n, s);
  FillBlocks(blocks, n, s, sol, seg);
  return blocks;
}

// Decreasing KL problem; same outputs as PavL2.
template <typename Acc>
TFSORT_HD int PavKL(const Acc* y, const Acc* w, int n, Acc* sol, int32_t* seg,
                    PavScratch<Acc> s) {
  const int blocks = PavKLBlocks<Acc>(y, w, n, s);
  FillBlocks(blocks, n, s, sol, seg);
  return blocks;
}

// Blocks are maximal runs of equal segment ids. Walking runs (instead of indexing by the
// id) keeps the backward pass memory-safe whatever ids a caller passes in.
TFSORT_HD inline int RunEnd(const int32_t* seg, int begin, int n) {
  int end = begin + 1;
  while (end < n && seg[end] == seg[begin]) ++end;
  return end;
}

// g <- B g: every entry replaced by the mean of its block (the L2 VJP, self-adjoint).
template <typename Acc>
TFSORT_HD void BlockMean(const int32_t* seg, int n, Acc* g) {
  for (int b = 0; b < n;) {
    const int e = RunEnd(seg, b, n);
    Acc sum = 0;
    for (int i = b; i < e; ++i) sum += g[i];
    const Acc mean = sum / static_cast<Acc>(e - b);
    for (int i = b; i < e; ++i) g[i] = mean;
    b = e;
  }
}

// Softmax of x over [b, e) into p.
template <typename Acc>
TFSORT_HD void BlockSoftmax(const Acc* x, int b, int e, Acc* p) {
  Acc m = x[b];
  for (int i = b + 1; i < e; ++i) m = x[i] > m ? x[i] : m;
  Acc z = 0;
  for (int i = b; i < e; ++i) {
    p[i] = std::exp(x[i] - m);
    z += p[i];
  }
  for (int i = b; i < e; ++i) p[i] /= z;
}

// out_i = softmax(x_B)_i * sum_{j in B} g_j  (the KL VJP, K^T g). out may alias g.
template <typename Acc>
TFSORT_HD void BlockSoftmaxSpread(const int32_t* seg, int n, const Acc* x, const Acc* g,
                                  Acc* out) {
  for (int b = 0; b < n;) {
    const int e = RunEnd(seg, b, n);
    Acc sum = 0;
    for (int i = b; i < e; ++i) sum += g[i];
    BlockSoftmax(x, b, e, out);
    for (int i = b; i < e; ++i) out[i] *= sum;
    b = e;
  }
}

// out_i = sum_{j in B} softmax(x_B)_j g_j for i in B  (the adjoint K h). out may alias g.
template <typename Acc>
TFSORT_HD void BlockSoftmaxGather(const int32_t* seg, int n, const Acc* x, const Acc* g,
                                  Acc* out, Acc* p) {
  for (int b = 0; b < n;) {
    const int e = RunEnd(seg, b, n);
    BlockSoftmax(x, b, e, p);
    Acc dot = 0;
    for (int i = b; i < e; ++i) dot += p[i] * g[i];
    for (int i = b; i < e; ++i) out[i] = dot;
    b = e;
  }
}

// KL soft-rank VJP in sorted order. With p = softmax(s_B) and W_B = sum_{i in B} (n - i)
// (the pooled weights rho), r_i = W_B p_i inside a block, so
//   dr/ds = W_B (diag(p) - p p^T),
// which is symmetric: the same routine is its own adjoint. u is overwritten.
template <typename Acc>
TFSORT_HD void KLRankVjp(const int32_t* seg, int n, const Acc* s, Acc* u, Acc* p) {
  for (int b = 0; b < n;) {
    const int e = RunEnd(seg, b, n);
    BlockSoftmax(s, b, e, p);
    Acc w = 0, mean = 0;
    for (int i = b; i < e; ++i) {
      w += static_cast<Acc>(n - i);
      mean += p[i] * u[i];
    }
    for (int i = b; i < e; ++i) u[i] = w * p[i] * (u[i] - mean);
    b = e;
  }
}

}  // namespace isotonic
}  // namespace tfsort

#endif  // TFSORT_CC_KERNELS_ISOTONIC_H_
