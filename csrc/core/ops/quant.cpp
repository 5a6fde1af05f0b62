// Quantization ops (ai.onnx domain): QuantizeLinear, DequantizeLinear, DynamicQuantizeLinear,
// MatMulInteger, ConvInteger, QLinearMatMul, QLinearConv. Portable reference kernels; the CPU
// backend runs the matrix ops (and the fused ops of quant_passes.cpp) on oneDNN's int8
// primitives.
//
// Semantics follow the ONNX operator spec: rounding half to even, saturation to the integer
// type's range, zero points optional (0) where the spec makes them optional.
//   - QuantizeLinear / DequantizeLinear: per-tensor (scalar or [1] scale), per-axis (1-D scale
//     along `axis`) and, from opset 21, block quantization (`block_size`). Integer types uint8,
//     int8 (and int32 input of DequantizeLinear); uint16/int16 from opset 21. float8 (opset
//     19) and int4/uint4 (opset 21) are refused as unsupported, naming the node; so are
//     float16/bfloat16 scales.
//   - DynamicQuantizeLinear: uint8, scale (max(0, max x) - min(0, min x)) / 255 (1 when the
//     range is empty, as ONNX Runtime does, where the spec would divide by zero).
//   - MatMulInteger / QLinearMatMul: numpy MatMul broadcasting; a's zero point per tensor or
//     per row (1-D [M]), b's scale and zero point per tensor or per column (1-D [N]). The N-D
//     zero-point forms ([D1, D2, M, 1]) are refused as unsupported.
//   - ConvInteger / QLinearConv: every Conv attribute the float Conv supports (nn.cpp's
//     geometry and im2col, 1-3 spatial dims, groups, dilations, auto_pad); w's scale and zero
//     point per tensor or per output channel. Padding reads as the zero point (0 after the
//     shift), as the spec's reference and ONNX Runtime do.
//
// Integer products accumulate in int32; the QLinear ops requantize acc * (sa * sb / sy) in
// double with the multiplier rounded to float first (what the ONNX reference computes).
#include <algorithm>
#if defined(__x86_64__)
#include <immintrin.h>
#endif
#include <cmath>
#include <cstring>
#include <limits>
#include <type_traits>

#include "../op.h"
#include "nn.h"
#include "quant.h"

