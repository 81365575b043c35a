// CPU kernels for the sorting-network family (see ../ops/networks_ops.cc). Each kernel
// validates, allocates, views data as [rows, n] and shards rows across TF's CPU worker
// threads; the per-row math lives in networks.h. Rows are independent and each row is
// computed by one thread in a fixed order, so results do not depend on the thread count.

#include <limits>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/tensor.h"
#include "tensorflow/core/framework/tensor_shape.h"
#include "tfsort/cc/kernels/kernel_util.h"
#include "tfsort/cc/kernels/networks.h"
#include "tfsort/cc/kernels/networks_kernel_util.h"

namespace tfsort {

using ::tensorflow::DEVICE_CPU;
using ::tensorflow::OpKernel;
using ::tensorflow::OpKernelConstruction;
using ::tensorflow::OpKernelContext;
using ::tensorflow::Tensor;
using ::tensorflow::TensorShape;
using ::tensorflow::errors::InvalidArgument;

namespace {

using netkernels::CheckLayer;
using netkernels::CheckSavedInputs;
using netkernels::NetAttrs;
using netkernels::NetRowShape;
using netkernels::ReadAttrs;
using netkernels::ReadSteepness;
using netkernels::ScheduleCache;
using netkernels::WithLast;
using networks::Network;
using networks::Relaxation;
using networks::Schedule;

// ---------------------------------------------------------------------------------------
// SortingNetwork

template <typename T, typename A>
class SortingNetworkOp : public OpKernel {
 public:
  explicit SortingNetworkOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
    ReadAttrs(ctx, true, &attrs_);
  }

  void Compute(OpKernelContext* ctx) override {
    const Tensor& x_t = ctx->input(0);
    RowShape rs;
    OP_REQUIRES_OK(ctx, NetRowShape(x_t, "values", &rs));
    const int64_t rows = rs.rows;
    const int n = rs.n;
    auto sched = cache_.Get(attrs_.network, n);
    const int64_t num = sched->size();
    const NetAttrs at = attrs_;
    const int64_t per_row = num * (at.ranks ? 2 : 1);
    Tensor *out_t, *saved_t;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, x_t.shape(), &out_t));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(1, WithLast(x_t.shape(), per_row), &saved_t));
    if (rows == 0) return;
    const T* x = x_t.flat<T>().data();
    T* out = out_t->flat<T>().data();
    A* saved = saved_t->flat<A>().data();
    const int32_t* lo = sched->lo.data();
    const int32_t* hi = sched->hi.data();
    A s;
    OP_REQUIRES_OK(ctx, ReadSteepness(ctx, &s));
    ForRows(ctx, rows, 40 * per_row + 10 * n + 50, [&](int64_t begin, int64_t end) {
      std::vector<A> buf(n), rbuf(at.ranks ? n : 0);
      for (int64_t r = begin; r < end; ++r) {
        const T* xr = x + r * n;
        for (int i = 0; i < n; ++i) buf[i] = static_cast<A>(xr[i]);
        A* diffs = saved + r * per_row;
        T* o = out + r * n;
        if (at.ranks) {
          A* rb = rbuf.data();
          for (int i = 0; i < n; ++i) rb[i] = static_cast<A>(at.descending ? n - i : i + 1);
          networks::ForwardRow<A>(at.relaxation, s, lo, hi, num, buf.data(), diffs, rb,
                                  diffs + num);
          for (int i = 0; i < n; ++i) o[i] = static_cast<T>(rb[i]);
        } else {
          networks::ForwardRow<A>(at.relaxation, s, lo, hi, num, buf.data(), diffs, nullptr,
                                  nullptr);
          for (int i = 0; i < n; ++i) o[at.descending ? n - 1 - i : i] = static_cast<T>(buf[i]);
        }
      }
    });
  }

 private:
  NetAttrs attrs_;
  ScheduleCache cache_;
};

