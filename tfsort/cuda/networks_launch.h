// Launchers for the sorting-network family on a GPU (see tfsort/cc/ops/networks_ops.cc for
// the op contract). TensorFlow-free: raw device pointers, sizes and a cudaStream_t, so a plain
// nvcc harness (tests/gpu) can drive them. The per-comparator math is networks.h's (the CPU
// kernels run the same step functions).
//
// The comparator schedule is uploaded by the caller once per (network, n): BuildGpuSchedule
// fills the host arrays (comparators in layer order, as networks::ForEachComparator lists
// them, and the first comparator of every layer), the caller copies lo, hi and layer_start to
// the device and passes both copies of layer_start (the host copy drives the per-layer
// launches of long rows).
//
// Strategy: rows with n <= kNetShortMaxN run in one kernel, a block per row (several rows per
// block when n is small), the row(s) in shared memory, one thread per comparator of a layer
// and a barrier between layers. Longer rows keep their working rows in the workspace; runs
// of tile-local layers (GpuSchedule::host_tile_local) run in shared memory, a block per
// (kNetTile-wide tile, row), and every other layer is one launch (threads over rows x
// comparators of the layer).
//
// Launchers never allocate or synchronize; they return cudaGetLastError() after their
// launches (cudaSuccess and no launch when batch == 0 or n == 0). Accumulation type A: float
// for __half, __nv_bfloat16 and float; double for double (as the CPU op's Tacc).

#ifndef TFSORT_CUDA_NETWORKS_LAUNCH_H_
#define TFSORT_CUDA_NETWORKS_LAUNCH_H_

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>
#include <vector>

#include "tfsort/cc/kernels/networks.h"

namespace tfsort {
namespace cuda {

// Longest row handled by the shared-memory kernel.
constexpr int64_t kNetShortMaxN = 2048;
// Tile of the long-row path: runs of tile-local layers (see TileLocalLayers) execute in
// shared memory, a block per (tile, row), instead of one launch per layer.
constexpr int64_t kNetTile = 2048;

// The comparator schedule on the device (lo, hi, layer_start) plus the host copy of
// layer_start. layer k's comparators are [layer_start[k], layer_start[k + 1]).
struct GpuSchedule {
  const int32_t* lo = nullptr;               // device, num
  const int32_t* hi = nullptr;               // device, num
  const int64_t* layer_start = nullptr;      // device, num_layers + 1
  const int64_t* host_layer_start = nullptr;  // host, num_layers + 1
  // Optional (null: none), host, num_layers: 1 where a layer is tile-local.
  const uint8_t* host_tile_local = nullptr;
  int num_layers = 0;
  int64_t num = 0;  // comparators
};

// Host only: the schedule of `net` on n wires as flat arrays (see above).
inline void BuildGpuSchedule(networks::Network net, int n, std::vector<int32_t>* lo,
                             std::vector<int32_t>* hi, std::vector<int64_t>* layer_start) {
  lo->clear();
  hi->clear();
  layer_start->assign(1, 0);
  networks::ForEachComparator(
      net, n,
      [&](int i, int j) {
        lo->push_back(i);
        hi->push_back(j);
      },
      [&] { layer_start->push_back(static_cast<int64_t>(lo->size())); });
}

// The accumulation (and saved) type of T: float, or double for double.
template <typename T>
struct NetAcc {
  using type = float;
};
template <>
struct NetAcc<double> {
  using type = double;
};
template <typename T>
using NetAccT = typename NetAcc<T>::type;

// Host only: flags[l] = 1 when every comparator of layer l stays within one kNetTile-aligned
// tile (lo / kNetTile == hi / kNetTile) and the layer's lo are strictly increasing (so a
// block finds its tile's comparators by binary search). Bitonic layers of span <= kNetTile
// qualify; odd-even layers cross tile borders.
inline void TileLocalLayers(const std::vector<int32_t>& lo, const std::vector<int32_t>& hi,
                            const std::vector<int64_t>& layer_start, std::vector<uint8_t>* flags) {
  const size_t layers = layer_start.empty() ? 0 : layer_start.size() - 1;
  flags->assign(layers, 0);
  for (size_t l = 0; l < layers; ++l) {
    bool ok = true;
    for (int64_t k = layer_start[l]; ok && k < layer_start[l + 1]; ++k) {
      ok = lo[k] / kNetTile == hi[k] / kNetTile && (k == layer_start[l] || lo[k] > lo[k - 1]);
    }
    (*flags)[l] = ok ? 1 : 0;
  }
}

// What a launch computes (the op and its mode).
enum class NetMode {
  kForwardSort = 0,  // SortingNetwork, compute_ranks = false
  kForwardRank = 1,  // SortingNetwork, compute_ranks = true
  kGradSort = 2,     // SortingNetworkGrad, compute_ranks = false
  kGradRank = 3,     // SortingNetworkGrad, compute_ranks = true
  kGradAdjoint = 4,  // SortingNetworkGradAdjoint
};

// Workspace for one launch; acc_bytes = sizeof(A) (4 or 8). Host only, no CUDA calls.
size_t SortingNetworkWorkspaceBytes(NetMode mode, int64_t batch, int64_t n, int64_t num,
                                    int acc_bytes);

// SortingNetwork: out [batch, n] (sorted values or ranks), saved [batch, num] or
// [batch, 2 num] with ranks (u per comparator, then the rank differences).
template <typename T>
cudaError_t LaunchSortingNetwork(const T* x, T* out, NetAccT<T>* saved, int64_t batch,
                                 int64_t n, const GpuSchedule& sched, networks::Relaxation rel,
                                 double steepness, bool descending, bool ranks, void* workspace,
                                 size_t workspace_bytes, cudaStream_t stream);

// SortingNetworkGrad: grad [batch, n], saved as above, grad_saved [batch, num] or null
// (sort mode only); out [batch, n].
template <typename T>
cudaError_t LaunchSortingNetworkGrad(const T* grad, const NetAccT<T>* saved,
                                     const NetAccT<T>* grad_saved,
                                     T* out, int64_t batch, int64_t n, const GpuSchedule& sched,
                                     networks::Relaxation rel, double steepness, bool descending,
                                     bool ranks, void* workspace, size_t workspace_bytes,
                                     cudaStream_t stream);

// SortingNetworkGradAdjoint (sort mode): tangent and grad [batch, n], saved [batch, num],
// grad_saved [batch, num] or null; jvp [batch, n], grad_saved_out and grad_grad_saved
// [batch, num].
template <typename T>
cudaError_t LaunchSortingNetworkGradAdjoint(const T* tangent, const T* grad,
                                            const NetAccT<T>* saved, const NetAccT<T>* grad_saved,
                                            T* jvp, NetAccT<T>* d_saved,
                                            NetAccT<T>* d_grad_saved, int64_t batch, int64_t n,
                                            const GpuSchedule& sched, networks::Relaxation rel,
                                            double steepness, bool descending, void* workspace,
                                            size_t workspace_bytes, cudaStream_t stream);

}  // namespace cuda
}  // namespace tfsort

#endif  // TFSORT_CUDA_NETWORKS_LAUNCH_H_
