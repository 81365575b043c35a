// Row argsort for the fused CPU kernels: order-preserving integer keys, ranked by counting
// (rows of 8 < n <= kCountingMax without ties, on x86-64 CPUs with AVX2), else packed with
// their index into one 64-bit word and sorted by a sorting network (short rows) or an LSD
// radix sort (longer rows); 64-bit keys use std::sort there. Ties keep index order, so
// results are deterministic. No TensorFlow types.
//
// Complexity: O(n^2 / 8) (32-bit keys) or O(n^2 / 4) (64-bit) vector compares when
// counting; else, 32-bit keys: O(n log^2 n) branch-free compare-exchanges for n <=
// kNetworkMax, O(n) above (four 8-bit passes, or three 11-bit ones from n = kRadix11Min; a
// pass is skipped when one bucket holds every key); 64-bit keys: O(n log n).
// Measured on random float rows (distinct rows, so the branch predictor cannot learn them):
// std::sort of packed words costs 9 ns per element at n = 16 and 20 ns at n = 128, against
// 3.7 ns for the network at n = 16 and 7 ns for the radix sort at n = 128.

#ifndef TFSORT_CC_KERNELS_SORT_UTIL_H_
#define TFSORT_CC_KERNELS_SORT_UTIL_H_

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <utility>
#include <vector>

namespace tfsort {
namespace sort_util {

// Monotone maps from IEEE floats to unsigned integers: a < b  <=>  Key(a) < Key(b)
// (for non-NaN values; callers reject rows with NaN before sorting).
inline uint32_t AscendingKey(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof(u));
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}
inline uint64_t AscendingKey(double f) {
  uint64_t u;
  std::memcpy(&u, &f, sizeof(u));
  return (u & 0x8000000000000000ull) ? ~u : (u | 0x8000000000000000ull);
}

constexpr int kNetworkMax = 64;  // a sorting network up to here, the radix sort above

// Uninitialized scratch array (std::vector would zero it: measurable at n = 8192).
template <typename T>
class Scratch {
 public:
  Scratch() = default;
  explicit Scratch(size_t n) { reserve(n); }
  void reserve(size_t n) {
    if (n > size_) {
      data_.reset(new T[n]);
      size_ = n;
    }
  }
  T* data() { return data_.get(); }
  T& operator[](size_t i) { return data_[i]; }
  const T& operator[](size_t i) const { return data_[i]; }

