// ONNX import: protobuf bytes -> Graph, checked the way ONNX Runtime checks a model at load.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <string>

#include "ir.h"

namespace pd {

// The bytes of one external-data file a model names (ONNX "external data": model.onnx.data),
// borrowed for the import. Keyed by the file's name relative to the model, as
// normalize_external_location writes it.
struct ExternalFile {
  const void* data = nullptr;
  size_t size = 0;
};
using ExternalFiles = std::map<std::string, ExternalFile>;

// The canonical form of a file name relative to the model ("./w/a.bin" -> "w/a.bin"); fails with
// INVALID_ARG naming `what` for an empty, absolute ("/x", "\\x", "C:x") or escaping ("..") name,
// or one with a NUL or backslash.
std::string normalize_external_location(const std::string& location, const std::string& what);

// Parses and checks an ONNX model. Fails with INVALID_ARG naming the problem for a model ONNX
// Runtime would reject (e.g. a graph output that nothing produces), UNSUPPORTED for valid
// features policyd does not have (sparse initializers, subgraphs).
// A tensor whose data_location is EXTERNAL is read from `externals` (the ONNX spec's keys
// location, offset, length, checksum); a name that is absolute, has "..", or is not among the
// files, an offset or length outside the file, or a length that differs from the tensor's
// dims x dtype fails with INVALID_ARG naming the tensor and the file, before anything is
// allocated. The checksum key (SHA-1 of the file) is accepted and not checked: the host verifies
// the files' bytes (the artifact manifest's SHA-256). Unknown keys are refused.
// Every initializer's shape is checked against the data it carries before it is allocated.
// max_constant_bytes > 0 bounds the bytes of all constants together (initializers, Constant
// nodes, tensor attributes), checked before each allocation; 0: no bound beyond kMaxTensorBytes
// per tensor. An opset newer than the newest supported for its domain is UNSUPPORTED.
Graph import_onnx(const void* data, size_t size, uint64_t max_constant_bytes = 0,
                  const ExternalFiles* externals = nullptr);

// The model with every external tensor's bytes moved back into raw_data: a self-contained
// model for backends that hand the ONNX bytes to another parser (tensorrt). Same checks as
// import_onnx. Returns the serialized model.
std::string inline_external_data(const void* data, size_t size, const ExternalFiles& externals);

// Decodes an ONNX TensorProto (serialized) into a Tensor: for test data (.pb files).
Tensor decode_tensor_proto(const void* data, size_t size, std::string* name);

}  // namespace pd
