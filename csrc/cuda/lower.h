// The lowering of a shape bucket's graph to device work: Lowering holds the bucket's program
// as it is built — every value's device address (arena, weights, per-bucket constants), the
// steps a run enqueues in order, the cuBLASLt GEMMs they use and the scratch memory they need.
// build_step dispatches a node to its op family, whose members live in ops/<family>.cpp
// (named like csrc/core/ops/): einsum, elementwise, nn, reduce, rnn, shape.
#pragma once

#include "libs.h"  // first: the runtime csrc/gpu/ compiles against

#include <algorithm>
#include <functional>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "../core/activation.h"
#include "../core/op.h"
#include "../core/program.h"
#include "../gpu/resources.h"
#include "engine.h"
#include "gemm.h"
#include "kernels.h"

namespace pd::cuda {

using gpu::dev_alloc;
using gpu::DevMem;

// One step of a run, enqueued on the stream given (eagerly or under capture).
using Step = std::function<void(cudaStream_t)>;

// A value of the bucket: its type, shape and device address.
struct Value {
  DType dtype = DType::Undefined;
  Shape shape;
  void* dev = nullptr;
  size_t bytes() const { return static_cast<size_t>(numel(shape)) * dtype_size(dtype); }
};

// The iteration plan of a strided kernel over dims with up to three operands' strides.
Strided strided(const Shape& dims, const std::vector<int64_t>& s0, const std::vector<int64_t>& s1,
                const std::vector<int64_t>& s2 = {});

// Launches f over n elements (one block per 256 up to a cap; the kernels are grid-stride loops).
template <typename... A>
void launch(CUfunction f, int64_t n, cudaStream_t s, A... args) {
  if (n <= 0) return;
  void* params[] = {static_cast<void*>(&args)...};
  const int64_t blocks = std::min<int64_t>((n + 255) / 256, 8192);
  PD_CU_CHECK(g_drv.LaunchKernel(f, static_cast<unsigned>(blocks), 1, 1, 256, 1, 1, 0,
                                 reinterpret_cast<CUstream>(s), params, nullptr));
}

class Lowering {
 public:
  // lt and ws: the context's cuBLASLt handle and workspace (kWorkspace bytes).
  Lowering(const CudaEngine& e, cublasLtHandle_t lt, void* ws) : e_(e), lt_(lt), ws_(ws) {}
  Lowering(const Lowering&) = delete;
  Lowering& operator=(const Lowering&) = delete;

  // Adds the steps of node n, whose values are in a (its inputs and outputs already have
  // addresses in values_); PD_ERR_UNSUPPORTED for what has no CUDA kernel.
  void build_step(const Node& n, const Analysis& a);

  // Enqueues every step in order.
  void enqueue(cudaStream_t s) const {
    if (needs_flag_) PD_CUDA_CHECK(cudaMemsetAsync(flag_dev_.get(), 0, sizeof(int), s));
    for (const auto& st : steps_) st(s);
  }

 private:
  friend class Bucket;  // lays out values_ and reads the flag and the byte counts

  struct Activation {
    Act act = Act::None;
    float a = 0, b = 0;
  };
  static Activation activation(const InferCtx& c);

  const Value& val(const std::string& name) const { return values_.at(name); }
  static const float* cf(const Value& v) { return static_cast<const float*>(v.dev); }
  static float* f(const Value& v) { return static_cast<float*>(v.dev); }
  CUfunction fn(const char* name) const { return e_.fn(name); }

  // GEMMs and their epilogues (lower.cpp).
  void bias_act(float* y, long long count, const float* bias, long long cols, long long rows_mod, long long bm,
                long long bn, float beta, Act act, float aa, float ab);
  void add_gemm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, int64_t lda, int64_t ldb, int64_t ldc, float alpha,
                int64_t batch, int64_t sa, int64_t sb, int64_t sc, const float* A, const float* B, float* Y,
                const float* bias, bool relu);

  // ops/nn.cpp
  void gemm(const InferCtx& c);
  void matmul(const InferCtx& c);
  void conv(const InferCtx& c);
  // ops/rnn.cpp
  void lstm(const InferCtx& c);
  // ops/elementwise.cpp
  bool unary(const InferCtx& c, const std::string& op);
  bool binary(const InferCtx& c, const std::string& op);
  void cast(const InferCtx& c);
  void logical_not(const InferCtx& c);
  // ops/shape.cpp
  void copy(const Value& x, int64_t in_off, const std::vector<int64_t>& xs, const Value& y, int64_t out_off,
            const std::vector<int64_t>& ys, const Shape& dims);
  void concat(const InferCtx& c);
  void split(const InferCtx& c);
  std::vector<int64_t> ints(const InferCtx& c, size_t i, const char* what);
  void slice(const InferCtx& c);
  void transpose(const InferCtx& c);
  void expand(const InferCtx& c);
  void gather(const InferCtx& c);
  // ops/einsum.cpp
  void einsum(const InferCtx& c);
  // ops/reduce.cpp
  void softmax(const InferCtx& c, bool logsm);
  void argext(const InferCtx& c, bool is_min);

  const CudaEngine& e_;
  cublasLtHandle_t lt_;
  void* ws_;
  std::unordered_map<std::string, Value> values_;
  std::vector<DevMem> consts_, scratch_;
  size_t extra_bytes_ = 0;  // scratch and per-bucket constants
  std::vector<std::unique_ptr<LtGemm>> gemms_;
  std::vector<Step> steps_;
  bool needs_flag_ = false;  // a Gather checks its indices: flag_dev_ != 0 after a run
  DevMem flag_dev_;
};

}  // namespace pd::cuda
