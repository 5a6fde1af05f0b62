// pd_make_bench_models: the models of `make bench-quant` (docs/benchmarks.md), made the same way
// on every machine (no Python, no randomness that depends on the library):
//
//   pd_make_bench_models --mlp-large PATH/mlp-large.onnx --out DIR
//
// writes into DIR:
//   mlp-large.onnx        the f32 model, copied byte for byte;
//   mlp-large-int8.onnx   the same model with every MatMul/Gemm on a constant 2-D weight replaced by
//                         the pattern ONNX Runtime's quantize_dynamic (default settings) produces:
//                           DynamicQuantizeLinear(x) -> xq, xs, xzp
//                           MatMulInteger(xq, Wq, xzp, Wzp) -> y32;  Cast(to=FLOAT)
//                           Mul(xs, Ws) -> s;  Mul(y, s) -> y  [;  Add(y, bias) for a Gemm's C]
//                         weights quantized per tensor, symmetric int8, as onnxruntime/python/tools/
//                         quantization does: Ws = 2·max|W| / 254 (= max|W|/127), Wq = clip(round(W/Ws),
//                         -127, 127) with round half to even, Wzp = 0;
//   attention-einsum.onnx an attention policy in Einsum form (see make_attention);
//   models.json           their I/O in the format of shared/peers/models/models.json, read by
//                         `policyctl bench engine --models DIR` and ort_bench.js.
#include <onnx/onnx_pb.h>

#include <algorithm>
#include <cfenv>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iostream>
#include <map>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace {

[[noreturn]] void fail(const std::string& msg) { throw std::runtime_error(msg); }

std::string slurp(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) fail("cannot read " + path);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

void write_file(const std::string& path, const std::string& bytes) {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
    if (!f) fail("cannot write " + tmp);
    f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    if (!f) fail("cannot write " + tmp);
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) fail("cannot rename " + tmp + " to " + path);
}

// ---- tensors ----

std::vector<float> float_data(const onnx::TensorProto& t) {
  if (t.data_type() != onnx::TensorProto::FLOAT) fail("initializer " + t.name() + " is not FLOAT");
  if (t.data_location() == onnx::TensorProto::EXTERNAL) fail("initializer " + t.name() + " has external data");
  int64_t n = 1;
  for (int64_t d : t.dims()) n *= d;
  std::vector<float> v(static_cast<size_t>(n));
  if (t.has_raw_data()) {
    if (t.raw_data().size() != v.size() * 4) fail("initializer " + t.name() + ": raw_data size does not match dims");
    std::memcpy(v.data(), t.raw_data().data(), t.raw_data().size());  // little-endian hosts only
  } else {
    if (t.float_data_size() != n) fail("initializer " + t.name() + ": float_data size does not match dims");
    for (int64_t i = 0; i < n; ++i) v[i] = t.float_data(static_cast<int>(i));
  }
  return v;
}

onnx::TensorProto float_tensor(const std::string& name, const std::vector<int64_t>& dims, const std::vector<float>& v) {
  onnx::TensorProto t;
  t.set_name(name);
  t.set_data_type(onnx::TensorProto::FLOAT);
  for (int64_t d : dims) t.add_dims(d);
  t.set_raw_data(std::string(reinterpret_cast<const char*>(v.data()), v.size() * 4));
  return t;
}

onnx::TensorProto int64_tensor(const std::string& name, const std::vector<int64_t>& v) {
  onnx::TensorProto t;
  t.set_name(name);
  t.set_data_type(onnx::TensorProto::INT64);
  t.add_dims(static_cast<int64_t>(v.size()));
  for (int64_t x : v) t.add_int64_data(x);
  return t;
}

// ---- quantization, as onnxruntime's quantizer does it ----

struct Quantized {
  std::vector<int8_t> q;
  float scale = 0;
};

