// CPU kernels for the isotonic-regression family (see ../ops/isotonic_ops.cc).
// Each kernel validates, allocates, views data as [rows, n] and shards rows across TF's CPU
// worker threads; the per-row math lives in isotonic.h and sort_util.h.

#include <atomic>
#include <cmath>
#include <limits>
#include <memory>
#include <string>
#include <type_traits>
#include <vector>

#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/tensor.h"
#include "tensorflow/core/framework/tensor_shape.h"
#include "tfsort/cc/kernels/aux_stash.h"
#include "tfsort/cc/kernels/isotonic.h"
#include "tfsort/cc/kernels/isotonic_kernel_util.h"
#include "tfsort/cc/kernels/kernel_util.h"
#include "tfsort/cc/kernels/sort_util.h"

namespace tfsort {

using ::tensorflow::DEVICE_CPU;
using ::tensorflow::OpKernel;
using ::tensorflow::OpKernelConstruction;
using ::tensorflow::OpKernelContext;
using ::tensorflow::Tensor;
using ::tensorflow::errors::InvalidArgument;

namespace {

using isokernels::SoftAttrs;
using sort_util::Scratch;

// Estimated cycles to argsort one row (see sort_util.h for the measured per-element costs).
inline int64_t SortCost(int n) {
  return static_cast<int64_t>(n) * (n <= sort_util::kNetworkMax ? 16 : 30) + 100;
}

// The PAV stack for one row of length n (see isotonic::PavScratch); after a pass, block k
// starts at start[k] and has the value pb[k].
template <typename A>
struct PavBuffers {
  PavBuffers() = default;
  void Reserve(int n) {
    pa.reserve(n);
    pb.reserve(n);
    pc.reserve(n);
    start.reserve(n);
  }
  Scratch<A> pa, pb;
  Scratch<int32_t> pc, start;
  isotonic::PavScratch<A> pav() { return {pa.data(), pb.data(), pc.data(), start.data()}; }
};

// Per-shard scratch of the fused ops, reused for every row of the shard.
template <typename A>
struct RowBuffers : PavBuffers<A> {
  void Reserve(int n) {
    PavBuffers<A>::Reserve(n);
    y.reserve(n);
    w.reserve(n);
    sol.reserve(n);
    perm.reserve(n);
  }
  Scratch<A> y, w, sol;
  Scratch<int32_t> perm;
  sort_util::ArgsortScratch sort;
};

// Per-shard scratch of the fused gradient kernels; `row`, `out_row` and `aux_row` only
// without an aux (re-sort).
template <typename T>
struct GradBuffers {
  using A = typename Acc<T>::type;
  void Reserve(int n, bool resort) {
    u.reserve(n);
    s.reserve(n);
    p.reserve(n);
    perm.reserve(n);
    seg.reserve(n);
    if (resort) {
      row.Reserve(n);
      out_row.reserve(n);
      aux_row.reserve(n);
    }
  }
  Scratch<A> u, s, p;
  Scratch<int32_t> perm, seg;
  RowBuffers<A> row;
  Scratch<T> out_row;
  Scratch<int32_t> aux_row;
};

// Rows up to this length use their thread's cached scratch (ShardScratch); longer ones
// allocate their own, so a thread keeps at most ~1 MiB per scratch type.
constexpr int kCachedRowMax = 8192;

// The scratch B for one shard of rows of length n: for short rows, the calling thread's
// cached instance, reused across calls (at small shapes a kernel call is a few
// microseconds of work, and a dozen allocations per call show), else a fresh one. A thread
// runs one shard at a time, so the cached instance is never shared.
template <typename B>
class ShardScratch {
 public:
  template <typename... Args>
  explicit ShardScratch(int n, Args... args) {
    if (n <= kCachedRowMax) {
      static thread_local B cached;
      b_ = &cached;
    } else {
      own_.reset(new B);
      b_ = own_.get();
    }
    b_->Reserve(n, args...);
  }
  B* get() { return b_; }
  B* operator->() { return b_; }

