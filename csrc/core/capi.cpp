// The C ABI: every exported function is one guard() that turns any exception into a pd_error*.
#include <dlfcn.h>
#include <sys/stat.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <new>
#include <string>
#include <unordered_set>
#include <vector>

#include "backend.h"
#include "engine_cache.h"
#include "log.h"
#include "onnx_import.h"
#include "passes.h"
#include "program.h"

#ifndef PD_VERSION
#define PD_VERSION "0.0.0"
#endif

struct pd_error {
  pd_error_code code;
  std::string message;
};

namespace pd {
namespace {

pd_error g_oom{PD_ERR_UNAVAILABLE, "out of memory"};

pd_error* make_error(pd_error_code code, const char* msg) {
  try {
    return new pd_error{code, msg};
  } catch (...) {
    // Allocation failed while reporting: hand back a static error rather than nothing.
    return &g_oom;
  }
}

}  // namespace
bool is_static_oom(const pd_error* e) { return e == &g_oom; }
namespace {

template <typename F>
pd_error* guard(F&& f) noexcept {
  try {
    f();
    return nullptr;
  } catch (const Error& e) {
    return make_error(e.code(), e.what());
  } catch (const std::bad_alloc&) {
    return make_error(PD_ERR_UNAVAILABLE, "out of memory");
  } catch (const std::exception& e) {
    return make_error(PD_ERR_INTERNAL, e.what());
  } catch (...) {
    return make_error(PD_ERR_INTERNAL, "unknown internal error");
  }
}

std::atomic<pd_log_fn> g_log_fn{nullptr};
std::atomic<void*> g_log_user{nullptr};

std::string library_dir() {
  Dl_info info;
  if (dladdr(reinterpret_cast<void*>(&pd_api_version), &info) && info.dli_fname) {
    std::string p = info.dli_fname;
    auto slash = p.rfind('/');
    return slash == std::string::npos ? "." : p.substr(0, slash);
  }
  return ".";
}

bool file_exists(const std::string& p) {
  struct stat st;
  return ::stat(p.c_str(), &st) == 0;
}

}  // namespace

void log_message(pd_log_level level, const char* msg) {
  pd_log_fn fn = g_log_fn.load();
  if (fn) {
    fn(g_log_user.load(), level, msg);
    return;
  }
  if (level >= PD_LOG_WARN) std::fprintf(stderr, "policyd: %s\n", msg);
}

}  // namespace pd

using namespace pd;

// ---- version, errors, logging ----

extern "C" void pd_api_version(uint32_t* major, uint32_t* minor) {
  if (major) *major = PD_API_VERSION_MAJOR;
  if (minor) *minor = PD_API_VERSION_MINOR;
}

extern "C" const char* pd_version_string(void) { return PD_VERSION; }

extern "C" pd_error_code pd_error_get_code(const pd_error* err) {
  return err ? err->code : PD_ERR_INTERNAL;
}
extern "C" const char* pd_error_get_message(const pd_error* err) {
  return err ? err->message.c_str() : "";
}
extern "C" void pd_error_free(pd_error* err) {
  if (err && !is_static_oom(err)) delete err;
}

extern "C" void pd_set_log_callback(pd_log_fn fn, void* user) {
  g_log_user.store(user);
  g_log_fn.store(fn);
}

// ---- runtime ----

struct pd_runtime_options {
  std::string backend_dir;
};

struct BackendSlot {
  std::string name, version, path, reason;
  bool available = false;
  void* handle = nullptr;
  Backend* backend = nullptr;
  std::vector<DeviceInfo> devices;  // found at load
};

struct pd_runtime {
  std::vector<BackendSlot> backends;
  ~pd_runtime() {
    for (auto& b : backends)
      if (b.handle) dlclose(b.handle);
  }
  BackendSlot* find(const std::string& name) {
    for (auto& b : backends)
      if (b.name == name) return &b;
    return nullptr;
  }
};

extern "C" pd_error* pd_runtime_options_create(pd_runtime_options** out) {
  return guard([&] {
    PD_CHECK_ARG(out, "out is NULL");
    *out = new pd_runtime_options();
  });
}
extern "C" void pd_runtime_options_destroy(pd_runtime_options* opts) { delete opts; }
extern "C" pd_error* pd_runtime_options_set_backend_dir(pd_runtime_options* opts, const char* dir) {
  return guard([&] {
    PD_CHECK_ARG(opts && dir, "options or dir is NULL");
    opts->backend_dir = dir;
  });
}

namespace {
const HostServices kHost{kBackendAbiVersion, &pd::log_message};
const char* const kKnownBackends[] = {"tensorrt", "cuda", "cpu"};
}  // namespace

