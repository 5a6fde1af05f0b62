// oneDNN int8 kernels of the CPU backend: MatMulInteger, QLinearMatMul and the fused
// pd.DynQuantMatMul / pd.QuantMatMul (ops/quant_fused.cpp) as one oneDNN matmul primitive
// each (ConvInteger, QLinearConv and pd.QuantConv as a convolution, below): uint8 or int8
// activations x int8 weights, int32 accumulation, the activation's zero point a runtime zero
// point, the output scales runtime attribute values (pd.DynQuantMatMul: a binary-mul post-op,
// see scale_post_op), the bias a binary-add post-op, the activation an eltwise post-op, the
// output's zero point a destination zero point (after an eltwise_round post-op: ONNX Runtime
// rounds before it adds the zero point).
//
// Weights must be constant and 2-D. uint8 weights (which oneDNN 2.6's int8 matmul does not
// take) are shifted once into int8: w - 128, with the zero point shifted alike (wz - 128), so
// sum (x - xz)(w - wz) is unchanged. A weight zero point that differs per column is left to
// the portable kernel (oneDNN takes a common one only); so is a B with batch dimensions.
// Whatever oneDNN refuses to create falls back to the portable kernel too.
#include <cstring>
#include <string>
#include <vector>

#include "../core/activation.h"
#include "../core/ops/nn.h"
#include "../core/ops/quant.h"
#include "onednn_kernels.h"

namespace pd {

using dnnl::memory;
using tag = memory::format_tag;
using dt = memory::data_type;

namespace {

void check(dnnl_status_t st, const char* what) {
  if (st != dnnl_success) fail(PD_ERR_INTERNAL, "oneDNN ", what, " failed (status ", static_cast<int>(st), ")");
}

// A runtime int32 scalar (a zero point), read from *v at every execution, bound to arg.
memory bind_s32(const dnnl::engine& e, int32_t* v, int arg, std::vector<dnnl_exec_arg_t>& args) {
  memory m({{1}, dt::s32, tag::x}, e, v);
  args.push_back({arg, m.get()});
  return m;
}

dt dt_of(DType t) {
  switch (t) {
    case DType::U8: return dt::u8;
    case DType::I8: return dt::s8;
    case DType::I32: return dt::s32;
    default: return dt::f32;
  }
}

memory::dims dims_of(const Shape& s) { return memory::dims(s.begin(), s.end()); }

// What the kernel computes besides the primitive, per kind of node.
enum class Kind { MatMulInteger, QLinearMatMul, Dyn, Quant };

struct Int8MatMul final : public Kernel {
  Kind kind;
  OneDnnKernels* k = nullptr;
  dnnl::primitive prim;
  int64_t rows = 0, kdim = 0, n = 0;
  // Node input positions.
  int xi = 0, xsi = -1, xzi = -1, wsi = -1, ysi = -1, yzi = -1;
  bool per_col_scale = false;
  int32_t wz = 0;             // the (shifted) weight zero point, constant
  bool has_wz = false, has_xz = false, has_scales = false, has_dst_zp = false;
  // pd.DynQuantMatMul: no output scales (runtime ones rule out oneDNN's brgemm kernels);
  // x_scale * w_scale, computed per run as the unfused Mul does, is a binary-mul post-op on
  // the int32 products converted to float: float(acc) * s + bias, the unfused order.
  bool scale_post_op = false;
  // Runtime attribute values and the dynamic pattern's quantized X.
  std::vector<float> scales;
  int32_t xz_val = 0, yz_val = 0;
  std::vector<uint8_t> xq;
  memory src, dst, bias, scales_m, xz_m, wz_m, yz_m, scratch;
  memory wmem;
  std::vector<dnnl_exec_arg_t> args;
  void* last_src = nullptr;
  void* last_dst = nullptr;
  void* last_bias = nullptr;
  int bias_in = -1;

