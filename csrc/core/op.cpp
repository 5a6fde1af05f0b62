#include "op.h"

#include <algorithm>
#include <mutex>

namespace pd {

size_t InferCtx::num_inputs() const {
  size_t n = in.size();
  while (n > 0 && !in[n - 1].present()) --n;
  return n;
}

const TensorInfo& InferCtx::input(size_t i) const {
  if (!has_input(i)) fail("input ", i, " is required");
  return in[i];
}

const Tensor& InferCtx::const_input(size_t i, const char* what) const {
  const TensorInfo& t = input(i);
  if (!t.value)
    throw NeedsValue(node.inputs[i],
                     str(node.describe(), ": input '", node.inputs[i], "' (", what,
                         ") must be a constant or a graph input; policyd does not support ",
                         what, " computed from data"));
  return *t.value;
}

int64_t InferCtx::axis(int64_t a, int64_t rank) const {
  if (a < -rank || a >= std::max<int64_t>(rank, 1))
    fail("axis ", a, " is out of range for rank ", rank);
  return a < 0 ? a + rank : a;
}

void OpRegistry::add(OpSchema s) { ops_.push_back(std::move(s)); }

const OpSchema* OpRegistry::find(const std::string& domain, const std::string& op) const {
  const std::string d = domain == "ai.onnx" ? "" : domain;
  for (const auto& s : ops_)
    if (s.name == op && s.domain == d) return &s;
  return nullptr;
}

std::vector<std::string> OpRegistry::names(const std::string& domain) const {
  std::vector<std::string> v;
  for (const auto& s : ops_)
    if (s.domain == domain) v.push_back(s.name);
  std::sort(v.begin(), v.end());
  v.erase(std::unique(v.begin(), v.end()), v.end());
  return v;
}

const OpRegistry& ops() {
  static const OpRegistry* reg = [] {
    auto* r = new OpRegistry();
    register_elementwise_ops(*r);
    register_shape_ops(*r);
    register_reduce_ops(*r);
    register_nn_ops(*r);
    register_rnn_ops(*r);
    register_random_ops(*r);
    register_einsum_ops(*r);
    register_quant_ops(*r);
    return r;
  }();
  return *reg;
}

Shape broadcast(const InferCtx& c, const Shape& a, const Shape& b) {
  size_t r = std::max(a.size(), b.size());
  Shape out(r);
  for (size_t i = 0; i < r; ++i) {
    int64_t da = i < r - a.size() ? 1 : a[i - (r - a.size())];
    int64_t db = i < r - b.size() ? 1 : b[i - (r - b.size())];
    if (da == db || db == 1) out[i] = da;
    else if (da == 1) out[i] = db;
    else c.fail("shapes ", shape_str(a), " and ", shape_str(b), " cannot be broadcast");
  }
  return out;
}

std::vector<int64_t> strides_of(const Shape& s) {
  std::vector<int64_t> st(s.size());
  int64_t acc = 1;
  for (size_t i = s.size(); i-- > 0;) {
    st[i] = acc;
    acc *= s[i];
  }
  return st;
}

std::vector<int64_t> broadcast_strides(const Shape& in, const Shape& out) {
  std::vector<int64_t> st(out.size(), 0);
  std::vector<int64_t> is = strides_of(in);
  size_t off = out.size() - in.size();
  for (size_t i = 0; i < in.size(); ++i) st[off + i] = in[i] == 1 ? 0 : is[i];
  return st;
}

uint64_t InferCtx::check_outputs(uint64_t max_bytes) const {
  uint64_t total = 0;
  for (size_t o = 0; o < out.size(); ++o) {
    if (!out[o].present()) continue;
    const std::string name = o < node.outputs.size() ? node.outputs[o] : std::to_string(o);
    const uint64_t b = nbytes_or_fail(out[o].shape, out[o].dtype, node.describe() + ": output '" + name + "'");
    total += b;  // at most out.size() * 16 GiB: no overflow
  }
  if (total > max_bytes)
    ::pd::fail(PD_ERR_INVALID_ARG, node.describe(), ": its outputs need ", total,
               " bytes, more than the ", max_bytes, " bytes left under the memory limit");
  return total;
}

std::vector<TensorPtr> evaluate(const Node& n, const std::vector<TensorInfo>& in, uint64_t max_bytes) {
  const OpSchema* s = ops().find(n.domain, n.op);
  if (!s) fail(PD_ERR_UNSUPPORTED, "unsupported operator ", n.describe());
  InferCtx c(n, in);
  s->infer(c);
  {
    uint64_t alloc = 0;  // what this call allocates: the outputs inference did not know
    for (size_t i = 0; i < c.out.size(); ++i)
      if (c.out[i].present() && !c.out[i].value)
        alloc += nbytes_or_fail(c.out[i].shape, c.out[i].dtype,
                                n.describe() + ": output '" + (i < n.outputs.size() ? n.outputs[i] : "") + "'");
    if (alloc > max_bytes)
      fail(PD_ERR_INVALID_ARG, n.describe(), ": folding it needs ", alloc, " bytes, more than the ",
           max_bytes, " bytes left under the memory limit");
  }
  std::vector<TensorPtr> res(c.out.size());
  std::vector<std::shared_ptr<Tensor>> owned(c.out.size());
  std::vector<View> iv(in.size()), ov(c.out.size());
  for (size_t i = 0; i < in.size(); ++i) {
    if (!in[i].present()) continue;
    PD_ASSERT(in[i].value);
    iv[i] = View{in[i].dtype, &in[i].value->shape(), const_cast<void*>(in[i].value->data())};
  }
  bool need_kernel = false;
  for (size_t i = 0; i < c.out.size(); ++i) {
    if (c.out[i].value) {
      res[i] = c.out[i].value;
      continue;
    }
    if (n.outputs[i].empty()) continue;
    need_kernel = true;
  }
  if (!need_kernel) return res;
  for (size_t i = 0; i < c.out.size(); ++i) {
    owned[i] = std::make_shared<Tensor>(c.out[i].dtype, c.out[i].shape);
    ov[i] = View{c.out[i].dtype, &owned[i]->shape(), owned[i]->data()};
  }
  if (s->flags & kOpAlias) {
    std::memcpy(ov[0].data, iv[0].data, ov[0].nbytes());
  } else {
    std::unique_ptr<Kernel> k = s->make(c);
    std::mt19937_64 rng(0);
    RunCtx rc{&rng, &portable_blas()};
    k->run(rc, iv.data(), ov.data());
  }
  for (size_t i = 0; i < c.out.size(); ++i)
    if (!res[i]) res[i] = owned[i];
  return res;
}

namespace {
void portable_sgemm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, float alpha, const float* a,
                    int64_t lda, const float* b, int64_t ldb, float beta, float* c, int64_t ldc) {
  for (int64_t i = 0; i < m; ++i) {
    float* crow = c + i * ldc;
    if (beta == 0.f) std::fill(crow, crow + n, 0.f);
    else if (beta != 1.f) for (int64_t j = 0; j < n; ++j) crow[j] *= beta;
    for (int64_t p = 0; p < k; ++p) {
      float av = alpha * (ta ? a[p * lda + i] : a[i * lda + p]);
      if (!tb) {
        const float* brow = b + p * ldb;
        for (int64_t j = 0; j < n; ++j) crow[j] += av * brow[j];
      } else {
        for (int64_t j = 0; j < n; ++j) crow[j] += av * b[j * ldb + p];
      }
    }
  }
}
}  // namespace

const Blas& portable_blas() {
  static const Blas b{portable_sgemm};
  return b;
}

}  // namespace pd