namespace pd {

// ---------------------------------------------------------------------------------------------
// Shared helpers (quant.h)
// ---------------------------------------------------------------------------------------------

const char* quant_type_name(int32_t onnx_type) { return dtype_name(static_cast<DType>(onnx_type)); }

bool quant_int_type(DType t) {
  return t == DType::U8 || t == DType::I8 || t == DType::U16 || t == DType::I16;
}

QuantAxis quant_axis(const InferCtx& c, const Shape& xs, size_t scale_i, size_t zp_i, bool allow_block) {
  const TensorInfo& s = c.input(scale_i);
  QuantAxis q;
  q.outer = numel(xs);
  const int64_t block = c.opset() >= 21 ? c.node.attr_int("block_size", 0) : 0;
  if (block < 0) c.fail("'block_size' must be >= 0, got ", block);
  if (block > 0 && !allow_block) c.unsupported("'block_size' (block quantization) on this op");
  const bool scalar = block == 0 && s.shape.size() <= 1 && numel(s.shape) == 1;
  if (!scalar) {
    const int64_t rank = static_cast<int64_t>(xs.size());
    const int64_t axis_attr = c.node.attr_int("axis", 1);
    if (axis_attr < -rank || axis_attr >= rank)
      c.fail("'axis' ", axis_attr, " is out of range for input of rank ", rank, " (", shape_str(xs),
             ") with a non-scalar scale ", shape_str(s.shape));
    const int64_t axis = axis_attr < 0 ? axis_attr + rank : axis_attr;
    q.outer = 1;
    for (int64_t d = 0; d < axis; ++d) q.outer *= xs[d];
    q.len = xs[axis];
    q.inner = 1;
    for (int64_t d = axis + 1; d < rank; ++d) q.inner *= xs[d];
    if (block == 0) {
      if (s.shape.size() != 1 || s.shape[0] != q.len)
        c.fail("scale ", shape_str(s.shape), " must be a scalar or 1-D [", q.len, "] (x ",
               shape_str(xs), ", axis ", axis, ")");
      q.sa = 1;
    } else {
      Shape want = xs;
      want[axis] = (q.len + block - 1) / block;
      if (s.shape != want)
        c.fail("scale ", shape_str(s.shape), " must be ", shape_str(want), " for block_size ", block,
               " along axis ", axis, " of x ", shape_str(xs));
      q.block = block;
      q.so = want[axis] * q.inner;
      q.sa = q.inner;
      q.si = 1;
    }
  }
  if (c.has_input(zp_i) && c.in[zp_i].shape != s.shape) {
    // A [1] zero point with a scalar scale (or the reverse) is the same per-tensor form.
    const bool both_scalar = scalar && c.in[zp_i].shape.size() <= 1 && numel(c.in[zp_i].shape) == 1;
    if (!both_scalar)
      c.fail("zero point ", shape_str(c.in[zp_i].shape), " must have the shape of the scale ",
             shape_str(s.shape));
  }
  return q;
}

void require_f32_scale(const InferCtx& c, size_t i, const char* what) {
  const DType t = c.input(i).dtype;
  if (t == DType::F16 || t == DType::BF16)
    c.unsupported(what, " of type ", dtype_name(t), " (policyd computes quantization scales in float)");
  if (t != DType::F32) c.fail(what, " must be float, got ", quant_type_name(static_cast<int32_t>(t)));
}

ZeroPoint zero_point_form(const InferCtx& c, size_t zp_i, size_t x_i, int64_t per_len, const char* what,
                          const char* per_what) {
  ZeroPoint z;
  if (!c.has_input(zp_i)) return z;
  const TensorInfo& zp = c.in[zp_i];
  const DType xt = c.input(x_i).dtype;
  if (zp.dtype != xt)
    c.fail(what, " has type ", quant_type_name(static_cast<int32_t>(zp.dtype)), ", which differs from ",
           "its input's ", dtype_name(xt));
  if (zp.shape.size() <= 1 && numel(zp.shape) == 1) {
    z.mode = ZeroPoint::Tensor;
  } else if (zp.shape.size() == 1 && zp.shape[0] == per_len) {
    z.mode = ZeroPoint::Per;
  } else if (zp.shape.size() > 1) {
    c.unsupported(what, " of shape ", shape_str(zp.shape), " (N-D zero points; scalar or 1-D [",
                  per_len, "] ", per_what, " are supported)");
  } else {
    c.fail(what, " ", shape_str(zp.shape), " must be a scalar or 1-D [", per_len, "] (", per_what, ")");
  }
  return z;
}

ScaleForm scale_form(const InferCtx& c, size_t i, int64_t per_len, const char* what, const char* per_what) {
  require_f32_scale(c, i, what);
  const Shape& s = c.in[i].shape;
  if (s.size() <= 1 && numel(s) == 1) return ScaleForm::Tensor;
  if (per_len >= 0 && s.size() == 1 && s[0] == per_len) return ScaleForm::Per;
  if (per_len < 0) c.fail(what, " ", shape_str(s), " must be a scalar (per-tensor)");
  c.fail(what, " ", shape_str(s), " must be a scalar or 1-D [", per_len, "] (", per_what, ")");
}

void igemm(int64_t m, int64_t n, int64_t k, const int32_t* a, const int32_t* b, int32_t* y) {
  for (int64_t i = 0; i < m; ++i) {
    int32_t* yr = y + i * n;
    std::fill(yr, yr + n, 0);
    const int32_t* ar = a + i * k;
    for (int64_t p = 0; p < k; ++p) {
      const int32_t av = ar[p];
      if (av == 0) continue;
      const int32_t* br = b + p * n;
      // Unsigned arithmetic: int32 wrap-around instead of undefined behaviour on overflow.
      for (int64_t j = 0; j < n; ++j)
        yr[j] = static_cast<int32_t>(static_cast<uint32_t>(yr[j]) +
                                     static_cast<uint32_t>(av) * static_cast<uint32_t>(br[j]));
    }
  }
}

void shift_q8(const View& x, int64_t rows, int64_t cols, const View* zp, ZeroPoint::Mode mode, bool per_row,
              int64_t period, int32_t* out) {
  const bool u8 = x.dtype == DType::U8;
  const uint8_t* xu = x.as<const uint8_t>();
  const int8_t* xs = x.as<const int8_t>();
  auto row = [&](int64_t r, auto zfn) {
    int32_t* o = out + r * cols;
    if (u8) {
      const uint8_t* s = xu + r * cols;
      for (int64_t j = 0; j < cols; ++j) o[j] = static_cast<int32_t>(s[j]) - zfn(j);
    } else {
      const int8_t* s = xs + r * cols;
      for (int64_t j = 0; j < cols; ++j) o[j] = static_cast<int32_t>(s[j]) - zfn(j);
    }
  };
  for (int64_t r = 0; r < rows; ++r) {
    if (!zp || mode == ZeroPoint::None) {
      row(r, [](int64_t) { return 0; });
    } else if (mode == ZeroPoint::Tensor) {
      const int32_t z = q8_at(*zp, 0);
      row(r, [z](int64_t) { return z; });
    } else if (per_row) {
      const int32_t z = q8_at(*zp, r % period);
      row(r, [z](int64_t) { return z; });
    } else {
      const View& zv = *zp;
      row(r, [&zv](int64_t j) { return q8_at(zv, j); });
    }
  }
}

// The two passes of DynamicQuantizeLinear are on the hot path of pd.DynQuantMatMul (a oneDNN
// int8 matmul around them): on x86-64 with AVX-512 they run on 16 lanes, with the same
// results as the scalar code (NaN ignored by min/max and quantized to 0).
#if defined(__x86_64__)
#define PD_QUANT_AVX512 1
// GCC 12's AVX-512 headers trip its own uninitialized-value warnings (_mm512_undefined_*).
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
namespace {

__attribute__((target("avx512f"))) void dynamic_quantize_avx512(const float* x, int64_t n, float scale,
                                                               uint8_t zp, uint8_t* y) {
  const __m512 s = _mm512_set1_ps(scale), z = _mm512_set1_ps(static_cast<float>(zp));
  const __m512 lo = _mm512_set1_ps(-512.f), hi = _mm512_set1_ps(512.f);
  const __m512 q0 = _mm512_setzero_ps(), q1 = _mm512_set1_ps(255.f);
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    __m512 v = _mm512_div_ps(_mm512_loadu_ps(x + i), s);
    v = _mm512_min_ps(_mm512_max_ps(v, lo), hi);  // max(NaN, lo) = lo
    v = _mm512_roundscale_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    v = _mm512_min_ps(_mm512_max_ps(_mm512_add_ps(v, z), q0), q1);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(y + i), _mm512_cvtepi32_epi8(_mm512_cvttps_epi32(v)));
  }
  const float zf = static_cast<float>(zp);
  for (; i < n; ++i) y[i] = quantize_u8(x[i] / scale, zf);
}

