// Storage <-> compute conversions for the network and top-k launchers, host+device
// (TFSORT_HD) so that their step functions also run in host tests. float and double here;
// nt_common.cuh specializes Conv for __half and __nv_bfloat16 (device code).

#ifndef TFSORT_CUDA_NT_CONV_H_
#define TFSORT_CUDA_NT_CONV_H_

#ifndef TFSORT_HD
#ifdef __CUDACC__
#define TFSORT_HD __host__ __device__
#else
#define TFSORT_HD
#endif
#endif

namespace tfsort {
namespace cuda {

// Load: storage -> float (half, bfloat16, float) or double. Store: compute -> storage,
// rounding to nearest even as the CPU kernels' static_cast does.
template <typename T>
struct Conv {
  TFSORT_HD static T Load(T v) { return v; }
  template <typename A>
  TFSORT_HD static T Store(A v) {
    return static_cast<T>(v);
  }
};

}  // namespace cuda
}  // namespace tfsort

#endif  // TFSORT_CUDA_NT_CONV_H_
