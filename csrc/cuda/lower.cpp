// What every op family's lowering shares: dispatch by op, the GEMM and bias/activation steps,
// strided iteration plans.
#include "lower.h"

#include "../core/activation.h"

namespace pd::cuda {

Strided strided(const Shape& dims, const std::vector<int64_t>& s0, const std::vector<int64_t>& s1,
                const std::vector<int64_t>& s2) {
  if (dims.size() > static_cast<size_t>(kMaxRank))
    fail(PD_ERR_UNSUPPORTED, "rank ", dims.size(), " is above the CUDA kernels' ", kMaxRank);
  Strided p;
  p.rank = static_cast<int32_t>(dims.size());
  for (size_t d = 0; d < dims.size(); ++d) {
    p.dims[d] = dims[d];
    p.s0[d] = d < s0.size() ? s0[d] : 0;
    p.s1[d] = d < s1.size() ? s1[d] : 0;
    p.s2[d] = d < s2.size() ? s2[d] : 0;
  }
  if (dims.empty()) {  // a scalar: one element at offset 0
    p.rank = 1;
    p.dims[0] = 1;
  }
  return p;
}

void Lowering::build_step(const Node& n, const Analysis& a) {
  std::vector<TensorInfo> tin;
  for (const auto& v : n.inputs) tin.push_back(v.empty() ? TensorInfo{} : a.values.at(v));
  InferCtx c(n, tin);
  for (size_t o = 0; o < n.outputs.size(); ++o)
    if (!n.outputs[o].empty()) c.out[o] = a.values.at(n.outputs[o]);
  const std::string op = n.domain.empty() ? n.op : n.domain + "." + n.op;
  if (op == "Gemm" || op == "pd.FusedGemm") return gemm(c);
  if (op == "MatMul" || op == "pd.FusedMatMul") return matmul(c);
  if (op == "Conv" || op == "pd.FusedConv") return conv(c);
  if (op == "LSTM") return lstm(c);
  if (unary(c, op)) return;
  if (binary(c, op)) return;
  if (op == "Cast") return cast(c);
  if (op == "Concat") return concat(c);
  if (op == "Split") return split(c);
  if (op == "Slice") return slice(c);
  if (op == "Transpose") return transpose(c);
  if (op == "Expand") return expand(c);
  if (op == "Gather") return gather(c);
  if (op == "Softmax" || op == "LogSoftmax") return softmax(c, op == "LogSoftmax");
  if (op == "ArgMax" || op == "ArgMin") return argext(c, op == "ArgMin");
  if (op == "Not") return logical_not(c);
  if (op == "Einsum") return einsum(c);
  fail(PD_ERR_UNSUPPORTED, n.describe(), ": no CUDA kernel");
}

// bias/activation after a GEMM, when cuBLASLt's epilogue cannot do it.
void Lowering::bias_act(float* y, long long count, const float* bias, long long cols, long long rows_mod, long long bm,
              long long bn, float beta, Act act, float aa, float ab) {
  if (!bias && act == Act::None) return;
  CUfunction k = fn("pd_bias_act_f32");
  const int code = static_cast<int>(act);
  steps_.push_back([=](cudaStream_t s) {
    launch(k, count, s, y, count, bias, cols, rows_mod, bm, bn, beta, code, aa, ab);
  });
}

Lowering::Activation Lowering::activation(const InferCtx& c) {
  Activation r;
  if (c.node.domain != "pd") return r;
  parse_act(c.node.attr_string("activation", ""), &r.act);
  r.a = c.node.attr_float("activation_alpha", 0.f);
  r.b = c.node.attr_float("activation_beta", 0.f);
  return r;
}

void Lowering::add_gemm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, int64_t lda, int64_t ldb, int64_t ldc, float alpha,
              int64_t batch, int64_t sa, int64_t sb, int64_t sc, const float* A, const float* B, float* Y,
              const float* bias, bool relu) {
  if (m == 0 || n == 0) return;
  if (k == 0) {  // an empty product: zeros (then the epilogue)
    const size_t bytes = static_cast<size_t>(m * n * std::max<int64_t>(batch, 1)) * sizeof(float);
    steps_.push_back([=](cudaStream_t s) { PD_CUDA_CHECK(cudaMemsetAsync(Y, 0, bytes, s)); });
    if (bias || relu) bias_act(Y, m * n, bias, n, m, 0, 1, 1.f, relu ? Act::Relu : Act::None, 0, 0);
    return;
  }
  gemms_.push_back(std::make_unique<LtGemm>(lt_, ta, tb, m, n, k, lda, ldb, ldc, alpha, batch, sa, sb, sc, bias,
                                            relu, kWorkspace));
  const LtGemm* g = gemms_.back().get();
  cublasLtHandle_t h = lt_;
  void* ws = ws_;
  steps_.push_back([=](cudaStream_t s) { g->run(h, A, B, Y, ws, kWorkspace, s); });
}

}  // namespace pd::cuda
