// onnx-cases: generated ONNX node tests, checked against ONNX Runtime.
//
// Debian's ONNX node tests (libonnx-testdata 1.12) stop at opset 17. The generator
// (pd_onnx_cases, csrc/tests/cases/*.cpp) writes small one-op models, each at the opset its form
// needs, with seeded inputs, in the layout of ONNX's backend node tests:
//
//   testdata/onnx-cases/<case name>/model.onnx
//   testdata/onnx-cases/<case name>/test_data_set_0/input_<i>.pb     (TensorProto, raw_data)
//   testdata/onnx-cases/<case name>/test_data_set_0/output_<i>.pb    (written by ONNX Runtime:
//                                                                      tools/reference/make_cases.js)
//
// `make refs` regenerates everything (the generator, then ONNX Runtime 1.30 on the CPU); the
// ctests run the committed cases through pd_conformance (onnx_cases, onnx_cases_fakecuda) and
// check that they are what the generator writes now (onnx_cases_current), so CI needs no Node.
//
// Adding cases: write a file csrc/tests/cases/<group>.cpp (it is picked up by the CMake glob)
// with
//
//   #include "cases.h"
//   PD_ONNX_CASES(my_group) {
//     Case c("test_relu_opset21", 21);            // the directory name; starts with "test_"
//     c.input("x", F32, {2, 3});                    // seeded uniform values in [-1, 1)
//     c.node("Relu", {"x"}, {"y"});                 // .i("attr", 1) .f(...) .ints(...) .s(...)
//     c.output("y", F32);
//     out.push_back(std::move(c));
//   }
//
// then run `make refs` and commit testdata/onnx-cases/. The op a case counts for is its first
// node that is not a Constant (as for the Debian tests). Inputs are deterministic (the seed is
// the case name), so the generator's files stay byte-equal to the committed ones.
#pragma once

#include <onnx/onnx_pb.h>

#include <cstdint>
#include <functional>
#include <initializer_list>
#include <random>
#include <string>
#include <vector>

namespace pd::cases {

using Dims = std::vector<int64_t>;

// ONNX element types (TensorProto.DataType), short names.
enum Elem : int32_t {
  F32 = 1, U8 = 2, I8 = 3, U16 = 4, I16 = 5, I32 = 6, I64 = 7, BOOL = 9, F16 = 10, F64 = 11,
  U32 = 12, U64 = 13, BF16 = 16,
};

// One node being built: attributes by kind.
class NodeRef {
 public:
  explicit NodeRef(onnx::NodeProto* n) : n_(n) {}
  NodeRef& i(const std::string& name, int64_t v);
  NodeRef& f(const std::string& name, float v);
  NodeRef& s(const std::string& name, const std::string& v);
  NodeRef& ints(const std::string& name, const std::vector<int64_t>& v);
  NodeRef& floats(const std::string& name, const std::vector<float>& v);
  onnx::NodeProto* proto() { return n_; }

 private:
  onnx::NodeProto* n_;
};

// One generated test: a model at one opset and its inputs.
class Case {
 public:
  Case(std::string name, int opset, int ir_version = 10);

  // A graph input of fixed shape with seeded values: floats uniform in [lo, hi) (rounded to
  // the type), integers uniform in [lo, hi] (both ends included), bools true with p = 1/2.
  Case& input(const std::string& name, Elem t, const Dims& dims, double lo = -1, double hi = 1);
  // A graph input with the given values (row-major; converted to the type).
  Case& input_values(const std::string& name, Elem t, const Dims& dims, const std::vector<double>& v);
  // An initializer (a constant input of a node).
  Case& constant(const std::string& name, Elem t, const Dims& dims, const std::vector<double>& v);
  // A node; its name is "<op>_<index>" unless given.
  NodeRef node(const std::string& op, const std::vector<std::string>& inputs,
               const std::vector<std::string>& outputs, const std::string& name = "");
  // A graph output (its shape is left to inference).
  Case& output(const std::string& name, Elem t);

  const std::string& name() const { return name_; }
  int opset() const { return opset_; }
  const onnx::ModelProto& model() const { return model_; }
  const std::vector<onnx::TensorProto>& inputs() const { return inputs_; }

 private:
  std::string name_;
  int opset_;
  onnx::ModelProto model_;
  std::vector<onnx::TensorProto> inputs_;
  std::mt19937 rng_;
};

// A TensorProto with raw_data holding v converted to t.
onnx::TensorProto make_tensor(const std::string& name, Elem t, const Dims& dims, const std::vector<double>& v);

using CaseFn = void (*)(std::vector<Case>& out);
// Registers a group of cases (the PD_ONNX_CASES macro does this at static initialization).
struct Register {
  Register(const char* group, CaseFn fn);
};
struct Group {
  const char* name;
  CaseFn fn;
};
const std::vector<Group>& groups();

}  // namespace pd::cases

#define PD_ONNX_CASES(group)                                                          \
  static void pd_onnx_cases_##group(std::vector<::pd::cases::Case>& out);            \
  static const ::pd::cases::Register pd_onnx_cases_reg_##group(#group, pd_onnx_cases_##group); \
  static void pd_onnx_cases_##group(std::vector<::pd::cases::Case>& out)