// SortingNetworkGrad (kAdjoint false): the VJP, plus grad_saved (a cotangent of saved, or
// [0]; sort mode only) injected as in BackwardRow. SortingNetworkGradAdjoint (kAdjoint
// true, input 0 = tangent, sort mode only): the gradients of
// <tangent, SortingNetworkGrad(grad, saved, grad_saved)> w.r.t. grad (the JVP of the forward
// op, by the adjoint walk), saved and grad_saved.
template <typename T, typename A, bool kAdjoint>
class SortingNetworkGradOp : public OpKernel {
 public:
  explicit SortingNetworkGradOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
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
    const int64_t rows = rs.rows;
    const int n = rs.n;
    auto sched = cache_.Get(attrs_.network, n);
    const int64_t num = sched->size();
    const NetAttrs at = attrs_;
    const int64_t per_row = num * (at.ranks ? 2 : 1);
    const TensorShape sshape = WithLast(g_t.shape(), per_row);
    bool gs_zero = true;
    OP_REQUIRES_OK(ctx, CheckSavedInputs(saved_t, gs_t, sshape, at.ranks, &gs_zero));
    Tensor *out_t, *ds_t = nullptr, *dgs_t = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, g_t.shape(), &out_t));
    if (kAdjoint) {
      OP_REQUIRES_OK(ctx, ctx->allocate_output(1, sshape, &ds_t));
      OP_REQUIRES_OK(ctx, ctx->allocate_output(2, sshape, &dgs_t));
    }
    if (rows == 0) return;
    const T* g = g_t.flat<T>().data();
    const T* tg = kAdjoint ? ctx->input(0).flat<T>().data() : nullptr;
    const A* saved = saved_t.flat<A>().data();
    const A* gsaved = gs_zero || gs_t.NumElements() == 0 ? nullptr : gs_t.flat<A>().data();
    T* out = out_t->flat<T>().data();
    A* ds = ds_t ? ds_t->flat<A>().data() : nullptr;
    A* dgs = dgs_t ? dgs_t->flat<A>().data() : nullptr;
    const int32_t* lo = sched->lo.data();
    const int32_t* hi = sched->hi.data();
    A s;
    OP_REQUIRES_OK(ctx, ReadSteepness(ctx, &s));
    const int64_t cost = (kAdjoint ? 100 : 40) * num * (at.ranks ? 3 : 1) + 10 * n + 50;
    ForRows(ctx, rows, cost, [&](int64_t begin, int64_t end) {
      std::vector<A> gb(n), hb(at.ranks || kAdjoint ? n : 0), lalpha(at.ranks ? num : 0);
      std::vector<A> snap(kAdjoint ? num : 0);
      for (int64_t r = begin; r < end; ++r) {
        const T* gr = g + r * n;
        const A* diffs = saved + r * per_row;
        T* orow = out + r * n;
        if (at.ranks) {
          // The ranks' cotangent enters through the mixing weights only.
          for (int i = 0; i < n; ++i) {
            gb[i] = A(0);
            hb[i] = static_cast<A>(gr[i]);
          }
          networks::BackwardRow<A>(at.relaxation, s, lo, hi, num, diffs, gb.data(), hb.data(),
                                   diffs + num, lalpha.data());
          for (int i = 0; i < n; ++i) orow[i] = static_cast<T>(gb[i]);
          continue;
        }
        for (int i = 0; i < n; ++i) gb[i] = static_cast<A>(gr[at.descending ? n - 1 - i : i]);
        networks::BackwardRow<A>(at.relaxation, s, lo, hi, num, diffs, gb.data(), nullptr,
                                 nullptr, nullptr, gsaved ? gsaved + r * num : nullptr,
                                 kAdjoint ? snap.data() : nullptr);
        if (!kAdjoint) {
          for (int i = 0; i < n; ++i) orow[i] = static_cast<T>(gb[i]);
          continue;
        }
        // The tangent enters in input order; the JVP leaves in output (sorted) order.
        for (int i = 0; i < n; ++i) hb[i] = static_cast<A>(tg[r * n + i]);
        networks::BackwardRowAdjoint<A>(at.relaxation, s, lo, hi, num, diffs, snap.data(),
                                        hb.data(), ds + r * num, dgs + r * num);
        for (int i = 0; i < n; ++i) orow[at.descending ? n - 1 - i : i] = static_cast<T>(hb[i]);
      }
    });
  }

 private:
  NetAttrs attrs_;
  ScheduleCache cache_;
};

