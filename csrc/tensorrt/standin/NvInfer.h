// Stand-in for TensorRT's NvInfer.h: the builder API backend_tensorrt.cpp calls, for its
// syntax check only (see NvInferVersion.h).
#pragma once
#include "NvInferRuntime.h"

namespace nvinfer1 {
enum class NetworkDefinitionCreationFlag : int32_t { kSTRONGLY_TYPED = 1 };
using NetworkDefinitionCreationFlags = uint32_t;
enum class MemoryPoolType : int32_t { kWORKSPACE = 0 };
enum class OptProfileSelector : int32_t { kMIN = 0, kOPT = 1, kMAX = 2 };
enum class BuilderFlag : int32_t {
#if NV_TENSORRT_MAJOR == 10
  kFP16 [[deprecated]] = 0,
  kBF16 [[deprecated]] = 17,
#endif
  kTF32 = 6
};

class INetworkDefinition {
 public:
  virtual ~INetworkDefinition() noexcept = default;
};
class IOptimizationProfile {
 public:
  bool setDimensions(char const* inputName, OptProfileSelector select, Dims const& dims) noexcept;
};
class ITimingCache {
 public:
  virtual ~ITimingCache() noexcept = default;
  IHostMemory* serialize() const noexcept;
};
class IBuilderConfig {
 public:
  virtual ~IBuilderConfig() noexcept = default;
  void setMemoryPoolLimit(MemoryPoolType pool, std::size_t poolSize) noexcept;
  void setBuilderOptimizationLevel(int32_t level) noexcept;
  void setFlag(BuilderFlag builderFlag) noexcept;
  void clearFlag(BuilderFlag builderFlag) noexcept;
  int32_t addOptimizationProfile(IOptimizationProfile const* profile) noexcept;
  ITimingCache* createTimingCache(void const* blob, std::size_t size) const noexcept;
  bool setTimingCache(ITimingCache const& cache, bool ignoreMismatch) noexcept;
  ITimingCache const* getTimingCache() const noexcept;
};
class IBuilder {
 public:
  virtual ~IBuilder() noexcept = default;
  INetworkDefinition* createNetworkV2(NetworkDefinitionCreationFlags flags) noexcept;
  IBuilderConfig* createBuilderConfig() noexcept;
  IOptimizationProfile* createOptimizationProfile() noexcept;
  IHostMemory* buildSerializedNetwork(INetworkDefinition& network, IBuilderConfig& config) noexcept;
};
}  // namespace nvinfer1

extern "C" void* createInferBuilder_INTERNAL(void* logger, int32_t version) noexcept;
