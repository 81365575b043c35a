// The sorting-network launchers' per-element and per-comparator work as host+device
// (TFSORT_HD) functions: what a launch initialises, which networks.h step every comparator
// of each phase runs, and what it stores. networks.cu.cc runs them from its kernels (the
// comparators of a layer in parallel); tests/test_cuda_host_logic_nt.py runs them on the host,
// layer by layer in a scrambled order, against the CPU op. TF-free and CUDA-header-free.
//
// A launch is a sequence of phases over the layers (forward or reverse) on two working
// arrays per row, x and h:
//   kForwardSort:  x = values;  sort (fwd);                 out = x (reversed if descending)
//   kForwardRank:  x = values, h = r0;  sort (fwd), rank (rev);  out = h
//   kGradSort:     x = grad (reversed if descending);  backward (rev);  out = x
//   kGradRank:     x = 0, h = grad;  rank cotangent (fwd), backward with lalpha (rev);  out = x
//   kGradAdjoint:  x = grad (rev. if desc.), h = tangent;  backward with gsnap (rev),
//                  adjoint (fwd);  jvp = h (reversed if descending)
// exactly as networks_kernels.cc drives ForwardRow / BackwardRow / BackwardRowAdjoint.

#ifndef TFSORT_CUDA_NETWORKS_STEPS_H_
#define TFSORT_CUDA_NETWORKS_STEPS_H_

#include <cstdint>

#include "tfsort/cc/kernels/networks.h"
#include "tfsort/cuda/networks_launch.h"
#include "tfsort/cuda/nt_conv.h"

