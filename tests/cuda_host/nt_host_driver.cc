// Host driver for tests/test_cuda_host_logic_nt.py: runs the GPU launchers' per-element and
// per-comparator functions (tfsort/cuda/networks_steps.h, tfsort/cuda/topk_steps.h) on the
// host, in the structure the kernels use (phases, layer by layer, the comparators of a layer
// in a scrambled order; block-cooperative phases thread by thread), so that the test can
// compare them with the CPU ops. Built with g++ alone; no CUDA device or TensorFlow.

#include <algorithm>
#include <cstdint>
#include <random>
#include <vector>

#include "tfsort/cuda/networks_launch.h"
#include "tfsort/cuda/networks_steps.h"
#include "tfsort/cuda/topk_steps.h"

namespace {

using tfsort::cuda::NetMode;
using tfsort::cuda::NetParams;

// Comparator order inside one layer: any order must give the same result (they are disjoint).
std::vector<int64_t> Scrambled(int64_t k0, int64_t cnt, std::mt19937* rng) {
  std::vector<int64_t> ks(cnt);
  for (int64_t c = 0; c < cnt; ++c) ks[c] = k0 + c;
  std::shuffle(ks.begin(), ks.end(), *rng);
  return ks;
}

// One phase of one row as the launchers run it: layer by layer, the comparators of a layer in
// a scrambled order; with tile flags and n > kNetShortMaxN, runs of tile-local layers as
// TileKernel does (each tile copied out, its comparators found by TileRange, the steps run
// on the copy through a shifted pointer, copied back), which fails if a flagged layer were
// not tile-local.
template <int P, bool kReverse, typename T, typename A>
void HostPhase(const NetParams<T, A>& p, const std::vector<int64_t>& start,
               const uint8_t* tile_local, int64_t r, A* x, A* h, std::mt19937* rng) {
  using tfsort::cuda::kNetTile;
  const int layers = static_cast<int>(start.size()) - 1;
  const bool tiles = tile_local != nullptr && p.n > tfsort::cuda::kNetShortMaxN;
  for (int li = 0; li < layers;) {
    const int layer = kReverse ? layers - 1 - li : li;
    if (tiles && tile_local[layer]) {
      int run = 1;
      while (li + run < layers && tile_local[kReverse ? layers - 1 - (li + run) : li + run]) ++run;
      A* g = tfsort::cuda::PhaseUsesH(P) ? h : x;
      std::vector<A> buf(kNetTile);
      for (int64_t base = 0; base < p.n; base += kNetTile) {
        const int64_t len = std::min<int64_t>(kNetTile, p.n - base);
        std::copy(g + base, g + base + len, buf.begin());
        A* shifted = buf.data() - base;
        for (int j = 0; j < run; ++j) {
          const int l = kReverse ? layer - j : layer + j;
          int64_t a, b;
          tfsort::cuda::TileRange(p.lo, start[l], start[l + 1], base, &a, &b);
          for (int64_t k : Scrambled(a, b - a, rng)) {
            tfsort::cuda::Step<P>(p, r, k, shifted, shifted);
          }
        }
        std::copy(buf.begin(), buf.begin() + len, g + base);
      }
      li += run;
      continue;
    }
    for (int64_t k : Scrambled(start[layer], start[layer + 1] - start[layer], rng)) {
      tfsort::cuda::Step<P>(p, r, k, x, h);
    }
    ++li;
  }
}

template <NetMode M, typename T, typename A>
void HostNetwork(NetParams<T, A> p, const std::vector<int64_t>& start, const uint8_t* tl,
                 unsigned seed) {
  using namespace tfsort::cuda;
  std::mt19937 rng(seed);
  std::vector<A> x(p.n), h(p.n);
  for (int64_t r = 0; r < p.batch; ++r) {
    for (int64_t i = 0; i < p.n; ++i) InitElem<M>(p, r, i, x.data(), h.data());
    if (M == NetMode::kForwardSort) {
      HostPhase<kSortFwd, false>(p, start, tl, r, x.data(), h.data(), &rng);
    } else if (M == NetMode::kForwardRank) {
      HostPhase<kSortFwd, false>(p, start, tl, r, x.data(), h.data(), &rng);
      HostPhase<kRankRev, true>(p, start, tl, r, x.data(), h.data(), &rng);
    } else if (M == NetMode::kGradSort) {
      HostPhase<kGradRev, true>(p, start, tl, r, x.data(), h.data(), &rng);
    } else if (M == NetMode::kGradRank) {
      HostPhase<kRankCotFwd, false>(p, start, tl, r, x.data(), h.data(), &rng);
      HostPhase<kGradRev, true>(p, start, tl, r, x.data(), h.data(), &rng);
    } else {
      HostPhase<kGradRev, true>(p, start, tl, r, x.data(), h.data(), &rng);
      HostPhase<kAdjFwd, false>(p, start, tl, r, x.data(), h.data(), &rng);
    }
    for (int64_t i = 0; i < p.n; ++i) StoreElem<M>(p, r, i, x.data(), h.data());
  }
}

template <typename T>
int RunNetwork(int mode, const void* in0, const void* in1, void* out, void* saved,
               const void* gdiffs, void* dsaved, void* dgdiffs, int64_t batch, int64_t n,
               int network, int relaxation, double steepness, int descending, unsigned seed) {
  using A = T;
  std::vector<int32_t> lo, hi;
  std::vector<int64_t> start;
  tfsort::cuda::BuildGpuSchedule(static_cast<tfsort::networks::Network>(network),
                                 static_cast<int>(n), &lo, &hi, &start);
  std::vector<uint8_t> tile_local;
  tfsort::cuda::TileLocalLayers(lo, hi, start, &tile_local);
  const int64_t num = static_cast<int64_t>(lo.size());
  const NetMode m = static_cast<NetMode>(mode);
  const bool ranks = m == NetMode::kForwardRank || m == NetMode::kGradRank;
  std::vector<A> scratch(batch * num);
  NetParams<T, A> p;
  p.in0 = static_cast<const T*>(in0);
  p.in1 = static_cast<const T*>(in1);
  p.out = static_cast<T*>(out);
  p.saved = static_cast<A*>(saved);
  p.gdiffs = static_cast<const A*>(gdiffs);
  p.scratch = (m == NetMode::kGradRank || m == NetMode::kGradAdjoint) ? scratch.data() : nullptr;
  p.dsaved = static_cast<A*>(dsaved);
  p.dgdiffs = static_cast<A*>(dgdiffs);
  p.lo = lo.data();
  p.hi = hi.data();
  p.layer_start = start.data();
  p.num_layers = static_cast<int>(start.size()) - 1;
  p.num = num;
  p.per_row = num * (ranks ? 2 : 1);
  p.n = n;
  p.batch = batch;
  p.rel = static_cast<tfsort::networks::Relaxation>(relaxation);
  p.s = static_cast<A>(steepness);
  p.desc = descending != 0;
  switch (m) {
    case NetMode::kForwardSort:
      HostNetwork<NetMode::kForwardSort>(p, start, tile_local.data(), seed);
      break;
    case NetMode::kForwardRank:
      HostNetwork<NetMode::kForwardRank>(p, start, tile_local.data(), seed);
      break;
    case NetMode::kGradSort:
      HostNetwork<NetMode::kGradSort>(p, start, tile_local.data(), seed);
      break;
    case NetMode::kGradRank:
      HostNetwork<NetMode::kGradRank>(p, start, tile_local.data(), seed);
      break;
    default:
      HostNetwork<NetMode::kGradAdjoint>(p, start, tile_local.data(), seed);
      break;
  }
  return 0;
}

// One SigmoidTopK row as a group of nth threads runs it (topk.cu.cc): every phase for
// every thread index, partial sums combined in thread order.
template <typename T>
void HostSigmoidTopKRow(const T* x, T* out, int64_t n, double k, double eps, int nth) {
  using namespace tfsort::cuda;
  using tfsort::topk::SigmoidSolver;
  RowStats st = PartialStats(x, n, 0, nth);
  for (int t = 1; t < nth; ++t) st = CombineStats(st, PartialStats(x, n, t, nth));
  if (!st.finite) {
    for (int t = 0; t < nth; ++t) WriteNan(out, n, t, nth);
    return;
  }
  const T ie = static_cast<T>(1.0 / eps);
  SigmoidSolver solver;
  solver.Init(static_cast<int>(n), k, eps, st.xmin, st.xmax, st.sum / static_cast<double>(n),
              static_cast<int>(sizeof(T)));
  SigmoidSolver::Action act;
  T th, tl;
  do {
    tfsort::topk::SplitThreshold(solver.t, &th, &tl);
    EvalSums s = PartialEval(x, n, 0, nth, th, tl, ie);
    for (int t = 1; t < nth; ++t) s = CombineEval(s, PartialEval(x, n, t, nth, th, tl, ie));
    act = solver.Update(s.sp, s.sv, s.sq);
  } while (act == SigmoidSolver::kContinue);
  tfsort::topk::SplitThreshold(solver.t, &th, &tl);
  const bool fo = act == SigmoidSolver::kFirstOrder;
  for (int t = 0; t < nth; ++t) {
    WriteMask(x, out, n, t, nth, th, tl, ie, fo, fo ? static_cast<T>(solver.dt) : T(0));
  }
}

template <typename T>
void HostSigmoidTopKGradRow(const T* g, const T* p, T* out, int64_t n, double eps, int nth) {
  using namespace tfsort::cuda;
  VjpSums s = PartialVjp(p, g, n, 0, nth);
  for (int t = 1; t < nth; ++t) s = CombineVjp(s, PartialVjp(p, g, n, t, nth));
  for (int t = 0; t < nth; ++t) WriteVjp<T, T>(p, g, out, n, t, nth, s, 1.0 / eps);
}

}  // namespace