 private:
  B* b_;
  std::unique_ptr<B> own_;
};

// ---------------------------------------------------------------------------------------
// IsotonicL2 / IsotonicKL

// Per-shard scratch of the isotonic ops: the PAV stack, plus reversed copies of y (and w)
// for increasing constraints only.
template <typename T, typename A>
struct IsotonicBuffers : PavBuffers<A> {
  void Reserve(int n, bool reversed, bool kl) {
    PavBuffers<A>::Reserve(n);
    if (reversed) ry.reserve(n);
    if (reversed && kl) rw.reserve(n);
  }
  Scratch<T> ry, rw;
  Scratch<int32_t> row_starts;  // IsotonicL2EagerGrad's re-run PAV (IsotonicRow's starts)
};

// Whether PavL2Blocks may compare block means by cross-multiplying in Acc<T> (products of
// a sum and a count cannot overflow): float rows in double and half rows in float, not
// bfloat16 (float's range) or double rows.
template <typename T>
constexpr bool kCrossMultiply =
    std::is_same<T, float>::value || std::is_same<T, Eigen::half>::value;

// One row of the isotonic ops: the solution (unless out is null), a block id per position
// (unless seg is null) and the block starts in row order, followed by n when there are
// fewer than n blocks (unless starts is null: IsotonicL2Eager's stash). A row with a NaN or
// infinite value gets NaN, -1s and starts[0] = -1.
template <typename T, typename A, bool kKL>
void IsotonicRow(const T* yr, const T* wr, int n, bool inc, IsotonicBuffers<T, A>* buf, T* out,
                 int32_t* seg, int32_t* starts = nullptr) {
  auto non_finite = [&] {
    for (int i = 0; out && i < n; ++i) {
      out[i] = static_cast<T>(std::numeric_limits<float>::quiet_NaN());
    }
    for (int i = 0; seg && i < n; ++i) seg[i] = -1;
    if (starts) starts[0] = -1;
  };
  // L2 rows whose block sums cannot overflow (kCrossMultiply<T>) are checked after PAV
  // instead of before: every entry lands in exactly one block sum, which is then NaN or
  // infinite if the entry is, and the pass terminates on any input. One pass less.
  constexpr bool kCheckAfter = !kKL && kCrossMultiply<T>;
  if (!kCheckAfter && (!RowFinite(yr, n) || (kKL && !RowFinite(wr, n)))) {
    non_finite();
    return;
  }
  // Increasing constraints = decreasing constraints on the reversed row (a reversed copy);
  // decreasing ones run on the row itself.
  const T* py = yr;
  const T* pw = wr;
  if (inc) {
    T* ry = buf->ry.data();
    T* rw = buf->rw.data();
    for (int i = 0; i < n; ++i) ry[i] = yr[n - 1 - i];
    if (kKL)
      for (int i = 0; i < n; ++i) rw[i] = wr[n - 1 - i];
    py = ry;
    pw = rw;
  }
  const int blocks = kKL ? isotonic::PavKLBlocks<A>(py, pw, n, buf->pav())
                         : isotonic::PavL2Blocks<A, kCrossMultiply<T>>(py, n, buf->pav());
  if (kCheckAfter) {
    bool finite = true;
    for (int k = 0; k < blocks; ++k) finite &= std::isfinite(buf->pa[k]);
    if (!finite) {
      non_finite();
      return;
    }
  }
  // Block k covers [start[k], end) of the (possibly reversed) row, value pb[k].
  for (int k = 0; k < blocks; ++k) {
    const int b = buf->start[k];
    const int e = k + 1 < blocks ? buf->start[k + 1] : n;
    if (out) {
      const T v = FromAcc<T>(buf->pb[k]);
      if (inc) {
        for (int i = b; i < e; ++i) out[n - 1 - i] = v;
      } else {
        for (int i = b; i < e; ++i) out[i] = v;
      }
    }
    if (seg) {
      if (inc) {
        for (int i = b; i < e; ++i) seg[n - 1 - i] = blocks - 1 - k;
      } else {
        for (int i = b; i < e; ++i) seg[i] = k;
      }
    }
    if (starts) starts[inc ? blocks - 1 - k : k] = inc ? n - e : b;
  }
  if (starts && blocks < n) starts[blocks] = n;
}

inline AuxStash::Key IsotonicStashKey(bool increasing) {
  return AuxStash::Key{AuxStash::Op::kIsotonicL2, false, !increasing, 0.0};
}

// IsotonicL2 / IsotonicKL, and IsotonicL2Eager (a `flags` attribute and no segments
// output: the segment ids go to the stash when asked to).
template <typename T, bool kKL>
class IsotonicOp : public OpKernel {
 public:
  explicit IsotonicOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
    if (!kKL && ctx->HasAttr("flags")) {
      eager_ = true;
      isokernels::ReadIsotonicFlags(ctx, true, &increasing_, &stash_);
      return;
    }
    OP_REQUIRES_OK(ctx, ctx->GetAttr("increasing", &increasing_));
  }

