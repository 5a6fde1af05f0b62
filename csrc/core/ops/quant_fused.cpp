// policyd's fused quantized ops (domain "pd"), produced by fuse_quantized (quant_passes.cpp)
// and run by the CPU backend as one oneDNN int8 primitive each; these portable kernels are the
// reference (constant folding, other backends, the tests).
//
//   pd.DynQuantMatMul(X, Wq, w_scale, w_zero_point?, bias?)
//       ONNX Runtime's quantize_dynamic pattern around a MatMul: X (float, [..., K]) quantized
//       per tensor to uint8 exactly as DynamicQuantizeLinear does (scale xs, zero point xz),
//       then y = act(float(MatMulInteger(Xq, Wq, xz, w_zero_point)) * (xs * w_scale) + bias).
//       Wq: uint8/int8 [K, N]; w_scale, w_zero_point: scalar or [N]; bias: float [N].
//   pd.QuantMatMul(xq, x_scale, x_zp?, Wq, w_scale, w_zp?, bias?, y_scale?, y_zp?)
//   pd.QuantConv(xq, x_scale, x_zp?, Wq, w_scale, w_zp?, bias?, y_scale?, y_zp?)
//       The static QDQ pattern DequantizeLinear(xq), DequantizeLinear(Wq) -> MatMul/Gemm/Conv
//       [+ bias] [-> activation] [-> QuantizeLinear(y_scale, y_zp)]:
//       v = act(float(sum (xq - x_zp)(Wq - w_zp)) * (x_scale * w_scale) + bias), then
//       saturate(round(v / y_scale) + y_zp) when y_scale is given, else v (float).
//       x_scale, x_zp, y_scale, y_zp: scalars; w_scale, w_zp: scalar or per output column
//       (MatMul) / channel (Conv); bias float [N] / [M]. QuantConv has Conv's attributes.
// All three carry activation, activation_alpha, activation_beta (activation.h).
//
// The integer products are exact (int32); only the float scaling differs from the unfused
// graph's rounding (for pd.DynQuantMatMul the portable kernel computes exactly what the
// unfused nodes compute).
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "../activation.h"
#include "../op.h"
#include "nn.h"
#include "quant.h"

