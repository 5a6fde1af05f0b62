// The TensorRT backend: a plan built by TensorRT (10 or newer) from the model's ONNX bytes with
// TensorRT's own ONNX parser, run on one NVIDIA GPU. Written against TensorRT 10's public
// headers (NvInfer.h, NvInferRuntime.h, NvOnnxParser.h); the host-only parts (profile,
// parameters, payload, pre-checks, parser errors) live in support.cpp and are tested without
// TensorRT. docs/tensorrt.md describes the whole backend.
//
//  - Build: builder + network + ONNX parser over BuildOptions::onnx; one optimization profile
//    over the batch dimension (support.h: batch_profile); precision fp32 on a strongly typed
//    network (the file's types, TF32 off), fp16/bf16 on a weakly typed one with
//    BuilderFlag::kFP16/kBF16 (docs/tensorrt.md says why); the memory pool limit and builder
//    optimization level of the parameters; the timing cache of BuildOptions::timing_cache when
//    it was measured by this TensorRT on this architecture; buildSerializedNetwork.
//  - The plan is the engine cache's payload (support.h: Payload), checked against this
//    TensorRT, compute capability and options before IRuntime::deserializeCudaEngine sees it.
//  - A context owns one non-blocking CUDA stream, one device allocation for TensorRT's
//    activations and, per batch size (bucket, ../gpu/bucket_cache.h), an IExecutionContext
//    whose shapes and tensor addresses are set once, device buffers and the staged run of
//    ../gpu/staged_run.h, shared with the cuda plugin: pinned host staging, an eager first run,
//    a CUDA graph of the whole run (copies in, enqueueV3, copies out) captured on the second
//    and replayed; a plan TensorRT cannot enqueue under capture runs eagerly, with one warning.
//    The buckets' execution contexts share the activation memory: they run one after the
//    other on the context's stream. The backend parameter tensorrt.graphs=false runs eagerly.
//  - TensorRT's logger writes into policyd's log; every CUDA and TensorRT failure is a
//    pd::Error naming the call and TensorRT's last error message. Nothing here exits.
//
// libnvinfer and libnvonnxparser are opened with dlopen when the plugin has found a device, so
// the plugin loads on any machine and says why TensorRT is unusable there.
#include <NvInfer.h>
#include <NvInferRuntime.h>
#include <NvInferVersion.h>
#include <NvOnnxParser.h>
#include <cuda_runtime.h>
#include <dlfcn.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "../core/backend.h"
#include "../gpu/bucket_cache.h"
#include "../gpu/check.h"
#include "../gpu/params.h"
#include "../gpu/probe.h"
#include "../gpu/resources.h"
#include "../gpu/staged_run.h"
#include "support.h"

#ifndef PD_VERSION
#define PD_VERSION "0.0.0"
#endif
#ifndef PD_TENSORRT_LIBDIR
#define PD_TENSORRT_LIBDIR ""
#endif

#define PD_TRT_AT_LEAST(major, minor) \
  (NV_TENSORRT_MAJOR > (major) || (NV_TENSORRT_MAJOR == (major) && NV_TENSORRT_MINOR >= (minor)))