  void Compute(OpKernelContext* ctx) override {
    using A = typename Acc<T>::type;
    RowShape rs;
    Tensor* sol_t = nullptr;
    Tensor* seg_t = nullptr;
    if (!isokernels::PrepareIsotonic(ctx, kKL, !eager_, &rs, &sol_t, &seg_t) || rs.rows == 0) {
      return;
    }
    const Tensor& y_t = ctx->input(0);
    const int n = rs.n;
    const T* y = y_t.flat<T>().data();
    const T* w = kKL ? ctx->input(1).flat<T>().data() : nullptr;
    T* sol = sol_t->flat<T>().data();
    // IsotonicL2Eager stashes each row's block starts (IsotonicRow) for its gradient op.
    AuxStash::Buffer stashed;
    if (stash_ && AuxStash::Fits(y_t)) stashed.reset(new int32_t[y_t.NumElements()]);
    int32_t* seg = seg_t ? seg_t->flat<int32_t>().data() : nullptr;
    int32_t* starts = stashed.get();
    const bool inc = increasing_;
    ForRows(ctx, rs.rows, 30 * static_cast<int64_t>(n) + 100, [&](int64_t begin, int64_t end) {
      ShardScratch<IsotonicBuffers<T, A>> buf(n, inc, kKL);
      for (int64_t r = begin; r < end; ++r) {
        IsotonicRow<T, A, kKL>(y + r * n, kKL ? w + r * n : nullptr, n, inc, buf.get(),
                               sol + r * n, seg ? seg + r * n : nullptr,
                               starts ? starts + r * n : nullptr);
      }
    });
    if (stashed) AuxStash::Global()->Put(y_t, IsotonicStashKey(inc), std::move(stashed));
  }

 private:
  bool increasing_ = false;
  bool eager_ = false;  // IsotonicL2Eager
  bool stash_ = false;
};

// Block means of one row of grad (the L2 VJP), or NaN for a non-finite row (seg[0] < 0).
template <typename T, typename A>
void L2GradRow(const T* g, const int32_t* seg, int n, A* buf, T* out) {
  if (seg[0] < 0) {
    for (int i = 0; i < n; ++i) out[i] = static_cast<T>(NAN);
    return;
  }
  for (int i = 0; i < n; ++i) buf[i] = static_cast<A>(g[i]);
  isotonic::BlockMean(seg, n, buf);
  for (int i = 0; i < n; ++i) out[i] = FromAcc<T>(buf[i]);
}

// IsotonicL2Grad: block means of grad.
template <typename T>
class IsotonicL2GradOp : public OpKernel {
 public:
  explicit IsotonicL2GradOp(OpKernelConstruction* ctx) : OpKernel(ctx) {}

  void Compute(OpKernelContext* ctx) override {
    using A = typename Acc<T>::type;
    RowShape rs;
    Tensor* out_t = nullptr;
    if (!isokernels::PrepareIsotonicL2Grad(ctx, "segments", &rs, &out_t) || rs.rows == 0) {
      return;
    }
    const int n = rs.n;
    const T* g = ctx->input(0).flat<T>().data();
    const int32_t* seg = ctx->input(1).flat<int32_t>().data();
    T* out = out_t->flat<T>().data();
    ForRows(ctx, rs.rows, 6 * static_cast<int64_t>(n) + 50, [&](int64_t begin, int64_t end) {
      ShardScratch<GradBuffers<T>> buf(n, false);
      for (int64_t r = begin; r < end; ++r) {
        L2GradRow<T, A>(g + r * n, seg + r * n, n, buf->u.data(), out + r * n);
      }
    });
  }
};

// Block means of one row of grad given the block starts IsotonicRow writes, or NaN for a
// non-finite row (starts[0] < 0). Same sums in the same order as L2GradRow.
template <typename T, typename A>
void L2GradFromStarts(const T* g, const int32_t* starts, int n, T* out) {
  if (starts[0] < 0) {
    for (int i = 0; i < n; ++i) out[i] = static_cast<T>(NAN);
    return;
  }
  for (int k = 0, b = 0; b < n; ++k) {
    const int e = k + 1 < n ? starts[k + 1] : n;
    A sum = 0;
    for (int i = b; i < e; ++i) sum += static_cast<A>(g[i]);
    const T mean = FromAcc<T>(sum / static_cast<A>(e - b));
    for (int i = b; i < e; ++i) out[i] = mean;
    b = e;
  }
}

// IsotonicL2EagerGrad: grad, y -> block means of grad, with the block starts IsotonicL2Eager
// stashed for this y, or from a new PAV pass over y when they are gone.
template <typename T>
class IsotonicL2EagerGradOp : public OpKernel {
 public:
  explicit IsotonicL2EagerGradOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
    isokernels::ReadIsotonicFlags(ctx, false, &increasing_, nullptr);
  }

  void Compute(OpKernelContext* ctx) override {
    using A = typename Acc<T>::type;
    RowShape rs;
    Tensor* out_t = nullptr;
    if (!isokernels::PrepareIsotonicL2Grad(ctx, "y", &rs, &out_t) || rs.rows == 0) return;
    const Tensor& y_t = ctx->input(1);
    const int n = rs.n;
    const T* g = ctx->input(0).flat<T>().data();
    const T* y = y_t.flat<T>().data();
    T* out = out_t->flat<T>().data();
    const bool inc = increasing_;
    AuxStash::Buffer stashed;
    AuxStash::Global()->Take(y_t, IsotonicStashKey(inc), &stashed);
    const int32_t* starts = stashed.get();
    const int64_t cost = (starts ? 4 : 34) * static_cast<int64_t>(n) + 50;
    ForRows(ctx, rs.rows, cost, [&](int64_t begin, int64_t end) {
      // Without stashed starts: PAV again, into the scratch's start array.
      std::unique_ptr<ShardScratch<IsotonicBuffers<T, A>>> pav;
      if (!starts) pav.reset(new ShardScratch<IsotonicBuffers<T, A>>(n, inc, false));
      for (int64_t r = begin; r < end; ++r) {
        const int32_t* sr = starts ? starts + r * n : nullptr;
        if (!starts) {
          IsotonicBuffers<T, A>* b = pav->get();
          b->row_starts.reserve(n);
          IsotonicRow<T, A, false>(y + r * n, nullptr, n, inc, b, nullptr, nullptr,
                                   b->row_starts.data());
          sr = b->row_starts.data();
        }
        L2GradFromStarts<T, A>(g + r * n, sr, n, out + r * n);
      }
    });
  }

