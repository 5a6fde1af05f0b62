// Generated cases of the quantized models: the two patterns policyd fuses (quant_passes.cpp),
// end to end as whole small models, and the quantized ops in forms the Debian node tests lack.
// ONNX Runtime runs them unfused, op by op (make_cases.js turns its graph optimizations off),
// so its int8 rounding of each op is the reference for policyd's fused kernels.
//
//   - test_dynquant_*: ONNX Runtime's quantize_dynamic pattern, DynamicQuantizeLinear →
//     MatMulInteger → Cast → Mul(·, Mul(x_scale, w_scale)) → Add(bias) [→ Relu | Tanh], which
//     policyd fuses into pd.DynQuantMatMul: per-tensor and per-column weight scales (and zero
//     points), int8 and uint8 weights, batch 1 and larger, odd sizes.
//   - test_qdq_*: static QDQ, QuantizeLinear → DequantizeLinear(x), DequantizeLinear(W) →
//     MatMul [+ Add] | Gemm(transB) | Conv [→ Relu] [→ QuantizeLinear], fused into
//     pd.QuantMatMul / pd.QuantConv: uint8 and int8 activations, per-tensor and per-channel
//     weights, quantized (int32) and float biases, pads/strides/group.
//   - test_qlinearmatmul_*, test_qlinearconv_*, test_matmulinteger_*, test_convinteger_*,
//     test_quantizelinear_*, test_dequantizelinear_*, test_dynamicquantizelinear_*: the single
//     ops per channel/column, at opset 21, per axis and blocked (opset 21), int16 (opset 21).
//
// Which of these policyd fuses is checked by csrc/tests/quant_test.cpp (QuantCases.*), which
// loads these very models.
#include <cctype>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "cases.h"

namespace {

using namespace pd::cases;

// Deterministic values for the constants (weights, scales, zero points) of one case.
class Values {
 public:
  explicit Values(const std::string& seed) {
    uint32_t h = 2166136261u;
    for (char ch : seed) h = (h ^ static_cast<uint8_t>(ch)) * 16777619u;
    rng_.seed(h);
  }
  // n integers in [lo, hi].
  std::vector<double> ints(int64_t n, int lo, int hi) {
    std::uniform_int_distribution<int> d(lo, hi);
    std::vector<double> v(static_cast<size_t>(n));
    for (auto& x : v) x = d(rng_);
    return v;
  }
  // n floats in [lo, hi) (as float32).
  std::vector<double> reals(int64_t n, double lo, double hi) {
    std::uniform_real_distribution<double> d(lo, hi);
    std::vector<double> v(static_cast<size_t>(n));
    for (auto& x : v) x = static_cast<float>(d(rng_));
    return v;
  }

