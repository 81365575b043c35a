// GPU kernels for the sorting-network family: SortingNetwork, SortingNetworkGrad and
// SortingNetworkGradAdjoint (see ../ops/networks_ops.cc). They validate exactly as the CPU
// kernels (networks_kernel_util.h), allocate, and forward raw pointers to the launchers in
// tfsort/cuda/networks.cu.cc. steepness is read on the host (HostMemory). The comparator
// schedule is uploaded once per (kernel, n) and cached in device tensors.
//
// CompareSwap(+Grad, +GradAdjoint) run the same launchers with a one-layer schedule made of
// the caller's comparators (left and right are HostMemory, validated on the host like the
// CPU kernel, then uploaded per call) and descending = false, which is exactly how the CPU
// kernels drive networks.h for them.
//
// SortingNetworkPermutation(+Grad) have no GPU kernel yet; TF's placer runs them on the CPU.

#if TFSORT_WITH_CUDA

#include <cuda_runtime_api.h>

#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/tensor.h"
#include "tensorflow/core/framework/tensor_shape.h"
#include "tfsort/cc/kernels/gpu_util.h"
#include "tfsort/cc/kernels/kernel_util.h"
#include "tfsort/cc/kernels/networks.h"
#include "tfsort/cc/kernels/networks_kernel_util.h"
#include "tfsort/cc/kernels/nt_gpu_util.h"
#include "tfsort/cuda/networks_launch.h"

namespace tfsort {

using ::tensorflow::DEVICE_GPU;
using ::tensorflow::OpKernel;
using ::tensorflow::OpKernelConstruction;
using ::tensorflow::OpKernelContext;
using ::tensorflow::Tensor;
using ::tensorflow::TensorShape;

namespace {

using netkernels::CheckLayer;
using netkernels::CheckSavedInputs;
using netkernels::NetAttrs;
using netkernels::NetRowShape;
using netkernels::ReadAttrs;
using netkernels::ReadSteepness;
using netkernels::WithLast;
using networks::Network;

// The schedule of the last n seen, on the device (lo, hi, layer_start) and on the host
// (layer_start). Device tensors released on a change of n are freed in stream order by TF's
// allocator, so launches already queued keep valid arrays.
class DeviceScheduleCache {
 public:
  struct Entry {
    Tensor lo, hi, start;
    std::vector<int64_t> host_start;
    std::vector<uint8_t> tile_local;
    int64_t num = 0;
  };

  // Returns the entry for n (building and uploading it when n changed), or null after
  // setting an error on ctx.
  std::shared_ptr<const Entry> Get(OpKernelContext* ctx, Network net, int n) {
    std::lock_guard<std::mutex> lock(mu_);
    if (entry_ && n_ == n) return entry_;
    auto e = std::make_shared<Entry>();
    std::vector<int32_t> lo, hi;
    cuda::BuildGpuSchedule(net, n, &lo, &hi, &e->host_start);
    cuda::TileLocalLayers(lo, hi, e->host_start, &e->tile_local);
    e->num = static_cast<int64_t>(lo.size());
    if (!ntgpu::UploadTensor(ctx, ::tensorflow::DT_INT32, e->num, lo.data(), sizeof(int32_t),
                             &e->lo) ||
        !ntgpu::UploadTensor(ctx, ::tensorflow::DT_INT32, e->num, hi.data(), sizeof(int32_t),
                             &e->hi) ||
        !ntgpu::UploadTensor(ctx, ::tensorflow::DT_INT64,
                             static_cast<int64_t>(e->host_start.size()), e->host_start.data(),
                             sizeof(int64_t), &e->start)) {
      return nullptr;
    }
    entry_ = e;
    n_ = n;
    return entry_;
  }

