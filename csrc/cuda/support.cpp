#include "support.h"

#include <algorithm>
#include <cstring>
#include <set>

#include "../core/activation.h"
#include "../core/engine_cache.h"
#include "../core/error.h"
#include "einsum_plan.h"
#include "kernels.h"

namespace pd::cuda {

namespace {

const std::set<std::string> kFloatOnly = {
    "Gemm", "MatMul", "pd.FusedGemm", "pd.FusedMatMul", "Conv", "pd.FusedConv", "LSTM",
    "Relu", "Tanh", "Sigmoid", "Exp", "Log", "Neg", "Abs", "Sqrt", "Reciprocal", "Floor", "Ceil",
    "Erf", "Sin", "Cos", "Elu", "LeakyRelu", "Softplus", "HardSigmoid", "Clip", "Pow",
    "Softmax", "LogSoftmax", "ArgMax", "ArgMin"};
// Ops whose types and shapes their own plan checks (Einsum: einsum_plan.h).
const std::set<std::string> kPlanned = {"Einsum"};
const std::set<std::string> kFloatOrInt64 = {"Add", "Sub", "Mul", "Div", "Max", "Min",
                                             "Equal", "Less", "Greater", "LessOrEqual", "GreaterOrEqual"};
const std::set<std::string> kBool = {"And", "Or", "Xor", "Not"};
// Ops that move elements of any fixed size (1, 2, 4 or 8 bytes).
const std::set<std::string> kAnyType = {"Concat", "Split", "Slice", "Transpose", "Expand", "Gather",
                                        "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity", "Cast"};
const std::set<std::string> kRandom = {"RandomNormal", "RandomNormalLike", "RandomUniform",
                                       "RandomUniformLike", "Multinomial", "Bernoulli"};
const std::set<DType> kCastTypes = {DType::F32, DType::F64, DType::U8, DType::I8, DType::I32, DType::I64,
                                    DType::Bool};

std::string qualified(const Node& n) { return n.domain.empty() ? n.op : n.domain + "." + n.op; }

std::string check_node(const Node& n, const std::vector<TensorInfo>& in, const std::vector<TensorInfo>& out) {
  const std::string op = qualified(n);
  auto why = [&](const std::string& s) { return n.describe() + ": " + s; };
  if (kRandom.count(op))
    return why("random operators run on the CPU backend only (the CUDA backend does not implement "
               "the row-seed streams of csrc/core/ops/random.cpp)");
  const bool known =
      kFloatOnly.count(op) || kFloatOrInt64.count(op) || kBool.count(op) || kAnyType.count(op) || kPlanned.count(op);
  if (!known) return why("no CUDA kernel for " + op);
  if (op == "Einsum" && !in.empty()) {
    // The lowering's own plan decides (einsum_plan.h): its refusal names the node and equation.
    InferCtx c(n, in);
    c.out = out;
    try {
      plan_einsum(c);
    } catch (const Error& e) {
      return e.what();
    }
    return "";
  }
  for (size_t i = 0; i < in.size(); ++i) {
    if (!in[i].present()) continue;
    const DType t = in[i].dtype;
    // Index and shape inputs are read on the host or by the gather kernel.
    const bool index_input = (op == "Gather" && i == 1) || (op == "Reshape" && i == 1) ||
                             (op == "Expand" && i == 1) || (op == "Slice" && i >= 1) ||
                             ((op == "Squeeze" || op == "Unsqueeze") && i == 1) || (op == "Split" && i == 1) ||
                             (op == "Clip" && i >= 1 && in[i].value) || (op == "LSTM" && i == 4);
    if (index_input) continue;
    if (kFloatOnly.count(op) && t != DType::F32)
      return why(std::string("the CUDA backend computes it in float32 only, input ") + std::to_string(i) +
                 " is " + dtype_name(t));
    if (kFloatOrInt64.count(op) && t != DType::F32 && t != DType::I64)
      return why(std::string("the CUDA backend computes it in float32 and int64 only, input ") +
                 std::to_string(i) + " is " + dtype_name(t));
    if (kBool.count(op) && t != DType::Bool) return why("expects bool inputs");
    if (op == "Cast" && !kCastTypes.count(t))
      return why(std::string("no CUDA cast from ") + dtype_name(t));
    if (kAnyType.count(op)) {
      const size_t s = dtype_size(t);
      if (s != 1 && s != 2 && s != 4 && s != 8) return why(std::string("data type ") + dtype_name(t));
    }
  }
  if (op == "Cast" && !out.empty() && !kCastTypes.count(out[0].dtype))
    return why(std::string("no CUDA cast to ") + dtype_name(out[0].dtype));
  if (op == "Clip")
    for (size_t i = 1; i < in.size(); ++i)
      if (in[i].present() && !in[i].value) return why("min and max must be constants");
  if (op == "pd.FusedGemm" || op == "pd.FusedMatMul" || op == "pd.FusedConv") {
    Act a;
    if (!parse_act(n.attr_string("activation", ""), &a)) return why("unknown activation");
  }
  if (op == "Conv" || op == "pd.FusedConv") {
    if (in[0].shape.size() != 4) return why("the CUDA backend runs 2-D convolutions only");
    if (n.attr_int("group", 1) != 1) return why("grouped convolution is not implemented on CUDA");
  }
  if (op == "Gather" && !(in[1].dtype == DType::I64 || in[1].dtype == DType::I32))
    return why("indices must be int32 or int64");
  if (op == "LSTM") {
    if (n.attr_string("direction", "forward") != "forward") return why("the CUDA LSTM runs direction=forward only");
    if (n.attr_int("layout", 0) != 0) return why("the CUDA LSTM runs layout=0 only");
    if (n.has("clip")) return why("the CUDA LSTM has no clip");
    if (n.attr_int("input_forget", 0) != 0) return why("the CUDA LSTM has no input_forget");
    if (n.has("activations")) {
      const auto acts = n.attr_strings("activations");
      if (acts != std::vector<std::string>{"Sigmoid", "Tanh", "Tanh"})
        return why("the CUDA LSTM runs the default activations (Sigmoid, Tanh, Tanh) only");
    }
    if (in.size() > 4 && in[4].present()) return why("the CUDA LSTM has no sequence_lens");
    if (in.size() > 7 && in[7].present()) return why("the CUDA LSTM has no peepholes");
  }
  return "";
}

}  // namespace

std::vector<std::string> supported_ops() {
  std::set<std::string> all;
  for (const auto* s : {&kFloatOnly, &kFloatOrInt64, &kBool, &kAnyType, &kPlanned}) all.insert(s->begin(), s->end());
  return {all.begin(), all.end()};
}

std::string unsupported_op(const Graph& g) {
  for (const auto& n : g.nodes) {
    const std::string op = qualified(n);
    if (kRandom.count(op) || !(kFloatOnly.count(op) || kFloatOrInt64.count(op) || kBool.count(op) ||
                               kAnyType.count(op) || kPlanned.count(op)))
      return check_node(n, {}, {});
  }
  return "";
}

std::string unsupported_reason(const Graph& g, const Analysis& a) {
  for (size_t i = 0; i < g.nodes.size(); ++i) {
    if (!a.live[i]) continue;
    const Node& n = g.nodes[i];
    std::vector<TensorInfo> in, out;
    for (const auto& v : n.inputs) in.push_back(v.empty() ? TensorInfo{} : a.values.at(v));
    for (const auto& v : n.outputs) out.push_back(v.empty() ? TensorInfo{} : a.values.at(v));
    std::string r = check_node(n, in, out);
    if (!r.empty()) return r;
  }
  return "";
}

namespace {
const char kPayloadMagic[] = "policyd-cuda-engine 1\n";
}

std::string encode_payload(const Payload& p) {
  std::string h = kPayloadMagic;
  h += "arch=" + p.arch + "\nnvrtc=" + p.nvrtc + "\nsource=" + p.source + "\nkind=" + p.kind +
       "\ncode_size=" + std::to_string(p.code.size()) + "\n\n";
  return h + p.code;
}

Payload decode_payload(const std::string& b) {
  const size_t ml = std::strlen(kPayloadMagic);
  if (b.compare(0, ml, kPayloadMagic) != 0)
    fail(PD_ERR_INVALID_ARG, "CUDA engine cache: not made by this backend (no '", "policyd-cuda-engine 1' header)");
  size_t end = b.find("\n\n", ml);
  if (end == std::string::npos) fail(PD_ERR_INVALID_ARG, "CUDA engine cache: truncated header");
  Payload p;
  std::string size;
  size_t pos = ml;
  while (pos < end + 1) {
    size_t nl = b.find('\n', pos);
    std::string kv = b.substr(pos, nl - pos);
    pos = nl + 1;
    size_t eq = kv.find('=');
    if (eq == std::string::npos) fail(PD_ERR_INVALID_ARG, "CUDA engine cache: bad header line '", kv, "'");
    std::string k = kv.substr(0, eq), v = kv.substr(eq + 1);
    if (k == "arch") p.arch = v;
    else if (k == "nvrtc") p.nvrtc = v;
    else if (k == "source") p.source = v;
    else if (k == "kind") p.kind = v;
    else if (k == "code_size") size = v;
    else fail(PD_ERR_INVALID_ARG, "CUDA engine cache: unknown header key '", k, "'");
  }
  p.code = b.substr(end + 2);
  if (size != std::to_string(p.code.size()))
    fail(PD_ERR_INVALID_ARG, "CUDA engine cache: code of ", p.code.size(), " bytes, header says ", size);
  if (p.kind != "cubin" && p.kind != "ptx") fail(PD_ERR_INVALID_ARG, "CUDA engine cache: unknown code kind '", p.kind, "'");
  return p;
}

void check_payload(const Payload& want, const Payload& got) {
  auto cmp = [](const char* what, const std::string& w, const std::string& g) {
    if (w != g)
      fail(PD_ERR_INVALID_ARG, "CUDA engine cache was built for ", what, " '", g, "', this device needs '", w,
           "'; rebuild engines");
  };
  cmp("architecture", want.arch, got.arch);
  cmp("NVRTC", want.nvrtc, got.nvrtc);
  cmp("kernel source", want.source, got.source);
}

}  // namespace pd::cuda