// ---------------------------------------------------------------------------------------
// SortingNetworkPermutation

template <typename T, typename A>
class SortingNetworkPermOp : public OpKernel {
 public:
  explicit SortingNetworkPermOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
    ReadAttrs(ctx, true, &attrs_);
  }

  void Compute(OpKernelContext* ctx) override {
    const Tensor& x_t = ctx->input(0);
    RowShape rs;
    OP_REQUIRES_OK(ctx, NetRowShape(x_t, "values", &rs));
    const int64_t rows = rs.rows;
    const int n = rs.n;
    OP_REQUIRES(ctx, n <= 46340,
                InvalidArgument("the permutation matrix needs n <= 46340, got n = ", n));
    auto sched = cache_.Get(attrs_.network, n);
    const int64_t num = sched->size();
    const NetAttrs at = attrs_;
    TensorShape pshape = x_t.shape();
    pshape.AddDim(n);
    Tensor *out_t, *p_t, *diff_t;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, x_t.shape(), &out_t));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(1, pshape, &p_t));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(2, WithLast(x_t.shape(), num), &diff_t));
    if (rows == 0) return;
    const T* x = x_t.flat<T>().data();
    T* out = out_t->flat<T>().data();
    T* perm = p_t->flat<T>().data();
    A* diffs = diff_t->flat<A>().data();
    const int32_t* lo = sched->lo.data();
    const int32_t* hi = sched->hi.data();
    A s;
    OP_REQUIRES_OK(ctx, ReadSteepness(ctx, &s));
    const int64_t nn = int64_t{n} * n;
    ForRows(ctx, rows, 40 * num + 4 * num * n + 2 * nn + 50, [&](int64_t begin, int64_t end) {
      std::vector<A> buf(n), pb(nn);
      for (int64_t r = begin; r < end; ++r) {
        for (int i = 0; i < n; ++i) buf[i] = static_cast<A>(x[r * n + i]);
        networks::ForwardPermRow<A>(at.relaxation, s, lo, hi, num, n, buf.data(),
                                    diffs + r * num, pb.data());
        T* o = out + r * n;
        T* po = perm + r * nn;
        for (int i = 0; i < n; ++i) {
          const int dst = at.descending ? n - 1 - i : i;
          o[dst] = static_cast<T>(buf[i]);
          const A* src = pb.data() + int64_t{i} * n;
          for (int j = 0; j < n; ++j) po[int64_t{dst} * n + j] = static_cast<T>(src[j]);
        }
      }
    });
  }

 private:
  NetAttrs attrs_;
  ScheduleCache cache_;
};

