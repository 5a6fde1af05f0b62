// The CUDA lowering of the elementwise ops (csrc/core/ops/elementwise.cpp runs them on the CPU):
// members of Lowering (../lower.h), each adding a node's steps to its bucket's program.
#include <algorithm>
#include <limits>
#include <map>
#include <string>

#include "../../core/activation.h"
#include "../lower.h"

namespace pd::cuda {

bool Lowering::unary(const InferCtx& c, const std::string& op) {
  static const std::map<std::string, int> kCodes = {
      {"Relu", 1},        {"Tanh", 2},          {"Sigmoid", 3},     {"Elu", 4},         {"LeakyRelu", 5},
      {"Softplus", 6},    {"Clip", 7},          {"HardSigmoid", 9}, {"Exp", kUExp},     {"Log", kULog},
      {"Neg", kUNeg},     {"Abs", kUAbs},       {"Sqrt", kUSqrt},   {"Reciprocal", kUReciprocal},
      {"Floor", kUFloor}, {"Ceil", kUCeil},     {"Erf", kUErf},     {"Sin", kUSin},     {"Cos", kUCos}};
  auto it = kCodes.find(op);
  if (it == kCodes.end()) return false;
  const Node& n = c.node;
  float a = 0, b = 0;
  if (op == "Elu") a = n.attr_float("alpha", 1.f);
  if (op == "LeakyRelu") a = n.attr_float("alpha", 0.01f);
  if (op == "HardSigmoid") a = n.attr_float("alpha", 0.2f), b = n.attr_float("beta", 0.5f);
  if (op == "Clip") {
    a = -std::numeric_limits<float>::infinity();
    b = std::numeric_limits<float>::infinity();
    if (c.opset() < 11) {
      a = n.attr_float("min", a);
      b = n.attr_float("max", b);
    } else {
      if (c.has_input(1)) a = static_cast<float>(c.const_input(1, "min").float_at(0));
      if (c.has_input(2)) b = static_cast<float>(c.const_input(2, "max").float_at(0));
    }
  }
  const Value x = val(n.inputs[0]), y = val(n.outputs[0]);
  CUfunction k = fn("pd_unary_f32");
  const long long cnt = numel(y.shape);
  const int code = it->second;
  steps_.push_back([=](cudaStream_t s) { launch(k, cnt, s, x.dev, y.dev, cnt, code, a, b); });
  return true;
}

bool Lowering::binary(const InferCtx& c, const std::string& op) {
  static const std::map<std::string, int> kCodes = {
      {"Add", kBAdd},       {"Sub", kBSub},   {"Mul", kBMul},         {"Div", kBDiv},
      {"Pow", kBPow},       {"Max", kBMax},   {"Min", kBMin},         {"Equal", kBEqual},
      {"Less", kBLess},     {"Greater", kBGreater}, {"LessOrEqual", kBLessOrEqual},
      {"GreaterOrEqual", kBGreaterOrEqual}, {"And", kBAnd}, {"Or", kBOr}, {"Xor", kBXor}};
  auto it = kCodes.find(op);
  if (it == kCodes.end()) return false;
  const Node& n = c.node;
  const int code = it->second;
  const Value y = val(n.outputs[0]);
  const DType t = c.in[0].dtype;
  const char* kernel = code >= kBAnd           ? "pd_logic_bool"
                       : code >= kBEqual       ? (t == DType::F32 ? "pd_compare_f32" : "pd_compare_i64")
                       : t == DType::F32       ? "pd_binary_f32"
                                               : "pd_binary_i64";
  if (code == kBPow && t != DType::F32) fail(PD_ERR_UNSUPPORTED, n.describe(), ": Pow runs in float32 only on CUDA");
  CUfunction k = fn(kernel);
  const long long cnt = numel(y.shape);
  // Max/Min take 1..N inputs: fold them pairwise into the output.
  size_t ninputs = 0;
  for (size_t i = 0; i < n.inputs.size(); ++i)
    if (!n.inputs[i].empty()) ninputs = i + 1;
  if (ninputs == 1) {
    const Value x = val(n.inputs[0]);
    const size_t bytes = y.bytes();
    steps_.push_back([=](cudaStream_t s) {
      PD_CUDA_CHECK(cudaMemcpyAsync(y.dev, x.dev, bytes, cudaMemcpyDeviceToDevice, s));
    });
    return true;
  }
  for (size_t i = 1; i < ninputs; ++i) {
    const Value a = i == 1 ? val(n.inputs[0]) : y;
    const Value b = val(n.inputs[i]);
    Strided p;
    if (!(a.shape == y.shape && b.shape == y.shape))
      p = strided(y.shape, broadcast_strides(a.shape, y.shape), broadcast_strides(b.shape, y.shape));
    steps_.push_back([=](cudaStream_t s) { launch(k, cnt, s, a.dev, b.dev, y.dev, cnt, code, p); });
  }
  return true;
}

void Lowering::cast(const InferCtx& c) {
  const Value x = val(c.node.inputs[0]), y = val(c.node.outputs[0]);
  if (x.dtype == y.dtype) {
    const size_t bytes = y.bytes();
    steps_.push_back([=](cudaStream_t s) {
      if (bytes) PD_CUDA_CHECK(cudaMemcpyAsync(y.dev, x.dev, bytes, cudaMemcpyDeviceToDevice, s));
    });
    return;
  }
  CUfunction k = fn("pd_cast");
  const long long cnt = numel(y.shape);
  const int from = static_cast<int>(x.dtype), to = static_cast<int>(y.dtype);
  steps_.push_back([=](cudaStream_t s) { launch(k, cnt, s, x.dev, y.dev, cnt, from, to); });
}

void Lowering::logical_not(const InferCtx& c) {
  const Value x = val(c.node.inputs[0]), y = val(c.node.outputs[0]);
  CUfunction k = fn("pd_not_bool");
  const long long cnt = numel(y.shape);
  steps_.push_back([=](cudaStream_t s) { launch(k, cnt, s, x.dev, y.dev, cnt); });
}

}  // namespace pd::cuda
