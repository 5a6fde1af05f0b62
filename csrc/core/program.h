// A Program is a Graph specialized for one set of concrete input shapes (a shape bucket):
// every shape is known, everything computable from shapes and constants is folded, every
// remaining node has a kernel, and every intermediate value has an offset in one arena.
// Building one is the slow path (first run with new shapes); running one allocates nothing.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "op.h"
#include "policyd.h"

namespace pd {

// Lets a backend supply its own kernel for a node (e.g. oneDNN for Gemm). Returning nullptr
// selects the portable kernel.
class KernelProvider {
 public:
  virtual ~KernelProvider() = default;
  virtual std::unique_ptr<Kernel> make(const InferCtx& c) = 0;
};

// Result of shape analysis: the info of every value for given input shapes.
struct Analysis {
  std::unordered_map<std::string, TensorInfo> values;
  std::vector<bool> live;  // per graph node: still needs to run (not folded)
};

// Infers every value of g for these input shapes (in g.inputs order), folding what is
// constant. input_values holds the values of shape-tensor inputs (ValueInfo::value_input),
// nullptr for the others; it may be empty when there are none. Throws naming the node on any
// problem.
Analysis analyze(const Graph& g, const std::vector<Shape>& input_shapes,
                 const std::vector<TensorPtr>& input_values = {});

// Memory planning: buffers with the steps they are live in [first, last], placed first-fit
// against those whose lifetimes overlap. place_buffers sets each off and returns the arena size.
struct Buffer {
  size_t size;
  int first, last;
  size_t off;
};
size_t place_buffers(std::vector<Buffer>& bufs);
// The arena bytes of one value: its size rounded up to the arena's alignment (at least one unit).
size_t buffer_bytes(const Shape& s, DType t);

// The activation arena a Program of these shapes would plan with the portable kernels (backends
// that alias more need less): for checking a model's memory before building anything.
uint64_t estimate_arena_bytes(const Graph& g, const Analysis& a);

// The bucket key of a run: shapes of every input plus values of shape-tensor inputs.
struct BucketKey {
  std::vector<Shape> shapes;
  std::vector<TensorPtr> values;  // per input; nullptr unless value_input
  static BucketKey of(const Graph& g, const pd_tensor* inputs);
  bool matches(const pd_tensor* inputs) const;
};

class Program {
 public:
  // provider may be nullptr (portable kernels only).
  Program(const Graph& g, BucketKey key, KernelProvider* provider);
  // For graphs without shape-tensor inputs.
  Program(const Graph& g, const std::vector<Shape>& input_shapes, KernelProvider* provider)
      : Program(g, BucketKey{input_shapes, std::vector<TensorPtr>(input_shapes.size())}, provider) {}
  Program(const Program&) = delete;
  Program& operator=(const Program&) = delete;

  // Runs with inputs already checked against the bucket's shapes. Output tensors are filled
  // with views of memory owned by the program, valid until the next run.
  void run(RunCtx& rc, const pd_tensor* inputs, pd_tensor* outputs);

  const BucketKey& key() const { return key_; }
  size_t arena_bytes() const { return arena_bytes_; }
  size_t step_count() const { return steps_.size(); }

 private:
  enum class SlotKind { Input, Constant, Arena };
  struct Slot {
    DType dtype = DType::Undefined;
    Shape shape;
    SlotKind kind = SlotKind::Arena;
    int input_index = -1;  // Input
    TensorPtr value;       // Constant
    size_t offset = 0;     // Arena
    int alias_of = -1;     // Arena slot sharing another slot's bytes
  };
  struct Step {
    const Node* node = nullptr;
    std::unique_ptr<Kernel> kernel;  // nullptr: alias op, nothing to do
    std::vector<int> in, out;        // slot indices; -1 omitted
    std::vector<View> in_views, out_views;
  };

  int slot_of(const std::string& name) const;
  void plan_memory(const Graph& g);

  BucketKey key_;
  std::vector<Slot> slots_;
  std::unordered_map<std::string, int> slot_index_;
  std::vector<Step> steps_;
  std::vector<int> output_slots_;
  std::vector<bool> output_copy_;  // output must be copied into out_buf_ (input/const alias)
  std::vector<size_t> output_copy_offset_;
  size_t arena_bytes_ = 0;
  struct Free { void operator()(void* p) const { std::free(p); } };
  std::unique_ptr<void, Free> arena_;
  std::vector<const pd_tensor*> bound_inputs_;
};

}  // namespace pd
