// extern "C" wrappers of the sorting-network launchers for the ctypes harness (tests/gpu).
// Pointers are device pointers from torch tensors except where named host_*. Each wrapper
// returns the cudaError_t as an int. Compiled by tests/gpu/build.py with nvcc alone.

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime_api.h>

#include <cstdint>
#include <vector>

#include "tfsort/cc/kernels/networks.h"
#include "tfsort/cuda/networks_launch.h"

using tfsort::cuda::GpuSchedule;
using tfsort::cuda::NetAccT;
using tfsort::networks::Network;
using tfsort::networks::Relaxation;

namespace {

GpuSchedule MakeSchedule(const int32_t* lo, const int32_t* hi, const int64_t* start,
                         const int64_t* host_start, const uint8_t* host_tile_local,
                         int num_layers, int64_t num) {
  GpuSchedule s;
  s.host_tile_local = host_tile_local;
  s.lo = lo;
  s.hi = hi;
  s.layer_start = start;
  s.host_layer_start = host_start;
  s.num_layers = num_layers;
  s.num = num;
  return s;
}

}  // namespace

extern "C" {

// Schedule sizes: comparators and layers of `network` (0 bitonic, 1 odd_even) on n wires.
int64_t tfsort_h_network_num_comparators(int network, int64_t n) {
  return tfsort::networks::NumComparators(static_cast<Network>(network), static_cast<int>(n));
}

int tfsort_h_network_num_layers(int network, int64_t n) {
  std::vector<int32_t> lo, hi;
  std::vector<int64_t> start;
  tfsort::cuda::BuildGpuSchedule(static_cast<Network>(network), static_cast<int>(n), &lo, &hi,
                                 &start);
  return static_cast<int>(start.size()) - 1;
}

// Fills host arrays lo, hi (num) and layer_start (num_layers + 1).
int tfsort_h_network_schedule(int network, int64_t n, int32_t* host_lo, int32_t* host_hi,
                              int64_t* host_start) {
  std::vector<int32_t> lo, hi;
  std::vector<int64_t> start;
  tfsort::cuda::BuildGpuSchedule(static_cast<Network>(network), static_cast<int>(n), &lo, &hi,
                                 &start);
  for (size_t i = 0; i < lo.size(); ++i) {
    host_lo[i] = lo[i];
    host_hi[i] = hi[i];
  }
  for (size_t i = 0; i < start.size(); ++i) host_start[i] = start[i];
  return 0;
}

// Fills host flags (num_layers): 1 for the tile-local layers (tfsort::cuda::TileLocalLayers).
int tfsort_h_network_tile_local(int network, int64_t n, uint8_t* host_flags) {
  std::vector<int32_t> lo, hi;
  std::vector<int64_t> start;
  std::vector<uint8_t> flags;
  tfsort::cuda::BuildGpuSchedule(static_cast<Network>(network), static_cast<int>(n), &lo, &hi,
                                 &start);
  tfsort::cuda::TileLocalLayers(lo, hi, start, &flags);
  for (size_t i = 0; i < flags.size(); ++i) host_flags[i] = flags[i];
  return 0;
}

// mode: tfsort::cuda::NetMode (0 forward sort, 1 forward rank, 2 grad sort, 3 grad rank,
// 4 grad adjoint).
uint64_t tfsort_h_sorting_network_workspace(int mode, int64_t batch, int64_t n, int64_t num,
                                            int acc_bytes) {
  return tfsort::cuda::SortingNetworkWorkspaceBytes(static_cast<tfsort::cuda::NetMode>(mode),
                                                    batch, n, num, acc_bytes);
}

// Every launcher wrapper takes the schedule as (lo, hi, start: device; host_start,
// host_tile_local: host, the latter may be null; num_layers, num).
#define TFSORT_SCHED_PARAMS                                                          \
  const int32_t *lo, const int32_t *hi, const int64_t *start, const int64_t *host_start, \
      const uint8_t *host_tile_local, int num_layers, int64_t num
#define TFSORT_SCHED MakeSchedule(lo, hi, start, host_start, host_tile_local, num_layers, num)

#define TFSORT_CAPI_NETWORKS(SUFFIX, T)                                                   \
  int tfsort_h_sorting_network_##SUFFIX(const void* x, void* out, void* saved,          \
                                        int64_t batch, int64_t n, TFSORT_SCHED_PARAMS,  \
                                        int relaxation, double steepness, int descending, \
                                        int ranks, void* workspace,                     \
                                        uint64_t workspace_bytes, void* stream) {       \
    return static_cast<int>(tfsort::cuda::LaunchSortingNetwork<T>(                        \
        static_cast<const T*>(x), static_cast<T*>(out), static_cast<NetAccT<T>*>(saved),  \
        batch, n, TFSORT_SCHED, static_cast<Relaxation>(relaxation), steepness,           \
        descending != 0, ranks != 0, workspace, workspace_bytes,                          \
        static_cast<cudaStream_t>(stream)));                                              \
  }                                                                                       \
  int tfsort_h_sorting_network_grad_##SUFFIX(                                             \
      const void* grad, const void* saved, const void* grad_saved, void* out,             \
      int64_t batch, int64_t n, TFSORT_SCHED_PARAMS, int relaxation, double steepness,    \
      int descending, int ranks, void* workspace, uint64_t workspace_bytes,               \
      void* stream) {                                                                     \
    return static_cast<int>(tfsort::cuda::LaunchSortingNetworkGrad<T>(                    \
        static_cast<const T*>(grad), static_cast<const NetAccT<T>*>(saved),               \
        static_cast<const NetAccT<T>*>(grad_saved), static_cast<T*>(out), batch, n,       \
        TFSORT_SCHED, static_cast<Relaxation>(relaxation), steepness, descending != 0,    \
        ranks != 0, workspace, workspace_bytes, static_cast<cudaStream_t>(stream)));      \
  }                                                                                       \
  int tfsort_h_sorting_network_grad_adjoint_##SUFFIX(                                     \
      const void* tangent, const void* grad, const void* saved, const void* grad_saved,   \
      void* jvp, void* d_saved, void* d_grad_saved, int64_t batch, int64_t n,             \
      TFSORT_SCHED_PARAMS, int relaxation, double steepness, int descending,              \
      void* workspace, uint64_t workspace_bytes, void* stream) {                          \
    return static_cast<int>(tfsort::cuda::LaunchSortingNetworkGradAdjoint<T>(             \
        static_cast<const T*>(tangent), static_cast<const T*>(grad),                      \
        static_cast<const NetAccT<T>*>(saved), static_cast<const NetAccT<T>*>(grad_saved), \
        static_cast<T*>(jvp), static_cast<NetAccT<T>*>(d_saved),                          \
        static_cast<NetAccT<T>*>(d_grad_saved), batch, n, TFSORT_SCHED,                   \
        static_cast<Relaxation>(relaxation), steepness, descending != 0, workspace,       \
        workspace_bytes, static_cast<cudaStream_t>(stream)));                             \
  }

TFSORT_CAPI_NETWORKS(f16, __half)
TFSORT_CAPI_NETWORKS(bf16, __nv_bfloat16)
TFSORT_CAPI_NETWORKS(f32, float)
TFSORT_CAPI_NETWORKS(f64, double)
#undef TFSORT_CAPI_NETWORKS
#undef TFSORT_SCHED
#undef TFSORT_SCHED_PARAMS

}  // extern "C"
