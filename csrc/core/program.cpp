#include "program.h"

#include <algorithm>
#include <cstdlib>
#include <limits>

namespace pd {

namespace {
constexpr size_t kAlign = 64;
size_t align_up(size_t n) { return (n + kAlign - 1) / kAlign * kAlign; }

const OpSchema& schema_of(const Node& n) {
  const OpSchema* s = ops().find(n.domain, n.op);
  if (!s)
    fail(PD_ERR_UNSUPPORTED, "unsupported operator ", n.domain.empty() ? "" : n.domain + ".", n.op,
         " (node '", n.name, "')");
  return *s;
}

std::vector<TensorInfo> gather_inputs(const Node& n,
                                      const std::unordered_map<std::string, TensorInfo>& vals) {
  std::vector<TensorInfo> in(n.inputs.size());
  for (size_t i = 0; i < n.inputs.size(); ++i) {
    if (n.inputs[i].empty()) continue;
    auto it = vals.find(n.inputs[i]);
    if (it == vals.end())
      fail(PD_ERR_INVALID_ARG, n.describe(), ": input '", n.inputs[i], "' is not defined");
    in[i] = it->second;
  }
  return in;
}
}  // namespace

size_t buffer_bytes(const Shape& s, DType t) {
  uint64_t b = 0;
  PD_ASSERT(checked_nbytes(s, t, &b));  // every shape passed InferCtx::check_outputs
  return align_up(std::max<size_t>(1, static_cast<size_t>(b)));
}

size_t place_buffers(std::vector<Buffer>& bufs) {
  size_t total = 0;
  for (size_t i = 0; i < bufs.size(); ++i) {
    Buffer& cur = bufs[i];
    std::vector<std::pair<size_t, size_t>> busy;
    for (size_t j = 0; j < i; ++j)
      if (!(bufs[j].last < cur.first || cur.last < bufs[j].first))
        busy.emplace_back(bufs[j].off, bufs[j].off + bufs[j].size);
    std::sort(busy.begin(), busy.end());
    size_t off = 0;
    for (const auto& [b, e] : busy) {
      if (off + cur.size <= b) break;
      off = std::max(off, e);
    }
    cur.off = off;
    total = std::max(total, off + cur.size);
  }
  return total;
}

uint64_t estimate_arena_bytes(const Graph& g, const Analysis& a) {
  constexpr int kForever = std::numeric_limits<int>::max();
  std::unordered_map<std::string, size_t> root;  // value -> its buffer
  std::vector<Buffer> bufs;
  for (size_t ni = 0; ni < g.nodes.size(); ++ni) {
    if (!a.live[ni]) continue;
    const Node& n = g.nodes[ni];
    const int step = static_cast<int>(ni);
    for (const auto& v : n.inputs) {
      auto it = root.find(v);
      if (it != root.end()) bufs[it->second].last = std::max(bufs[it->second].last, step);
    }
    const OpSchema* s = ops().find(n.domain, n.op);
    const bool alias = s && (s->flags & kOpAlias) && !n.inputs.empty();
    for (size_t o = 0; o < n.outputs.size(); ++o) {
      const std::string& v = n.outputs[o];
      if (v.empty()) continue;
      const TensorInfo& t = a.values.at(v);
      if (t.value) continue;
      auto in = alias && o == 0 ? root.find(n.inputs[0]) : root.end();
      if (in != root.end()) {
        root[v] = in->second;
        continue;
      }
      root[v] = bufs.size();
      bufs.push_back({buffer_bytes(t.shape, t.dtype), step, step, 0});
    }
  }
  uint64_t extra = 0;  // outputs that are inputs or constants get a region of their own
  for (const auto& o : g.outputs) {
    auto it = root.find(o.name);
    if (it != root.end()) bufs[it->second].last = kForever;
    else if (a.values.count(o.name)) extra += buffer_bytes(a.values.at(o.name).shape, a.values.at(o.name).dtype);
  }
  return place_buffers(bufs) + extra;
}

BucketKey BucketKey::of(const Graph& g, const pd_tensor* in) {
  BucketKey k;
  k.shapes.resize(g.inputs.size());
  k.values.resize(g.inputs.size());
  for (size_t i = 0; i < g.inputs.size(); ++i) {
    k.shapes[i].assign(in[i].dims, in[i].dims + in[i].rank);
    if (g.inputs[i].value_input) {
      auto t = std::make_shared<Tensor>(g.inputs[i].dtype, k.shapes[i]);
      if (t->nbytes()) std::memcpy(t->data(), in[i].data, t->nbytes());
      k.values[i] = std::move(t);
    }
  }
  return k;
}

bool BucketKey::matches(const pd_tensor* in) const {
  for (size_t i = 0; i < shapes.size(); ++i) {
    const Shape& s = shapes[i];
    for (size_t d = 0; d < s.size(); ++d)
      if (s[d] != in[i].dims[d]) return false;
    if (values[i] && values[i]->nbytes() &&
        std::memcmp(values[i]->data(), in[i].data, values[i]->nbytes()) != 0)
      return false;
  }
  return true;
}

Analysis analyze(const Graph& g, const std::vector<Shape>& input_shapes,
                 const std::vector<TensorPtr>& input_values) {
  PD_ASSERT(input_shapes.size() == g.inputs.size());
  Analysis a;
  for (const auto& [name, t] : g.constants) a.values[name] = TensorInfo{t->dtype(), t->shape(), t};
  for (size_t i = 0; i < g.inputs.size(); ++i)
    a.values[g.inputs[i].name] = TensorInfo{g.inputs[i].dtype, input_shapes[i],
                                            i < input_values.size() ? input_values[i] : nullptr};
  a.live.assign(g.nodes.size(), true);
  for (size_t ni = 0; ni < g.nodes.size(); ++ni) {
    const Node& n = g.nodes[ni];
    const OpSchema& s = schema_of(n);
    InferCtx c(n, gather_inputs(n, a.values));
    s.infer(c);
    (void)c.check_outputs();
    bool all_const = !(s.flags & kOpRandom);
    for (const auto& t : c.in)
      if (t.present() && !t.value) all_const = false;
    bool all_known = true;
    for (size_t o = 0; o < n.outputs.size(); ++o)
      if (!n.outputs[o].empty() && !c.out[o].value) all_known = false;
    if (all_const && !all_known) {
      std::vector<TensorPtr> v = evaluate(n, c.in);
      for (size_t o = 0; o < v.size(); ++o) c.out[o].value = v[o];
      all_known = true;
    }
    for (size_t o = 0; o < n.outputs.size(); ++o) {
      if (n.outputs[o].empty()) continue;
      const TensorInfo& t = c.out[o];
      if (t.dtype == DType::Undefined)
        fail(PD_ERR_INTERNAL, n.describe(), ": output ", o, " has no inferred type");
      a.values[n.outputs[o]] = t;
    }
    a.live[ni] = !all_known;
  }
  return a;
}

int Program::slot_of(const std::string& name) const {
  auto it = slot_index_.find(name);
  PD_ASSERT(it != slot_index_.end());
  return it->second;
}

Program::Program(const Graph& g, BucketKey key, KernelProvider* provider) : key_(std::move(key)) {
  const std::vector<Shape>& input_shapes = key_.shapes;
  Analysis a = analyze(g, input_shapes, key_.values);

  // Slots: inputs, constants (only those some live node or output reads), node outputs.
  auto add_slot = [&](const std::string& name, Slot s) {
    slot_index_[name] = static_cast<int>(slots_.size());
    slots_.push_back(std::move(s));
  };
  for (size_t i = 0; i < g.inputs.size(); ++i) {
    Slot s;
    s.dtype = g.inputs[i].dtype;
    s.shape = input_shapes[i];
    s.kind = SlotKind::Input;
    s.input_index = static_cast<int>(i);
    add_slot(g.inputs[i].name, std::move(s));
  }
  auto ensure_value_slot = [&](const std::string& name) {
    if (name.empty() || slot_index_.count(name)) return;
    const TensorInfo& t = a.values.at(name);
    Slot s;
    s.dtype = t.dtype;
    s.shape = t.shape;
    if (t.value) {
      s.kind = SlotKind::Constant;
      s.value = t.value;
    }
    add_slot(name, std::move(s));
  };
  for (size_t ni = 0; ni < g.nodes.size(); ++ni) {
    if (!a.live[ni]) continue;
    for (const auto& v : g.nodes[ni].inputs) ensure_value_slot(v);
    for (const auto& v : g.nodes[ni].outputs) ensure_value_slot(v);
  }
  for (const auto& o : g.outputs) ensure_value_slot(o.name);

  // Steps.
  for (size_t ni = 0; ni < g.nodes.size(); ++ni) {
    if (!a.live[ni]) continue;
    const Node& n = g.nodes[ni];
    const OpSchema& s = schema_of(n);
    InferCtx c(n, gather_inputs(n, a.values));
    for (size_t o = 0; o < n.outputs.size(); ++o)
      if (!n.outputs[o].empty()) c.out[o] = a.values.at(n.outputs[o]);
    Step st;
    st.node = &n;
    for (const auto& v : n.inputs) st.in.push_back(v.empty() ? -1 : slot_of(v));
    for (const auto& v : n.outputs) st.out.push_back(v.empty() ? -1 : slot_of(v));
    if (provider) st.kernel = provider->make(c);
    if (!st.kernel) {
      if (s.flags & kOpAlias) {
        // The output is the input's bytes: share the slot's storage.
        Slot& out = slots_[st.out[0]];
        const Slot& in = slots_[st.in[0]];
        out.kind = in.kind;
        out.input_index = in.input_index;
        out.value = in.value;
        out.alias_of = in.kind == SlotKind::Arena ? (in.alias_of >= 0 ? in.alias_of : st.in[0]) : -1;
      } else {
        st.kernel = s.make(c);
      }
    }
    steps_.push_back(std::move(st));
  }

  for (const auto& o : g.outputs) output_slots_.push_back(slot_of(o.name));
  plan_memory(g);
}

void Program::plan_memory(const Graph&) {
  const size_t n = slots_.size();
  constexpr int kForever = std::numeric_limits<int>::max();
  std::vector<int> first(n, -1), last(n, -1);
  auto root = [&](int s) { return slots_[s].alias_of >= 0 ? slots_[s].alias_of : s; };
  for (size_t i = 0; i < steps_.size(); ++i) {
    for (int s : steps_[i].out)
      if (s >= 0 && slots_[s].kind == SlotKind::Arena) {
        int r = root(s);
        if (first[r] < 0) first[r] = static_cast<int>(i);
        last[r] = std::max(last[r], static_cast<int>(i));
      }
    for (int s : steps_[i].in)
      if (s >= 0 && slots_[s].kind == SlotKind::Arena) last[root(s)] = std::max(last[root(s)], static_cast<int>(i));
  }
  for (int s : output_slots_)
    if (slots_[s].kind == SlotKind::Arena) last[root(s)] = kForever;

  // First-fit placement of each root buffer against the buffers whose lifetimes overlap.
  std::vector<Buffer> bufs;
  std::vector<size_t> buf_slot;
  for (size_t s = 0; s < n; ++s) {
    if (slots_[s].kind != SlotKind::Arena || slots_[s].alias_of >= 0 || first[s] < 0) continue;
    bufs.push_back({buffer_bytes(slots_[s].shape, slots_[s].dtype), first[s], last[s], 0});
    buf_slot.push_back(s);
  }
  size_t total = place_buffers(bufs);
  for (size_t i = 0; i < bufs.size(); ++i) slots_[buf_slot[i]].offset = bufs[i].off;
  // Outputs that are graph inputs or constants get a region of their own.
  output_copy_.assign(output_slots_.size(), false);
  output_copy_offset_.assign(output_slots_.size(), 0);
  for (size_t i = 0; i < output_slots_.size(); ++i) {
    const Slot& s = slots_[output_slots_[i]];
    if (s.kind == SlotKind::Arena) continue;
    output_copy_[i] = true;
    output_copy_offset_[i] = total;
    total += buffer_bytes(s.shape, s.dtype);
  }
  arena_bytes_ = std::max<size_t>(total, kAlign);
  void* p = std::aligned_alloc(kAlign, arena_bytes_);
  if (!p) fail(PD_ERR_UNAVAILABLE, "out of memory allocating a ", arena_bytes_, "-byte arena");
  std::memset(p, 0, arena_bytes_);
  arena_.reset(p);
  char* base = static_cast<char*>(arena_.get());
  for (size_t s = 0; s < n; ++s)
    if (slots_[s].alias_of >= 0) slots_[s].offset = slots_[slots_[s].alias_of].offset;
  // Constant outputs are copied once, now.
  for (size_t i = 0; i < output_slots_.size(); ++i) {
    const Slot& s = slots_[output_slots_[i]];
    if (output_copy_[i] && s.kind == SlotKind::Constant)
      std::memcpy(base + output_copy_offset_[i], s.value->data(), s.value->nbytes());
  }
  // Views with fixed addresses are bound now; input addresses are bound per run.
  for (auto& st : steps_) {
    auto bind = [&](const std::vector<int>& idx, std::vector<View>& views) {
      views.resize(idx.size());
      for (size_t k = 0; k < idx.size(); ++k) {
        if (idx[k] < 0) continue;
        const Slot& s = slots_[idx[k]];
        views[k].dtype = s.dtype;
        views[k].shape = &s.shape;
        if (s.kind == SlotKind::Arena) views[k].data = base + s.offset;
        else if (s.kind == SlotKind::Constant) views[k].data = const_cast<void*>(s.value->data());
      }
    };
    bind(st.in, st.in_views);
    bind(st.out, st.out_views);
  }
}

namespace {
// An empty input may come with data NULL (the ABI allows it); kernels get a valid address
// instead, so that even a copy of 0 bytes never passes NULL to memcpy.
alignas(64) char g_empty[64];
void* input_data(const pd_tensor& t) { return t.data ? t.data : g_empty; }
}  // namespace

void Program::run(RunCtx& rc, const pd_tensor* inputs, pd_tensor* outputs) {
  char* base = static_cast<char*>(arena_.get());
  for (auto& st : steps_) {
    for (size_t k = 0; k < st.in.size(); ++k) {
      int si = st.in[k];
      if (si >= 0 && slots_[si].kind == SlotKind::Input)
        st.in_views[k].data = input_data(inputs[slots_[si].input_index]);
    }
    if (st.kernel) st.kernel->run(rc, st.in_views.data(), st.out_views.data());
  }
  for (size_t i = 0; i < output_slots_.size(); ++i) {
    const Slot& s = slots_[output_slots_[i]];
    pd_tensor& o = outputs[i];
    o.dtype = static_cast<int32_t>(s.dtype);
    o.rank = static_cast<int32_t>(s.shape.size());
    for (size_t d = 0; d < s.shape.size() && d < PD_MAX_RANK; ++d) o.dims[d] = s.shape[d];
    o.byte_size = static_cast<uint64_t>(numel(s.shape)) * dtype_size(s.dtype);
    if (!output_copy_[i]) {
      o.data = base + s.offset;
    } else {
      o.data = base + output_copy_offset_[i];
      if (s.kind == SlotKind::Input)
        std::memcpy(o.data, input_data(inputs[s.input_index]), o.byte_size);
    }
  }
}

}  // namespace pd