 private:
  bool increasing_ = false;
};

// IsotonicKLGrad: softmax-weighted spread (or, with adjoint, gather) per block.
template <typename T>
class IsotonicKLGradOp : public OpKernel {
 public:
  explicit IsotonicKLGradOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, ctx->GetAttr("adjoint", &adjoint_));
  }

  void Compute(OpKernelContext* ctx) override {
    using A = typename Acc<T>::type;
    RowShape rs;
    Tensor* gy_t = nullptr;
    Tensor* gw_t = nullptr;
    if (!isokernels::PrepareIsotonicKLGrad(ctx, &rs, &gy_t, &gw_t) || rs.rows == 0) return;
    const Tensor& g_t = ctx->input(0);
    const Tensor& y_t = ctx->input(1);
    const Tensor& w_t = ctx->input(2);
    const Tensor& seg_t = ctx->input(3);
    const int n = rs.n;
    const bool adjoint = adjoint_;
    const T* g = g_t.flat<T>().data();
    const T* y = y_t.flat<T>().data();
    const T* w = w_t.flat<T>().data();
    const int32_t* seg = seg_t.flat<int32_t>().data();
    T* gy = gy_t->flat<T>().data();
    T* gw = gw_t->flat<T>().data();
    ForRows(ctx, rs.rows, 40 * static_cast<int64_t>(n) + 50, [&](int64_t begin, int64_t end) {
      Scratch<A> gb(n), xb(n), ob(n), pb(n);
      for (int64_t r = begin; r < end; ++r) {
        const int64_t o = r * n;
        const int32_t* sr = seg + o;
        if (sr[0] < 0) {
          for (int i = 0; i < n; ++i) gy[o + i] = gw[o + i] = static_cast<T>(NAN);
          continue;
        }
        for (int i = 0; i < n; ++i) gb[i] = static_cast<A>(g[o + i]);
        for (int pass = 0; pass < 2; ++pass) {
          const T* x = pass == 0 ? y : w;
          T* dst = pass == 0 ? gy : gw;
          for (int i = 0; i < n; ++i) xb[i] = static_cast<A>(x[o + i]);
          if (adjoint) {
            isotonic::BlockSoftmaxGather(sr, n, xb.data(), gb.data(), ob.data(), pb.data());
          } else {
            isotonic::BlockSoftmaxSpread(sr, n, xb.data(), gb.data(), ob.data());
          }
          const A sign = pass == 0 ? A(1) : A(-1);
          for (int i = 0; i < n; ++i) dst[o + i] = FromAcc<T>(sign * ob[i]);
        }
      }
    });
  }

 private:
  bool adjoint_ = false;
};

// ---------------------------------------------------------------------------------------
// Fused SoftRank / SoftSort.

// The backward pass needs, per row, the sorting permutation and the PAV blocks. They
// travel in one packed int32 tensor ("aux"): the input index of each sorted position in
// the low 31 bits and a block-start flag in the sign bit; a non-finite row is all -1.
// With num_aux = 0 the forward op has a single output: on the CPU it leaves the aux in
// AuxStash (aux_stash.h) for the gradient op, which re-sorts when the entry is gone (and
// always on the GPU). At small shapes that is cheaper than TF's per-output bookkeeping in
// eager backprop (zero cotangents and trainability checks for every extra output).
constexpr int32_t kInvalidRow = -1;
constexpr uint32_t kBlockStart = 0x80000000u;

// Returns 1 for a valid row, 0 for a non-finite (NaN) row, -1 for corrupt input.
inline int UnpackAux(const int32_t* aux, int n, int32_t* perm, int32_t* seg) {
  if (aux[0] == kInvalidRow) return 0;
  int32_t block = -1;
  for (int i = 0; i < n; ++i) {
    const uint32_t a = static_cast<uint32_t>(aux[i]);
    const int32_t p = static_cast<int32_t>(a & ~kBlockStart);
    if (p >= n) return -1;
    perm[i] = p;
    if ((a & kBlockStart) || i == 0) ++block;
    seg[i] = block;
  }
  return 1;
}

