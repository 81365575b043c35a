// Helpers shared by every CUDA launcher of tfsort (isotonic, networks, topk): the
// accumulation type, storage <-> accumulator conversions, NaN/finite checks, a workspace
// carver and launch-shape helpers. No TensorFlow headers: launchers built on this compile
// with nvcc alone (tests/gpu/build.py) and are called from the TF kernels with raw device
// pointers and a cudaStream_t.
//
// Storage types: float, double, __half, __nv_bfloat16. Accumulation follows the CPU code
// (tfsort/cc/kernels/kernel_util.h): half/bfloat16 accumulate in float, float and double in
// double.

#ifndef TFSORT_CUDA_CUDA_COMMON_H_
#define TFSORT_CUDA_CUDA_COMMON_H_

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime_api.h>

#include <cfloat>
#include <cstddef>
#include <cstdint>

#ifndef TFSORT_HD
#ifdef __CUDACC__
#define TFSORT_HD __host__ __device__
#else
#define TFSORT_HD
#endif
#endif

// Returns the error of a CUDA runtime call from the enclosing function.
#define TFSORT_CUDA_RETURN_IF_ERROR(expr)     \
  do {                                        \
    const cudaError_t tfsort_err_ = (expr);   \
    if (tfsort_err_ != cudaSuccess) return tfsort_err_; \
  } while (0)

namespace tfsort {
namespace cuda {

// Accumulation type (as tfsort::Acc on the CPU side).
template <typename T>
struct AccT {
  using type = double;
};
template <>
struct AccT<__half> {
  using type = float;
};
template <>
struct AccT<__nv_bfloat16> {
  using type = float;
};

// The float type that holds T exactly: float for half, bfloat16 and float, double for
// double (tfsort::FloatType). Sort keys are built from it.
template <typename T>
struct KeyFloat {
  using type = float;
};
template <>
struct KeyFloat<double> {
  using type = double;
};

// Storage -> accumulator. half/bfloat16 go through float (their Acc).
template <typename A, typename T>
TFSORT_HD inline A ToAcc(T v) {
  return static_cast<A>(v);
}
template <>
TFSORT_HD inline float ToAcc<float, __half>(__half v) {
  return __half2float(v);
}
template <>
TFSORT_HD inline float ToAcc<float, __nv_bfloat16>(__nv_bfloat16 v) {
  return __bfloat162float(v);
}

// Accumulator -> storage, rounding through AccT<T> first (as tfsort::FromAcc).
template <typename T, typename A>
TFSORT_HD inline T FromAcc(A v) {
  return static_cast<T>(static_cast<typename AccT<T>::type>(v));
}
template <>
TFSORT_HD inline __half FromAcc<__half, float>(float v) {
  return __float2half_rn(v);
}
template <>
TFSORT_HD inline __half FromAcc<__half, double>(double v) {
  return __float2half_rn(static_cast<float>(v));
}
template <>
TFSORT_HD inline __nv_bfloat16 FromAcc<__nv_bfloat16, float>(float v) {
  return __float2bfloat16_rn(v);
}
template <>
TFSORT_HD inline __nv_bfloat16 FromAcc<__nv_bfloat16, double>(double v) {
  return __float2bfloat16_rn(static_cast<float>(v));
}

// Finite checks by comparison (NaN fails both, +-inf fails one): no libm call, same on
// host and device, exact for every storage type (half/bfloat16 are checked as float, as
// the CPU kernels do).
TFSORT_HD inline bool IsFinite(float v) { return v >= -FLT_MAX && v <= FLT_MAX; }
TFSORT_HD inline bool IsFinite(double v) { return v >= -DBL_MAX && v <= DBL_MAX; }
template <typename T>
TFSORT_HD inline bool IsFiniteValue(T v) {
  return IsFinite(ToAcc<typename AccT<T>::type, T>(v));
}
template <>
TFSORT_HD inline bool IsFiniteValue<float>(float v) {
  return IsFinite(v);
}

// A quiet NaN of storage type T.
template <typename T>
TFSORT_HD inline T QuietNaN() {
  return FromAcc<T>(static_cast<float>(NAN));
}

// Carves one caller-provided workspace into aligned sub-arrays. The same sequence of
// Take calls runs twice: with base == nullptr on the host to size the workspace (the
// WorkspaceBytes functions) and with the real pointer inside the launcher, so the two
// can never disagree.
class WorkspaceCarver {
 public:
  static constexpr size_t kAlign = 256;
  explicit WorkspaceCarver(void* base) : base_(static_cast<char*>(base)) {}
  template <typename U>
  U* Take(size_t count) {
    offset_ = (offset_ + kAlign - 1) / kAlign * kAlign;
    U* p = base_ ? reinterpret_cast<U*>(base_ + offset_) : nullptr;
    offset_ += count * sizeof(U);
    return p;
  }
  size_t bytes() const { return offset_; }

 private:
  char* base_;
  size_t offset_ = 0;
};

TFSORT_HD inline int64_t CeilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Grid size for a grid-stride loop over `work` items with `block` threads per block.
inline unsigned int GridFor(int64_t work, int block) {
  const int64_t g = CeilDiv(work, block);
  const int64_t kMaxGrid = 1 << 20;  // grid-stride loops cover the rest
  return static_cast<unsigned int>(g < 1 ? 1 : (g > kMaxGrid ? kMaxGrid : g));
}

}  // namespace cuda
}  // namespace tfsort

#endif  // TFSORT_CUDA_CUDA_COMMON_H_
