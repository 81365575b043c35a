// Row-level glue of the isotonic family for the CUDA launchers, written as host+device
// (TFSORT_HD) functions on top of the CPU-tested primitives in
// tfsort/cc/kernels/isotonic.h. No TensorFlow and no CUDA headers: tests/
// test_cuda_host_logic.py compiles this header with g++ and checks every function here
// against tests/reference.py, so the code the GPU runs is exercised on the host too.
//
// Storage conversions come in through a Cvt policy (static Load, Store, Finite, NaN), so
// the .cu.cc files plug in __half / __nv_bfloat16 and the host test plugs in float/double.
//
// Two ways to run PAV on one row:
//  * serial (one thread per row): isotonic::PavL2 / PavKL, exactly the CPU code;
//  * block-parallel (one thread block per long row), in phases that a host test can run
//    thread by thread:
//      1. ParPavChunk      every thread runs PAV on its own contiguous chunk;
//      2. ParPavMergePair  log2(chunks) levels; at each level, neighbouring groups of
//                          chunks are joined by merging the blocks at their boundary
//                          until no constraint is violated there (only the boundary can
//                          violate: each side is already a PAV solution);
//      3. ParPavCountStarts / ParPavScan / ParPavEmit   block ids and values per position.
//    Any order of pooling adjacent violators ends at the same optimum, so the result is
//    the serial one up to the rounding of the pooled sums.
//    Blocks are stored by position: the statistics of a block live at its first
//    position p, end_of[p] is its (exclusive) end and start_of[end - 1] == p; end_of is
//    -1 at every position that does not start a block. Merging never moves data.

#ifndef TFSORT_CUDA_ISOTONIC_ROWS_H_
#define TFSORT_CUDA_ISOTONIC_ROWS_H_

#include <cstdint>
#include <cstring>

#include "tfsort/cc/kernels/isotonic.h"