extern "C" pd_error* pd_runtime_create(const pd_runtime_options* opts, pd_runtime** out) {
  return guard([&] {
    PD_CHECK_ARG(out, "out is NULL");
    *out = nullptr;
    std::string dir = opts && !opts->backend_dir.empty() ? opts->backend_dir : "";
    if (dir.empty()) {
      const char* env = std::getenv("POLICYD_BACKEND_DIR");
      dir = env && *env ? env : library_dir();
    }
    auto rt = std::make_unique<pd_runtime>();
    for (const char* name : kKnownBackends) {
      BackendSlot s;
      s.name = name;
      s.path = dir + "/libpolicyd_backend_" + name + ".so";
      if (!file_exists(s.path)) {
        s.reason = "plugin not installed (" + s.path + " does not exist)";
      } else if (void* h = dlopen(s.path.c_str(), RTLD_NOW | RTLD_LOCAL)) {
        auto entry = reinterpret_cast<pd_backend_entry_fn>(dlsym(h, PD_BACKEND_ENTRY_SYMBOL));
        char err[512] = {0};
        Backend* b = nullptr;
        if (!entry) {
          s.reason = std::string("plugin has no ") + PD_BACKEND_ENTRY_SYMBOL + " symbol";
          dlclose(h);
        } else if (entry(&kHost, &b, err, sizeof err) != 0 || !b) {
          s.reason = err[0] ? err : "plugin refused to initialize";
          dlclose(h);
        } else {
          s.handle = h;
          s.backend = b;
          s.available = true;
          s.version = b->version();
          s.devices = b->devices();
        }
      } else {
        const char* e = dlerror();
        s.reason = std::string("cannot load plugin: ") + (e ? e : "unknown dlopen error");
      }
      pd::log(s.available ? PD_LOG_INFO : PD_LOG_DEBUG, "backend ", s.name, ": ",
              s.available ? "available (" + s.version + ")" : "unavailable: " + s.reason);
      rt->backends.push_back(std::move(s));
    }
    *out = rt.release();
  });
}

extern "C" void pd_runtime_destroy(pd_runtime* rt) { delete rt; }

extern "C" int32_t pd_runtime_backend_count(const pd_runtime* rt) {
  return rt ? static_cast<int32_t>(rt->backends.size()) : 0;
}

namespace {
const BackendSlot& slot_named(const pd_runtime* rt, const char* backend) {
  PD_CHECK_ARG(rt && backend, "runtime or backend is NULL");
  for (const auto& b : rt->backends)
    if (b.name == backend) return b;
  fail(PD_ERR_NOT_FOUND, "unknown backend '", backend, "' (known: tensorrt, cuda, cpu)");
}
}  // namespace

extern "C" pd_error* pd_runtime_device_count(const pd_runtime* rt, const char* backend, int32_t* out) {
  return guard([&] {
    PD_CHECK_ARG(out, "out is NULL");
    *out = static_cast<int32_t>(slot_named(rt, backend).devices.size());
  });
}

extern "C" pd_error* pd_runtime_device_info(const pd_runtime* rt, const char* backend, int32_t i,
                                            pd_device_info* out) {
  return guard([&] {
    PD_CHECK_ARG(out, "out is NULL");
    const BackendSlot& s = slot_named(rt, backend);
    PD_CHECK_ARG(i >= 0 && i < static_cast<int32_t>(s.devices.size()), "device index ", i,
                 " out of range: backend '", backend, "' has ", s.devices.size(), " devices");
    const DeviceInfo& d = s.devices[i];
    out->ordinal = d.ordinal;
    out->name = d.name.c_str();
    out->uuid = d.uuid.c_str();
    out->target = d.target.c_str();
    out->cc_major = d.cc_major;
    out->cc_minor = d.cc_minor;
    out->total_memory = d.total_memory;
  });
}

extern "C" pd_error* pd_runtime_backend_info(const pd_runtime* rt, int32_t i, pd_backend_info* out) {
  return guard([&] {
    PD_CHECK_ARG(rt && out, "runtime or out is NULL");
    PD_CHECK_ARG(i >= 0 && i < static_cast<int32_t>(rt->backends.size()), "backend index ", i,
                 " out of range");
    const BackendSlot& s = rt->backends[i];
    out->name = s.name.c_str();
    out->version = s.version.c_str();
    out->path = s.path.c_str();
    out->available = s.available ? 1 : 0;
    out->reason = s.reason.c_str();
  });
}

// ---- engine ----

struct pd_engine_options {
  std::string backend = "cpu";
  int threads = 1;
  std::string name = "model";
  int device = 0;
  bool profile = false;
  std::string model_digest;
  std::string cache;  // an engine cache envelope (engine_cache.h); empty: build
  int64_t min_batch = 1, opt_batch = 1, max_batch = 0;
  std::map<std::string, std::string> params;  // "<backend>.<key>" -> value
  std::string timing_cache;
  uint64_t max_memory = 0;  // 0: no limit
  std::map<std::string, std::string> externals;  // external-data files by normalized name (copied)
};