namespace pd {

namespace {

struct QEpilogue {
  Act act = Act::None;
  float aa = 0.f, ab = 0.f;
};

QEpilogue epilogue_of(const InferCtx& c) {
  QEpilogue e;
  const std::string name = c.node.attr_string("activation", "");
  if (!parse_act(name, &e.act)) c.unsupported("unknown activation '", name, "'");
  e.aa = c.node.attr_float("activation_alpha", 0.f);
  e.ab = c.node.attr_float("activation_beta", 0.f);
  return e;
}

template <typename Q>
inline Q requant(float v, float ys, float yz) {
  constexpr float lo = static_cast<float>(std::numeric_limits<Q>::min());
  constexpr float hi = static_cast<float>(std::numeric_limits<Q>::max());
  v = std::nearbyint(v / ys) + yz;
  if (!(v >= lo)) v = lo;
  if (v > hi) v = hi;
  return static_cast<Q>(v);
}

// y[r, j] from acc[r, j]: per_row selects scale/bias by r % period (Conv channels), else by j.
// out: float (y_scale == nullptr) or Q.
template <typename Q>
void finish(const int32_t* acc, int64_t rows, int64_t cols, bool per_row, int64_t period, const float* scale,
            const float* bias, const QEpilogue& e, const float* ys, float yz, void* out) {
  for (int64_t r = 0; r < rows; ++r) {
    const int32_t* ar = acc + r * cols;
    const int64_t pr = per_row ? r % period : 0;
    for (int64_t j = 0; j < cols; ++j) {
      const int64_t pi = per_row ? pr : j;
      float v = static_cast<float>(ar[j]) * scale[pi];
      if (bias) v = v + bias[pi];
      v = activate<float>(e.act, v, e.aa, e.ab);
      if (ys) static_cast<Q*>(out)[r * cols + j] = requant<Q>(v, *ys, yz);
      else static_cast<float*>(out)[r * cols + j] = v;
    }
  }
}

void finish_any(DType out_t, const int32_t* acc, int64_t rows, int64_t cols, bool per_row, int64_t period,
                const float* scale, const float* bias, const QEpilogue& e, const float* ys, float yz, void* out) {
  if (out_t == DType::I8) finish<int8_t>(acc, rows, cols, per_row, period, scale, bias, e, ys, yz, out);
  else finish<uint8_t>(acc, rows, cols, per_row, period, scale, bias, e, ys, yz, out);
}

void require_q8(const InferCtx& c, size_t i, const char* what) {
  const DType t = c.input(i).dtype;
  if (t != DType::U8 && t != DType::I8)
    c.unsupported(what, " of type ", quant_type_name(static_cast<int32_t>(t)), " (uint8 and int8 are supported)");
}

void require_bias(const InferCtx& c, size_t i, int64_t n) {
  if (!c.has_input(i)) return;
  if (c.in[i].dtype != DType::F32) c.fail("bias must be float, got ", dtype_name(c.in[i].dtype));
  if (c.in[i].shape != Shape{n}) c.fail("bias must be [", n, "], got ", shape_str(c.in[i].shape));
}

// ---------------------------------------------------------------------------------------------
// pd.DynQuantMatMul
// ---------------------------------------------------------------------------------------------

struct DynPlan {
  int64_t rows = 0, k = 0, n = 0;
  ZeroPoint wz;
  ScaleForm ws = ScaleForm::Tensor;
  bool bias = false;
  QEpilogue epi;
};

DynPlan dyn_plan(const InferCtx& c) {
  const TensorInfo& x = c.input(0);
  if (x.dtype != DType::F32) c.fail("X must be float, got ", dtype_name(x.dtype));
  if (x.shape.empty()) c.fail("X must have rank >= 1");
  require_q8(c, 1, "Wq");
  const Shape& ws = c.in[1].shape;
  if (ws.size() != 2) c.fail("Wq must be 2-D [K, N], got ", shape_str(ws));
  DynPlan p;
  p.k = ws[0];
  p.n = ws[1];
  if (x.shape.back() != p.k) c.fail("inner dimensions differ: X ", shape_str(x.shape), ", Wq ", shape_str(ws));
  p.rows = numel(x.shape) / std::max<int64_t>(p.k, 1);
  if (p.k == 0) p.rows = numel(Shape(x.shape.begin(), x.shape.end() - 1));
  p.ws = scale_form(c, 2, p.n, "w_scale", "per column of Wq");
  p.wz = zero_point_form(c, 3, 1, p.n, "w_zero_point", "per column of Wq");
  require_bias(c, 4, p.n);
  p.bias = c.has_input(4);
  p.epi = epilogue_of(c);
  return p;
}

void infer_dyn(InferCtx& c) {
  DynPlan p = dyn_plan(c);
  Shape s = c.in[0].shape;
  s.back() = p.n;
  c.out[0].dtype = DType::F32;
  c.out[0].shape = s;
}

class DynKernel final : public Kernel {
 public:
  explicit DynKernel(const DynPlan& p) : p_(p) {
    xq_.resize(static_cast<size_t>(p_.rows * p_.k));
    a32_.resize(xq_.size());
    b32_.resize(static_cast<size_t>(p_.k * p_.n));
    acc_.resize(static_cast<size_t>(p_.rows * p_.n));
    scale_.resize(static_cast<size_t>(p_.n));
  }
  void run(RunCtx&, const View* in, View* out) override {
    const int64_t nx = p_.rows * p_.k;
    float xs;
    uint8_t xz;
    dynamic_quant_params(in[0].as<const float>(), nx, &xs, &xz);
    dynamic_quantize(in[0].as<const float>(), nx, xs, xz, xq_.data());
    for (int64_t i = 0; i < nx; ++i) a32_[i] = static_cast<int32_t>(xq_[i]) - xz;
    shift_q8(in[1], p_.k, p_.n, in[3].data ? &in[3] : nullptr, p_.wz.mode, false, 0, b32_.data());
    igemm(p_.rows, p_.n, p_.k, a32_.data(), b32_.data(), acc_.data());
    const float* ws = in[2].as<const float>();
    for (int64_t j = 0; j < p_.n; ++j) scale_[j] = xs * ws[p_.ws == ScaleForm::Per ? j : 0];
    finish<uint8_t>(acc_.data(), p_.rows, p_.n, false, 1, scale_.data(), p_.bias ? in[4].as<const float>() : nullptr,
                    p_.epi, nullptr, 0.f, out[0].data);
  }