__attribute__((target("avx512f"))) void min_max_avx512(const float* x, int64_t n, float* l, float* h) {
  __m512 lo = _mm512_setzero_ps(), hi = _mm512_setzero_ps();
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m512 v = _mm512_loadu_ps(x + i);
    lo = _mm512_min_ps(v, lo);  // min(NaN, lo) = lo
    hi = _mm512_max_ps(v, hi);
  }
  float a = _mm512_reduce_min_ps(lo), b = _mm512_reduce_max_ps(hi);
  for (; i < n; ++i) {
    a = x[i] < a ? x[i] : a;
    b = x[i] > b ? x[i] : b;
  }
  *l = a;
  *h = b;
}

// A static initializer may run before libgcc's CPU probe: initialize it first.
const bool kHaveAvx512 = [] {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512f") != 0;
}();

}  // namespace
#pragma GCC diagnostic pop
#endif

void dynamic_quantize(const float* x, int64_t n, float scale, uint8_t zp, uint8_t* y) {
#ifdef PD_QUANT_AVX512
  if (kHaveAvx512) return dynamic_quantize_avx512(x, n, scale, zp, y);
#endif
  const float z = static_cast<float>(zp);
  for (int64_t i = 0; i < n; ++i) y[i] = quantize_u8(x[i] / scale, z);
}

