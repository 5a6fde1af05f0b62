// The shape-bucket cache of a GPU context: the buckets it has built (arena, staging, a CUDA
// graph each), most recently used first, at most kMaxBuckets; the least recently used goes when
// a new one would exceed that. Keeps the context's memory figures (ContextMemory) current for
// readers on other threads. Runtime-free; B needs size_t bytes() const (its device memory).
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <memory>
#include <vector>

namespace pd::gpu {

constexpr size_t kMaxBuckets = 64;

template <typename B>
class BucketCache {
 public:
  // base_bytes: device memory the context holds besides its buckets (TensorRT's activations).
  explicit BucketCache(uint64_t base_bytes = 0) : bytes_(base_bytes) {}

  // The bucket for which match(bucket) holds, made by make() (a std::unique_ptr<B>) when there
  // is none. A make() that throws leaves the cache as it was.
  template <typename Match, typename Make>
  B* find_or_make(Match match, Make make) {
    if (last_ && match(*last_)) return last_;
    for (auto it = buckets_.begin(); it != buckets_.end(); ++it)
      if (match(**it)) {
        std::rotate(buckets_.begin(), it, it + 1);
        return last_ = buckets_.front().get();
      }
    std::unique_ptr<B> b = make();
    if (buckets_.size() >= kMaxBuckets) {
      bytes_.fetch_sub(buckets_.back()->bytes(), std::memory_order_relaxed);
      buckets_.pop_back();
    }
    bytes_.fetch_add(b->bytes(), std::memory_order_relaxed);
    buckets_.insert(buckets_.begin(), std::move(b));
    count_.store(buckets_.size(), std::memory_order_relaxed);
    return last_ = buckets_.front().get();
  }

  void clear() {
    last_ = nullptr;
    for (const auto& b : buckets_) bytes_.fetch_sub(b->bytes(), std::memory_order_relaxed);
    buckets_.clear();
    count_.store(0, std::memory_order_relaxed);
  }

  // Safe from any thread.
  uint64_t bytes() const { return bytes_.load(std::memory_order_relaxed); }
  uint64_t count() const { return count_.load(std::memory_order_relaxed); }

 private:
  std::vector<std::unique_ptr<B>> buckets_;
  B* last_ = nullptr;
  std::atomic<uint64_t> bytes_;
  std::atomic<uint64_t> count_{0};
};

}  // namespace pd::gpu