namespace pd::trt {
namespace {

namespace nv = nvinfer1;
using gpu::dev_alloc;
using gpu::DevMem;

const HostServices* g_host = nullptr;

void log(pd_log_level level, const std::string& msg) {
  if (g_host && g_host->log) g_host->log(level, msg.c_str());
}

// ---- TensorRT's logger -----------------------------------------------------------------------

// The last error TensorRT logged on this thread: TensorRT reports failures as a null or false
// return plus a log line, so the pd::Error carries the line.
thread_local std::string t_last_error;

class Logger final : public nv::ILogger {
 public:
  void log(Severity severity, nv::AsciiChar const* msg) noexcept override {
    try {
      const int s = static_cast<int>(severity);
      if (s <= static_cast<int>(Severity::kERROR)) t_last_error = msg ? msg : "";
      pd_log_level level;
      if (log_level(s, &level)) pd::trt::log(level, std::string("tensorrt: ") + (msg ? msg : ""));
    } catch (...) {  // noexcept: a failed allocation drops the line
    }
  }
};
Logger g_logger;

std::string last_error() {
  std::string e = t_last_error;
  t_last_error.clear();
  return e.empty() ? "" : " (TensorRT: " + e + ")";
}

// ---- the libraries, opened at run time -------------------------------------------------------

struct Libs {
  decltype(&::createInferBuilder_INTERNAL) create_builder = nullptr;
  decltype(&::createInferRuntime_INTERNAL) create_runtime = nullptr;
  decltype(&::createNvOnnxParser_INTERNAL) create_parser = nullptr;
  decltype(&::getInferLibVersion) lib_version = nullptr;
};
Libs g_libs;
int32_t g_lib_version = 0;

// Returns "" or why TensorRT cannot be used.
std::string load_libs() {
  const std::string major = std::to_string(NV_TENSORRT_MAJOR);
  const std::string dir = PD_TENSORRT_LIBDIR;
  auto open = [&](const std::string& name, std::string* err) -> void* {
    // First where CMake found TensorRT, then wherever the dynamic linker finds it.
    return gpu::dlopen_first({dir.empty() ? std::string() : dir + "/" + name + "." + major, name + "." + major, name},
                             err);
  };
  std::string err;
  void* infer = open("libnvinfer.so", &err);
  if (!infer) return "TensorRT is not installed (" + err + ")";
  void* parser = open("libnvonnxparser.so", &err);
  if (!parser) return "TensorRT's ONNX parser is not installed (" + err + ")";
#define PD_SYM(lib, field, name)                                                          \
  g_libs.field = reinterpret_cast<decltype(g_libs.field)>(dlsym(lib, name));              \
  if (!g_libs.field) return std::string("the TensorRT library lacks ") + name;
  PD_SYM(infer, create_builder, "createInferBuilder_INTERNAL")
  PD_SYM(infer, create_runtime, "createInferRuntime_INTERNAL")
  PD_SYM(infer, lib_version, "getInferLibVersion")
  PD_SYM(parser, create_parser, "createNvOnnxParser_INTERNAL")
#undef PD_SYM
  g_lib_version = g_libs.lib_version();
  std::string why = check_version(g_lib_version);
  if (!why.empty()) return why;
  if (g_lib_version / 10000 != NV_TENSORRT_MAJOR)
    return str("TensorRT ", version_string(g_lib_version), " is installed, this plugin was built with TensorRT ",
               NV_TENSORRT_MAJOR, ".", NV_TENSORRT_MINOR);
  return "";
}

// ---- checks (PD_CUDA_CHECK: ../gpu/check.h; device memory: ../gpu/resources.h) ----------------

// A TensorRT call that returns false or null on failure.
#define PD_TRT_CHECK(call)                                                                                   \
  do {                                                                                                       \
    if (!(call))                                                                                             \
      ::pd::fail(PD_ERR_INTERNAL, "TensorRT call ", #call, " failed at ", __FILE__, ":", __LINE__, last_error()); \
  } while (0)

// TensorRT 10 objects are released with delete.
template <typename T>
using Ptr = std::unique_ptr<T>;

// ---- devices ---------------------------------------------------------------------------------

std::vector<DeviceInfo> g_devices;

DType dtype_of(nv::DataType t) {
  switch (t) {
    case nv::DataType::kFLOAT: return DType::F32;
    case nv::DataType::kHALF: return DType::F16;
    case nv::DataType::kBF16: return DType::BF16;
    case nv::DataType::kINT8: return DType::I8;
    case nv::DataType::kUINT8: return DType::U8;
    case nv::DataType::kINT32: return DType::I32;
    case nv::DataType::kINT64: return DType::I64;
    case nv::DataType::kBOOL: return DType::Bool;
    default: return DType::Undefined;
  }
}

nv::Dims dims_of(const std::vector<int64_t>& v) {
  if (v.size() > static_cast<size_t>(nv::Dims::MAX_DIMS))
    fail(PD_ERR_UNSUPPORTED, "rank ", v.size(), " is above TensorRT's ", nv::Dims::MAX_DIMS);
  nv::Dims d{};
  d.nbDims = static_cast<int32_t>(v.size());
  for (size_t i = 0; i < v.size(); ++i) d.d[i] = v[i];
  return d;
}

// The run switches of o.params (tensorrt.graphs) taken out; *build gets the build parameters.
// PD_ERR_INVALID_ARG for a key or value the backend does not know.
gpu::RunParams split_params(const BuildOptions& o, Params* build) {
  std::map<std::string, std::string> p = o.params;
  const gpu::RunParams r = gpu::take_run_params("tensorrt", &p, false);
  *build = parse_params(p);
  return r;
}

// ---- the engine ------------------------------------------------------------------------------

class TrtEngine final : public BackendEngine {
 public:
  TrtEngine(std::shared_ptr<const Graph> g, const BuildOptions& o) : graph_(std::move(g)), opts_(o) {
    if (o.device < 0 || o.device >= static_cast<int>(g_devices.size()))
      fail(PD_ERR_INVALID_ARG, o.name, ": CUDA device ", o.device, " does not exist (", g_devices.size(), " found)");
    device_ = g_devices[o.device];
    run_ = split_params(o, &params_);
    profile_ = batch_profile(*graph_, o.min_batch, o.opt_batch, o.max_batch);
    const std::string why = unsupported_reason(*graph_);
    if (!why.empty()) fail(PD_ERR_UNSUPPORTED, o.name, ": ", why);
    PD_CUDA_CHECK(cudaSetDevice(device_.ordinal));
    PD_CUDA_CHECK(cudaFree(nullptr));

    Payload want;
    want.tensorrt = version_string(g_lib_version);
    want.target = device_.target;
    want.options = options_key(params_, profile_);
    if (!o.cache.empty()) {
      Payload got = decode_payload(o.cache);
      check_payload(want, got);  // before TensorRT reads a byte of it
      payload_ = std::move(got);
      from_cache_ = true;
    } else {
      payload_ = std::move(want);
      build_plan();
    }
    runtime_.reset(static_cast<nv::IRuntime*>(g_libs.create_runtime(&g_logger, NV_TENSORRT_VERSION)));
    PD_TRT_CHECK(runtime_);
    engine_.reset(runtime_->deserializeCudaEngine(payload_.plan.data(), payload_.plan.size()));
    if (!engine_)
      fail(from_cache_ ? PD_ERR_INVALID_ARG : PD_ERR_INTERNAL, o.name, ": TensorRT could not deserialize the plan",
           from_cache_ ? " of the engine cache; rebuild engines" : "", last_error());
    check_io();
#if PD_TRT_AT_LEAST(10, 1)
    device_memory_ = static_cast<size_t>(std::max<int64_t>(engine_->getDeviceMemorySizeV2(), 0));
#else
    device_memory_ = engine_->getDeviceMemorySize();
#endif
  }

  ~TrtEngine() override {
    cudaSetDevice(device_.ordinal);
    engine_.reset();
    runtime_.reset();
  }

  std::unique_ptr<BackendContext> create_context() override;
  std::string serialize() const override { return encode_payload(payload_); }
  std::string timing_cache() const override {
    if (from_cache_ || payload_.timing_cache.empty()) return "";
    return encode_timing_cache(payload_.tensorrt, payload_.target, payload_.timing_cache);
  }

  const Graph& graph() const { return *graph_; }
  const BuildOptions& options() const { return opts_; }
  const BatchProfile& profile() const { return profile_; }
  const gpu::RunParams& run_params() const { return run_; }
  int ordinal() const { return device_.ordinal; }
  size_t device_memory() const { return device_memory_; }
  // Graph input i is an input of the plan (TensorRT drops inputs the network does not read).
  bool uses_input(size_t i) const { return used_[i]; }

  // An execution context without memory of its own (the caller's context provides it).
  Ptr<nv::IExecutionContext> execution_context() const {
    std::lock_guard<std::mutex> lock(mu_);
    Ptr<nv::IExecutionContext> c(
        engine_->createExecutionContext(nv::ExecutionContextAllocationStrategy::kUSER_MANAGED));
    if (!c) fail(PD_ERR_UNAVAILABLE, opts_.name, ": TensorRT could not create an execution context", last_error());
    return c;
  }

 private:
  void build_plan() {
    const BuildOptions& o = opts_;
    if (!o.onnx || o.onnx_size == 0) fail(PD_ERR_INTERNAL, o.name, ": the model's bytes did not reach the build");
    Ptr<nv::IBuilder> builder(static_cast<nv::IBuilder*>(g_libs.create_builder(&g_logger, NV_TENSORRT_VERSION)));
    PD_TRT_CHECK(builder);
    // fp32: a strongly typed network computes in the types of the ONNX file. fp16/bf16 need a
    // weakly typed network: strong typing cannot lower an FP32 file's precision without casts.
    const bool strong = params_.precision == "fp32";
#if NV_TENSORRT_MAJOR > 10
    if (!strong)
      fail(PD_ERR_UNSUPPORTED, o.name, ": precision=", params_.precision, " needs the weakly typed builder flags, "
           "which this TensorRT no longer has; convert the model to ", params_.precision, " and use precision=fp32");
#endif
    const nv::NetworkDefinitionCreationFlags flags =
        strong ? 1U << static_cast<uint32_t>(nv::NetworkDefinitionCreationFlag::kSTRONGLY_TYPED) : 0U;
    Ptr<nv::INetworkDefinition> network(builder->createNetworkV2(flags));
    PD_TRT_CHECK(network);
    Ptr<nvonnxparser::IParser> parser(
        static_cast<nvonnxparser::IParser*>(g_libs.create_parser(network.get(), &g_logger, NV_ONNX_PARSER_VERSION)));
    PD_TRT_CHECK(parser);
    if (!parser->parse(o.onnx, o.onnx_size)) {
      std::vector<ParserError> errs;
      for (int i = 0; i < parser->getNbErrors(); ++i) {
        const nvonnxparser::IParserError* e = parser->getError(i);
        if (!e) continue;
        ParserError pe;
        pe.code = static_cast<int>(e->code());
        pe.desc = e->desc() ? e->desc() : "";
        pe.node = e->node();
        pe.node_name = e->nodeName() ? e->nodeName() : "";
        pe.node_op = e->nodeOperator() ? e->nodeOperator() : "";
        errs.push_back(std::move(pe));
      }
      t_last_error.clear();
      throw parser_failure(o.name, errs);
    }

    Ptr<nv::IBuilderConfig> config(builder->createBuilderConfig());
    PD_TRT_CHECK(config);
    config->setMemoryPoolLimit(nv::MemoryPoolType::kWORKSPACE, static_cast<size_t>(params_.workspace_mib) << 20);
    config->setBuilderOptimizationLevel(params_.builder_optimization_level);
    if (strong) {
      config->clearFlag(nv::BuilderFlag::kTF32);  // float32 means float32, as on cuda and cpu
    } else {
#if NV_TENSORRT_MAJOR == 10
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"  // deprecated in 10.12, kept through 10.x
      config->setFlag(params_.precision == "fp16" ? nv::BuilderFlag::kFP16 : nv::BuilderFlag::kBF16);
#pragma GCC diagnostic pop
#endif
    }
    nv::IOptimizationProfile* prof = builder->createOptimizationProfile();  // owned by the builder
    PD_TRT_CHECK(prof);
    for (const InputProfile& ip : profile_.inputs) {
      const char* n = ip.name.c_str();
      if (!prof->setDimensions(n, nv::OptProfileSelector::kMIN, dims_of(ip.min)) ||
          !prof->setDimensions(n, nv::OptProfileSelector::kOPT, dims_of(ip.opt)) ||
          !prof->setDimensions(n, nv::OptProfileSelector::kMAX, dims_of(ip.max)))
        fail(PD_ERR_UNSUPPORTED, o.name, ": TensorRT refused the profile of input '", ip.name, "'", last_error());
    }
    if (config->addOptimizationProfile(prof) < 0)
      fail(PD_ERR_UNSUPPORTED, o.name, ": TensorRT refused the optimization profile", last_error());

    // The timing cache: the caller's when this TensorRT measured it on this architecture.
    std::string why;
    const std::string raw = decode_timing_cache(o.timing_cache, payload_.tensorrt, payload_.target, &why);
    if (!why.empty()) log(PD_LOG_WARN, str(o.name, ": timing cache ignored: ", why));
    Ptr<nv::ITimingCache> cache(config->createTimingCache(raw.data(), raw.size()));
    if (cache && !config->setTimingCache(*cache, false)) {
      log(PD_LOG_WARN, str(o.name, ": TensorRT refused the timing cache", last_error(), "; building without it"));
      cache.reset(config->createTimingCache(nullptr, 0));
      if (cache && !config->setTimingCache(*cache, false)) cache.reset();
    }
    if (!cache) log(PD_LOG_WARN, str(o.name, ": building without a timing cache", last_error()));

    Ptr<nv::IHostMemory> plan(builder->buildSerializedNetwork(*network, *config));
    if (!plan || plan->size() == 0)
      fail(PD_ERR_UNSUPPORTED, o.name, ": TensorRT could not build a plan (precision ", params_.precision, ")",
           last_error());
    payload_.plan.assign(static_cast<const char*>(plan->data()), plan->size());
    if (const nv::ITimingCache* used = config->getTimingCache()) {
      Ptr<nv::IHostMemory> bytes(used->serialize());
      if (bytes) payload_.timing_cache.assign(static_cast<const char*>(bytes->data()), bytes->size());
    }
  }

  // The plan's inputs and outputs are the graph's, with the graph's data types.
  void check_io() {
    const Graph& g = *graph_;
    for (const auto& in : g.inputs) {
      const nv::TensorIOMode mode = engine_->getTensorIOMode(in.name.c_str());
      used_.push_back(mode == nv::TensorIOMode::kINPUT);
      if (mode == nv::TensorIOMode::kNONE) {
        log(PD_LOG_DEBUG, str(opts_.name, ": input '", in.name, "' is not read by the TensorRT plan"));
        continue;
      }
      const DType t = dtype_of(engine_->getTensorDataType(in.name.c_str()));
      if (mode != nv::TensorIOMode::kINPUT || t != in.dtype)
        fail(PD_ERR_UNSUPPORTED, opts_.name, ": the TensorRT plan takes input '", in.name, "' as ", dtype_name(t),
             ", the model declares ", dtype_name(in.dtype));
    }
    for (const auto& out : g.outputs) {
      if (engine_->getTensorIOMode(out.name.c_str()) != nv::TensorIOMode::kOUTPUT)
        fail(PD_ERR_UNSUPPORTED, opts_.name, ": the TensorRT plan has no output '", out.name, "'");
      const DType t = dtype_of(engine_->getTensorDataType(out.name.c_str()));
      if (t != out.dtype)
        fail(PD_ERR_UNSUPPORTED, opts_.name, ": the TensorRT plan gives output '", out.name, "' as ", dtype_name(t),
             ", the model declares ", dtype_name(out.dtype));
    }
  }

  std::shared_ptr<const Graph> graph_;
  BuildOptions opts_;
  DeviceInfo device_;
  Params params_;
  gpu::RunParams run_;
  BatchProfile profile_;
  Payload payload_;
  bool from_cache_ = false;
  std::vector<bool> used_;
  size_t device_memory_ = 0;
  mutable std::mutex mu_;
  // Declared in this order so the engine goes before the runtime that made it.
  Ptr<nv::IRuntime> runtime_;
  Ptr<nv::ICudaEngine> engine_;
};

// ---- one batch size --------------------------------------------------------------------------

class Bucket {
 public:
  Bucket(const TrtEngine& e, int64_t batch, const pd_tensor* inputs, void* activations, size_t activation_bytes)
      : e_(e),
        batch_(batch),
        ctx_(e.execution_context()),
        // The first run is eager: TensorRT applies the shapes set below in its first enqueueV3,
        // which must come before a capture.
        run_(str(e.options().name, ": batch ", batch), &log, [this](cudaStream_t s) {
          if (!ctx_->enqueueV3(s))
            fail(PD_ERR_INTERNAL, e_.options().name, ": TensorRT enqueueV3 failed at batch ", batch_, last_error());
        }) {
#if PD_TRT_AT_LEAST(10, 1)
    ctx_->setDeviceMemoryV2(activations, static_cast<int64_t>(activation_bytes));
#else
    (void)activation_bytes;  // TensorRT 10.0 takes the size from the engine
    ctx_->setDeviceMemory(activations);
#endif
    const Graph& g = e.graph();
    const std::string& model = e.options().name;
    for (size_t i = 0; i < g.inputs.size(); ++i) {
      const std::string& name = g.inputs[i].name;
      if (!e.uses_input(i)) {
        run_.add_input(gpu::stage(nullptr, 0, false));
        continue;
      }
      const size_t bytes = inputs[i].byte_size;
      dev_.push_back(dev_alloc(bytes));
      bytes_ += bytes;
      const std::vector<int64_t> d(inputs[i].dims, inputs[i].dims + inputs[i].rank);
      if (!ctx_->setInputShape(name.c_str(), dims_of(d)))
        fail(PD_ERR_INVALID_ARG, model, ": TensorRT refused the shape of input '", name, "'", last_error());
      PD_TRT_CHECK(ctx_->setTensorAddress(name.c_str(), dev_.back().get()));
      run_.add_input(gpu::stage(dev_.back().get(), bytes, false));
    }
    for (const auto& o : g.outputs) {
      const nv::Dims d = ctx_->getTensorShape(o.name.c_str());
      if (d.nbDims < 0) fail(PD_ERR_INTERNAL, model, ": TensorRT has no shape for output '", o.name, "'", last_error());
      Output out;
      out.dtype = o.dtype;
      int64_t n = 1;
      for (int32_t k = 0; k < d.nbDims; ++k) {
        if (d.d[k] < 0)
          fail(PD_ERR_UNSUPPORTED, model, ": output '", o.name, "' has a data-dependent shape in the TensorRT plan");
        out.shape.push_back(d.d[k]);
        n *= d.d[k];
      }
      if (out.shape.size() > PD_MAX_RANK) fail(PD_ERR_UNSUPPORTED, model, ": output '", o.name, "' has rank ", d.nbDims);
      out.bytes = static_cast<size_t>(n) * dtype_size(o.dtype);
      dev_.push_back(dev_alloc(out.bytes));
      bytes_ += out.bytes;
      PD_TRT_CHECK(ctx_->setTensorAddress(o.name.c_str(), dev_.back().get()));
      run_.add_output(gpu::stage(dev_.back().get(), out.bytes, false));
      out_.push_back(std::move(out));
    }
    host_in_.resize(g.inputs.size());
  }

  int64_t batch() const { return batch_; }
  size_t bytes() const { return bytes_; }

  void run(cudaStream_t s, bool profile, const gpu::RunEvents& ev, const pd_tensor* inputs, pd_tensor* outputs,
           double* dev_ms) {
    for (size_t i = 0; i < host_in_.size(); ++i) host_in_[i] = inputs[i].data;
    run_.run(s, e_.run_params().graphs, profile, ev, host_in_.data(), dev_ms);
    for (size_t i = 0; i < out_.size(); ++i) {
      const Output& st = out_[i];
      pd_tensor& o = outputs[i];
      o.dtype = static_cast<int32_t>(st.dtype);
      o.rank = static_cast<int32_t>(st.shape.size());
      for (size_t d = 0; d < st.shape.size(); ++d) o.dims[d] = st.shape[d];
      o.byte_size = st.bytes;
      o.data = run_.output(i);
    }
  }

 private:
  struct Output {
    DType dtype = DType::Undefined;
    Shape shape;
    size_t bytes = 0;
  };

  const TrtEngine& e_;
  int64_t batch_;
  Ptr<nv::IExecutionContext> ctx_;
  std::vector<DevMem> dev_;  // the inputs' and outputs' device buffers
  gpu::StagedRun run_;
  std::vector<Output> out_;
  std::vector<const void*> host_in_;
  size_t bytes_ = 0;
};

// ---- the context -----------------------------------------------------------------------------

class TrtContext final : public BackendContext {
 public:
  explicit TrtContext(const TrtEngine& e)
      : e_(on_device(e)),
        stream_(gpu::make_stream()),
        ev0_(gpu::make_event()),
        ev1_(gpu::make_event()),
        activations_(dev_alloc(e_.device_memory())),
        buckets_(e_.device_memory()) {}
  ~TrtContext() override {
    cudaSetDevice(e_.ordinal());
    cudaStreamSynchronize(stream_.get());
    buckets_.clear();
  }

  // The backend refuses random ops (support.cpp), so seeds change nothing.
  void set_seed(uint64_t) override {}
  void set_row_seeds(const uint64_t*, size_t) override {}

  ContextMemory memory() const override {
    ContextMemory m;
    m.arena_bytes = buckets_.bytes();
    m.buckets = buckets_.count();
    return m;
  }

  double last_device_ms() const override { return e_.options().profile ? last_ms_ : -1; }

  void run(const pd_tensor* inputs, pd_tensor* outputs) override {
    PD_CUDA_CHECK(cudaSetDevice(e_.ordinal()));
    const int64_t batch = run_batch(e_.profile(), inputs);  // INVALID_ARG outside [min, max]
    Bucket* b = buckets_.find_or_make([&](const Bucket& k) { return k.batch() == batch; }, [&] {
      return std::make_unique<Bucket>(e_, batch, inputs, activations_.get(), e_.device_memory());
    });
    b->run(stream_.get(), e_.options().profile, gpu::RunEvents{ev0_.get(), ev1_.get()}, inputs, outputs, &last_ms_);
  }

 private:
  static const TrtEngine& on_device(const TrtEngine& e) {
    PD_CUDA_CHECK(cudaSetDevice(e.ordinal()));
    PD_CUDA_CHECK(cudaFree(nullptr));
    return e;
  }

  // Declared in the order they are made; released in reverse (buckets first, stream last).
  const TrtEngine& e_;
  gpu::Stream stream_;
  gpu::Event ev0_, ev1_;
  DevMem activations_;
  gpu::BucketCache<Bucket> buckets_;
  double last_ms_ = -1;
};

std::unique_ptr<BackendContext> TrtEngine::create_context() { return std::make_unique<TrtContext>(*this); }

// ---- the backend -----------------------------------------------------------------------------

class TrtBackend final : public Backend {
 public:
  std::string name() const override { return "tensorrt"; }
  std::string version() const override {
    int rt = 0;
    cudaRuntimeGetVersion(&rt);
    // Path-safe (engines/tensorrt-<version>/<sm_XX>/): the plan depends on TensorRT's version.
    return str(PD_VERSION, "-trt", version_string(g_lib_version), "-cudart", rt);
  }
  std::unique_ptr<BackendEngine> build(std::shared_ptr<const Graph> g, const BuildOptions& o) override {
    return std::make_unique<TrtEngine>(std::move(g), o);
  }
  std::vector<DeviceInfo> devices() const override { return g_devices; }
  // Called before build, without the graph: the bounds as asked for (max 0 resolved as
  // batch_profile does). Throws PD_ERR_INVALID_ARG naming a parameter it does not know.
  std::string options_key(const BuildOptions& o) const override {
    BatchProfile b;
    b.min_batch = o.min_batch;
    b.opt_batch = o.opt_batch;
    b.max_batch = o.max_batch ? o.max_batch : std::max(o.opt_batch, kDefaultMaxBatch);
    Params build;
    split_params(o, &build);
    return pd::trt::options_key(build, b);
  }
};

// Returns "" when a CUDA device and TensorRT can be used, else why not.
std::string probe() {
  int count = 0;
  std::string why = gpu::probe_driver(&count);
  if (!why.empty()) return why;
  why = load_libs();
  if (!why.empty()) return why;
  return gpu::list_devices(count, &g_devices);
}

}  // namespace
}  // namespace pd::trt

extern "C" __attribute__((visibility("default"))) int pd_backend_entry(const pd::HostServices* host,
                                                                      pd::Backend** out, char* err,
                                                                      size_t err_len) {
  return pd::gpu::backend_entry<pd::trt::TrtBackend>("tensorrt", host, &pd::trt::g_host, &pd::trt::probe, [] {
    pd::trt::log(PD_LOG_INFO, pd::str("tensorrt ", pd::trt::version_string(pd::trt::g_lib_version), " on ",
                                      pd::trt::g_devices.size(), " CUDA device(s)"));
  }, out, err, err_len);
}
