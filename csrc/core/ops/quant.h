// Quantization helpers shared by ops/quant.cpp (the ONNX quantization ops) and the fused
// quantized ops (ops/quant_fused.cpp) with their fusion pass.
#pragma once

#include <cstdint>

#include "../op.h"

namespace pd {

// ONNX's name of a tensor element type, also for the float8 / 4-bit types policyd refuses.
const char* quant_type_name(int32_t onnx_type);
// uint8, int8, uint16, int16.
bool quant_int_type(DType t);

// How element (o, a, i) of x viewed as [outer, len, inner] (len: the quantization axis) finds
// its scale and zero point: index o * so + (a / block) * sa + i * si. Per-tensor: all strides 0.
struct QuantAxis {
  int64_t outer = 1, len = 1, inner = 1;
  int64_t block = 1;
  int64_t so = 0, sa = 0, si = 0;
};
// The layout of QuantizeLinear/DequantizeLinear's scale (input scale_i) and zero point
// (input zp_i) for x of shape xs: per-tensor (scalar or [1]), per-axis (1-D along `axis`) or
// block (opset 21 `block_size`, when allow_block). Fails naming the node on a scale or zero
// point of the wrong shape or an axis out of range.
QuantAxis quant_axis(const InferCtx& c, const Shape& xs, size_t scale_i, size_t zp_i, bool allow_block);

// Fails unless input i is a float32 scale (float16/bfloat16: unsupported).
void require_f32_scale(const InferCtx& c, size_t i, const char* what);

struct ZeroPoint {
  enum Mode { None, Tensor, Per } mode = None;
};
// The form of zero-point input zp_i of integer input x_i: absent, per tensor, or 1-D
// [per_len] (per_len < 0: not allowed). Its type must be x's.
ZeroPoint zero_point_form(const InferCtx& c, size_t zp_i, size_t x_i, int64_t per_len, const char* what,
                          const char* per_what);

enum class ScaleForm { Tensor, Per };
// Scale input i: float32, scalar/[1] or 1-D [per_len] (per_len < 0: scalar only).
ScaleForm scale_form(const InferCtx& c, size_t i, int64_t per_len, const char* what, const char* per_what);

// y[m, n] = a[m, k] * b[k, n] in int32 (wrapping), row-major, contiguous.
void igemm(int64_t m, int64_t n, int64_t k, const int32_t* a, const int32_t* b, int32_t* y);

// Element i of a uint8/int8 view as int32.
inline int32_t q8_at(const View& v, int64_t i) {
  return v.dtype == DType::U8 ? static_cast<int32_t>(v.as<const uint8_t>()[i])
                              : static_cast<int32_t>(v.as<const int8_t>()[i]);
}

// x (uint8/int8, rows x cols) minus its zero point into out as int32. zp: nullptr or mode
// None (0), one value (Tensor), or Per: per row (zp[r % period]) when per_row, else per column.
void shift_q8(const View& x, int64_t rows, int64_t cols, const View* zp, ZeroPoint::Mode mode, bool per_row,
              int64_t period, int32_t* out);

// round-half-to-even(v) saturated to [0, 255] (NaN: 0): what QuantizeLinear and
// DynamicQuantizeLinear compute for uint8 from v = x / scale, with zero point zp.
inline uint8_t quantize_u8(float v, float zp) {
  // |v| > 512 saturates whatever zp is; below 2^22 adding and subtracting 1.5 * 2^23 rounds
  // half to even in the default rounding mode (what nearbyint does, without a libm call).
  // Written as selects so that loops over it vectorize; NaN ends at 0.
  v = v > -512.f ? v : -512.f;
  v = v < 512.f ? v : 512.f;
  v = (v + 12582912.f) - 12582912.f;
  v += zp;
  v = v > 0.f ? v : 0.f;
  v = v < 255.f ? v : 255.f;
  return static_cast<uint8_t>(static_cast<int32_t>(v));
}

// DynamicQuantizeLinear of x[0, n) into y: y[i] = quantize_u8(x[i] / scale, zp).
void dynamic_quantize(const float* x, int64_t n, float scale, uint8_t zp, uint8_t* y);

// DynamicQuantizeLinear's parameters of x[0, n): scale (1 when the range is empty) and zero point.
void dynamic_quant_params(const float* x, int64_t n, float* scale, uint8_t* zp);

// The fused quantized ops of quant_fused.cpp (called by register_quant_ops).
void register_quant_fused_ops(OpRegistry& r);

}  // namespace pd