 private:
  std::mutex mu_;
  std::shared_ptr<const Entry> entry_;
  int n_ = -1;
};

cuda::GpuSchedule ViewOf(const DeviceScheduleCache::Entry& e) {
  cuda::GpuSchedule s;
  s.lo = reinterpret_cast<const int32_t*>(e.lo.tensor_data().data());
  s.hi = reinterpret_cast<const int32_t*>(e.hi.tensor_data().data());
  s.layer_start = reinterpret_cast<const int64_t*>(e.start.tensor_data().data());
  s.host_layer_start = e.host_start.data();
  s.host_tile_local = e.tile_local.data();
  s.num_layers = static_cast<int>(e.host_start.size()) - 1;
  s.num = e.num;
  return s;
}

// ---------------------------------------------------------------------------------------
// SortingNetwork

template <typename T, typename A>
class SortingNetworkGpuOp : public OpKernel {
 public:
  explicit SortingNetworkGpuOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
    ReadAttrs(ctx, true, &attrs_);
  }

  void Compute(OpKernelContext* ctx) override {
    const Tensor& x_t = ctx->input(0);
    RowShape rs;
    OP_REQUIRES_OK(ctx, NetRowShape(x_t, "values", &rs));
    const int n = rs.n;
    auto sched = cache_.Get(ctx, attrs_.network, n);
    if (sched == nullptr) return;
    const int64_t num = sched->num;
    const int64_t per_row = num * (attrs_.ranks ? 2 : 1);
    Tensor *out_t, *saved_t;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, x_t.shape(), &out_t));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(1, WithLast(x_t.shape(), per_row), &saved_t));
    if (rs.rows == 0) return;
    A s;
    OP_REQUIRES_OK(ctx, ReadSteepness(ctx, &s));
    const cuda::NetMode mode =
        attrs_.ranks ? cuda::NetMode::kForwardRank : cuda::NetMode::kForwardSort;
    const size_t ws_bytes = cuda::SortingNetworkWorkspaceBytes(mode, rs.rows, n, num,
                                                               static_cast<int>(sizeof(A)));
    Tensor ws_t;
    void* ws = nullptr;
    if (!AllocateWorkspace(ctx, ws_bytes, &ws_t, &ws)) return;
    const cudaError_t err = cuda::LaunchSortingNetwork<GpuType<T>>(
        GpuData<T>(x_t), GpuData<T>(out_t), GpuData<A>(saved_t), rs.rows, n,
        ViewOf(*sched), attrs_.relaxation, static_cast<double>(s), attrs_.descending,
        attrs_.ranks, ws, ws_bytes, GetGpuStream(ctx));
    GpuLaunchOk(ctx, err, "SortingNetwork");
  }

 private:
  NetAttrs attrs_;
  DeviceScheduleCache cache_;
};

// SortingNetworkGrad (kAdjoint false) and SortingNetworkGradAdjoint (kAdjoint true, input 0
// = tangent), as the CPU kernel.
template <typename T, typename A, bool kAdjoint>
class SortingNetworkGradGpuOp : public OpKernel {
 public:
  explicit SortingNetworkGradGpuOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
    ReadAttrs(ctx, true, &attrs_);
  }

  void Compute(OpKernelContext* ctx) override {
    const int o = kAdjoint ? 1 : 0;
    const Tensor& g_t = ctx->input(o);
    const Tensor& saved_t = ctx->input(o + 1);
    const Tensor& gs_t = ctx->input(o + 2);
    RowShape rs;
    OP_REQUIRES_OK(ctx, NetRowShape(g_t, "grad", &rs));
    if (kAdjoint) OP_REQUIRES_OK(ctx, CheckSameShape(g_t, "grad", ctx->input(0), "tangent"));
    const int n = rs.n;
    auto sched = cache_.Get(ctx, attrs_.network, n);
    if (sched == nullptr) return;
    const int64_t num = sched->num;
    const bool ranks = attrs_.ranks;
    const int64_t per_row = num * (ranks ? 2 : 1);
    const TensorShape sshape = WithLast(g_t.shape(), per_row);
    bool gs_zero = true;
    OP_REQUIRES_OK(ctx, CheckSavedInputs(saved_t, gs_t, sshape, ranks, &gs_zero));
    Tensor *out_t, *ds_t = nullptr, *dgs_t = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, g_t.shape(), &out_t));
    if (kAdjoint) {
      OP_REQUIRES_OK(ctx, ctx->allocate_output(1, sshape, &ds_t));
      OP_REQUIRES_OK(ctx, ctx->allocate_output(2, sshape, &dgs_t));
    }
    if (rs.rows == 0) return;
    A s;
    OP_REQUIRES_OK(ctx, ReadSteepness(ctx, &s));
    const A* saved = GpuData<A>(saved_t);
    const A* gsaved = gs_zero || gs_t.NumElements() == 0 ? nullptr : GpuData<A>(gs_t);
    const cuda::NetMode mode = kAdjoint ? cuda::NetMode::kGradAdjoint
                                        : (ranks ? cuda::NetMode::kGradRank
                                                 : cuda::NetMode::kGradSort);
    const size_t ws_bytes = cuda::SortingNetworkWorkspaceBytes(mode, rs.rows, n, num,
                                                               static_cast<int>(sizeof(A)));
    Tensor ws_t;
    void* ws = nullptr;
    if (!AllocateWorkspace(ctx, ws_bytes, &ws_t, &ws)) return;
    cudaError_t err;
    if (kAdjoint) {
      err = cuda::LaunchSortingNetworkGradAdjoint<GpuType<T>>(
          GpuData<T>(ctx->input(0)), GpuData<T>(g_t), saved, gsaved, GpuData<T>(out_t),
          GpuData<A>(ds_t), GpuData<A>(dgs_t), rs.rows, n, ViewOf(*sched), attrs_.relaxation,
          static_cast<double>(s), attrs_.descending, ws, ws_bytes, GetGpuStream(ctx));
    } else {
      err = cuda::LaunchSortingNetworkGrad<GpuType<T>>(
          GpuData<T>(g_t), saved, gsaved, GpuData<T>(out_t), rs.rows, n, ViewOf(*sched),
          attrs_.relaxation, static_cast<double>(s), attrs_.descending, ranks, ws, ws_bytes,
          GetGpuStream(ctx));
    }
    GpuLaunchOk(ctx, err, kAdjoint ? "SortingNetworkGradAdjoint" : "SortingNetworkGrad");
  }

 private:
  NetAttrs attrs_;
  DeviceScheduleCache cache_;
};

