// CPU kernels for differentiable top-k (see ../ops/topk_ops.cc). Each kernel validates,
// allocates, views data as [rows, n] and shards rows across TF's CPU worker threads; the
// per-row math lives in topk.h (and isotonic.h / sort_util.h for the sparse mask).

#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <type_traits>
#include <vector>

#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/tensor.h"
#include "tensorflow/core/framework/tensor_shape.h"
#include "tfsort/cc/kernels/isotonic.h"
#include "tfsort/cc/kernels/kernel_util.h"
#include "tfsort/cc/kernels/sort_util.h"
#include "tfsort/cc/kernels/topk.h"
#include "tfsort/cc/kernels/topk_kernel_util.h"

namespace tfsort {

using ::tensorflow::DEVICE_CPU;
using ::tensorflow::OpKernel;
using ::tensorflow::OpKernelConstruction;
using ::tensorflow::OpKernelContext;
using ::tensorflow::Tensor;
using ::tensorflow::errors::InvalidArgument;

namespace {

// ---------------------------------------------------------------------------------------
// SigmoidTopK

template <typename T>
class SigmoidTopKOp : public OpKernel {
 public:
  explicit SigmoidTopKOp(OpKernelConstruction* ctx) : OpKernel(ctx) {}

  void Compute(OpKernelContext* ctx) override {
    using C = typename FloatType<T>::type;
    topkkernels::TopKShape ts;
    double eps = 1.0;
    Tensor* out_t = nullptr;
    OP_REQUIRES_OK(ctx, topkkernels::PrepareTopK(ctx, false, 1, &ts, &eps, &out_t));
    const int64_t rows = ts.rows;
    const int n = ts.n;
    if (rows == 0 || n == 0) return;
    const Tensor& x_t = ctx->input(0);
    const Tensor& k_t = ctx->input(1);
    const T* x = x_t.flat<T>().data();
    const double* k = k_t.flat<double>().data();
    T* out = out_t->flat<T>().data();
    ForRows(ctx, rows, 250 * static_cast<int64_t>(n) + 200, [&](int64_t begin, int64_t end) {
      std::vector<C> xb(n), p(n), v(n), c(n);
      for (int64_t r = begin; r < end; ++r) {
        const T* xr = x + r * n;
        T* o = out + r * n;
        if (!RowFinite(xr, n)) {
          for (int i = 0; i < n; ++i) o[i] = static_cast<T>(NAN);
          continue;
        }
        C* pr = std::is_same<T, C>::value ? reinterpret_cast<C*>(o) : p.data();
        const C* xc;
        if (std::is_same<T, C>::value) {
          xc = reinterpret_cast<const C*>(xr);
        } else {
          for (int i = 0; i < n; ++i) xb[i] = static_cast<C>(xr[i]);
          xc = xb.data();
        }
        topk::SigmoidTopKRow<C>(xc, n, k[r * ts.k_stride], eps, pr, v.data(), c.data());
        if (!std::is_same<T, C>::value) {
          for (int i = 0; i < n; ++i) o[i] = static_cast<T>(pr[i]);
        }
      }
    });
  }
};

template <typename T>
class SigmoidTopKGradOp : public OpKernel {
 public:
  explicit SigmoidTopKGradOp(OpKernelConstruction* ctx) : OpKernel(ctx) {}

  void Compute(OpKernelContext* ctx) override {
    using C = typename FloatType<T>::type;
    RowShape rs;
    double eps = 1.0;
    Tensor* out_t = nullptr;
    OP_REQUIRES_OK(ctx, topkkernels::PrepareTopKGrad(ctx, "mask", &rs, &eps, &out_t));
    if (rs.rows == 0) return;
    const Tensor& g_t = ctx->input(0);
    const Tensor& p_t = ctx->input(1);
    const int n = rs.n;
    const int64_t rows = rs.rows;
    const T* g = g_t.flat<T>().data();
    const T* p = p_t.flat<T>().data();
    T* out = out_t->flat<T>().data();
    const double inv_eps = 1.0 / eps;
    ForRows(ctx, rows, 12 * static_cast<int64_t>(n) + 50, [&](int64_t begin, int64_t end) {
      std::vector<C> gb, pb;
      if (!std::is_same<T, C>::value) {
        gb.resize(n);
        pb.resize(n);
      }
      for (int64_t r = begin; r < end; ++r) {
        const T* gr = g + r * n;
        const T* pr = p + r * n;
        T* o = out + r * n;
        if (std::is_same<T, C>::value) {
          topk::SigmoidTopKVjp<C>(reinterpret_cast<const C*>(pr), reinterpret_cast<const C*>(gr),
                                  n, inv_eps, reinterpret_cast<C*>(o));
        } else {
          for (int i = 0; i < n; ++i) {
            gb[i] = static_cast<C>(gr[i]);
            pb[i] = static_cast<C>(pr[i]);
          }
          topk::SigmoidTopKVjp<C>(pb.data(), gb.data(), n, inv_eps, gb.data());
          for (int i = 0; i < n; ++i) o[i] = static_cast<T>(gb[i]);
        }
      }
    });
  }
};

// ---------------------------------------------------------------------------------------
// SparseTopK

template <typename T>
class SparseTopKOp : public OpKernel {
 public:
  explicit SparseTopKOp(OpKernelConstruction* ctx) : OpKernel(ctx) {}

