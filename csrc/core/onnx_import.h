// ONNX import: protobuf bytes -> Graph, checked the way ONNX Runtime checks a model at load.
#pragma once

#include <cstddef>
#include <string>

#include "ir.h"

namespace pd {

// Parses and checks an ONNX model. Fails with INVALID_ARG naming the problem for a model ONNX
// Runtime would reject (e.g. a graph output that nothing produces), UNSUPPORTED for valid
// features policyd does not have (external data, sparse initializers, subgraphs).
Graph import_onnx(const void* data, size_t size);

// Decodes an ONNX TensorProto (serialized) into a Tensor: for test data (.pb files).
Tensor decode_tensor_proto(const void* data, size_t size, std::string* name);

}  // namespace pd
