// extern "C" wrappers of the sigmoid top-k launchers for the ctypes harness (tests/gpu).
// Device pointers from torch tensors; k is a device array of one value per row or null (then
// k_scalar). Each wrapper returns the cudaError_t as an int. Compiled by tests/gpu/build.py
// with nvcc alone.

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime_api.h>

#include <cstdint>

#include "tfsort/cuda/topk_launch.h"

extern "C" {

#define TFSORT_CAPI_TOPK(SUFFIX, T)                                                           \
  int tfsort_h_sigmoid_topk_##SUFFIX(const void* x, const void* k, double k_scalar,           \
                                     double eps, void* mask, int64_t batch, int64_t n,        \
                                     void* stream) {                                          \
    return static_cast<int>(tfsort::cuda::LaunchSigmoidTopK<T>(                               \
        static_cast<const T*>(x), static_cast<const double*>(k), k_scalar, eps,               \
        static_cast<T*>(mask), batch, n, static_cast<cudaStream_t>(stream)));                 \
  }                                                                                           \
  int tfsort_h_sigmoid_topk_grad_##SUFFIX(const void* grad, const void* mask, double eps,     \
                                          void* out, int64_t batch, int64_t n, void* stream) { \
    return static_cast<int>(tfsort::cuda::LaunchSigmoidTopKGrad<T>(                           \
        static_cast<const T*>(grad), static_cast<const T*>(mask), eps, static_cast<T*>(out),  \
        batch, n, static_cast<cudaStream_t>(stream)));                                        \
  }

TFSORT_CAPI_TOPK(f16, __half)
TFSORT_CAPI_TOPK(bf16, __nv_bfloat16)
TFSORT_CAPI_TOPK(f32, float)
TFSORT_CAPI_TOPK(f64, double)
#undef TFSORT_CAPI_TOPK

}  // extern "C"
