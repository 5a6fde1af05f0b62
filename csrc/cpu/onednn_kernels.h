// oneDNN kernels for the CPU backend: f32 Gemm, MatMul and Conv (plain or fused with a bias
// and an activation) as oneDNN primitives with eltwise post-ops, created once per shape
// bucket and executed through the C API with preallocated argument arrays.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <vector>

#include <oneapi/dnnl/dnnl.hpp>

#include "../core/program.h"

namespace pd {

class OneDnnKernels final : public KernelProvider {
 public:
  OneDnnKernels();
  std::unique_ptr<Kernel> make(const InferCtx& c) override;

  // Constant weights reordered into a primitive's preferred layout, shared by every bucket.
  dnnl::memory weights(const Tensor& t, const dnnl::memory::desc& plain, const dnnl::memory::desc& want);
  // Bytes of the reordered copies weights() made (plain layouts are used in place, not
  // counted). May be read from any thread.
  uint64_t reordered_weight_bytes() const { return reordered_bytes_.load(std::memory_order_relaxed); }

  dnnl::engine& engine() { return engine_; }
  dnnl::stream& stream() { return stream_; }

 private:
  dnnl::engine engine_;
  dnnl::stream stream_;
  struct Cached {
    const void* data;
    dnnl::memory::desc desc;
    dnnl::memory mem;
  };
  std::vector<Cached> weights_;
  std::atomic<uint64_t> reordered_bytes_{0};
};

}  // namespace pd
