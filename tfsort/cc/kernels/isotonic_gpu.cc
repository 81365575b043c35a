// GPU kernels for the isotonic-regression family (see ../ops/isotonic_ops.cc). They share
// validation and output allocation with the CPU kernels (isotonic_kernel_util.h), allocate
// workspace through TF, and forward raw device pointers to the TF-free launchers in
// tfsort/cuda/isotonic_launch.h on the op's stream. Scalar float64 inputs
// (regularization_strength) live in host memory.

#if TFSORT_WITH_CUDA

#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/tensor.h"
#include "tfsort/cc/kernels/gpu_util.h"
#include "tfsort/cc/kernels/isotonic_kernel_util.h"
#include "tfsort/cc/kernels/kernel_util.h"
#include "tfsort/cuda/isotonic_launch.h"

namespace tfsort {

using ::tensorflow::DEVICE_GPU;
using ::tensorflow::OpKernel;
using ::tensorflow::OpKernelConstruction;
using ::tensorflow::OpKernelContext;
using ::tensorflow::Tensor;

namespace {

using isokernels::SoftAttrs;

// Runs the isotonic GPU kernel on y (and w) into solution and segments.
template <typename T, bool kKL>
bool RunIsotonicGpu(OpKernelContext* ctx, const RowShape& rs, const Tensor& y_t,
                    const Tensor* w_t, T* solution, int32_t* segments, bool increasing) {
  using S = typename GpuStorage<T>::type;
  // Stream first: it makes the op's GPU current, which CUB's workspace query reads.
  const cudaStream_t stream = GetGpuStream(ctx);
  Tensor ws_t;
  void* ws = nullptr;
  const size_t bytes = cuda::IsotonicWorkspaceBytes<S>(rs.rows, rs.n, kKL);
  if (!AllocateWorkspace(ctx, bytes, &ws_t, &ws)) return false;
  const cudaError_t err = cuda::LaunchIsotonic<S>(
      GpuData<T>(y_t), kKL ? GpuData<T>(*w_t) : nullptr, reinterpret_cast<S*>(solution),
      segments, rs.rows, rs.n, kKL, increasing, ws, bytes, stream);
  return GpuLaunchOk(ctx, err, kKL ? "IsotonicKL" : "IsotonicL2");
}

// Block means of grad over segments into out.
template <typename T>
void RunIsotonicL2GradGpu(OpKernelContext* ctx, const RowShape& rs, const Tensor& g_t,
                          const int32_t* segments, Tensor* out_t) {
  using S = typename GpuStorage<T>::type;
  const cudaStream_t stream = GetGpuStream(ctx);
  Tensor ws_t;
  void* ws = nullptr;
  const size_t bytes = cuda::IsotonicL2GradWorkspaceBytes<S>(rs.rows, rs.n);
  if (!AllocateWorkspace(ctx, bytes, &ws_t, &ws)) return;
  const cudaError_t err = cuda::LaunchIsotonicL2Grad<S>(
      GpuData<T>(g_t), segments, GpuData<T>(out_t), rs.rows, rs.n, ws, bytes, stream);
  GpuLaunchOk(ctx, err, "IsotonicL2Grad");
}

// IsotonicL2 / IsotonicKL, and IsotonicL2Eager (segments in a temporary).
template <typename T, bool kKL>
class IsotonicGpuOp : public OpKernel {
 public:
  explicit IsotonicGpuOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
    if (!kKL && ctx->HasAttr("flags")) {
      eager_ = true;
      // The GPU kernels do not stash (the bit is accepted and ignored): the gradient op
      // runs PAV again.
      isokernels::ReadIsotonicFlags(ctx, true, &increasing_, nullptr);
      return;
    }
    OP_REQUIRES_OK(ctx, ctx->GetAttr("increasing", &increasing_));
  }

  void Compute(OpKernelContext* ctx) override {
    RowShape rs;
    Tensor* sol_t = nullptr;
    Tensor* seg_t = nullptr;
    if (!isokernels::PrepareIsotonic(ctx, kKL, !eager_, &rs, &sol_t, &seg_t) || rs.rows == 0) {
      return;
    }
    Tensor seg_temp;
    if (!seg_t) {
      OP_REQUIRES_OK(ctx, ctx->allocate_temp(::tensorflow::DT_INT32, sol_t->shape(), &seg_temp));
      seg_t = &seg_temp;
    }
    RunIsotonicGpu<T, kKL>(ctx, rs, ctx->input(0), kKL ? &ctx->input(1) : nullptr,
                           sol_t->flat<T>().data(), seg_t->flat<int32_t>().data(), increasing_);
  }

 private:
  bool increasing_ = false;
  bool eager_ = false;
};

template <typename T>
class IsotonicL2GradGpuOp : public OpKernel {
 public:
  explicit IsotonicL2GradGpuOp(OpKernelConstruction* ctx) : OpKernel(ctx) {}

