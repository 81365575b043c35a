// Op definitions for the isotonic-regression family: plain batched isotonic regression
// (L2 and KL) and the fused soft sort / soft rank, each with its gradient op.
// Every op works on the last axis; all leading dimensions are batch.

#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/shape_inference.h"
#include "tfsort/cc/ops/shape_util.h"

namespace tfsort {

using ::tensorflow::Status;
using ::tensorflow::shape_inference::InferenceContext;
using ::tensorflow::shape_inference::ShapeHandle;

namespace {

// As SameShapeAsFirst, and input `strength` (regularization_strength) must be a scalar.
// Every aux tensor (inputs after `strength`, or outputs after the first) has the shape of
// the values too.
Status SoftShape(InferenceContext* c, int strength, std::initializer_list<int> same,
                 int num_outputs) {
  TF_RETURN_IF_ERROR(ScalarInput(c, strength));
  TF_RETURN_IF_ERROR(SameShapeAsFirst(c, same, num_outputs));
  ShapeHandle x = c->output(0);
  for (int i = strength + 1; i < c->num_inputs(); ++i) {
    TF_RETURN_IF_ERROR(c->Merge(x, c->input(i), &x));
  }
  for (int o = num_outputs; o < c->num_outputs(); ++o) c->set_output(o, x);
  return Status();
}

}  // namespace

REGISTER_OP("TFSort>IsotonicL2")
    .Input("y: T")
    .Output("solution: T")
    .Output("segments: int32")
    .Attr("T: {half, bfloat16, float, double}")
    .Attr("increasing: bool = false")
    .SetShapeFn([](InferenceContext* c) { return SameShapeAsFirst(c, {}, 2); })
    .Doc(R"doc(
Batched L2 isotonic regression along the last axis, one PAV pass per row:
argmin_v 1/2 ||v - y||^2 subject to v non-increasing (or non-decreasing if `increasing`).

solution: same shape and dtype as y. Rows with a NaN or infinite value are all NaN.
segments: block id per position (0, 1, ... along the row); -1 for non-finite rows.
)doc");

REGISTER_OP("TFSort>IsotonicL2Grad")
    .Input("grad: T")
    .Input("segments: int32")
    .Output("grad_y: T")
    .Attr("T: {half, bfloat16, float, double}")
    .SetShapeFn([](InferenceContext* c) { return SameShapeAsFirst(c, {1}, 1); })
    .Doc(R"doc(
VJP of IsotonicL2: each entry of grad replaced by the mean over its block (maximal run of
equal segment ids). Linear and self-adjoint, so it is also its own gradient.
)doc");

REGISTER_OP("TFSort>IsotonicKL")
    .Input("y: T")
    .Input("w: T")
    .Output("solution: T")
    .Output("segments: int32")
    .Attr("T: {half, bfloat16, float, double}")
    .Attr("increasing: bool = false")
    .SetShapeFn([](InferenceContext* c) { return SameShapeAsFirst(c, {1}, 2); })
    .Doc(R"doc(
Batched KL isotonic regression along the last axis:
argmin_v sum exp(y - v) + sum exp(w) * v subject to v non-increasing (or non-decreasing).
Block value: LSE(y_B) - LSE(w_B).
)doc");

REGISTER_OP("TFSort>IsotonicKLGrad")
    .Input("grad: T")
    .Input("y: T")
    .Input("w: T")
    .Input("segments: int32")
    .Output("grad_y: T")
    .Output("grad_w: T")
    .Attr("T: {half, bfloat16, float, double}")
    .Attr("adjoint: bool = false")
    .SetShapeFn([](InferenceContext* c) { return SameShapeAsFirst(c, {1, 2, 3}, 2); })
    .Doc(R"doc(
VJP of IsotonicKL: grad_y = softmax(y_B) * sum_B grad, grad_w = -softmax(w_B) * sum_B grad.
With adjoint=true it applies the transposed (forward-mode) maps instead:
grad_y_i = sum_{j in B} softmax(y_B)_j grad_j, grad_w_i = -sum_{j in B} softmax(w_B)_j grad_j.
)doc");

REGISTER_OP("TFSort>SoftRank")
    .Input("values: T")
    .Input("regularization_strength: double")
    .Output("ranks: T")
    .Output("aux: num_aux * int32")
    .Attr("T: {half, bfloat16, float, double}")
    .Attr("regularization: {'l2', 'kl'} = 'l2'")
    .Attr("descending: bool = false")
    .Attr("num_aux: int >= 0")  // no default: SavedModel strips default-valued attrs,
                                 // and list outputs sized by a stripped attr do not reload
    .SetShapeFn([](InferenceContext* c) { return SoftShape(c, 1, {}, 1); })
    .Doc(R"doc(
Fused soft rank along the last axis: sort, one PAV pass and un-permute in one kernel.
Ranks start at 1. regularization_strength (eps) is a float64 scalar tensor, so float64
inputs see it unrounded (a float attr would round it to float32). permutation (sorted position -> input index) and segments (PAV block id
per sorted position) are kept for the gradient.
)doc");

REGISTER_OP("TFSort>SoftRankGrad")
    .Input("grad: T")
    .Input("values: T")
    .Input("regularization_strength: double")
    .Input("aux: num_aux * int32")
    .Output("grad_values: T")
    .Attr("T: {half, bfloat16, float, double}")
    .Attr("regularization: {'l2', 'kl'} = 'l2'")
    .Attr("descending: bool = false")
    .Attr("num_aux: int >= 0")  // no default: SavedModel strips default-valued attrs,
                                 // and list outputs sized by a stripped attr do not reload
    .SetShapeFn([](InferenceContext* c) { return SoftShape(c, 2, {1}, 1); })
    .Doc(R"doc(
VJP of SoftRank. Linear in grad and self-adjoint for both regularizations.
)doc");

REGISTER_OP("TFSort>SoftSort")
    .Input("values: T")
    .Input("regularization_strength: double")
    .Output("sorted: T")
    .Output("aux: num_aux * int32")
    .Attr("T: {half, bfloat16, float, double}")
    .Attr("regularization: {'l2', 'kl'} = 'l2'")
    .Attr("descending: bool = false")
    .Attr("num_aux: int >= 0")  // no default: SavedModel strips default-valued attrs,
                                 // and list outputs sized by a stripped attr do not reload
    .SetShapeFn([](InferenceContext* c) { return SoftShape(c, 1, {}, 1); })
    .Doc(R"doc(
Fused soft sort along the last axis (ascending unless `descending`).
)doc");

REGISTER_OP("TFSort>SoftSortGrad")
    .Input("grad: T")
    .Input("values: T")
    .Input("regularization_strength: double")
    .Input("aux: num_aux * int32")
    .Output("grad_values: T")
    .Attr("T: {half, bfloat16, float, double}")
    .Attr("regularization: {'l2', 'kl'} = 'l2'")
    .Attr("descending: bool = false")
    .Attr("num_aux: int >= 0")  // no default: SavedModel strips default-valued attrs,
                                 // and list outputs sized by a stripped attr do not reload
    .Attr("adjoint: bool = false")
    .SetShapeFn([](InferenceContext* c) {
      // grad lives in sorted order, the output in input order; both have the input's shape.
      return SoftShape(c, 2, {1}, 1);
    })
    .Doc(R"doc(
VJP of SoftSort (grad in sorted order -> gradient w.r.t. values). With adjoint=true it maps
a tangent of values to a tangent of the sorted output (the JVP), which is the gradient of
this op with respect to grad.
)doc");

// Eager-only twins of SoftRank / SoftSort and their gradients, for the eager fast path
// of tfsort.soft_rank / soft_sort (never in a graph or a SavedModel). One `flags` attribute
// replaces regularization, descending, num_aux (and adjoint), and there is no aux list:
// each attribute and list output costs TF's eager machinery a few microseconds per call,
// which matters where the whole call is ~150 us. The forward op stashes its aux for the
// gradient op (flag bit 3, see aux_stash.h); the gradient op re-sorts when it is gone.
// flags: bit 0 kl, bit 1 descending, bit 2 adjoint (SoftSortEagerGrad), bit 3 stash.
#define TFSORT_EAGER_SOFT_OP(NAME, OUT)                                             \
  REGISTER_OP("TFSort>" NAME)                                                      \
      .Input("values: T")                                                          \
      .Input("regularization_strength: double")                                    \
      .Output(OUT ": T")                                                           \
      .Attr("T: {half, bfloat16, float, double}")                                  \
      .Attr("flags: int >= 0")                                                     \
      .SetShapeFn([](InferenceContext* c) { return SoftShape(c, 1, {}, 1); })      \
      .Doc("Eager-only " NAME ": see the flags comment in isotonic_ops.cc.");      \
  REGISTER_OP("TFSort>" NAME "Grad")                                               \
      .Input("grad: T")                                                            \
      .Input("values: T")                                                          \
      .Input("regularization_strength: double")                                    \
      .Output("grad_values: T")                                                    \
      .Attr("T: {half, bfloat16, float, double}")                                  \
      .Attr("flags: int >= 0")                                                     \
      .SetShapeFn([](InferenceContext* c) { return SoftShape(c, 2, {1}, 1); })     \
      .Doc("Eager-only VJP of " NAME ": see the flags comment in isotonic_ops.cc.")

TFSORT_EAGER_SOFT_OP("SoftRankEager", "ranks");
TFSORT_EAGER_SOFT_OP("SoftSortEager", "sorted");

#undef TFSORT_EAGER_SOFT_OP

// The eager-only twin of IsotonicL2 (as above): no segments output; with flag bit 3 the
// kernel stashes the segment ids under y for IsotonicL2EagerGrad, which runs PAV again
// when they are gone. flags: bit 0 increasing, bit 3 stash (the gradient op: bit 0 only).
REGISTER_OP("TFSort>IsotonicL2Eager")
    .Input("y: T")
    .Output("solution: T")
    .Attr("T: {half, bfloat16, float, double}")
    .Attr("flags: int >= 0")
    .SetShapeFn([](InferenceContext* c) { return SameShapeAsFirst(c, {}, 1); })
    .Doc("Eager-only IsotonicL2 without the segments output: see isotonic_ops.cc.");

REGISTER_OP("TFSort>IsotonicL2EagerGrad")
    .Input("grad: T")
    .Input("y: T")
    .Output("grad_y: T")
    .Attr("T: {half, bfloat16, float, double}")
    .Attr("flags: int >= 0")
    .SetShapeFn([](InferenceContext* c) { return SameShapeAsFirst(c, {1}, 1); })
    .Doc("Eager-only VJP of IsotonicL2Eager (block means of grad): see isotonic_ops.cc.");

}  // namespace tfsort
