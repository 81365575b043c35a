// The sigmoid top-k launchers' cooperative phases as host+device (TFSORT_HD) functions: one
// row is handled by a group of `nth` threads (a warp or a block); thread `tid` owns elements
// tid, tid + nth, ... Each phase returns the thread's partial sums, the kernel reduces them
// over the group and every thread then runs topk.h's SigmoidSolver on the same totals, so the
// threshold iteration is the CPU's. tests/test_cuda_host_logic_nt.py runs these phases on the
// host for every thread index and compares with the CPU op. TF-free, CUDA-header-free.

#ifndef TFSORT_CUDA_TOPK_STEPS_H_
#define TFSORT_CUDA_TOPK_STEPS_H_

#include <cmath>
#include <cstdint>

#include "tfsort/cc/kernels/topk.h"
#include "tfsort/cuda/nt_conv.h"

namespace tfsort {
namespace cuda {

// Min, max and sum of a row (as doubles) and whether every entry is finite.
struct RowStats {
  double xmin, xmax, sum;
  int finite;
};

TFSORT_HD inline RowStats CombineStats(const RowStats& a, const RowStats& b) {
  RowStats r;
  r.xmin = a.xmin < b.xmin ? a.xmin : b.xmin;
  r.xmax = a.xmax > b.xmax ? a.xmax : b.xmax;
  r.sum = a.sum + b.sum;
  r.finite = a.finite & b.finite;
  return r;
}

template <typename T>
TFSORT_HD inline RowStats PartialStats(const T* x, int64_t n, int tid, int nth) {
  RowStats s{HUGE_VAL, -HUGE_VAL, 0.0, 1};
  for (int64_t i = tid; i < n; i += nth) {
    const double xi = static_cast<double>(Conv<T>::Load(x[i]));
    // Finiteness as the CPU checks it: half/bfloat16/float as float.
    if (!std::isfinite(xi)) s.finite = 0;
    s.xmin = xi < s.xmin ? xi : s.xmin;
    s.xmax = xi > s.xmax ? xi : s.xmax;
    s.sum += xi;
  }
  return s;
}

// Sums of one evaluation at threshold t = th + tl: sum p, sum v, sum (1 - p).
struct EvalSums {
  double sp, sv, sq;
};

TFSORT_HD inline EvalSums CombineEval(const EvalSums& a, const EvalSums& b) {
  return EvalSums{a.sp + b.sp, a.sv + b.sv, a.sq + b.sq};
}

template <typename T, typename C>
TFSORT_HD inline EvalSums PartialEval(const T* x, int64_t n, int tid, int nth, C th, C tl,
                                      C ie) {
  EvalSums s{0.0, 0.0, 0.0};
  for (int64_t i = tid; i < n; i += nth) {
    C p, c, v;
    topk::SigmoidElem(static_cast<C>(Conv<T>::Load(x[i])), th, tl, ie, &p, &c, &v);
    s.sp += static_cast<double>(p);
    s.sq += static_cast<double>(c);
    s.sv += static_cast<double>(v);
  }
  return s;
}

// The mask at the solver's final threshold: p(t), or p(t) + v(t) dt clipped to [0, 1] after
// a converged Newton step (SigmoidSolver::kFirstOrder), stored as T through C.
template <typename T, typename C>
TFSORT_HD inline void WriteMask(const T* x, T* out, int64_t n, int tid, int nth, C th, C tl,
                                C ie, bool first_order, C cdt) {
  for (int64_t i = tid; i < n; i += nth) {
    C p, c, v;
    topk::SigmoidElem(static_cast<C>(Conv<T>::Load(x[i])), th, tl, ie, &p, &c, &v);
    if (first_order) {
      const C pi = p + v * cdt;
      p = pi < C(0) ? C(0) : (pi > C(1) ? C(1) : pi);
    }
    out[i] = Conv<T>::Store(p);
  }
}

template <typename T>
TFSORT_HD inline void WriteNan(T* out, int64_t n, int tid, int nth) {
  for (int64_t i = tid; i < n; i += nth) out[i] = Conv<T>::Store(static_cast<float>(NAN));
}

// SigmoidTopKGrad: sums of v = p (1 - p) and v g (in double, as topk::SigmoidTopKVjp).
struct VjpSums {
  double sv, svg;
};

TFSORT_HD inline VjpSums CombineVjp(const VjpSums& a, const VjpSums& b) {
  return VjpSums{a.sv + b.sv, a.svg + b.svg};
}

template <typename T>
TFSORT_HD inline VjpSums PartialVjp(const T* p, const T* g, int64_t n, int tid, int nth) {
  VjpSums s{0.0, 0.0};
  for (int64_t i = tid; i < n; i += nth) {
    const double pi = static_cast<double>(Conv<T>::Load(p[i]));
    const double vi = pi * (1.0 - pi);
    s.sv += vi;
    s.svg += vi * static_cast<double>(Conv<T>::Load(g[i]));
  }
  return s;
}

// out = v (g - svg / sv) / eps (0 where sv == 0), rounded through C as the CPU kernel does.
// out may alias g (each thread reads and writes only its own elements).
template <typename T, typename C>
TFSORT_HD inline void WriteVjp(const T* p, const T* g, T* out, int64_t n, int tid, int nth,
                               const VjpSums& s, double inv_eps) {
  const double c = s.sv > 0.0 ? s.svg / s.sv : 0.0;
  for (int64_t i = tid; i < n; i += nth) {
    const double pi = static_cast<double>(Conv<T>::Load(p[i]));
    const double vi = pi * (1.0 - pi);
    const double gi = static_cast<double>(Conv<T>::Load(g[i]));
    out[i] = Conv<T>::Store(static_cast<C>(vi * inv_eps * (gi - c)));
  }
}

}  // namespace cuda
}  // namespace tfsort

#endif  // TFSORT_CUDA_TOPK_STEPS_H_