  void Compute(OpKernelContext* ctx) override {
    RowShape rs;
    Tensor* out_t = nullptr;
    if (!isokernels::PrepareIsotonicL2Grad(ctx, "segments", &rs, &out_t) || rs.rows == 0) {
      return;
    }
    RunIsotonicL2GradGpu<T>(ctx, rs, ctx->input(0), ctx->input(1).flat<int32_t>().data(), out_t);
  }
};

// IsotonicL2EagerGrad: PAV over y again (into temporaries), then the block means of grad.
template <typename T>
class IsotonicL2EagerGradGpuOp : public OpKernel {
 public:
  explicit IsotonicL2EagerGradGpuOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
    isokernels::ReadIsotonicFlags(ctx, false, &increasing_, nullptr);
  }

  void Compute(OpKernelContext* ctx) override {
    RowShape rs;
    Tensor* out_t = nullptr;
    if (!isokernels::PrepareIsotonicL2Grad(ctx, "y", &rs, &out_t) || rs.rows == 0) return;
    const Tensor& y_t = ctx->input(1);
    Tensor sol, seg;
    OP_REQUIRES_OK(ctx, ctx->allocate_temp(y_t.dtype(), y_t.shape(), &sol));
    OP_REQUIRES_OK(ctx, ctx->allocate_temp(::tensorflow::DT_INT32, y_t.shape(), &seg));
    if (!RunIsotonicGpu<T, false>(ctx, rs, y_t, nullptr, sol.flat<T>().data(),
                                  seg.flat<int32_t>().data(), increasing_)) {
      return;
    }
    RunIsotonicL2GradGpu<T>(ctx, rs, ctx->input(0), seg.flat<int32_t>().data(), out_t);
  }

 private:
  bool increasing_ = false;
};

template <typename T>
class IsotonicKLGradGpuOp : public OpKernel {
 public:
  explicit IsotonicKLGradGpuOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, ctx->GetAttr("adjoint", &adjoint_));
  }

  void Compute(OpKernelContext* ctx) override {
    using S = typename GpuStorage<T>::type;
    RowShape rs;
    Tensor* gy_t = nullptr;
    Tensor* gw_t = nullptr;
    if (!isokernels::PrepareIsotonicKLGrad(ctx, &rs, &gy_t, &gw_t) || rs.rows == 0) return;
    const Tensor& g_t = ctx->input(0);
    const Tensor& y_t = ctx->input(1);
    const Tensor& w_t = ctx->input(2);
    const Tensor& seg_t = ctx->input(3);
    // Stream first: it makes the op's GPU current, which CUB's workspace query reads.
    const cudaStream_t stream = GetGpuStream(ctx);
    Tensor ws_t;
    void* ws = nullptr;
    const size_t bytes = cuda::IsotonicKLGradWorkspaceBytes<S>(rs.rows, rs.n);
    if (!AllocateWorkspace(ctx, bytes, &ws_t, &ws)) return;
    const cudaError_t err = cuda::LaunchIsotonicKLGrad<S>(
        GpuData<T>(g_t), GpuData<T>(y_t), GpuData<T>(w_t), seg_t.flat<int32_t>().data(),
        GpuData<T>(gy_t), GpuData<T>(gw_t), rs.rows, rs.n, adjoint_, ws, bytes,
        stream);
    GpuLaunchOk(ctx, err, "IsotonicKLGrad");
  }

 private:
  bool adjoint_ = false;
};

template <typename T, bool kRank>
class SoftSortRankGpuOp : public OpKernel {
 public:
  explicit SoftSortRankGpuOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
    isokernels::ReadSoftAttrs(ctx, &attrs_);
  }

  void Compute(OpKernelContext* ctx) override {
    using S = typename GpuStorage<T>::type;
    RowShape rs;
    double eps = 1.0;
    Tensor* out_t = nullptr;
    Tensor* aux_t = nullptr;
    if (!isokernels::PrepareSoft(ctx, attrs_, &rs, &eps, &out_t, &aux_t) || rs.rows == 0) {
      return;
    }
    const Tensor& x_t = ctx->input(0);
    // Stream first: it makes the op's GPU current, which CUB's workspace query reads.
    const cudaStream_t stream = GetGpuStream(ctx);
    Tensor ws_t;
    void* ws = nullptr;
    const size_t bytes = cuda::SoftSortRankWorkspaceBytes<S>(rs.rows, rs.n);
    if (!AllocateWorkspace(ctx, bytes, &ws_t, &ws)) return;
    const cudaError_t err = cuda::LaunchSoftSortRank<S>(
        GpuData<T>(x_t), eps, GpuData<T>(out_t),
        aux_t ? aux_t->flat<int32_t>().data() : nullptr, rs.rows, rs.n, kRank, attrs_.kl,
        attrs_.descending, ws, bytes, stream);
    GpuLaunchOk(ctx, err, kRank ? "SoftRank" : "SoftSort");
  }

 private:
  SoftAttrs attrs_;
};