extern "C" pd_error* pd_engine_options_create(pd_engine_options** out) {
  return guard([&] {
    PD_CHECK_ARG(out, "out is NULL");
    *out = new pd_engine_options();
  });
}
extern "C" void pd_engine_options_destroy(pd_engine_options* o) { delete o; }
extern "C" pd_error* pd_engine_options_set_backend(pd_engine_options* o, const char* name) {
  return guard([&] {
    PD_CHECK_ARG(o && name && *name, "options or backend name is NULL or empty");
    o->backend = name;
  });
}
extern "C" pd_error* pd_engine_options_set_threads(pd_engine_options* o, int32_t threads) {
  return guard([&] {
    PD_CHECK_ARG(o, "options is NULL");
    PD_CHECK_ARG(threads >= 1 && threads <= 1024, "threads must be in [1, 1024], got ", threads);
    o->threads = threads;
  });
}
extern "C" pd_error* pd_engine_options_set_name(pd_engine_options* o, const char* name) {
  return guard([&] {
    PD_CHECK_ARG(o && name, "options or name is NULL");
    o->name = name;
  });
}

extern "C" pd_error* pd_engine_options_set_device(pd_engine_options* o, int32_t device) {
  return guard([&] {
    PD_CHECK_ARG(o, "options is NULL");
    PD_CHECK_ARG(device >= 0, "device must be >= 0, got ", device);
    o->device = device;
  });
}
extern "C" pd_error* pd_engine_options_set_profiling(pd_engine_options* o, int32_t on) {
  return guard([&] {
    PD_CHECK_ARG(o, "options is NULL");
    o->profile = on != 0;
  });
}
extern "C" pd_error* pd_engine_options_set_model_digest(pd_engine_options* o, const char* digest) {
  return guard([&] {
    PD_CHECK_ARG(o && digest, "options or digest is NULL");
    for (const char* c = digest; *c; ++c)
      PD_CHECK_ARG(*c >= 0x21 && *c <= 0x7e, "model digest must be printable ASCII without spaces");
    o->model_digest = digest;
  });
}
extern "C" pd_error* pd_engine_options_set_cache(pd_engine_options* o, const void* data, size_t size) {
  return guard([&] {
    PD_CHECK_ARG(o, "options is NULL");
    PD_CHECK_ARG(size == 0 || data, "cache data is NULL for ", size, " bytes");
    if (size == 0) {
      o->cache.clear();
      return;
    }
    // Only the envelope is checked here; the binding is checked by pd_engine_create.
    (void)decode_engine_cache(data, size, nullptr);
    o->cache.assign(static_cast<const char*>(data), size);
  });
}

extern "C" pd_error* pd_engine_options_set_batch_profile(pd_engine_options* o, int64_t min, int64_t opt,
                                                         int64_t max) {
  return guard([&] {
    PD_CHECK_ARG(o, "options is NULL");
    PD_CHECK_ARG(min >= 1 && opt >= min && (max == 0 || max >= opt),
                 "batch profile must satisfy 1 <= min <= opt <= max (max 0: unbounded), got min ", min,
                 ", opt ", opt, ", max ", max);
    o->min_batch = min;
    o->opt_batch = opt;
    o->max_batch = max;
  });
}
extern "C" pd_error* pd_engine_options_set_param(pd_engine_options* o, const char* key, const char* value) {
  return guard([&] {
    PD_CHECK_ARG(o && key && value, "options, key or value is NULL");
    const std::string k = key;
    const size_t dot = k.find('.');
    PD_CHECK_ARG(dot != std::string::npos && dot > 0 && dot + 1 < k.size(),
                 "parameter key must be '<backend>.<name>', got '", k, "'");
    const std::string b = k.substr(0, dot);
    PD_CHECK_ARG(b == "cpu" || b == "cuda" || b == "tensorrt", "parameter '", k, "' names unknown backend '", b,
                 "' (known: tensorrt, cuda, cpu)");
    if (*value) o->params[k] = value;
    else o->params.erase(k);
  });
}
extern "C" pd_error* pd_engine_options_set_max_memory(pd_engine_options* o, uint64_t bytes) {
  return guard([&] {
    PD_CHECK_ARG(o, "options is NULL");
    o->max_memory = bytes;
  });
}
extern "C" pd_error* pd_engine_options_add_external(pd_engine_options* o, const char* location, const void* data,
                                                    size_t size) {
  return guard([&] {
    PD_CHECK_ARG(o && location, "options or location is NULL");
    PD_CHECK_ARG(size == 0 || data, "external file '", location, "': data is NULL for ", size, " bytes");
    const std::string name = normalize_external_location(location, "external file name");
    o->externals[name].assign(static_cast<const char*>(data), size);
  });
}
extern "C" pd_error* pd_engine_options_set_timing_cache(pd_engine_options* o, const void* data, size_t size) {
  return guard([&] {
    PD_CHECK_ARG(o, "options is NULL");
    PD_CHECK_ARG(size == 0 || data, "timing cache data is NULL for ", size, " bytes");
    o->timing_cache.assign(static_cast<const char*>(data), size);
  });
}