  void run(RunCtx&, const View* in, View* out) override {
    void* sp = in[xi].data;
    if (kind == Kind::Dyn) {
      const float* x = in[0].as<const float>();
      const int64_t nx = rows * kdim;
      float xs;
      uint8_t z;
      dynamic_quant_params(x, nx, &xs, &z);
      dynamic_quantize(x, nx, xs, z, xq.data());
      xz_val = z;
      const float* ws = in[2].as<const float>();
      for (int64_t j = 0; j < static_cast<int64_t>(scales.size()); ++j) scales[j] = xs * ws[per_col_scale ? j : 0];
      sp = xq.data();
    } else {
      if (has_xz) xz_val = in[xzi].data ? q8_at(in[xzi], 0) : 0;
      if (has_scales) {
        const float xs = in[xsi].as<const float>()[0];
        const float* ws = in[wsi].as<const float>();
        if (kind == Kind::QLinearMatMul) {
          const float ys = in[ysi].as<const float>()[0];
          for (size_t j = 0; j < scales.size(); ++j) scales[j] = xs * ws[per_col_scale ? j : 0] / ys;
        } else {
          for (size_t j = 0; j < scales.size(); ++j) scales[j] = xs * ws[per_col_scale ? j : 0];
        }
      }
      if (has_dst_zp) yz_val = in[yzi].data ? q8_at(in[yzi], 0) : 0;
    }
    if (sp != last_src) {
      check(dnnl_memory_set_data_handle(src.get(), sp), "set_data_handle");
      last_src = sp;
    }
    if (out[0].data != last_dst) {
      check(dnnl_memory_set_data_handle(dst.get(), out[0].data), "set_data_handle");
      last_dst = out[0].data;
    }
    if (bias_in >= 0 && in[bias_in].data != last_bias) {
      check(dnnl_memory_set_data_handle(bias.get(), in[bias_in].data), "set_data_handle");
      last_bias = in[bias_in].data;
    }
    check(dnnl_primitive_execute(prim.get(), k->stream().get(), static_cast<int>(args.size()), args.data()),
          "execute");
  }
};

// Scalar int32 value of a constant integer tensor's element i.
int32_t int_const(const Tensor& t, int64_t i) { return static_cast<int32_t>(t.int_at(i)); }

}  // namespace

std::unique_ptr<Kernel> make_int8_matmul(OneDnnKernels& k, const InferCtx& c) {
  const Node& n = c.node;
  auto kern = std::make_unique<Int8MatMul>();
  Int8MatMul& q = *kern;
  q.k = &k;
  int wi = 1, wzi = -1, bi = -1;
  if (n.domain.empty() && n.op == "MatMulInteger") {
    q.kind = Kind::MatMulInteger;
    q.xzi = 2;
    wzi = 3;
  } else if (n.domain.empty() && n.op == "QLinearMatMul") {
    q.kind = Kind::QLinearMatMul;
    q.xsi = 1, q.xzi = 2, wi = 3, q.wsi = 4, wzi = 5, q.ysi = 6, q.yzi = 7;
  } else if (n.op == "DynQuantMatMul") {
    q.kind = Kind::Dyn;
    q.wsi = 2, wzi = 3, bi = 4;
  } else {  // pd.QuantMatMul
    q.kind = Kind::Quant;
    q.xsi = 1, q.xzi = 2, wi = 3, q.wsi = 4, wzi = 5, bi = 6, q.ysi = 7, q.yzi = 8;
  }
  const TensorInfo& x = c.in[0];
  const TensorInfo& w = c.in[wi];
  if (!w.value || w.shape.size() != 2 || x.shape.empty()) return nullptr;
  q.kdim = w.shape[0];
  q.n = w.shape[1];
  if (x.shape.back() != q.kdim) return nullptr;  // (A 1-D or B batched: portable)
  q.rows = numel(Shape(x.shape.begin(), x.shape.end() - 1));
  if (q.rows == 0 || q.n == 0 || q.kdim == 0) return nullptr;
  // The output must be A's leading dims + [N] (no broadcast of A against B's batch).
  // Weight zero point: a constant common value, or per column all equal.
  int32_t wz = 0;
  if (wzi >= 0 && c.has_input(static_cast<size_t>(wzi))) {
    const TensorInfo& z = c.in[wzi];
    if (!z.value) return nullptr;
    wz = int_const(*z.value, 0);
    for (int64_t j = 1; j < z.value->numel(); ++j)
      if (int_const(*z.value, j) != wz) return nullptr;  // per-column zero points: portable
  }
  // A per-row zero point of A (MatMulInteger's 1-D a_zero_point): portable.
  if (q.xzi >= 0 && c.has_input(static_cast<size_t>(q.xzi)) && numel(c.in[q.xzi].shape) != 1) return nullptr;
  const bool wu8 = w.dtype == DType::U8;
  if (wu8) wz -= 128;
  q.wz = wz;
  q.has_wz = wz != 0;
  q.has_xz = q.kind == Kind::Dyn || (q.xzi >= 0 && c.has_input(static_cast<size_t>(q.xzi)));
  q.per_col_scale = q.wsi >= 0 && numel(c.in[q.wsi].shape) > 1;
  q.has_scales = q.kind != Kind::MatMulInteger;
  const bool quant_out = q.kind == Kind::QLinearMatMul || (q.kind == Kind::Quant && c.has_input(7));
  q.has_dst_zp = quant_out && q.yzi >= 0 && c.has_input(static_cast<size_t>(q.yzi));
  const bool has_bias = bi >= 0 && c.has_input(static_cast<size_t>(bi));

  const dt src_dt = q.kind == Kind::Dyn ? dt::u8 : dt_of(x.dtype);
  const dt dst_dt = dt_of(c.out[0].dtype);
  memory::desc src_md({q.rows, q.kdim}, src_dt, tag::ab);
  memory::desc w_plain({q.kdim, q.n}, dt::s8, tag::ab);
  memory::desc w_any({q.kdim, q.n}, dt::s8, tag::any);
  memory::desc dst_md({q.rows, q.n}, dst_dt, tag::ab);
  memory::desc bias_md({1, q.n}, dt::f32, tag::ab);

  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  q.scale_post_op = q.kind == Kind::Dyn;
  const memory::desc scale_md({1, q.per_col_scale ? q.n : 1}, dt::f32, tag::ab);
  dnnl::post_ops po;
  if (q.scale_post_op) {
    po.append_binary(dnnl::algorithm::binary_mul, scale_md);
  } else if (q.has_scales) {
    // Constant scales (QDQ and QLinear models have them) are fixed at creation, which lets
    // oneDNN use its brgemm kernels; scales from data are runtime values.
    const bool qlinear = q.kind == Kind::QLinearMatMul;
    if (c.in[q.xsi].value && c.in[q.wsi].value && (!qlinear || c.in[q.ysi].value)) {
      const float xs = static_cast<float>(c.in[q.xsi].value->float_at(0));
      const float ys = qlinear ? static_cast<float>(c.in[q.ysi].value->float_at(0)) : 1.f;
      std::vector<float> sc(static_cast<size_t>(q.per_col_scale ? q.n : 1));
      for (size_t j = 0; j < sc.size(); ++j) {
        const float ws = static_cast<float>(c.in[q.wsi].value->float_at(q.per_col_scale ? static_cast<int64_t>(j) : 0));
        sc[j] = qlinear ? xs * ws / ys : xs * ws;  // as run() computes them
      }
      attr.set_output_scales(q.per_col_scale ? 1 << 1 : 0, sc);
      q.has_scales = false;
    } else {
      attr.set_output_scales(q.per_col_scale ? 1 << 1 : 0, {DNNL_RUNTIME_F32_VAL});
    }
  }
  if (q.has_xz) attr.set_zero_points(DNNL_ARG_SRC, 0, {DNNL_RUNTIME_S32_VAL});
  if (q.has_wz) attr.set_zero_points(DNNL_ARG_WEIGHTS, 0, {DNNL_RUNTIME_S32_VAL});
  if (q.has_dst_zp) attr.set_zero_points(DNNL_ARG_DST, 0, {DNNL_RUNTIME_S32_VAL});
  if (has_bias) po.append_binary(dnnl::algorithm::binary_add, bias_md);
  if (q.kind == Kind::Dyn || q.kind == Kind::Quant) {
    if (!append_activation(n, po)) return nullptr;
  }
  if (q.kind == Kind::Quant && quant_out) {
    const float ys = static_cast<float>(c.in[7].value ? c.in[7].value->float_at(0) : 0.0);
    if (!c.in[7].value || !(ys != 0.f)) return nullptr;  // y_scale from data: portable
    po.append_eltwise(1.f, dnnl::algorithm::eltwise_linear, 1.f / ys, 0.f);
  }
  // ONNX Runtime rounds, then adds the output zero point (round(v) + zp, saturated); oneDNN
  // adds the destination zero point to the float result and rounds the sum, which differs on
  // ties (k + 0.5) when the zero point is odd. Rounding first (half to even) keeps the sum exact.
  if (q.has_dst_zp) po.append_eltwise(1.f, dnnl::algorithm::eltwise_round, 0.f, 0.f);
  attr.set_post_ops(po);
  dnnl::matmul::primitive_desc pd(dnnl::matmul::desc(src_md, w_any, dst_md), attr, k.engine());

  // Weights: int8 as they are, or uint8 shifted to int8 once (kept by the provider).
  if (wu8) {
    const Tensor& wt = *w.value;
    q.wmem = k.weights_shifted(wt, w_plain, pd.weights_desc());
  } else {
    q.wmem = k.weights(*w.value, w_plain, pd.weights_desc());
  }
  q.prim = dnnl::matmul(pd);
  q.src = memory(src_md, k.engine(), nullptr);
  q.dst = memory(dst_md, k.engine(), nullptr);
  q.scratch = memory(pd.scratchpad_desc(), k.engine());
  q.args.push_back({DNNL_ARG_SRC, q.src.get()});
  q.args.push_back({DNNL_ARG_WEIGHTS, q.wmem.get()});
  q.args.push_back({DNNL_ARG_DST, q.dst.get()});
  q.args.push_back({DNNL_ARG_SCRATCHPAD, q.scratch.get()});
  if (q.has_scales) {
    q.scales.assign(static_cast<size_t>(q.per_col_scale ? q.n : 1), 0.f);
    if (q.scale_post_op) {
      q.scales_m = memory(scale_md, k.engine(), q.scales.data());
      q.args.push_back({DNNL_ARG_ATTR_MULTIPLE_POST_OP(0) | DNNL_ARG_SRC_1, q.scales_m.get()});
    } else {
      q.scales_m = memory({{static_cast<int64_t>(q.scales.size())}, dt::f32, tag::x}, k.engine(), q.scales.data());
      q.args.push_back({DNNL_ARG_ATTR_OUTPUT_SCALES, q.scales_m.get()});
    }
  }
  if (q.has_xz) {
    q.xz_m = bind_s32(k.engine(), &q.xz_val, DNNL_ARG_ATTR_ZERO_POINTS | DNNL_ARG_SRC, q.args);
  }
  if (q.has_wz) {
    q.wz_m = bind_s32(k.engine(), &q.wz, DNNL_ARG_ATTR_ZERO_POINTS | DNNL_ARG_WEIGHTS, q.args);
  }
  if (q.has_dst_zp) {
    q.yz_m = bind_s32(k.engine(), &q.yz_val, DNNL_ARG_ATTR_ZERO_POINTS | DNNL_ARG_DST, q.args);
  }
  if (has_bias) {
    q.bias = memory(bias_md, k.engine(), nullptr);
    q.bias_in = bi;
    q.args.push_back({DNNL_ARG_ATTR_MULTIPLE_POST_OP(q.scale_post_op ? 1 : 0) | DNNL_ARG_SRC_1, q.bias.get()});
  }
  if (q.kind == Kind::Dyn) q.xq.resize(static_cast<size_t>(q.rows * q.kdim));
  return kern;
}

}  // namespace pd

