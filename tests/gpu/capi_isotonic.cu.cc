// extern "C" wrappers of the isotonic launchers for the ctypes harness (tests/gpu).
// Names: tfsort_h_<kernel>_<f16|bf16|f32|f64>, returning the cudaError_t as int, and
// tfsort_h_<kernel>_workspace_<dtype> returning the workspace size in bytes. Pointers are
// device pointers (torch tensors); the caller provides the workspace and the stream.

#include "tfsort/cuda/isotonic_launch.h"

namespace tc = ::tfsort::cuda;

#define TFSORT_CAPI(SFX, T)                                                                 \
  extern "C" size_t tfsort_h_isotonic_workspace_##SFX(int64_t batch, int64_t n, int kl) {  \
    return tc::IsotonicWorkspaceBytes<T>(batch, n, kl != 0);                                \
  }                                                                                         \
  extern "C" int tfsort_h_isotonic_##SFX(const void* y, const void* w, void* sol,           \
                                         int32_t* seg, int64_t batch, int64_t n, int kl,    \
                                         int increasing, void* ws, size_t ws_bytes,         \
                                         void* stream) {                                    \
    return static_cast<int>(tc::LaunchIsotonic<T>(                                          \
        static_cast<const T*>(y), static_cast<const T*>(w), static_cast<T*>(sol), seg,      \
        batch, n, kl != 0, increasing != 0, ws, ws_bytes,                                   \
        static_cast<cudaStream_t>(stream)));                                                \
  }                                                                                         \
  extern "C" size_t tfsort_h_isotonic_l2_grad_workspace_##SFX(int64_t batch, int64_t n) {  \
    return tc::IsotonicL2GradWorkspaceBytes<T>(batch, n);                                   \
  }                                                                                         \
  extern "C" int tfsort_h_isotonic_l2_grad_##SFX(const void* g, const int32_t* seg,         \
                                                 void* out, int64_t batch, int64_t n,       \
                                                 void* ws, size_t ws_bytes, void* stream) { \
    return static_cast<int>(tc::LaunchIsotonicL2Grad<T>(                                    \
        static_cast<const T*>(g), seg, static_cast<T*>(out), batch, n, ws, ws_bytes,        \
        static_cast<cudaStream_t>(stream)));                                                \
  }                                                                                         \
  extern "C" size_t tfsort_h_isotonic_kl_grad_workspace_##SFX(int64_t batch, int64_t n) {  \
    return tc::IsotonicKLGradWorkspaceBytes<T>(batch, n);                                   \
  }                                                                                         \
  extern "C" int tfsort_h_isotonic_kl_grad_##SFX(                                           \
      const void* g, const void* y, const void* w, const int32_t* seg, void* gy, void* gw,  \
      int64_t batch, int64_t n, int adjoint, void* ws, size_t ws_bytes, void* stream) {     \
    return static_cast<int>(tc::LaunchIsotonicKLGrad<T>(                                    \
        static_cast<const T*>(g), static_cast<const T*>(y), static_cast<const T*>(w), seg,  \
        static_cast<T*>(gy), static_cast<T*>(gw), batch, n, adjoint != 0, ws, ws_bytes,     \
        static_cast<cudaStream_t>(stream)));                                                \
  }                                                                                         \
  extern "C" size_t tfsort_h_soft_sort_rank_workspace_##SFX(int64_t batch, int64_t n) {    \
    return tc::SoftSortRankWorkspaceBytes<T>(batch, n);                                     \
  }                                                                                         \
  extern "C" int tfsort_h_soft_sort_rank_##SFX(const void* x, double eps, void* out,        \
                                               int32_t* aux, int64_t batch, int64_t n,      \
                                               int rank, int kl, int descending, void* ws,  \
                                               size_t ws_bytes, void* stream) {             \
    return static_cast<int>(tc::LaunchSoftSortRank<T>(                                      \
        static_cast<const T*>(x), eps, static_cast<T*>(out), aux, batch, n, rank != 0,      \
        kl != 0, descending != 0, ws, ws_bytes, static_cast<cudaStream_t>(stream)));        \
  }                                                                                         \
  extern "C" size_t tfsort_h_soft_sort_rank_grad_workspace_##SFX(int64_t batch, int64_t n, \
                                                                 int have_aux) {            \
    return tc::SoftSortRankGradWorkspaceBytes<T>(batch, n, have_aux != 0);                  \
  }                                                                                         \
  extern "C" int tfsort_h_soft_sort_rank_grad_##SFX(                                        \
      const void* g, const void* x, double eps, const int32_t* aux, void* out,              \
      int64_t batch, int64_t n, int rank, int kl, int descending, int adjoint, void* ws,    \
      size_t ws_bytes, void* stream) {                                                      \
    return static_cast<int>(tc::LaunchSoftSortRankGrad<T>(                                  \
        static_cast<const T*>(g), static_cast<const T*>(x), eps, aux, static_cast<T*>(out), \
        batch, n, rank != 0, kl != 0, descending != 0, adjoint != 0, ws, ws_bytes,          \
        static_cast<cudaStream_t>(stream)));                                                \
  }

TFSORT_CAPI(f16, __half)
TFSORT_CAPI(bf16, __nv_bfloat16)
TFSORT_CAPI(f32, float)
TFSORT_CAPI(f64, double)

#undef TFSORT_CAPI