struct pd_engine {
  std::string name;
  std::string backend_name;
  std::shared_ptr<const Graph> graph;
  uint64_t weight_bytes = 0;  // the graph's constants
  uint64_t arena_estimate = 0;  // one context's activation arena at batch 1 (0: not known)
  std::vector<ValueInfo> inputs;   // signature (dims -1 where not fixed)
  std::vector<ValueInfo> outputs;  // probed signature
  bool batchable = false;
  CacheBinding binding;  // what a serialized engine is bound to
  bool from_cache = false;
  std::unique_ptr<BackendEngine> impl;
};

namespace {

// Concrete shapes for a probe: batch dims = batch, other free dims = other.
std::vector<Shape> probe_shapes(const Graph& g, int64_t batch, int64_t other) {
  std::vector<Shape> shapes;
  for (const auto& in : g.inputs) {
    Shape s = in.dims;
    for (size_t d = 0; d < s.size(); ++d)
      if (s[d] < 0) s[d] = static_cast<int>(d) == in.batch_dim ? batch : other;
    shapes.push_back(std::move(s));
  }
  return shapes;
}

// The output signature, found by specializing the graph at two batch sizes (and two sizes of
// any other free dimension): a dimension that follows the batch is the batch dimension, one
// that changes with other free dimensions is -1, the rest are fixed. Declared output shapes
// are ignored, as ONNX Runtime ignores them: exporters often get them wrong.
void derive_signature(pd_engine& e, Graph& g) {
  for (const auto& in : g.inputs)
    if (!in.has_shape)
      fail(PD_ERR_UNSUPPORTED, "graph input '", in.name, "' declares no shape; policyd needs ",
           "the rank and fixed dimensions of every input");
  // Shape tensors: when an op needs the value of a graph input (a Reshape whose target shape
  // is an input), the small fixed-size integer inputs become shape-tensor inputs whose values
  // join the shape bucket. Their outputs' shapes depend on values: the declared signature is
  // all we can report, and such a model is not batched.
  try {
    (void)analyze(g, probe_shapes(g, 1, 1));
  } catch (const NeedsValue& nv) {
    bool is_input = false;
    for (const auto& in : g.inputs)
      if (in.name == nv.value()) is_input = true;
    if (!is_input) throw;
    for (auto& in : g.inputs) {
      bool fixed = in.dims.size() <= 1;
      for (int64_t d : in.dims) fixed = fixed && d >= 0 && d <= 64;
      if (fixed && dtype_size(in.dtype) != 0) in.value_input = true;
    }
    e.batchable = false;
    e.inputs = g.inputs;
    for (auto& in : e.inputs) in.batch_dim = -1;
    for (const auto& o : g.outputs) {
      ValueInfo vi = o;
      vi.batch_dim = -1;
      e.outputs.push_back(std::move(vi));
    }
    pd::log(PD_LOG_INFO, e.name, ": input '", nv.value(), "' is a shape tensor; its values select the shape bucket");
    return;
  }
  bool batchable = !g.inputs.empty();
  for (const auto& in : g.inputs)
    if (in.batch_dim < 0) batchable = false;
  Analysis a1 = analyze(g, probe_shapes(g, 1, 1));
  e.arena_estimate = estimate_arena_bytes(g, a1);
  std::unique_ptr<Analysis> a2, a3;
  if (batchable) {
    try {
      a2 = std::make_unique<Analysis>(analyze(g, probe_shapes(g, 2, 1)));
    } catch (const Error& err) {
      pd::log(PD_LOG_WARN, e.name, ": declares a dynamic batch dimension but cannot run at batch 2 (",
              err.what(), "); serving it at batch 1 only");
      batchable = false;
    }
  }
  bool other_free = false;
  for (const auto& in : g.inputs)
    for (size_t d = 0; d < in.dims.size(); ++d)
      if (in.dims[d] < 0 && static_cast<int>(d) != in.batch_dim) other_free = true;
  if (other_free) {
    try {
      a3 = std::make_unique<Analysis>(analyze(g, probe_shapes(g, 1, 2)));
    } catch (const Error&) {
    }
  }
  e.batchable = batchable;
  e.inputs = g.inputs;
  if (!batchable)
    for (auto& in : e.inputs) in.batch_dim = -1;
  for (const auto& o : g.outputs) {
    const TensorInfo& t1 = a1.values.at(o.name);
    ValueInfo vi;
    vi.name = o.name;
    vi.dtype = t1.dtype;
    vi.dims = t1.shape;
    vi.has_shape = true;
    if (a2) {
      const TensorInfo& t2 = a2->values.at(o.name);
      for (size_t d = 0; d < vi.dims.size() && d < t2.shape.size(); ++d)
        if (t2.shape[d] != t1.shape[d]) {
          if (vi.batch_dim < 0 && t2.shape[d] == 2 * t1.shape[d]) vi.batch_dim = static_cast<int>(d);
          vi.dims[d] = -1;
        }
    }
    if (a3) {
      const TensorInfo& t3 = a3->values.at(o.name);
      for (size_t d = 0; d < vi.dims.size() && d < t3.shape.size(); ++d)
        if (t3.shape[d] != t1.shape[d]) vi.dims[d] = -1;
    }
    if (vi.dims.size() > PD_MAX_RANK)
      fail(PD_ERR_UNSUPPORTED, "output '", o.name, "' has rank ", vi.dims.size());
    e.outputs.push_back(std::move(vi));
  }
}

}  // namespace

