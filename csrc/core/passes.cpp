#include "passes.h"

#include <algorithm>
#include <cfloat>
#include <unordered_map>
#include <unordered_set>

#include "activation.h"
#include "op.h"

namespace pd {

int fold_constants(Graph& g, uint64_t max_bytes) {
  int folded = 0;
  // The constants' bytes so far (a tensor may have several names): folding adds to them while
  // the inputs it folded stay until dead-node removal, so the bound is on the sum.
  uint64_t used = 0;
  if (max_bytes) {
    std::unordered_set<const Tensor*> seen;
    for (const auto& [name, t] : g.constants)
      if (seen.insert(t.get()).second) used += t->nbytes();
  }
  std::vector<Node> kept;
  kept.reserve(g.nodes.size());
  for (auto& n : g.nodes) {
    const OpSchema* s = ops().find(n.domain, n.op);
    bool foldable = s && !(s->flags & kOpRandom);
    std::vector<TensorInfo> in(n.inputs.size());
    for (size_t i = 0; foldable && i < n.inputs.size(); ++i) {
      if (n.inputs[i].empty()) continue;
      auto it = g.constants.find(n.inputs[i]);
      if (it == g.constants.end()) { foldable = false; break; }
      in[i] = TensorInfo{it->second->dtype(), it->second->shape(), it->second};
    }
    if (!foldable) {
      kept.push_back(std::move(n));
      continue;
    }
    std::vector<TensorPtr> v =
        max_bytes ? evaluate(n, in, used >= max_bytes ? 0 : std::min(max_bytes - used, kMaxTensorBytes))
                  : evaluate(n, in);
    for (size_t o = 0; o < n.outputs.size(); ++o)
      if (!n.outputs[o].empty()) {
        if (max_bytes && v[o]) used += v[o]->nbytes();
        g.constants[n.outputs[o]] = v[o];
      }
    ++folded;
  }
  g.nodes = std::move(kept);
  return folded;
}

namespace {

struct Uses {
  std::unordered_map<std::string, std::vector<size_t>> by_value;  // value -> consumer nodes
  std::unordered_set<std::string> graph_outputs;
  size_t count(const std::string& v) const {
    auto it = by_value.find(v);
    return (it == by_value.end() ? 0 : it->second.size()) + graph_outputs.count(v);
  }
};

Uses uses_of(const Graph& g) {
  Uses u;
  for (size_t i = 0; i < g.nodes.size(); ++i)
    for (const auto& in : g.nodes[i].inputs)
      if (!in.empty()) u.by_value[in].push_back(i);
  for (const auto& o : g.outputs) u.graph_outputs.insert(o.name);
  return u;
}

// The single consumer of v, or nullptr when v has zero or several uses or is a graph output.
Node* sole_consumer(Graph& g, const Uses& u, const std::string& v, size_t* idx) {
  if (u.count(v) != 1) return nullptr;
  auto it = u.by_value.find(v);
  if (it == u.by_value.end()) return nullptr;
  *idx = it->second[0];
  return &g.nodes[*idx];
}

bool const_scalar(const Graph& g, const Node& n, size_t i, float* out) {
  if (i >= n.inputs.size() || n.inputs[i].empty()) return false;
  auto it = g.constants.find(n.inputs[i]);
  if (it == g.constants.end() || it->second->numel() != 1) return false;
  *out = static_cast<float>(it->second->float_at(0));
  return true;
}

// Recognizes an activation node we can fuse; fills act/alpha/beta.
bool as_activation(const Graph& g, const Node& n, Act* act, float* alpha, float* beta) {
  if (!n.domain.empty() || n.outputs.size() != 1) return false;
  *alpha = 0;
  *beta = 0;
  const std::string& op = n.op;
  if (op == "Relu") *act = Act::Relu;
  else if (op == "Tanh") *act = Act::Tanh;
  else if (op == "Sigmoid") *act = Act::Sigmoid;
  else if (op == "Softplus") *act = Act::Softplus;
  else if (op == "Mish") *act = Act::Mish;
  else if (op == "Elu") { *act = Act::Elu; *alpha = n.attr_float("alpha", 1.0f); }
  else if (op == "LeakyRelu") { *act = Act::LeakyRelu; *alpha = n.attr_float("alpha", 0.01f); }
  else if (op == "HardSigmoid") {
    *act = Act::HardSigmoid;
    *alpha = n.attr_float("alpha", 0.2f);
    *beta = n.attr_float("beta", 0.5f);
  } else if (op == "Clip") {
    *act = Act::Clip;
    if (n.opset < 11) {
      *alpha = n.attr_float("min", -FLT_MAX);
      *beta = n.attr_float("max", FLT_MAX);
    } else {
      *alpha = -FLT_MAX;
      *beta = FLT_MAX;
      if (n.inputs.size() > 1 && !n.inputs[1].empty() && !const_scalar(g, n, 1, alpha)) return false;
      if (n.inputs.size() > 2 && !n.inputs[2].empty() && !const_scalar(g, n, 2, beta)) return false;
    }
  } else {
    return false;
  }
  return true;
}

void set_activation(Node& n, Act act, float alpha, float beta, const char* name) {
  Attribute a;
  a.kind = Attribute::String;
  a.s = name;
  n.attrs["activation"] = a;
  Attribute fa;
  fa.kind = Attribute::Float;
  fa.f = alpha;
  n.attrs["activation_alpha"] = fa;
  fa.f = beta;
  n.attrs["activation_beta"] = fa;
  (void)act;
}

bool float_tensor(const Graph& g, const std::string& v, size_t rank) {
  auto it = g.constants.find(v);
  return it != g.constants.end() && it->second->dtype() == DType::F32 &&
         it->second->shape().size() == rank;
}

}  // namespace

int fuse(Graph& g) {
  int fused = 0;
  bool changed = true;
  std::vector<bool> dead(g.nodes.size(), false);
  while (changed) {
    changed = false;
    Uses u = uses_of(g);
    for (size_t i = 0; i < g.nodes.size(); ++i) {
      if (dead[i]) continue;
      Node& n = g.nodes[i];
      size_t ci = 0;
      // MatMul(A, W[K,N]) + bias[N] -> pd.FusedMatMul.
      if (n.domain.empty() && n.op == "MatMul" && n.inputs.size() == 2 &&
          float_tensor(g, n.inputs[1], 2)) {
        Node* add = sole_consumer(g, u, n.outputs[0], &ci);
        if (!add || dead[ci] || add->op != "Add" || !add->domain.empty()) continue;
        const std::string& other = add->inputs[0] == n.outputs[0] ? add->inputs[1] : add->inputs[0];
        auto bt = g.constants.find(other);
        int64_t ncols = g.constants.at(n.inputs[1])->shape()[1];
        if (bt == g.constants.end() || bt->second->dtype() != DType::F32 || bt->second->numel() != ncols)
          continue;
        // The bias must broadcast along the last axis only.
        const Shape& bs = bt->second->shape();
        bool last_only = !bs.empty() && bs.back() == ncols;
        if (!last_only) continue;
        auto flat = std::make_shared<Tensor>(DType::F32, Shape{ncols});
        std::memcpy(flat->data(), bt->second->data(), flat->nbytes());
        std::string bname = other + "__pd_bias";
        g.constants[bname] = flat;
        Node f;
        f.name = n.name + "+" + add->name;
        f.op = "FusedMatMul";
        f.domain = "pd";
        f.opset = 1;
        f.inputs = {n.inputs[0], n.inputs[1], bname};
        f.outputs = {add->outputs[0]};
        set_activation(f, Act::None, 0, 0, "");
        g.nodes[i] = std::move(f);
        dead[ci] = true;
        ++fused;
        changed = true;
        break;
      }
      bool gemm = n.domain.empty() && n.op == "Gemm";
      bool conv = n.domain.empty() && n.op == "Conv";
      // The fused quantized ops take an activation too, unless their output is quantized
      // (pd.QuantMatMul/QuantConv with y_scale, input 7).
      const bool fquant = n.domain == "pd" && (n.op == "DynQuantMatMul" ||
                                               ((n.op == "QuantMatMul" || n.op == "QuantConv") &&
                                                (n.inputs.size() < 8 || n.inputs[7].empty())));
      bool fgemm = n.domain == "pd" &&
                   (n.op == "FusedGemm" || n.op == "FusedMatMul" || n.op == "FusedConv" || fquant) &&
                   n.attr_string("activation", "").empty();
      if (!gemm && !conv && !fgemm) continue;
      if (n.outputs.size() != 1) continue;
      const std::string out = n.outputs[0];
      Act act;
      float alpha, beta;
      const char* act_name = nullptr;
      std::string new_out;
      std::vector<size_t> kill;
      Node* next = sole_consumer(g, u, out, &ci);
      if (next && !dead[ci] && as_activation(g, *next, &act, &alpha, &beta)) {
        act_name = next->op.c_str();
        new_out = next->outputs[0];
        kill.push_back(ci);
      } else if (u.count(out) == 2 && !u.graph_outputs.count(out)) {
        // Swish as exported by TF/Keras: y = x * Sigmoid(x).
        const auto& cons = u.by_value.at(out);
        size_t si = cons[0], mi = cons[1];
        if (g.nodes[si].op != "Sigmoid") std::swap(si, mi);
        Node& sg = g.nodes[si];
        Node& mul = g.nodes[mi];
        size_t tmp;
        if (dead[si] || dead[mi] || sg.op != "Sigmoid" || !sg.domain.empty() || mul.op != "Mul" ||
            !mul.domain.empty() || sole_consumer(g, u, sg.outputs[0], &tmp) != &mul)
          continue;
        bool pair = (mul.inputs[0] == out && mul.inputs[1] == sg.outputs[0]) ||
                    (mul.inputs[1] == out && mul.inputs[0] == sg.outputs[0]);
        if (!pair) continue;
        act = Act::Swish;
        alpha = 1.0f;
        beta = 0.0f;
        act_name = "Swish";
        new_out = mul.outputs[0];
        kill = {si, mi};
      } else {
        continue;
      }
      if (!fgemm) {
        n.op = gemm ? "FusedGemm" : "FusedConv";
        n.domain = "pd";
        n.opset = 1;
      }
      std::string keep_name = act_name;
      set_activation(n, act, alpha, beta, keep_name.c_str());
      n.outputs[0] = new_out;
      for (size_t k : kill) dead[k] = true;
      ++fused;
      changed = true;
      break;
    }
    if (changed) {
      std::vector<Node> kept;
      std::vector<bool> kept_dead;
      for (size_t i = 0; i < g.nodes.size(); ++i)
        if (!dead[i]) kept.push_back(std::move(g.nodes[i]));
      g.nodes = std::move(kept);
      dead.assign(g.nodes.size(), false);
    }
  }
  return fused;
}

int eliminate_dead_nodes(Graph& g) {
  std::unordered_set<std::string> needed;
  for (const auto& o : g.outputs) needed.insert(o.name);
  std::vector<bool> keep(g.nodes.size(), false);
  for (size_t i = g.nodes.size(); i-- > 0;) {
    const Node& n = g.nodes[i];
    for (const auto& o : n.outputs)
      if (!o.empty() && needed.count(o)) keep[i] = true;
    if (keep[i])
      for (const auto& in : n.inputs)
        if (!in.empty()) needed.insert(in);
  }
  std::vector<Node> kept;
  int removed = 0;
  for (size_t i = 0; i < g.nodes.size(); ++i) {
    if (keep[i]) kept.push_back(std::move(g.nodes[i]));
    else ++removed;
  }
  g.nodes = std::move(kept);
  for (auto it = g.constants.begin(); it != g.constants.end();) {
    if (!needed.count(it->first)) it = g.constants.erase(it);
    else ++it;
  }
  return removed;
}

}  // namespace pd