extern "C" {

// Number of comparators of the network on n wires.
int64_t nt_host_num_comparators(int network, int64_t n) {
  return tfsort::networks::NumComparators(static_cast<tfsort::networks::Network>(network),
                                          static_cast<int>(n));
}

// mode: tfsort::cuda::NetMode; f64: 1 for double (A = double), 0 for float.
int nt_host_network(int f64, int mode, const void* in0, const void* in1, void* out, void* saved,
                    const void* gdiffs, void* dsaved, void* dgdiffs, int64_t batch, int64_t n,
                    int network, int relaxation, double steepness, int descending,
                    unsigned seed) {
  if (f64) {
    return RunNetwork<double>(mode, in0, in1, out, saved, gdiffs, dsaved, dgdiffs, batch, n,
                              network, relaxation, steepness, descending, seed);
  }
  return RunNetwork<float>(mode, in0, in1, out, saved, gdiffs, dsaved, dgdiffs, batch, n,
                           network, relaxation, steepness, descending, seed);
}

// SigmoidTopK / SigmoidTopKGrad on the host with groups of nth threads (f64: double, else
// float). k: one value per row, or null for k_scalar.
int nt_host_sigmoid_topk(int f64, const void* x, const double* k, double k_scalar, double eps,
                         void* out, int64_t batch, int64_t n, int nth) {
  for (int64_t r = 0; r < batch; ++r) {
    const double kr = k ? k[r] : k_scalar;
    if (f64) {
      HostSigmoidTopKRow(static_cast<const double*>(x) + r * n, static_cast<double*>(out) + r * n,
                         n, kr, eps, nth);
    } else {
      HostSigmoidTopKRow(static_cast<const float*>(x) + r * n, static_cast<float*>(out) + r * n,
                         n, kr, eps, nth);
    }
  }
  return 0;
}

int nt_host_sigmoid_topk_grad(int f64, const void* g, const void* p, double eps, void* out,
                              int64_t batch, int64_t n, int nth) {
  for (int64_t r = 0; r < batch; ++r) {
    if (f64) {
      HostSigmoidTopKGradRow(static_cast<const double*>(g) + r * n,
                             static_cast<const double*>(p) + r * n,
                             static_cast<double*>(out) + r * n, n, eps, nth);
    } else {
      HostSigmoidTopKGradRow(static_cast<const float*>(g) + r * n,
                             static_cast<const float*>(p) + r * n,
                             static_cast<float*>(out) + r * n, n, eps, nth);
    }
  }
  return 0;
}

}  // extern "C"

