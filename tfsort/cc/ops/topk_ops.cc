// Op definitions for differentiable top-k: the sigmoid-threshold mask and the sparse
// (capped-simplex projection) mask, each with its gradient op. Every op works on the last
// axis; all leading dimensions are batch. k is a float64 tensor of shape [] (every row) or
// [rows] (one value per row, rows = product of the leading dimensions).
// regularization_strength (eps) is a float64 scalar input, not a float attr, so float64
// values see it unrounded (as in the fused isotonic ops).

#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/shape_inference.h"
#include "tfsort/cc/ops/shape_util.h"

namespace tfsort {

using ::tensorflow::Status;
using ::tensorflow::shape_inference::InferenceContext;
using ::tensorflow::shape_inference::ShapeHandle;

namespace {

// SameShapeAsFirst, input 2 (regularization_strength) must be a scalar and input
// `k_input` (if >= 0) must have rank <= 1.
Status TopKShape(InferenceContext* c, std::initializer_list<int> same, int k_input,
                 int num_outputs) {
  TF_RETURN_IF_ERROR(ScalarInput(c, 2));
  if (k_input >= 0) {
    ShapeHandle k;
    TF_RETURN_IF_ERROR(c->WithRankAtMost(c->input(k_input), 1, &k));
  }
  return SameShapeAsFirst(c, same, num_outputs);
}

}  // namespace

REGISTER_OP("TFSort>SigmoidTopK")
    .Input("values: T")
    .Input("k: double")
    .Input("regularization_strength: double")
    .Output("mask: T")
    .Attr("T: {half, bfloat16, float, double}")
    .SetShapeFn([](InferenceContext* c) { return TopKShape(c, {}, 1, 1); })
    .Doc(R"doc(
Soft top-k mask along the last axis: mask = sigmoid((values + t) / eps) with the per-row
threshold t solved (safeguarded Newton, capped iterations) so that sum(mask) = k.
Requires 0 < k < n for every row. Rows with NaN or +-inf give a NaN mask.
Half and bfloat16 compute in float32.
)doc");

REGISTER_OP("TFSort>SigmoidTopKGrad")
    .Input("grad: T")
    .Input("mask: T")
    .Input("regularization_strength: double")
    .Output("grad_values: T")
    .Attr("T: {half, bfloat16, float, double}")
    .SetShapeFn([](InferenceContext* c) { return TopKShape(c, {1}, -1, 1); })
    .Doc(R"doc(
VJP of SigmoidTopK: with v = mask (1 - mask) / eps,
grad_values = v * grad - v * sum(v * grad) / sum(v)   (0 where sum(v) = 0).
The Jacobian is symmetric, so this op is also the JVP.
)doc");

REGISTER_OP("TFSort>SparseTopK")
    .Input("values: T")
    .Input("k: double")
    .Input("regularization_strength: double")
    .Output("mask: T")
    .Output("support: int32")
    .Attr("T: {half, bfloat16, float, double}")
    .SetShapeFn([](InferenceContext* c) { return TopKShape(c, {}, 1, 2); })
    .Doc(R"doc(
Sparse top-k mask along the last axis: the Euclidean projection of values / eps onto
{0 <= m <= 1, sum m = k}, by one sort and one pool-adjacent-violators pass per row.
k must be an integer with 0 < k < n. support is 1 on the entries whose mask is fractional
(the only ones the mask depends on locally), 0 elsewhere, -1 on rows with NaN or +-inf
(whose mask is NaN).
)doc");

REGISTER_OP("TFSort>SparseTopKGrad")
    .Input("grad: T")
    .Input("support: int32")
    .Input("regularization_strength: double")
    .Output("grad_values: T")
    .Attr("T: {half, bfloat16, float, double}")
    .SetShapeFn([](InferenceContext* c) { return TopKShape(c, {1}, -1, 1); })
    .Doc(R"doc(
VJP of SparseTopK: on the support F, (grad_i - mean_F(grad)) / eps; 0 elsewhere.
Linear and self-adjoint, so it is also its own gradient.
)doc");

}  // namespace tfsort
