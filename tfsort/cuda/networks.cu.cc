// GPU launchers for the sorting-network family (see networks_launch.h). The per-element and
// per-comparator work (networks_steps.h) calls networks.h's step functions, the code the CPU
// row functions run; here the comparators of a layer run in parallel (they are disjoint)
// with a barrier (short rows and runs of tile-local layers, in shared memory) or a launch
// (the other layers of long rows) between layers.

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "tfsort/cc/kernels/networks.h"
#include "tfsort/cuda/networks_launch.h"
#include "tfsort/cuda/networks_steps.h"
#include "tfsort/cuda/nt_common.cuh"

namespace tfsort {
namespace cuda {
namespace {

template <typename T, typename A>
using Params = NetParams<T, A>;

// One phase over all layers of `rows` rows held at x / h (row stride n), by the whole block.
template <int P, bool kReverse, typename T, typename A>
__device__ void BlockPhase(const Params<T, A>& p, int64_t row0, int rows, A* x, A* h) {
  for (int li = 0; li < p.num_layers; ++li) {
    const int layer = kReverse ? p.num_layers - 1 - li : li;
    const int64_t k0 = p.layer_start[layer];
    const int64_t cnt = p.layer_start[layer + 1] - k0;
    const int64_t total = cnt * rows;
    for (int64_t idx = threadIdx.x; idx < total; idx += blockDim.x) {
      const int64_t rr = idx / cnt;
      const int64_t k = k0 + (idx - rr * cnt);
      Step<P>(p, row0 + rr, k, x + rr * p.n, h + rr * p.n);
    }
    __syncthreads();
  }
}

// Short rows: `rows_per_block` rows per block in shared memory.
template <NetMode M, typename T, typename A>
__global__ void __launch_bounds__(1024) ShortKernel(Params<T, A> p, int rows_per_block) {
  extern __shared__ unsigned char smem_raw[];
  A* xs = reinterpret_cast<A*>(smem_raw);
  A* hs = xs + static_cast<int64_t>(rows_per_block) * p.n;
  const int64_t row0 = static_cast<int64_t>(blockIdx.x) * rows_per_block;
  if (row0 >= p.batch) return;
  const int rows =
      static_cast<int>(p.batch - row0 < rows_per_block ? p.batch - row0 : rows_per_block);
  const int64_t elems = rows * p.n;
  for (int64_t e = threadIdx.x; e < elems; e += blockDim.x) {
    const int64_t rr = e / p.n;
    InitElem<M>(p, row0 + rr, e - rr * p.n, xs + rr * p.n, hs + rr * p.n);
  }
  __syncthreads();
  if (M == NetMode::kForwardSort) {
    BlockPhase<kSortFwd, false>(p, row0, rows, xs, hs);
  } else if (M == NetMode::kForwardRank) {
    BlockPhase<kSortFwd, false>(p, row0, rows, xs, hs);
    BlockPhase<kRankRev, true>(p, row0, rows, xs, hs);
  } else if (M == NetMode::kGradSort) {
    BlockPhase<kGradRev, true>(p, row0, rows, xs, hs);
  } else if (M == NetMode::kGradRank) {
    BlockPhase<kRankCotFwd, false>(p, row0, rows, xs, hs);
    BlockPhase<kGradRev, true>(p, row0, rows, xs, hs);
  } else {
    BlockPhase<kGradRev, true>(p, row0, rows, xs, hs);
    BlockPhase<kAdjFwd, false>(p, row0, rows, xs, hs);
  }
  for (int64_t e = threadIdx.x; e < elems; e += blockDim.x) {
    const int64_t rr = e / p.n;
    StoreElem<M>(p, row0 + rr, e - rr * p.n, xs + rr * p.n, hs + rr * p.n);
  }
}

// Long rows: working arrays in global memory (x, h: [batch, n]), one launch per layer.
template <NetMode M, typename T, typename A>
__global__ void __launch_bounds__(256) InitKernel(Params<T, A> p, A* x, A* h) {
  const int64_t total = p.batch * p.n;
  for (int64_t e = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; e < total;
       e += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t r = e / p.n;
    InitElem<M>(p, r, e - r * p.n, x + r * p.n, h + r * p.n);
  }
}

template <NetMode M, typename T, typename A>
__global__ void __launch_bounds__(256) StoreKernel(Params<T, A> p, const A* x, const A* h) {
  const int64_t total = p.batch * p.n;
  for (int64_t e = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; e < total;
       e += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t r = e / p.n;
    StoreElem<M>(p, r, e - r * p.n, x + r * p.n, h + r * p.n);
  }
}

template <int P, typename T, typename A>
__global__ void __launch_bounds__(256)
    LayerKernel(Params<T, A> p, int64_t k0, int64_t cnt, A* x, A* h) {
  const int64_t total = p.batch * cnt;
  for (int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; idx < total;
       idx += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t r = idx / cnt;
    Step<P>(p, r, k0 + (idx - r * cnt), x + r * p.n, h + r * p.n);
  }
}

// A run of `count` tile-local layers from `first` (in the phase's direction) for one tile of
// one row per block (blockIdx.x = row * tiles + tile): the tile of the phase's working array
// in shared memory, a barrier between layers.
template <int P, bool kReverse, typename T, typename A>
__global__ void __launch_bounds__(1024)
    TileKernel(Params<T, A> p, int first, int count, int64_t tiles, A* x, A* h) {
  extern __shared__ unsigned char smem_raw[];
  A* tile_buf = reinterpret_cast<A*>(smem_raw);
  const int64_t row = blockIdx.x / tiles;
  const int64_t base = (blockIdx.x - row * tiles) * kNetTile;
  const int64_t len = p.n - base < kNetTile ? p.n - base : kNetTile;
  A* g = (PhaseUsesH(P) ? h : x) + row * p.n + base;
  for (int64_t i = threadIdx.x; i < len; i += blockDim.x) tile_buf[i] = g[i];
  __syncthreads();
  // Step indexes wires by their position in the row: shift the tile's base.
  A* shifted = tile_buf - base;
  for (int j = 0; j < count; ++j) {
    const int layer = kReverse ? first - j : first + j;
    int64_t a, b;
    TileRange(p.lo, p.layer_start[layer], p.layer_start[layer + 1], base, &a, &b);
    for (int64_t k = a + threadIdx.x; k < b; k += blockDim.x) {
      Step<P>(p, row, k, shifted, shifted);
    }
    __syncthreads();
  }
  for (int64_t i = threadIdx.x; i < len; i += blockDim.x) g[i] = tile_buf[i];
}

constexpr int kLongThreads = 256;  // = the __launch_bounds__ of the long-row kernels
constexpr int kTileThreads = 1024;  // kNetTile / 2 comparators per layer at most

// One phase of a long-row launch: runs of tile-local layers by TileKernel, the others by a
// LayerKernel launch each.
template <int P, bool kReverse, typename T, typename A>
void LongPhase(const Params<T, A>& p, const GpuSchedule& sched, A* x, A* h,
               cudaStream_t stream) {
  const int64_t* host_start = sched.host_layer_start;
  const uint8_t* local = sched.host_tile_local;
  const int layers = p.num_layers;
  const int64_t tiles = nt::CeilDiv(p.n, kNetTile);
  for (int li = 0; li < layers;) {
    const int layer = kReverse ? layers - 1 - li : li;
    if (local != nullptr && local[layer] && p.batch * tiles <= 0x7fffffff) {
      int run = 1;
      while (li + run < layers && local[kReverse ? layers - 1 - (li + run) : li + run]) ++run;
      TileKernel<P, kReverse><<<static_cast<unsigned>(p.batch * tiles), kTileThreads,
                                kNetTile * sizeof(A), stream>>>(p, layer, run, tiles, x, h);
      li += run;
      continue;
    }
    const int64_t k0 = host_start[layer];
    const int64_t cnt = host_start[layer + 1] - k0;
    if (cnt > 0) {
      LayerKernel<P><<<nt::GridFor(p.batch * cnt, kLongThreads), kLongThreads, 0, stream>>>(
          p, k0, cnt, x, h);
    }
    ++li;
  }
}

struct WorkspaceLayout {
  size_t x_off = 0, h_off = 0, scratch_off = 0, total = 0;
};

WorkspaceLayout Layout(NetMode mode, int64_t batch, int64_t n, int64_t num, int acc_bytes) {
  WorkspaceLayout w;
  size_t off = 0;
  if (n > kNetShortMaxN) {
    const size_t arr = nt::AlignUp(static_cast<size_t>(batch * n) * acc_bytes);
    w.x_off = off;
    off += arr;
    if (UsesH(mode)) {
      w.h_off = off;
      off += arr;
    }
  }
  if (mode == NetMode::kGradRank || mode == NetMode::kGradAdjoint) {
    w.scratch_off = off;
    off += nt::AlignUp(static_cast<size_t>(batch * num) * acc_bytes);
  }
  w.total = off;
  return w;
}

template <NetMode M, typename T, typename A>
cudaError_t Run(Params<T, A> p, const GpuSchedule& sched, void* workspace,
                size_t workspace_bytes, cudaStream_t stream) {
  if (p.batch == 0 || p.n == 0) return cudaSuccess;
  const WorkspaceLayout w = Layout(M, p.batch, p.n, sched.num, static_cast<int>(sizeof(A)));
  if (workspace_bytes < w.total || (w.total > 0 && workspace == nullptr)) {
    return cudaErrorInvalidValue;
  }
  unsigned char* ws = static_cast<unsigned char*>(workspace);
  if (M == NetMode::kGradRank || M == NetMode::kGradAdjoint) {
    p.scratch = reinterpret_cast<A*>(ws + w.scratch_off);
  }
  p.lo = sched.lo;
  p.hi = sched.hi;
  p.layer_start = sched.layer_start;
  p.num_layers = sched.num_layers;
  p.num = sched.num;
  if (p.n <= kNetShortMaxN) {
    // Several short rows per block so that a block has about 512 values to work on.
    const int n = static_cast<int>(p.n);
    int rows_per_block = n >= 512 ? 1 : 512 / n;
    if (rows_per_block > p.batch) rows_per_block = static_cast<int>(p.batch);
    int64_t work = static_cast<int64_t>(rows_per_block) * (n / 2 > 0 ? n / 2 : 1);
    int threads = static_cast<int>((work + 31) / 32 * 32);
    threads = threads < 32 ? 32 : (threads > 1024 ? 1024 : threads);
    const size_t smem = static_cast<size_t>(rows_per_block) * n * sizeof(A) * (UsesH(M) ? 2 : 1);
    const int64_t blocks = nt::CeilDiv(p.batch, rows_per_block);
    if (blocks > 0x7fffffff) return cudaErrorInvalidValue;
    ShortKernel<M><<<static_cast<unsigned>(blocks), threads, smem, stream>>>(p, rows_per_block);
    return cudaGetLastError();
  }
  A* x = reinterpret_cast<A*>(ws + w.x_off);
  A* h = UsesH(M) ? reinterpret_cast<A*>(ws + w.h_off) : x;
  const unsigned grid = nt::GridFor(p.batch * p.n, kLongThreads);
  InitKernel<M><<<grid, kLongThreads, 0, stream>>>(p, x, h);
  const GpuSchedule& hs = sched;
  if (M == NetMode::kForwardSort) {
    LongPhase<kSortFwd, false>(p, hs, x, h, stream);
  } else if (M == NetMode::kForwardRank) {
    LongPhase<kSortFwd, false>(p, hs, x, h, stream);
    LongPhase<kRankRev, true>(p, hs, x, h, stream);
  } else if (M == NetMode::kGradSort) {
    LongPhase<kGradRev, true>(p, hs, x, h, stream);
  } else if (M == NetMode::kGradRank) {
    LongPhase<kRankCotFwd, false>(p, hs, x, h, stream);
    LongPhase<kGradRev, true>(p, hs, x, h, stream);
  } else {
    LongPhase<kGradRev, true>(p, hs, x, h, stream);
    LongPhase<kAdjFwd, false>(p, hs, x, h, stream);
  }
  StoreKernel<M><<<grid, kLongThreads, 0, stream>>>(p, x, h);
  return cudaGetLastError();
}

}  // namespace

size_t SortingNetworkWorkspaceBytes(NetMode mode, int64_t batch, int64_t n, int64_t num,
                                    int acc_bytes) {
  if (batch == 0 || n == 0) return 0;
  return Layout(mode, batch, n, num, acc_bytes).total;
}

template <typename T>
cudaError_t LaunchSortingNetwork(const T* x, T* out, NetAccT<T>* saved, int64_t batch,
                                 int64_t n, const GpuSchedule& sched, networks::Relaxation rel,
                                 double steepness, bool descending, bool ranks, void* workspace,
                                 size_t workspace_bytes, cudaStream_t stream) {
  using A = NetAccT<T>;
  Params<T, A> p;
  p.in0 = x;
  p.out = out;
  p.saved = saved;
  p.per_row = sched.num * (ranks ? 2 : 1);
  p.n = n;
  p.batch = batch;
  p.rel = rel;
  p.s = static_cast<A>(steepness);
  p.desc = descending;
  if (ranks) return Run<NetMode::kForwardRank>(p, sched, workspace, workspace_bytes, stream);
  return Run<NetMode::kForwardSort>(p, sched, workspace, workspace_bytes, stream);
}

template <typename T>
cudaError_t LaunchSortingNetworkGrad(const T* grad, const NetAccT<T>* saved,
                                     const NetAccT<T>* grad_saved, T* out, int64_t batch,
                                     int64_t n, const GpuSchedule& sched,
                                     networks::Relaxation rel, double steepness, bool descending,
                                     bool ranks, void* workspace, size_t workspace_bytes,
                                     cudaStream_t stream) {
  using A = NetAccT<T>;
  if (ranks && grad_saved != nullptr) return cudaErrorInvalidValue;
  Params<T, A> p;
  p.in0 = grad;
  p.out = out;
  // The gradient kernels only read saved.
  p.saved = const_cast<A*>(saved);
  p.gdiffs = grad_saved;
  p.per_row = sched.num * (ranks ? 2 : 1);
  p.n = n;
  p.batch = batch;
  p.rel = rel;
  p.s = static_cast<A>(steepness);
  p.desc = descending;
  if (ranks) return Run<NetMode::kGradRank>(p, sched, workspace, workspace_bytes, stream);
  return Run<NetMode::kGradSort>(p, sched, workspace, workspace_bytes, stream);
}

template <typename T>
cudaError_t LaunchSortingNetworkGradAdjoint(const T* tangent, const T* grad,
                                            const NetAccT<T>* saved,
                                            const NetAccT<T>* grad_saved, T* jvp,
                                            NetAccT<T>* d_saved, NetAccT<T>* d_grad_saved,
                                            int64_t batch, int64_t n, const GpuSchedule& sched,
                                            networks::Relaxation rel, double steepness,
                                            bool descending, void* workspace,
                                            size_t workspace_bytes, cudaStream_t stream) {
  using A = NetAccT<T>;
  Params<T, A> p;
  p.in0 = grad;
  p.in1 = tangent;
  p.out = jvp;
  p.saved = const_cast<A*>(saved);
  p.gdiffs = grad_saved;
  p.dsaved = d_saved;
  p.dgdiffs = d_grad_saved;
  p.per_row = sched.num;
  p.n = n;
  p.batch = batch;
  p.rel = rel;
  p.s = static_cast<A>(steepness);
  p.desc = descending;
  return Run<NetMode::kGradAdjoint>(p, sched, workspace, workspace_bytes, stream);
}

#define TFSORT_INSTANTIATE_NETWORKS(T)                                                       \
  template cudaError_t LaunchSortingNetwork<T>(const T*, T*, NetAccT<T>*, int64_t, int64_t,    \
                                               const GpuSchedule&, networks::Relaxation,       \
                                               double, bool, bool, void*, size_t,              \
                                               cudaStream_t);                                  \
  template cudaError_t LaunchSortingNetworkGrad<T>(                                          \
      const T*, const NetAccT<T>*, const NetAccT<T>*, T*, int64_t, int64_t,                  \
      const GpuSchedule&, networks::Relaxation, double, bool, bool, void*, size_t,           \
      cudaStream_t);                                                                         \
  template cudaError_t LaunchSortingNetworkGradAdjoint<T>(                                   \
      const T*, const T*, const NetAccT<T>*, const NetAccT<T>*, T*, NetAccT<T>*, NetAccT<T>*, \
      int64_t, int64_t, const GpuSchedule&, networks::Relaxation, double, bool, void*,       \
      size_t, cudaStream_t);

TFSORT_INSTANTIATE_NETWORKS(__half)
TFSORT_INSTANTIATE_NETWORKS(__nv_bfloat16)
TFSORT_INSTANTIATE_NETWORKS(float)
TFSORT_INSTANTIATE_NETWORKS(double)
#undef TFSORT_INSTANTIATE_NETWORKS

}  // namespace cuda
}  // namespace tfsort