// ---------------------------------------------------------------------------------------------
// ConvInteger, QLinearConv, pd.QuantConv: 2-D, constant int8 weights (uint8 weights with a
// zero point of 128 are shifted to int8 with none; other weight zero points are left to the
// portable kernel: oneDNN's int8 convolution takes none). The geometry is core's conv_shape
// (nn.h), the same the portable kernels use. The bias of QLinearConv (int32, added before the
// scaling) is oneDNN's bias; pd.QuantConv's (float, after it) a binary-add post-op.
// ---------------------------------------------------------------------------------------------

namespace pd {

namespace {

struct Int8Conv final : public Kernel {
  enum class Kind { ConvInteger, QLinearConv, Quant } kind = Kind::ConvInteger;
  OneDnnKernels* k = nullptr;
  dnnl::primitive prim, rin, rout;
  int xsi = -1, xzi = -1, wsi = -1, ysi = -1, yzi = -1, bias_in = -1;
  bool per_ch = false, has_xz = false, has_scales = false, has_dst_zp = false;
  std::vector<float> scales;
  int32_t xz_val = 0, yz_val = 0;
  memory x_user, x_blk, y_user, y_blk, bias, scales_m, xz_m, yz_m, scratch, wmem;
  std::vector<dnnl_exec_arg_t> args;
  dnnl_exec_arg_t in_args[2], out_args[2];
  void* last_x = nullptr;
  void* last_y = nullptr;
  void* last_bias = nullptr;

