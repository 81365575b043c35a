// Helpers shared by the CPU kernels of every op family (isotonic, topk, networks): the
// accumulation type, row views and shape checks, scalar-input validation and row sharding.
// TensorFlow types are fine here; the per-row algorithm headers (isotonic.h, topk.h,
// networks.h, sort_util.h) stay TF-free so that they compile under nvcc as well.

#ifndef TFSORT_CC_KERNELS_KERNEL_UTIL_H_
#define TFSORT_CC_KERNELS_KERNEL_UTIL_H_

#include <cmath>
#include <cstdint>
#include <limits>

#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/tensor.h"
#include "tensorflow/core/framework/tensor_shape.h"
#include "tensorflow/core/lib/core/threadpool.h"

namespace tfsort {

// Accumulation type: float for half/bfloat16, double otherwise (exact counts are int32).
template <typename T>
struct Acc {
  using type = double;
};
template <>
struct Acc<Eigen::half> {
  using type = float;
};
template <>
struct Acc<Eigen::bfloat16> {
  using type = float;
};

// The float type that holds T: float for half, bfloat16 and float; double for double.
// Used as the element compute type and as the (radix-sortable) sort-key type.
template <typename T>
struct FloatType {
  using type = float;
};
template <>
struct FloatType<double> {
  using type = double;
};

// Converts an accumulated value to T, rounding through Acc<T> first (half/bfloat16 round
// from float, as a float computation would).
template <typename T, typename A>
inline T FromAcc(A v) {
  return static_cast<T>(static_cast<typename Acc<T>::type>(v));
}

// Whether every entry of the row is finite (half/bfloat16/float checked as float).
template <typename T>
inline bool RowFinite(const T* x, int n) {
  for (int i = 0; i < n; ++i) {
    if (!std::isfinite(static_cast<float>(x[i]))) return false;
  }
  return true;
}
template <>
inline bool RowFinite<double>(const double* x, int n) {
  for (int i = 0; i < n; ++i)
    if (!std::isfinite(x[i])) return false;
  return true;
}

// Validated [rows, n] view of a rank >= 1 tensor (n is the last dimension).
struct RowShape {
  int64_t rows = 0;
  int n = 0;
};

inline ::tensorflow::Status GetRowShape(const ::tensorflow::Tensor& t, const char* name,
                                        RowShape* out) {
  using ::tensorflow::errors::InvalidArgument;
  if (t.dims() < 1) {
    return InvalidArgument(name, " must have rank >= 1, got shape ", t.shape().DebugString());
  }
  const int64_t n = t.dim_size(t.dims() - 1);
  if (n > std::numeric_limits<int32_t>::max() - 1) {
    return InvalidArgument(name, ": the sorted axis has ", n,
                           " elements; at most 2^31 - 2 are supported");
  }
  out->n = static_cast<int>(n);
  out->rows = n == 0 ? 0 : t.NumElements() / n;
  return ::tensorflow::Status();
}

inline ::tensorflow::Status CheckSameShape(const ::tensorflow::Tensor& a, const char* a_name,
                                           const ::tensorflow::Tensor& b, const char* b_name) {
  if (a.shape() != b.shape()) {
    return ::tensorflow::errors::InvalidArgument(b_name, " must have the shape of ", a_name,
                                                 " ", a.shape().DebugString(), ", got ",
                                                 b.shape().DebugString());
  }
  return ::tensorflow::Status();
}

// Reads a float64 scalar input (regularization_strength, steepness) that must be positive
// and finite; errors name the argument. A double input, unlike a float attr, reaches
// float64 computations unrounded.
inline ::tensorflow::Status GetPositiveScalar(const ::tensorflow::Tensor& t, const char* name,
                                              double* value) {
  using ::tensorflow::errors::InvalidArgument;
  if (t.dims() != 0) {
    return InvalidArgument(name, " must be a scalar, got shape ", t.shape().DebugString());
  }
  if (t.dtype() != ::tensorflow::DT_DOUBLE) {
    return InvalidArgument(name, " must be float64, got ",
                           ::tensorflow::DataTypeString(t.dtype()));
  }
  *value = t.scalar<double>()();
  if (!(*value > 0.0) || !std::isfinite(*value)) {
    return InvalidArgument(name, " must be positive and finite, got ", *value);
  }
  return ::tensorflow::Status();
}

// Below this estimated total cost (cycles) a kernel runs on the calling thread: waking
// pool threads costs tens of microseconds, measured as a 1.8x slowdown of soft_rank at
// 256x16 on 2 cores (85 us with two threads against 48 us on one).
constexpr int64_t kInlineCycles = 500000;

// Runs fn(begin, end) over rows on TF's CPU worker pool. cost_per_row is in cycles.
template <typename Fn>
void ForRows(::tensorflow::OpKernelContext* ctx, int64_t rows, int64_t cost_per_row, Fn fn) {
  if (rows <= 1 || rows * cost_per_row < kInlineCycles) {
    if (rows > 0) fn(0, rows);
    return;
  }
  auto* pool = ctx->device()->tensorflow_cpu_worker_threads()->workers;
  pool->ParallelFor(rows, cost_per_row, [&fn](int64_t begin, int64_t end) { fn(begin, end); });
}

// Records a failed status on the kernel under construction; returns whether s is ok.
inline bool Ok(::tensorflow::OpKernelConstruction* ctx, const ::tensorflow::Status& s) {
  if (!s.ok()) ctx->CtxFailure(s);
  return s.ok();
}

}  // namespace tfsort

#endif  // TFSORT_CC_KERNELS_KERNEL_UTIL_H_
