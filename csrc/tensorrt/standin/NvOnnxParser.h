// Stand-in for TensorRT's NvOnnxParser.h, for the syntax check of backend_tensorrt.cpp only
// (see NvInferVersion.h).
#pragma once
#include "NvInfer.h"

#define NV_ONNX_PARSER_VERSION ((NV_TENSORRT_MAJOR * 10000) + (NV_TENSORRT_MINOR * 100))

namespace nvonnxparser {
enum class ErrorCode : int { kSUCCESS = 0, kINTERNAL_ERROR = 1 };
class IParserError {
 public:
  virtual ErrorCode code() const = 0;
  virtual char const* desc() const = 0;
  virtual int node() const = 0;
  virtual char const* nodeName() const = 0;
  virtual char const* nodeOperator() const = 0;
  virtual ~IParserError() = default;
};
class IParser {
 public:
  virtual bool parse(void const* serialized_onnx_model, size_t serialized_onnx_model_size,
                     const char* model_path = nullptr) = 0;
  virtual int getNbErrors() const = 0;
  virtual IParserError const* getError(int index) const = 0;
  virtual ~IParser() noexcept = default;
};
}  // namespace nvonnxparser

extern "C" void* createNvOnnxParser_INTERNAL(void* network, void* logger, int version) noexcept;
