// Helpers private to the GPU kernels of the network and top-k families (networks_gpu.cc,
// topk_gpu.cc): copying small host arrays (a comparator schedule, per-row k) into device
// tensors on the op's stream.

#ifndef TFSORT_CC_KERNELS_NT_GPU_UTIL_H_
#define TFSORT_CC_KERNELS_NT_GPU_UTIL_H_

#if TFSORT_WITH_CUDA

#include <cuda_runtime_api.h>

#include <cstdint>
#include <cstring>
#include <vector>

#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/tensor.h"
#include "tfsort/cc/kernels/gpu_util.h"

namespace tfsort {
namespace ntgpu {

// Copies `bytes` from host memory `src` to device memory `dst` on the op's stream. The data
// goes through a pageable heap buffer of our own: for a pageable source cudaMemcpyAsync
// returns only once the bytes are staged (CUDA runtime API, "API synchronization behavior"),
// so the buffer can be freed at once, and `src` (a host tensor TF may recycle after Compute
// returns, pinned or not) is never read by a later DMA.
inline bool UploadAsync(::tensorflow::OpKernelContext* ctx, void* dst, const void* src,
                        size_t bytes) {
  if (bytes == 0) return true;
  std::vector<unsigned char> staging(bytes);
  std::memcpy(staging.data(), src, bytes);
  const cudaError_t err = cudaMemcpyAsync(dst, staging.data(), bytes, cudaMemcpyHostToDevice,
                                          GetGpuStream(ctx));
  return GpuLaunchOk(ctx, err, "cudaMemcpyAsync (host to device)");
}

// A device tensor of `count` elements of `dtype` holding a copy of host data.
inline bool UploadTensor(::tensorflow::OpKernelContext* ctx, ::tensorflow::DataType dtype,
                         int64_t count, const void* src, size_t elem_bytes,
                         ::tensorflow::Tensor* out) {
  const ::tensorflow::Status s =
      ctx->allocate_temp(dtype, ::tensorflow::TensorShape({count}), out);
  if (!s.ok()) {
    ctx->SetStatus(s);
    return false;
  }
  if (count == 0) return true;
  return UploadAsync(ctx, const_cast<char*>(out->tensor_data().data()), src,
                     static_cast<size_t>(count) * elem_bytes);
}

}  // namespace ntgpu
}  // namespace tfsort

#endif  // TFSORT_WITH_CUDA
#endif  // TFSORT_CC_KERNELS_NT_GPU_UTIL_H_
