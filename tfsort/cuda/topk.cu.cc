// GPU launchers for the sigmoid top-k ops (see topk_launch.h). A group of threads (a warp,
// or a block for long rows) owns a row; the phases are topk_steps.h's host+device functions
// and the threshold iteration is topk.h's SigmoidSolver, run by every thread of the group on
// the same reduced sums.

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "tfsort/cc/kernels/topk.h"
#include "tfsort/cuda/nt_common.cuh"
#include "tfsort/cuda/topk_launch.h"
#include "tfsort/cuda/topk_steps.h"

namespace tfsort {
namespace cuda {
namespace {

template <typename T>
struct Compute {
  using type = float;
};
template <>
struct Compute<double> {
  using type = double;
};

static_assert(kTopKBlockThreads == 512, "the block kernels' __launch_bounds__");
constexpr int kWarpRowsPerBlock = 8;  // 256 threads (the warp kernels' launch bounds)

// Reductions over a group. Warp: butterfly shuffles, then lane 0's value is broadcast so
// every lane holds bitwise the same total. Block: per-warp butterflies, warp totals through
// shared memory, a butterfly over those, broadcast from lane 0.
__device__ __forceinline__ double WarpSum(double v) {
  for (int off = 16; off > 0; off >>= 1) v += __shfl_xor_sync(0xffffffffu, v, off);
  return __shfl_sync(0xffffffffu, v, 0);
}
__device__ __forceinline__ double WarpMin(double v) {
  for (int off = 16; off > 0; off >>= 1) v = fmin(v, __shfl_xor_sync(0xffffffffu, v, off));
  return __shfl_sync(0xffffffffu, v, 0);
}
__device__ __forceinline__ double WarpMax(double v) {
  for (int off = 16; off > 0; off >>= 1) v = fmax(v, __shfl_xor_sync(0xffffffffu, v, off));
  return __shfl_sync(0xffffffffu, v, 0);
}
__device__ __forceinline__ int WarpAnd(int v) { return __all_sync(0xffffffffu, v) ? 1 : 0; }

struct WarpGroup {
  __device__ int tid() const { return threadIdx.x & 31; }
  __device__ int size() const { return 32; }
  __device__ RowStats Reduce(RowStats s) const {
    return RowStats{WarpMin(s.xmin), WarpMax(s.xmax), WarpSum(s.sum), WarpAnd(s.finite)};
  }
  __device__ EvalSums Reduce(EvalSums s) const {
    return EvalSums{WarpSum(s.sp), WarpSum(s.sv), WarpSum(s.sq)};
  }
  __device__ VjpSums Reduce(VjpSums s) const { return VjpSums{WarpSum(s.sv), WarpSum(s.svg)}; }
};

// Block-wide: `buf` holds 4 x 32 doubles in shared memory.
struct BlockGroup {
  double* buf;
  __device__ int tid() const { return threadIdx.x; }
  __device__ int size() const { return blockDim.x; }
  // Reduces up to four doubles at once; op 0 sum, 1 min, 2 max.
  template <int kCount>
  __device__ void Reduce4(double* v, const int* op) const {
    const int lane = threadIdx.x & 31;
    const int warp = threadIdx.x >> 5;
    const int warps = blockDim.x >> 5;
    for (int j = 0; j < kCount; ++j) {
      v[j] = op[j] == 0 ? WarpSum(v[j]) : (op[j] == 1 ? WarpMin(v[j]) : WarpMax(v[j]));
    }
    __syncthreads();  // the previous reduction's readers are done with buf
    if (lane == 0) {
      for (int j = 0; j < kCount; ++j) buf[j * 32 + warp] = v[j];
    }
    __syncthreads();
    for (int j = 0; j < kCount; ++j) {
      const double id = op[j] == 0 ? 0.0 : (op[j] == 1 ? HUGE_VAL : -HUGE_VAL);
      const double t = lane < warps ? buf[j * 32 + lane] : id;
      v[j] = op[j] == 0 ? WarpSum(t) : (op[j] == 1 ? WarpMin(t) : WarpMax(t));
    }
  }
  __device__ RowStats Reduce(RowStats s) const {
    double v[4] = {s.xmin, s.xmax, s.sum, static_cast<double>(s.finite)};
    const int op[4] = {1, 2, 0, 1};
    Reduce4<4>(v, op);
    return RowStats{v[0], v[1], v[2], v[3] > 0.5 ? 1 : 0};
  }
  __device__ EvalSums Reduce(EvalSums s) const {
    double v[3] = {s.sp, s.sv, s.sq};
    const int op[3] = {0, 0, 0};
    Reduce4<3>(v, op);
    return EvalSums{v[0], v[1], v[2]};
  }
  __device__ VjpSums Reduce(VjpSums s) const {
    double v[2] = {s.sv, s.svg};
    const int op[2] = {0, 0};
    Reduce4<2>(v, op);
    return VjpSums{v[0], v[1]};
  }
};

// One row of SigmoidTopK by a group.
template <typename T, typename Group>
__device__ void SigmoidTopKRowGroup(const Group& g, const T* x, T* out, int64_t n, double k,
                                    double eps) {
  using C = typename Compute<T>::type;
  const int tid = g.tid();
  const int nth = g.size();
  const RowStats st = g.Reduce(PartialStats(x, n, tid, nth));
  if (!st.finite) {
    WriteNan(out, n, tid, nth);
    return;
  }
  const C ie = static_cast<C>(1.0 / eps);
  topk::SigmoidSolver solver;
  solver.Init(static_cast<int>(n), k, eps, st.xmin, st.xmax, st.sum / static_cast<double>(n),
              static_cast<int>(sizeof(C)));
  topk::SigmoidSolver::Action act;
  C th, tl;
  do {
    topk::SplitThreshold(solver.t, &th, &tl);
    const EvalSums s = g.Reduce(PartialEval(x, n, tid, nth, th, tl, ie));
    act = solver.Update(s.sp, s.sv, s.sq);
  } while (act == topk::SigmoidSolver::kContinue);
  topk::SplitThreshold(solver.t, &th, &tl);
  const bool first_order = act == topk::SigmoidSolver::kFirstOrder;
  WriteMask(x, out, n, tid, nth, th, tl, ie, first_order,
            first_order ? static_cast<C>(solver.dt) : C(0));
}

template <typename T>
__global__ void __launch_bounds__(256)
    SigmoidTopKWarpKernel(const T* x, const double* k, double k_scalar, double eps, T* out,
                          int64_t batch, int64_t n) {
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kWarpRowsPerBlock + (threadIdx.x >> 5);
  if (row >= batch) return;  // whole warps exit together
  SigmoidTopKRowGroup(WarpGroup(), x + row * n, out + row * n, n, k ? k[row] : k_scalar, eps);
}

template <typename T>
__global__ void __launch_bounds__(512)
    SigmoidTopKBlockKernel(const T* x, const double* k, double k_scalar, double eps, T* out,
                           int64_t n) {
  __shared__ double buf[4 * 32];
  const int64_t row = blockIdx.x;
  SigmoidTopKRowGroup(BlockGroup{buf}, x + row * n, out + row * n, n, k ? k[row] : k_scalar,
                      eps);
}

template <typename T, typename Group>
__device__ void SigmoidTopKGradRowGroup(const Group& g, const T* grad, const T* mask, T* out,
                                        int64_t n, double inv_eps) {
  using C = typename Compute<T>::type;
  const VjpSums s = g.Reduce(PartialVjp(mask, grad, n, g.tid(), g.size()));
  WriteVjp<T, C>(mask, grad, out, n, g.tid(), g.size(), s, inv_eps);
}

template <typename T>
__global__ void __launch_bounds__(256)
    SigmoidTopKGradWarpKernel(const T* grad, const T* mask, double inv_eps, T* out, int64_t batch,
                              int64_t n) {
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kWarpRowsPerBlock + (threadIdx.x >> 5);
  if (row >= batch) return;
  SigmoidTopKGradRowGroup(WarpGroup(), grad + row * n, mask + row * n, out + row * n, n,
                          inv_eps);
}

template <typename T>
__global__ void __launch_bounds__(512)
    SigmoidTopKGradBlockKernel(const T* grad, const T* mask, double inv_eps, T* out, int64_t n) {
  __shared__ double buf[4 * 32];
  const int64_t row = blockIdx.x;
  SigmoidTopKGradRowGroup(BlockGroup{buf}, grad + row * n, mask + row * n, out + row * n, n,
                          inv_eps);
}

}  // namespace

template <typename T>
cudaError_t LaunchSigmoidTopK(const T* x, const double* k, double k_scalar, double eps, T* mask,
                              int64_t batch, int64_t n, cudaStream_t stream) {
  if (batch == 0 || n == 0) return cudaSuccess;
  if (n <= kTopKWarpMaxN) {
    const int64_t blocks = nt::CeilDiv(batch, kWarpRowsPerBlock);
    if (blocks > 0x7fffffff) return cudaErrorInvalidValue;
    SigmoidTopKWarpKernel<T><<<static_cast<unsigned>(blocks), 32 * kWarpRowsPerBlock, 0,
                               stream>>>(x, k, k_scalar, eps, mask, batch, n);
  } else {
    if (batch > 0x7fffffff) return cudaErrorInvalidValue;
    SigmoidTopKBlockKernel<T><<<static_cast<unsigned>(batch), kTopKBlockThreads, 0, stream>>>(
        x, k, k_scalar, eps, mask, n);
  }
  return cudaGetLastError();
}

template <typename T>
cudaError_t LaunchSigmoidTopKGrad(const T* grad, const T* mask, double eps, T* out,
                                  int64_t batch, int64_t n, cudaStream_t stream) {
  if (batch == 0 || n == 0) return cudaSuccess;
  const double inv_eps = 1.0 / eps;
  if (n <= kTopKWarpMaxN) {
    const int64_t blocks = nt::CeilDiv(batch, kWarpRowsPerBlock);
    if (blocks > 0x7fffffff) return cudaErrorInvalidValue;
    SigmoidTopKGradWarpKernel<T><<<static_cast<unsigned>(blocks), 32 * kWarpRowsPerBlock, 0,
                                   stream>>>(grad, mask, inv_eps, out, batch, n);
  } else {
    if (batch > 0x7fffffff) return cudaErrorInvalidValue;
    SigmoidTopKGradBlockKernel<T><<<static_cast<unsigned>(batch), kTopKBlockThreads, 0,
                                    stream>>>(grad, mask, inv_eps, out, n);
  }
  return cudaGetLastError();
}

#define TFSORT_INSTANTIATE_TOPK(T)                                                            \
  template cudaError_t LaunchSigmoidTopK<T>(const T*, const double*, double, double, T*,      \
                                            int64_t, int64_t, cudaStream_t);                  \
  template cudaError_t LaunchSigmoidTopKGrad<T>(const T*, const T*, double, T*, int64_t,      \
                                                int64_t, cudaStream_t);

TFSORT_INSTANTIATE_TOPK(__half)
TFSORT_INSTANTIATE_TOPK(__nv_bfloat16)
TFSORT_INSTANTIATE_TOPK(float)
TFSORT_INSTANTIATE_TOPK(double)
#undef TFSORT_INSTANTIATE_TOPK

}  // namespace cuda
}  // namespace tfsort