// Per-tensor symmetric int8: rmin = -max|w|, rmax = max|w|, qmin = -127, qmax = 127,
// scale = (rmax - rmin) / (qmax - qmin) in float32 (1 where the weight is all zeros),
// q = clip(round_half_even(w / scale), -127, 127).
Quantized quantize_symmetric_int8(const std::vector<float>& w) {
  float absmax = 0;
  for (float x : w) absmax = std::max(absmax, std::fabs(x));
  Quantized r;
  r.scale = absmax > 0 ? (absmax - (-absmax)) / 254.0f : 1.0f;
  r.q.resize(w.size());
  const int mode = std::fegetround();
  std::fesetround(FE_TONEAREST);
  for (size_t i = 0; i < w.size(); ++i) {
    const float v = std::nearbyint(w[i] / r.scale);  // ties to even in FE_TONEAREST
    r.q[i] = static_cast<int8_t>(std::min(127.0f, std::max(-127.0f, v)));
  }
  std::fesetround(mode);
  return r;
}

onnx::NodeProto node(const std::string& op, const std::string& name, const std::vector<std::string>& in,
                     const std::vector<std::string>& out) {
  onnx::NodeProto n;
  n.set_op_type(op);
  n.set_name(name);
  for (const auto& s : in) n.add_input(s);
  for (const auto& s : out) n.add_output(s);
  return n;
}

const onnx::AttributeProto* attr(const onnx::NodeProto& n, const std::string& name) {
  for (const auto& a : n.attribute())
    if (a.name() == name) return &a;
  return nullptr;
}

// Replaces every MatMul and Gemm of m whose weight (input 1) is a 2-D FLOAT initializer; returns
// how many. One DynamicQuantizeLinear per quantized activation, shared by its consumers, as ORT does.
int quantize_dynamic(onnx::ModelProto& m) {
  onnx::GraphProto& g = *m.mutable_graph();
  std::map<std::string, int> init;  // name -> index
  for (int i = 0; i < g.initializer_size(); ++i) init[g.initializer(i).name()] = i;
  std::map<std::string, int> uses;  // initializer name -> node inputs that read it
  for (const auto& n : g.node())
    for (const auto& s : n.input()) ++uses[s];
  std::map<std::string, bool> dql_done;
  std::vector<std::string> dead_inits;
  google::protobuf::RepeatedPtrField<onnx::NodeProto> out_nodes;
  std::vector<onnx::TensorProto> new_inits;
  int count = 0;
  for (const onnx::NodeProto& n : g.node()) {
    const bool gemm = n.op_type() == "Gemm", matmul = n.op_type() == "MatMul";
    const auto w_it = (gemm || matmul) && n.input_size() >= 2 ? init.find(n.input(1)) : init.end();
    if (w_it == init.end() || g.initializer(w_it->second).dims_size() != 2) {
      *out_nodes.Add() = n;
      continue;
    }
    const onnx::TensorProto& wt = g.initializer(w_it->second);
    const std::string& nm = n.name().empty() ? n.output(0) : n.name();
    int64_t k = wt.dims(0), cols = wt.dims(1);
    std::vector<float> w = float_data(wt);
    if (gemm) {
      const auto* ta = attr(n, "transA");
      const auto* tb = attr(n, "transB");
      const auto* al = attr(n, "alpha");
      const auto* be = attr(n, "beta");
      if ((ta && ta->i() != 0) || (al && al->f() != 1.0f) || (be && be->f() != 1.0f))
        fail("Gemm " + nm + ": only transA=0, alpha=1, beta=1 are quantized");
      if (tb && tb->i() != 0) {  // W is [N,K]: store it as [K,N] for MatMulInteger
        std::vector<float> t(w.size());
        for (int64_t r = 0; r < k; ++r)
          for (int64_t c = 0; c < cols; ++c) t[c * k + r] = w[r * cols + c];
        w.swap(t);
        std::swap(k, cols);
      }
    }
    if (uses[wt.name()] == 1) dead_inits.push_back(wt.name());
    const Quantized q = quantize_symmetric_int8(w);
    const std::string& x = n.input(0);
    const std::string xq = x + "_quantized", xs = x + "_scale", xzp = x + "_zero_point";
    if (!dql_done[x]) {
      *out_nodes.Add() = node("DynamicQuantizeLinear", x + "_QuantizeLinear", {x}, {xq, xs, xzp});
      dql_done[x] = true;
    }
    const std::string wq = wt.name() + "_quantized", ws = wt.name() + "_scale", wzp = wt.name() + "_zero_point";
    {
      onnx::TensorProto t;
      t.set_name(wq);
      t.set_data_type(onnx::TensorProto::INT8);
      t.add_dims(k);
      t.add_dims(cols);
      t.set_raw_data(std::string(reinterpret_cast<const char*>(q.q.data()), q.q.size()));
      new_inits.push_back(t);
      new_inits.push_back(float_tensor(ws, {}, {q.scale}));
      onnx::TensorProto z;
      z.set_name(wzp);
      z.set_data_type(onnx::TensorProto::INT8);
      z.set_raw_data(std::string(1, '\0'));
      new_inits.push_back(z);
    }
    const std::string y = n.output(0);
    const bool bias = gemm && n.input_size() >= 3 && !n.input(2).empty();
    const std::string y32 = y + "_MatMul_output_quantized", yf = y + "_output_quantized_cast",
                      s = nm + "_scales_mul", ym = bias ? y + "_MatMul_output" : y;
    *out_nodes.Add() = node("MatMulInteger", nm + "_quant", {xq, wq, xzp, wzp}, {y32});
    onnx::NodeProto cast = node("Cast", nm + "_output_quantized_cast", {y32}, {yf});
    auto* to = cast.add_attribute();
    to->set_name("to");
    to->set_type(onnx::AttributeProto::INT);
    to->set_i(onnx::TensorProto::FLOAT);
    *out_nodes.Add() = cast;
    *out_nodes.Add() = node("Mul", nm + "_scales_mul", {xs, ws}, {s});
    *out_nodes.Add() = node("Mul", nm + "_output_scale_mul", {yf, s}, {ym});
    if (bias) *out_nodes.Add() = node("Add", nm + "_bias_add", {ym, n.input(2)}, {y});
    ++count;
  }
  g.mutable_node()->Swap(&out_nodes);
  google::protobuf::RepeatedPtrField<onnx::TensorProto> kept;
  for (const auto& t : g.initializer())
    if (std::find(dead_inits.begin(), dead_inits.end(), t.name()) == dead_inits.end()) *kept.Add() = t;
  for (auto& t : new_inits) *kept.Add() = std::move(t);
  g.mutable_initializer()->Swap(&kept);
  // MatMulInteger and DynamicQuantizeLinear are opset 10/11: the model's default opset covers them.
  return count;
}