  void run(RunCtx&, const View* in, View* out) override {
    if (has_xz) xz_val = in[xzi].data ? q8_at(in[xzi], 0) : 0;
    if (has_scales) {
      const float xs = in[xsi].as<const float>()[0];
      const float* ws = in[wsi].as<const float>();
      const float ys = kind == Kind::QLinearConv ? in[ysi].as<const float>()[0] : 1.f;
      for (size_t j = 0; j < scales.size(); ++j)
        scales[j] = kind == Kind::QLinearConv ? xs * ws[per_ch ? j : 0] / ys : xs * ws[per_ch ? j : 0];
    }
    if (has_dst_zp) yz_val = in[yzi].data ? q8_at(in[yzi], 0) : 0;
    if (in[0].data != last_x) {
      check(dnnl_memory_set_data_handle(x_user.get(), in[0].data), "set_data_handle");
      last_x = in[0].data;
    }
    if (out[0].data != last_y) {
      check(dnnl_memory_set_data_handle(y_user.get(), out[0].data), "set_data_handle");
      last_y = out[0].data;
    }
    if (bias_in >= 0 && in[bias_in].data != last_bias) {
      check(dnnl_memory_set_data_handle(bias.get(), in[bias_in].data), "set_data_handle");
      last_bias = in[bias_in].data;
    }
    if (rin) check(dnnl_primitive_execute(rin.get(), k->stream().get(), 2, in_args), "reorder");
    check(dnnl_primitive_execute(prim.get(), k->stream().get(), static_cast<int>(args.size()), args.data()),
          "execute");
    if (rout) check(dnnl_primitive_execute(rout.get(), k->stream().get(), 2, out_args), "reorder");
  }
};

}  // namespace

std::unique_ptr<Kernel> make_int8_conv(OneDnnKernels& k, const InferCtx& c) {
  const Node& n = c.node;
  auto kern = std::make_unique<Int8Conv>();
  Int8Conv& q = *kern;
  q.k = &k;
  int wi = 1, wzi = 3, bi = -1;
  using K = Int8Conv::Kind;
  if (n.domain.empty() && n.op == "ConvInteger") {
    q.kind = K::ConvInteger;
    q.xzi = 2;
  } else if (n.domain.empty() && n.op == "QLinearConv") {
    q.kind = K::QLinearConv;
    q.xsi = 1, q.xzi = 2, wi = 3, q.wsi = 4, wzi = 5, q.ysi = 6, q.yzi = 7, bi = 8;
  } else {
    q.kind = K::Quant;
    q.xsi = 1, q.xzi = 2, wi = 3, q.wsi = 4, wzi = 5, bi = 6, q.ysi = 7, q.yzi = 8;
  }
  const TensorInfo& x = c.in[0];
  const TensorInfo& w = c.in[wi];
  if (x.shape.size() != 4 || !w.value || w.shape.size() != 4) return nullptr;
  if (q.xzi >= 0 && c.has_input(static_cast<size_t>(q.xzi)) && numel(c.in[q.xzi].shape) != 1) return nullptr;
  const ConvShape s = conv_shape(c, 0, static_cast<size_t>(wi));
  if (s.n == 0 || s.m == 0 || s.g.out_size() == 0) return nullptr;
  // Weight zero point: none left after the uint8 -> int8 shift.
  int32_t wz = 0;
  if (c.has_input(static_cast<size_t>(wzi))) {
    const TensorInfo& z = c.in[wzi];
    if (!z.value) return nullptr;
    wz = static_cast<int32_t>(z.value->int_at(0));
    for (int64_t j = 1; j < z.value->numel(); ++j)
      if (z.value->int_at(j) != wz) return nullptr;
  }
  const bool wu8 = w.dtype == DType::U8;
  if (wz - (wu8 ? 128 : 0) != 0) return nullptr;
  q.has_xz = q.xzi >= 0 && c.has_input(static_cast<size_t>(q.xzi));
  q.has_scales = q.kind != K::ConvInteger;
  q.per_ch = q.wsi >= 0 && numel(c.in[q.wsi].shape) > 1;
  const bool quant_out = q.kind == K::QLinearConv || (q.kind == K::Quant && c.has_input(7));
  q.has_dst_zp = quant_out && c.has_input(static_cast<size_t>(q.yzi));
  const bool has_bias = bi >= 0 && c.has_input(static_cast<size_t>(bi));

  const Shape& ys = c.out[0].shape;
  const dt src_dt = dt_of(x.dtype), dst_dt = dt_of(c.out[0].dtype);
  memory::dims wdims = s.groups > 1 ? memory::dims{s.groups, s.mg, s.cg, w.shape[2], w.shape[3]}
                                    : memory::dims{w.shape[0], w.shape[1], w.shape[2], w.shape[3]};
  memory::desc x_user_md(dims_of(x.shape), src_dt, tag::nchw), y_user_md(dims_of(ys), dst_dt, tag::nchw);
  memory::desc x_any(dims_of(x.shape), src_dt, tag::any), y_any(dims_of(ys), dst_dt, tag::any);
  memory::desc w_plain(wdims, dt::s8, s.groups > 1 ? tag::goihw : tag::oihw), w_any(wdims, dt::s8, tag::any);
  memory::desc b_md = q.kind == K::QLinearConv ? memory::desc({s.m}, dt::s32, tag::x) : memory::desc();
  memory::desc pb_md({1, s.m, 1, 1}, dt::f32, tag::nchw);

  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  // oneDNN 2.6's int8 convolutions take output scales fixed at creation only: the scales must
  // be constants (they are in QDQ and QLinearConv models); the zero points are runtime values.
  if (q.has_scales) {
    for (int i : {q.xsi, q.wsi, q.kind == K::QLinearConv ? q.ysi : q.xsi})
      if (!c.in[i].value) return nullptr;
    const Tensor& ws = *c.in[q.wsi].value;
    const float xs = static_cast<float>(c.in[q.xsi].value->float_at(0));
    const float y_s = q.kind == K::QLinearConv ? static_cast<float>(c.in[q.ysi].value->float_at(0)) : 1.f;
    std::vector<float> sc(static_cast<size_t>(q.per_ch ? s.m : 1));
    for (size_t j = 0; j < sc.size(); ++j) {
      const float w_s = static_cast<float>(ws.float_at(q.per_ch ? static_cast<int64_t>(j) : 0));
      sc[j] = q.kind == K::QLinearConv ? xs * w_s / y_s : xs * w_s;
    }
    attr.set_output_scales(q.per_ch ? 1 << 1 : 0, sc);
    q.has_scales = false;  // nothing to pass per run
  }
  if (q.has_xz) attr.set_zero_points(DNNL_ARG_SRC, 0, {DNNL_RUNTIME_S32_VAL});
  if (q.has_dst_zp) attr.set_zero_points(DNNL_ARG_DST, 0, {DNNL_RUNTIME_S32_VAL});
  dnnl::post_ops po;
  const bool post_bias = has_bias && q.kind == K::Quant;
  if (post_bias) po.append_binary(dnnl::algorithm::binary_add, pb_md);
  if (q.kind == K::Quant) {
    if (!append_activation(n, po)) return nullptr;
    if (quant_out) {
      if (!c.in[7].value) return nullptr;
      const float y_scale = static_cast<float>(c.in[7].value->float_at(0));
      if (!(y_scale != 0.f)) return nullptr;
      po.append_eltwise(1.f, dnnl::algorithm::eltwise_linear, 1.f / y_scale, 0.f);
    }
  }
  // ONNX Runtime rounds, then adds the output zero point (round(v) + zp, saturated); oneDNN
  // adds the destination zero point to the float result and rounds the sum, which differs on
  // ties (k + 0.5) when the zero point is odd. Rounding first (half to even) keeps the sum exact.
  if (q.has_dst_zp) po.append_eltwise(1.f, dnnl::algorithm::eltwise_round, 0.f, 0.f);
  attr.set_post_ops(po);
  const int sp = kMaxSpatial - 2;  // the two spatial slots of the geometry
  memory::dims st{s.g.stride[sp], s.g.stride[sp + 1]}, dl{s.g.dil[sp] - 1, s.g.dil[sp + 1] - 1};
  memory::dims pl{s.g.pad_b[sp], s.g.pad_b[sp + 1]}, pr{s.g.pad_e[sp], s.g.pad_e[sp + 1]};
  const bool dnnl_bias = has_bias && q.kind == K::QLinearConv;
  auto d = dnnl_bias ? dnnl::convolution_forward::desc(dnnl::prop_kind::forward_inference,
                                                       dnnl::algorithm::convolution_direct, x_any, w_any, b_md,
                                                       y_any, st, dl, pl, pr)
                     : dnnl::convolution_forward::desc(dnnl::prop_kind::forward_inference,
                                                       dnnl::algorithm::convolution_direct, x_any, w_any, y_any,
                                                       st, dl, pl, pr);
  dnnl::convolution_forward::primitive_desc pd(d, attr, k.engine());
  q.prim = dnnl::convolution_forward(pd);
  q.wmem = wu8 ? k.weights_shifted(*w.value, w_plain, pd.weights_desc())
               : k.weights(*w.value, w_plain, pd.weights_desc());
  q.x_user = memory(x_user_md, k.engine(), nullptr);
  q.y_user = memory(y_user_md, k.engine(), nullptr);
  memory src = q.x_user, dst = q.y_user;
  if (pd.src_desc() != x_user_md) {
    q.x_blk = memory(pd.src_desc(), k.engine());
    q.rin = dnnl::reorder(q.x_user, q.x_blk);
    q.in_args[0] = {DNNL_ARG_FROM, q.x_user.get()};
    q.in_args[1] = {DNNL_ARG_TO, q.x_blk.get()};
    src = q.x_blk;
  }
  if (pd.dst_desc() != y_user_md) {
    q.y_blk = memory(pd.dst_desc(), k.engine());
    q.rout = dnnl::reorder(q.y_blk, q.y_user);
    q.out_args[0] = {DNNL_ARG_FROM, q.y_blk.get()};
    q.out_args[1] = {DNNL_ARG_TO, q.y_user.get()};
    dst = q.y_blk;
  }
  q.scratch = memory(pd.scratchpad_desc(), k.engine());
  q.args.push_back({DNNL_ARG_SRC, src.get()});
  q.args.push_back({DNNL_ARG_WEIGHTS, q.wmem.get()});
  q.args.push_back({DNNL_ARG_DST, dst.get()});
  q.args.push_back({DNNL_ARG_SCRATCHPAD, q.scratch.get()});
  if (q.has_scales) {
    q.scales.assign(static_cast<size_t>(q.per_ch ? s.m : 1), 0.f);
    q.scales_m = memory({{static_cast<int64_t>(q.scales.size())}, dt::f32, tag::x}, k.engine(), q.scales.data());
    q.args.push_back({DNNL_ARG_ATTR_OUTPUT_SCALES, q.scales_m.get()});
  }
  if (q.has_xz) {
    q.xz_m = bind_s32(k.engine(), &q.xz_val, DNNL_ARG_ATTR_ZERO_POINTS | DNNL_ARG_SRC, q.args);
  }
  if (q.has_dst_zp) {
    q.yz_m = bind_s32(k.engine(), &q.yz_val, DNNL_ARG_ATTR_ZERO_POINTS | DNNL_ARG_DST, q.args);
  }
  if (has_bias) {
    q.bias = memory(dnnl_bias ? b_md : pb_md, k.engine(), nullptr);
    q.bias_in = bi;
    q.args.push_back({dnnl_bias ? DNNL_ARG_BIAS : (DNNL_ARG_ATTR_MULTIPLE_POST_OP(0) | DNNL_ARG_SRC_1), q.bias.get()});
  }
  return kern;
}

}  // namespace pd