namespace {

template <typename Q>
inline Q saturate_round(double v) {
  constexpr double lo = static_cast<double>(std::numeric_limits<Q>::min());
  constexpr double hi = static_cast<double>(std::numeric_limits<Q>::max());
  v = std::nearbyint(v);  // the default rounding mode: half to even
  if (!(v >= lo)) v = lo;  // NaN too
  if (v > hi) v = hi;
  return static_cast<Q>(v);
}

template <typename Q>
inline Q saturate_roundf(float v) {
  constexpr float lo = static_cast<float>(std::numeric_limits<Q>::min());
  constexpr float hi = static_cast<float>(std::numeric_limits<Q>::max());
  v = std::nearbyint(v);
  if (!(v >= lo)) v = lo;
  if (v > hi) v = hi;
  return static_cast<Q>(v);
}

// Calls f with a null Q* for the quantized integer types.
template <typename F>
decltype(auto) dispatch_quant(DType t, const InferCtx& c, F&& f) {
  switch (t) {
    case DType::U8: return f(static_cast<uint8_t*>(nullptr));
    case DType::I8: return f(static_cast<int8_t*>(nullptr));
    case DType::U16: return f(static_cast<uint16_t*>(nullptr));
    case DType::I16: return f(static_cast<int16_t*>(nullptr));
    case DType::I32: return f(static_cast<int32_t*>(nullptr));
    default: c.unsupported("data type ", quant_type_name(static_cast<int32_t>(t)));
  }
}

void require_q8(const InferCtx& c, size_t i, const char* what) {
  const DType t = c.input(i).dtype;
  if (t != DType::U8 && t != DType::I8)
    c.unsupported(what, " of type ", quant_type_name(static_cast<int32_t>(t)), " (uint8 and int8 are supported)");
}

// ---------------------------------------------------------------------------------------------
// QuantizeLinear / DequantizeLinear
// ---------------------------------------------------------------------------------------------

// The integer type of a QuantizeLinear/DequantizeLinear tensor: refuses float8 and 4-bit types
// and the 16-bit ones before opset 21.
void check_quant_type(const InferCtx& c, DType t, const char* what, bool allow_i32) {
  const int32_t v = static_cast<int32_t>(t);
  if (v >= 17 && v <= 23)
    c.unsupported(what, " of type ", quant_type_name(v), " is not supported (policyd quantizes to ",
                  "uint8, int8, uint16 and int16)");
  if (t == DType::I32 && allow_i32) return;
  if ((t == DType::U16 || t == DType::I16) && c.opset() < 21)
    c.fail(what, " of type ", dtype_name(t), " needs opset 21 (the model imports opset ", c.opset(), ")");
  if (!quant_int_type(t))
    c.fail(what, " must be uint8 or int8", (c.opset() >= 21 ? ", uint16 or int16" : ""), ", got ",
           quant_type_name(v));
}

void infer_dequantize(InferCtx& c) {
  const TensorInfo& x = c.input(0);
  check_quant_type(c, x.dtype, "input x", true);
  require_f32_scale(c, 1, "x_scale");
  if (c.has_input(2) && c.in[2].dtype != x.dtype)
    c.fail("x_zero_point has type ", quant_type_name(static_cast<int32_t>(c.in[2].dtype)),
           ", which differs from x's ", dtype_name(x.dtype));
  quant_axis(c, x.shape, 1, 2, true);
  c.out[0].dtype = DType::F32;
  c.out[0].shape = x.shape;
}

std::unique_ptr<Kernel> make_dequantize(const InferCtx& c) {
  const QuantAxis q = quant_axis(c, c.in[0].shape, 1, 2, true);
  const bool has_zp = c.has_input(2);
  return dispatch_quant(c.in[0].dtype, c, [&](auto* tag) -> std::unique_ptr<Kernel> {
    using Q = PD_TAG_TYPE(tag);
    return make_kernel([q, has_zp](RunCtx&, const View* in, View* out) {
      const Q* x = in[0].as<const Q>();
      const float* s = in[1].as<const float>();
      const Q* zp = has_zp ? in[2].as<const Q>() : nullptr;
      float* y = out[0].as<float>();
      for (int64_t o = 0; o < q.outer; ++o)
        for (int64_t a = 0; a < q.len; ++a) {
          const int64_t pb = o * q.so + (a / q.block) * q.sa;
          const int64_t xb = (o * q.len + a) * q.inner;
          if (q.si == 0) {
            const float sc = s[pb];
            const int64_t z = zp ? static_cast<int64_t>(zp[pb]) : 0;
            for (int64_t i = 0; i < q.inner; ++i)
              y[xb + i] = static_cast<float>(static_cast<int64_t>(x[xb + i]) - z) * sc;
          } else {
            for (int64_t i = 0; i < q.inner; ++i) {
              const int64_t z = zp ? static_cast<int64_t>(zp[pb + i]) : 0;
              y[xb + i] = static_cast<float>(static_cast<int64_t>(x[xb + i]) - z) * s[pb + i];
            }
          }
        }
    });
  });
}

DType quantize_out_type(const InferCtx& c) {
  DType t = DType::U8;
  const int64_t od = c.opset() >= 21 ? c.node.attr_int("output_dtype", 0) : 0;
  if (od != 0) {
    t = static_cast<DType>(od);
    check_quant_type(c, t, "'output_dtype'", false);
    if (c.has_input(2) && c.in[2].dtype != t)
      c.fail("'output_dtype' ", quant_type_name(static_cast<int32_t>(od)), " differs from y_zero_point's type ",
             quant_type_name(static_cast<int32_t>(c.in[2].dtype)));
  }
  if (c.has_input(2)) t = c.in[2].dtype;
  check_quant_type(c, t, "y_zero_point", false);
  return t;
}

void infer_quantize(InferCtx& c) {
  const TensorInfo& x = c.input(0);
  if (x.dtype == DType::F16 || x.dtype == DType::BF16)
    c.unsupported("input x of type ", dtype_name(x.dtype));
  if (x.dtype != DType::F32 && x.dtype != DType::I32)
    c.fail("input x must be float or int32, got ", quant_type_name(static_cast<int32_t>(x.dtype)));
  require_f32_scale(c, 1, "y_scale");
  c.out[0].dtype = quantize_out_type(c);
  quant_axis(c, x.shape, 1, 2, true);
  c.out[0].shape = x.shape;
}

template <typename Q, typename X>
void quantize_run(const QuantAxis& q, const X* x, const float* s, const Q* zp, Q* y) {
  for (int64_t o = 0; o < q.outer; ++o)
    for (int64_t a = 0; a < q.len; ++a) {
      const int64_t pb = o * q.so + (a / q.block) * q.sa;
      const int64_t xb = (o * q.len + a) * q.inner;
      for (int64_t i = 0; i < q.inner; ++i) {
        const int64_t pi = pb + i * q.si;
        const float z = zp ? static_cast<float>(zp[pi]) : 0.f;
        if constexpr (std::is_same<X, float>::value) {
          // float32 division, as the spec's reference computes x / y_scale.
          y[xb + i] = saturate_roundf<Q>(std::nearbyint(x[xb + i] / s[pi]) + z);
        } else {
          y[xb + i] = saturate_round<Q>(std::nearbyint(static_cast<double>(x[xb + i]) / s[pi]) + z);
        }
      }
    }
}

std::unique_ptr<Kernel> make_quantize(const InferCtx& c) {
  const QuantAxis q = quant_axis(c, c.in[0].shape, 1, 2, true);
  const bool has_zp = c.has_input(2);
  const bool f32 = c.in[0].dtype == DType::F32;
  return dispatch_quant(c.out[0].dtype, c, [&](auto* tag) -> std::unique_ptr<Kernel> {
    using Q = PD_TAG_TYPE(tag);
    return make_kernel([q, has_zp, f32](RunCtx&, const View* in, View* out) {
      const Q* zp = has_zp ? in[2].as<const Q>() : nullptr;
      if (f32) quantize_run<Q>(q, in[0].as<const float>(), in[1].as<const float>(), zp, out[0].as<Q>());
      else quantize_run<Q>(q, in[0].as<const int32_t>(), in[1].as<const float>(), zp, out[0].as<Q>());
    });
  });
}

// ---------------------------------------------------------------------------------------------
// DynamicQuantizeLinear
// ---------------------------------------------------------------------------------------------

void infer_dynamic_quantize(InferCtx& c) {
  const TensorInfo& x = c.input(0);
  if (x.dtype == DType::F16 || x.dtype == DType::BF16) c.unsupported("input x of type ", dtype_name(x.dtype));
  if (x.dtype != DType::F32) c.fail("input x must be float, got ", dtype_name(x.dtype));
  if (c.out.size() != 3) c.fail("has 3 outputs (y, y_scale, y_zero_point), the node lists ", c.out.size());
  c.out[0] = TensorInfo{DType::U8, x.shape, nullptr};
  c.out[1] = TensorInfo{DType::F32, Shape{}, nullptr};
  c.out[2] = TensorInfo{DType::U8, Shape{}, nullptr};
}

std::unique_ptr<Kernel> make_dynamic_quantize(const InferCtx& c) {
  const int64_t n = numel(c.in[0].shape);
  return make_kernel([n](RunCtx&, const View* in, View* out) {
    const float* x = in[0].as<const float>();
    float scale;
    uint8_t zp;
    dynamic_quant_params(x, n, &scale, &zp);
    if (out[1].data) *out[1].as<float>() = scale;
    if (out[2].data) *out[2].as<uint8_t>() = zp;
    dynamic_quantize(x, n, scale, zp, out[0].as<uint8_t>());
  });
}

// ---------------------------------------------------------------------------------------------
// MatMulInteger / QLinearMatMul
// ---------------------------------------------------------------------------------------------

// Input positions: MatMulInteger (a, b, a_zp, b_zp); QLinearMatMul (a, a_scale, a_zp, b,
// b_scale, b_zp, y_scale, y_zp).
struct QMatMulPlan {
  MatMulShape s;
  size_t ai = 0, bi = 1, azi = 2, bzi = 3;
  ZeroPoint az, bz;
  int64_t a_numel = 0, b_numel = 0;
  bool qlinear = false;
  ScaleForm bs = ScaleForm::Tensor;
};

QMatMulPlan qmatmul_plan(const InferCtx& c) {
  QMatMulPlan p;
  p.qlinear = c.node.op == "QLinearMatMul";
  if (p.qlinear) {
    p.ai = 0;
    p.bi = 3;
    p.azi = 2;
    p.bzi = 5;
  }
  require_q8(c, p.ai, "input A");
  require_q8(c, p.bi, "input B");
  matmul_shape(c, &p.s, p.ai, p.bi);
  p.az = zero_point_form(c, p.azi, p.ai, p.qlinear ? -1 : p.s.m, "a_zero_point", "per row of A");
  if (p.qlinear && p.az.mode == ZeroPoint::Per) c.fail("a_zero_point must be a scalar");
  p.bz = zero_point_form(c, p.bzi, p.bi, p.s.n, "b_zero_point", "per column of B");
  p.a_numel = numel(c.in[p.ai].shape);
  p.b_numel = numel(c.in[p.bi].shape);
  if (p.qlinear) {
    scale_form(c, 1, -1, "a_scale", "");
    p.bs = scale_form(c, 4, p.s.n, "b_scale", "per column of B");
    scale_form(c, 6, -1, "y_scale", "");
    if (c.has_input(7)) {
      const DType t = c.in[7].dtype;
      if (t != DType::U8 && t != DType::I8)
        c.unsupported("y_zero_point of type ", quant_type_name(static_cast<int32_t>(t)));
      if (!(c.in[7].shape.size() <= 1 && numel(c.in[7].shape) == 1))
        c.fail("y_zero_point ", shape_str(c.in[7].shape), " must be a scalar");
    }
  }
  return p;
}

void infer_qmatmul(InferCtx& c) {
  QMatMulPlan p = qmatmul_plan(c);
  c.out[0].shape = matmul_shape(c, nullptr, p.ai, p.bi);
  c.out[0].dtype = p.qlinear ? (c.has_input(7) ? c.in[7].dtype : DType::U8) : DType::I32;
}

class QMatMulKernel final : public Kernel {
 public:
  QMatMulKernel(const QMatMulPlan& p, DType out) : p_(p), out_(out) {
    a32_.resize(static_cast<size_t>(p_.a_numel));
    b32_.resize(static_cast<size_t>(p_.b_numel));
    if (p_.qlinear) {
      acc_.resize(static_cast<size_t>(p_.s.batch * p_.s.m * p_.s.n));
      mult_.resize(static_cast<size_t>(p_.s.n));
    }
  }
  void run(RunCtx&, const View* in, View* out) override {
    const MatMulShape& s = p_.s;
    if (s.m == 0 || s.n == 0 || s.batch == 0) return;
    const View* az = p_.az.mode != ZeroPoint::None ? &in[p_.azi] : nullptr;
    const View* bz = p_.bz.mode != ZeroPoint::None ? &in[p_.bzi] : nullptr;
    // A as rows of K (row r is row r % M of its matrix), B as rows of N.
    shift_q8(in[p_.ai], s.k ? p_.a_numel / s.k : 0, s.k, az, p_.az.mode, true, s.m, a32_.data());
    shift_q8(in[p_.bi], s.n ? p_.b_numel / s.n : 0, s.n, bz, p_.bz.mode, false, 0, b32_.data());
    int32_t* acc = p_.qlinear ? acc_.data() : out[0].as<int32_t>();
    const int64_t mn = s.m * s.n;
    if (s.fold) {
      igemm(s.batch * s.m, s.n, s.k, a32_.data(), b32_.data(), acc);
    } else {
      for (int64_t i = 0; i < s.batch; ++i)
        igemm(s.m, s.n, s.k, a32_.data() + s.a_off[i], b32_.data() + s.b_off[i], acc + i * mn);
    }
    if (!p_.qlinear) return;
    const float sa = in[1].as<const float>()[0], sy = in[6].as<const float>()[0];
    const float* sb = in[4].as<const float>();
    for (int64_t j = 0; j < s.n; ++j) mult_[j] = sa * sb[p_.bs == ScaleForm::Per ? j : 0] / sy;
    const int64_t rows = s.batch * s.m;
    if (out_ == DType::U8)
      requantize<uint8_t>(acc, rows, s.n, in[7].data ? q8_at(in[7], 0) : 0, out[0].as<uint8_t>());
    else
      requantize<int8_t>(acc, rows, s.n, in[7].data ? q8_at(in[7], 0) : 0, out[0].as<int8_t>());
  }