// ---- the attention policy ----

// splitmix64: the same weights on every machine and standard library.
struct Rng {
  uint64_t s;
  uint64_t next() {
    uint64_t z = (s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  float uniform(float lo, float hi) { return lo + (hi - lo) * static_cast<float>((next() >> 40) * 0x1p-24); }
};

void add_io(onnx::ValueInfoProto* v, const std::string& name, const std::vector<int64_t>& shape) {
  v->set_name(name);
  auto* tt = v->mutable_type()->mutable_tensor_type();
  tt->set_elem_type(onnx::TensorProto::FLOAT);
  auto* sh = tt->mutable_shape();
  for (int64_t d : shape) {
    auto* dim = sh->add_dim();
    if (d < 0) dim->set_dim_param("batch");
    else dim->set_dim_value(d);
  }
}

constexpr int64_t kTokens = 100, kModel = 128, kHeads = 4, kHeadDim = 32, kHidden = 128, kActions = 8;

// obs [batch, 100, 128] -> Q, K, V = obs·W + b (128×128 each) -> [b,100,4,32] ->
// Einsum bmhd,bnhd->bmhn -> · 1/√32 -> Softmax over n -> Einsum bmhn,bnhd->bmhd -> [b,100,128] ->
// ·Wo + bo -> mean over tokens -> [b,128] -> ·W1 + b1, Relu -> ·W2 + b2 -> action [b,8].
// Weights uniform in ±1/√fan_in (torch's Linear default range), seeded.
onnx::ModelProto make_attention() {
  onnx::ModelProto m;
  m.set_ir_version(8);
  m.set_producer_name("pd_make_bench_models");
  auto* os = m.add_opset_import();
  os->set_domain("");
  os->set_version(17);
  onnx::GraphProto& g = *m.mutable_graph();
  g.set_name("attention-einsum");
  add_io(g.add_input(), "obs", {-1, kTokens, kModel});
  add_io(g.add_output(), "action", {-1, kActions});
  Rng rng{20261206};
  auto linear = [&](const std::string& name, int64_t in, int64_t out) {
    const float r = 1.0f / std::sqrt(static_cast<float>(in));
    std::vector<float> w(static_cast<size_t>(in * out)), b(static_cast<size_t>(out));
    for (float& x : w) x = rng.uniform(-r, r);
    for (float& x : b) x = rng.uniform(-r, r);
    *g.add_initializer() = float_tensor(name + ".weight", {in, out}, w);
    *g.add_initializer() = float_tensor(name + ".bias", {out}, b);
  };
  auto matmul_add = [&](const std::string& name, const std::string& x, const std::string& y) {
    *g.add_node() = node("MatMul", name + "/MatMul", {x, name + ".weight"}, {name + "/mm"});
    *g.add_node() = node("Add", name + "/Add", {name + "/mm", name + ".bias"}, {y});
  };
  linear("q", kModel, kModel);
  linear("k", kModel, kModel);
  linear("v", kModel, kModel);
  linear("o", kModel, kModel);
  linear("fc1", kModel, kHidden);
  linear("fc2", kHidden, kActions);
  *g.add_initializer() = int64_tensor("heads_shape", {0, kTokens, kHeads, kHeadDim});
  *g.add_initializer() = int64_tensor("model_shape", {0, kTokens, kModel});
  *g.add_initializer() = float_tensor("scale", {}, {1.0f / std::sqrt(static_cast<float>(kHeadDim))});
  for (const char* p : {"q", "k", "v"}) {
    matmul_add(p, "obs", std::string(p) + "/proj");
    *g.add_node() = node("Reshape", std::string(p) + "/Reshape", {std::string(p) + "/proj", "heads_shape"},
                         {std::string(p) + "/heads"});
  }
  auto einsum = [&](const std::string& name, const std::string& eq, const std::vector<std::string>& in,
                    const std::string& out) {
    onnx::NodeProto n = node("Einsum", name, in, {out});
    auto* a = n.add_attribute();
    a->set_name("equation");
    a->set_type(onnx::AttributeProto::STRING);
    a->set_s(eq);
    *g.add_node() = n;
  };
  einsum("scores/Einsum", "bmhd,bnhd->bmhn", {"q/heads", "k/heads"}, "scores");
  *g.add_node() = node("Mul", "scores/Mul", {"scores", "scale"}, {"scores_scaled"});
  {
    onnx::NodeProto n = node("Softmax", "attn/Softmax", {"scores_scaled"}, {"attn"});
    auto* a = n.add_attribute();
    a->set_name("axis");
    a->set_type(onnx::AttributeProto::INT);
    a->set_i(-1);
    *g.add_node() = n;
  }
  einsum("context/Einsum", "bmhn,bnhd->bmhd", {"attn", "v/heads"}, "context");
  *g.add_node() = node("Reshape", "context/Reshape", {"context", "model_shape"}, {"context_flat"});
  matmul_add("o", "context_flat", "attended");
  {
    onnx::NodeProto n = node("ReduceMean", "pool/ReduceMean", {"attended"}, {"pooled"});
    auto* a = n.add_attribute();
    a->set_name("axes");
    a->set_type(onnx::AttributeProto::INTS);
    a->add_ints(1);
    auto* k = n.add_attribute();
    k->set_name("keepdims");
    k->set_type(onnx::AttributeProto::INT);
    k->set_i(0);
    *g.add_node() = n;
  }
  matmul_add("fc1", "pooled", "fc1/out");
  *g.add_node() = node("Relu", "fc1/Relu", {"fc1/out"}, {"fc1/act"});
  matmul_add("fc2", "fc1/act", "action");
  return m;
}

// ---- models.json ----

std::string io_json(const onnx::ValueInfoProto& v) {
  std::ostringstream s;
  s << "{\"name\": \"" << v.name() << "\", \"shape\": [";
  const auto& sh = v.type().tensor_type().shape();
  for (int i = 0; i < sh.dim_size(); ++i)
    s << (i ? ", " : "") << (sh.dim(i).has_dim_value() ? sh.dim(i).dim_value() : -1);
  s << "], \"datatype\": \"FP32\"}";
  return s.str();
}

int64_t param_count(const onnx::GraphProto& g) {
  int64_t total = 0;
  for (const auto& t : g.initializer()) {
    int64_t n = 1;
    for (int64_t d : t.dims()) n *= d;
    if (t.data_type() == onnx::TensorProto::FLOAT || t.data_type() == onnx::TensorProto::INT8) total += n;
  }
  return total;
}

// check_atol: the largest |policyd − ORT| the bench's output check accepts for the model.
std::string model_json(const std::string& name, const std::string& file, const onnx::GraphProto& g, double check_atol,
                       const std::string& note) {
  std::ostringstream s;
  s << "  \"" << name << "\": {\n    \"file\": \"" << file << "\",\n    \"inputs\": [";
  for (int i = 0; i < g.input_size(); ++i) s << (i ? ", " : "") << io_json(g.input(i));
  s << "],\n    \"outputs\": [";
  for (int i = 0; i < g.output_size(); ++i) s << (i ? ", " : "") << io_json(g.output(i));
  s << "],\n    \"params\": " << param_count(g) << ",\n    \"check_atol\": " << check_atol << ",\n    \"note\": \""
    << note << "\"\n  }";
  return s.str();
}

int usage() {
  std::cerr << "usage: pd_make_bench_models --mlp-large PATH/mlp-large.onnx --out DIR\n";
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  std::string src, out;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--mlp-large" && i + 1 < argc) src = argv[++i];
    else if (a == "--out" && i + 1 < argc) out = argv[++i];
    else return usage();
  }
  if (src.empty() || out.empty()) return usage();
  try {
    const std::string f32 = slurp(src);
    onnx::ModelProto m;
    if (!m.ParseFromString(f32)) fail(src + ": not an ONNX model");
    write_file(out + "/mlp-large.onnx", f32);
    onnx::ModelProto q = m;
    const int n = quantize_dynamic(q);
    if (n == 0) fail(src + ": no MatMul or Gemm with a constant 2-D weight to quantize");
    q.set_producer_name("pd_make_bench_models (quantize_dynamic pattern)");
    write_file(out + "/mlp-large-int8.onnx", q.SerializeAsString());
    const onnx::ModelProto att = make_attention();
    write_file(out + "/attention-einsum.onnx", att.SerializeAsString());

    std::ostringstream j;
    j << "{\n \"opset\": 17,\n \"producer\": \"pd_make_bench_models\",\n \"models\": {\n"
      << model_json("mlp-large", "mlp-large.onnx", m.graph(), 1e-4, "shared/peers/models/mlp-large.onnx, copied") << ",\n"
      << model_json("mlp-large-int8", "mlp-large-int8.onnx", q.graph(), 2e-2,
                    "mlp-large, every MatMul/Gemm in ORT quantize_dynamic's pattern (int8 weights, uint8 activations)")
      << ",\n"
      << model_json("attention-einsum", "attention-einsum.onnx", att.graph(), 1e-4,
                    "4 heads, 100 tokens, d=128, Einsum bmhd,bnhd->bmhn and bmhn,bnhd->bmhd")
      << "\n }\n}\n";
    write_file(out + "/models.json", j.str());
    std::cout << "pd_make_bench_models: " << out << "/: mlp-large.onnx, mlp-large-int8.onnx (" << n
              << " MatMul/Gemm quantized), attention-einsum.onnx, models.json\n";
  } catch (const std::exception& e) {
    std::cerr << "pd_make_bench_models: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
