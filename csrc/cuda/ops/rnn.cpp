// The CUDA lowering of the recurrent ops (csrc/core/ops/rnn.cpp runs them on the CPU):
// members of Lowering (../lower.h), each adding a node's steps to its bucket's program.
#include <algorithm>
#include <limits>
#include <map>
#include <string>

#include "../../core/activation.h"
#include "../lower.h"

namespace pd::cuda {

void Lowering::lstm(const InferCtx& c) {
  const Node& n = c.node;
  const Shape& xs = c.in[0].shape;  // [T, B, I]
  const int64_t T = xs[0], B = xs[1], I = xs[2];
  const int64_t H = n.attr_int("hidden_size", c.in[2].shape[2]);
  const Value X = val(n.inputs[0]), Wv = val(n.inputs[1]), Rv = val(n.inputs[2]);
  const float* bias = c.has_input(3) ? cf(val(n.inputs[3])) : nullptr;
  auto out = [&](size_t i) -> float* {
    return i < n.outputs.size() && !n.outputs[i].empty() ? f(val(n.outputs[i])) : nullptr;
  };
  float* Y = out(0);
  float* h = out(1);
  float* cst = out(2);
  auto scratch = [&](size_t floats) {
    scratch_.push_back(dev_alloc(floats * sizeof(float)));
    extra_bytes_ += floats * sizeof(float);
    return static_cast<float*>(scratch_.back().get());
  };
  if (!h) h = scratch(B * H);
  if (!cst) cst = scratch(B * H);
  float* xg = scratch(T * B * 4 * H);
  float* hg = scratch(B * 4 * H);
  const size_t state = static_cast<size_t>(B * H) * sizeof(float);
  const void* h0 = c.has_input(5) ? val(n.inputs[5]).dev : nullptr;
  const void* c0 = c.has_input(6) ? val(n.inputs[6]).dev : nullptr;
  steps_.push_back([=](cudaStream_t s) {
    if (h0) PD_CUDA_CHECK(cudaMemcpyAsync(h, h0, state, cudaMemcpyDeviceToDevice, s));
    else PD_CUDA_CHECK(cudaMemsetAsync(h, 0, state, s));
    if (c0) PD_CUDA_CHECK(cudaMemcpyAsync(cst, c0, state, cudaMemcpyDeviceToDevice, s));
    else PD_CUDA_CHECK(cudaMemsetAsync(cst, 0, state, s));
  });
  // All time steps' input products at once: XG [T*B, 4H] = X [T*B, I] x W^T.
  add_gemm(false, true, T * B, 4 * H, I, I, I, 4 * H, 1.f, 1, 0, 0, 0, cf(X), cf(Wv), xg, nullptr, false);
  CUfunction cell = fn("pd_lstm_cell_f32");
  const long long BB = B, HH = H;
  for (int64_t t = 0; t < T; ++t) {
    add_gemm(false, true, B, 4 * H, H, H, H, 4 * H, 1.f, 1, 0, 0, 0, h, cf(Rv), hg, nullptr, false);
    const float* xgt = xg + t * B * 4 * H;
    float* yt = Y ? Y + t * B * H : nullptr;
    steps_.push_back([=](cudaStream_t s) { launch(cell, BB * HH, s, xgt, hg, bias, h, cst, yt, BB, HH); });
  }
}

}  // namespace pd::cuda