 private:
  template <typename Q>
  void requantize(const int32_t* acc, int64_t rows, int64_t n, int32_t zp, Q* y) {
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t j = 0; j < n; ++j)
        y[r * n + j] = saturate_round<Q>(
            std::nearbyint(static_cast<double>(acc[r * n + j]) * static_cast<double>(mult_[j])) + zp);
  }
  QMatMulPlan p_;
  DType out_;
  std::vector<int32_t> a32_, b32_, acc_;
  std::vector<float> mult_;
};

std::unique_ptr<Kernel> make_qmatmul(const InferCtx& c) {
  return std::make_unique<QMatMulKernel>(qmatmul_plan(c), c.out[0].dtype);
}

// ---------------------------------------------------------------------------------------------
// ConvInteger / QLinearConv
// ---------------------------------------------------------------------------------------------

// Input positions: ConvInteger (x, w, x_zp, w_zp); QLinearConv (x, x_scale, x_zp, w, w_scale,
// w_zp, y_scale, y_zp, B).
struct QConvPlan {
  ConvShape s;
  size_t xi = 0, wi = 1, xzi = 2, wzi = 3;
  ZeroPoint xz, wz;
  bool qlinear = false, bias = false;
  ScaleForm ws = ScaleForm::Tensor;
};

QConvPlan qconv_plan(const InferCtx& c) {
  QConvPlan p;
  p.qlinear = c.node.op == "QLinearConv";
  if (p.qlinear) {
    p.wi = 3;
    p.wzi = 5;
  }
  require_q8(c, p.xi, "input x");
  require_q8(c, p.wi, "input w");
  p.s = conv_shape(c, p.xi, p.wi);
  p.xz = zero_point_form(c, p.xzi, p.xi, -1, "x_zero_point", "");
  if (p.xz.mode == ZeroPoint::Per) c.fail("x_zero_point must be a scalar");
  p.wz = zero_point_form(c, p.wzi, p.wi, p.s.m, "w_zero_point", "per output channel");
  if (p.qlinear) {
    scale_form(c, 1, -1, "x_scale", "");
    p.ws = scale_form(c, 4, p.s.m, "w_scale", "per output channel");
    scale_form(c, 6, -1, "y_scale", "");
    if (c.has_input(7)) {
      const DType t = c.in[7].dtype;
      if (t != DType::U8 && t != DType::I8)
        c.unsupported("y_zero_point of type ", quant_type_name(static_cast<int32_t>(t)));
      if (!(c.in[7].shape.size() <= 1 && numel(c.in[7].shape) == 1))
        c.fail("y_zero_point ", shape_str(c.in[7].shape), " must be a scalar");
    }
    if (c.has_input(8)) {
      if (c.in[8].dtype != DType::I32) c.fail("B must be int32, got ", dtype_name(c.in[8].dtype));
      if (c.in[8].shape != Shape{p.s.m}) c.fail("B must be [", p.s.m, "], got ", shape_str(c.in[8].shape));
      p.bias = true;
    }
  }
  return p;
}