#ifdef NT_EMULATE_CAPI
// Host emulation of the harness entry points of tests/gpu/capi_networks.cu.cc and
// capi_topk.cu.cc (float32 and float64), for running tests/gpu on a machine without a GPU
// (TFSORT_NT_EMULATE=1): same signatures, pointers to host memory, the launchers' step
// functions run on the host. It checks the harness code and the references, not the kernels.
namespace {

template <typename T>
int EmuNetwork(int mode, const void* in0, const void* in1, void* out, void* saved,
               const void* gdiffs, void* dsaved, void* dgdiffs, int64_t batch, int64_t n,
               const int32_t* lo, const int32_t* hi, const int64_t* host_start,
               const uint8_t* tile_local, int num_layers, int64_t num, int relaxation,
               double steepness, int descending) {
  using A = T;
  const NetMode m = static_cast<NetMode>(mode);
  const bool ranks = m == NetMode::kForwardRank || m == NetMode::kGradRank;
  std::vector<A> scratch(batch * num + 1);
  std::vector<int64_t> start(host_start, host_start + num_layers + 1);
  NetParams<T, A> p;
  p.in0 = static_cast<const T*>(in0);
  p.in1 = static_cast<const T*>(in1);
  p.out = static_cast<T*>(out);
  p.saved = static_cast<A*>(saved);
  p.gdiffs = static_cast<const A*>(gdiffs);
  p.scratch = (m == NetMode::kGradRank || m == NetMode::kGradAdjoint) ? scratch.data() : nullptr;
  p.dsaved = static_cast<A*>(dsaved);
  p.dgdiffs = static_cast<A*>(dgdiffs);
  p.lo = lo;
  p.hi = hi;
  p.layer_start = start.data();
  p.num_layers = num_layers;
  p.num = num;
  p.per_row = num * (ranks ? 2 : 1);
  p.n = n;
  p.batch = batch;
  p.rel = static_cast<tfsort::networks::Relaxation>(relaxation);
  p.s = static_cast<A>(steepness);
  p.desc = descending != 0;
  if (batch == 0 || n == 0) return 0;
  switch (m) {
    case NetMode::kForwardSort:
      HostNetwork<NetMode::kForwardSort>(p, start, tile_local, 7);
      break;
    case NetMode::kForwardRank:
      HostNetwork<NetMode::kForwardRank>(p, start, tile_local, 7);
      break;
    case NetMode::kGradSort:
      HostNetwork<NetMode::kGradSort>(p, start, tile_local, 7);
      break;
    case NetMode::kGradRank:
      HostNetwork<NetMode::kGradRank>(p, start, tile_local, 7);
      break;
    default:
      HostNetwork<NetMode::kGradAdjoint>(p, start, tile_local, 7);
      break;
  }
  return 0;
}

}  // namespace

