// Shape-function helpers shared by the op definitions of every family.

#ifndef TFSORT_CC_OPS_SHAPE_UTIL_H_
#define TFSORT_CC_OPS_SHAPE_UTIL_H_

#include <initializer_list>

#include "tensorflow/core/framework/shape_inference.h"

namespace tfsort {

// Outputs 0..num_outputs-1 have the shape of input 0, which must have rank >= 1. Inputs
// listed in `same` must be compatible with input 0 (their known dimensions refine it).
inline ::tensorflow::Status SameShapeAsFirst(::tensorflow::shape_inference::InferenceContext* c,
                                             std::initializer_list<int> same,
                                             int num_outputs) {
  ::tensorflow::shape_inference::ShapeHandle x;
  TF_RETURN_IF_ERROR(c->WithRankAtLeast(c->input(0), 1, &x));
  for (int i : same) TF_RETURN_IF_ERROR(c->Merge(x, c->input(i), &x));
  for (int o = 0; o < num_outputs; ++o) c->set_output(o, x);
  return ::tensorflow::Status();
}

// Input i must be a scalar.
inline ::tensorflow::Status ScalarInput(::tensorflow::shape_inference::InferenceContext* c,
                                        int i) {
  ::tensorflow::shape_inference::ShapeHandle unused;
  return c->WithRank(c->input(i), 0, &unused);
}

}  // namespace tfsort

#endif  // TFSORT_CC_OPS_SHAPE_UTIL_H_