namespace tfsort {
namespace cuda {

using networks::Relaxation;

inline constexpr bool UsesH(NetMode m) {
  return m == NetMode::kForwardRank || m == NetMode::kGradRank || m == NetMode::kGradAdjoint;
}

enum Phase {
  kSortFwd = 0,     // x: CompareSwap, saved[k] = u
  kRankRev = 1,     // h: RankStep, saved[num + k] = rank difference
  kRankCotFwd = 2,  // h: RankCotangentStep, scratch[k] = dL/dalpha
  kGradRev = 3,     // x: BackwardStep (+ grad_saved, + scratch as lalpha or gsnap)
  kAdjFwd = 4,      // h: AdjointStep, d_saved[k], d_grad_saved[k]
};

template <typename T, typename A>
struct NetParams {
  const T* in0 = nullptr;  // values or grad
  const T* in1 = nullptr;  // tangent (adjoint)
  T* out = nullptr;
  A* saved = nullptr;  // written by the forward op, read by the gradients
  const A* gdiffs = nullptr;
  A* scratch = nullptr;  // [batch, num]: lalpha (kGradRank) or gsnap (kGradAdjoint)
  A* dsaved = nullptr;
  A* dgdiffs = nullptr;
  const int32_t* lo = nullptr;
  const int32_t* hi = nullptr;
  const int64_t* layer_start = nullptr;
  int num_layers = 0;
  int64_t num = 0;
  int64_t per_row = 0;  // saved entries per row
  int64_t n = 0;
  int64_t batch = 0;
  Relaxation rel = Relaxation::kCauchy;
  A s = A(1);
  bool desc = false;
};

// Initial working values of element i of row r.
template <NetMode M, typename T, typename A>
TFSORT_HD inline void InitElem(const NetParams<T, A>& p, int64_t r, int64_t i, A* x, A* h) {
  const int64_t n = p.n;
  const int64_t base = r * n;
  const int64_t fi = p.desc ? n - 1 - i : i;
  if (M == NetMode::kForwardSort) {
    x[i] = static_cast<A>(Conv<T>::Load(p.in0[base + i]));
  } else if (M == NetMode::kForwardRank) {
    x[i] = static_cast<A>(Conv<T>::Load(p.in0[base + i]));
    h[i] = static_cast<A>(p.desc ? n - i : i + 1);
  } else if (M == NetMode::kGradSort) {
    x[i] = static_cast<A>(Conv<T>::Load(p.in0[base + fi]));
  } else if (M == NetMode::kGradRank) {
    x[i] = A(0);
    h[i] = static_cast<A>(Conv<T>::Load(p.in0[base + i]));
  } else {
    x[i] = static_cast<A>(Conv<T>::Load(p.in0[base + fi]));
    h[i] = static_cast<A>(Conv<T>::Load(p.in1[base + i]));
  }
}

// Output element i of row r.
template <NetMode M, typename T, typename A>
TFSORT_HD inline void StoreElem(const NetParams<T, A>& p, int64_t r, int64_t i, const A* x,
                                const A* h) {
  const int64_t n = p.n;
  const int64_t base = r * n;
  const int64_t fi = p.desc ? n - 1 - i : i;
  if (M == NetMode::kForwardSort) {
    p.out[base + fi] = Conv<T>::Store(x[i]);
  } else if (M == NetMode::kForwardRank) {
    p.out[base + i] = Conv<T>::Store(h[i]);
  } else if (M == NetMode::kGradAdjoint) {
    p.out[base + fi] = Conv<T>::Store(h[i]);
  } else {
    p.out[base + i] = Conv<T>::Store(x[i]);
  }
}

// Comparator k of row r; x and h point at the row's working values.
template <int P, typename T, typename A>
TFSORT_HD inline void Step(const NetParams<T, A>& p, int64_t r, int64_t k, A* x, A* h) {
  const int32_t l = p.lo[k];
  const int32_t u = p.hi[k];
  A* saved = p.saved + r * p.per_row;
  const int64_t rk = r * p.num + k;
  if (P == kSortFwd) {
    saved[k] = networks::CompareSwap(p.rel, p.s, x + l, x + u);
  } else if (P == kRankRev) {
    saved[p.num + k] = networks::RankStep(p.rel, p.s, saved[k], h + l, h + u);
  } else if (P == kRankCotFwd) {
    p.scratch[rk] = networks::RankCotangentStep(p.rel, p.s, saved[k], saved[p.num + k], h + l,
                                                h + u);
  } else if (P == kGradRev) {
    const bool has_gd = p.gdiffs != nullptr;
    const bool rank_mode = p.per_row == 2 * p.num;
    const A snap = networks::BackwardStep(p.rel, p.s, saved[k], x + l, x + u, has_gd,
                                          has_gd ? p.gdiffs[rk] : A(0), rank_mode,
                                          rank_mode ? p.scratch[rk] : A(0));
    if (!rank_mode && p.scratch != nullptr) p.scratch[rk] = snap;
  } else {
    A hg;
    p.dsaved[rk] = networks::AdjointStep(p.rel, p.s, saved[k], p.scratch[rk], h + l, h + u, &hg);
    p.dgdiffs[rk] = hg;
  }
}

// Which working array a phase touches (the other is not read): true for h.
TFSORT_HD inline constexpr bool PhaseUsesH(int phase) {
  return phase == kRankRev || phase == kRankCotFwd || phase == kAdjFwd;
}

// The comparators [*a, *b) of a tile-local layer [k0, k1) (lo strictly increasing, see
// TileLocalLayers) whose wires lie in the tile [base, base + kNetTile).
TFSORT_HD inline void TileRange(const int32_t* lo, int64_t k0, int64_t k1, int64_t base,
                                int64_t* a, int64_t* b) {
  int64_t l = k0, r = k1;  // first k with lo[k] >= base
  while (l < r) {
    const int64_t m = l + (r - l) / 2;
    if (lo[m] < base) l = m + 1; else r = m;
  }
  *a = l;
  r = k1;  // first k with lo[k] >= base + kNetTile
  while (l < r) {
    const int64_t m = l + (r - l) / 2;
    if (lo[m] < base + kNetTile) l = m + 1; else r = m;
  }
  *b = l;
}

}  // namespace cuda
}  // namespace tfsort

#endif  // TFSORT_CUDA_NETWORKS_STEPS_H_