// ---------------------------------------------------------------------------------------
// CompareSwap: one layer of caller-given comparators.

// Uploads the layer (lo, hi and layer_start = {0, num}) into device tensors held by *holder.
struct LayerUpload {
  Tensor lohi, start;
  int64_t host_start[2] = {0, 0};
  cuda::GpuSchedule view;
};

bool UploadLayer(OpKernelContext* ctx, const Tensor& l_t, const Tensor& r_t, LayerUpload* up) {
  const int64_t num = l_t.NumElements();
  std::vector<int32_t> lohi(2 * num);
  for (int64_t k = 0; k < num; ++k) {
    lohi[k] = l_t.flat<int32_t>()(k);
    lohi[num + k] = r_t.flat<int32_t>()(k);
  }
  up->host_start[1] = num;
  if (!ntgpu::UploadTensor(ctx, ::tensorflow::DT_INT32, 2 * num, lohi.data(), sizeof(int32_t),
                           &up->lohi) ||
      !ntgpu::UploadTensor(ctx, ::tensorflow::DT_INT64, 2, up->host_start, sizeof(int64_t),
                           &up->start)) {
    return false;
  }
  const int32_t* base = reinterpret_cast<const int32_t*>(up->lohi.tensor_data().data());
  up->view.lo = base;
  up->view.hi = base + num;
  up->view.layer_start = reinterpret_cast<const int64_t*>(up->start.tensor_data().data());
  up->view.host_layer_start = up->host_start;
  up->view.num_layers = num > 0 ? 1 : 0;
  up->view.num = num;
  return true;
}

