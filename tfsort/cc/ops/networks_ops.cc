// Op definitions for the sorting-network family: a fused relaxed sorting network over the
// last axis (sorted values and, optionally, soft ranks) and a single relaxed compare-swap
// layer, each with its gradient op. All leading dimensions are batch.

#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/shape_inference.h"
#include "tfsort/cc/ops/shape_util.h"
#include "tfsort/cc/kernels/networks.h"

namespace tfsort {

using ::tensorflow::Status;
using ::tensorflow::shape_inference::DimensionHandle;
using ::tensorflow::shape_inference::InferenceContext;
using ::tensorflow::shape_inference::ShapeHandle;

namespace {

// Shape of a per-comparator output: the batch dimensions of x followed by `last`.
Status PerComparatorShape(InferenceContext* c, ShapeHandle x, DimensionHandle last,
                          ShapeHandle* out) {
  ShapeHandle batch;
  TF_RETURN_IF_ERROR(c->Subshape(x, 0, -1, &batch));
  return c->Concatenate(batch, c->Vector(last), out);
}

// The network's comparator count for rows of x (times `per_comparator`), unknown when the
// last dimension is.
Status ComparatorCount(InferenceContext* c, ShapeHandle x, int per_comparator,
                       DimensionHandle* count) {
  std::string network;
  TF_RETURN_IF_ERROR(c->GetAttr("network", &network));
  *count = c->UnknownDim();
  networks::Network net;
  const DimensionHandle n = c->Dim(x, -1);
  if (c->ValueKnown(n) && networks::ParseNetwork(network.c_str(), &net) &&
      c->Value(n) < (1 << 24)) {
    *count = c->MakeDim(networks::NumComparators(net, static_cast<int>(c->Value(n))) *
                        per_comparator);
  }
  return Status();
}

// Every op's last input is steepness, a float64 scalar (an input rather than a float attr,
// so float64 values see it unrounded).
Status SteepnessShape(InferenceContext* c) { return ScalarInput(c, c->num_inputs() - 1); }

// Gradient ops: one output with the shape of input 0.
Status GradShape(InferenceContext* c) {
  TF_RETURN_IF_ERROR(SteepnessShape(c));
  return SameShapeAsFirst(c, {}, 1);
}

Status NetworkShape(InferenceContext* c) {
  TF_RETURN_IF_ERROR(SteepnessShape(c));
  ShapeHandle x;
  TF_RETURN_IF_ERROR(c->WithRankAtLeast(c->input(0), 1, &x));
  bool ranks = false;
  TF_RETURN_IF_ERROR(c->GetAttr("compute_ranks", &ranks));
  DimensionHandle count;
  TF_RETURN_IF_ERROR(ComparatorCount(c, x, ranks ? 2 : 1, &count));
  ShapeHandle saved;
  TF_RETURN_IF_ERROR(PerComparatorShape(c, x, count, &saved));
  c->set_output(0, x);
  c->set_output(1, saved);
  return Status();
}

}  // namespace

REGISTER_OP("TFSort>SortingNetwork")
    .Input("values: T")
    .Input("steepness: double")
    .Output("output: T")
    .Output("saved: Tacc")
    .Attr("T: {half, bfloat16, float, double}")
    .Attr("Tacc: {float, double}")
    .Attr("network: {'bitonic', 'odd_even'} = 'bitonic'")
    .Attr("relaxation: {'logistic', 'logistic_phi', 'gaussian', 'reciprocal', 'cauchy', "
          "'optimal', 'softmax'} = 'cauchy'")
    .Attr("descending: bool = false")
    .Attr("compute_ranks: bool = false")
    .SetShapeFn(NetworkShape)
    .Doc(R"doc(
Runs a relaxed sorting network over the last axis of values, one pass per comparator,
computing in Tacc (float for half/bfloat16/float, double for double).

output: the relaxed sort (ascending, or descending if `descending`), or, if compute_ranks,
  soft ranks starting at 1 (rank_j = sum_i (i + 1) P[i, j]; n + 1 minus that if descending).
saved: per row, u = b - a at every comparator (C values) and, if compute_ranks, then
  r[lo] - r[hi] of the back-propagated rank vector at every comparator (C more). Kept for
  the gradient; one extra output only, since eager backprop builds zeros for every unused one.
)doc");

REGISTER_OP("TFSort>SortingNetworkGrad")
    .Input("grad: T")
    .Input("saved: Tacc")
    .Input("grad_saved: Tacc")
    .Input("steepness: double")
    .Output("grad_values: T")
    .Attr("T: {half, bfloat16, float, double}")
    .Attr("Tacc: {float, double}")
    .Attr("network: {'bitonic', 'odd_even'} = 'bitonic'")
    .Attr("relaxation: {'logistic', 'logistic_phi', 'gaussian', 'reciprocal', 'cauchy', "
          "'optimal', 'softmax'} = 'cauchy'")
    .Attr("descending: bool = false")
    .Attr("compute_ranks: bool = false")
    .SetShapeFn(GradShape)
    .Doc(R"doc(
VJP of SortingNetwork (grad: cotangent of its output, sorted values or ranks): one backward
pass over the comparators, plus one forward pass carrying the rank cotangent for ranks.
grad_saved: a cotangent of `saved` (second-order gradients; sort mode only), or a [0]
tensor for zero.
)doc");

REGISTER_OP("TFSort>SortingNetworkGradAdjoint")
    .Input("tangent: T")
    .Input("grad: T")
    .Input("saved: Tacc")
    .Input("grad_saved: Tacc")
    .Input("steepness: double")
    .Output("jvp: T")
    .Output("grad_saved_out: Tacc")
    .Output("grad_grad_saved: Tacc")
    .Attr("T: {half, bfloat16, float, double}")
    .Attr("Tacc: {float, double}")
    .Attr("network: {'bitonic', 'odd_even'} = 'bitonic'")
    .Attr("relaxation: {'logistic', 'logistic_phi', 'gaussian', 'reciprocal', 'cauchy', "
          "'optimal', 'softmax'} = 'cauchy'")
    .Attr("descending: bool = false")
    .SetShapeFn([](InferenceContext* c) {
      TF_RETURN_IF_ERROR(SteepnessShape(c));
      TF_RETURN_IF_ERROR(SameShapeAsFirst(c, {1}, 1));
      c->set_output(1, c->input(2));
      c->set_output(2, c->input(2));
      return Status();
    })
    .Doc(R"doc(
Gradients of <tangent, SortingNetworkGrad(grad, saved, grad_saved)> (sort mode) w.r.t.
grad (jvp: the JVP of SortingNetwork applied to tangent, by one forward walk of the
symmetric comparator Jacobians), saved (through each comparator's c(u)) and grad_saved.
)doc");

REGISTER_OP("TFSort>SortingNetworkPermutation")
    .Input("values: T")
    .Input("steepness: double")
    .Output("sorted: T")
    .Output("permutation: T")
    .Output("diffs: Tacc")
    .Attr("T: {half, bfloat16, float, double}")
    .Attr("Tacc: {float, double}")
    .Attr("network: {'bitonic', 'odd_even'} = 'bitonic'")
    .Attr("relaxation: {'logistic', 'logistic_phi', 'gaussian', 'reciprocal', 'cauchy', "
          "'optimal', 'softmax'} = 'cauchy'")
    .Attr("descending: bool = false")
    .SetShapeFn([](InferenceContext* c) {
      TF_RETURN_IF_ERROR(SteepnessShape(c));
      ShapeHandle x;
      TF_RETURN_IF_ERROR(c->WithRankAtLeast(c->input(0), 1, &x));
      DimensionHandle count;
      TF_RETURN_IF_ERROR(ComparatorCount(c, x, 1, &count));
      const DimensionHandle n = c->Dim(x, -1);
      ShapeHandle diffs, perm;
      TF_RETURN_IF_ERROR(PerComparatorShape(c, x, count, &diffs));
      TF_RETURN_IF_ERROR(c->Concatenate(x, c->Vector(n), &perm));
      c->set_output(0, x);
      c->set_output(1, perm);
      c->set_output(2, diffs);
      return Status();
    })
    .Doc(R"doc(
SortingNetwork that also returns the relaxed permutation matrix P ([..., n, n],
sorted[..., i] = sum_j P[..., i, j] values[..., j]), built by propagating P's rows through
the comparators with the mixing weights alpha (no matrix per layer).
)doc");

REGISTER_OP("TFSort>SortingNetworkPermutationGrad")
    .Input("grad_sorted: T")
    .Input("grad_permutation: T")
    .Input("diffs: Tacc")
    .Input("steepness: double")
    .Output("grad_values: T")
    .Attr("T: {half, bfloat16, float, double}")
    .Attr("Tacc: {float, double}")
    .Attr("network: {'bitonic', 'odd_even'} = 'bitonic'")
    .Attr("relaxation: {'logistic', 'logistic_phi', 'gaussian', 'reciprocal', 'cauchy', "
          "'optimal', 'softmax'} = 'cauchy'")
    .Attr("descending: bool = false")
    .SetShapeFn(GradShape)
    .Doc(R"doc(
VJP of SortingNetworkPermutation. P is recomputed from checkpoints, so memory stays
O(n^2 sqrt(#comparators / n)) per row in flight.
)doc");

REGISTER_OP("TFSort>CompareSwap")
    .Input("values: T")
    .Input("left: int32")
    .Input("right: int32")
    .Input("steepness: double")
    .Output("swapped: T")
    .Output("diffs: Tacc")
    .Attr("T: {half, bfloat16, float, double}")
    .Attr("Tacc: {float, double}")
    .Attr("relaxation: {'logistic', 'logistic_phi', 'gaussian', 'reciprocal', 'cauchy', "
          "'optimal', 'softmax'} = 'cauchy'")
    .SetShapeFn([](InferenceContext* c) {
      TF_RETURN_IF_ERROR(SteepnessShape(c));
      ShapeHandle x, left, right;
      TF_RETURN_IF_ERROR(c->WithRankAtLeast(c->input(0), 1, &x));
      TF_RETURN_IF_ERROR(c->WithRank(c->input(1), 1, &left));
      TF_RETURN_IF_ERROR(c->WithRank(c->input(2), 1, &right));
      TF_RETURN_IF_ERROR(c->Merge(left, right, &left));
      ShapeHandle diffs;
      TF_RETURN_IF_ERROR(PerComparatorShape(c, x, c->Dim(left, 0), &diffs));
      c->set_output(0, x);
      c->set_output(1, diffs);
      return Status();
    })
    .Doc(R"doc(
One layer of relaxed comparators on the last axis: for each k, the relaxed minimum of
(values[left[k]], values[right[k]]) goes to left[k] and the maximum to right[k]. Positions
must be distinct across the layer; others pass through.
)doc");

REGISTER_OP("TFSort>CompareSwapGrad")
    .Input("grad: T")
    .Input("diffs: Tacc")
    .Input("left: int32")
    .Input("right: int32")
    .Input("grad_diffs: Tacc")
    .Input("steepness: double")
    .Output("grad_values: T")
    .Attr("T: {half, bfloat16, float, double}")
    .Attr("Tacc: {float, double}")
    .Attr("relaxation: {'logistic', 'logistic_phi', 'gaussian', 'reciprocal', 'cauchy', "
          "'optimal', 'softmax'} = 'cauchy'")
    .SetShapeFn(GradShape)
    .Doc(R"doc(
VJP of CompareSwap (each comparator's Jacobian [[c, 1 - c], [1 - c, c]] is symmetric).
grad_diffs: a cotangent of diffs (second-order gradients), or a [0] tensor for zero.
)doc");

REGISTER_OP("TFSort>CompareSwapGradAdjoint")
    .Input("tangent: T")
    .Input("grad: T")
    .Input("diffs: Tacc")
    .Input("left: int32")
    .Input("right: int32")
    .Input("grad_diffs: Tacc")
    .Input("steepness: double")
    .Output("jvp: T")
    .Output("grad_diffs_out: Tacc")
    .Output("grad_grad_diffs: Tacc")
    .Attr("T: {half, bfloat16, float, double}")
    .Attr("Tacc: {float, double}")
    .Attr("relaxation: {'logistic', 'logistic_phi', 'gaussian', 'reciprocal', 'cauchy', "
          "'optimal', 'softmax'} = 'cauchy'")
    .SetShapeFn([](InferenceContext* c) {
      TF_RETURN_IF_ERROR(SteepnessShape(c));
      TF_RETURN_IF_ERROR(SameShapeAsFirst(c, {1}, 1));
      c->set_output(1, c->input(2));
      c->set_output(2, c->input(2));
      return Status();
    })
    .Doc(R"doc(
Gradients of <tangent, CompareSwapGrad(grad, diffs, left, right, grad_diffs)> w.r.t. grad
(jvp: the JVP of CompareSwap), diffs and grad_diffs.
)doc");

}  // namespace tfsort