template <typename T, typename A>
class SortingNetworkPermGradOp : public OpKernel {
 public:
  explicit SortingNetworkPermGradOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
    ReadAttrs(ctx, true, &attrs_);
  }

  void Compute(OpKernelContext* ctx) override {
    const Tensor& g_t = ctx->input(0);
    const Tensor& gp_t = ctx->input(1);
    const Tensor& d_t = ctx->input(2);
    // As in SortingNetworkGrad, a [0] cotangent stands for zeros; the values' shape is
    // then read from grad_permutation [..., n, n].
    const bool g_placeholder = g_t.dims() == 1 && g_t.dim_size(0) == 0;
    const bool p_placeholder = gp_t.dims() == 1 && gp_t.dim_size(0) == 0;
    TensorShape xshape = g_t.shape();
    if (g_placeholder) {
      OP_REQUIRES(ctx, gp_t.dims() >= 2, InvalidArgument("grad_permutation must have rank >= 2"));
      xshape = gp_t.shape();
      xshape.RemoveLastDims(1);
    }
    OP_REQUIRES(ctx, xshape.dims() >= 1, InvalidArgument("grad_sorted must have rank >= 1"));
    const int n = static_cast<int>(xshape.dim_size(xshape.dims() - 1));
    const int64_t rows = n == 0 ? 0 : xshape.num_elements() / n;
    auto sched = cache_.Get(attrs_.network, n);
    const int64_t num = sched->size();
    const NetAttrs at = attrs_;
    TensorShape pshape = xshape;
    pshape.AddDim(n);
    if (!p_placeholder) {
      OP_REQUIRES(ctx, gp_t.shape() == pshape,
                  InvalidArgument("grad_permutation must have shape ", pshape.DebugString(),
                                  ", got ", gp_t.shape().DebugString()));
    }
    OP_REQUIRES(ctx, d_t.shape() == WithLast(xshape, num),
                InvalidArgument("diffs must have shape ", WithLast(xshape, num).DebugString(),
                                ", got ", d_t.shape().DebugString()));
    Tensor* out_t;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, xshape, &out_t));
    if (rows == 0) return;
    const T* g = g_placeholder ? nullptr : g_t.flat<T>().data();
    const T* gp = p_placeholder ? nullptr : gp_t.flat<T>().data();
    const A* diffs = d_t.flat<A>().data();
    T* out = out_t->flat<T>().data();
    const int32_t* lo = sched->lo.data();
    const int32_t* hi = sched->hi.data();
    A s;
    OP_REQUIRES_OK(ctx, ReadSteepness(ctx, &s));
    const int64_t nn = int64_t{n} * n;
    ForRows(ctx, rows, 40 * num + 12 * num * n + 4 * nn + 50, [&](int64_t begin, int64_t end) {
      std::vector<A> gb(n), gpb(nn), scratch(networks::PermScratchSize(num, n));
      for (int64_t r = begin; r < end; ++r) {
        for (int i = 0; i < n; ++i) {
          const int src = at.descending ? n - 1 - i : i;
          gb[i] = g ? static_cast<A>(g[r * n + src]) : A(0);
          for (int j = 0; j < n; ++j) {
            gpb[int64_t{i} * n + j] = gp ? static_cast<A>(gp[r * nn + int64_t{src} * n + j]) : A(0);
          }
        }
        networks::BackwardPermRow<A>(at.relaxation, s, lo, hi, num, n, diffs + r * num,
                                     gb.data(), gpb.data(), scratch.data());
        for (int i = 0; i < n; ++i) out[r * n + i] = static_cast<T>(gb[i]);
      }
    });
  }

 private:
  NetAttrs attrs_;
  ScheduleCache cache_;
};

// ---------------------------------------------------------------------------------------
// CompareSwap: one layer with caller-given comparators.

template <typename T, typename A>
class CompareSwapOp : public OpKernel {
 public:
  explicit CompareSwapOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
    ReadAttrs(ctx, false, &attrs_);
  }

  void Compute(OpKernelContext* ctx) override {
    const Tensor& x_t = ctx->input(0);
    const Tensor& l_t = ctx->input(1);
    const Tensor& r_t = ctx->input(2);
    RowShape rs;
    OP_REQUIRES_OK(ctx, NetRowShape(x_t, "values", &rs));
    const int64_t rows = rs.rows;
    const int n = rs.n;
    OP_REQUIRES_OK(ctx, CheckLayer(l_t, r_t, n));
    const int64_t num = l_t.NumElements();
    Tensor *out_t, *diff_t;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, x_t.shape(), &out_t));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(1, WithLast(x_t.shape(), num), &diff_t));
    if (rows == 0) return;
    const T* x = x_t.flat<T>().data();
    T* out = out_t->flat<T>().data();
    A* diffs = diff_t->flat<A>().data();
    const int32_t* lo = l_t.flat<int32_t>().data();
    const int32_t* hi = r_t.flat<int32_t>().data();
    const NetAttrs at = attrs_;
    A s;
    OP_REQUIRES_OK(ctx, ReadSteepness(ctx, &s));
    ForRows(ctx, rows, 40 * num + 5 * n + 20, [&](int64_t begin, int64_t end) {
      std::vector<A> buf(n);
      for (int64_t r = begin; r < end; ++r) {
        for (int i = 0; i < n; ++i) buf[i] = static_cast<A>(x[r * n + i]);
        networks::ForwardRow<A>(at.relaxation, s, lo, hi, num, buf.data(), diffs + r * num,
                                nullptr, nullptr);
        for (int i = 0; i < n; ++i) out[r * n + i] = static_cast<T>(buf[i]);
      }
    });
  }

 private:
  NetAttrs attrs_;
};

