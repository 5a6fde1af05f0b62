// Shape logic of the neural-network ops shared by the op files: numpy-style MatMul
// broadcasting (MatMul, MatMulInteger, QLinearMatMul) and the Conv geometry and im2col (Conv,
// ConvInteger, QLinearConv, the pools). Defined in nn.cpp.
#pragma once

#include <cstdint>
#include <vector>

#include "../op.h"

namespace pd {

// ---- MatMul ----

struct MatMulShape {
  int64_t m = 0, n = 0, k = 0;
  int64_t batch = 1;   // number of [m, n] output blocks
  bool fold = false;   // B is shared by all blocks: one GEMM with batch * m rows
  std::vector<int64_t> a_off, b_off;  // per block, in elements
};

// Output shape of numpy-style matmul of inputs ai and bi (and the plan, when p != nullptr).
Shape matmul_shape(const InferCtx& c, MatMulShape* p, size_t ai = 0, size_t bi = 1);

// ---- Conv geometry ----

constexpr int kMaxSpatial = 3;

// Spatial dims right-aligned in 3 slots; unused leading slots are size 1, kernel 1, stride 1.
struct Geometry {
  int nsp = 0;
  int64_t in[kMaxSpatial] = {1, 1, 1}, k[kMaxSpatial] = {1, 1, 1}, out[kMaxSpatial] = {1, 1, 1};
  int64_t stride[kMaxSpatial] = {1, 1, 1}, dil[kMaxSpatial] = {1, 1, 1};
  int64_t pad_b[kMaxSpatial] = {0, 0, 0}, pad_e[kMaxSpatial] = {0, 0, 0};
  int64_t in_size() const { return in[0] * in[1] * in[2]; }
  int64_t out_size() const { return out[0] * out[1] * out[2]; }
  int64_t k_size() const { return k[0] * k[1] * k[2]; }
};

// x: the input's shape [N, C, D1..Dn]; kernel: the kernel's spatial shape. Reads the node's
// strides, dilations, pads and auto_pad; fails naming the node on bad values.
Geometry geometry(const InferCtx& c, const Shape& x, const std::vector<int64_t>& kernel,
                  bool ceil_mode, bool allow_dilations);
// [n, ch, out spatial...]
Shape spatial_out_shape(const Geometry& g, int64_t n, int64_t ch);

struct ConvShape {
  Geometry g;
  int64_t n = 0, c = 0, m = 0, groups = 1, cg = 0, mg = 0;
  bool direct = false;  // 1x1, stride 1, no padding: the input is already the column matrix
};

// The convolution of input xi (X) by input wi (W) with the node's Conv attributes (group,
// kernel_shape, strides, dilations, pads, auto_pad).
ConvShape conv_shape(const InferCtx& c, size_t xi, size_t wi);

// col[(ci, kd, kh, kw), (od, oh, ow)] = x[ci, od*s + kd*d - p, ...] (0 in the padding).
// Instantiated for float, double and int32_t.
template <typename T>
void im2col(const Geometry& g, int64_t channels, const T* x, T* col);

}  // namespace pd
