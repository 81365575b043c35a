// Attribute parsing, input validation and output allocation shared by the CPU and GPU
// kernels of the isotonic family (isotonic_kernels.cc, isotonic_gpu.cc), so that both
// devices honour one op contract and reject bad input with the same messages. Each Prepare*
// function validates one op's inputs and allocates its outputs; it returns false after
// recording the error on ctx.

#ifndef TFSORT_CC_KERNELS_ISOTONIC_KERNEL_UTIL_H_
#define TFSORT_CC_KERNELS_ISOTONIC_KERNEL_UTIL_H_

#include <string>

#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/tensor.h"
#include "tfsort/cc/kernels/kernel_util.h"

namespace tfsort {
namespace isokernels {

using ::tensorflow::OpKernelConstruction;
using ::tensorflow::OpKernelContext;
using ::tensorflow::Tensor;

inline bool ParseRegularization(OpKernelConstruction* ctx, bool* kl) {
  std::string reg;
  if (!Ok(ctx, ctx->GetAttr("regularization", &reg))) return false;
  if (reg != "l2" && reg != "kl") {
    ctx->CtxFailure(::tensorflow::errors::InvalidArgument(
        "regularization must be 'l2' or 'kl', got '", reg, "'"));
    return false;
  }
  *kl = reg == "kl";
  return true;
}

// The fused SoftRank / SoftSort (and their Grad) attributes.
struct SoftAttrs {
  bool kl = false;
  bool descending = false;
  int num_aux = 1;     // 0 or 1: whether the forward op emits the packed aux tensor
  bool stash = false;  // the forward op stashes its aux for the gradient op (aux_stash.h)
  bool adjoint = false;  // SoftSortGrad only
};

// The flag bits of the eager-only ops (SoftRankEager, ...; see isotonic_ops.cc).
enum SoftFlags : int64_t {
  kFlagKL = 1,
  kFlagDescending = 2,
  kFlagAdjoint = 4,
  kFlagStash = 8,
};

// IsotonicL2Eager(Grad): flag bit 0 is increasing constraints; kFlagStash as above.
constexpr int64_t kFlagIncreasing = 1;

// Reads an eager-only op's `flags` attribute, which may only combine the bits in allowed.
inline bool ReadFlags(OpKernelConstruction* ctx, int64_t allowed, int64_t* flags) {
  if (!Ok(ctx, ctx->GetAttr("flags", flags))) return false;
  if ((*flags & ~allowed) != 0) {
    ctx->CtxFailure(::tensorflow::errors::InvalidArgument("flags must combine the bits ",
                                                          allowed, ", got ", *flags));
    return false;
  }
  return true;
}

// IsotonicL2Eager (stash allowed) / IsotonicL2EagerGrad (not): the increasing and stash
// bits of `flags`, shared by the CPU and GPU kernels. stash may be null.
inline bool ReadIsotonicFlags(OpKernelConstruction* ctx, bool stash_allowed, bool* increasing,
                              bool* stash) {
  int64_t flags = 0;
  if (!ReadFlags(ctx, kFlagIncreasing | (stash_allowed ? kFlagStash : 0), &flags)) {
    return false;
  }
  *increasing = flags & kFlagIncreasing;
  if (stash) *stash = flags & kFlagStash;
  return true;
}

// Reads either the graph ops' attributes (regularization, descending, num_aux[, adjoint])
// or the eager ops' single `flags` attribute.
inline bool ReadSoftAttrs(OpKernelConstruction* ctx, SoftAttrs* a) {
  if (ctx->HasAttr("flags")) {
    const bool grad = ctx->num_inputs() == 3;
    const int64_t allowed =
        grad ? kFlagKL | kFlagDescending | kFlagAdjoint : kFlagKL | kFlagDescending | kFlagStash;
    int64_t flags = 0;
    if (!ReadFlags(ctx, allowed, &flags)) return false;
    a->kl = flags & kFlagKL;
    a->descending = flags & kFlagDescending;
    a->adjoint = flags & kFlagAdjoint;
    a->stash = flags & kFlagStash;
    a->num_aux = 0;
    return true;
  }
  if (!ParseRegularization(ctx, &a->kl)) return false;
  if (!Ok(ctx, ctx->GetAttr("descending", &a->descending))) return false;
  if (!Ok(ctx, ctx->GetAttr("num_aux", &a->num_aux))) return false;
  if (a->num_aux != 0 && a->num_aux != 1) {
    ctx->CtxFailure(
        ::tensorflow::errors::InvalidArgument("num_aux must be 0 or 1, got ", a->num_aux));
    return false;
  }
  a->stash = a->num_aux == 0;
  if (ctx->HasAttr("adjoint") && !Ok(ctx, ctx->GetAttr("adjoint", &a->adjoint))) return false;
  return true;
}

#define TFSORT_PREPARE_OK(ctx, expr)  \
  do {                                \
    const auto _s = (expr);           \
    if (!_s.ok()) {                   \
      (ctx)->CtxFailure(_s);          \
      return false;                   \
    }                                 \
  } while (0)

// IsotonicL2 (kl = false) / IsotonicKL: y [, w] -> solution (may reuse y), segments (only
// with `segments`; IsotonicL2Eager has none: *seg is then null).
inline bool PrepareIsotonic(OpKernelContext* ctx, bool kl, bool segments, RowShape* rs,
                            Tensor** sol, Tensor** seg) {
  const Tensor& y = ctx->input(0);
  TFSORT_PREPARE_OK(ctx, GetRowShape(y, "y", rs));
  if (kl) TFSORT_PREPARE_OK(ctx, CheckSameShape(y, "y", ctx->input(1), "w"));
  // The stash of IsotonicL2Eager keeps y: its buffer must not become the solution.
  if (segments) {
    TFSORT_PREPARE_OK(ctx, ctx->forward_input_or_allocate_output({0}, 0, y.shape(), sol));
    TFSORT_PREPARE_OK(ctx, ctx->allocate_output(1, y.shape(), seg));
  } else {
    TFSORT_PREPARE_OK(ctx, ctx->allocate_output(0, y.shape(), sol));
    *seg = nullptr;
  }
  return true;
}

// IsotonicL2Grad: grad, segments -> grad_y (may reuse grad); IsotonicL2EagerGrad: grad,
// y -> grad_y. `second` names input 1.
inline bool PrepareIsotonicL2Grad(OpKernelContext* ctx, const char* second, RowShape* rs,
                                  Tensor** out) {
  const Tensor& g = ctx->input(0);
  TFSORT_PREPARE_OK(ctx, GetRowShape(g, "grad", rs));
  TFSORT_PREPARE_OK(ctx, CheckSameShape(g, "grad", ctx->input(1), second));
  TFSORT_PREPARE_OK(ctx, ctx->forward_input_or_allocate_output({0}, 0, g.shape(), out));
  return true;
}

// IsotonicKLGrad: grad, y, w, segments -> grad_y, grad_w.
inline bool PrepareIsotonicKLGrad(OpKernelContext* ctx, RowShape* rs, Tensor** gy,
                                  Tensor** gw) {
  const Tensor& g = ctx->input(0);
  TFSORT_PREPARE_OK(ctx, GetRowShape(g, "grad", rs));
  TFSORT_PREPARE_OK(ctx, CheckSameShape(g, "grad", ctx->input(1), "y"));
  TFSORT_PREPARE_OK(ctx, CheckSameShape(g, "grad", ctx->input(2), "w"));
  TFSORT_PREPARE_OK(ctx, CheckSameShape(g, "grad", ctx->input(3), "segments"));
  TFSORT_PREPARE_OK(ctx, ctx->allocate_output(0, g.shape(), gy));
  TFSORT_PREPARE_OK(ctx, ctx->allocate_output(1, g.shape(), gw));
  return true;
}

// SoftRank / SoftSort: values, eps -> out, aux (only with num_aux = 1; else null).
inline bool PrepareSoft(OpKernelContext* ctx, const SoftAttrs& at, RowShape* rs, double* eps,
                        Tensor** out, Tensor** aux) {
  const Tensor& x = ctx->input(0);
  TFSORT_PREPARE_OK(ctx, GetRowShape(x, "values", rs));
  TFSORT_PREPARE_OK(ctx, GetPositiveScalar(ctx->input(1), "regularization_strength", eps));
  TFSORT_PREPARE_OK(ctx, ctx->allocate_output(0, x.shape(), out));
  *aux = nullptr;
  if (at.num_aux) TFSORT_PREPARE_OK(ctx, ctx->allocate_output(1, x.shape(), aux));
  return true;
}

// SoftRankGrad / SoftSortGrad: grad, values, eps, aux* -> grad_values. *aux is null in the
// recompute mode (num_aux = 0).
inline bool PrepareSoftGrad(OpKernelContext* ctx, const SoftAttrs& at, RowShape* rs,
                            double* eps, const Tensor** aux, Tensor** out) {
  const Tensor& g = ctx->input(0);
  TFSORT_PREPARE_OK(ctx, GetRowShape(g, "grad", rs));
  TFSORT_PREPARE_OK(ctx, GetPositiveScalar(ctx->input(2), "regularization_strength", eps));
  TFSORT_PREPARE_OK(ctx, CheckSameShape(g, "grad", ctx->input(1), "values"));
  *aux = nullptr;
  if (at.num_aux) {
    *aux = &ctx->input(3);
    TFSORT_PREPARE_OK(ctx, CheckSameShape(g, "grad", **aux, "aux"));
  }
  TFSORT_PREPARE_OK(ctx, ctx->allocate_output(0, g.shape(), out));
  return true;
}

#undef TFSORT_PREPARE_OK

}  // namespace isokernels
}  // namespace tfsort

#endif  // TFSORT_CC_KERNELS_ISOTONIC_KERNEL_UTIL_H_
