// Launchers for the isotonic family's CUDA kernels (tfsort/cuda/isotonic.cu.cc).
// TensorFlow-free: raw device pointers, sizes, plain attributes, a caller-provided
// workspace and a cudaStream_t. Launchers never allocate or synchronize; they return
// cudaGetLastError() after their launches, and launch nothing when batch or n is 0.
// T is float, double, __half or __nv_bfloat16 (explicitly instantiated).
//
// Data is [batch, n], row-major. Rows with NaN or +-inf give all-NaN outputs (segments
// -1, aux -1), as on the CPU.

#ifndef TFSORT_CUDA_ISOTONIC_LAUNCH_H_
#define TFSORT_CUDA_ISOTONIC_LAUNCH_H_

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

namespace tfsort {
namespace cuda {

// IsotonicL2 (kl = false) / IsotonicKL (kl = true; w required). solution may alias y.
template <typename T>
size_t IsotonicWorkspaceBytes(int64_t batch, int64_t n, bool kl);
template <typename T>
cudaError_t LaunchIsotonic(const T* y, const T* w, T* solution, int32_t* segments,
                           int64_t batch, int64_t n, bool kl, bool increasing,
                           void* workspace, size_t workspace_bytes, cudaStream_t stream);

// IsotonicL2Grad: block means of grad. out may alias grad.
template <typename T>
size_t IsotonicL2GradWorkspaceBytes(int64_t batch, int64_t n);
template <typename T>
cudaError_t LaunchIsotonicL2Grad(const T* grad, const int32_t* segments, T* out,
                                 int64_t batch, int64_t n, void* workspace,
                                 size_t workspace_bytes, cudaStream_t stream);

// IsotonicKLGrad: softmax spread (or, with adjoint, gather) per block.
template <typename T>
size_t IsotonicKLGradWorkspaceBytes(int64_t batch, int64_t n);
template <typename T>
cudaError_t LaunchIsotonicKLGrad(const T* grad, const T* y, const T* w,
                                 const int32_t* segments, T* grad_y, T* grad_w,
                                 int64_t batch, int64_t n, bool adjoint, void* workspace,
                                 size_t workspace_bytes, cudaStream_t stream);

// Fused SoftRank (rank = true) / SoftSort (rank = false). aux may be null (num_aux = 0).
// Workspace sizing asks CUB for its sort's temporary storage (cub's documented size query:
// no launch, no allocation).
template <typename T>
size_t SoftSortRankWorkspaceBytes(int64_t batch, int64_t n);
template <typename T>
cudaError_t LaunchSoftSortRank(const T* values, double eps, T* out, int32_t* aux,
                               int64_t batch, int64_t n, bool rank, bool kl,
                               bool descending, void* workspace, size_t workspace_bytes,
                               cudaStream_t stream);

// SoftRankGrad / SoftSortGrad. With aux == null the permutation and blocks are recomputed
// from values (num_aux = 0). adjoint applies to SoftSortGrad only. A row whose aux is
// corrupt (index >= n) gives NaN (the CPU kernel raises InvalidArgument instead).
template <typename T>
size_t SoftSortRankGradWorkspaceBytes(int64_t batch, int64_t n, bool have_aux);
template <typename T>
cudaError_t LaunchSoftSortRankGrad(const T* grad, const T* values, double eps,
                                   const int32_t* aux, T* out, int64_t batch, int64_t n,
                                   bool rank, bool kl, bool descending, bool adjoint,
                                   void* workspace, size_t workspace_bytes,
                                   cudaStream_t stream);

// Strategy by shape: one thread block per row (block-parallel PAV and VJPs) for rows of
// at least kIsotonicBlockRowMin, and for rows of at least kIsotonicBlockRowMinFewRows when
// there are at most kIsotonicFewRows of them (one thread per row would leave the GPU
// idle); one thread per row (serial PAV) otherwise.
constexpr int64_t kIsotonicBlockRowMin = 256;
constexpr int64_t kIsotonicBlockRowMinFewRows = 64;
constexpr int64_t kIsotonicFewRows = 4096;

inline bool IsotonicBlockPerRow(int64_t batch, int64_t n) {
  return n >= kIsotonicBlockRowMin ||
         (n >= kIsotonicBlockRowMinFewRows && batch <= kIsotonicFewRows);
}

}  // namespace cuda
}  // namespace tfsort

#endif  // TFSORT_CUDA_ISOTONIC_LAUNCH_H_