extern "C" pd_error* pd_engine_create(pd_runtime* rt, const void* onnx, size_t onnx_size,
                                      const pd_engine_options* opts, pd_engine** out) {
  return guard([&] {
    PD_CHECK_ARG(rt && out, "runtime or out is NULL");
    PD_CHECK_ARG(onnx && onnx_size > 0, "the model is empty");
    *out = nullptr;
    pd_engine_options defaults;
    const pd_engine_options& o = opts ? *opts : defaults;
    BackendSlot* slot = rt->find(o.backend);
    if (!slot) fail(PD_ERR_NOT_FOUND, "unknown backend '", o.backend, "' (known: tensorrt, cuda, cpu)");
    if (!slot->available)
      fail(PD_ERR_UNAVAILABLE, "backend '", o.backend, "' is unavailable: ", slot->reason);
    auto t0 = std::chrono::steady_clock::now();
    auto e = std::make_unique<pd_engine>();
    e->name = o.name;
    e->backend_name = slot->name;
    Graph g;
    ExternalFiles files;
    for (const auto& [n, bytes] : o.externals) files[n] = ExternalFile{bytes.data(), bytes.size()};
    try {
      g = import_onnx(onnx, onnx_size, o.max_memory, &files);
    } catch (const Error& err) {
      fail(err.code(), o.name, ": ", err.what());
    }
    // The engine cache binds to the model and its external data: the fingerprint of the ONNX
    // bytes, then each file's name and fingerprint.
    std::string fingerprint = fnv1a64_tag(onnx, onnx_size);
    if (!o.externals.empty()) {
      std::string all = fingerprint;
      for (const auto& [n, bytes] : o.externals) all += "\n" + n + " " + fnv1a64_tag(bytes.data(), bytes.size());
      fingerprint = fnv1a64_tag(all.data(), all.size());
    }
    // A backend with its own ONNX parser (tensorrt, the one reading BuildOptions::onnx) gets the
    // model with the external data inlined: one transient copy of the weights for its build.
    std::string inlined;
    if (!o.externals.empty() && slot->name == "tensorrt") {
      try {
        inlined = inline_external_data(onnx, onnx_size, files);
      } catch (const Error& err) {
        fail(err.code(), o.name, ": ", err.what());
      }
      onnx = inlined.data();
      onnx_size = inlined.size();
    }
    size_t nodes_in = g.nodes.size();
    int folded = 0, fusedn = 0, removed = 0;
    try {
      removed += eliminate_dead_nodes(g);
      fusedn = fuse_quantized(g);
      folded = fold_constants(g, o.max_memory);
      fusedn += fuse(g);
      removed += eliminate_dead_nodes(g);
      derive_signature(*e, g);
    } catch (const Error& err) {
      fail(err.code(), o.name, ": ", err.what());
    }
    e->graph = std::make_shared<const Graph>(std::move(g));
    std::unordered_set<const Tensor*> counted;  // a tensor may have several names
    for (const auto& [name, t] : e->graph->constants)
      if (counted.insert(t.get()).second) e->weight_bytes += t->nbytes();
    if (o.max_memory && e->weight_bytes + e->arena_estimate > o.max_memory)
      fail(PD_ERR_INVALID_ARG, o.name, ": the model needs ", e->weight_bytes + e->arena_estimate, " bytes (",
           e->weight_bytes, " of weights, ", e->arena_estimate, " of activations at batch 1), more than the ",
           "engine's memory limit of ", o.max_memory, " bytes");
    BuildOptions bo;
    bo.name = o.name;
    bo.threads = o.threads;
    bo.device = o.device;
    bo.profile = o.profile;
    bo.onnx = onnx;
    bo.onnx_size = onnx_size;
    bo.min_batch = o.min_batch;
    bo.opt_batch = o.opt_batch;
    bo.max_batch = o.max_batch;
    for (const auto& [k, v] : o.params)
      if (k.compare(0, slot->name.size() + 1, slot->name + ".") == 0) bo.params[k.substr(slot->name.size() + 1)] = v;
    bo.timing_cache = o.timing_cache;
    if (!slot->devices.empty())
      PD_CHECK_ARG(o.device < static_cast<int>(slot->devices.size()), o.name, ": device ", o.device,
                   " out of range: backend '", slot->name, "' has ", slot->devices.size(), " devices");
    e->binding.backend = slot->name;
    e->binding.backend_version = slot->version;
    e->binding.target = slot->devices.empty() ? "" : slot->devices[o.device].target;
    e->binding.model_fingerprint = fingerprint;
    e->binding.model_digest = o.model_digest;
    try {
      e->binding.options = slot->backend->options_key(bo);
    } catch (const Error& err) {
      fail(err.code(), o.name, ": ", err.what());
    }
    if (!o.cache.empty()) {
      CacheBinding got = decode_engine_cache(o.cache.data(), o.cache.size(), &bo.cache);
      try {
        check_engine_cache(e->binding, got);
      } catch (const Error& err) {
        fail(err.code(), o.name, ": ", err.what());
      }
      e->from_cache = true;
    }
    e->impl = slot->backend->build(e->graph, bo);
    double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    pd::log(PD_LOG_INFO, o.name, ": loaded on ", slot->name,
            e->binding.target.empty() ? "" : " (" + e->binding.target + ")",
            e->from_cache ? " from its engine cache" : "", " in ", ms, " ms (", nodes_in,
            " nodes; ", folded, " folded, ", fusedn, " fused, ", removed, " removed; ",
            e->graph->nodes.size(), " remain)");
    *out = e.release();
  });
}

