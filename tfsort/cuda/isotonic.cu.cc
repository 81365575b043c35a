// CUDA kernels and launchers of the isotonic family (see isotonic_launch.h). No
// TensorFlow headers. The per-row math is isotonic_rows.h on top of the CPU's isotonic.h.
//
// Strategies by shape:
//  * many short rows: one thread per row, serial PAV (the CPU code);
//  * long rows, or few mid-length rows (IsotonicBlockPerRow in isotonic_launch.h): one
//    thread block per row, block-parallel PAV (isotonic_rows.h ParPav* phases): each
//    thread pools its chunk, then chunk groups are joined pairwise.
//  * sorting for the fused ops: cub::DeviceRadixSort for one row, cub::DeviceSegmentedSort
//    (stable) otherwise, on order-preserving integer keys with the index as payload, so
//    ties keep index order like the CPU's sort.
//  * gradients: per-PAV-block reductions and an elementwise map; one thread per row for
//    short rows (isotonic.h), one block per long row (isotonic_rows.h Seg* phases).

#include <cub/device/device_radix_sort.cuh>
#include <cub/device/device_segmented_sort.cuh>

#include "tfsort/cuda/cuda_common.h"
#include "tfsort/cuda/isotonic_launch.h"
#include "tfsort/cuda/isotonic_rows.h"

