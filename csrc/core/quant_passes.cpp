// Fusion of quantized patterns into policyd's fused int8 ops (ops/quant_fused.cpp), which the
// CPU backend runs as one oneDNN int8 primitive each. Runs before constant folding: the
// static pattern needs the quantized weights, which folding would turn into float.
//
// (a) ONNX Runtime's quantize_dynamic around a MatMul:
//       DynamicQuantizeLinear(X) -> xq, xs, xz
//       MatMulInteger(xq, Wq, xz, wz?) -> y32;  Cast(y32, to=FLOAT) -> y
//       Mul(xs, w_scale) -> s;  Mul(y, s) -> out  [-> Add(out, bias)]
//     becomes pd.DynQuantMatMul(X, Wq, w_scale, wz?, bias?) (the activation pass in passes.cpp
//     then folds a following activation into it).
// (b) static QDQ:
//       DequantizeLinear(xq, xs, xz?) -> x;  DequantizeLinear(Wq, ws, wz?) -> W  (Wq, ws, wz constant)
//       MatMul(x, W) [+ bias] | Gemm(x, W, C?) | Conv(x, W, B?)  [-> Relu] [-> QuantizeLinear(ys, yz?)]
//     becomes pd.QuantMatMul / pd.QuantConv(xq, xs, xz?, Wq, ws, wz?, bias?, ys?, yz?).
// A pattern whose parts do not have the forms the fused ops take (types, scale shapes,
// attributes) is left as it is: the unfused ops run it.
#include <algorithm>
#include <cstring>
#include <unordered_map>
#include <unordered_set>

#include "op.h"
#include "passes.h"