namespace tfsort {
namespace isotonic_rows {

// Packed aux (as in tfsort/cc/kernels/isotonic_kernels.cc): permutation index in the low
// 31 bits, block-start flag in the sign bit, -1 everywhere for a non-finite row.
constexpr int32_t kInvalidRow = -1;
constexpr uint32_t kBlockStart = 0x80000000u;

// Monotone float -> unsigned maps (a < b <=> key(a) < key(b)), as sort_util.h.
TFSORT_HD inline uint32_t AscendingKey(float f) {
  uint32_t u;
  memcpy(&u, &f, sizeof(u));
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}
TFSORT_HD inline uint64_t AscendingKey(double f) {
  uint64_t u;
  memcpy(&u, &f, sizeof(u));
  return (u & 0x8000000000000000ull) ? ~u : (u | 0x8000000000000000ull);
}

// Sign used by the fused ops: rank sorts sign * x / eps descending with sign = +1 for
// ascending ranks; sort sorts sign * x descending with sign = -1 for an ascending sort.
TFSORT_HD inline int SoftSign(bool rank, bool descending) {
  return rank ? (descending ? -1 : 1) : (descending ? 1 : -1);
}

// ---------------------------------------------------------------------------------------
// Serial rows (one thread per row).

template <typename A>
struct RowScratch {
  A* y;
  A* w;
  A* sol;
  int32_t* seg;
  isotonic::PavScratch<A> pav;
};

template <typename T, typename Cvt>
TFSORT_HD inline bool RowFinite(const T* x, int n) {
  for (int i = 0; i < n; ++i)
    if (!Cvt::Finite(x[i])) return false;
  return true;
}

// IsotonicL2 / IsotonicKL on one row (w ignored unless kKL). out may alias y.
template <typename T, typename A, bool kKL, typename Cvt>
TFSORT_HD void IsotonicRow(const T* yr, const T* wr, int n, bool inc, T* out, int32_t* sr,
                           RowScratch<A> b) {
  if (!RowFinite<T, Cvt>(yr, n) || (kKL && !RowFinite<T, Cvt>(wr, n))) {
    for (int i = 0; i < n; ++i) {
      out[i] = Cvt::NaN();
      sr[i] = -1;
    }
    return;
  }
  // Increasing constraints = decreasing constraints on the reversed row.
  for (int i = 0; i < n; ++i) {
    const int j = inc ? n - 1 - i : i;
    b.y[i] = Cvt::Load(yr[j]);
    if (kKL) b.w[i] = Cvt::Load(wr[j]);
  }
  const int blocks = kKL ? isotonic::PavKL<A>(b.y, b.w, n, b.sol, b.seg, b.pav)
                         : isotonic::PavL2<A>(b.y, n, b.sol, b.seg, b.pav);
  for (int i = 0; i < n; ++i) {
    const int j = inc ? n - 1 - i : i;
    out[j] = Cvt::Store(b.sol[i]);
    sr[j] = inc ? blocks - 1 - b.seg[i] : b.seg[i];
  }
}

// IsotonicL2Grad on one row: block means. buf has n entries. out may alias g.
template <typename T, typename A, typename Cvt>
TFSORT_HD void IsotonicL2GradRow(const T* g, const int32_t* sr, int n, T* o, A* buf) {
  if (sr[0] < 0) {
    for (int i = 0; i < n; ++i) o[i] = Cvt::NaN();
    return;
  }
  for (int i = 0; i < n; ++i) buf[i] = Cvt::Load(g[i]);
  isotonic::BlockMean(sr, n, buf);
  for (int i = 0; i < n; ++i) o[i] = Cvt::Store(buf[i]);
}

// IsotonicKLGrad on one row. gb, xb, ob, pb have n entries each.
template <typename T, typename A, typename Cvt>
TFSORT_HD void IsotonicKLGradRow(const T* g, const T* y, const T* w, const int32_t* sr,
                                 int n, bool adjoint, T* gy, T* gw, A* gb, A* xb, A* ob,
                                 A* pb) {
  if (sr[0] < 0) {
    for (int i = 0; i < n; ++i) gy[i] = gw[i] = Cvt::NaN();
    return;
  }
  for (int i = 0; i < n; ++i) gb[i] = Cvt::Load(g[i]);
  for (int pass = 0; pass < 2; ++pass) {
    const T* x = pass == 0 ? y : w;
    T* dst = pass == 0 ? gy : gw;
    for (int i = 0; i < n; ++i) xb[i] = Cvt::Load(x[i]);
    if (adjoint) {
      isotonic::BlockSoftmaxGather(sr, n, xb, gb, ob, pb);
    } else {
      isotonic::BlockSoftmaxSpread(sr, n, xb, gb, ob);
    }
    const A sign = pass == 0 ? A(1) : A(-1);
    for (int i = 0; i < n; ++i) dst[i] = Cvt::Store(sign * ob[i]);
  }
}

// ---------------------------------------------------------------------------------------
// Fused soft rank / soft sort (formulas of design.md section 3, as SoftRow in
// isotonic_kernels.cc). Per sorted position i, with xv = x[perm[i]]:
//   rank: s = sign xv / eps;  L2: y = s - (n - i), v = PavL2(y),   r = s - v
//                             KL: y = log(n - i),  v = PavKL(s, y), r = exp(s - v)
//   sort: s = sign xv;  y = (n - i) / eps;
//                             L2: d = y - s, v = PavL2(d);  KL: v = PavKL(y, s)
//                             out_i = sign > 0 ? y - v : v - y

template <typename A>
struct SoftScratch {
  A* s;
  A* y;
  A* d;  // PAV input for sort L2
  A* v;  // PAV solution
};

// Fills s, y, d at sorted position i.
template <typename A, bool kRank>
TFSORT_HD inline void SoftPrep(int i, int n, bool kl, int sign, A eps, A xv, SoftScratch<A> b) {
  if (kRank) {
    b.s[i] = static_cast<A>(sign) * xv / eps;
    b.y[i] = kl ? static_cast<A>(std::log(static_cast<A>(n - i)))
                : b.s[i] - static_cast<A>(n - i);
  } else {
    b.s[i] = static_cast<A>(sign) * xv;
    b.y[i] = static_cast<A>(n - i) / eps;
    if (!kl) b.d[i] = b.y[i] - b.s[i];
  }
}

// PAV inputs for the fused ops: (first, second) as passed to PavL2 / PavKL.
template <typename A, bool kRank>
TFSORT_HD inline const A* SoftPavY(bool kl, SoftScratch<A> b) {
  return kRank ? (kl ? b.s : b.y) : (kl ? b.y : b.d);
}
template <typename A, bool kRank>
TFSORT_HD inline const A* SoftPavW(bool kl, SoftScratch<A> b) {
  return kl ? (kRank ? b.y : b.s) : nullptr;
}

// Output value at sorted position i (goes to out[perm[i]] for rank, out[i] for sort).
template <typename A, bool kRank>
TFSORT_HD inline A SoftValue(int i, bool kl, int sign, SoftScratch<A> b) {
  if (kRank) return kl ? static_cast<A>(std::exp(b.s[i] - b.v[i])) : b.s[i] - b.v[i];
  // Written as a difference (not sign * (y - v)) so that exact zeros are +0.
  return sign > 0 ? b.y[i] - b.v[i] : b.v[i] - b.y[i];
}

// aux word of sorted position i from perm and the PAV block ids.
TFSORT_HD inline int32_t PackAuxAt(const int32_t* perm, const int32_t* seg, int i) {
  const bool start = i == 0 || seg[i] != seg[i - 1];
  return static_cast<int32_t>(static_cast<uint32_t>(perm[i]) | (start ? kBlockStart : 0u));
}

// One whole row, serially, given the descending argsort perm of sign * x (ties by index).
// out (values) and aux may be null. Fills seg (sorted order). Returns false (and writes
// the NaN row / invalid aux) for a row with NaN or +-inf.
template <typename T, typename A, bool kRank, typename Cvt>
TFSORT_HD bool SoftRow(const T* xr, const int32_t* pr, int n, bool kl, bool descending,
                       A eps, T* out, int32_t* aux, int32_t* sr, SoftScratch<A> b,
                       isotonic::PavScratch<A> pav) {
  if (!RowFinite<T, Cvt>(xr, n)) {
    if (out)
      for (int i = 0; i < n; ++i) out[i] = Cvt::NaN();
    if (aux)
      for (int i = 0; i < n; ++i) aux[i] = kInvalidRow;
    return false;
  }
  const int sign = SoftSign(kRank, descending);
  for (int i = 0; i < n; ++i) SoftPrep<A, kRank>(i, n, kl, sign, eps, Cvt::Load(xr[pr[i]]), b);
  if (kl) {
    isotonic::PavKL<A>(SoftPavY<A, kRank>(kl, b), SoftPavW<A, kRank>(kl, b), n, b.v, sr, pav);
  } else {
    isotonic::PavL2<A>(SoftPavY<A, kRank>(kl, b), n, b.v, sr, pav);
  }
  if (out) {
    for (int i = 0; i < n; ++i) {
      const A r = SoftValue<A, kRank>(i, kl, sign, b);
      out[kRank ? pr[i] : i] = Cvt::Store(r);
    }
  }
  if (aux)
    for (int i = 0; i < n; ++i) aux[i] = PackAuxAt(pr, sr, i);
  return true;
}

// Returns 1 for a valid row, 0 for a non-finite row, -1 for corrupt aux.
TFSORT_HD inline int UnpackAux(const int32_t* aux, int n, int32_t* perm, int32_t* seg) {
  if (aux[0] == kInvalidRow) return 0;
  int32_t block = -1;
  for (int i = 0; i < n; ++i) {
    const uint32_t a = static_cast<uint32_t>(aux[i]);
    const int32_t p = static_cast<int32_t>(a & ~kBlockStart);
    if (p >= n) return -1;
    perm[i] = p;
    if ((a & kBlockStart) || i == 0) ++block;
    seg[i] = block;
  }
  return 1;
}

// Gradient of one row given perm and seg (sorted order); u, s, p have n entries.
// rank: result = sign/eps P^T (I - B) P g (L2) or the KL rank VJP; sort: the block
// mean / softmax spread of the sorted cotangent, scattered back; sort with adjoint: the
// JVP (tangent of values -> tangent of the sorted output).
template <typename T, typename A, bool kRank, typename Cvt>
TFSORT_HD void SoftGradRow(const T* gr, const T* xr, const int32_t* pr, const int32_t* sr,
                           int n, bool kl, bool descending, bool adjoint, A eps, T* o, A* u,
                           A* s, A* p) {
  const int sign = SoftSign(kRank, descending);
  if (kRank) {
    for (int i = 0; i < n; ++i) u[i] = Cvt::Load(gr[pr[i]]);
    if (kl) {
      for (int i = 0; i < n; ++i) s[i] = static_cast<A>(sign) * Cvt::Load(xr[pr[i]]) / eps;
      isotonic::KLRankVjp(sr, n, s, u, p);
    } else {
      for (int i = 0; i < n; ++i) p[i] = u[i];
      isotonic::BlockMean(sr, n, p);
      for (int i = 0; i < n; ++i) u[i] -= p[i];
    }
    for (int i = 0; i < n; ++i) o[pr[i]] = Cvt::Store(static_cast<A>(sign) * u[i] / eps);
  } else if (!adjoint) {
    for (int i = 0; i < n; ++i) u[i] = Cvt::Load(gr[i]);
    if (kl) {
      for (int i = 0; i < n; ++i) s[i] = static_cast<A>(sign) * Cvt::Load(xr[pr[i]]);
      isotonic::BlockSoftmaxSpread(sr, n, s, u, u);
    } else {
      isotonic::BlockMean(sr, n, u);
    }
    for (int i = 0; i < n; ++i) o[pr[i]] = Cvt::Store(u[i]);
  } else {
    for (int i = 0; i < n; ++i) u[i] = Cvt::Load(gr[pr[i]]);
    if (kl) {
      for (int i = 0; i < n; ++i) s[i] = static_cast<A>(sign) * Cvt::Load(xr[pr[i]]);
      isotonic::BlockSoftmaxGather(sr, n, s, u, u, p);
    } else {
      isotonic::BlockMean(sr, n, u);
    }
    for (int i = 0; i < n; ++i) o[i] = Cvt::Store(u[i]);
  }
}

// ---------------------------------------------------------------------------------------
// Block-parallel PAV on one row (see the file comment). Every array has n entries.

template <typename A>
struct ParPav {
  A* a;               // L2: block sums.  KL: block LSE(y).
  A* b;               // KL: block LSE(w). L2: unused.
  int32_t* cnt;       // L2: block counts. KL: unused.
  int32_t* slot;      // phase 1 stack: start of the block in each stack slot
  int32_t* end_of;    // at a block start: its exclusive end; -1 elsewhere
  int32_t* start_of;  // at a block's last position: its start
};

TFSORT_HD inline int ChunkBegin(int t, int chunks, int n) {
  return static_cast<int>(static_cast<int64_t>(t) * n / chunks);
}

template <typename A, bool kKL>
TFSORT_HD inline A ParValue(const ParPav<A>& s, int k) {
  return kKL ? s.a[k] - s.b[k] : s.a[k] / static_cast<A>(s.cnt[k]);
}

// Pools the statistics of entry r into entry l.
template <typename A, bool kKL>
TFSORT_HD inline void ParPool(const ParPav<A>& s, int l, int r) {
  if (kKL) {
    s.a[l] = isotonic::LogAddExp(s.a[l], s.a[r]);
    s.b[l] = isotonic::LogAddExp(s.b[l], s.b[r]);
  } else {
    s.a[l] += s.a[r];
    s.cnt[l] += s.cnt[r];
  }
}

// Phase 1 (thread t of `chunks`): serial PAV on positions [ChunkBegin(t), ChunkBegin(t+1)).
// y (and w for KL) are read only inside the chunk.
template <typename A, bool kKL>
TFSORT_HD void ParPavChunk(const A* y, const A* w, int n, int t, int chunks, ParPav<A> s) {
  const int lo = ChunkBegin(t, chunks, n);
  const int hi = ChunkBegin(t + 1, chunks, n);
  // The stack lives in slots lo, lo + 1, ... of a / b / cnt / slot.
  int top = lo - 1;
  for (int i = lo; i < hi; ++i) {
    ++top;
    s.a[top] = y[i];
    if (kKL) {
      s.b[top] = w[i];
    } else {
      s.cnt[top] = 1;
    }
    s.slot[top] = i;
    while (top > lo && ParValue<A, kKL>(s, top) >= ParValue<A, kKL>(s, top - 1)) {
      ParPool<A, kKL>(s, top - 1, top);
      --top;
    }
  }
  for (int i = lo; i < hi; ++i) s.end_of[i] = -1;
  // Move each block from its slot k to its start (>= k), last block first: the slots
  // above k are already moved and starts are strictly increasing, so nothing unread or
  // final is overwritten.
  for (int k = top; k >= lo; --k) {
    const int st = s.slot[k];
    const int en = k < top ? s.slot[k + 1] : hi;
    s.a[st] = s.a[k];
    if (kKL) {
      s.b[st] = s.b[k];
    } else {
      s.cnt[st] = s.cnt[k];
    }
    s.end_of[st] = en;
    s.start_of[en - 1] = st;
  }
}

// Absorbs the block starting at r into the adjacent block starting at l (l before r).
template <typename A, bool kKL>
TFSORT_HD inline void ParAbsorb(const ParPav<A>& s, int l, int r) {
  ParPool<A, kKL>(s, l, r);
  const int e = s.end_of[r];
  s.end_of[r] = -1;
  s.end_of[l] = e;
  s.start_of[e - 1] = l;
}

// Number of pairs at the merge level whose groups are `group` chunks wide.
TFSORT_HD inline int ParPavPairs(int chunks, int group) {
  return static_cast<int>((chunks + 2 * group - 1) / (2 * group));
}

// Phase 2 (pair j at one level): joins chunk groups [2j g, (2j+1) g) and
// [(2j+1) g, (2j+2) g) by pooling violators at their boundary. Levels g = 1, 2, 4, ...
// < chunks run one after the other; pairs of one level touch disjoint ranges.
template <typename A, bool kKL>
TFSORT_HD void ParPavMergePair(int n, int j, int group, int chunks, ParPav<A> s) {
  const int mid_chunk = (2 * j + 1) * group;
  if (mid_chunk >= chunks) return;
  const int hi_chunk = mid_chunk + group < chunks ? mid_chunk + group : chunks;
  const int lo = ChunkBegin(2 * j * group, chunks, n);
  const int mid = ChunkBegin(mid_chunk, chunks, n);
  const int hi = ChunkBegin(hi_chunk, chunks, n);
  if (lo == mid || mid == hi) return;
  int cur = s.start_of[mid - 1];
  if (!(ParValue<A, kKL>(s, mid) >= ParValue<A, kKL>(s, cur))) return;
  ParAbsorb<A, kKL>(s, cur, mid);
  for (;;) {
    if (cur > lo) {
      const int left = s.start_of[cur - 1];
      if (ParValue<A, kKL>(s, cur) >= ParValue<A, kKL>(s, left)) {
        ParAbsorb<A, kKL>(s, left, cur);
        cur = left;
        continue;
      }
    }
    const int e = s.end_of[cur];
    if (e < hi && ParValue<A, kKL>(s, e) >= ParValue<A, kKL>(s, cur)) {
      ParAbsorb<A, kKL>(s, cur, e);
      continue;
    }
    break;
  }
}

// Phase 3a (thread t): number of block starts in chunk t and the last one (-1 if none).
template <typename A>
TFSORT_HD void ParPavCountStarts(int n, int t, int chunks, ParPav<A> s, int32_t* count,
                                 int32_t* last) {
  const int lo = ChunkBegin(t, chunks, n);
  const int hi = ChunkBegin(t + 1, chunks, n);
  int32_t c = 0, l = -1;
  for (int i = lo; i < hi; ++i) {
    if (s.end_of[i] >= 0) {
      ++c;
      l = i;
    }
  }
  count[t] = c;
  last[t] = l;
}

// Phase 3b (one thread): count -> block ids before each chunk (exclusive scan),
// last -> start of the block open at each chunk's beginning (the last start before it).
TFSORT_HD inline void ParPavScan(int chunks, int32_t* count, int32_t* last) {
  int32_t sum = 0, open = -1;
  for (int t = 0; t < chunks; ++t) {
    const int32_t c = count[t], l = last[t];
    count[t] = sum;
    last[t] = open;
    sum += c;
    if (l >= 0) open = l;
  }
}

// Phase 3c (thread t): solution and block id for every position of chunk t.
template <typename A, bool kKL>
TFSORT_HD void ParPavEmit(int n, int t, int chunks, ParPav<A> s, const int32_t* base,
                          const int32_t* open, A* sol, int32_t* seg) {
  const int lo = ChunkBegin(t, chunks, n);
  const int hi = ChunkBegin(t + 1, chunks, n);
  int32_t id = base[t] - 1;
  A v = open[t] >= 0 ? ParValue<A, kKL>(s, open[t]) : A(0);
  for (int i = lo; i < hi; ++i) {
    if (s.end_of[i] >= 0) {
      ++id;
      v = ParValue<A, kKL>(s, i);
    }
    sol[i] = v;
    seg[i] = id;
  }
}


// ---------------------------------------------------------------------------------------
// Block-parallel segmented VJPs (one thread block per long row). The backward passes are
// per-PAV-block reductions followed by an elementwise map; blocks are runs that begin
// where start[i] != 0 (start[0] != 0 always). Every per-block quantity needed by any of the
// VJPs fits in one associative statistic:
//   m, z, zg  online softmax of x: m = max x, z = sum exp(x - m), zg = sum exp(x - m) u
//   sum       sum u;  w  sum (n - i) (the pooled rho of KL soft rank);  count
// Phases, as for the PAV: SegChunk (thread t: a statistic per run piece of its chunk,
// stored at the piece's first position), SegJoin (one thread: pieces continuing a run
// from the previous chunk are folded into the run's first piece), SegEmit (thread t:
// the VJP value of every position of its chunk from its run's statistic).

enum SegMode {
  kSegMean = 0,    // sum / count                     (BlockMean)
  kSegSpread = 1,  // softmax(x)_i * sum              (BlockSoftmaxSpread)
  kSegGather = 2,  // zg / z                          (BlockSoftmaxGather)
  kSegCenter = 3,  // u_i - sum / count               (L2 soft rank: u - B u)
  kSegKLRank = 4,  // w softmax(x)_i (u_i - zg / z)   (KLRankVjp)
};

template <typename A>
struct SegStats {
  A* m;
  A* z;
  A* zg;
  A* sum;
  A* w;
  int32_t* count;
};

template <typename A>
struct SegStat {
  A m, z, zg, sum, w;
  int32_t count;
};

template <typename A>
TFSORT_HD inline SegStat<A> SegCombine(const SegStat<A>& a, const SegStat<A>& b) {
  const A m = a.m > b.m ? a.m : b.m;
  const A ea = static_cast<A>(std::exp(a.m - m));
  const A eb = static_cast<A>(std::exp(b.m - m));
  return {m, a.z * ea + b.z * eb, a.zg * ea + b.zg * eb, a.sum + b.sum, a.w + b.w,
          a.count + b.count};
}

template <typename A>
TFSORT_HD inline SegStat<A> SegLoad(const SegStats<A>& s, int k) {
  return {s.m[k], s.z[k], s.zg[k], s.sum[k], s.w[k], s.count[k]};
}

template <typename A>
TFSORT_HD inline void SegStore(const SegStats<A>& s, int k, const SegStat<A>& v) {
  s.m[k] = v.m;
  s.z[k] = v.z;
  s.zg[k] = v.zg;
  s.sum[k] = v.sum;
  s.w[k] = v.w;
  s.count[k] = v.count;
}

// Phase 1 (thread t). x may be null (modes without softmax). last[t] = first position of
// the chunk's last piece.
template <typename A>
TFSORT_HD void SegChunk(int n, int t, int chunks, const int32_t* start, const A* x,
                        const A* u, SegStats<A> s, int32_t* last) {
  const int lo = ChunkBegin(t, chunks, n);
  const int hi = ChunkBegin(t + 1, chunks, n);
  if (lo >= hi) return;
  int piece = lo;
  SegStat<A> acc{};
  for (int i = lo; i < hi; ++i) {
    const SegStat<A> e{x ? x[i] : A(0), A(1), u[i], u[i], static_cast<A>(n - i), 1};
    if (i == lo) {
      acc = e;
    } else if (start[i]) {
      SegStore(s, piece, acc);
      piece = i;
      acc = e;
    } else {
      acc = SegCombine(acc, e);
    }
  }
  SegStore(s, piece, acc);
  last[t] = piece;
}

// Phase 2 (one thread): folds continuation pieces into their run's first piece;
// open[t] = start of the run open at chunk t's first position (-1 if a run starts there).
template <typename A>
TFSORT_HD void SegJoin(int n, int chunks, const int32_t* start, SegStats<A> s,
                       const int32_t* last, int32_t* open) {
  int head = -1;
  for (int t = 0; t < chunks; ++t) {
    const int lo = ChunkBegin(t, chunks, n);
    const int hi = ChunkBegin(t + 1, chunks, n);
    open[t] = -1;
    if (lo >= hi) continue;
    if (!start[lo] && head >= 0) {
      SegStore(s, head, SegCombine(SegLoad(s, head), SegLoad(s, lo)));
      open[t] = head;
    }
    if (start[lo] || last[t] != lo || head < 0) head = last[t];
  }
}

template <typename A>
TFSORT_HD inline A SegValue(int mode, A x, A u, const SegStat<A>& st) {
  switch (mode) {
    case kSegMean:
      return st.sum / static_cast<A>(st.count);
    case kSegSpread:
      return static_cast<A>(std::exp(x - st.m)) / st.z * st.sum;
    case kSegGather:
      return st.zg / st.z;
    case kSegCenter:
      return u - st.sum / static_cast<A>(st.count);
    default:
      return st.w * (static_cast<A>(std::exp(x - st.m)) / st.z) * (u - st.zg / st.z);
  }
}

// Phase 3 (thread t): res[i] = the VJP value at i.
template <typename A>
TFSORT_HD void SegEmit(int n, int t, int chunks, int mode, const int32_t* start, const A* x,
                       const A* u, SegStats<A> s, const int32_t* open, A* res) {
  const int lo = ChunkBegin(t, chunks, n);
  const int hi = ChunkBegin(t + 1, chunks, n);
  if (lo >= hi) return;
  int run = start[lo] || open[t] < 0 ? lo : open[t];
  SegStat<A> st = SegLoad(s, run);
  for (int i = lo; i < hi; ++i) {
    if (i > lo && start[i]) {
      run = i;
      st = SegLoad(s, run);
    }
    res[i] = SegValue(mode, x ? x[i] : A(0), u[i], st);
  }
}

// The fused ops' gradients on top of the Seg* phases (SoftGradBlockKernel), per sorted
// position i, as SoftGradRow computes them serially.
TFSORT_HD inline int SoftGradMode(bool rank, bool kl, bool adjoint) {
  if (rank) return kl ? kSegKLRank : kSegCenter;
  if (adjoint) return kl ? kSegGather : kSegMean;
  return kl ? kSegSpread : kSegMean;
}

// us[i]: the cotangent in sorted order; xs[i] (KL only): the softmax logits.
template <typename T, typename A, typename Cvt>
TFSORT_HD inline void SoftGradPrep(int i, bool rank, bool kl, bool adjoint, int sign, A eps,
                                   const T* g, const T* x, const int32_t* pr, A* us, A* xs) {
  us[i] = Cvt::Load(g[rank || adjoint ? pr[i] : i]);
  if (kl) {
    const A v = static_cast<A>(sign) * Cvt::Load(x[pr[i]]);
    xs[i] = rank ? v / eps : v;
  }
}

// Writes the VJP value of sorted position i (res[i]) to its output position.
template <typename T, typename A, typename Cvt>
TFSORT_HD inline void SoftGradStore(int i, bool rank, bool adjoint, int sign, A eps,
                                    const int32_t* pr, const A* res, T* out) {
  if (rank) {
    out[pr[i]] = Cvt::Store(static_cast<A>(sign) * res[i] / eps);
  } else if (!adjoint) {
    out[pr[i]] = Cvt::Store(res[i]);
  } else {
    out[i] = Cvt::Store(res[i]);
  }
}

}  // namespace isotonic_rows
}  // namespace tfsort

#endif  // TFSORT_CUDA_ISOTONIC_ROWS_H_