// rank: +1 for ascending ranks; sort: -1 for an ascending sort (see SoftRowBlocks).
template <bool kRank>
inline int SoftSign(const SoftAttrs& at) {
  return kRank ? (at.descending ? -1 : 1) : (at.descending ? 1 : -1);
}

// v / eps for every element of a row, bit for bit. Multiplying by 1 / eps gives the same
// correctly rounded result when eps is a power of two (1 / eps is then exact), and is
// several times cheaper than a division (eps = 1, the default, is the common case).
template <typename A>
struct Divisor {
  explicit Divisor(A eps) : eps(eps), inv(A(1) / eps) {
    int e;
    pow2 = std::frexp(eps, &e) == A(0.5);
  }
  A operator()(A v) const { return pow2 ? v * inv : v / eps; }
  A eps, inv;
  bool pow2;
};

// Sort + PAV for one row: fills pr with the sorting permutation, leaves the sorted PAV
// input in buf (s = buf->w, y = buf->y; see below) and the PAV blocks in buf's PAV scratch
// (block k starts at buf->start[k], its value is buf->pb[k]). Returns the number of
// blocks, or 0 for a row with NaN or +-inf.
template <typename T, bool kRank>
int SoftRowBlocks(const T* xr, int n, const SoftAttrs& at,
                  const Divisor<typename Acc<T>::type>& div, int32_t* pr,
                  RowBuffers<typename Acc<T>::type>* buf) {
  using A = typename Acc<T>::type;
  using K = typename FloatType<T>::type;  // radix-sortable keys
  if (!RowFinite(xr, n)) return 0;
  // rank: z = sign * x / eps sorted descending, sign = +1 for ascending ranks.
  // sort: s = sign * x sorted descending, sign = -1 for an ascending sort.
  const int sign = SoftSign<kRank>(at);
  sort_util::ArgsortDescending<K>([xr](int i) { return xr[i]; }, n, sign, pr, &buf->sort);
  A* s = buf->w.data();
  A* y = buf->y.data();
  // div(v) is v / eps to the last bit (see Divisor).
  if (kRank) {
    for (int i = 0; i < n; ++i) s[i] = div(sign * static_cast<A>(xr[pr[i]]));
    if (at.kl) {
      // r = exp(s - v), v = isotonic_kl(s, log rho).
      for (int i = 0; i < n; ++i) y[i] = std::log(static_cast<A>(n - i));
      return isotonic::PavKLBlocks<A>(s, y, n, buf->pav());
    }
    // r = s - v, v = isotonic_l2(s - rho).
    for (int i = 0; i < n; ++i) y[i] = s[i] - static_cast<A>(n - i);
    return isotonic::PavL2Blocks<A>(y, n, buf->pav());
  }
  for (int i = 0; i < n; ++i) s[i] = sign * static_cast<A>(xr[pr[i]]);
  for (int i = 0; i < n; ++i) y[i] = div(static_cast<A>(n - i));  // rho / eps
  if (at.kl) return isotonic::PavKLBlocks<A>(y, s, n, buf->pav());
  // out = y - v, v = isotonic_l2(y - s); sol is free scratch here.
  A* d = buf->sol.data();
  for (int i = 0; i < n; ++i) d[i] = y[i] - s[i];
  return isotonic::PavL2Blocks<A>(d, n, buf->pav());
}

// Writes one row's soft ranks / sorted values (out) and, when aux is non-null, its packed
// permutation and block starts, walking the blocks SoftRowBlocks left in buf.
template <typename T, bool kRank>
void EmitSoftRow(int blocks, int n, const SoftAttrs& at, const int32_t* pr,
                 RowBuffers<typename Acc<T>::type>* buf, T* out, int32_t* aux) {
  using A = typename Acc<T>::type;
  const A* s = buf->w.data();
  const A* y = buf->y.data();
  const int32_t* start = buf->start.data();
  const A* val = buf->pb.data();
  const bool ascending_sort = SoftSign<kRank>(at) < 0;
  if (blocks == n) {
    // Every block is one element (soft sorts whose sorted gaps are all below 1 / eps, soft
    // ranks whose gaps all exceed eps: the usual case at small eps): the same values as the
    // loop below, without a loop per block.
    if (aux) {
      for (int i = 0; i < n; ++i) {
        aux[i] = static_cast<int32_t>(static_cast<uint32_t>(pr[i]) | kBlockStart);
      }
    }
    if (kRank) {
      if (at.kl) {
        for (int i = 0; i < n; ++i) out[pr[i]] = FromAcc<T>(std::exp(s[i] - val[i]));
      } else {
        for (int i = 0; i < n; ++i) out[pr[i]] = FromAcc<T>(s[i] - val[i]);
      }
    } else if (ascending_sort) {
      for (int i = 0; i < n; ++i) out[i] = FromAcc<T>(val[i] - y[i]);
    } else {
      for (int i = 0; i < n; ++i) out[i] = FromAcc<T>(y[i] - val[i]);
    }
    return;
  }
  for (int k = 0; k < blocks; ++k) {
    const int b = start[k];
    const int e = k + 1 < blocks ? start[k + 1] : n;
    const A v = val[k];
    if (aux) {
      aux[b] = static_cast<int32_t>(static_cast<uint32_t>(pr[b]) | kBlockStart);
      for (int i = b + 1; i < e; ++i) aux[i] = pr[i];
    }
    if (kRank) {
      if (at.kl) {
        for (int i = b; i < e; ++i) out[pr[i]] = FromAcc<T>(std::exp(s[i] - v));
      } else {
        for (int i = b; i < e; ++i) out[pr[i]] = FromAcc<T>(s[i] - v);
      }
    } else if (ascending_sort) {
      // Written as a difference (not sign * (y - v)) so that exact zeros are +0.
      for (int i = b; i < e; ++i) out[i] = FromAcc<T>(v - y[i]);
    } else {
      for (int i = b; i < e; ++i) out[i] = FromAcc<T>(y[i] - v);
    }
  }
}

