// The backend plugin interface. A backend is a shared library libpolicyd_backend_<name>.so that
// exports one C symbol, pd_backend_entry, returning a Backend. The core (libpolicyd.so) loads
// it at run time with dlopen, so the core links no oneDNN, CUDA or TensorRT and one policyd
// binary runs on machines without them. Plugins are built from this tree with the same
// compiler, so the interface is C++; its version is checked at load.
//
// Contract for every plugin:
//  - Exceptions thrown across these virtual calls are pd::Error (code + message) or
//    std::exception; the core turns them into pd_error*. Never exit or abort.
//  - Backend::build is called concurrently for different models; a BackendEngine is
//    immutable after build and shared by its contexts; a BackendContext is used by one thread
//    at a time (the host keeps one per worker thread) and owns everything mutable: kernels
//    and memory per shape bucket, streams, scratch, the random state.
//  - Inputs reaching BackendContext::run are already checked against the model's signature.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "error.h"
#include "ir.h"
#include "policyd.h"

namespace pd {

// 2: set_row_seeds, memory; 3: devices, device selection, engine serialization and caches,
// device-time profiling; 4: the model's bytes, batch profile, parameters, timing caches;
// 5: CUDA IPC mappings (Backend::ipc_open/ipc_close), BackendContext::run_device.
constexpr uint32_t kBackendAbiVersion = 5;

// What the core offers a plugin.
struct HostServices {
  uint32_t abi_version;
  void (*log)(pd_log_level level, const char* msg);
};

struct BuildOptions {
  std::string name;  // for messages: "model@version"
  int threads = 1;   // intra-op threads per context run
  int device = 0;    // ordinal among Backend::devices() (GPU backends); 0 for cpu
  bool profile = false;  // contexts measure the device time of each run (last_device_ms)
  // The backend's own part of an engine cache (what BackendEngine::serialize returned), after
  // the core has checked the envelope (backend, version, target, model, options; see
  // engine_cache.h). Empty: build from the graph. A backend that cannot use it throws
  // PD_ERR_INVALID_ARG naming the mismatch; one without caches throws PD_ERR_UNSUPPORTED.
  std::string cache;
  // The model file as given to pd_engine_create, borrowed for the build only (backends with
  // their own ONNX parser: tensorrt).
  const void* onnx = nullptr;
  size_t onnx_size = 0;
  // pd_engine_options_set_batch_profile: 1 <= min_batch <= opt_batch <= max_batch, or
  // max_batch 0 when no bound is known.
  int64_t min_batch = 1, opt_batch = 1, max_batch = 0;
  // This backend's parameters (pd_engine_options_set_param) without the "<backend>." prefix.
  // The backend refuses keys and values it does not know (PD_ERR_INVALID_ARG).
  std::map<std::string, std::string> params;
  // pd_engine_options_set_timing_cache; empty when none.
  std::string timing_cache;
};

// A device a backend can build for (GPU backends; cpu reports none).
struct DeviceInfo {
  int ordinal = 0;
  std::string name;    // "NVIDIA H100 80GB HBM3"
  std::string uuid;    // "GPU-8c1f..." (empty when unknown)
  std::string target;  // what an engine cache is bound to: "sm_90"
  int cc_major = 0, cc_minor = 0;
  uint64_t total_memory = 0;  // bytes
};

// Memory a context holds of its own (see pd_memory_info).
struct ContextMemory {
  uint64_t arena_bytes = 0;           // activation arenas of the shape buckets held now
  uint64_t context_weight_bytes = 0;  // the context's copies of weights in a backend layout
  uint64_t buckets = 0;               // shape buckets held now
};

class BackendContext {
 public:
  virtual ~BackendContext() = default;
  virtual void set_seed(uint64_t seed) = 0;
  // Copies seeds[0, n) (n == 0: back to the context stream) for the following runs; see
  // pd_context_set_row_seeds. Must not allocate when n does not exceed an earlier n.
  virtual void set_row_seeds(const uint64_t* seeds, size_t n) = 0;
  // May be called from any thread, also while another thread runs the context.
  virtual ContextMemory memory() const = 0;
  // inputs: one per graph input, checked; outputs: one per graph output, filled with views of
  // memory the context owns until its next run.
  virtual void run(const pd_tensor* inputs, pd_tensor* outputs) = 0;
  // Device time of the last run in milliseconds, measured by the device (CUDA events around
  // the kernels, copies excluded) when the engine was built with BuildOptions::profile; a
  // negative value when the backend does not measure it.
  virtual double last_device_ms() const { return -1; }
  // pd_context_run_device: inputs' data are device pointers on the engine's device (checked
  // against the signature like run's); outputs[i].data is a device pointer with
  // outputs[i].byte_size bytes of room, and the run fills dtype, rank, dims and byte_size. A
  // result larger than its room fails with PD_ERR_INVALID_ARG naming the output before any
  // output is written. Backends without device memory refuse (PD_ERR_UNSUPPORTED).
  virtual void run_device(const pd_tensor*, pd_tensor*, const std::vector<std::string>& /*output_names*/) {
    fail(PD_ERR_UNSUPPORTED, "this backend cannot read or write device memory");
  }
};

class BackendEngine {
 public:
  virtual ~BackendEngine() = default;
  virtual std::unique_ptr<BackendContext> create_context() = 0;
  // The backend's part of an engine cache: everything build() needs besides the graph to
  // skip its slow work (GPU backends: compiled kernels, prepared weights). The core wraps it
  // in an envelope binding it to the model, backend version, target and options.
  virtual std::string serialize() const {
    fail(PD_ERR_UNSUPPORTED, "this backend does not serialize engines");
  }
  // The timing cache the build left ("" when the backend keeps none, or built from a cache).
  virtual std::string timing_cache() const { return ""; }
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual std::string name() const = 0;
  virtual std::string version() const = 0;
  // graph has been imported, checked and optimized by the core; it outlives the engine.
  virtual std::unique_ptr<BackendEngine> build(std::shared_ptr<const Graph> graph,
                                               const BuildOptions& opts) = 0;
  // Devices the backend can build for, found when the plugin loaded. Empty for cpu.
  virtual std::vector<DeviceInfo> devices() const { return {}; }
  // Opens a CUDA IPC memory handle (cudaIpcMemHandle_t's bytes) on device: the device pointer
  // of the exporter's allocation mapped into this process, released with ipc_close. Backends
  // without CUDA devices refuse (PD_ERR_UNSUPPORTED).
  virtual void* ipc_open(int /*device*/, const void* /*handle*/, size_t /*size*/) {
    fail(PD_ERR_UNSUPPORTED, "backend '", name(), "' has no CUDA IPC");
  }
  virtual void ipc_close(int /*device*/, void* /*ptr*/) {}
  // Copies n bytes between host memory and device memory of device (to_device: host src ->
  // device dst; else device src -> host dst), synchronously.
  virtual void device_copy(int /*device*/, void* /*dst*/, const void* /*src*/, size_t /*n*/, bool /*to_device*/) {
    fail(PD_ERR_UNSUPPORTED, "backend '", name(), "' has no device memory");
  }
  // The build options that change what build() produces, as a string an engine cache is bound
  // to ("" when none do). threads, name and profile never do. Throws PD_ERR_INVALID_ARG for a
  // parameter (BuildOptions::params) the backend does not know.
  virtual std::string options_key(const BuildOptions& o) const {
    if (!o.params.empty())
      fail(PD_ERR_INVALID_ARG, "backend '", name(), "' has no build parameter '", o.params.begin()->first, "'");
    return "";
  }
};

}  // namespace pd

// The plugin's one export. Returns 0 and sets *out (owned by the plugin, valid until dlclose)
// on success; otherwise writes a message into err (NUL-terminated, at most err_len bytes) and
// returns non-zero (e.g. "no CUDA device", "driver too old").
extern "C" typedef int (*pd_backend_entry_fn)(const pd::HostServices* host, pd::Backend** out,
                                              char* err, size_t err_len);
#define PD_BACKEND_ENTRY_SYMBOL "pd_backend_entry"
