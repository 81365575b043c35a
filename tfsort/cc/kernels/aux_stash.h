// A small process-wide stash that carries a fused SoftRank / SoftSort op's aux tensor (the
// sorting permutation and PAV block starts), or an eager IsotonicL2 op's segment ids, from
// the forward kernel to its gradient kernel without making it an op output.
//
// Why: in eager mode every extra op output costs TF ~20 us of backprop bookkeeping (a
// zeros cotangent, trainability checks), more than the whole kernel at small shapes, and
// the alternative, re-sorting in the gradient op, costs ~20 us at 1x1024 on fresh data.
// With num_aux = 0 the forward kernel stashes the aux it computed under its input tensor;
// the gradient kernel, which receives that same input tensor, takes it back, and re-sorts
// only when the entry is gone.
//
// Why it is safe: an entry holds a reference to the input tensor's buffer, so while the
// entry exists the buffer can be neither freed (its address reused by another tensor) nor
// modified (TF forwards or updates a buffer in place only when it holds the only
// reference). A hit therefore means the very same values, and the key adds everything else
// the aux depends on (op kind, attributes, eps, dtype, shape). The stash is bounded
// (entries and elements; the oldest entry goes first), an entry is removed when taken, and
// a miss only costs the re-sort: results are bit-identical either way.

#ifndef TFSORT_CC_KERNELS_AUX_STASH_H_
#define TFSORT_CC_KERNELS_AUX_STASH_H_

#include <cstdint>
#include <cstring>
#include <deque>
#include <memory>

#include "tensorflow/core/framework/tensor.h"
#include "tensorflow/core/platform/mutex.h"

namespace tfsort {

class AuxStash {
 public:
  // Rows * n above this are never stashed (the aux output costs little next to the kernel
  // there); tfsort/isotonic.py asks for the stash (num_aux = 0) only below it.
  static constexpr int64_t kMaxElements = int64_t{1} << 16;
  // Bounds on what the stash holds (inputs it keeps alive plus aux): at most this many
  // entries and elements in all (float64 inputs: at most 12 MiB); the oldest go first.
  static constexpr size_t kMaxEntries = 64;
  static constexpr int64_t kMaxTotalElements = int64_t{1} << 20;

  // Which op stashed an entry: the aux of the fused ops, or the segment ids of IsotonicL2.
  enum class Op : uint8_t { kSoftSort, kSoftRank, kIsotonicL2 };

  struct Key {
    Op op;
    bool kl;
    bool descending;  // IsotonicL2: decreasing constraints
    double eps;       // IsotonicL2: 0
    bool operator==(const Key& o) const {
      return op == o.op && kl == o.kl && descending == o.descending &&
             std::memcmp(&eps, &o.eps, sizeof(eps)) == 0;
    }
  };

  static AuxStash* Global() {
    static AuxStash* stash = new AuxStash;  // never destroyed: kernels may run at exit
    return stash;
  }

  // The aux buffer of one stash entry: a plain heap array (a TF temp tensor costs a few
  // microseconds more to allocate in an eager call).
  using Buffer = std::unique_ptr<int32_t[]>;

  // Whether a forward call on `values` may stash its aux.
  static bool Fits(const ::tensorflow::Tensor& values) {
    return values.NumElements() <= kMaxElements && values.NumElements() > 0;
  }

  // Stashes aux (values.NumElements() entries) for the values tensor `values` (the
  // forward op's input).
  void Put(const ::tensorflow::Tensor& values, const Key& key, Buffer aux) {
    if (!Fits(values)) return;
    ::tensorflow::mutex_lock lock(mu_);
    total_ += values.NumElements();
    entries_.push_back(Entry{values, key, std::move(aux)});
    while (entries_.size() > kMaxEntries || total_ > kMaxTotalElements) {
      total_ -= entries_.front().values.NumElements();
      entries_.pop_front();
    }
  }

  // Moves the aux stashed for exactly this values tensor and key into *aux; false if none.
  bool Take(const ::tensorflow::Tensor& values, const Key& key, Buffer* aux) {
    if (!Fits(values)) return false;
    const void* data = values.tensor_data().data();
    ::tensorflow::mutex_lock lock(mu_);
    for (auto it = entries_.rbegin(); it != entries_.rend(); ++it) {
      if (it->values.tensor_data().data() == data && it->values.dtype() == values.dtype() &&
          it->values.shape() == values.shape() && it->key == key) {
        *aux = std::move(it->aux);
        total_ -= it->values.NumElements();
        entries_.erase(std::next(it).base());
        return true;
      }
    }
    return false;
  }

 private:
  struct Entry {
    ::tensorflow::Tensor values;  // holds the buffer: see the file comment
    Key key;
    Buffer aux;
  };
  ::tensorflow::mutex mu_;
  std::deque<Entry> entries_;
  int64_t total_ = 0;  // elements over all entries
};

}  // namespace tfsort

#endif  // TFSORT_CC_KERNELS_AUX_STASH_H_
