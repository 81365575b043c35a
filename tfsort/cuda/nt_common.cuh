// Device helpers private to the network and top-k launchers (networks.cu.cc, topk.cu.cc):
// conversions between the storage types and the compute type, launch-size helpers and a
// deterministic block reduction. No TensorFlow headers.

#ifndef TFSORT_CUDA_NT_COMMON_CUH_
#define TFSORT_CUDA_NT_COMMON_CUH_

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "tfsort/cuda/nt_conv.h"

namespace tfsort {
namespace cuda {
namespace nt {

}  // namespace nt

// Conv (nt_conv.h) for the 16-bit types: compute in float, round to nearest even on store.
template <>
struct Conv<__half> {
  __device__ __forceinline__ static float Load(__half v) { return __half2float(v); }
  __device__ __forceinline__ static __half Store(float v) { return __float2half_rn(v); }
  __device__ __forceinline__ static __half Store(double v) {
    return __float2half_rn(static_cast<float>(v));
  }
};
template <>
struct Conv<__nv_bfloat16> {
  __device__ __forceinline__ static float Load(__nv_bfloat16 v) { return __bfloat162float(v); }
  __device__ __forceinline__ static __nv_bfloat16 Store(float v) {
    return __float2bfloat16_rn(v);
  }
  __device__ __forceinline__ static __nv_bfloat16 Store(double v) {
    return __float2bfloat16_rn(static_cast<float>(v));
  }
};

namespace nt {

inline int64_t CeilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }
inline size_t AlignUp(size_t v) { return (v + 255) / 256 * 256; }

// Grid size for a grid-stride loop over `total` items with `threads` per block.
inline unsigned GridFor(int64_t total, int threads) {
  const int64_t blocks = CeilDiv(total, threads);
  return static_cast<unsigned>(blocks < 1 ? 1 : (blocks > 65535 * 16 ? 65535 * 16 : blocks));
}

// Sum over the block of one double per thread (blockDim.x a multiple of 32, at most 1024);
// every thread gets the total. The tree is fixed, so the result is deterministic. `shared`
// holds 32 doubles; the function writes it only after a barrier, so calls may follow each
// other on the same buffer.
__device__ __forceinline__ double BlockSum(double v, double* shared) {
  for (int off = 16; off > 0; off >>= 1) v += __shfl_xor_sync(0xffffffffu, v, off);
  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
  const int warps = blockDim.x >> 5;
  __syncthreads();
  if (lane == 0) shared[warp] = v;
  __syncthreads();
  double t = lane < warps ? shared[lane] : 0.0;
  for (int off = 16; off > 0; off >>= 1) t += __shfl_xor_sync(0xffffffffu, t, off);
  return t;
}

}  // namespace nt
}  // namespace cuda
}  // namespace tfsort

#endif  // TFSORT_CUDA_NT_COMMON_CUH_
