// Stand-in for TensorRT's NvInferRuntime.h: the runtime API backend_tensorrt.cpp calls, for
// its syntax check only (see NvInferVersion.h).
#pragma once
#include <cstddef>
#include <cstdint>

#include <cuda_runtime.h>

#include "NvInferVersion.h"

namespace nvinfer1 {
using AsciiChar = char;
enum class DataType : int32_t { kFLOAT = 0, kHALF = 1, kINT8 = 2, kINT32 = 3, kBOOL = 4, kUINT8 = 5, kFP8 = 6,
                                kBF16 = 7, kINT64 = 8, kINT4 = 9 };
enum class TensorIOMode : int32_t { kNONE = 0, kINPUT = 1, kOUTPUT = 2 };
enum class ExecutionContextAllocationStrategy : int32_t { kSTATIC = 0, kON_PROFILE_CHANGE = 1, kUSER_MANAGED = 2 };
class Dims64 {
 public:
  static constexpr int32_t MAX_DIMS{8};
  int32_t nbDims;
  int64_t d[MAX_DIMS];
};
using Dims = Dims64;

class ILogger {
 public:
  enum class Severity : int32_t { kINTERNAL_ERROR = 0, kERROR = 1, kWARNING = 2, kINFO = 3, kVERBOSE = 4 };
  virtual void log(Severity severity, AsciiChar const* msg) noexcept = 0;
  virtual ~ILogger() = default;
};

class IHostMemory {
 public:
  virtual ~IHostMemory() noexcept = default;
  void* data() const noexcept;
  std::size_t size() const noexcept;
};

class IExecutionContext {
 public:
  virtual ~IExecutionContext() noexcept = default;
#if NV_TENSORRT_MAJOR == 10 && NV_TENSORRT_MINOR < 1
  void setDeviceMemory(void* memory) noexcept;
#endif
  void setDeviceMemoryV2(void* memory, int64_t size) noexcept;
  bool setInputShape(char const* tensorName, Dims const& dims) noexcept;
  Dims getTensorShape(char const* tensorName) const noexcept;
  bool setTensorAddress(char const* tensorName, void* data) noexcept;
  bool enqueueV3(cudaStream_t stream) noexcept;
};

class ICudaEngine {
 public:
  virtual ~ICudaEngine() noexcept = default;
  IExecutionContext* createExecutionContext(ExecutionContextAllocationStrategy strategy) noexcept;
#if NV_TENSORRT_MAJOR == 10 && NV_TENSORRT_MINOR < 1
  std::size_t getDeviceMemorySize() const noexcept;
#endif
  int64_t getDeviceMemorySizeV2() const noexcept;
  TensorIOMode getTensorIOMode(char const* tensorName) const noexcept;
  DataType getTensorDataType(char const* tensorName) const noexcept;
};

class IRuntime {
 public:
  virtual ~IRuntime() noexcept = default;
  ICudaEngine* deserializeCudaEngine(void const* blob, std::size_t size) noexcept;
};
}  // namespace nvinfer1

extern "C" void* createInferRuntime_INTERNAL(void* logger, int32_t version) noexcept;
extern "C" int32_t getInferLibVersion() noexcept;
