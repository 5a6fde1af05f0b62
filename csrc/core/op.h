// Operators: how each ONNX op infers its output types and shapes, and the portable kernel that
// computes it. Backends may replace kernels (the CPU backend runs Gemm/MatMul/Conv on oneDNN);
// the portable kernels are the reference, used for constant folding and for every op a
// backend has no kernel of its own for.
//
// Writing an op (see ops/*.cpp for many examples):
//   - infer(ctx): check the inputs (dtype, rank, attribute values) and fill ctx.out[i].dtype and
//     .shape for every output. All input shapes are concrete here (shape bucket), and inputs
//     that are constant carry their value in ctx.in[i].value. An op whose result is known from
//     shapes alone (Shape, Size) may set ctx.out[i].value. Bad models fail with
//     ctx.fail(...) which names the node.
//   - make(ctx): after infer, builds the kernel for exactly these shapes. Do the work that
//     depends only on shapes and attributes here (strides, broadcast plans), not in run().
//   - Kernel::run(rc, in, out): computes. in[i].data == nullptr for an omitted optional input.
//     Never allocates on the heap for ops on the hot path (use the scratch that make() sized).
#pragma once

#include <functional>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "ir.h"
#include "tensor.h"

namespace pd {

// What is known about one value during specialization.
struct TensorInfo {
  DType dtype = DType::Undefined;
  Shape shape;
  TensorPtr value;  // set when the value is a constant
  bool present() const { return dtype != DType::Undefined; }
};

class InferCtx {
 public:
  InferCtx(const Node& n, std::vector<TensorInfo> inputs) : node(n), in(std::move(inputs)) {
    out.resize(node.outputs.size());
  }
  const Node& node;
  std::vector<TensorInfo> in;   // one per node input; !present() for an omitted optional one
  std::vector<TensorInfo> out;  // filled by infer

  int opset() const { return node.opset; }
  // Number of inputs given (trailing omitted ones not counted).
  size_t num_inputs() const;
  bool has_input(size_t i) const { return i < in.size() && in[i].present(); }
  // The constant value of input i; fails naming `what` when the input is not a constant.
  const Tensor& const_input(size_t i, const char* what) const;

  template <typename... Args>
  [[noreturn]] void fail(const Args&... args) const {
    ::pd::fail(PD_ERR_INVALID_ARG, node.describe(), ": ", args...);
  }
  template <typename... Args>
  [[noreturn]] void unsupported(const Args&... args) const {
    ::pd::fail(PD_ERR_UNSUPPORTED, node.describe(), ": ", args...);
  }
  // Checks that input i exists (fails naming it otherwise) and returns it.
  const TensorInfo& input(size_t i) const;
  // Normalizes a possibly negative axis against rank, failing when out of range.
  int64_t axis(int64_t a, int64_t rank) const;
  // After infer: every output's shape has no negative dimension, an element count that fits
  // int64 and at most max_bytes bytes (kMaxTensorBytes unless given); fails naming the node and
  // the output otherwise. Returns the outputs' total bytes (constant outputs included).
  uint64_t check_outputs(uint64_t max_bytes = kMaxTensorBytes) const;
};

// Dense single-precision GEMM: C = alpha * op(A) * op(B) + beta * C, row-major.
// Backends provide a fast one (the CPU backend uses oneDNN's); the default is portable.
struct Blas {
  void (*sgemm)(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha,
                const float* a, int64_t lda, const float* b, int64_t ldb, float beta, float* c,
                int64_t ldc);
};
const Blas& portable_blas();

struct RunCtx {
  std::mt19937_64* rng = nullptr;  // the context's random state (seedable)
  const Blas* blas = nullptr;
  // Per-row seeds of the random ops (pd_context_set_row_seeds): when row_seed_count > 0, row r
  // of every random op's output draws from a stream of its own derived from row_seeds[r] and
  // the op, and rng is not read. Owned by the context; see ops/random.cpp.
  const uint64_t* row_seeds = nullptr;
  size_t row_seed_count = 0;
};

class Kernel {
 public:
  virtual ~Kernel() = default;
  virtual void run(RunCtx& rc, const View* in, View* out) = 0;
};

// A kernel made of a callable: fn(RunCtx&, const View* in, View* out).
template <typename Fn>
class FnKernel final : public Kernel {
 public:
  explicit FnKernel(Fn fn) : fn_(std::move(fn)) {}
  void run(RunCtx& rc, const View* in, View* out) override { fn_(rc, in, out); }

 private:
  Fn fn_;
};
template <typename Fn>
std::unique_ptr<Kernel> make_kernel(Fn fn) {
  return std::make_unique<FnKernel<Fn>>(std::move(fn));
}

using InferFn = void (*)(InferCtx&);
using KernelFactory = std::unique_ptr<Kernel> (*)(const InferCtx&);

enum OpFlags : int {
  kOpNone = 0,
  kOpRandom = 1,  // never folded; reads rc.rng or rc.row_seeds
  kOpAlias = 2,   // output 0 is input 0's bytes reinterpreted (Reshape, Squeeze, Identity...)
};

struct OpSchema {
  std::string domain;  // "" = ai.onnx, "pd" = policyd's fused ops
  std::string name;
  InferFn infer = nullptr;
  KernelFactory make = nullptr;  // nullptr only for kOpAlias ops
  int flags = kOpNone;
};

class OpRegistry {
 public:
  void add(OpSchema s);
  const OpSchema* find(const std::string& domain, const std::string& op) const;
  std::vector<std::string> names(const std::string& domain) const;  // sorted
 private:
  std::vector<OpSchema> ops_;
};

// The registry of every op with a portable kernel (built on first use, then immutable).
const OpRegistry& ops();

// Register functions, one per ops/*.cpp file.
void register_elementwise_ops(OpRegistry& r);
void register_shape_ops(OpRegistry& r);
void register_reduce_ops(OpRegistry& r);
void register_nn_ops(OpRegistry& r);
void register_rnn_ops(OpRegistry& r);
void register_random_ops(OpRegistry& r);
void register_einsum_ops(OpRegistry& r);
void register_quant_ops(OpRegistry& r);

// ---- helpers shared by the op files ----

// Numpy-style multidirectional broadcast of a and b; fails naming the node on mismatch.
Shape broadcast(const InferCtx& c, const Shape& a, const Shape& b);
// Strides of `in` as seen from `out` (0 on broadcast dims), in elements; in is right-aligned.
std::vector<int64_t> broadcast_strides(const Shape& in, const Shape& out);
// Row-major strides of a shape, in elements.
std::vector<int64_t> strides_of(const Shape& s);

// Runs a single node on constant inputs with its portable kernel (constant folding). Fails
// before allocating when the outputs it would allocate exceed max_bytes together.
std::vector<TensorPtr> evaluate(const Node& n, const std::vector<TensorInfo>& in,
                                uint64_t max_bytes = kMaxTensorBytes);

}  // namespace pd