 private:
  DynPlan p_;
  std::vector<uint8_t> xq_;
  std::vector<int32_t> a32_, b32_, acc_;
  std::vector<float> scale_;
};

std::unique_ptr<Kernel> make_dyn(const InferCtx& c) { return std::make_unique<DynKernel>(dyn_plan(c)); }

// ---------------------------------------------------------------------------------------------
// pd.QuantMatMul / pd.QuantConv
// ---------------------------------------------------------------------------------------------

struct QPlan {
  bool conv = false;
  ConvShape cs;          // QuantConv
  int64_t rows = 0, k = 0, n = 0;  // QuantMatMul: X as [rows, k] x Wq [k, n]
  ZeroPoint xz, wz;
  ScaleForm ws = ScaleForm::Tensor;
  bool bias = false, quant_out = false;
  QEpilogue epi;
};

QPlan q_plan(const InferCtx& c) {
  QPlan p;
  p.conv = c.node.op == "QuantConv";
  require_q8(c, 0, "xq");
  require_q8(c, 3, "Wq");
  int64_t per = 0;
  if (p.conv) {
    p.cs = conv_shape(c, 0, 3);
    per = p.cs.m;
  } else {
    const Shape& xs = c.in[0].shape;
    const Shape& ws = c.in[3].shape;
    if (xs.empty()) c.fail("xq must have rank >= 1");
    if (ws.size() != 2) c.fail("Wq must be 2-D [K, N], got ", shape_str(ws));
    p.k = ws[0];
    p.n = ws[1];
    if (xs.back() != p.k) c.fail("inner dimensions differ: xq ", shape_str(xs), ", Wq ", shape_str(ws));
    p.rows = numel(Shape(xs.begin(), xs.end() - 1));
    per = p.n;
  }
  scale_form(c, 1, -1, "x_scale", "");
  p.xz = zero_point_form(c, 2, 0, -1, "x_zero_point", "");
  if (p.xz.mode == ZeroPoint::Per) c.fail("x_zero_point must be a scalar");
  p.ws = scale_form(c, 4, per, "w_scale", p.conv ? "per output channel" : "per column of Wq");
  p.wz = zero_point_form(c, 5, 3, per, "w_zero_point", p.conv ? "per output channel" : "per column of Wq");
  require_bias(c, 6, per);
  p.bias = c.has_input(6);
  p.quant_out = c.has_input(7);
  if (p.quant_out) {
    scale_form(c, 7, -1, "y_scale", "");
    if (c.has_input(8)) {
      const DType t = c.in[8].dtype;
      if (t != DType::U8 && t != DType::I8)
        c.unsupported("y_zero_point of type ", quant_type_name(static_cast<int32_t>(t)));
      if (!(c.in[8].shape.size() <= 1 && numel(c.in[8].shape) == 1))
        c.fail("y_zero_point ", shape_str(c.in[8].shape), " must be a scalar");
    }
  } else if (c.has_input(8)) {
    c.fail("y_zero_point without y_scale");
  }
  p.epi = epilogue_of(c);
  return p;
}

void infer_q(InferCtx& c) {
  QPlan p = q_plan(c);
  c.out[0].dtype = !p.quant_out ? DType::F32 : c.has_input(8) ? c.in[8].dtype : DType::U8;
  if (p.conv) {
    c.out[0].shape = spatial_out_shape(p.cs.g, p.cs.n, p.cs.m);
  } else {
    Shape s = c.in[0].shape;
    s.back() = p.n;
    c.out[0].shape = s;
  }
}

class QKernel final : public Kernel {
 public:
  QKernel(const QPlan& p, DType out) : p_(p), out_(out) {
    if (p_.conv) {
      const ConvShape& s = p_.cs;
      const int64_t kdim = s.cg * s.g.k_size();
      x32_.resize(static_cast<size_t>(s.c * s.g.in_size()));
      w32_.resize(static_cast<size_t>(s.m * kdim));
      if (!s.direct) col_.resize(static_cast<size_t>(kdim * s.g.out_size()));
      acc_.resize(static_cast<size_t>(s.m * s.g.out_size()));
      scale_.resize(static_cast<size_t>(s.m));
    } else {
      x32_.resize(static_cast<size_t>(p_.rows * p_.k));
      w32_.resize(static_cast<size_t>(p_.k * p_.n));
      acc_.resize(static_cast<size_t>(p_.rows * p_.n));
      scale_.resize(static_cast<size_t>(p_.n));
    }
  }
  void run(RunCtx&, const View* in, View* out) override {
    const View* xz = in[2].data ? &in[2] : nullptr;
    const View* wz = in[5].data ? &in[5] : nullptr;
    const float xs = in[1].as<const float>()[0];
    const float* ws = in[4].as<const float>();
    for (size_t j = 0; j < scale_.size(); ++j) scale_[j] = xs * ws[p_.ws == ScaleForm::Per ? j : 0];
    const float* bias = p_.bias ? in[6].as<const float>() : nullptr;
    const float* ys = p_.quant_out ? in[7].as<const float>() : nullptr;
    const float yz = p_.quant_out && in[8].data ? static_cast<float>(q8_at(in[8], 0)) : 0.f;
    const size_t esz = dtype_size(out[0].dtype);
    if (!p_.conv) {
      shift_q8(in[0], p_.rows, p_.k, xz, p_.xz.mode, true, 1, x32_.data());
      shift_q8(in[3], p_.k, p_.n, wz, p_.wz.mode, false, 0, w32_.data());
      igemm(p_.rows, p_.n, p_.k, x32_.data(), w32_.data(), acc_.data());
      finish_any(out_, acc_.data(), p_.rows, p_.n, false, 1, scale_.data(), bias, p_.epi, ys, yz, out[0].data);
      return;
    }
    const ConvShape& s = p_.cs;
    const int64_t isz = s.g.in_size(), osz = s.g.out_size(), kdim = s.cg * s.g.k_size();
    shift_q8(in[3], s.m, kdim, wz, p_.wz.mode, true, s.m, w32_.data());
    for (int64_t n = 0; n < s.n; ++n) {
      View xn = in[0];
      xn.data = static_cast<char*>(xn.data) + n * s.c * isz;
      shift_q8(xn, 1, s.c * isz, xz, p_.xz.mode, true, 1, x32_.data());
      for (int64_t gi = 0; gi < s.groups; ++gi) {
        const int32_t* cols = x32_.data() + gi * s.cg * isz;
        if (!s.direct) {
          im2col<int32_t>(s.g, s.cg, cols, col_.data());
          cols = col_.data();
        }
        igemm(s.mg, osz, kdim, w32_.data() + gi * s.mg * kdim, cols, acc_.data() + gi * s.mg * osz);
      }
      finish_any(out_, acc_.data(), s.m, osz, true, s.m, scale_.data(), bias, p_.epi, ys, yz,
                 static_cast<char*>(out[0].data) + n * s.m * osz * esz);
    }
  }

 private:
  QPlan p_;
  DType out_;
  std::vector<int32_t> x32_, w32_, col_, acc_;
  std::vector<float> scale_;
};

std::unique_ptr<Kernel> make_q(const InferCtx& c) { return std::make_unique<QKernel>(q_plan(c), c.out[0].dtype); }

}  // namespace

void register_quant_fused_ops(OpRegistry& r) {
  r.add(OpSchema{"pd", "DynQuantMatMul", infer_dyn, make_dyn});
  r.add(OpSchema{"pd", "QuantMatMul", infer_q, make_q});
  r.add(OpSchema{"pd", "QuantConv", infer_q, make_q});
}

}  // namespace pd