void infer_qconv(InferCtx& c) {
  QConvPlan p = qconv_plan(c);
  c.out[0].shape = spatial_out_shape(p.s.g, p.s.n, p.s.m);
  c.out[0].dtype = p.qlinear ? (c.has_input(7) ? c.in[7].dtype : DType::U8) : DType::I32;
}

class QConvKernel final : public Kernel {
 public:
  QConvKernel(const QConvPlan& p, DType out) : p_(p), out_(out) {
    const ConvShape& s = p_.s;
    const int64_t kdim = s.cg * s.g.k_size();
    x32_.resize(static_cast<size_t>(s.c * s.g.in_size()));
    w32_.resize(static_cast<size_t>(s.m * kdim));
    if (!s.direct) col_.resize(static_cast<size_t>(kdim * s.g.out_size()));
    if (p_.qlinear) {
      acc_.resize(static_cast<size_t>(s.m * s.g.out_size()));
      mult_.resize(static_cast<size_t>(s.m));
    }
  }
  void run(RunCtx&, const View* in, View* out) override {
    const ConvShape& s = p_.s;
    const int64_t isz = s.g.in_size(), osz = s.g.out_size(), kdim = s.cg * s.g.k_size();
    const View* xz = p_.xz.mode != ZeroPoint::None ? &in[p_.xzi] : nullptr;
    const View* wz = p_.wz.mode != ZeroPoint::None ? &in[p_.wzi] : nullptr;
    shift_q8(in[p_.wi], s.m, kdim, wz, p_.wz.mode, true, s.m, w32_.data());
    if (p_.qlinear) {
      const float sx = in[1].as<const float>()[0], sy = in[6].as<const float>()[0];
      const float* sw = in[4].as<const float>();
      for (int64_t m = 0; m < s.m; ++m) mult_[m] = sx * sw[p_.ws == ScaleForm::Per ? m : 0] / sy;
    }
    const int32_t yzp = p_.qlinear && in[7].data ? q8_at(in[7], 0) : 0;
    const int32_t* bias = p_.bias ? in[8].as<const int32_t>() : nullptr;
    for (int64_t n = 0; n < s.n; ++n) {
      View xn = in[p_.xi];
      xn.data = static_cast<char*>(xn.data) + n * s.c * isz;  // 1-byte elements
      shift_q8(xn, 1, s.c * isz, xz, p_.xz.mode, true, 1, x32_.data());
      int32_t* acc = p_.qlinear ? acc_.data() : out[0].as<int32_t>() + n * s.m * osz;
      for (int64_t gi = 0; gi < s.groups; ++gi) {
        const int32_t* cols = x32_.data() + gi * s.cg * isz;
        if (!s.direct) {
          im2col<int32_t>(s.g, s.cg, cols, col_.data());
          cols = col_.data();
        }
        igemm(s.mg, osz, kdim, w32_.data() + gi * s.mg * kdim, cols, acc + gi * s.mg * osz);
      }
      if (!p_.qlinear) continue;
      if (out_ == DType::U8) requantize<uint8_t>(bias, yzp, out[0].as<uint8_t>() + n * s.m * osz);
      else requantize<int8_t>(bias, yzp, out[0].as<int8_t>() + n * s.m * osz);
    }
  }