  void Compute(OpKernelContext* ctx) override {
    using A = typename Acc<T>::type;
    using K = typename FloatType<T>::type;
    topkkernels::TopKShape ts;
    double eps = 1.0;
    Tensor* outs[2] = {nullptr, nullptr};
    OP_REQUIRES_OK(ctx, topkkernels::PrepareTopK(ctx, true, 2, &ts, &eps, outs));
    const int64_t rows = ts.rows;
    const int n = ts.n;
    if (rows == 0 || n == 0) return;
    const Tensor& x_t = ctx->input(0);
    const Tensor& k_t = ctx->input(1);
    Tensor* out_t = outs[0];
    Tensor* sup_t = outs[1];
    const T* x = x_t.flat<T>().data();
    const double* k = k_t.flat<double>().data();
    T* out = out_t->flat<T>().data();
    int32_t* sup = sup_t->flat<int32_t>().data();
    const A inv_eps = A(1) / static_cast<A>(eps);
    int lg = 1;
    while ((1 << lg) < n && lg < 31) ++lg;
    ForRows(ctx, rows, static_cast<int64_t>(n) * (10 * lg + 40) + 100,
            [&](int64_t begin, int64_t end) {
              std::vector<A> s(n), y(n), sol(n), m(n), pa(n), pb(n);
              std::vector<int32_t> perm(n), seg(n), supb(n), pc(n), start(n);
              sort_util::ArgsortScratch scratch;
              isotonic::PavScratch<A> pav{pa.data(), pb.data(), pc.data(), start.data()};
              for (int64_t r = begin; r < end; ++r) {
                const T* xr = x + r * n;
                T* o = out + r * n;
                int32_t* sr = sup + r * n;
                if (!RowFinite(xr, n)) {
                  for (int i = 0; i < n; ++i) {
                    o[i] = static_cast<T>(NAN);
                    sr[i] = -1;
                  }
                  continue;
                }
                sort_util::ArgsortDescending<K>([xr](int i) { return xr[i]; }, n, 1,
                                                perm.data(), &scratch);
                for (int i = 0; i < n; ++i) s[i] = static_cast<A>(xr[perm[i]]) * inv_eps;
                const int kr = static_cast<int>(k[r * ts.k_stride]);
                topk::SparseTopKSortedRow<A>(s.data(), n, kr, m.data(), supb.data(), y.data(),
                                             sol.data(), seg.data(), pav);
                for (int i = 0; i < n; ++i) {
                  o[perm[i]] = static_cast<T>(m[i]);
                  sr[perm[i]] = supb[i];
                }
              }
            });
  }
};

template <typename T>
class SparseTopKGradOp : public OpKernel {
 public:
  explicit SparseTopKGradOp(OpKernelConstruction* ctx) : OpKernel(ctx) {}

  void Compute(OpKernelContext* ctx) override {
    using A = typename Acc<T>::type;
    RowShape rs;
    double eps = 1.0;
    Tensor* out_t = nullptr;
    OP_REQUIRES_OK(ctx, topkkernels::PrepareTopKGrad(ctx, "support", &rs, &eps, &out_t));
    if (rs.rows == 0) return;
    const Tensor& g_t = ctx->input(0);
    const Tensor& s_t = ctx->input(1);
    const int n = rs.n;
    const int64_t rows = rs.rows;
    const T* g = g_t.flat<T>().data();
    const int32_t* sup = s_t.flat<int32_t>().data();
    T* out = out_t->flat<T>().data();
    const A inv_eps = A(1) / static_cast<A>(eps);
    ForRows(ctx, rows, 6 * static_cast<int64_t>(n) + 50, [&](int64_t begin, int64_t end) {
      std::vector<A> gb(n);
      for (int64_t r = begin; r < end; ++r) {
        const int32_t* sr = sup + r * n;
        T* o = out + r * n;
        if (sr[0] < 0) {
          for (int i = 0; i < n; ++i) o[i] = static_cast<T>(NAN);
          continue;
        }
        for (int i = 0; i < n; ++i) gb[i] = static_cast<A>(g[r * n + i]);
        topk::SparseTopKVjp<A>(sr, gb.data(), n, inv_eps, gb.data());
        for (int i = 0; i < n; ++i) o[i] = static_cast<T>(gb[i]);
      }
    });
  }
};

}  // namespace

#define TFSORT_REGISTER_TOPK(T)                                                               \
  REGISTER_KERNEL_BUILDER(Name("TFSort>SigmoidTopK").Device(DEVICE_CPU).TypeConstraint<T>("T"), \
                          SigmoidTopKOp<T>);                                                  \
  REGISTER_KERNEL_BUILDER(                                                                    \
      Name("TFSort>SigmoidTopKGrad").Device(DEVICE_CPU).TypeConstraint<T>("T"),               \
      SigmoidTopKGradOp<T>);                                                                  \
  REGISTER_KERNEL_BUILDER(Name("TFSort>SparseTopK").Device(DEVICE_CPU).TypeConstraint<T>("T"),  \
                          SparseTopKOp<T>);                                                   \
  REGISTER_KERNEL_BUILDER(                                                                    \
      Name("TFSort>SparseTopKGrad").Device(DEVICE_CPU).TypeConstraint<T>("T"),                \
      SparseTopKGradOp<T>);

TFSORT_REGISTER_TOPK(Eigen::half)
TFSORT_REGISTER_TOPK(Eigen::bfloat16)
TFSORT_REGISTER_TOPK(float)
TFSORT_REGISTER_TOPK(double)

#undef TFSORT_REGISTER_TOPK

}  // namespace tfsort
