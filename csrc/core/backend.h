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
#include <memory>
#include <string>

#include "ir.h"
#include "policyd.h"

namespace pd {

constexpr uint32_t kBackendAbiVersion = 2;  // 2: set_row_seeds, memory

// What the core offers a plugin.
struct HostServices {
  uint32_t abi_version;
  void (*log)(pd_log_level level, const char* msg);
};

struct BuildOptions {
  std::string name;  // for messages: "model@version"
  int threads = 1;   // intra-op threads per context run
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
};

class BackendEngine {
 public:
  virtual ~BackendEngine() = default;
  virtual std::unique_ptr<BackendContext> create_context() = 0;
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual std::string name() const = 0;
  virtual std::string version() const = 0;
  // graph has been imported, checked and optimized by the core; it outlives the engine.
  virtual std::unique_ptr<BackendEngine> build(std::shared_ptr<const Graph> graph,
                                               const BuildOptions& opts) = 0;
};

}  // namespace pd

// The plugin's one export. Returns 0 and sets *out (owned by the plugin, valid until dlclose)
// on success; otherwise writes a message into err (NUL-terminated, at most err_len bytes) and
// returns non-zero (e.g. "no CUDA device", "driver too old").
extern "C" typedef int (*pd_backend_entry_fn)(const pd::HostServices* host, pd::Backend** out,
                                              char* err, size_t err_len);
#define PD_BACKEND_ENTRY_SYMBOL "pd_backend_entry"