 private:
  template <typename Q>
  void requantize(const int32_t* bias, int32_t zp, Q* y) {
    const int64_t osz = p_.s.g.out_size();
    for (int64_t m = 0; m < p_.s.m; ++m) {
      const double mult = mult_[m];
      const int32_t b = bias ? bias[m] : 0;
      const int32_t* a = acc_.data() + m * osz;
      Q* yr = y + m * osz;
      for (int64_t i = 0; i < osz; ++i)
        yr[i] = saturate_round<Q>(std::nearbyint(static_cast<double>(a[i] + b) * mult) + zp);
    }
  }
  QConvPlan p_;
  DType out_;
  std::vector<int32_t> x32_, w32_, col_, acc_;
  std::vector<float> mult_;
};

std::unique_ptr<Kernel> make_qconv(const InferCtx& c) {
  return std::make_unique<QConvKernel>(qconv_plan(c), c.out[0].dtype);
}

}  // namespace

void dynamic_quant_params(const float* x, int64_t n, float* scale, uint8_t* zp) {
  // min(0, min x) and max(0, max x), NaN ignored.
  float l = 0.f, h = 0.f;
#ifdef PD_QUANT_AVX512
  if (kHaveAvx512) {
    min_max_avx512(x, n, &l, &h);
  } else
#endif
  {
    for (int64_t i = 0; i < n; ++i) {
      l = x[i] < l ? x[i] : l;
      h = x[i] > h ? x[i] : h;
    }
  }
  const float s = h == l ? 1.f : (h - l) / 255.f;
  *scale = s;
  *zp = saturate_roundf<uint8_t>(std::max(0.f, std::min(255.f, 0.f - l / s)));
}

void register_quant_ops(OpRegistry& r) {
  r.add(OpSchema{"", "QuantizeLinear", infer_quantize, make_quantize});
  r.add(OpSchema{"", "DequantizeLinear", infer_dequantize, make_dequantize});
  r.add(OpSchema{"", "DynamicQuantizeLinear", infer_dynamic_quantize, make_dynamic_quantize});
  r.add(OpSchema{"", "MatMulInteger", infer_qmatmul, make_qmatmul});
  r.add(OpSchema{"", "QLinearMatMul", infer_qmatmul, make_qmatmul});
  r.add(OpSchema{"", "ConvInteger", infer_qconv, make_qconv});
  r.add(OpSchema{"", "QLinearConv", infer_qconv, make_qconv});
  register_quant_fused_ops(r);
}

}  // namespace pd
