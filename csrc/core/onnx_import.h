// ONNX import: protobuf bytes -> Graph, checked the way ONNX Runtime checks a model at load.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "ir.h"

namespace pd {

// Parses and checks an ONNX model. Fails with INVALID_ARG naming the problem for a model ONNX
// Runtime would reject (e.g. a graph output that nothing produces), UNSUPPORTED for valid
// features policyd does not have (external data, sparse initializers, subgraphs).
// Every initializer's shape is checked against the data it carries before it is allocated.
// max_constant_bytes > 0 bounds the bytes of all constants together (initializers, Constant
// nodes, tensor attributes), checked before each allocation; 0: no bound beyond kMaxTensorBytes
// per tensor. An opset newer than the newest supported for its domain is UNSUPPORTED.
Graph import_onnx(const void* data, size_t size, uint64_t max_constant_bytes = 0);

// Decodes an ONNX TensorProto (serialized) into a Tensor: for test data (.pb files).
Tensor decode_tensor_proto(const void* data, size_t size, std::string* name);

}  // namespace pd