// The L2 VJP of one row straight from its packed aux (one walk over the blocks, no
// unpacked permutation or block ids): with u the cotangent in sorted order (u_i =
// g[perm_i], or g_i for the sorted output of soft_sort) and m_B its block means,
//   soft_rank:             grad[perm_i] = sign / eps * (u_i - m_B)
//   soft_sort:             grad[perm_i] = m_B
//   soft_sort, adjoint:    out_i = m_B          (u_i = g[perm_i])
// A block's sum starts from its first entry, so one-element blocks return u exactly.
// Returns 1, 0 for a non-finite row (left to the caller), or -1 for an aux index >= n
// (checked before it is used).
template <typename T, bool kRank>
int SoftL2GradRow(const int32_t* aux, const T* g, int n, bool adjoint, int sign,
                  const Divisor<typename Acc<T>::type>& div, GradBuffers<T>* buf, T* o) {
  using A = typename Acc<T>::type;
  if (aux[0] == kInvalidRow) return 0;
  A* u = buf->u.data();
  int32_t* perm = buf->perm.data();
  const bool gather = kRank || adjoint;  // g is indexed by input position
  // Unpacks position i into perm and u; false for an index outside the row.
  auto take = [&](int i) {
    const int32_t p = static_cast<int32_t>(static_cast<uint32_t>(aux[i]) & ~kBlockStart);
    if (p >= n) return false;
    perm[i] = p;
    u[i] = static_cast<A>(g[gather ? p : i]);
    return true;
  };
  for (int b = 0; b < n;) {
    if (!take(b)) return -1;
    A sum = u[b];
    int e = b + 1;
    for (; e < n && !(static_cast<uint32_t>(aux[e]) & kBlockStart); ++e) {
      if (!take(e)) return -1;
      sum += u[e];
    }
    // One-element blocks (the common case at small eps) skip the division.
    const A mean = e - b == 1 ? sum : sum / static_cast<A>(e - b);
    for (int i = b; i < e; ++i) {
      if (kRank) {
        o[perm[i]] = FromAcc<T>(div(sign * (u[i] - mean)));
      } else if (!adjoint) {
        o[perm[i]] = FromAcc<T>(mean);
      } else {
        o[i] = FromAcc<T>(mean);
      }
    }
    b = e;
  }
  return 1;
}

template <bool kRank>
AuxStash::Key StashKey(const SoftAttrs& at, double eps) {
  return AuxStash::Key{kRank ? AuxStash::Op::kSoftRank : AuxStash::Op::kSoftSort, at.kl,
                       at.descending, eps};
}

template <typename T, bool kRank>
class SoftSortRankOp : public OpKernel {
 public:
  explicit SoftSortRankOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
    isokernels::ReadSoftAttrs(ctx, &attrs_);
  }

  void Compute(OpKernelContext* ctx) override {
    using A = typename Acc<T>::type;
    RowShape rs;
    double eps = 1.0;
    Tensor* out_t = nullptr;
    Tensor* aux_t = nullptr;
    if (!isokernels::PrepareSoft(ctx, attrs_, &rs, &eps, &out_t, &aux_t) || rs.rows == 0) {
      return;
    }
    const Tensor& x_t = ctx->input(0);
    const int n = rs.n;
    const T* x = x_t.flat<T>().data();
    T* out = out_t->flat<T>().data();
    // Without an aux output the aux goes to the stash for the gradient kernel (see
    // aux_stash.h), when asked to.
    AuxStash::Buffer stashed;
    if (!aux_t && attrs_.stash && AuxStash::Fits(x_t)) {
      stashed.reset(new int32_t[x_t.NumElements()]);
    }
    int32_t* aux = aux_t ? aux_t->flat<int32_t>().data() : stashed.get();
    const SoftAttrs at = attrs_;
    const Divisor<A> div(static_cast<A>(eps));
    ForRows(ctx, rs.rows, SortCost(n) + 30 * n, [&](int64_t begin, int64_t end) {
      ShardScratch<RowBuffers<A>> buf(n);
      for (int64_t r = begin; r < end; ++r) {
        T* o = out + r * n;
        int32_t* ar = aux ? aux + r * n : nullptr;
        const int blocks =
            SoftRowBlocks<T, kRank>(x + r * n, n, at, div, buf->perm.data(), buf.get());
        if (blocks == 0) {
          for (int i = 0; i < n; ++i) o[i] = static_cast<T>(NAN);
          if (ar)
            for (int i = 0; i < n; ++i) ar[i] = kInvalidRow;
          continue;
        }
        EmitSoftRow<T, kRank>(blocks, n, at, buf->perm.data(), buf.get(), o, ar);
      }
    });
    if (stashed) AuxStash::Global()->Put(x_t, StashKey<kRank>(at, eps), std::move(stashed));
  }

 private:
  SoftAttrs attrs_;
};