extern "C" void pd_engine_destroy(pd_engine* e) { delete e; }

extern "C" pd_error* pd_engine_serialize(const pd_engine* e, void** data, size_t* size) {
  return guard([&] {
    PD_CHECK_ARG(e && data && size, "engine, data or size is NULL");
    *data = nullptr;
    *size = 0;
    std::string payload;
    try {
      payload = e->impl->serialize();
    } catch (const Error& err) {
      fail(err.code(), e->name, " on ", e->backend_name, ": ", err.what());
    }
    std::string blob = encode_engine_cache(e->binding, payload);
    void* p = std::malloc(blob.size());
    if (!p) throw std::bad_alloc();
    std::memcpy(p, blob.data(), blob.size());
    *data = p;
    *size = blob.size();
  });
}

extern "C" pd_error* pd_engine_timing_cache(const pd_engine* e, void** data, size_t* size) {
  return guard([&] {
    PD_CHECK_ARG(e && data && size, "engine, data or size is NULL");
    *data = nullptr;
    *size = 0;
    const std::string tc = e->impl->timing_cache();
    if (tc.empty()) return;
    void* p = std::malloc(tc.size());
    if (!p) throw std::bad_alloc();
    std::memcpy(p, tc.data(), tc.size());
    *data = p;
    *size = tc.size();
  });
}

extern "C" void pd_engine_serialized_free(void* data) { std::free(data); }

extern "C" const char* pd_engine_backend(const pd_engine* e) {
  return e ? e->backend_name.c_str() : "";
}
extern "C" int32_t pd_engine_input_count(const pd_engine* e) {
  return e ? static_cast<int32_t>(e->inputs.size()) : 0;
}
extern "C" int32_t pd_engine_output_count(const pd_engine* e) {
  return e ? static_cast<int32_t>(e->outputs.size()) : 0;
}

namespace {
void fill_io(const ValueInfo& v, pd_io_info* out) {
  out->name = v.name.c_str();
  out->dtype = static_cast<int32_t>(v.dtype);
  out->rank = static_cast<int32_t>(v.dims.size());
  for (size_t d = 0; d < v.dims.size() && d < PD_MAX_RANK; ++d) out->dims[d] = v.dims[d];
  out->batch_dim = v.batch_dim;
}
}  // namespace

extern "C" pd_error* pd_engine_input_info(const pd_engine* e, int32_t i, pd_io_info* out) {
  return guard([&] {
    PD_CHECK_ARG(e && out, "engine or out is NULL");
    PD_CHECK_ARG(i >= 0 && i < static_cast<int32_t>(e->inputs.size()), "input index ", i, " out of range");
    fill_io(e->inputs[i], out);
  });
}
extern "C" pd_error* pd_engine_output_info(const pd_engine* e, int32_t i, pd_io_info* out) {
  return guard([&] {
    PD_CHECK_ARG(e && out, "engine or out is NULL");
    PD_CHECK_ARG(i >= 0 && i < static_cast<int32_t>(e->outputs.size()), "output index ", i, " out of range");
    fill_io(e->outputs[i], out);
  });
}
extern "C" int32_t pd_engine_batchable(const pd_engine* e) { return e && e->batchable ? 1 : 0; }

// ---- context ----

struct pd_context {
  pd_engine* engine;
  std::unique_ptr<BackendContext> impl;
  std::vector<std::string> output_names;  // the engine's, for run_device's messages
};

extern "C" pd_error* pd_context_create(pd_engine* e, pd_context** out) {
  return guard([&] {
    PD_CHECK_ARG(e && out, "engine or out is NULL");
    *out = nullptr;
    auto c = std::make_unique<pd_context>();
    c->engine = e;
    c->impl = e->impl->create_context();
    c->output_names.reserve(e->outputs.size());
    for (const auto& o : e->outputs) c->output_names.push_back(o.name);
    *out = c.release();
  });
}

