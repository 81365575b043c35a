// TensorFlow-side helpers shared by the CPU and GPU kernels of the sorting-network family
// (networks_kernels.cc, networks_gpu.cc): attrs, input validation and the schedule cache, so
// that both devices accept and reject exactly the same inputs with the same messages.

#ifndef TFSORT_CC_KERNELS_NETWORKS_KERNEL_UTIL_H_
#define TFSORT_CC_KERNELS_NETWORKS_KERNEL_UTIL_H_

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/tensor.h"
#include "tensorflow/core/framework/tensor_shape.h"
#include "tfsort/cc/kernels/kernel_util.h"
#include "tfsort/cc/kernels/networks.h"

namespace tfsort {
namespace netkernels {

using ::tensorflow::OpKernelConstruction;
using ::tensorflow::OpKernelContext;
using ::tensorflow::Tensor;
using ::tensorflow::TensorShape;
using ::tensorflow::errors::InvalidArgument;
using networks::Network;
using networks::Relaxation;
using networks::Schedule;

struct NetAttrs {
  Network network = Network::kBitonic;
  Relaxation relaxation = Relaxation::kCauchy;
  bool descending = false;
  bool ranks = false;
};

// Reads the attrs the op has; rejects bad values by name. steepness is a float64 scalar
// input (the last one of every op), read per call with ReadSteepness.
inline void ReadAttrs(OpKernelConstruction* ctx, bool has_network, NetAttrs* a) {
  std::string s;
  if (has_network) {
    OP_REQUIRES_OK(ctx, ctx->GetAttr("network", &s));
    OP_REQUIRES(ctx, networks::ParseNetwork(s.c_str(), &a->network),
                InvalidArgument("network must be 'bitonic' or 'odd_even', got '", s, "'"));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("descending", &a->descending));
    if (ctx->HasAttr("compute_ranks")) {
      OP_REQUIRES_OK(ctx, ctx->GetAttr("compute_ranks", &a->ranks));
    }
  }
  OP_REQUIRES_OK(ctx, ctx->GetAttr("relaxation", &s));
  OP_REQUIRES(ctx, networks::ParseRelaxation(s.c_str(), &a->relaxation),
              InvalidArgument("unknown relaxation '", s, "'"));
}

// [rows, n] view of a rank >= 1 tensor; networks allow at most 2^28 elements per row.
inline ::tensorflow::Status NetRowShape(const Tensor& t, const char* name, RowShape* rs) {
  TF_RETURN_IF_ERROR(GetRowShape(t, name, rs));
  if (rs->n > (1 << 28)) {
    return InvalidArgument(name, ": the sorted axis has ", rs->n, " elements; at most 2^28");
  }
  return ::tensorflow::Status();
}

// The steepness input (float64 scalar, positive and finite) in the compute type A.
template <typename A>
::tensorflow::Status ReadSteepness(OpKernelContext* ctx, A* s) {
  double v = 1.0;
  TF_RETURN_IF_ERROR(GetPositiveScalar(ctx->input(ctx->num_inputs() - 1), "steepness", &v));
  *s = static_cast<A>(v);
  return ::tensorflow::Status();
}

inline TensorShape WithLast(const TensorShape& s, int64_t last) {
  TensorShape out = s;
  out.set_dim(out.dims() - 1, last);
  return out;
}

// Caches the schedule of the last n seen (building it is O(#comparators)).
class ScheduleCache {
 public:
  std::shared_ptr<const Schedule> Get(Network net, int n) {
    std::lock_guard<std::mutex> lock(mu_);
    if (!sched_ || n_ != n) {
      auto s = std::make_shared<Schedule>();
      networks::BuildSchedule(net, n, s.get());
      sched_ = s;
      n_ = n;
    }
    return sched_;
  }

 private:
  std::mutex mu_;
  std::shared_ptr<const Schedule> sched_;
  int n_ = -1;
};

// Validates a gradient op's saved input (shape sshape) and grad_saved (a cotangent of saved
// for second-order gradients, sort mode only, or a [0] tensor for zero; *gs_zero says which).
inline ::tensorflow::Status CheckSavedInputs(const Tensor& saved_t, const Tensor& gs_t,
                                             const TensorShape& sshape, bool ranks,
                                             bool* gs_zero) {
  if (saved_t.shape() != sshape) {
    return InvalidArgument("saved must have shape ", sshape.DebugString(), ", got ",
                           saved_t.shape().DebugString());
  }
  *gs_zero = gs_t.dims() == 1 && gs_t.dim_size(0) == 0;
  if (!*gs_zero && gs_t.shape() != sshape) {
    return InvalidArgument("grad_saved must have shape [0] or ", sshape.DebugString(), ", got ",
                           gs_t.shape().DebugString());
  }
  if (!*gs_zero && ranks) return InvalidArgument("grad_saved must be [0] with compute_ranks");
  return ::tensorflow::Status();
}

// Validates a CompareSwap layer (left, right: int32 vectors of one length, positions in
// [0, n), each used at most once).
inline ::tensorflow::Status CheckLayer(const Tensor& left, const Tensor& right, int n) {
  if (left.dims() != 1 || right.shape() != left.shape()) {
    return InvalidArgument("left and right must be vectors of one length, got ",
                           left.shape().DebugString(), " and ", right.shape().DebugString());
  }
  std::vector<char> used(n, 0);
  const auto l = left.flat<int32_t>();
  const auto r = right.flat<int32_t>();
  for (int64_t k = 0; k < l.size(); ++k) {
    for (int32_t idx : {l(k), r(k)}) {
      if (idx < 0 || idx >= n) {
        return InvalidArgument("comparator ", k, " (", l(k), ", ", r(k),
                               ") is out of range for rows of length ", n);
      }
      if (used[idx]) {
        return InvalidArgument("position ", idx,
                               " appears in more than one comparator of the layer");
      }
      used[idx] = 1;
    }
  }
  return ::tensorflow::Status();
}

}  // namespace netkernels
}  // namespace tfsort

#endif  // TFSORT_CC_KERNELS_NETWORKS_KERNEL_UTIL_H_
