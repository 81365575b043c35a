// TensorFlow-side input validation shared by the CPU and GPU top-k kernels (topk_kernels.cc,
// topk_gpu.cc), so that both devices reject bad input with the same messages.

#ifndef TFSORT_CC_KERNELS_TOPK_KERNEL_UTIL_H_
#define TFSORT_CC_KERNELS_TOPK_KERNEL_UTIL_H_

#include <cmath>
#include <cstdint>
#include <limits>
#include <string>

#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/tensor.h"
#include "tfsort/cc/kernels/kernel_util.h"

namespace tfsort {
namespace topkkernels {

using ::tensorflow::Tensor;
using ::tensorflow::errors::InvalidArgument;

// Validates values (rank >= 1) and k (one value, or one per row: 0 < k < n, integer when
// `integer_k`). On success sets rows, n and k_stride (0 for a shared k, 1 per row).
inline ::tensorflow::Status CheckTopKInputs(const Tensor& x_t, const Tensor& k_t, bool integer_k,
                                     int64_t* rows, int* n, int* k_stride) {
  if (x_t.dims() < 1) {
    return InvalidArgument("values must have rank >= 1, got shape ",
                           x_t.shape().DebugString());
  }
  const int64_t len = x_t.dim_size(x_t.dims() - 1);
  if (len > std::numeric_limits<int32_t>::max() - 1) {
    return InvalidArgument("values: the top-k axis has ", len,
                           " elements; at most 2^31 - 2 are supported");
  }
  *n = static_cast<int>(len);
  int64_t r = 1;
  for (int d = 0; d + 1 < x_t.dims(); ++d) r *= x_t.dim_size(d);
  *rows = r;
  if (k_t.dims() == 0) {
    *k_stride = 0;
  } else if (k_t.dims() == 1 && k_t.dim_size(0) == r) {
    *k_stride = 1;
  } else {
    return InvalidArgument("k must have shape [] or [", r, "] (one value per row of values ",
                           x_t.shape().DebugString(), "), got ", k_t.shape().DebugString());
  }
  const double* k = k_t.flat<double>().data();
  const int64_t nk = *k_stride == 0 ? 1 : r;
  for (int64_t i = 0; i < nk; ++i) {
    if (!(k[i] > 0.0 && k[i] < static_cast<double>(len))) {
      return InvalidArgument("k must satisfy 0 < k < n = ", len, " (the size of the top-k axis)",
                             ", got k = ", k[i], nk > 1 ? " in row " : "",
                             nk > 1 ? std::to_string(i) : std::string());
    }
    if (integer_k && std::floor(k[i]) != k[i]) {
      return InvalidArgument("k must be an integer for the sparse top-k, got ", k[i]);
    }
  }
  return ::tensorflow::Status();
}

// Forward ops (SigmoidTopK: 1 output, SparseTopK: 2): validates values, k and
// regularization_strength and allocates `num_outputs` outputs of values' shape.
struct TopKShape {
  int64_t rows = 0;
  int n = 0;
  int k_stride = 0;  // 0: one k for every row, 1: one k per row
};

inline ::tensorflow::Status PrepareTopK(::tensorflow::OpKernelContext* ctx, bool integer_k,
                                        int num_outputs, TopKShape* s, double* eps,
                                        Tensor** outputs) {
  const Tensor& x = ctx->input(0);
  TF_RETURN_IF_ERROR(CheckTopKInputs(x, ctx->input(1), integer_k, &s->rows, &s->n,
                                     &s->k_stride));
  TF_RETURN_IF_ERROR(GetPositiveScalar(ctx->input(2), "regularization_strength", eps));
  for (int i = 0; i < num_outputs; ++i) {
    TF_RETURN_IF_ERROR(ctx->allocate_output(i, x.shape(), &outputs[i]));
  }
  return ::tensorflow::Status();
}

// Gradient ops: grad, a forward output of the same shape (named `saved`, e.g. "mask" or
// "support"), regularization_strength -> grad_values (may reuse grad's buffer).
inline ::tensorflow::Status PrepareTopKGrad(::tensorflow::OpKernelContext* ctx,
                                            const char* saved, RowShape* rs, double* eps,
                                            Tensor** out) {
  const Tensor& g = ctx->input(0);
  TF_RETURN_IF_ERROR(GetRowShape(g, "grad", rs));
  TF_RETURN_IF_ERROR(CheckSameShape(g, "grad", ctx->input(1), saved));
  TF_RETURN_IF_ERROR(GetPositiveScalar(ctx->input(2), "regularization_strength", eps));
  return ctx->forward_input_or_allocate_output({0}, 0, g.shape(), out);
}

}  // namespace topkkernels
}  // namespace tfsort

#endif  // TFSORT_CC_KERNELS_TOPK_KERNEL_UTIL_H_