// CompareSwapGrad (kAdjoint false): the VJP of CompareSwap, plus grad_diffs (a cotangent
// of diffs, or [0]) injected as in BackwardRow. CompareSwapGradAdjoint (kAdjoint true,
// input 0 = tangent): the gradients of <tangent, CompareSwapGrad(...)> w.r.t. grad (the
// JVP), diffs and grad_diffs, as SortingNetworkGradAdjoint.
template <typename T, typename A, bool kAdjoint>
class CompareSwapGradOp : public OpKernel {
 public:
  explicit CompareSwapGradOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
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
    const int64_t rows = rs.rows;
    const int n = rs.n;
    OP_REQUIRES_OK(ctx, CheckLayer(l_t, r_t, n));
    const int64_t num = l_t.NumElements();
    const TensorShape dshape = WithLast(g_t.shape(), num);
    OP_REQUIRES(ctx, d_t.shape() == dshape,
                InvalidArgument("diffs must have shape ", dshape.DebugString(), ", got ",
                                d_t.shape().DebugString()));
    const bool gd_zero = gd_t.dims() == 1 && gd_t.dim_size(0) == 0;
    OP_REQUIRES(ctx, gd_zero || gd_t.shape() == dshape,
                InvalidArgument("grad_diffs must have shape [0] or ", dshape.DebugString(),
                                ", got ", gd_t.shape().DebugString()));
    Tensor *out_t, *dd_t = nullptr, *dgd_t = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, g_t.shape(), &out_t));
    if (kAdjoint) {
      OP_REQUIRES_OK(ctx, ctx->allocate_output(1, dshape, &dd_t));
      OP_REQUIRES_OK(ctx, ctx->allocate_output(2, dshape, &dgd_t));
    }
    if (rows == 0) return;
    const T* g = g_t.flat<T>().data();
    const T* tg = kAdjoint ? ctx->input(0).flat<T>().data() : nullptr;
    const A* diffs = d_t.flat<A>().data();
    const A* gd = gd_zero || gd_t.NumElements() == 0 ? nullptr : gd_t.flat<A>().data();
    T* out = out_t->flat<T>().data();
    A* dd = dd_t ? dd_t->flat<A>().data() : nullptr;
    A* dgd = dgd_t ? dgd_t->flat<A>().data() : nullptr;
    const int32_t* lo = l_t.flat<int32_t>().data();
    const int32_t* hi = r_t.flat<int32_t>().data();
    const NetAttrs at = attrs_;
    A s;
    OP_REQUIRES_OK(ctx, ReadSteepness(ctx, &s));
    ForRows(ctx, rows, (kAdjoint ? 100 : 40) * num + 5 * n + 20,
            [&](int64_t begin, int64_t end) {
              std::vector<A> buf(n), hb(kAdjoint ? n : 0), snap(kAdjoint ? num : 0);
              for (int64_t r = begin; r < end; ++r) {
                for (int i = 0; i < n; ++i) buf[i] = static_cast<A>(g[r * n + i]);
                networks::BackwardRow<A>(at.relaxation, s, lo, hi, num, diffs + r * num,
                                         buf.data(), nullptr, nullptr, nullptr,
                                         gd ? gd + r * num : nullptr,
                                         kAdjoint ? snap.data() : nullptr);
                if (kAdjoint) {
                  for (int i = 0; i < n; ++i) hb[i] = static_cast<A>(tg[r * n + i]);
                  networks::BackwardRowAdjoint<A>(at.relaxation, s, lo, hi, num,
                                                  diffs + r * num, snap.data(), hb.data(),
                                                  dd + r * num, dgd + r * num);
                }
                const A* src = kAdjoint ? hb.data() : buf.data();
                for (int i = 0; i < n; ++i) out[r * n + i] = static_cast<T>(src[i]);
              }
            });
  }

 private:
  NetAttrs attrs_;
};

}  // namespace