extern "C" {

int64_t tfsort_h_network_num_comparators(int network, int64_t n) {
  return nt_host_num_comparators(network, n);
}

int tfsort_h_network_num_layers(int network, int64_t n) {
  std::vector<int32_t> lo, hi;
  std::vector<int64_t> start;
  tfsort::cuda::BuildGpuSchedule(static_cast<tfsort::networks::Network>(network),
                                 static_cast<int>(n), &lo, &hi, &start);
  return static_cast<int>(start.size()) - 1;
}

int tfsort_h_network_schedule(int network, int64_t n, int32_t* lo_out, int32_t* hi_out,
                              int64_t* start_out) {
  std::vector<int32_t> lo, hi;
  std::vector<int64_t> start;
  tfsort::cuda::BuildGpuSchedule(static_cast<tfsort::networks::Network>(network),
                                 static_cast<int>(n), &lo, &hi, &start);
  std::copy(lo.begin(), lo.end(), lo_out);
  std::copy(hi.begin(), hi.end(), hi_out);
  std::copy(start.begin(), start.end(), start_out);
  return 0;
}

uint64_t tfsort_h_sorting_network_workspace(int, int64_t, int64_t, int64_t, int) { return 0; }

int tfsort_h_network_tile_local(int network, int64_t n, uint8_t* flags_out) {
  std::vector<int32_t> lo, hi;
  std::vector<int64_t> start;
  std::vector<uint8_t> flags;
  tfsort::cuda::BuildGpuSchedule(static_cast<tfsort::networks::Network>(network),
                                 static_cast<int>(n), &lo, &hi, &start);
  tfsort::cuda::TileLocalLayers(lo, hi, start, &flags);
  std::copy(flags.begin(), flags.end(), flags_out);
  return 0;
}

#define NT_EMU(SUFFIX, T)                                                                    \
  int tfsort_h_sorting_network_##SUFFIX(const void* x, void* out, void* saved, int64_t batch, \
                                        int64_t n, const int32_t* lo, const int32_t* hi,     \
                                        const int64_t*, const int64_t* hs,                   \
                                        const uint8_t* tl, int nl, int64_t num,              \
                                        int rel, double s, int desc, int ranks, \
                                        void*, uint64_t, void*) {                            \
    return EmuNetwork<T>(ranks ? 1 : 0, x, nullptr, out, saved, nullptr, nullptr, nullptr,   \
                         batch, n, lo, hi, hs, tl, nl, num, rel, s, desc);                   \
  }                                                                                          \
  int tfsort_h_sorting_network_grad_##SUFFIX(                                                \
      const void* g, const void* saved, const void* gs, void* out, int64_t batch, int64_t n, \
      const int32_t* lo, const int32_t* hi, const int64_t*, const int64_t* hs,               \
      const uint8_t* tl, int nl, int64_t num, int rel, double s, int desc, int ranks, void*, \
      uint64_t, void*) {                                                                     \
    return EmuNetwork<T>(ranks ? 3 : 2, g, nullptr, out, const_cast<void*>(saved), gs,      \
                         nullptr, nullptr, batch, n, lo, hi, hs, tl, nl, num, rel, s, desc); \
  }                                                                                          \
  int tfsort_h_sorting_network_grad_adjoint_##SUFFIX(                                        \
      const void* t, const void* g, const void* saved, const void* gs, void* jvp, void* ds,  \
      void* dgs, int64_t batch, int64_t n, const int32_t* lo, const int32_t* hi,             \
      const int64_t*, const int64_t* hs, const uint8_t* tl, int nl, int64_t num, int rel,    \
      double s, int desc, void*, uint64_t, void*) {                                          \
    return EmuNetwork<T>(4, g, t, jvp, const_cast<void*>(saved), gs, ds, dgs, batch, n, lo,  \
                         hi, hs, tl, nl, num, rel, s, desc);                                 \
  }                                                                                          \
  int tfsort_h_sigmoid_topk_##SUFFIX(const void* x, const void* k, double k_scalar,          \
                                     double eps, void* mask, int64_t batch, int64_t n,       \
                                     void*) {                                                \
    return nt_host_sigmoid_topk(sizeof(T) == 8, x, static_cast<const double*>(k), k_scalar, \
                                eps, mask, batch, n, n <= 2048 ? 32 : 512);                  \
  }                                                                                          \
  int tfsort_h_sigmoid_topk_grad_##SUFFIX(const void* g, const void* mask, double eps,       \
                                          void* out, int64_t batch, int64_t n, void*) {      \
    return nt_host_sigmoid_topk_grad(sizeof(T) == 8, g, mask, eps, out, batch, n,            \
                                     n <= 2048 ? 32 : 512);                                  \
  }

NT_EMU(f32, float)
NT_EMU(f64, double)
#undef NT_EMU

}  // extern "C"
#endif  // NT_EMULATE_CAPI