namespace tfsort {
namespace cuda {
namespace {

namespace ir = ::tfsort::isotonic_rows;

constexpr int kRowThreads = 128;    // threads per block, one-thread-per-row kernels
constexpr int kBlockThreads = 256;  // threads per block, one-block-per-row kernels
constexpr int kMinChunk = 16;       // block-parallel PAV: fewest positions per thread

template <typename T>
struct DevCvt {
  using A = typename AccT<T>::type;
  static TFSORT_HD A Load(T v) { return ToAcc<A, T>(v); }
  static TFSORT_HD T Store(A v) { return FromAcc<T, A>(v); }
  static TFSORT_HD bool Finite(T v) { return IsFiniteValue<T>(v); }
  static TFSORT_HD T NaN() { return QuietNaN<T>(); }
};

bool UseBlockPerRow(int64_t batch, int64_t n) { return IsotonicBlockPerRow(batch, n); }

__host__ __device__ inline int ChunksFor(int n) {
  const int c = (n + kMinChunk - 1) / kMinChunk;
  return c < 1 ? 1 : (c > kBlockThreads ? kBlockThreads : c);
}

unsigned int RowBlocks(int64_t batch) {
  const int64_t kMax = 1 << 16;
  return static_cast<unsigned int>(batch < kMax ? batch : kMax);
}

// Per-element scratch shared by every kernel of this file (some use only part of it).
template <typename A>
struct Work {
  A* f[8];        // accumulator arrays
  int32_t* i[6];  // index arrays
};

template <typename A>
Work<A> CarveWork(WorkspaceCarver* c, int64_t elems) {
  Work<A> w;
  for (auto& p : w.f) p = c->Take<A>(elems);
  for (auto& p : w.i) p = c->Take<int32_t>(elems);
  return w;
}

template <typename A>
__device__ inline ir::ParPav<A> ParAt(const Work<A>& w, int64_t off) {
  return {w.f[3] + off, w.f[4] + off, w.i[0] + off, w.i[1] + off, w.i[2] + off,
          w.i[3] + off};
}

// Block-parallel PAV of y (and w) into sol/seg; called by every thread of the block.
template <typename A, bool kKL>
__device__ void BlockPav(const A* y, const A* w, int n, A* sol, int32_t* seg,
                         ir::ParPav<A> s) {
  __shared__ int32_t count[kBlockThreads];
  __shared__ int32_t last[kBlockThreads];
  const int chunks = ChunksFor(n);
  const int t = threadIdx.x;
  if (t < chunks) ir::ParPavChunk<A, kKL>(y, w, n, t, chunks, s);
  __syncthreads();
  for (int g = 1; g < chunks; g *= 2) {
    const int pairs = ir::ParPavPairs(chunks, g);
    for (int j = t; j < pairs; j += blockDim.x) ir::ParPavMergePair<A, kKL>(n, j, g, chunks, s);
    __syncthreads();
  }
  if (t < chunks) ir::ParPavCountStarts<A>(n, t, chunks, s, count, last);
  __syncthreads();
  if (t == 0) ir::ParPavScan(chunks, count, last);
  __syncthreads();
  if (t < chunks) ir::ParPavEmit<A, kKL>(n, t, chunks, s, count, last, sol, seg);
  __syncthreads();
}

// ---------------------------------------------------------------------------------------
// IsotonicL2 / IsotonicKL

template <typename T, bool kKL>
__global__ void IsotonicRowKernel(const T* y, const T* w, T* out, int32_t* seg,
                                  int64_t batch, int n, bool inc, Work<typename AccT<T>::type> ws) {
  using A = typename AccT<T>::type;
  for (int64_t r = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; r < batch;
       r += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t o = r * n;
    ir::RowScratch<A> b{ws.f[0] + o, ws.f[1] + o, ws.f[2] + o, ws.i[4] + o,
                        {ws.f[3] + o, ws.f[4] + o, ws.i[0] + o, ws.i[1] + o}};
    ir::IsotonicRow<T, A, kKL, DevCvt<T>>(y + o, kKL ? w + o : nullptr, n, inc, out + o,
                                          seg + o, b);
  }
}

template <typename T, bool kKL>
__global__ void IsotonicBlockKernel(const T* y, const T* w, T* out, int32_t* seg,
                                    int64_t batch, int n, bool inc,
                                    Work<typename AccT<T>::type> ws) {
  using A = typename AccT<T>::type;
  using Cvt = DevCvt<T>;
  for (int64_t r = blockIdx.x; r < batch; r += gridDim.x) {
    const int64_t o = r * n;
    const T* yr = y + o;
    const T* wr = kKL ? w + o : nullptr;
    A* yb = ws.f[0] + o;
    A* wb = ws.f[1] + o;
    A* sol = ws.f[2] + o;
    int32_t* sb = ws.i[4] + o;
    int bad = 0;
    for (int i = threadIdx.x; i < n; i += blockDim.x) {
      if (!Cvt::Finite(yr[i]) || (kKL && !Cvt::Finite(wr[i]))) bad = 1;
    }
    if (__syncthreads_or(bad)) {
      for (int i = threadIdx.x; i < n; i += blockDim.x) {
        out[o + i] = Cvt::NaN();
        seg[o + i] = -1;
      }
      continue;  // uniform across the block
    }
    for (int i = threadIdx.x; i < n; i += blockDim.x) {
      const int j = inc ? n - 1 - i : i;
      yb[i] = Cvt::Load(yr[j]);
      if (kKL) wb[i] = Cvt::Load(wr[j]);
    }
    __syncthreads();
    BlockPav<A, kKL>(yb, wb, n, sol, sb, ParAt(ws, o));
    const int blocks = sb[n - 1] + 1;
    for (int i = threadIdx.x; i < n; i += blockDim.x) {
      const int j = inc ? n - 1 - i : i;
      out[o + j] = Cvt::Store(sol[i]);
      seg[o + j] = inc ? blocks - 1 - sb[i] : sb[i];
    }
    __syncthreads();
  }
}

// Block-parallel segmented VJP of one row (isotonic_rows.h Seg* phases) into res; called
// by every thread of the block. Uses ws arrays f[3..7] and i[0] at offset o for the
// per-piece statistics.
template <typename A>
__device__ void BlockSeg(int n, int mode, const int32_t* start, const A* x, const A* u,
                         const Work<A>& ws, int64_t o, A* res) {
  __shared__ int32_t last[kBlockThreads];
  __shared__ int32_t open[kBlockThreads];
  const ir::SegStats<A> s{ws.f[3] + o, ws.f[4] + o, ws.f[5] + o,
                          ws.f[6] + o, ws.f[7] + o, ws.i[0] + o};
  const int chunks = ChunksFor(n);
  const int t = threadIdx.x;
  if (t < chunks) ir::SegChunk<A>(n, t, chunks, start, x, u, s, last);
  __syncthreads();
  if (t == 0) ir::SegJoin<A>(n, chunks, start, s, last, open);
  __syncthreads();
  if (t < chunks) ir::SegEmit<A>(n, t, chunks, mode, start, x, u, s, open, res);
  __syncthreads();
}

// ---------------------------------------------------------------------------------------
// Gradients of the plain isotonic ops: one thread per short row, one block per long row.

// Block-per-row IsotonicL2Grad (kKL = false) / IsotonicKLGrad (kKL = true). Run starts come
// from changes of the segment id, as isotonic::RunEnd walks them. out may alias g.
template <typename T, bool kKL>
__global__ void IsotonicGradBlockKernel(const T* g, const T* y, const T* w, const int32_t* seg,
                                        T* gy, T* gw, int64_t batch, int n, bool adjoint,
                                        Work<typename AccT<T>::type> ws) {
  using A = typename AccT<T>::type;
  using Cvt = DevCvt<T>;
  for (int64_t r = blockIdx.x; r < batch; r += gridDim.x) {
    const int64_t o = r * n;
    const int32_t* sr = seg + o;
    if (sr[0] < 0) {  // the same for every thread of the block
      for (int i = threadIdx.x; i < n; i += blockDim.x) {
        gy[o + i] = Cvt::NaN();
        if (kKL) gw[o + i] = Cvt::NaN();
      }
      continue;
    }
    int32_t* start = ws.i[1] + o;
    A* xs = ws.f[0] + o;
    A* us = ws.f[1] + o;
    A* res = ws.f[2] + o;
    for (int i = threadIdx.x; i < n; i += blockDim.x) {
      start[i] = i == 0 || sr[i] != sr[i - 1];
      us[i] = Cvt::Load(g[o + i]);
    }
    __syncthreads();
    if (!kKL) {
      BlockSeg<A>(n, ir::kSegMean, start, nullptr, us, ws, o, res);
      for (int i = threadIdx.x; i < n; i += blockDim.x) gy[o + i] = Cvt::Store(res[i]);
      __syncthreads();
      continue;
    }
    const int mode = adjoint ? ir::kSegGather : ir::kSegSpread;
    for (int pass = 0; pass < 2; ++pass) {
      const T* x = pass == 0 ? y : w;
      for (int i = threadIdx.x; i < n; i += blockDim.x) xs[i] = Cvt::Load(x[o + i]);
      __syncthreads();
      BlockSeg<A>(n, mode, start, xs, us, ws, o, res);
      T* dst = pass == 0 ? gy : gw;
      const A sign = pass == 0 ? A(1) : A(-1);
      for (int i = threadIdx.x; i < n; i += blockDim.x) dst[o + i] = Cvt::Store(sign * res[i]);
      __syncthreads();
    }
  }
}

template <typename T>
__global__ void IsotonicL2GradKernel(const T* g, const int32_t* seg, T* out, int64_t batch,
                                     int n, Work<typename AccT<T>::type> ws) {
  using A = typename AccT<T>::type;
  for (int64_t r = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; r < batch;
       r += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t o = r * n;
    ir::IsotonicL2GradRow<T, A, DevCvt<T>>(g + o, seg + o, n, out + o, ws.f[0] + o);
  }
}

template <typename T>
__global__ void IsotonicKLGradKernel(const T* g, const T* y, const T* w, const int32_t* seg,
                                     T* gy, T* gw, int64_t batch, int n, bool adjoint,
                                     Work<typename AccT<T>::type> ws) {
  using A = typename AccT<T>::type;
  for (int64_t r = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; r < batch;
       r += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t o = r * n;
    ir::IsotonicKLGradRow<T, A, DevCvt<T>>(g + o, y + o, w + o, seg + o, n, adjoint, gy + o,
                                           gw + o, ws.f[0] + o, ws.f[1] + o, ws.f[2] + o,
                                           ws.f[3] + o);
  }
}

// ---------------------------------------------------------------------------------------
// Fused SoftRank / SoftSort.

template <typename T>
using SortKey = typename std::conditional<sizeof(typename KeyFloat<T>::type) == 4, uint32_t,
                                          uint64_t>::type;

// keys[r, i] = order-preserving key of -sign * x (ascending keys = descending sign * x),
// vals[r, i] = i; offsets[r] = r * n.
template <typename T>
__global__ void SortKeysKernel(const T* x, int64_t batch, int n, int sign, SortKey<T>* keys,
                               int32_t* vals, int64_t* offsets) {
  using K = typename KeyFloat<T>::type;
  const int64_t total = batch * n;
  for (int64_t k = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; k < total;
       k += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const K v = ToAcc<K, T>(x[k]);
    keys[k] = ir::AscendingKey(sign > 0 ? -v : v);
    const int64_t r = k / n;
    const int i = static_cast<int>(k - r * n);
    vals[k] = i;
    if (i == 0) offsets[r] = k;
    if (k == total - 1) offsets[batch] = total;
  }
}

// Scratch of the fused ops: sort buffers, CUB temporary storage and the per-row arrays.
template <typename T>
struct SoftWork {
  using A = typename AccT<T>::type;
  SortKey<T>* keys_in;
  SortKey<T>* keys_out;
  int32_t* idx_in;
  int32_t* perm;
  int64_t* offsets;
  void* cub_temp;
  size_t cub_bytes;
  Work<A> w;
};

template <typename T>
size_t CubSortBytes(int64_t batch, int64_t n) {
  size_t bytes = 0;
  if (batch == 1) {
    cub::DeviceRadixSort::SortPairs(nullptr, bytes, static_cast<const SortKey<T>*>(nullptr),
                                    static_cast<SortKey<T>*>(nullptr),
                                    static_cast<const int32_t*>(nullptr),
                                    static_cast<int32_t*>(nullptr), n);
  } else {
    cub::DeviceSegmentedSort::StableSortPairs(
        nullptr, bytes, static_cast<const SortKey<T>*>(nullptr),
        static_cast<SortKey<T>*>(nullptr), static_cast<const int32_t*>(nullptr),
        static_cast<int32_t*>(nullptr), batch * n, batch,
        static_cast<const int64_t*>(nullptr), static_cast<const int64_t*>(nullptr));
  }
  return bytes;
}

template <typename T>
SoftWork<T> CarveSoft(void* base, int64_t batch, int64_t n, size_t* total) {
  using A = typename AccT<T>::type;
  WorkspaceCarver c(base);
  SoftWork<T> s;
  const int64_t elems = batch * n;
  s.keys_in = c.Take<SortKey<T>>(elems);
  s.keys_out = c.Take<SortKey<T>>(elems);
  s.idx_in = c.Take<int32_t>(elems);
  s.perm = c.Take<int32_t>(elems);
  s.offsets = c.Take<int64_t>(batch + 1);
  s.w = CarveWork<A>(&c, elems);
  s.cub_bytes = base ? 0 : CubSortBytes<T>(batch, n);
  if (total) {
    s.cub_temp = c.Take<char>(s.cub_bytes);
    *total = c.bytes();
  } else {
    s.cub_temp = c.Take<char>(0);
  }
  return s;
}

// Sorts every row: perm[r, i] = input index of sorted position i (descending sign * x,
// ties by index).
template <typename T>
cudaError_t SortRows(const T* x, int64_t batch, int64_t n, int sign, SoftWork<T>* s,
                     size_t cub_bytes, cudaStream_t stream) {
  const int64_t total = batch * n;
  SortKeysKernel<T><<<GridFor(total, 256), 256, 0, stream>>>(
      x, batch, static_cast<int>(n), sign, s->keys_in, s->idx_in, s->offsets);
  TFSORT_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  constexpr int kBits = static_cast<int>(sizeof(SortKey<T>) * 8);
  if (batch == 1) {
    return cub::DeviceRadixSort::SortPairs(s->cub_temp, cub_bytes, s->keys_in, s->keys_out,
                                           s->idx_in, s->perm, n, 0, kBits, stream);
  }
  return cub::DeviceSegmentedSort::StableSortPairs(
      s->cub_temp, cub_bytes, s->keys_in, s->keys_out, s->idx_in, s->perm, total, batch,
      s->offsets, s->offsets + 1, stream);
}

template <typename A>
__device__ inline ir::SoftScratch<A> SoftAt(const Work<A>& w, int64_t off) {
  return {w.f[0] + off, w.f[1] + off, w.f[2] + off, w.f[5] + off};
}

// One thread per row. out / aux may be null; seg (sorted order) always written; seg[0] is
// set to -1 for a non-finite row.
template <typename T, bool kRank>
__global__ void SoftRowKernel(const T* x, const int32_t* perm, int64_t batch, int n, bool kl,
                              bool descending, typename AccT<T>::type eps, T* out,
                              int32_t* aux, Work<typename AccT<T>::type> ws) {
  using A = typename AccT<T>::type;
  for (int64_t r = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; r < batch;
       r += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t o = r * n;
    int32_t* sr = ws.i[4] + o;
    const bool ok = ir::SoftRow<T, A, kRank, DevCvt<T>>(
        x + o, perm + o, n, kl, descending, eps, out ? out + o : nullptr,
        aux ? aux + o : nullptr, sr, SoftAt(ws, o),
        {ws.f[3] + o, ws.f[4] + o, ws.i[0] + o, ws.i[1] + o});
    if (!ok) sr[0] = -1;
  }
}

// One block per row, block-parallel PAV; same contract as SoftRowKernel.
template <typename T, bool kRank, bool kKL>
__global__ void SoftBlockKernel(const T* x, const int32_t* perm, int64_t batch, int n,
                                bool descending, typename AccT<T>::type eps, T* out,
                                int32_t* aux, Work<typename AccT<T>::type> ws) {
  using A = typename AccT<T>::type;
  using Cvt = DevCvt<T>;
  const int sign = ir::SoftSign(kRank, descending);
  for (int64_t r = blockIdx.x; r < batch; r += gridDim.x) {
    const int64_t o = r * n;
    const T* xr = x + o;
    const int32_t* pr = perm + o;
    int32_t* sr = ws.i[4] + o;
    const ir::SoftScratch<A> b = SoftAt(ws, o);
    int bad = 0;
    for (int i = threadIdx.x; i < n; i += blockDim.x) {
      if (!Cvt::Finite(xr[i])) bad = 1;
    }
    if (__syncthreads_or(bad)) {
      for (int i = threadIdx.x; i < n; i += blockDim.x) {
        if (out) out[o + i] = Cvt::NaN();
        if (aux) aux[o + i] = ir::kInvalidRow;
      }
      if (threadIdx.x == 0) sr[0] = -1;
      continue;  // uniform across the block
    }
    for (int i = threadIdx.x; i < n; i += blockDim.x) {
      ir::SoftPrep<A, kRank>(i, n, kKL, sign, eps, Cvt::Load(xr[pr[i]]), b);
    }
    __syncthreads();
    BlockPav<A, kKL>(ir::SoftPavY<A, kRank>(kKL, b), ir::SoftPavW<A, kRank>(kKL, b), n, b.v,
                     sr, ParAt(ws, o));
    for (int i = threadIdx.x; i < n; i += blockDim.x) {
      if (out) out[o + (kRank ? pr[i] : i)] = Cvt::Store(ir::SoftValue<A, kRank>(i, kKL, sign, b));
      if (aux) aux[o + i] = ir::PackAuxAt(pr, sr, i);
    }
    __syncthreads();
  }
}

template <typename T>
cudaError_t SoftForward(const T* x, double eps, T* out, int32_t* aux, int64_t batch,
                        int64_t n, bool rank, bool kl, bool descending, SoftWork<T>* s,
                        size_t cub_bytes, cudaStream_t stream) {
  using A = typename AccT<T>::type;
  const int sign = ir::SoftSign(rank, descending);
  TFSORT_CUDA_RETURN_IF_ERROR(SortRows<T>(x, batch, n, sign, s, cub_bytes, stream));
  const int ni = static_cast<int>(n);
  const A e = static_cast<A>(eps);
  if (UseBlockPerRow(batch, n)) {
    const unsigned int grid = RowBlocks(batch);
    if (rank && kl) {
      SoftBlockKernel<T, true, true><<<grid, kBlockThreads, 0, stream>>>(
          x, s->perm, batch, ni, descending, e, out, aux, s->w);
    } else if (rank) {
      SoftBlockKernel<T, true, false><<<grid, kBlockThreads, 0, stream>>>(
          x, s->perm, batch, ni, descending, e, out, aux, s->w);
    } else if (kl) {
      SoftBlockKernel<T, false, true><<<grid, kBlockThreads, 0, stream>>>(
          x, s->perm, batch, ni, descending, e, out, aux, s->w);
    } else {
      SoftBlockKernel<T, false, false><<<grid, kBlockThreads, 0, stream>>>(
          x, s->perm, batch, ni, descending, e, out, aux, s->w);
    }
  } else {
    const unsigned int grid = GridFor(batch, kRowThreads);
    if (rank) {
      SoftRowKernel<T, true><<<grid, kRowThreads, 0, stream>>>(x, s->perm, batch, ni, kl,
                                                               descending, e, out, aux, s->w);
    } else {
      SoftRowKernel<T, false><<<grid, kRowThreads, 0, stream>>>(x, s->perm, batch, ni, kl,
                                                                descending, e, out, aux, s->w);
    }
  }
  return cudaGetLastError();
}

// Gradient rows. With aux, perm/seg are unpacked into scratch first; without, they come
// from SoftForward (perm in s.perm, seg in ws.i[4], seg[0] = -1 for non-finite rows).
template <typename T, bool kRank>
__global__ void SoftGradKernel(const T* g, const T* x, const int32_t* aux, int32_t* perm,
                               int64_t batch, int n, bool kl, bool descending, bool adjoint,
                               typename AccT<T>::type eps, T* out,
                               Work<typename AccT<T>::type> ws) {
  using A = typename AccT<T>::type;
  using Cvt = DevCvt<T>;
  for (int64_t r = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; r < batch;
       r += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t o = r * n;
    int32_t* pr = perm + o;
    int32_t* sr = ws.i[4] + o;
    const int state = aux ? ir::UnpackAux(aux + o, n, pr, sr) : (sr[0] < 0 ? 0 : 1);
    if (state != 1) {
      for (int i = 0; i < n; ++i) out[o + i] = Cvt::NaN();
      continue;
    }
    ir::SoftGradRow<T, A, kRank, Cvt>(g + o, x + o, pr, sr, n, kl, descending, adjoint, eps,
                                      out + o, ws.f[0] + o, ws.f[1] + o, ws.f[2] + o);
  }
}

// One block per long row; same contract as SoftGradKernel.
template <typename T, bool kRank>
__global__ void SoftGradBlockKernel(const T* g, const T* x, const int32_t* aux, int32_t* perm,
                                    int64_t batch, int n, bool kl, bool descending,
                                    bool adjoint, typename AccT<T>::type eps, T* out,
                                    Work<typename AccT<T>::type> ws) {
  using A = typename AccT<T>::type;
  using Cvt = DevCvt<T>;
  const int sign = ir::SoftSign(kRank, descending);
  const int mode = ir::SoftGradMode(kRank, kl, adjoint);
  for (int64_t r = blockIdx.x; r < batch; r += gridDim.x) {
    const int64_t o = r * n;
    int32_t* pr = perm + o;
    int32_t* start = ws.i[1] + o;
    const int32_t* sr = ws.i[4] + o;  // forward's block ids (recompute mode)
    A* xs = ws.f[0] + o;
    A* us = ws.f[1] + o;
    A* res = ws.f[2] + o;
    // Row state as UnpackAux: invalid (non-finite) row, or corrupt aux (index >= n).
    int bad = aux ? aux[o] == ir::kInvalidRow : sr[0] < 0;
    if (!bad) {
      for (int i = threadIdx.x; i < n; i += blockDim.x) {
        if (aux) {
          const uint32_t a = static_cast<uint32_t>(aux[o + i]);
          const int32_t p = static_cast<int32_t>(a & ~ir::kBlockStart);
          if (p >= n) bad = 1;
          pr[i] = p;
          start[i] = i == 0 || (a & ir::kBlockStart) != 0;
        } else {
          start[i] = i == 0 || sr[i] != sr[i - 1];
        }
      }
    }
    if (__syncthreads_or(bad)) {
      for (int i = threadIdx.x; i < n; i += blockDim.x) out[o + i] = Cvt::NaN();
      continue;  // uniform across the block
    }
    for (int i = threadIdx.x; i < n; i += blockDim.x) {
      ir::SoftGradPrep<T, A, Cvt>(i, kRank, kl, adjoint, sign, eps, g + o, x + o, pr, us, xs);
    }
    __syncthreads();
    BlockSeg<A>(n, mode, start, kl ? xs : nullptr, us, ws, o, res);
    for (int i = threadIdx.x; i < n; i += blockDim.x) {
      ir::SoftGradStore<T, A, Cvt>(i, kRank, adjoint, sign, eps, pr, res, out + o);
    }
    __syncthreads();
  }
}

}  // namespace

// ---------------------------------------------------------------------------------------
// Launchers.

template <typename T>
size_t IsotonicWorkspaceBytes(int64_t batch, int64_t n, bool /*kl*/) {
  WorkspaceCarver c(nullptr);
  CarveWork<typename AccT<T>::type>(&c, batch * n);
  return c.bytes();
}

template <typename T>
cudaError_t LaunchIsotonic(const T* y, const T* w, T* solution, int32_t* segments,
                           int64_t batch, int64_t n, bool kl, bool increasing,
                           void* workspace, size_t workspace_bytes, cudaStream_t stream) {
  using A = typename AccT<T>::type;
  if (batch == 0 || n == 0) return cudaSuccess;
  if (workspace_bytes < IsotonicWorkspaceBytes<T>(batch, n, kl)) return cudaErrorInvalidValue;
  WorkspaceCarver c(workspace);
  const Work<A> ws = CarveWork<A>(&c, batch * n);
  const int ni = static_cast<int>(n);
  if (UseBlockPerRow(batch, n)) {
    const unsigned int grid = RowBlocks(batch);
    if (kl) {
      IsotonicBlockKernel<T, true><<<grid, kBlockThreads, 0, stream>>>(
          y, w, solution, segments, batch, ni, increasing, ws);
    } else {
      IsotonicBlockKernel<T, false><<<grid, kBlockThreads, 0, stream>>>(
          y, w, solution, segments, batch, ni, increasing, ws);
    }
  } else {
    const unsigned int grid = GridFor(batch, kRowThreads);
    if (kl) {
      IsotonicRowKernel<T, true><<<grid, kRowThreads, 0, stream>>>(y, w, solution, segments,
                                                                   batch, ni, increasing, ws);
    } else {
      IsotonicRowKernel<T, false><<<grid, kRowThreads, 0, stream>>>(
          y, w, solution, segments, batch, ni, increasing, ws);
    }
  }
  return cudaGetLastError();
}

template <typename T>
size_t IsotonicL2GradWorkspaceBytes(int64_t batch, int64_t n) {
  WorkspaceCarver c(nullptr);
  CarveWork<typename AccT<T>::type>(&c, batch * n);
  return c.bytes();
}

template <typename T>
cudaError_t LaunchIsotonicL2Grad(const T* grad, const int32_t* segments, T* out,
                                 int64_t batch, int64_t n, void* workspace,
                                 size_t workspace_bytes, cudaStream_t stream) {
  using A = typename AccT<T>::type;
  if (batch == 0 || n == 0) return cudaSuccess;
  if (workspace_bytes < IsotonicL2GradWorkspaceBytes<T>(batch, n)) return cudaErrorInvalidValue;
  WorkspaceCarver c(workspace);
  const Work<A> ws = CarveWork<A>(&c, batch * n);
  if (UseBlockPerRow(batch, n)) {
    IsotonicGradBlockKernel<T, false><<<RowBlocks(batch), kBlockThreads, 0, stream>>>(
        grad, nullptr, nullptr, segments, out, nullptr, batch, static_cast<int>(n), false, ws);
  } else {
    IsotonicL2GradKernel<T><<<GridFor(batch, kRowThreads), kRowThreads, 0, stream>>>(
        grad, segments, out, batch, static_cast<int>(n), ws);
  }
  return cudaGetLastError();
}

template <typename T>
size_t IsotonicKLGradWorkspaceBytes(int64_t batch, int64_t n) {
  WorkspaceCarver c(nullptr);
  CarveWork<typename AccT<T>::type>(&c, batch * n);
  return c.bytes();
}

template <typename T>
cudaError_t LaunchIsotonicKLGrad(const T* grad, const T* y, const T* w,
                                 const int32_t* segments, T* grad_y, T* grad_w,
                                 int64_t batch, int64_t n, bool adjoint, void* workspace,
                                 size_t workspace_bytes, cudaStream_t stream) {
  using A = typename AccT<T>::type;
  if (batch == 0 || n == 0) return cudaSuccess;
  if (workspace_bytes < IsotonicKLGradWorkspaceBytes<T>(batch, n)) return cudaErrorInvalidValue;
  WorkspaceCarver c(workspace);
  const Work<A> ws = CarveWork<A>(&c, batch * n);
  if (UseBlockPerRow(batch, n)) {
    IsotonicGradBlockKernel<T, true><<<RowBlocks(batch), kBlockThreads, 0, stream>>>(
        grad, y, w, segments, grad_y, grad_w, batch, static_cast<int>(n), adjoint, ws);
  } else {
    IsotonicKLGradKernel<T><<<GridFor(batch, kRowThreads), kRowThreads, 0, stream>>>(
        grad, y, w, segments, grad_y, grad_w, batch, static_cast<int>(n), adjoint, ws);
  }
  return cudaGetLastError();
}

template <typename T>
size_t SoftSortRankWorkspaceBytes(int64_t batch, int64_t n) {
  if (batch == 0 || n == 0) return 0;
  size_t total = 0;
  CarveSoft<T>(nullptr, batch, n, &total);
  return total;
}

template <typename T>
cudaError_t LaunchSoftSortRank(const T* values, double eps, T* out, int32_t* aux,
                               int64_t batch, int64_t n, bool rank, bool kl,
                               bool descending, void* workspace, size_t workspace_bytes,
                               cudaStream_t stream) {
  if (batch == 0 || n == 0) return cudaSuccess;
  size_t need = 0;
  const SoftWork<T> sized = CarveSoft<T>(nullptr, batch, n, &need);
  if (workspace_bytes < need) return cudaErrorInvalidValue;
  SoftWork<T> s = CarveSoft<T>(workspace, batch, n, nullptr);
  s.cub_temp = static_cast<char*>(workspace) + (need - sized.cub_bytes);
  return SoftForward<T>(values, eps, out, aux, batch, n, rank, kl, descending, &s,
                        sized.cub_bytes, stream);
}

template <typename T>
size_t SoftSortRankGradWorkspaceBytes(int64_t batch, int64_t n, bool have_aux) {
  if (batch == 0 || n == 0) return 0;
  size_t total = 0;
  if (have_aux) {
    WorkspaceCarver c(nullptr);
    c.Take<int32_t>(batch * n);
    CarveWork<typename AccT<T>::type>(&c, batch * n);
    return c.bytes();
  }
  CarveSoft<T>(nullptr, batch, n, &total);
  return total;
}

template <typename T>
cudaError_t LaunchSoftSortRankGrad(const T* grad, const T* values, double eps,
                                   const int32_t* aux, T* out, int64_t batch, int64_t n,
                                   bool rank, bool kl, bool descending, bool adjoint,
                                   void* workspace, size_t workspace_bytes,
                                   cudaStream_t stream) {
  using A = typename AccT<T>::type;
  if (batch == 0 || n == 0) return cudaSuccess;
  if (workspace_bytes < SoftSortRankGradWorkspaceBytes<T>(batch, n, aux != nullptr)) {
    return cudaErrorInvalidValue;
  }
  int32_t* perm;
  Work<A> ws;
  if (aux) {
    WorkspaceCarver c(workspace);
    perm = c.Take<int32_t>(batch * n);
    ws = CarveWork<A>(&c, batch * n);
  } else {
    size_t need = 0;
    const SoftWork<T> sized = CarveSoft<T>(nullptr, batch, n, &need);
    SoftWork<T> s = CarveSoft<T>(workspace, batch, n, nullptr);
    s.cub_temp = static_cast<char*>(workspace) + (need - sized.cub_bytes);
    TFSORT_CUDA_RETURN_IF_ERROR(SoftForward<T>(values, eps, nullptr, nullptr, batch, n, rank,
                                               kl, descending, &s, sized.cub_bytes, stream));
    perm = s.perm;
    ws = s.w;
  }
  const A e = static_cast<A>(eps);
  const unsigned int grid = GridFor(batch, kRowThreads);
  const int ni = static_cast<int>(n);
  if (UseBlockPerRow(batch, n)) {
    if (rank) {
      SoftGradBlockKernel<T, true><<<RowBlocks(batch), kBlockThreads, 0, stream>>>(
          grad, values, aux, perm, batch, ni, kl, descending, adjoint, e, out, ws);
    } else {
      SoftGradBlockKernel<T, false><<<RowBlocks(batch), kBlockThreads, 0, stream>>>(
          grad, values, aux, perm, batch, ni, kl, descending, adjoint, e, out, ws);
    }
  } else if (rank) {
    SoftGradKernel<T, true><<<grid, kRowThreads, 0, stream>>>(
        grad, values, aux, perm, batch, ni, kl, descending, adjoint, e, out, ws);
  } else {
    SoftGradKernel<T, false><<<grid, kRowThreads, 0, stream>>>(
        grad, values, aux, perm, batch, ni, kl, descending, adjoint, e, out, ws);
  }
  return cudaGetLastError();
}

#define TFSORT_INSTANTIATE(T)                                                                \
  template size_t IsotonicWorkspaceBytes<T>(int64_t, int64_t, bool);                         \
  template cudaError_t LaunchIsotonic<T>(const T*, const T*, T*, int32_t*, int64_t, int64_t, \
                                         bool, bool, void*, size_t, cudaStream_t);           \
  template size_t IsotonicL2GradWorkspaceBytes<T>(int64_t, int64_t);                         \
  template cudaError_t LaunchIsotonicL2Grad<T>(const T*, const int32_t*, T*, int64_t,        \
                                               int64_t, void*, size_t, cudaStream_t);        \
  template size_t IsotonicKLGradWorkspaceBytes<T>(int64_t, int64_t);                         \
  template cudaError_t LaunchIsotonicKLGrad<T>(const T*, const T*, const T*, const int32_t*, \
                                               T*, T*, int64_t, int64_t, bool, void*,        \
                                               size_t, cudaStream_t);                        \
  template size_t SoftSortRankWorkspaceBytes<T>(int64_t, int64_t);                           \
  template cudaError_t LaunchSoftSortRank<T>(const T*, double, T*, int32_t*, int64_t,        \
                                             int64_t, bool, bool, bool, void*, size_t,       \
                                             cudaStream_t);                                  \
  template size_t SoftSortRankGradWorkspaceBytes<T>(int64_t, int64_t, bool);                 \
  template cudaError_t LaunchSoftSortRankGrad<T>(const T*, const T*, double, const int32_t*, \
                                                 T*, int64_t, int64_t, bool, bool, bool,     \
                                                 bool, void*, size_t, cudaStream_t);

TFSORT_INSTANTIATE(float)
TFSORT_INSTANTIATE(double)
TFSORT_INSTANTIATE(__half)
TFSORT_INSTANTIATE(__nv_bfloat16)

#undef TFSORT_INSTANTIATE

}  // namespace cuda
}  // namespace tfsort