#define TFSORT_REGISTER_NETWORKS(T, A)                                                   \
  REGISTER_KERNEL_BUILDER(Name("TFSort>SortingNetwork")                                  \
                              .Device(DEVICE_CPU)                                        \
                              .TypeConstraint<T>("T")                                    \
                              .TypeConstraint<A>("Tacc"),                                \
                          SortingNetworkOp<T, A>);                                       \
  REGISTER_KERNEL_BUILDER(Name("TFSort>SortingNetworkGrad")                              \
                              .Device(DEVICE_CPU)                                        \
                              .TypeConstraint<T>("T")                                    \
                              .TypeConstraint<A>("Tacc"),                                \
                          SortingNetworkGradOp<T, A, false>);                            \
  REGISTER_KERNEL_BUILDER(Name("TFSort>SortingNetworkGradAdjoint")                       \
                              .Device(DEVICE_CPU)                                        \
                              .TypeConstraint<T>("T")                                    \
                              .TypeConstraint<A>("Tacc"),                                \
                          SortingNetworkGradOp<T, A, true>);                             \
  REGISTER_KERNEL_BUILDER(Name("TFSort>SortingNetworkPermutation")                       \
                              .Device(DEVICE_CPU)                                        \
                              .TypeConstraint<T>("T")                                    \
                              .TypeConstraint<A>("Tacc"),                                \
                          SortingNetworkPermOp<T, A>);                                   \
  REGISTER_KERNEL_BUILDER(Name("TFSort>SortingNetworkPermutationGrad")                   \
                              .Device(DEVICE_CPU)                                        \
                              .TypeConstraint<T>("T")                                    \
                              .TypeConstraint<A>("Tacc"),                                \
                          SortingNetworkPermGradOp<T, A>);                               \
  REGISTER_KERNEL_BUILDER(                                                               \
      Name("TFSort>CompareSwap").Device(DEVICE_CPU).TypeConstraint<T>("T").TypeConstraint<A>( \
          "Tacc"),                                                                       \
      CompareSwapOp<T, A>);                                                              \
  REGISTER_KERNEL_BUILDER(Name("TFSort>CompareSwapGrad")                                 \
                              .Device(DEVICE_CPU)                                        \
                              .TypeConstraint<T>("T")                                    \
                              .TypeConstraint<A>("Tacc"),                                \
                          CompareSwapGradOp<T, A, false>);                               \
  REGISTER_KERNEL_BUILDER(Name("TFSort>CompareSwapGradAdjoint")                          \
                              .Device(DEVICE_CPU)                                        \
                              .TypeConstraint<T>("T")                                    \
                              .TypeConstraint<A>("Tacc"),                                \
                          CompareSwapGradOp<T, A, true>);

TFSORT_REGISTER_NETWORKS(Eigen::half, float)
TFSORT_REGISTER_NETWORKS(Eigen::bfloat16, float)
TFSORT_REGISTER_NETWORKS(float, float)
TFSORT_REGISTER_NETWORKS(double, double)
#undef TFSORT_REGISTER_NETWORKS

}  // namespace tfsort