namespace pd {

namespace {

struct Index {
  std::unordered_map<std::string, size_t> producer;                // value -> node
  std::unordered_map<std::string, std::vector<size_t>> consumers;  // value -> nodes
  std::unordered_set<std::string> outputs;                         // graph outputs
};

Index index_of(const Graph& g) {
  Index x;
  for (size_t i = 0; i < g.nodes.size(); ++i) {
    for (const auto& o : g.nodes[i].outputs)
      if (!o.empty()) x.producer[o] = i;
    for (const auto& in : g.nodes[i].inputs)
      if (!in.empty()) x.consumers[in].push_back(i);
  }
  for (const auto& o : g.outputs) x.outputs.insert(o.name);
  return x;
}

bool is(const Node& n, const char* op) { return n.domain.empty() && n.op == op; }

const Node* producer(const Graph& g, const Index& x, const std::string& v) {
  auto it = x.producer.find(v);
  return it == x.producer.end() ? nullptr : &g.nodes[it->second];
}

// The one node reading v (nullptr when none, several, or v is a graph output).
size_t sole_consumer(const Index& x, const std::string& v) {
  if (x.outputs.count(v)) return SIZE_MAX;
  auto it = x.consumers.find(v);
  if (it == x.consumers.end() || it->second.size() != 1) return SIZE_MAX;
  return it->second[0];
}

TensorPtr constant(const Graph& g, const Node& n, size_t i) {
  if (i >= n.inputs.size() || n.inputs[i].empty()) return nullptr;
  auto it = g.constants.find(n.inputs[i]);
  return it == g.constants.end() ? nullptr : it->second;
}
bool present(const Node& n, size_t i) { return i < n.inputs.size() && !n.inputs[i].empty(); }
bool scalar(const Tensor& t) { return t.numel() == 1 && t.shape().size() <= 1; }
bool q8(DType t) { return t == DType::U8 || t == DType::I8; }

// The element type of value v when the graph tells it without shape inference.
DType value_type(const Graph& g, const Index& x, const std::string& v) {
  auto c = g.constants.find(v);
  if (c != g.constants.end()) return c->second->dtype();
  for (const auto& in : g.inputs)
    if (in.name == v) return in.dtype;
  const Node* p = producer(g, x, v);
  if (!p) return DType::Undefined;
  if (is(*p, "DynamicQuantizeLinear") && p->outputs[0] == v) return DType::U8;
  if (is(*p, "QuantizeLinear") && !p->has("output_dtype")) {
    TensorPtr zp = constant(g, *p, 2);
    if (zp) return zp->dtype();
    if (!present(*p, 2)) return DType::U8;
  }
  return DType::Undefined;
}

std::string add_constant(Graph& g, const std::string& base, TensorPtr t) {
  std::string name = base;
  for (int i = 0; g.constants.count(name) || name.empty(); ++i) name = base + "__pd_q" + std::to_string(i);
  g.constants[name] = std::move(t);
  return name;
}

// t (numel n) as a 1-D [n] constant.
std::string flat_constant(Graph& g, const std::string& name, const TensorPtr& t) {
  if (t->shape().size() == 1) return name;
  auto f = std::make_shared<Tensor>(t->dtype(), Shape{t->numel()});
  std::memcpy(f->data(), t->data(), t->nbytes());
  return add_constant(g, name + "__pd_flat", f);
}

// A float constant of n values broadcasting along the last axis of a rank-`rank` result:
// shape [n], [1, n], ... (rank <= result rank), or a DequantizeLinear of constants (the
// quantized bias of QDQ models), evaluated here. "" when v is neither.
std::string bias_constant(Graph& g, const Index& x, const std::string& v, int64_t n, size_t rank) {
  TensorPtr t;
  auto it = g.constants.find(v);
  if (it != g.constants.end()) {
    t = it->second;
  } else if (const Node* p = producer(g, x, v); p && is(*p, "DequantizeLinear")) {
    std::vector<TensorInfo> in(p->inputs.size());
    for (size_t i = 0; i < p->inputs.size(); ++i) {
      if (p->inputs[i].empty()) continue;
      TensorPtr c = constant(g, *p, i);
      if (!c) return "";
      in[i] = TensorInfo{c->dtype(), c->shape(), c};
    }
    try {
      t = evaluate(*p, in)[0];
    } catch (const Error&) {
      return "";  // the DequantizeLinear itself fails at load, naming itself
    }
  }
  if (!t || t->dtype() != DType::F32 || t->numel() != n || t->shape().empty() || t->shape().back() != n ||
      t->shape().size() > std::max<size_t>(rank, 1))
    return "";
  auto f = std::make_shared<Tensor>(DType::F32, Shape{n});
  std::memcpy(f->data(), t->data(), f->nbytes());
  return add_constant(g, v + "__pd_bias", f);
}

// ---------------------------------------------------------------------------------------------
// (a) dynamic
// ---------------------------------------------------------------------------------------------

bool fuse_dynamic(Graph& g, const Index& x, size_t mi, std::vector<bool>& dead) {
  const Node& m = g.nodes[mi];
  if (!is(m, "MatMulInteger") || m.inputs.size() < 3 || m.outputs.size() != 1) return false;
  const Node* d = producer(g, x, m.inputs[0]);
  if (!d || !is(*d, "DynamicQuantizeLinear") || d->outputs.size() != 3 || d->outputs[0] != m.inputs[0] ||
      d->outputs[2] != m.inputs[2] || d->outputs[1].empty())
    return false;
  TensorPtr wq = constant(g, m, 1);
  if (!wq || !q8(wq->dtype()) || wq->shape().size() != 2) return false;
  const int64_t n = wq->shape()[1];
  TensorPtr wz = constant(g, m, 3);
  if (present(m, 3) && (!wz || wz->dtype() != wq->dtype() || !(scalar(*wz) || wz->shape() == Shape{n})))
    return false;
  // Cast(to=FLOAT)
  const size_t ci = sole_consumer(x, m.outputs[0]);
  if (ci == SIZE_MAX || dead[ci]) return false;
  const Node& cast = g.nodes[ci];
  if (!is(cast, "Cast") || cast.attr_int("to", 0) != 1) return false;
  // Mul(y, s), s = Mul(xs, w_scale)
  const size_t pi = sole_consumer(x, cast.outputs[0]);
  if (pi == SIZE_MAX || dead[pi]) return false;
  const Node& mul = g.nodes[pi];
  if (!is(mul, "Mul") || mul.inputs.size() != 2) return false;
  const std::string& sv = mul.inputs[0] == cast.outputs[0] ? mul.inputs[1] : mul.inputs[0];
  const Node* sm = producer(g, x, sv);
  if (!sm || !is(*sm, "Mul") || sm->inputs.size() != 2) return false;
  int wsi = sm->inputs[0] == d->outputs[1] ? 1 : sm->inputs[1] == d->outputs[1] ? 0 : -1;
  if (wsi < 0) return false;
  TensorPtr ws = constant(g, *sm, static_cast<size_t>(wsi));
  if (!ws || ws->dtype() != DType::F32) return false;
  const bool ws_ok = scalar(*ws) || ws->shape() == Shape{n} || ws->shape() == Shape{1, n};
  if (!ws_ok) return false;
  Node f;
  f.name = m.name + "+dynamic";
  f.op = "DynQuantMatMul";
  f.domain = "pd";
  f.opset = 1;
  f.inputs = {d->inputs[0], m.inputs[1], flat_constant(g, sm->inputs[wsi], ws),
              present(m, 3) ? flat_constant(g, m.inputs[3], wz) : "", ""};
  f.outputs = mul.outputs;
  std::vector<size_t> kill = {ci, pi};
  // [Add(bias)]
  const size_t ai = sole_consumer(x, mul.outputs[0]);
  if (ai != SIZE_MAX && !dead[ai] && is(g.nodes[ai], "Add") && g.nodes[ai].inputs.size() == 2) {
    const Node& add = g.nodes[ai];
    const std::string& bv = add.inputs[0] == mul.outputs[0] ? add.inputs[1] : add.inputs[0];
    // The output keeps X's rank only when the bias is at most that rank (checked at infer time
    // too: a mismatch would change the output shape, so leave such an Add alone).
    std::string b = g.constants.count(bv) ? bias_constant(g, x, bv, n, 2) : "";
    if (!b.empty() && g.constants.at(bv)->shape().size() <= 1) {
      f.inputs[4] = b;
      f.outputs = add.outputs;
      kill.push_back(ai);
    }
  }
  while (!f.inputs.empty() && f.inputs.back().empty()) f.inputs.pop_back();
  g.nodes[mi] = std::move(f);
  for (size_t k : kill) dead[k] = true;
  return true;
}

// ---------------------------------------------------------------------------------------------
// (b) static QDQ
// ---------------------------------------------------------------------------------------------

// A DequantizeLinear with a per-tensor scale (and zero point) over uint8/int8 data.
bool dq_activation(const Graph& g, const Index& x, const Node* d) {
  if (!d || !is(*d, "DequantizeLinear") || d->inputs.size() < 2 || d->has("block_size")) return false;
  TensorPtr s = constant(g, *d, 1);
  if (!s || s->dtype() != DType::F32 || !scalar(*s)) return false;
  if (present(*d, 2)) {
    TensorPtr z = constant(g, *d, 2);
    if (!z || !q8(z->dtype()) || !scalar(*z)) return false;
  }
  const DType t = value_type(g, x, d->inputs[0]);
  if (!q8(t)) return false;
  if (present(*d, 2) && constant(g, *d, 2)->dtype() != t) return false;
  return true;
}

bool fuse_static(Graph& g, const Index& x, size_t ni, std::vector<bool>& dead) {
  const Node& n = g.nodes[ni];
  const bool mm = is(n, "MatMul"), gemm = is(n, "Gemm"), conv = is(n, "Conv");
  if ((!mm && !gemm && !conv) || n.inputs.size() < 2 || n.outputs.size() != 1) return false;
  const Node* dx = producer(g, x, n.inputs[0]);
  const Node* dw = producer(g, x, n.inputs[1]);
  if (!dq_activation(g, x, dx)) return false;
  if (!dw || !is(*dw, "DequantizeLinear") || dw->has("block_size")) return false;
  TensorPtr wq = constant(g, *dw, 0), ws = constant(g, *dw, 1), wz = constant(g, *dw, 2);
  if (!wq || !ws || (present(*dw, 2) && !wz) || !q8(wq->dtype()) || ws->dtype() != DType::F32) return false;
  if (wz && wz->dtype() != wq->dtype()) return false;
  const Shape& wsh = wq->shape();
  const int64_t rank = static_cast<int64_t>(wsh.size());
  if ((mm || gemm) && rank != 2) return false;
  if (conv && (rank < 3 || rank > 5)) return false;
  if (gemm && (n.attr_int("transA", 0) != 0 || n.attr_float("alpha", 1.f) != 1.f ||
               (present(n, 2) && n.attr_float("beta", 1.f) != 1.f)))
    return false;
  const bool tb = gemm && n.attr_int("transB", 0) != 0;
  // Per-channel axis of W: the output column (MatMul/Gemm) or output channel (Conv).
  int64_t axis = dw->attr_int("axis", 1);
  if (axis < 0) axis += rank;
  const int64_t out_axis = conv ? 0 : tb ? 0 : 1;
  const int64_t per = wsh[out_axis];
  if (!scalar(*ws) && !(ws->shape() == Shape{per} && axis == out_axis)) return false;
  if (wz && !(wz->shape() == ws->shape() || (scalar(*wz) && scalar(*ws)))) return false;
  // Transposed Gemm weights: store Wq as [K, N].
  std::string wq_name = dw->inputs[0];
  if (tb) {
    const int64_t nn = wsh[0], kk = wsh[1];
    auto t = std::make_shared<Tensor>(wq->dtype(), Shape{kk, nn});
    const uint8_t* src = static_cast<const uint8_t*>(wq->data());
    uint8_t* dst = static_cast<uint8_t*>(t->data());
    for (int64_t i = 0; i < nn; ++i)
      for (int64_t k = 0; k < kk; ++k) dst[k * nn + i] = src[i * kk + k];
    wq_name = add_constant(g, wq_name + "__pd_t", t);
  }
  Node f;
  f.name = n.name + "+qdq";
  f.op = conv ? "QuantConv" : "QuantMatMul";
  f.domain = "pd";
  f.opset = 1;
  if (conv) f.attrs = n.attrs;  // the Conv attributes
  f.inputs = {dx->inputs[0], dx->inputs[1], present(*dx, 2) ? dx->inputs[2] : "", wq_name,
              flat_constant(g, dw->inputs[1], ws), wz ? flat_constant(g, dw->inputs[2], wz) : "", "", "", ""};
  std::vector<size_t> kill;
  std::string out = n.outputs[0];
  // Bias: Gemm's C, Conv's B, or a following Add.
  if ((gemm || conv) && present(n, 2)) {
    std::string b = bias_constant(g, x, n.inputs[2], per, gemm ? 2 : 1);
    if (b.empty()) return false;
    f.inputs[6] = b;
  } else if (mm) {
    const size_t ai = sole_consumer(x, out);
    if (ai != SIZE_MAX && !dead[ai] && is(g.nodes[ai], "Add") && g.nodes[ai].inputs.size() == 2) {
      const Node& add = g.nodes[ai];
      const std::string& bv = add.inputs[0] == out ? add.inputs[1] : add.inputs[0];
      std::string b = bias_constant(g, x, bv, per, 1);
      if (!b.empty()) {
        f.inputs[6] = b;
        out = add.outputs[0];
        kill.push_back(ai);
      }
    }
  }
  // [Relu] [QuantizeLinear]
  size_t ri = sole_consumer(x, out);
  if (ri != SIZE_MAX && !dead[ri] && is(g.nodes[ri], "Relu")) {
    Attribute a;
    a.kind = Attribute::String;
    a.s = "Relu";
    f.attrs["activation"] = a;
    out = g.nodes[ri].outputs[0];
    kill.push_back(ri);
    ri = sole_consumer(x, out);
  }
  if (ri != SIZE_MAX && !dead[ri] && is(g.nodes[ri], "QuantizeLinear") && !g.nodes[ri].has("output_dtype") &&
      !g.nodes[ri].has("block_size")) {
    const Node& q = g.nodes[ri];
    TensorPtr ys = constant(g, q, 1), yz = constant(g, q, 2);
    if (ys && ys->dtype() == DType::F32 && scalar(*ys) && (!present(q, 2) || (yz && q8(yz->dtype()) && scalar(*yz)))) {
      f.inputs[7] = q.inputs[1];
      f.inputs[8] = present(q, 2) ? q.inputs[2] : "";
      out = q.outputs[0];
      kill.push_back(ri);
    }
  }
  f.outputs = {out};
  while (!f.inputs.empty() && f.inputs.back().empty()) f.inputs.pop_back();
  g.nodes[ni] = std::move(f);
  for (size_t k : kill) dead[k] = true;
  return true;
}

}  // namespace

int fuse_quantized(Graph& g) {
  int fused = 0;
  Index x = index_of(g);
  std::vector<bool> dead(g.nodes.size(), false);
  // The index stays valid while fusing: a fused node keeps its position and takes over the
  // last node's outputs; the nodes it absorbs are only marked dead. Values read by the
  // patterns (X, scales, weights) are produced by nodes that are never absorbed.
  for (size_t i = 0; i < g.nodes.size(); ++i) {
    if (dead[i]) continue;
    if (fuse_dynamic(g, x, i, dead) || fuse_static(g, x, i, dead)) ++fused;
  }
  if (fused) {
    std::vector<Node> kept;
    for (size_t i = 0; i < g.nodes.size(); ++i)
      if (!dead[i]) kept.push_back(std::move(g.nodes[i]));
    g.nodes = std::move(kept);
  }
  return fused;
}

}  // namespace pd