template <typename T, bool kRank>
class SoftSortRankGradOp : public OpKernel {
 public:
  explicit SoftSortRankGradOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
    isokernels::ReadSoftAttrs(ctx, &attrs_);
  }

  void Compute(OpKernelContext* ctx) override {
    using A = typename Acc<T>::type;
    RowShape rs;
    double eps = 1.0;
    const Tensor* aux_t = nullptr;
    Tensor* out_t = nullptr;
    if (!isokernels::PrepareSoftGrad(ctx, attrs_, &rs, &eps, &aux_t, &out_t) || rs.rows == 0) {
      return;
    }
    const Tensor& g_t = ctx->input(0);
    const Tensor& x_t = ctx->input(1);
    const int n = rs.n;
    const T* g = g_t.flat<T>().data();
    const T* x = x_t.flat<T>().data();
    // num_aux = 0: the forward kernel's stashed aux if it is still there, else re-sort.
    AuxStash::Buffer stashed;
    if (!aux_t) AuxStash::Global()->Take(x_t, StashKey<kRank>(attrs_, eps), &stashed);
    const int32_t* aux = aux_t ? aux_t->flat<int32_t>().data() : stashed.get();
    T* out = out_t->flat<T>().data();
    const SoftAttrs at = attrs_;
    const bool adjoint = !kRank && at.adjoint;
    const Divisor<A> div(static_cast<A>(eps));
    const int sign = SoftSign<kRank>(at);
    std::atomic<bool> bad_aux{false};
    const int64_t cost = (aux ? 0 : SortCost(n)) + 40 * static_cast<int64_t>(n) + 100;
    ForRows(ctx, rs.rows, cost, [&](int64_t begin, int64_t end) {
      ShardScratch<GradBuffers<T>> scratch(n, !aux);
      Scratch<A>& u = scratch->u;
      Scratch<A>& s = scratch->s;
      Scratch<A>& p = scratch->p;
      Scratch<int32_t>& perm = scratch->perm;
      Scratch<int32_t>& seg = scratch->seg;
      RowBuffers<A>* buf = &scratch->row;
      for (int64_t r = begin; r < end; ++r) {
        const int64_t off = r * n;
        const T* gr = g + off;
        T* o = out + off;
        // A non-finite row (state 0) gets NaN; a corrupt aux (state -1) fails the op.
        auto nan_row = [&](int state) {
          if (state < 0) bad_aux = true;
          for (int i = 0; i < n; ++i) o[i] = static_cast<T>(NAN);
        };
        if (!at.kl) {
          // L2: one walk over the packed aux, re-packed from a new sort when there is none.
          const int32_t* ar = aux ? aux + off : scratch->aux_row.data();
          if (!aux) {
            const int blocks = SoftRowBlocks<T, kRank>(x + off, n, at, div, perm.data(), buf);
            if (blocks == 0) {
              nan_row(0);
              continue;
            }
            EmitSoftRow<T, kRank>(blocks, n, at, perm.data(), buf, scratch->out_row.data(),
                                  scratch->aux_row.data());
          }
          const int state = SoftL2GradRow<T, kRank>(ar, gr, n, adjoint, sign, div,
                                                    scratch.get(), o);
          if (state != 1) nan_row(state);
          continue;
        }
        int state;
        if (aux) {
          state = UnpackAux(aux + off, n, perm.data(), seg.data());
        } else {
          const int blocks = SoftRowBlocks<T, kRank>(x + off, n, at, div, perm.data(), buf);
          if (blocks > 0) isotonic::FillBlocks<A>(blocks, n, buf->pav(), nullptr, seg.data());
          state = blocks > 0 ? 1 : 0;
        }
        if (state != 1) {
          nan_row(state);
          continue;
        }
        // KL: softmax-weighted blocks (isotonic.h), on the unpacked permutation and ids.
        const int32_t* pr = perm.data();
        const int32_t* sr = seg.data();
        if (kRank) {
          // u = P g (sorted order); result = sign/eps * P^T K u.
          for (int i = 0; i < n; ++i) u[i] = static_cast<A>(gr[pr[i]]);
          for (int i = 0; i < n; ++i) s[i] = div(sign * static_cast<A>(x[off + pr[i]]));
          isotonic::KLRankVjp(sr, n, s.data(), u.data(), p.data());
          for (int i = 0; i < n; ++i) o[pr[i]] = FromAcc<T>(div(sign * u[i]));
        } else if (!adjoint) {
          // grad in sorted order -> gradient w.r.t. values.
          for (int i = 0; i < n; ++i) u[i] = static_cast<A>(gr[i]);
          for (int i = 0; i < n; ++i) s[i] = sign * static_cast<A>(x[off + pr[i]]);
          isotonic::BlockSoftmaxSpread(sr, n, s.data(), u.data(), u.data());
          for (int i = 0; i < n; ++i) o[pr[i]] = FromAcc<T>(u[i]);
        } else {
          // Adjoint: tangent of values -> tangent of the sorted output.
          for (int i = 0; i < n; ++i) u[i] = static_cast<A>(gr[pr[i]]);
          for (int i = 0; i < n; ++i) s[i] = sign * static_cast<A>(x[off + pr[i]]);
          isotonic::BlockSoftmaxGather(sr, n, s.data(), u.data(), u.data(), p.data());
          for (int i = 0; i < n; ++i) o[i] = FromAcc<T>(u[i]);
        }
      }
    });
    OP_REQUIRES(ctx, !bad_aux,
                InvalidArgument("aux holds a permutation index outside [0, ", n,
                                "): it must come from the matching forward op"));
  }

 private:
  SoftAttrs attrs_;
};

}  // namespace

