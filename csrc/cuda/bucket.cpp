#include "bucket.h"

#include <cstring>

namespace pd::cuda {

namespace {

size_t bytes_of(const TensorInfo& t) { return static_cast<size_t>(numel(t.shape)) * dtype_size(t.dtype); }

// "mlp: shape [1x8]", for the staged run's log line.
std::string describe(const CudaEngine& e, const BucketKey& k) {
  std::string s = e.options().name + ": shape";
  for (const auto& sh : k.shapes) s += " " + shape_str(sh);
  return s;
}

}  // namespace

Bucket::Bucket(const CudaEngine& e, BucketKey key, cublasLtHandle_t lt, void* ws)
    : e_(e),
      key_(std::move(key)),
      plan_(e, lt, ws),
      run_(
          describe(e, key_), &log, [this](cudaStream_t s) { plan_.enqueue(s); },
          [this](cudaStream_t s, const void* from, void* to, size_t n) {
            // Copies n bytes between device addresses (a mapped host buffer is one) with a kernel.
            Strided flat{};  // rank 0: element i to element i
            if (n % 4 == 0)
              launch(e_.fn("pd_copy_4"), static_cast<int64_t>(n / 4), s, from, to, static_cast<int64_t>(n / 4), flat);
            else
              launch(e_.fn("pd_copy_1"), static_cast<int64_t>(n), s, from, to, static_cast<int64_t>(n), flat);
          }) {
  const Graph& g = e.graph();
  Analysis a = analyze(g, key_.shapes, key_.values);
  std::string why = unsupported_reason(g, a);
  if (!why.empty()) fail(PD_ERR_UNSUPPORTED, e.options().name, ": ", why);
  auto& values = plan_.values_;
  // Sizes first: inputs and the outputs of live, non-alias nodes live in the arena; folded
  // values that are not graph constants are uploaded to a per-bucket pool.
  std::vector<std::pair<std::string, size_t>> arena_values;
  for (size_t i = 0; i < g.inputs.size(); ++i)
    arena_values.emplace_back(g.inputs[i].name, bytes_of(a.values.at(g.inputs[i].name)));
  std::vector<const Node*> live;
  for (size_t i = 0; i < g.nodes.size(); ++i) {
    if (!a.live[i]) continue;
    const Node& n = g.nodes[i];
    live.push_back(&n);
    const OpSchema* s = ops().find(n.domain, n.op);
    PD_ASSERT(s);
    if (s->flags & kOpAlias) continue;
    for (const auto& o : n.outputs)
      if (!o.empty()) arena_values.emplace_back(o, bytes_of(a.values.at(o)));
  }
  size_t total = 0;
  std::unordered_map<std::string, size_t> offset;
  for (const auto& [name, b] : arena_values) {
    offset[name] = total;
    total += align_up(b);
  }
  arena_bytes_ = total;
  arena_ = dev_alloc(total);
  char* base = static_cast<char*>(arena_.get());
  for (const auto& [name, off] : offset) {
    const TensorInfo& t = a.values.at(name);
    values[name] = Value{t.dtype, t.shape, base + off};
  }
  // Constants read by live nodes or outputs.
  auto ensure = [&](const std::string& name) -> Value& {
    auto it = values.find(name);
    if (it != values.end()) return it->second;
    const TensorInfo& t = a.values.at(name);
    PD_ASSERT(t.value);
    Value v{t.dtype, t.shape, const_cast<void*>(e_.weight(t.value.get()))};
    if (!v.dev) {
      plan_.consts_.push_back(dev_alloc(t.value->nbytes()));
      plan_.extra_bytes_ += t.value->nbytes();
      v.dev = plan_.consts_.back().get();
      if (t.value->nbytes())
        PD_CUDA_CHECK(cudaMemcpy(v.dev, t.value->data(), t.value->nbytes(), cudaMemcpyHostToDevice));
    }
    return values[name] = v;
  };
  for (const Node* n : live) {
    const OpSchema* s = ops().find(n->domain, n->op);
    for (const auto& in : n->inputs)
      if (!in.empty() && !values.count(in)) ensure(in);
    if (s->flags & kOpAlias) {  // the output is the input's bytes
      const TensorInfo& t = a.values.at(n->outputs[0]);
      values[n->outputs[0]] = Value{t.dtype, t.shape, values.at(n->inputs[0]).dev};
      continue;
    }
    plan_.build_step(*n, a);
  }
  // Staging buffers; the Gather flag is one more output.
  for (const auto& in : g.inputs) {
    const Value& v = values.at(in.name);
    run_.add_input(staging(v.dev, v.bytes()));
  }
  for (const auto& o : g.outputs) {
    const Value& v = ensure(o.name);
    run_.add_output(staging(v.dev, v.bytes()));
    out_values_.push_back(v);
  }
  if (plan_.needs_flag_) run_.add_output(gpu::stage(plan_.flag_dev_.get(), sizeof(int), false));
  host_in_.resize(g.inputs.size());
  // Per-bucket constants were uploaded with cudaMemcpy from pageable memory: let the DMA land
  // before the context's (non-blocking) stream reads them.
  if (!plan_.consts_.empty()) PD_CUDA_CHECK(cudaDeviceSynchronize());
}

void Bucket::run(cudaStream_t s, bool profile, const gpu::RunEvents& ev, const pd_tensor* inputs, pd_tensor* outputs,
                 double* dev_ms) {
  for (size_t i = 0; i < host_in_.size(); ++i) host_in_[i] = inputs[i].data;
  run_.run(s, e_.run_params().graphs, profile, ev, host_in_.data(), dev_ms);
  if (plan_.needs_flag_ && *static_cast<const int*>(run_.output(out_values_.size())) != 0)
    fail(PD_ERR_INVALID_ARG, "a Gather index is out of range");
  for (size_t i = 0; i < out_values_.size(); ++i) {
    const Value& v = out_values_[i];
    pd_tensor& o = outputs[i];
    o.dtype = static_cast<int32_t>(v.dtype);
    o.rank = static_cast<int32_t>(v.shape.size());
    for (size_t d = 0; d < v.shape.size() && d < PD_MAX_RANK; ++d) o.dims[d] = v.shape[d];
    o.byte_size = v.bytes();
    o.data = run_.output(i);
  }
}

}  // namespace pd::cuda
