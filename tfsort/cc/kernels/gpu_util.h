// TensorFlow-side helpers for the GPU kernels of every op family (only compiled with
// -DTFSORT_WITH_CUDA=1; see docs/cuda.md). A GPU kernel class validates exactly like its
// CPU twin (kernel_util.h), allocates outputs and workspace through TF, and forwards raw
// device pointers to a TF-free launcher in tfsort/cuda/ on the op's own stream.

#ifndef TFSORT_CC_KERNELS_GPU_UTIL_H_
#define TFSORT_CC_KERNELS_GPU_UTIL_H_

#if TFSORT_WITH_CUDA

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime_api.h>

#include <cstdint>
#include <limits>

#include "tensorflow/core/framework/device_base.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/tensor.h"
#include "xla/stream_executor/stream.h"
#include "xla/stream_executor/stream_executor.h"

namespace tfsort {

// Storage type the launchers take for a TF element type (same size and bit layout).
template <typename T>
struct GpuStorage {
  using type = T;
};
template <>
struct GpuStorage<Eigen::half> {
  using type = __half;
};
template <>
struct GpuStorage<Eigen::bfloat16> {
  using type = __nv_bfloat16;
};
static_assert(sizeof(Eigen::half) == sizeof(__half), "half layout");
static_assert(sizeof(Eigen::bfloat16) == sizeof(__nv_bfloat16), "bfloat16 layout");

template <typename T>
using GpuType = typename GpuStorage<T>::type;

// Device pointers of a tensor as the launcher's storage type.
template <typename T>
inline const typename GpuStorage<T>::type* GpuData(const ::tensorflow::Tensor& t) {
  return reinterpret_cast<const typename GpuStorage<T>::type*>(t.flat<T>().data());
}
template <typename T>
inline typename GpuStorage<T>::type* GpuData(::tensorflow::Tensor* t) {
  return reinterpret_cast<typename GpuStorage<T>::type*>(t->flat<T>().data());
}

// The CUDA stream TF runs this op on (never the default stream). Also makes the op's
// GPU current on this thread: tfsort links its own (static) CUDA runtime, whose current
// device is per thread and would otherwise default to GPU 0.
inline cudaStream_t GetGpuStream(::tensorflow::OpKernelContext* ctx) {
  auto* dc = ctx->op_device_context();
  if (dc == nullptr || dc->stream() == nullptr) return nullptr;
  stream_executor::Stream* stream = dc->stream();
  const int ordinal = stream->parent() ? stream->parent()->device_ordinal() : -1;
  if (ordinal >= 0) {
    int current = -1;
    if (cudaGetDevice(&current) != cudaSuccess || current != ordinal) cudaSetDevice(ordinal);
  }
  return static_cast<cudaStream_t>(stream->platform_specific_handle().stream);
}

// Turns a launcher's error code into an Internal error on ctx; returns whether it was ok.
// A driver too old for the CUDA runtime tfsort was built with gets a hint on how to fix it.
inline bool GpuLaunchOk(::tensorflow::OpKernelContext* ctx, cudaError_t err, const char* what) {
  if (err == cudaSuccess) return true;
  const char* hint = "";
  if (err == cudaErrorInsufficientDriver || err == cudaErrorCompatNotSupportedOnDevice) {
    hint = ". tfsort's GPU kernels were built with a newer CUDA runtime than this driver "
           "supports (CUDA 13 needs driver >= 580): update the driver, or rebuild tfsort "
           "with a CUDA 12 nvcc (TFSORT_NVCC=...) or CPU-only (TFSORT_CUDA=0); see "
           "docs/cuda.md";
  }
  ctx->CtxFailure(::tensorflow::errors::Internal(
      "tfsort: CUDA launch of ", what, " failed: ", cudaGetErrorName(err), " (",
      cudaGetErrorString(err), ", CUDA runtime ", CUDART_VERSION, ")", hint));
  return false;
}

// Allocates `bytes` of device scratch through TF's allocator (held by *holder until the
// kernel returns; TF keeps it alive for the stream's pending work). *ptr is null for 0.
inline bool AllocateWorkspace(::tensorflow::OpKernelContext* ctx, size_t bytes,
                              ::tensorflow::Tensor* holder, void** ptr) {
  *ptr = nullptr;
  if (bytes == 0) return true;
  if (bytes > static_cast<size_t>(std::numeric_limits<int64_t>::max())) {
    ctx->CtxFailure(::tensorflow::errors::ResourceExhausted("tfsort: workspace of ", bytes,
                                                            " bytes is too large"));
    return false;
  }
  const ::tensorflow::Status s = ctx->allocate_temp(
      ::tensorflow::DT_UINT8, ::tensorflow::TensorShape({static_cast<int64_t>(bytes)}), holder);
  if (!s.ok()) {
    ctx->CtxFailure(s);
    return false;
  }
  *ptr = holder->flat<uint8_t>().data();
  return true;
}

}  // namespace tfsort

#endif  // TFSORT_WITH_CUDA
#endif  // TFSORT_CC_KERNELS_GPU_UTIL_H_
