// oneDNN kernels for the CPU backend: f32 Gemm, MatMul and Conv (plain or fused with a bias
// and an activation) as oneDNN primitives with eltwise post-ops, created once per shape
// bucket and executed through the C API with preallocated argument arrays; the int8 matmuls
// (onednn_int8.cpp).
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
  // weights() of uint8 weights shifted into int8 (w - 128), made once per tensor.
  dnnl::memory weights_shifted(const Tensor& t, const dnnl::memory::desc& plain, const dnnl::memory::desc& want);
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
  std::vector<std::pair<const void*, std::unique_ptr<Tensor>>> shifted_;
  std::atomic<uint64_t> reordered_bytes_{0};
};

// Appends a fused op's activation attributes as eltwise post-ops; false if oneDNN cannot
// express it.
bool append_activation(const Node& n, dnnl::post_ops& po);

// MatMulInteger, QLinearMatMul, pd.DynQuantMatMul, pd.QuantMatMul on oneDNN's int8 matmul
// (onednn_int8.cpp); nullptr where the portable kernel must run it.
std::unique_ptr<Kernel> make_int8_matmul(OneDnnKernels& k, const InferCtx& c);
// ConvInteger, QLinearConv, pd.QuantConv on oneDNN's int8 convolution (2-D).
std::unique_ptr<Kernel> make_int8_conv(OneDnnKernels& k, const InferCtx& c);

}  // namespace pd