#define TFSORT_REGISTER_SOFT_CPU(NAME, T, ...) \
  REGISTER_KERNEL_BUILDER(Name(NAME).Device(DEVICE_CPU).TypeConstraint<T>("T"), __VA_ARGS__)

#define TFSORT_REGISTER_ISOTONIC(T)                                                        \
  REGISTER_KERNEL_BUILDER(                                                                 \
      Name("TFSort>IsotonicL2").Device(DEVICE_CPU).TypeConstraint<T>("T"),                 \
      IsotonicOp<T, false>);                                                               \
  REGISTER_KERNEL_BUILDER(                                                                 \
      Name("TFSort>IsotonicKL").Device(DEVICE_CPU).TypeConstraint<T>("T"),                 \
      IsotonicOp<T, true>);                                                                \
  REGISTER_KERNEL_BUILDER(                                                                 \
      Name("TFSort>IsotonicL2Grad").Device(DEVICE_CPU).TypeConstraint<T>("T"),             \
      IsotonicL2GradOp<T>);                                                                \
  TFSORT_REGISTER_SOFT_CPU("TFSort>IsotonicL2Eager", T, IsotonicOp<T, false>);            \
  TFSORT_REGISTER_SOFT_CPU("TFSort>IsotonicL2EagerGrad", T, IsotonicL2EagerGradOp<T>);    \
  REGISTER_KERNEL_BUILDER(                                                                 \
      Name("TFSort>IsotonicKLGrad").Device(DEVICE_CPU).TypeConstraint<T>("T"),             \
      IsotonicKLGradOp<T>);                                                                \
  TFSORT_REGISTER_SOFT_CPU("TFSort>SoftRank", T, SoftSortRankOp<T, true>);                \
  TFSORT_REGISTER_SOFT_CPU("TFSort>SoftSort", T, SoftSortRankOp<T, false>);               \
  TFSORT_REGISTER_SOFT_CPU("TFSort>SoftRankGrad", T, SoftSortRankGradOp<T, true>);        \
  TFSORT_REGISTER_SOFT_CPU("TFSort>SoftSortGrad", T, SoftSortRankGradOp<T, false>);       \
  TFSORT_REGISTER_SOFT_CPU("TFSort>SoftRankEager", T, SoftSortRankOp<T, true>);           \
  TFSORT_REGISTER_SOFT_CPU("TFSort>SoftSortEager", T, SoftSortRankOp<T, false>);          \
  TFSORT_REGISTER_SOFT_CPU("TFSort>SoftRankEagerGrad", T, SoftSortRankGradOp<T, true>);   \
  TFSORT_REGISTER_SOFT_CPU("TFSort>SoftSortEagerGrad", T, SoftSortRankGradOp<T, false>);

TFSORT_REGISTER_ISOTONIC(Eigen::half)
TFSORT_REGISTER_ISOTONIC(Eigen::bfloat16)
TFSORT_REGISTER_ISOTONIC(float)
TFSORT_REGISTER_ISOTONIC(double)

#undef TFSORT_REGISTER_ISOTONIC
#undef TFSORT_REGISTER_SOFT_CPU

}  // namespace tfsort