template <typename T, bool kRank>
class SoftSortRankGradGpuOp : public OpKernel {
 public:
  explicit SoftSortRankGradGpuOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
    isokernels::ReadSoftAttrs(ctx, &attrs_);
  }

  void Compute(OpKernelContext* ctx) override {
    using S = typename GpuStorage<T>::type;
    RowShape rs;
    double eps = 1.0;
    const Tensor* aux_t = nullptr;
    Tensor* out_t = nullptr;
    if (!isokernels::PrepareSoftGrad(ctx, attrs_, &rs, &eps, &aux_t, &out_t) || rs.rows == 0) {
      return;
    }
    const Tensor& g_t = ctx->input(0);
    const Tensor& x_t = ctx->input(1);
    // Stream first: it makes the op's GPU current, which CUB's workspace query reads.
    const cudaStream_t stream = GetGpuStream(ctx);
    Tensor ws_t;
    void* ws = nullptr;
    const size_t bytes =
        cuda::SoftSortRankGradWorkspaceBytes<S>(rs.rows, rs.n, aux_t != nullptr);
    if (!AllocateWorkspace(ctx, bytes, &ws_t, &ws)) return;
    const cudaError_t err = cuda::LaunchSoftSortRankGrad<S>(
        GpuData<T>(g_t), GpuData<T>(x_t), eps,
        aux_t ? aux_t->flat<int32_t>().data() : nullptr, GpuData<T>(out_t), rs.rows, rs.n,
        kRank, attrs_.kl, attrs_.descending, !kRank && attrs_.adjoint, ws, bytes, stream);
    GpuLaunchOk(ctx, err, kRank ? "SoftRankGrad" : "SoftSortGrad");
  }

 private:
  SoftAttrs attrs_;
};

}  // namespace

// The fused ops read eps on the host (HostMemory), like every tfsort op.
#define TFSORT_REGISTER_SOFT_GPU(NAME, T, ...)                                          \
  REGISTER_KERNEL_BUILDER(                                                              \
      Name(NAME).Device(DEVICE_GPU).TypeConstraint<T>("T").HostMemory("regularization_strength"), \
      __VA_ARGS__)

#define TFSORT_REGISTER_ISOTONIC_GPU(T)                                                   \
  REGISTER_KERNEL_BUILDER(                                                                \
      Name("TFSort>IsotonicL2").Device(DEVICE_GPU).TypeConstraint<T>("T"),                \
      IsotonicGpuOp<T, false>);                                                           \
  REGISTER_KERNEL_BUILDER(                                                                \
      Name("TFSort>IsotonicKL").Device(DEVICE_GPU).TypeConstraint<T>("T"),                \
      IsotonicGpuOp<T, true>);                                                            \
  REGISTER_KERNEL_BUILDER(                                                                \
      Name("TFSort>IsotonicL2Grad").Device(DEVICE_GPU).TypeConstraint<T>("T"),            \
      IsotonicL2GradGpuOp<T>);                                                            \
  REGISTER_KERNEL_BUILDER(                                                                \
      Name("TFSort>IsotonicL2Eager").Device(DEVICE_GPU).TypeConstraint<T>("T"),           \
      IsotonicGpuOp<T, false>);                                                           \
  REGISTER_KERNEL_BUILDER(                                                                \
      Name("TFSort>IsotonicL2EagerGrad").Device(DEVICE_GPU).TypeConstraint<T>("T"),       \
      IsotonicL2EagerGradGpuOp<T>);                                                       \
  REGISTER_KERNEL_BUILDER(                                                                \
      Name("TFSort>IsotonicKLGrad").Device(DEVICE_GPU).TypeConstraint<T>("T"),            \
      IsotonicKLGradGpuOp<T>);                                                            \
  TFSORT_REGISTER_SOFT_GPU("TFSort>SoftRank", T, SoftSortRankGpuOp<T, true>);             \
  TFSORT_REGISTER_SOFT_GPU("TFSort>SoftSort", T, SoftSortRankGpuOp<T, false>);            \
  TFSORT_REGISTER_SOFT_GPU("TFSort>SoftRankGrad", T, SoftSortRankGradGpuOp<T, true>);     \
  TFSORT_REGISTER_SOFT_GPU("TFSort>SoftSortGrad", T, SoftSortRankGradGpuOp<T, false>);    \
  TFSORT_REGISTER_SOFT_GPU("TFSort>SoftRankEager", T, SoftSortRankGpuOp<T, true>);        \
  TFSORT_REGISTER_SOFT_GPU("TFSort>SoftSortEager", T, SoftSortRankGpuOp<T, false>);       \
  TFSORT_REGISTER_SOFT_GPU("TFSort>SoftRankEagerGrad", T, SoftSortRankGradGpuOp<T, true>); \
  TFSORT_REGISTER_SOFT_GPU("TFSort>SoftSortEagerGrad", T, SoftSortRankGradGpuOp<T, false>);

TFSORT_REGISTER_ISOTONIC_GPU(Eigen::half)
TFSORT_REGISTER_ISOTONIC_GPU(Eigen::bfloat16)
TFSORT_REGISTER_ISOTONIC_GPU(float)
TFSORT_REGISTER_ISOTONIC_GPU(double)

#undef TFSORT_REGISTER_ISOTONIC_GPU
#undef TFSORT_REGISTER_SOFT_GPU

}  // namespace tfsort

#endif  // TFSORT_WITH_CUDA