 private:
  std::unique_ptr<T[]> data_;
  size_t size_ = 0;
};

// Scratch reused across rows of one shard.
struct ArgsortScratch {
  Scratch<uint64_t> a, b;
  Scratch<std::pair<uint64_t, int32_t>> wide;
};

// Sorts packed words (key << 32 | index) ascending by key with an LSD radix sort of
// kBits-bit digits; indices are already ascending, and every pass is stable, so ties stay
// in index order. A pass whose digit is the same for every key is skipped.
template <int kBits>
inline void RadixSortPackedDigits(uint64_t* data, uint64_t* tmp, int n) {
  constexpr int kPasses = (32 + kBits - 1) / kBits;
  constexpr uint32_t kBuckets = 1u << kBits;
  constexpr uint32_t kMask = kBuckets - 1;
  uint32_t hist[kPasses][kBuckets];
  std::memset(hist, 0, sizeof(hist));
  for (int i = 0; i < n; ++i) {
    const uint32_t k = static_cast<uint32_t>(data[i] >> 32);
    for (int pass = 0; pass < kPasses; ++pass) ++hist[pass][(k >> (kBits * pass)) & kMask];
  }
  uint64_t* src = data;
  uint64_t* dst = tmp;
  for (int pass = 0; pass < kPasses; ++pass) {
    uint32_t* h = hist[pass];
    bool trivial = false;
    uint32_t offset = 0;
    for (uint32_t d = 0; d < kBuckets; ++d) {
      if (h[d] == static_cast<uint32_t>(n)) trivial = true;
      const uint32_t c = h[d];
      h[d] = offset;
      offset += c;
    }
    if (trivial) continue;
    const int shift = 32 + kBits * pass;
    for (int i = 0; i < n; ++i) {
      const uint64_t v = src[i];
      dst[h[(v >> shift) & kMask]++] = v;
    }
    std::swap(src, dst);
  }
  if (src != data) std::memcpy(data, src, sizeof(uint64_t) * n);
}

// Three 11-bit passes beat four 8-bit ones once n amortizes the 3 x 2048-bucket
// histograms: measured 3.8 against 6.0 ns per element at n = 8192, even at n = 2048.
constexpr int kRadix11Min = 4096;

inline void RadixSortPacked(uint64_t* data, uint64_t* tmp, int n) {
  if (n >= kRadix11Min) {
    RadixSortPackedDigits<11>(data, tmp, n);
  } else {
    RadixSortPackedDigits<8>(data, tmp, n);
  }
}

// One comparator of a sorting network: puts the smaller word at lo and the larger at hi.
struct Comparator {
  uint8_t lo, hi;
};

// Batcher's odd-even merge sort network for n <= kNetworkMax words: the network for the
// next power of two without the comparators that touch a position >= n. Those are no-ops
// when positions n.. hold words larger than every real one (a comparator only moves the
// larger word to the higher position, so such padding never leaves the end), so the
// pruned network sorts n words. Built once per process.
inline const std::vector<Comparator>& SortingNetwork(int n) {
  static const std::vector<Comparator>* const networks = [] {
    auto* nets = new std::vector<Comparator>[kNetworkMax + 1];
    for (int m = 2; m <= kNetworkMax; ++m) {
      int size = 1;
      while (size < m) size <<= 1;
      for (int p = 1; p < size; p <<= 1) {
        for (int k = p; k >= 1; k >>= 1) {
          for (int j = k % p; j + k < size; j += 2 * k) {
            for (int i = 0; i < std::min(k, size - j - k); ++i) {
              const int lo = i + j, hi = i + j + k;
              if (lo / (2 * p) == hi / (2 * p) && hi < m) {
                nets[m].push_back({static_cast<uint8_t>(lo), static_cast<uint8_t>(hi)});
              }
            }
          }
        }
      }
    }
    return nets;
  }();
  return networks[n];
}

// Sorts n <= kNetworkMax packed words ascending in place with SortingNetwork(n): a fixed
// sequence of branch-free compare-exchanges (O(n log^2 n), no data-dependent branches).
// Measured on fresh rows: 3.9 ns per element at n = 16 and 6.5 at n = 64, against 5.4 and
// 22 for counting ranks (O(n^2)) and 38 and 13 for the 8-bit radix sort.
inline void NetworkSortPacked(uint64_t* a, int n) {
  for (const Comparator& c : SortingNetwork(n)) {
    const uint64_t x = a[c.lo];
    const uint64_t y = a[c.hi];
    const bool swap = y < x;
    a[c.lo] = swap ? y : x;
    a[c.hi] = swap ? x : y;
  }
}

// Short rows on x86-64 CPUs with AVX2: ranks by counting instead of sorting. Each key is
// compared with every other in 256-bit vectors (8 float or 4 double keys; n^2 / 8 or
// n^2 / 4 compare-and-adds, no data-dependent branch), and each index is written to its
// rank. Measured on fresh random rows, whole ArgsortDescending calls (session 7), float:
// 48 against 65 ns per row at n = 16, 83 against 166 at n = 32, 167 against 426 at n = 64
// and 468 against 900 (the radix sort) at n = 128; the network stays up to n = 8, where it
// is as fast. double (against std::sort): 84 against 230 ns at n = 16, 180 against 853 at
// n = 32, 664 against 1585 at n = 64, 945 against 3567 at n = 128. Tied keys get one rank;
// CountingArgsort then reports failure and the caller sorts the row as before, so ties
// keep index order either way.
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define TFSORT_COUNTING_ARGSORT 1
constexpr int kCountingMin = 8;  // the sorting network is as fast up to here
constexpr int kCountingMax = 128;

namespace internal {

typedef int32_t V8i __attribute__((vector_size(32)));
typedef int64_t V4l __attribute__((vector_size(32)));

// The integer key and vector of a float type: 8 lanes of 32 bits, or 4 of 64.
template <typename F>
struct CountingKeys;
template <>
struct CountingKeys<float> {
  using Int = int32_t;
  using Vec = V8i;
};
template <>
struct CountingKeys<double> {
  using Int = int64_t;
  using Vec = V4l;
};

// rank[kLanes * v0 ..) <- -(the number of keys[0..n) below each key) for kChunk vectors of
// keys starting at vector v0 (kept in registers while every key is broadcast against them).
template <int kChunk, typename Int, typename Vec>
__attribute__((target("avx2"))) inline void CountBelow(const Int* key, int n, int v0, Int* rank) {
  constexpr int kLanes = sizeof(Vec) / sizeof(Int);
  Vec k[kChunk], r[kChunk];
  for (int v = 0; v < kChunk; ++v) {
    std::memcpy(&k[v], key + kLanes * (v0 + v), sizeof(Vec));
    r[v] = Vec{};
  }
  for (int j = 0; j < n; ++j) {
    const Vec b = Vec{} + key[j];
    for (int v = 0; v < kChunk; ++v) r[v] += k[v] > b;  // true is -1
  }
  for (int v = 0; v < kChunk; ++v) std::memcpy(rank + kLanes * (v0 + v), &r[v], sizeof(Vec));
}

// perm <- the ascending order of AscendingKey(x) (of -x when negate) for n <= kCountingMax
// values of a float type F, x padded to a whole number of vectors. Returns false when two
// keys tie.
template <typename F>
__attribute__((target("avx2"))) inline bool CountingArgsort(const F* x, int n, bool negate,
                                                            int32_t* perm) {
  using Int = typename CountingKeys<F>::Int;
  using Vec = typename CountingKeys<F>::Vec;
  constexpr int kLanes = sizeof(Vec) / sizeof(Int);
  constexpr Int kMin = std::numeric_limits<Int>::min();
  constexpr Int kMax = std::numeric_limits<Int>::max();
  // AscendingKey as a signed integer (AscendingKey(f) with the top bit flipped): a float's
  // bits, with every bit but the sign flipped for negative values.
  const Vec flip = Vec{} + (negate ? kMin : Int{0});
  Vec lane;
  for (int l = 0; l < kLanes; ++l) lane[l] = l;
  const int vectors = (n + kLanes - 1) / kLanes;
  alignas(32) Int key[kCountingMax];
  alignas(32) Int rank[kCountingMax];
  for (int v = 0; v < vectors; ++v) {
    Vec u;
    std::memcpy(&u, x + kLanes * v, sizeof(u));
    u ^= flip;
    u ^= (u < Vec{}) & kMax;  // a comparison is all ones where true
    // Padding ranks after every real key, and only the n real keys are counted.
    u = (lane + kLanes * v < n) ? u : kMax;
    std::memcpy(key + kLanes * v, &u, sizeof(u));
  }
  int v = 0;
  for (; v + 4 <= vectors; v += 4) CountBelow<4, Int, Vec>(key, n, v, rank);
  switch (vectors - v) {
    case 3: CountBelow<3, Int, Vec>(key, n, v, rank); break;
    case 2: CountBelow<2, Int, Vec>(key, n, v, rank); break;
    case 1: CountBelow<1, Int, Vec>(key, n, v, rank); break;
    default: break;
  }
  uint64_t seen[kCountingMax / 64] = {};
  for (int i = 0; i < n; ++i) {
    const int q = static_cast<int>(-rank[i]);
    perm[q] = i;
    seen[q >> 6] |= uint64_t{1} << (q & 63);
  }
  for (int w = 0; w < kCountingMax / 64; ++w) {
    const int bits = std::min(std::max(n - 64 * w, 0), 64);
    if (seen[w] != (bits == 64 ? ~uint64_t{0} : (uint64_t{1} << bits) - 1)) return false;
  }
  return true;
}

inline bool HasAvx2() {
  static const bool has = __builtin_cpu_supports("avx2");
  return has;
}

}  // namespace internal
#endif  // counting argsort

// perm <- indices of x in descending order of sign * x (sign = +1 or -1), ties by index.
// Key is float (for float, half and bfloat16 rows) or double.
template <typename Key, typename Load>
void ArgsortDescending(Load load, int n, int sign, int32_t* perm, ArgsortScratch* s) {
  // Descending order of sign * x == ascending order of AscendingKey(-sign * x).
#ifdef TFSORT_COUNTING_ARGSORT
  if (n > kCountingMin && n <= kCountingMax && internal::HasAvx2()) {
    alignas(32) Key x[kCountingMax];
    for (int i = 0; i < n; ++i) x[i] = static_cast<Key>(load(i));
    for (int i = n; i < ((n + 7) & ~7); ++i) x[i] = Key{0};
    if (internal::CountingArgsort<Key>(x, n, sign > 0, perm)) return;
  }
#endif
  if constexpr (sizeof(Key) == 4) {
    s->a.reserve(n);
    s->b.reserve(n);
    uint64_t* w = s->a.data();
    for (int i = 0; i < n; ++i) {
      const Key v = static_cast<Key>(load(i));
      const uint32_t k = AscendingKey(sign > 0 ? -v : v);
      w[i] = (static_cast<uint64_t>(k) << 32) | static_cast<uint32_t>(i);
    }
    if (n <= kNetworkMax) {
      NetworkSortPacked(w, n);
    } else {
      RadixSortPacked(w, s->b.data(), n);
    }
    for (int i = 0; i < n; ++i) perm[i] = static_cast<int32_t>(w[i] & 0xffffffffu);
  } else {
    s->wide.reserve(n);
    auto* w = s->wide.data();
    for (int i = 0; i < n; ++i) {
      const Key v = static_cast<Key>(load(i));
      w[i] = {AscendingKey(sign > 0 ? -v : v), i};
    }
    std::sort(w, w + n);
    for (int i = 0; i < n; ++i) perm[i] = w[i].second;
  }
}

}  // namespace sort_util
}  // namespace tfsort

#endif  // TFSORT_CC_KERNELS_SORT_UTIL_H_