extern "C" void pd_context_destroy(pd_context* c) { delete c; }

extern "C" pd_error* pd_context_set_seed(pd_context* c, uint64_t seed) {
  return guard([&] {
    PD_CHECK_ARG(c, "context is NULL");
    c->impl->set_seed(seed);
  });
}

extern "C" pd_error* pd_context_set_row_seeds(pd_context* c, const uint64_t* seeds, size_t n) {
  return guard([&] {
    PD_CHECK_ARG(c, "context is NULL");
    PD_CHECK_ARG(n == 0 || seeds, "seeds is NULL for ", n, " row seeds");
    c->impl->set_row_seeds(seeds, n);
  });
}

extern "C" pd_error* pd_context_device_time(const pd_context* c, double* ms) {
  return guard([&] {
    PD_CHECK_ARG(c && ms, "context or ms is NULL");
    double v = c->impl->last_device_ms();
    if (v < 0)
      fail(PD_ERR_UNSUPPORTED, "backend '", c->engine->backend_name,
           "' does not measure device time (or the engine was built without profiling)");
    *ms = v;
  });
}

extern "C" pd_error* pd_context_memory(const pd_context* c, pd_memory_info* out) {
  return guard([&] {
    PD_CHECK_ARG(c && out, "context or out is NULL");
    const ContextMemory m = c->impl->memory();
    out->arena_bytes = m.arena_bytes;
    out->weight_bytes = c->engine->weight_bytes;
    out->context_weight_bytes = m.context_weight_bytes;
    out->buckets = m.buckets;
  });
}

namespace {
// Checks the caller's tensors against the signature; every message names the input. Nothing
// of a tensor is trusted: rank, every dimension, the element count, the byte size and the data
// pointer are checked before anything is read or multiplied.
void check_inputs(const pd_engine& e, const pd_tensor* in, int32_t n) {
  PD_CHECK_ARG(n == static_cast<int32_t>(e.inputs.size()), "the model takes ", e.inputs.size(),
               " inputs, got ", n);
  int64_t batch = -1;
  for (int32_t i = 0; i < n; ++i) {
    const ValueInfo& v = e.inputs[i];
    const pd_tensor& t = in[i];
    PD_CHECK_ARG(t.dtype == static_cast<int32_t>(v.dtype), "input '", v.name, "': expected ",
                 dtype_name(v.dtype), ", got ", dtype_name(static_cast<DType>(t.dtype)));
    PD_CHECK_ARG(t.rank >= 0 && t.rank <= PD_MAX_RANK, "input '", v.name, "': rank ", t.rank,
                 " is out of range [0, ", PD_MAX_RANK, "]");
    PD_CHECK_ARG(t.rank == static_cast<int32_t>(v.dims.size()), "input '", v.name, "': expected rank ",
                 v.dims.size(), ", got ", t.rank);
    // No allocation on this path: the shape is only made into a Shape for a message.
#define PD_INPUT_SHAPE shape_str(Shape(t.dims, t.dims + t.rank))
    for (int32_t d = 0; d < t.rank; ++d) {
      PD_CHECK_ARG(t.dims[d] >= 0, "input '", v.name, "': negative dimension ", t.dims[d]);
      if (v.dims[d] >= 0)
        PD_CHECK_ARG(t.dims[d] == v.dims[d], "input '", v.name, "': dimension ", d, " must be ",
                     v.dims[d], ", got ", t.dims[d]);
    }
    int64_t count;
    PD_CHECK_ARG(checked_numel(t.dims, t.rank, &count), "input '", v.name, "': shape ", PD_INPUT_SHAPE,
                 " has more elements than a 64-bit count can hold");
    uint64_t want;
    PD_CHECK_ARG(checked_nbytes(t.dims, t.rank, v.dtype, &want), "input '", v.name, "': shape ", PD_INPUT_SHAPE,
                 " needs ", count, " ", dtype_name(v.dtype), " elements, more than the limit of ",
                 kMaxTensorBytes, " bytes per tensor");
    if (v.batch_dim >= 0) {
      int64_t b = t.dims[v.batch_dim];
      PD_CHECK_ARG(b >= 1, "input '", v.name, "': batch size must be at least 1");
      PD_CHECK_ARG(batch < 0 || b == batch, "input '", v.name, "': batch size ", b,
                   " differs from the other inputs' ", batch);
      batch = b;
    }
    PD_CHECK_ARG(t.byte_size == want, "input '", v.name, "': ", t.byte_size,
                 " bytes of data, its shape ", PD_INPUT_SHAPE, " needs ", want);
    PD_CHECK_ARG(want == 0 || t.data, "input '", v.name, "': data is NULL for ", want, " bytes");
#undef PD_INPUT_SHAPE
  }
}

// check_run checks the arguments of pd_context_run and pd_context_run_device.
void check_run(const pd_context* c, const pd_tensor* inputs, int32_t n_inputs, const pd_tensor* outputs,
               int32_t n_outputs) {
  PD_CHECK_ARG(c, "context is NULL");
  PD_CHECK_ARG(n_inputs == 0 || inputs, "inputs is NULL");
  PD_CHECK_ARG(outputs, "outputs is NULL");
  PD_CHECK_ARG(n_outputs == static_cast<int32_t>(c->engine->outputs.size()), "the model has ",
               c->engine->outputs.size(), " outputs, got ", n_outputs, " slots");
  check_inputs(*c->engine, inputs, n_inputs);
}
}  // namespace

