// Launchers for the sigmoid top-k ops on a GPU (see tfsort/cc/ops/topk_ops.cc for the op
// contract). TensorFlow-free: raw device pointers, sizes and a cudaStream_t.
//
// Strategy: a warp per row for n <= kTopKWarpMaxN (eight rows per block), a block of
// kTopKBlockThreads threads per row above. The group reduces its partial sums (fixed tree,
// deterministic) and every thread runs topk.h's SigmoidSolver on the totals: the CPU's
// safeguarded Newton / key-space bisection, capped at topk::kMaxIterations evaluations. The
// device starts from the large-eps threshold (the CPU's small-eps start needs a selection),
// so iteration counts, not the solution's tolerance, may differ from the CPU's.
//
// Launchers never allocate or synchronize and need no workspace; they return
// cudaGetLastError() after their launches (cudaSuccess and no launch when batch == 0 or
// n == 0). k: a device array of one value per row, or null for the scalar k_scalar. k and
// eps are validated by the caller (0 < k < n, eps > 0 finite). Compute type C: float for
// __half, __nv_bfloat16 and float; double for double; sums in double.

#ifndef TFSORT_CUDA_TOPK_LAUNCH_H_
#define TFSORT_CUDA_TOPK_LAUNCH_H_

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

namespace tfsort {
namespace cuda {

constexpr int64_t kTopKWarpMaxN = 2048;
constexpr int kTopKBlockThreads = 512;

// SigmoidTopK: mask [batch, n]; rows with NaN or +-inf give a NaN row.
template <typename T>
cudaError_t LaunchSigmoidTopK(const T* x, const double* k, double k_scalar, double eps, T* mask,
                              int64_t batch, int64_t n, cudaStream_t stream);

// SigmoidTopKGrad: out = v g - v (v . g) / sum(v), v = mask (1 - mask) / eps. out may alias
// grad.
template <typename T>
cudaError_t LaunchSigmoidTopKGrad(const T* grad, const T* mask, double eps, T* out,
                                  int64_t batch, int64_t n, cudaStream_t stream);

}  // namespace cuda
}  // namespace tfsort

#endif  // TFSORT_CUDA_TOPK_LAUNCH_H_