template <typename T, typename A>
class CompareSwapGpuOp : public OpKernel {
 public:
  explicit CompareSwapGpuOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
    ReadAttrs(ctx, false, &attrs_);
  }

  void Compute(OpKernelContext* ctx) override {
    const Tensor& x_t = ctx->input(0);
    const Tensor& l_t = ctx->input(1);
    const Tensor& r_t = ctx->input(2);
    RowShape rs;
    OP_REQUIRES_OK(ctx, NetRowShape(x_t, "values", &rs));
    OP_REQUIRES_OK(ctx, CheckLayer(l_t, r_t, rs.n));
    const int64_t num = l_t.NumElements();
    Tensor *out_t, *diff_t;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, x_t.shape(), &out_t));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(1, WithLast(x_t.shape(), num), &diff_t));
    if (rs.rows == 0) return;
    A s;
    OP_REQUIRES_OK(ctx, ReadSteepness(ctx, &s));
    LayerUpload up;
    if (!UploadLayer(ctx, l_t, r_t, &up)) return;
    const size_t ws_bytes = cuda::SortingNetworkWorkspaceBytes(
        cuda::NetMode::kForwardSort, rs.rows, rs.n, num, static_cast<int>(sizeof(A)));
    Tensor ws_t;
    void* ws = nullptr;
    if (!AllocateWorkspace(ctx, ws_bytes, &ws_t, &ws)) return;
    const cudaError_t err = cuda::LaunchSortingNetwork<GpuType<T>>(
        GpuData<T>(x_t), GpuData<T>(out_t), GpuData<A>(diff_t), rs.rows, rs.n, up.view,
        attrs_.relaxation, static_cast<double>(s), /*descending=*/false, /*ranks=*/false, ws,
        ws_bytes, GetGpuStream(ctx));
    GpuLaunchOk(ctx, err, "CompareSwap");
  }

 private:
  NetAttrs attrs_;
};

// CompareSwapGrad (kAdjoint false) and CompareSwapGradAdjoint (kAdjoint true, input 0 =
// tangent), as the CPU kernel.
template <typename T, typename A, bool kAdjoint>
class CompareSwapGradGpuOp : public OpKernel {
 public:
  explicit CompareSwapGradGpuOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
    ReadAttrs(ctx, false, &attrs_);
  }

  void Compute(OpKernelContext* ctx) override {
    const int o = kAdjoint ? 1 : 0;
    const Tensor& g_t = ctx->input(o);
    const Tensor& d_t = ctx->input(o + 1);
    const Tensor& l_t = ctx->input(o + 2);
    const Tensor& r_t = ctx->input(o + 3);
    const Tensor& gd_t = ctx->input(o + 4);
    RowShape rs;
    OP_REQUIRES_OK(ctx, NetRowShape(g_t, "grad", &rs));
    if (kAdjoint) OP_REQUIRES_OK(ctx, CheckSameShape(g_t, "grad", ctx->input(0), "tangent"));
    OP_REQUIRES_OK(ctx, CheckLayer(l_t, r_t, rs.n));
    const int64_t num = l_t.NumElements();
    const TensorShape dshape = WithLast(g_t.shape(), num);
    OP_REQUIRES(ctx, d_t.shape() == dshape,
                ::tensorflow::errors::InvalidArgument("diffs must have shape ",
                                                      dshape.DebugString(), ", got ",
                                                      d_t.shape().DebugString()));
    const bool gd_zero = gd_t.dims() == 1 && gd_t.dim_size(0) == 0;
    OP_REQUIRES(ctx, gd_zero || gd_t.shape() == dshape,
                ::tensorflow::errors::InvalidArgument("grad_diffs must have shape [0] or ",
                                                      dshape.DebugString(), ", got ",
                                                      gd_t.shape().DebugString()));
    Tensor *out_t, *dd_t = nullptr, *dgd_t = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, g_t.shape(), &out_t));
    if (kAdjoint) {
      OP_REQUIRES_OK(ctx, ctx->allocate_output(1, dshape, &dd_t));
      OP_REQUIRES_OK(ctx, ctx->allocate_output(2, dshape, &dgd_t));
    }
    if (rs.rows == 0) return;
    A s;
    OP_REQUIRES_OK(ctx, ReadSteepness(ctx, &s));
    LayerUpload up;
    if (!UploadLayer(ctx, l_t, r_t, &up)) return;
    const A* gd = gd_zero || gd_t.NumElements() == 0 ? nullptr : GpuData<A>(gd_t);
    const cuda::NetMode mode = kAdjoint ? cuda::NetMode::kGradAdjoint : cuda::NetMode::kGradSort;
    const size_t ws_bytes = cuda::SortingNetworkWorkspaceBytes(mode, rs.rows, rs.n, num,
                                                               static_cast<int>(sizeof(A)));
    Tensor ws_t;
    void* ws = nullptr;
    if (!AllocateWorkspace(ctx, ws_bytes, &ws_t, &ws)) return;
    cudaError_t err;
    if (kAdjoint) {
      err = cuda::LaunchSortingNetworkGradAdjoint<GpuType<T>>(
          GpuData<T>(ctx->input(0)), GpuData<T>(g_t), GpuData<A>(d_t), gd, GpuData<T>(out_t),
          GpuData<A>(dd_t), GpuData<A>(dgd_t), rs.rows, rs.n, up.view, attrs_.relaxation,
          static_cast<double>(s), /*descending=*/false, ws, ws_bytes, GetGpuStream(ctx));
    } else {
      err = cuda::LaunchSortingNetworkGrad<GpuType<T>>(
          GpuData<T>(g_t), GpuData<A>(d_t), gd, GpuData<T>(out_t), rs.rows, rs.n, up.view,
          attrs_.relaxation, static_cast<double>(s), /*descending=*/false, /*ranks=*/false, ws,
          ws_bytes, GetGpuStream(ctx));
    }
    GpuLaunchOk(ctx, err, kAdjoint ? "CompareSwapGradAdjoint" : "CompareSwapGrad");
  }

 private:
  NetAttrs attrs_;
};

}  // namespace