 private:
  std::mt19937 rng_;
};

int64_t numel(const Dims& d) {
  int64_t n = 1;
  for (int64_t x : d) n *= x;
  return n;
}

// Integer range of a quantized type: weights avoid -128 (as quantizers do, symmetric range).
int qlo(Elem t) { return t == U8 ? 0 : -127; }
int qhi(Elem t) { return t == U8 ? 255 : 127; }
const char* tname(Elem t) { return t == U8 ? "u8" : t == I8 ? "s8" : t == I16 ? "s16" : "u16"; }

// ---- (a) the dynamic pattern ----

struct Dyn {
  int64_t batch, k, n;
  Elem w;              // weight type
  bool per_column;     // w_scale (and w zero point) per column
  bool zero_point;     // a weight zero point input
  bool bias;
  const char* act;     // "", "Relu", "Tanh"
  int opset;
  bool batch3d;        // X is [2, batch, k]
};

void dynamic_cases(std::vector<Case>& out) {
  const Dyn ds[] = {
      {1, 16, 8, I8, false, false, true, "", 13, false},
      {1, 37, 19, I8, true, false, true, "", 13, false},
      {64, 33, 17, I8, false, true, true, "Relu", 13, false},
      {64, 33, 17, I8, true, true, true, "Relu", 13, false},
      {5, 24, 7, U8, false, true, true, "", 13, false},
      {5, 24, 7, U8, true, true, true, "Tanh", 13, false},
      {1, 64, 31, U8, true, true, true, "Relu", 21, false},
      {128, 65, 33, I8, true, false, true, "Tanh", 21, false},
      {3, 19, 11, I8, false, false, false, "", 21, false},
      {3, 21, 13, I8, true, false, true, "Relu", 21, true},
      {256, 96, 48, I8, true, false, true, "Relu", 13, false},
  };
  for (const Dyn& d : ds) {
    std::string name = std::string("test_dynquant_matmul_") + tname(d.w) + "_" +
                       (d.per_column ? "per_column" : "per_tensor") + (d.zero_point ? "_wzp" : "") +
                       (d.bias ? "" : "_nobias") + (*d.act ? std::string("_") + d.act : "") + "_" +
                       (d.batch3d ? "2x" : "") + std::to_string(d.batch) + "x" + std::to_string(d.k) +
                       "x" + std::to_string(d.n) + "_opset" + std::to_string(d.opset);
    for (auto& ch : name) ch = static_cast<char>(std::tolower(ch));
    Values v(name);
    Case c(name, d.opset);
    const Dims xd = d.batch3d ? Dims{2, d.batch, d.k} : Dims{d.batch, d.k};
    c.input("x", F32, xd, -2, 3);
    c.node("DynamicQuantizeLinear", {"x"}, {"xq", "xs", "xz"});
    c.constant("wq", d.w, {d.k, d.n}, v.ints(d.k * d.n, qlo(d.w), qhi(d.w)));
    const Dims sd = d.per_column ? Dims{d.n} : Dims{};
    std::vector<std::string> mm = {"xq", "wq", "xz"};
    if (d.zero_point) {
      const int zl = d.w == U8 ? 100 : -20, zh = d.w == U8 ? 156 : 20;
      c.constant("wz", d.w, sd, v.ints(d.per_column ? d.n : 1, zl, zh));
      mm.push_back("wz");
    }
    c.node("MatMulInteger", mm, {"y32"});
    c.node("Cast", {"y32"}, {"yf"}).i("to", F32);
    c.constant("ws", F32, sd, v.reals(d.per_column ? d.n : 1, 0.002, 0.02));
    c.node("Mul", {"xs", "ws"}, {"s"});
    std::string y = "ym";
    c.node("Mul", {"yf", "s"}, {y});
    if (d.bias) {
      c.constant("b", F32, {d.n}, v.reals(d.n, -0.5, 0.5));
      c.node("Add", {y, "b"}, {"ya"});
      y = "ya";
    }
    if (*d.act) {
      c.node(d.act, {y}, {"y"});
      y = "y";
    }
    c.output(y, F32);
    out.push_back(std::move(c));
  }
}

// ---- (b) static QDQ ----

enum class Kind { MatMul, Gemm, Conv };

struct Qdq {
  const char* name;
  Kind kind;
  Elem x;            // activation type (and the output's when quantized)
  Elem w;            // weight type
  bool per_channel;
  bool relu;
  bool quant_out;    // QuantizeLinear at the end
  bool int32_bias;   // bias as DequantizeLinear(int32) (else float); MatMul: an Add
  bool x_input;      // xq is a graph input (else QuantizeLinear of a float input)
  Dims xdims;        // MatMul/Gemm [M, K]; Conv [N, C, H, W]
  int64_t n;         // output columns / channels
  Dims kernel;       // Conv
  Dims pads, strides;
  int64_t group;
  int opset;
};

void qdq_cases(std::vector<Case>& out) {
  const Qdq qs[] = {
      // MatMul
      {"test_qdq_matmul_u8_per_tensor_f32_out", Kind::MatMul, U8, I8, false, false, false, false, false, {1, 24}, 10, {}, {}, {}, 1, 13},
      {"test_qdq_matmul_u8_per_tensor_bias_relu_u8_out", Kind::MatMul, U8, I8, false, true, true, false, false, {32, 37}, 19, {}, {}, {}, 1, 13},
      {"test_qdq_matmul_s8_per_column_bias_s8_out", Kind::MatMul, I8, I8, true, false, true, false, true, {7, 33}, 17, {}, {}, {}, 1, 13},
      {"test_qdq_matmul_s8_per_column_int32_bias_relu_f32_out", Kind::MatMul, I8, I8, true, true, false, true, false, {16, 40}, 24, {}, {}, {}, 1, 21},
      {"test_qdq_matmul_u8_u8w_per_tensor_bias_u8_out_opset21", Kind::MatMul, U8, U8, false, false, true, false, false, {3, 29}, 9, {}, {}, {}, 1, 21},
      {"test_qdq_matmul_u8_per_column_bias_u8_out_64x256x96", Kind::MatMul, U8, I8, true, false, true, false, false, {64, 256}, 96, {}, {}, {}, 1, 13},
      {"test_qdq_matmul_s8_per_tensor_bias_f32_out_64x256x96", Kind::MatMul, I8, I8, false, false, false, false, true, {64, 256}, 96, {}, {}, {}, 1, 13},
      // Gemm (transB = 1, weights [N, K])
      {"test_qdq_gemm_transb_u8_per_tensor_bias_f32_out", Kind::Gemm, U8, I8, false, false, false, false, false, {1, 48}, 16, {}, {}, {}, 1, 13},
      {"test_qdq_gemm_transb_u8_per_channel_int32_bias_relu_u8_out", Kind::Gemm, U8, I8, true, true, true, true, false, {64, 31}, 23, {}, {}, {}, 1, 13},
      {"test_qdq_gemm_transb_s8_per_channel_bias_s8_out_opset21", Kind::Gemm, I8, I8, true, false, true, false, true, {9, 20}, 12, {}, {}, {}, 1, 21},
      {"test_qdq_gemm_transb_s8_per_tensor_relu_f32_out", Kind::Gemm, I8, I8, false, true, false, false, false, {5, 27}, 11, {}, {}, {}, 1, 13},
      {"test_qdq_gemm_transb_u8_u8w_per_channel_bias_u8_out", Kind::Gemm, U8, U8, true, false, true, false, false, {6, 25}, 10, {}, {}, {}, 1, 13},
      // Conv
      {"test_qdq_conv_u8_per_tensor_f32_out", Kind::Conv, U8, I8, false, false, false, false, false, {1, 3, 8, 8}, 4, {3, 3}, {0, 0, 0, 0}, {1, 1}, 1, 13},
      {"test_qdq_conv_u8_per_channel_pads_strides_bias_relu_u8_out", Kind::Conv, U8, I8, true, true, true, true, false, {2, 4, 9, 7}, 6, {3, 3}, {1, 1, 1, 1}, {2, 2}, 1, 13},
      {"test_qdq_conv_s8_per_channel_group_bias_s8_out", Kind::Conv, I8, I8, true, false, true, false, true, {1, 6, 7, 7}, 6, {3, 3}, {1, 0, 1, 2}, {1, 1}, 3, 13},
      {"test_qdq_conv_u8_per_channel_depthwise_relu_f32_out_opset21", Kind::Conv, U8, I8, true, true, false, true, false, {1, 5, 6, 6}, 5, {3, 3}, {1, 1, 1, 1}, {1, 1}, 5, 21},
      {"test_qdq_conv_s8_per_tensor_1x1_stride2_relu_s8_out", Kind::Conv, I8, I8, false, true, true, false, false, {3, 8, 5, 5}, 7, {1, 1}, {0, 0, 0, 0}, {2, 2}, 1, 13},
      {"test_qdq_conv_u8_per_channel_bias_relu_u8_out_16x14x14_to32", Kind::Conv, U8, I8, true, true, true, false, false, {2, 16, 14, 14}, 32, {3, 3}, {1, 1, 1, 1}, {1, 1}, 1, 13},
      {"test_qdq_conv_s8_per_channel_bias_f32_out_16x14x14_to32", Kind::Conv, I8, I8, true, false, false, false, true, {2, 16, 14, 14}, 32, {3, 3}, {1, 1, 1, 1}, {1, 1}, 1, 13},
      {"test_qdq_conv_u8_u8w_per_channel_bias_u8_out", Kind::Conv, U8, U8, true, false, true, false, false, {1, 3, 6, 6}, 4, {3, 3}, {1, 1, 1, 1}, {1, 1}, 1, 13},
      {"test_qdq_conv1d_u8_per_channel_bias_u8_out", Kind::Conv, U8, I8, true, false, true, false, false, {2, 3, 11}, 4, {3}, {1, 1}, {2}, 1, 13},
  };
  for (const Qdq& q : qs) {
    Values v(q.name);
    Case c(q.name, q.opset);
    const bool conv = q.kind == Kind::Conv, gemm = q.kind == Kind::Gemm;
    // x: quantized input (a graph input, or QuantizeLinear of a float input).
    const double xs = q.x == U8 ? 0.0123 : 0.0087;
    const double xz = q.x == U8 ? 118 : -6;
    c.constant("xs", F32, {}, {xs});
    c.constant("xz", q.x, {}, {xz});
    if (q.x_input) {
      c.input("xq", q.x, q.xdims, qlo(q.x), qhi(q.x));
    } else {
      c.input("x", F32, q.xdims, -1.2, 1.2);
      c.node("QuantizeLinear", {"x", "xs", "xz"}, {"xq"});
    }
    c.node("DequantizeLinear", {"xq", "xs", "xz"}, {"xd"});
    // W: constant quantized weights.
    const int64_t cin = q.xdims[1];
    Dims wd;
    if (conv) {
      wd = {q.n, cin / q.group};
      for (int64_t k : q.kernel) wd.push_back(k);
    } else {
      wd = gemm ? Dims{q.n, q.xdims[1]} : Dims{q.xdims[1], q.n};
    }
    const int64_t axis = conv || gemm ? 0 : 1;
    const Dims sd = q.per_channel ? Dims{q.n} : Dims{};
    const int64_t ns = q.per_channel ? q.n : 1;
    c.constant("wq", q.w, wd, v.ints(numel(wd), qlo(q.w), qhi(q.w)));
    const std::vector<double> ws = v.reals(ns, 0.002, 0.01);
    c.constant("ws", F32, sd, ws);
    // Symmetric weights (zero point 0) for int8, as quantizers write them; uint8 weights
    // around 128.
    c.constant("wz", q.w, sd, q.w == U8 ? v.ints(ns, 120, 136) : std::vector<double>(ns, 0));
    auto dqw = c.node("DequantizeLinear", {"wq", "ws", "wz"}, {"wd"});
    if (q.per_channel) dqw.i("axis", axis);
    // Bias.
    std::string bias;
    if (q.int32_bias) {
      std::vector<double> bs(ws.size());
      for (size_t i = 0; i < ws.size(); ++i) bs[i] = static_cast<float>(static_cast<float>(xs) * ws[i]);
      c.constant("bq", I32, {q.n}, v.ints(q.n, -3000, 3000));
      c.constant("bs", F32, sd, bs);
      c.constant("bz", I32, sd, std::vector<double>(ns, 0));
      auto dqb = c.node("DequantizeLinear", {"bq", "bs", "bz"}, {"bd"});
      if (q.per_channel) dqb.i("axis", 0);
      bias = "bd";
    } else if (std::string(q.name).find("bias") != std::string::npos) {
      c.constant("b", F32, {q.n}, v.reals(q.n, -0.3, 0.3));
      bias = "b";
    }
    std::string y = "y0";
    if (q.kind == Kind::MatMul) {
      c.node("MatMul", {"xd", "wd"}, {y});
      if (!bias.empty()) {
        c.node("Add", {y, bias}, {"y1"});
        y = "y1";
      }
    } else if (gemm) {
      std::vector<std::string> in = {"xd", "wd"};
      if (!bias.empty()) in.push_back(bias);
      c.node("Gemm", in, {y}).i("transB", 1);
    } else {
      std::vector<std::string> in = {"xd", "wd"};
      if (!bias.empty()) in.push_back(bias);
      auto n = c.node("Conv", in, {y});
      n.ints("kernel_shape", q.kernel).ints("pads", q.pads).ints("strides", q.strides);
      if (q.group != 1) n.i("group", q.group);
    }
    if (q.relu) {
      c.node("Relu", {y}, {"y2"});
      y = "y2";
    }
    if (q.quant_out) {
      c.constant("ys", F32, {}, {q.relu ? 0.021 : 0.043});
      c.constant("yz", q.x, {}, {q.relu ? (q.x == U8 ? 0.0 : -128.0) : (q.x == U8 ? 128.0 : 0.0)});
      c.node("QuantizeLinear", {y, "ys", "yz"}, {"yq"});
      c.output("yq", q.x);
    } else {
      c.output(y, F32);
    }
    out.push_back(std::move(c));
  }
}

// Ties: scales that are powers of two make every product and sum exact on both sides, and
// v / y_scale = acc / 2, a tie (k + 0.5) wherever acc is odd: the fused kernels' output
// QuantizeLinear must round half to even as ONNX Runtime's does (oneDNN's int8 primitives
// for MatMul and 2-D Conv; the portable kernel for the 1-D Conv and uint8 per-column weights).
void qdq_tie_cases(std::vector<Case>& out) {
  struct T {
    const char* name;
    Kind kind;
    Elem w;
    Dims xdims, wdims;
    bool relu;
  };
  const T ts[] = {
      {"test_qdq_matmul_ties_to_even_s8_out", Kind::MatMul, I8, {8, 16}, {16, 12}, false},
      {"test_qdq_matmul_u8w_per_column_ties_to_even_s8_out", Kind::MatMul, U8, {8, 16}, {16, 12}, false},
      {"test_qdq_conv_ties_to_even_relu_s8_out", Kind::Conv, I8, {1, 4, 5, 5}, {6, 4, 2, 2}, true},
      {"test_qdq_conv1d_ties_to_even_s8_out", Kind::Conv, I8, {2, 4, 9}, {5, 4, 3}, false},
  };
  for (const T& t : ts) {
    Values v(t.name);
    Case c(t.name, 13);
    const bool conv = t.kind == Kind::Conv;
    c.input("xq", I8, t.xdims, -4, 4);
    c.constant("xs", F32, {}, {0.5});
    c.constant("xz", I8, {}, {0});
    c.node("DequantizeLinear", {"xq", "xs", "xz"}, {"xd"});
    const int64_t n = conv ? t.wdims[0] : t.wdims[1];
    const bool per = t.w == U8;
    const Dims sd = per ? Dims{n} : Dims{};
    const int64_t ns = per ? n : 1;
    const int wz = t.w == U8 ? 128 : 0;
    std::vector<double> wv = v.ints(numel(t.wdims), wz - 4, wz + 4);
    c.constant("wq", t.w, t.wdims, wv);
    c.constant("ws", F32, sd, std::vector<double>(ns, 0.25));
    c.constant("wz", t.w, sd, per ? v.ints(ns, wz - 1, wz + 1) : std::vector<double>(ns, wz));
    auto dqw = c.node("DequantizeLinear", {"wq", "ws", "wz"}, {"wd"});
    if (per) dqw.i("axis", 1);
    std::string y = "y0";
    if (conv) {
      Dims k(t.wdims.begin() + 2, t.wdims.end());
      c.node("Conv", {"xd", "wd"}, {y}).ints("kernel_shape", k);
    } else {
      c.node("MatMul", {"xd", "wd"}, {y});
    }
    if (t.relu) {
      c.node("Relu", {y}, {"y1"});
      y = "y1";
    }
    c.constant("ys", F32, {}, {0.25});
    c.constant("yz", I8, {}, {t.relu ? -99.0 : 1.0});
    c.node("QuantizeLinear", {y, "ys", "yz"}, {"yq"});
    c.output("yq", I8);
    out.push_back(std::move(c));
  }
}

// ---- (c) the single quantized ops beyond the Debian node tests ----

void qlinear_cases(std::vector<Case>& out) {
  // QLinearMatMul: per-column b scale/zero point; int8 and uint8; batch dims in A; opset 21.
  struct QM {
    const char* name;
    Elem a, b, y;
    Dims ad;
    int64_t n;
    bool per_column;
    int opset;
  };
  const QM qms[] = {
      {"test_qlinearmatmul_u8s8_per_column_opset10", U8, I8, U8, {5, 19}, 13, true, 10},
      {"test_qlinearmatmul_s8s8_per_column_s8_out_opset21", I8, I8, I8, {1, 33}, 17, true, 21},
      {"test_qlinearmatmul_u8u8_per_tensor_3d_opset21", U8, U8, U8, {2, 3, 11}, 7, false, 21},
      {"test_qlinearmatmul_s8s8_per_tensor_3d_opset21", I8, I8, I8, {2, 4, 16}, 8, false, 21},
  };
  for (const QM& m : qms) {
    Values v(m.name);
    Case c(m.name, m.opset);
    const int64_t k = m.ad.back();
    c.input("a", m.a, m.ad, qlo(m.a), qhi(m.a));
    c.constant("as", F32, {}, {0.0137});
    c.constant("az", m.a, {}, {m.a == U8 ? 121.0 : -3.0});
    c.constant("b", m.b, {k, m.n}, v.ints(k * m.n, qlo(m.b), qhi(m.b)));
    const Dims sd = m.per_column ? Dims{m.n} : Dims{};
    const int64_t ns = m.per_column ? m.n : 1;
    c.constant("bs", F32, sd, v.reals(ns, 0.002, 0.01));
    c.constant("bz", m.b, sd, m.b == U8 ? v.ints(ns, 120, 136) : std::vector<double>(ns, 0));
    c.constant("ys", F32, {}, {0.031});
    c.constant("yz", m.y, {}, {m.y == U8 ? 125.0 : 2.0});
    c.node("QLinearMatMul", {"a", "as", "az", "b", "bs", "bz", "ys", "yz"}, {"y"});
    c.output("y", m.y);
    out.push_back(std::move(c));
  }
  // QLinearConv: per-channel w scale; pads, strides, dilations, group.
  struct QC {
    const char* name;
    Elem x, w;
    Dims xd;
    int64_t m;
    Dims kernel, pads, strides, dilations;
    int64_t group;
    bool per_channel, bias;
  };
  const QC qcs[] = {
      {"test_qlinearconv_u8s8_per_channel_pads_strides_bias", U8, I8, {1, 3, 9, 9}, 5, {3, 3}, {1, 1, 1, 1}, {2, 2}, {1, 1}, 1, true, true},
      {"test_qlinearconv_s8s8_per_channel_group_dilations", I8, I8, {2, 4, 8, 8}, 6, {3, 3}, {2, 2, 2, 2}, {1, 1}, {2, 2}, 2, true, false},
      {"test_qlinearconv_u8s8_per_tensor_depthwise_bias", U8, I8, {1, 4, 6, 6}, 4, {3, 3}, {1, 1, 1, 1}, {1, 1}, {1, 1}, 4, false, true},
      {"test_qlinearconv_u8u8_per_tensor_asym_pads", U8, U8, {1, 2, 7, 5}, 3, {2, 3}, {0, 1, 1, 0}, {1, 2}, {1, 1}, 1, false, false},
  };
  for (const QC& q : qcs) {
    Values v(q.name);
    Case c(q.name, 10);
    c.input("x", q.x, q.xd, qlo(q.x), qhi(q.x));
    c.constant("xs", F32, {}, {0.0119});
    c.constant("xz", q.x, {}, {q.x == U8 ? 131.0 : 4.0});
    Dims wd = {q.m, q.xd[1] / q.group};
    for (int64_t k : q.kernel) wd.push_back(k);
    c.constant("w", q.w, wd, v.ints(numel(wd), qlo(q.w), qhi(q.w)));
    const Dims sd = q.per_channel ? Dims{q.m} : Dims{};
    const int64_t ns = q.per_channel ? q.m : 1;
    c.constant("ws", F32, sd, v.reals(ns, 0.002, 0.01));
    c.constant("wz", q.w, sd, q.w == U8 ? v.ints(ns, 126, 130) : std::vector<double>(ns, 0));
    c.constant("ys", F32, {}, {0.047});
    c.constant("yz", q.x, {}, {q.x == U8 ? 120.0 : -5.0});
    std::vector<std::string> in = {"x", "xs", "xz", "w", "ws", "wz", "ys", "yz"};
    if (q.bias) {
      c.constant("b", I32, {q.m}, v.ints(q.m, -4000, 4000));
      in.push_back("b");
    }
    auto n = c.node("QLinearConv", in, {"y"});
    n.ints("kernel_shape", q.kernel).ints("pads", q.pads).ints("strides", q.strides).ints("dilations", q.dilations);
    if (q.group != 1) n.i("group", q.group);
    c.output("y", q.x);
    out.push_back(std::move(c));
  }
  // Ties with power-of-two scales (acc · 0.5) and an odd output zero point: QLinearMatMul and
  // QLinearConv round before adding it, as ONNX Runtime does.
  {
    Case c("test_qlinearmatmul_ties_to_even_odd_zero_point", 10);
    Values v(c.name());
    c.input("a", I8, {6, 12}, -4, 4);
    c.constant("as", F32, {}, {0.5});
    c.constant("az", I8, {}, {0});
    c.constant("b", I8, {12, 7}, v.ints(12 * 7, -4, 4));
    c.constant("bs", F32, {}, {0.25});
    c.constant("bz", I8, {}, {0});
    c.constant("ys", F32, {}, {0.25});
    c.constant("yz", I8, {}, {3});
    c.node("QLinearMatMul", {"a", "as", "az", "b", "bs", "bz", "ys", "yz"}, {"y"});
    c.output("y", I8);
    out.push_back(std::move(c));
  }
  {
    Case c("test_qlinearconv_ties_to_even_odd_zero_point", 10);
    Values v(c.name());
    c.input("x", U8, {1, 3, 5, 5}, 124, 132);
    c.constant("xs", F32, {}, {0.5});
    c.constant("xz", U8, {}, {128});
    c.constant("w", I8, {4, 3, 2, 2}, v.ints(4 * 12, -4, 4));
    c.constant("ws", F32, {}, {0.25});
    c.constant("wz", I8, {}, {0});
    c.constant("ys", F32, {}, {0.25});
    c.constant("yz", U8, {}, {127});
    c.node("QLinearConv", {"x", "xs", "xz", "w", "ws", "wz", "ys", "yz"}, {"y"}).ints("kernel_shape", {2, 2});
    c.output("y", U8);
    out.push_back(std::move(c));
  }
  // MatMulInteger: per-column b zero point, int8 × int8, batch dims.
  {
    Case c("test_matmulinteger_u8s8_per_column_zero_point", 10);
    Values v(c.name());
    c.input("a", U8, {6, 23}, 0, 255);
    c.constant("b", I8, {23, 9}, v.ints(23 * 9, -127, 127));
    c.constant("az", U8, {}, {127});
    c.constant("bz", I8, {9}, v.ints(9, -10, 10));
    c.node("MatMulInteger", {"a", "b", "az", "bz"}, {"y"});
    c.output("y", I32);
    out.push_back(std::move(c));
  }
  {
    Case c("test_matmulinteger_s8s8_3d_no_zero_point", 10);
    Values v(c.name());
    c.input("a", I8, {2, 5, 17}, -128, 127);
    c.constant("b", I8, {17, 6}, v.ints(17 * 6, -128, 127));
    c.node("MatMulInteger", {"a", "b"}, {"y"});
    c.output("y", I32);
    out.push_back(std::move(c));
  }
  {
    Case c("test_matmulinteger_u8u8_zero_points_opset21", 21);
    Values v(c.name());
    c.input("a", U8, {4, 13}, 0, 255);
    c.constant("b", U8, {13, 5}, v.ints(13 * 5, 0, 255));
    c.constant("az", U8, {}, {3});
    c.constant("bz", U8, {}, {250});
    c.node("MatMulInteger", {"a", "b", "az", "bz"}, {"y"});
    c.output("y", I32);
    out.push_back(std::move(c));
  }
  // ConvInteger: pads, strides, group, zero points.
  {
    Case c("test_convinteger_u8u8_pads_strides_zero_points", 10);
    Values v(c.name());
    c.input("x", U8, {1, 3, 8, 7}, 0, 255);
    c.constant("w", U8, {4, 3, 3, 3}, v.ints(4 * 27, 0, 255));
    c.constant("xz", U8, {}, {128});
    c.constant("wz", U8, {}, {127});
    c.node("ConvInteger", {"x", "w", "xz", "wz"}, {"y"})
        .ints("kernel_shape", {3, 3}).ints("pads", {1, 2, 1, 0}).ints("strides", {2, 1});
    c.output("y", I32);
    out.push_back(std::move(c));
  }
  {
    Case c("test_convinteger_u8s8_group_dilations", 10);
    Values v(c.name());
    c.input("x", U8, {2, 4, 9, 9}, 0, 255);
    c.constant("w", I8, {6, 2, 3, 3}, v.ints(6 * 18, -127, 127));
    c.constant("xz", U8, {}, {100});
    c.node("ConvInteger", {"x", "w", "xz"}, {"y"})
        .ints("kernel_shape", {3, 3}).ints("dilations", {2, 2}).i("group", 2);
    c.output("y", I32);
    out.push_back(std::move(c));
  }
}

void qdq_op_cases(std::vector<Case>& out) {
  // Ties: x / scale exactly k + 0.5 rounds half to even.
  {
    Case c("test_quantizelinear_u8_ties_to_even", 13);
    std::vector<double> xv;
    for (int k = -4; k < 12; ++k) xv.push_back((k + 0.5) * 0.25);
    c.input_values("x", F32, {16}, xv);
    c.constant("s", F32, {}, {0.25});
    c.constant("z", U8, {}, {2});
    c.node("QuantizeLinear", {"x", "s", "z"}, {"y"});
    c.output("y", U8);
    out.push_back(std::move(c));
  }
  {
    Case c("test_quantizelinear_s8_ties_saturate_opset21", 21);
    std::vector<double> xv;
    for (int k = -70; k < 70; k += 5) xv.push_back((k + 0.5) * 2.0);
    c.input_values("x", F32, {28}, xv);
    c.constant("s", F32, {}, {1.0});
    c.constant("z", I8, {}, {-1});
    c.node("QuantizeLinear", {"x", "s", "z"}, {"y"});
    c.output("y", I8);
    out.push_back(std::move(c));
  }
  // Per axis.
  for (int opset : {13, 21}) {
    const std::string sfx = "_opset" + std::to_string(opset);
    {
      Case c("test_quantizelinear_per_axis1_u8" + sfx, opset);
      Values v(c.name());
      c.input("x", F32, {2, 5, 3}, -2, 2);
      c.constant("s", F32, {5}, v.reals(5, 0.005, 0.02));
      c.constant("z", U8, {5}, v.ints(5, 100, 150));
      c.node("QuantizeLinear", {"x", "s", "z"}, {"y"}).i("axis", 1);
      c.output("y", U8);
      out.push_back(std::move(c));
    }
    {
      Case c("test_quantizelinear_per_axis_neg_s8" + sfx, opset);
      Values v(c.name());
      c.input("x", F32, {3, 4}, -1, 1);
      c.constant("s", F32, {4}, v.reals(4, 0.004, 0.01));
      c.constant("z", I8, {4}, v.ints(4, -5, 5));
      c.node("QuantizeLinear", {"x", "s", "z"}, {"y"}).i("axis", -1);
      c.output("y", I8);
      out.push_back(std::move(c));
    }
    {
      Case c("test_dequantizelinear_per_axis0_s8" + sfx, opset);
      Values v(c.name());
      c.input("x", I8, {4, 3, 2}, -128, 127);
      c.constant("s", F32, {4}, v.reals(4, 0.005, 0.05));
      c.constant("z", I8, {4}, v.ints(4, -10, 10));
      c.node("DequantizeLinear", {"x", "s", "z"}, {"y"}).i("axis", 0);
      c.output("y", F32);
      out.push_back(std::move(c));
    }
    {
      Case c("test_dequantizelinear_per_axis2_u8" + sfx, opset);
      Values v(c.name());
      c.input("x", U8, {2, 3, 5}, 0, 255);
      c.constant("s", F32, {5}, v.reals(5, 0.005, 0.05));
      c.constant("z", U8, {5}, v.ints(5, 110, 140));
      c.node("DequantizeLinear", {"x", "s", "z"}, {"y"}).i("axis", 2);
      c.output("y", F32);
      out.push_back(std::move(c));
    }
  }
  {
    Case c("test_dequantizelinear_int32_per_axis_opset13", 13);
    Values v(c.name());
    c.input("x", I32, {3, 4}, -100000, 100000);
    c.constant("s", F32, {4}, v.reals(4, 1e-5, 1e-4));
    c.node("DequantizeLinear", {"x", "s"}, {"y"}).i("axis", 1);
    c.output("y", F32);
    out.push_back(std::move(c));
  }
  // Blocked (opset 21): scale [.., D/block, ..] along axis.
  {
    Case c("test_quantizelinear_block_axis1_u8_opset21", 21);
    Values v(c.name());
    c.input("x", F32, {3, 8}, -1, 1);
    c.constant("s", F32, {3, 2}, v.reals(6, 0.004, 0.01));
    c.constant("z", U8, {3, 2}, v.ints(6, 100, 150));
    c.node("QuantizeLinear", {"x", "s", "z"}, {"y"}).i("axis", 1).i("block_size", 4);
    c.output("y", U8);
    out.push_back(std::move(c));
  }
  {
    Case c("test_quantizelinear_block_axis0_uneven_s8_opset21", 21);
    Values v(c.name());
    c.input("x", F32, {7, 2}, -1, 1);
    c.constant("s", F32, {3, 2}, v.reals(6, 0.004, 0.01));
    c.constant("z", I8, {3, 2}, v.ints(6, -5, 5));
    c.node("QuantizeLinear", {"x", "s", "z"}, {"y"}).i("axis", 0).i("block_size", 3);
    c.output("y", I8);
    out.push_back(std::move(c));
  }
  {
    Case c("test_dequantizelinear_block_axis1_s8_opset21", 21);
    Values v(c.name());
    c.input("x", I8, {2, 9}, -128, 127);
    c.constant("s", F32, {2, 3}, v.reals(6, 0.005, 0.05));
    c.constant("z", I8, {2, 3}, v.ints(6, -10, 10));
    c.node("DequantizeLinear", {"x", "s", "z"}, {"y"}).i("axis", 1).i("block_size", 3);
    c.output("y", F32);
    out.push_back(std::move(c));
  }
  {
    Case c("test_dequantizelinear_block_axis0_uneven_u8_opset21", 21);
    Values v(c.name());
    c.input("x", U8, {5, 3}, 0, 255);
    c.constant("s", F32, {3, 3}, v.reals(9, 0.005, 0.05));
    c.constant("z", U8, {3, 3}, v.ints(9, 110, 140));
    c.node("DequantizeLinear", {"x", "s", "z"}, {"y"}).i("axis", 0).i("block_size", 2);
    c.output("y", F32);
    out.push_back(std::move(c));
  }
  // int16 / uint16 (opset 21), output_dtype.
  {
    Case c("test_quantizelinear_int16_opset21", 21);
    c.input("x", F32, {3, 5}, -40, 40);
    c.constant("s", F32, {}, {0.001});
    c.constant("z", I16, {}, {-7});
    c.node("QuantizeLinear", {"x", "s", "z"}, {"y"});
    c.output("y", I16);
    out.push_back(std::move(c));
  }
  {
    Case c("test_dequantizelinear_uint16_opset21", 21);
    c.input("x", U16, {4, 3}, 0, 65535);
    c.constant("s", F32, {}, {0.0003});
    c.constant("z", U16, {}, {32768});
    c.node("DequantizeLinear", {"x", "s", "z"}, {"y"});
    c.output("y", F32);
    out.push_back(std::move(c));
  }
  {
    Case c("test_quantizelinear_output_dtype_int8_opset21", 21);
    c.input("x", F32, {2, 6}, -1, 1);
    c.constant("s", F32, {}, {0.0078});
    c.node("QuantizeLinear", {"x", "s"}, {"y"}).i("output_dtype", I8);
    c.output("y", I8);
    out.push_back(std::move(c));
  }
  // DynamicQuantizeLinear: odd sizes, all positive, all negative (0 stays in the range).
  struct DQ {
    const char* name;
    Dims d;
    double lo, hi;
  };
  const DQ dqs[] = {
      {"test_dynamicquantizelinear_odd_3d", {3, 7, 5}, -3, 5},
      {"test_dynamicquantizelinear_all_positive", {37}, 0.5, 9},
      {"test_dynamicquantizelinear_all_negative", {4, 9}, -7, -0.25},
  };
  for (const DQ& d : dqs) {
    Case c(d.name, 11);
    c.input("x", F32, d.d, d.lo, d.hi);
    c.node("DynamicQuantizeLinear", {"x"}, {"y", "ys", "yz"});
    c.output("y", U8).output("ys", F32).output("yz", U8);
    out.push_back(std::move(c));
  }
}

}  // namespace

PD_ONNX_CASES(quant) {
  dynamic_cases(out);
  qdq_cases(out);
  qdq_tie_cases(out);
  qlinear_cases(out);
  qdq_op_cases(out);
}
