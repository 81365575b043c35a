// GPU kernels for the sigmoid top-k ops: SigmoidTopK and SigmoidTopKGrad (see
// ../ops/topk_ops.cc). They validate exactly as the CPU kernels (topk_kernel_util.h and
// kernel_util.h) and forward raw pointers to tfsort/cuda/topk.cu.cc. k and
// regularization_strength are read on the host (HostMemory); a per-row k is copied to the
// device into a temporary tensor.
//
// SparseTopK and SparseTopKGrad have no GPU kernel yet; TF's placer runs them on the CPU.

#if TFSORT_WITH_CUDA

#include <cuda_runtime_api.h>

#include <cstdint>

#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/tensor.h"
#include "tfsort/cc/kernels/gpu_util.h"
#include "tfsort/cc/kernels/kernel_util.h"
#include "tfsort/cc/kernels/nt_gpu_util.h"
#include "tfsort/cc/kernels/topk_kernel_util.h"
#include "tfsort/cuda/topk_launch.h"

namespace tfsort {

using ::tensorflow::DEVICE_GPU;
using ::tensorflow::OpKernel;
using ::tensorflow::OpKernelConstruction;
using ::tensorflow::OpKernelContext;
using ::tensorflow::Tensor;

namespace {

template <typename T>
class SigmoidTopKGpuOp : public OpKernel {
 public:
  explicit SigmoidTopKGpuOp(OpKernelConstruction* ctx) : OpKernel(ctx) {}

  void Compute(OpKernelContext* ctx) override {
    topkkernels::TopKShape ts;
    double eps = 1.0;
    Tensor* out_t = nullptr;
    OP_REQUIRES_OK(ctx, topkkernels::PrepareTopK(ctx, false, 1, &ts, &eps, &out_t));
    const int64_t rows = ts.rows;
    const int n = ts.n;
    if (rows == 0 || n == 0) return;
    const Tensor& x_t = ctx->input(0);
    const Tensor& k_t = ctx->input(1);
    const double* k_host = k_t.flat<double>().data();
    Tensor k_dev_t;
    const double* k_dev = nullptr;
    if (ts.k_stride == 1) {
      if (!ntgpu::UploadTensor(ctx, ::tensorflow::DT_DOUBLE, rows, k_host, sizeof(double),
                               &k_dev_t)) {
        return;
      }
      k_dev = reinterpret_cast<const double*>(k_dev_t.tensor_data().data());
    }
    const cudaError_t err = cuda::LaunchSigmoidTopK<GpuType<T>>(
        GpuData<T>(x_t), k_dev, k_host[0], eps, GpuData<T>(out_t), rows, n, GetGpuStream(ctx));
    GpuLaunchOk(ctx, err, "SigmoidTopK");
  }
};

template <typename T>
class SigmoidTopKGradGpuOp : public OpKernel {
 public:
  explicit SigmoidTopKGradGpuOp(OpKernelConstruction* ctx) : OpKernel(ctx) {}

  void Compute(OpKernelContext* ctx) override {
    RowShape rs;
    double eps = 1.0;
    Tensor* out_t = nullptr;
    OP_REQUIRES_OK(ctx, topkkernels::PrepareTopKGrad(ctx, "mask", &rs, &eps, &out_t));
    if (rs.rows == 0) return;
    const Tensor& g_t = ctx->input(0);
    const Tensor& p_t = ctx->input(1);
    const cudaError_t err =
        cuda::LaunchSigmoidTopKGrad<GpuType<T>>(GpuData<T>(g_t), GpuData<T>(p_t), eps,
                                            GpuData<T>(out_t), rs.rows, rs.n, GetGpuStream(ctx));
    GpuLaunchOk(ctx, err, "SigmoidTopKGrad");
  }
};

}  // namespace

#define TFSORT_REGISTER_TOPK_GPU(T)                                          \
  REGISTER_KERNEL_BUILDER(Name("TFSort>SigmoidTopK")                         \
                              .Device(DEVICE_GPU)                            \
                              .TypeConstraint<T>("T")                        \
                              .HostMemory("k")                               \
                              .HostMemory("regularization_strength"),        \
                          SigmoidTopKGpuOp<T>);                              \
  REGISTER_KERNEL_BUILDER(Name("TFSort>SigmoidTopKGrad")                     \
                              .Device(DEVICE_GPU)                            \
                              .TypeConstraint<T>("T")                        \
                              .HostMemory("regularization_strength"),        \
                          SigmoidTopKGradGpuOp<T>);

TFSORT_REGISTER_TOPK_GPU(Eigen::half)
TFSORT_REGISTER_TOPK_GPU(Eigen::bfloat16)
TFSORT_REGISTER_TOPK_GPU(float)
TFSORT_REGISTER_TOPK_GPU(double)
#undef TFSORT_REGISTER_TOPK_GPU

}  // namespace tfsort

#endif  // TFSORT_WITH_CUDA
