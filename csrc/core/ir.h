// The graph IR: what ONNX import produces, the passes rewrite and the backends run.
//
// A Graph is a list of nodes in topological order over named values. A value is a graph input,
// a constant (an initializer or a folded result) or the output of exactly one node. Shapes in
// the IR are symbolic only in the batch dimension: the model's signature records which input
// dimension carries the batch, and every concrete shape is derived per shape bucket
// (see program.h), where all dimensions are known.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "tensor.h"

namespace pd {

struct Attribute {
  enum Kind { Int, Float, String, Ints, Floats, Strings, TensorKind, Unsupported } kind = Int;
  int64_t i = 0;
  float f = 0;
  std::string s;
  std::vector<int64_t> ints;
  std::vector<float> floats;
  std::vector<std::string> strings;
  TensorPtr t;
};

struct Node {
  std::string name;  // may be empty in the file; import gives every node a name
  std::string op;    // op_type
  std::string domain;  // "" for ai.onnx; "pd" for our fused ops
  int opset = 0;     // the opset version of the node's domain that the model imports
  std::vector<std::string> inputs;   // "" marks an omitted optional input
  std::vector<std::string> outputs;  // "" marks an omitted optional output
  std::map<std::string, Attribute> attrs;

  bool has(const std::string& k) const { return attrs.count(k) != 0; }
  int64_t attr_int(const std::string& k, int64_t def) const;
  float attr_float(const std::string& k, float def) const;
  std::string attr_string(const std::string& k, const std::string& def) const;
  std::vector<int64_t> attr_ints(const std::string& k, const std::vector<int64_t>& def = {}) const;
  std::vector<float> attr_floats(const std::string& k, const std::vector<float>& def = {}) const;
  std::vector<std::string> attr_strings(const std::string& k) const;
  TensorPtr attr_tensor(const std::string& k) const;  // nullptr when absent
  // "Gemm node 'fc1'": how messages name a node.
  std::string describe() const;
};

// A declared input or output of the model.
struct ValueInfo {
  std::string name;
  DType dtype = DType::Undefined;
  // Declared dims; -1 for a dimension the model does not fix. has_shape is false when the model
  // declares no shape at all.
  Shape dims;
  std::vector<std::string> dim_params;  // symbolic names ("" when fixed or unnamed)
  bool has_shape = false;
  int batch_dim = -1;  // index of the batch dimension, -1 when none
  // A shape tensor: an integer input whose values parameterize shapes (a Reshape's target
  // shape, Slice's starts). Its values are part of the shape bucket, like its shape.
  bool value_input = false;
};

struct Graph {
  std::vector<Node> nodes;  // topological order
  std::unordered_map<std::string, TensorPtr> constants;
  std::vector<ValueInfo> inputs;   // runtime inputs only (initializers excluded)
  std::vector<ValueInfo> outputs;  // declared outputs, duplicates removed
  std::map<std::string, int> opsets;  // domain -> version
  int64_t ir_version = 0;
  std::string producer;

  bool is_constant(const std::string& v) const { return constants.count(v) != 0; }
};

}  // namespace pd
