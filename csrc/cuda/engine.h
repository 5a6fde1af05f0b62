// The CUDA engine: the model's kernels compiled by NVRTC for its device (or read from an
// engine cache), loaded through the driver API, and the graph's constants on the device, once,
// shared by the engine's contexts. Immutable after build.
#pragma once

#include "libs.h"  // first: the runtime csrc/gpu/ compiles against

#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "../core/backend.h"
#include "../core/ir.h"
#include "../gpu/params.h"
#include "../gpu/resources.h"
#include "support.h"

namespace pd::cuda {

// Devices found when the plugin loaded.
extern std::vector<DeviceInfo> g_devices;

// "11.8", or "unknown".
std::string nvrtc_version();

// Bytes of the arena and constant pools are aligned to this.
constexpr size_t kAlign = 256;
inline size_t align_up(size_t n) { return (n + kAlign - 1) / kAlign * kAlign; }

// The run switches of o.params; PD_ERR_INVALID_ARG for a key or value the backend does not know.
gpu::RunParams parse_run_params(const BuildOptions& o);

struct ModuleUnload {
  void operator()(CUmodule m) const { g_drv.ModuleUnload(m); }
};
using Module = gpu::Handle<CUmodule, ModuleUnload>;

using Functions = std::unordered_map<std::string, CUfunction>;

class CudaEngine final : public BackendEngine {
 public:
  CudaEngine(std::shared_ptr<const Graph> g, const BuildOptions& o);

  ~CudaEngine() override;

  std::unique_ptr<BackendContext> create_context() override;

  std::string serialize() const override { return encode_payload(code_); }

  const Graph& graph() const { return *graph_; }
  const BuildOptions& options() const { return opts_; }
  // The run switches of the engine's parameters (cuda.graphs, cuda.mapped_io).
  const gpu::RunParams& run_params() const { return run_; }
  int ordinal() const { return device_.ordinal; }
  CUfunction fn(const std::string& name) const {
    auto it = fns_.find(name);
    PD_ASSERT(it != fns_.end());
    return it->second;
  }
  // The device copy of a graph constant, or nullptr when t is not one (a value folded per bucket).
  const void* weight(const Tensor* t) const {
    auto it = weight_ptr_.find(t);
    return it == weight_ptr_.end() ? nullptr : it->second;
  }

 private:
  // The module for want.arch: compiled once per process and architecture (every model uses the
  // same kernels), then shared by the engines built after it.
  static Payload compiled(const Payload& want);
  // NVRTC: SASS for the device's architecture when NVRTC knows it, else PTX for the newest
  // architecture it knows (the driver compiles that for the device at load).
  static Payload compile(Payload p);
  // Every graph constant, once, in one device allocation: shared by all contexts.
  void upload_constants();

  std::shared_ptr<const Graph> graph_;
  BuildOptions opts_;
  gpu::RunParams run_;
  DeviceInfo device_;
  Payload code_;
  Module module_;
  Functions fns_;
  gpu::DevMem weights_;
  std::unordered_map<const Tensor*, void*> weight_ptr_;
};

}  // namespace pd::cuda
