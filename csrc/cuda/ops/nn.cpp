// The CUDA lowering of the neural-network ops (csrc/core/ops/nn.cpp runs them on the CPU):
// members of Lowering (../lower.h), each adding a node's steps to its bucket's program.
#include <algorithm>
#include <limits>
#include <map>
#include <string>

#include "../../core/activation.h"
#include "../lower.h"

namespace pd::cuda {

void Lowering::gemm(const InferCtx& c) {
  const Node& n = c.node;
  const Shape& as = c.in[0].shape;
  const Shape& bs = c.in[1].shape;
  const bool ta = n.attr_int("transA", 0) != 0, tb = n.attr_int("transB", 0) != 0;
  const float alpha = n.attr_float("alpha", 1.f), beta = n.attr_float("beta", 1.f);
  const int64_t m = ta ? as[1] : as[0], k = ta ? as[0] : as[1], nn = tb ? bs[0] : bs[1];
  const Activation act = activation(c);
  const Value A = val(n.inputs[0]), B = val(n.inputs[1]), Y = val(n.outputs[0]);
  const float* bias = nullptr;
  int64_t bm = 0, bn = 0;
  if (c.has_input(2) && beta != 0.f && numel(c.in[2].shape) > 0) {
    bias = cf(val(n.inputs[2]));
    std::vector<int64_t> st = broadcast_strides(c.in[2].shape, Shape{m, nn});
    bm = st[0];
    bn = st[1];
  }
  const bool row_bias = bias && bm == 0 && bn == 1 && beta == 1.f;
  const bool lt_relu = act.act == Act::Relu && (row_bias || !bias);
  add_gemm(ta, tb, m, nn, k, ta ? m : k, tb ? k : nn, nn, alpha, 1, 0, 0, 0, cf(A), cf(B), f(Y),
           row_bias ? bias : nullptr, lt_relu);
  bias_act(f(Y), m * nn, row_bias ? nullptr : bias, nn, std::numeric_limits<long long>::max(), bm, bn, beta,
           lt_relu ? Act::None : act.act, act.a, act.b);
}

void Lowering::matmul(const InferCtx& c) {
  const Node& n = c.node;
  Shape a = c.in[0].shape, b = c.in[1].shape;
  const bool a1 = a.size() == 1, b1 = b.size() == 1;
  if (a1) a.insert(a.begin(), 1);
  if (b1) b.push_back(1);
  const int64_t m = a[a.size() - 2], k = a.back(), nn = b.back();
  const Shape ab(a.begin(), a.end() - 2), bb(b.begin(), b.end() - 2);
  const int64_t na = numel(ab), nb = numel(bb);
  const Value A = val(n.inputs[0]), B = val(n.inputs[1]), Y = val(n.outputs[0]);
  const Activation act = activation(c);
  const float* bias = c.has_input(2) ? cf(val(n.inputs[2])) : nullptr;
  const int64_t bias_n = bias ? numel(c.in[2].shape) : 0;
  const bool row_bias = bias && bias_n == nn;
  const bool lt_relu = act.act == Act::Relu && (row_bias || !bias);
  const int64_t out_blocks = std::max(na, nb);
  if (nb == 1) {  // B shared: one GEMM over all rows of A
    add_gemm(false, false, na * m, nn, k, k, nn, nn, 1.f, 1, 0, 0, 0, cf(A), cf(B), f(Y), row_bias ? bias : nullptr,
             lt_relu);
  } else if (ab == bb || na == 1) {
    add_gemm(false, false, m, nn, k, k, nn, nn, 1.f, nb, na == 1 ? 0 : m * k, k * nn, m * nn, cf(A), cf(B), f(Y),
             row_bias ? bias : nullptr, lt_relu);
  } else {
    fail(PD_ERR_UNSUPPORTED, n.describe(), ": the CUDA backend runs batched MatMul only when the batch ",
         "dimensions are equal or one side has none (", shape_str(c.in[0].shape), " x ", shape_str(c.in[1].shape), ")");
  }
  const long long total = out_blocks * m * nn;
  bias_act(f(Y), total, row_bias ? nullptr : bias, nn, std::numeric_limits<long long>::max(), 0,
           bias_n == 1 ? 0 : 1, 1.f, lt_relu ? Act::None : act.act, act.a, act.b);
}

void Lowering::conv(const InferCtx& c) {
  const Node& n = c.node;
  const Shape& xs = c.in[0].shape;
  const Shape& ws = c.in[1].shape;
  const Shape& ys = c.out[0].shape;
  const int64_t N = xs[0], C = xs[1], H = xs[2], W = xs[3], M = ws[0], KH = ws[2], KW = ws[3];
  const int64_t OH = ys[2], OW = ys[3];
  std::vector<int64_t> strides = n.attr_ints("strides", {1, 1}), dil = n.attr_ints("dilations", {1, 1}),
                       pads = n.attr_ints("pads", {0, 0, 0, 0});
  if (strides.empty()) strides = {1, 1};
  if (dil.empty()) dil = {1, 1};
  if (pads.empty()) pads = {0, 0, 0, 0};
  const std::string auto_pad = n.attr_string("auto_pad", "NOTSET");
  int64_t pb[2] = {pads[0], pads[1]};
  const int64_t in_[2] = {H, W}, k_[2] = {KH, KW}, out_[2] = {OH, OW};
  for (int i = 0; i < 2; ++i) {
    if (auto_pad == "VALID") pb[i] = 0;
    if (auto_pad == "SAME_UPPER" || auto_pad == "SAME_LOWER") {
      const int64_t ek = (k_[i] - 1) * dil[i] + 1;
      const int64_t total = std::max<int64_t>(0, (out_[i] - 1) * strides[i] + ek - in_[i]);
      pb[i] = auto_pad == "SAME_UPPER" ? total / 2 : total - total / 2;
    }
  }
  const int64_t K = C * KH * KW, P = OH * OW;
  const Value X = val(n.inputs[0]), Wt = val(n.inputs[1]), Y = val(n.outputs[0]);
  const bool direct = KH == 1 && KW == 1 && strides[0] == 1 && strides[1] == 1 && pb[0] == 0 && pb[1] == 0 &&
                      OH == H && OW == W;
  const float* col = cf(X);
  if (!direct) {
    scratch_.push_back(dev_alloc(static_cast<size_t>(N * K * P) * sizeof(float)));
    extra_bytes_ += static_cast<size_t>(N * K * P) * sizeof(float);
    float* colp = static_cast<float*>(scratch_.back().get());
    col = colp;
    CUfunction k = fn("pd_im2col_f32");
    const long long cnt = N * K * P;
    const long long sh = strides[0], sw = strides[1], ph = pb[0], pw = pb[1], dh = dil[0], dw = dil[1];
    const void* x = X.dev;
    const long long NN = N, CC = C, HH = H, WW = W, KKH = KH, KKW = KW, OOH = OH, OOW = OW;
    steps_.push_back([=](cudaStream_t s) {
      launch(k, cnt, s, x, colp, NN, CC, HH, WW, KKH, KKW, OOH, OOW, sh, sw, ph, pw, dh, dw);
    });
  }
  // Y_n [M, P] = W [M, K] x col_n [K, P], for every image n.
  add_gemm(false, false, M, P, K, K, P, P, 1.f, N, 0, K * P, M * P, cf(Wt), col, f(Y), nullptr, false);
  const Activation act = activation(c);
  const float* bias = c.has_input(2) ? cf(val(n.inputs[2])) : nullptr;
  bias_act(f(Y), N * M * P, bias, P, M, 1, 0, 1.f, act.act, act.a, act.b);
}

}  // namespace pd::cuda