#define TFSORT_REGISTER_NETWORKS_GPU(T, A)                                        \
  REGISTER_KERNEL_BUILDER(Name("TFSort>SortingNetwork")                           \
                              .Device(DEVICE_GPU)                                 \
                              .TypeConstraint<T>("T")                             \
                              .TypeConstraint<A>("Tacc")                          \
                              .HostMemory("steepness"),                           \
                          SortingNetworkGpuOp<T, A>);                             \
  REGISTER_KERNEL_BUILDER(Name("TFSort>SortingNetworkGrad")                       \
                              .Device(DEVICE_GPU)                                 \
                              .TypeConstraint<T>("T")                             \
                              .TypeConstraint<A>("Tacc")                          \
                              .HostMemory("steepness"),                           \
                          SortingNetworkGradGpuOp<T, A, false>);                  \
  REGISTER_KERNEL_BUILDER(Name("TFSort>SortingNetworkGradAdjoint")                \
                              .Device(DEVICE_GPU)                                 \
                              .TypeConstraint<T>("T")                             \
                              .TypeConstraint<A>("Tacc")                          \
                              .HostMemory("steepness"),                           \
                          SortingNetworkGradGpuOp<T, A, true>);                   \
  REGISTER_KERNEL_BUILDER(Name("TFSort>CompareSwap")                              \
                              .Device(DEVICE_GPU)                                 \
                              .TypeConstraint<T>("T")                             \
                              .TypeConstraint<A>("Tacc")                          \
                              .HostMemory("left")                                 \
                              .HostMemory("right")                                \
                              .HostMemory("steepness"),                           \
                          CompareSwapGpuOp<T, A>);                                \
  REGISTER_KERNEL_BUILDER(Name("TFSort>CompareSwapGrad")                          \
                              .Device(DEVICE_GPU)                                 \
                              .TypeConstraint<T>("T")                             \
                              .TypeConstraint<A>("Tacc")                          \
                              .HostMemory("left")                                 \
                              .HostMemory("right")                                \
                              .HostMemory("steepness"),                           \
                          CompareSwapGradGpuOp<T, A, false>);                     \
  REGISTER_KERNEL_BUILDER(Name("TFSort>CompareSwapGradAdjoint")                   \
                              .Device(DEVICE_GPU)                                 \
                              .TypeConstraint<T>("T")                             \
                              .TypeConstraint<A>("Tacc")                          \
                              .HostMemory("left")                                 \
                              .HostMemory("right")                                \
                              .HostMemory("steepness"),                           \
                          CompareSwapGradGpuOp<T, A, true>);

TFSORT_REGISTER_NETWORKS_GPU(Eigen::half, float)
TFSORT_REGISTER_NETWORKS_GPU(Eigen::bfloat16, float)
TFSORT_REGISTER_NETWORKS_GPU(float, float)
TFSORT_REGISTER_NETWORKS_GPU(double, double)
#undef TFSORT_REGISTER_NETWORKS_GPU

}  // namespace tfsort

#endif  // TFSORT_WITH_CUDA