extern "C" pd_error* pd_context_run(pd_context* c, const pd_tensor* inputs, int32_t n_inputs,
                                    pd_tensor* outputs, int32_t n_outputs) {
  return guard([&] {
    check_run(c, inputs, n_inputs, outputs, n_outputs);
    c->impl->run(inputs, outputs);
  });
}

// ---- CUDA shared memory ----

struct pd_cuda_ipc {
  Backend* backend = nullptr;
  int device = 0;
  void* ptr = nullptr;
};

extern "C" pd_error* pd_cuda_ipc_open(pd_runtime* rt, int32_t device, const void* handle, size_t handle_size,
                                      pd_cuda_ipc** out) {
  return guard([&] {
    PD_CHECK_ARG(rt && out, "runtime or out is NULL");
    *out = nullptr;
    PD_CHECK_ARG(handle, "handle is NULL");
    PD_CHECK_ARG(handle_size == PD_CUDA_IPC_HANDLE_SIZE, "a CUDA IPC memory handle is ", PD_CUDA_IPC_HANDLE_SIZE,
                 " bytes, got ", handle_size);
    BackendSlot* s = rt->find("cuda");
    if (!s || !s->available || !s->backend)
      fail(PD_ERR_UNAVAILABLE, "CUDA shared memory needs the cuda backend: ",
           s ? (s->reason.empty() ? std::string("not loaded") : s->reason) : std::string("not known"));
    PD_CHECK_ARG(device >= 0 && device < static_cast<int32_t>(s->devices.size()), "CUDA device ", device,
                 " out of range: the cuda backend has ", s->devices.size(), " devices");
    auto m = std::make_unique<pd_cuda_ipc>();
    m->backend = s->backend;
    m->device = device;
    m->ptr = s->backend->ipc_open(device, handle, handle_size);
    *out = m.release();
  });
}

extern "C" void* pd_cuda_ipc_pointer(const pd_cuda_ipc* m) { return m ? m->ptr : nullptr; }

extern "C" pd_error* pd_cuda_ipc_read(const pd_cuda_ipc* m, uint64_t offset, void* dst, size_t n) {
  return guard([&] {
    PD_CHECK_ARG(m, "mapping is NULL");
    PD_CHECK_ARG(n == 0 || dst, "dst is NULL for ", n, " bytes");
    if (n) m->backend->device_copy(m->device, dst, static_cast<const char*>(m->ptr) + offset, n, false);
  });
}

extern "C" pd_error* pd_cuda_ipc_write(pd_cuda_ipc* m, uint64_t offset, const void* src, size_t n) {
  return guard([&] {
    PD_CHECK_ARG(m, "mapping is NULL");
    PD_CHECK_ARG(n == 0 || src, "src is NULL for ", n, " bytes");
    if (n) m->backend->device_copy(m->device, static_cast<char*>(m->ptr) + offset, src, n, true);
  });
}

extern "C" void pd_cuda_ipc_destroy(pd_cuda_ipc* m) {
  if (!m) return;
  pd_error* err = guard([&] { m->backend->ipc_close(m->device, m->ptr); });
  if (err) {
    pd::log_message(PD_LOG_WARN, (std::string("closing a CUDA IPC mapping: ") + err->message).c_str());
    pd_error_free(err);
  }
  delete m;
}

extern "C" pd_error* pd_context_run_device(pd_context* c, const pd_tensor* inputs, int32_t n_inputs,
                                           pd_tensor* outputs, int32_t n_outputs) {
  return guard([&] {
    check_run(c, inputs, n_inputs, outputs, n_outputs);
    for (int32_t i = 0; i < n_outputs; ++i)
      PD_CHECK_ARG(outputs[i].byte_size == 0 || outputs[i].data, "output '", c->engine->outputs[i].name,
                   "': data is NULL for ", outputs[i].byte_size, " bytes");
    try {
      c->impl->run_device(inputs, outputs, c->output_names);
    } catch (const Error& e) {
      if (e.code() != PD_ERR_UNSUPPORTED) throw;
      fail(PD_ERR_UNSUPPORTED, "backend '", c->engine->backend_name, "' cannot run on device pointers (", e.what(),
           "); CUDA shared memory needs an engine on the cuda backend");
    }
  });
}
