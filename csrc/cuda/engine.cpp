#include "engine.h"

#include <algorithm>
#include <cstdio>
#include <map>
#include <mutex>

#include "../core/engine_cache.h"
#include "../core/program.h"
#include "context.h"
#include "kernels.h"

namespace pd::cuda {

std::vector<DeviceInfo> g_devices;

std::string nvrtc_version() {
  int major = 0, minor = 0;
  if (nvrtcVersion(&major, &minor) != NVRTC_SUCCESS) return "unknown";
  return std::to_string(major) + "." + std::to_string(minor);
}

gpu::RunParams parse_run_params(const BuildOptions& o) {
  std::map<std::string, std::string> p = o.params;
  const gpu::RunParams r = gpu::take_run_params("cuda", &p, true);
  if (!p.empty())
    fail(PD_ERR_INVALID_ARG, "backend 'cuda' has no build parameter '", p.begin()->first, "' (known: graphs, mapped_io)");
  return r;
}

namespace {

// Probe shapes of the inputs: free dimensions 1.
std::vector<Shape> probe_shapes(const Graph& g) {
  std::vector<Shape> s;
  for (const auto& in : g.inputs) {
    Shape d = in.dims;
    for (auto& x : d)
      if (x < 0) x = 1;
    s.push_back(d);
  }
  return s;
}

}  // namespace

CudaEngine::CudaEngine(std::shared_ptr<const Graph> g, const BuildOptions& o)
    : graph_(std::move(g)), opts_(o), run_(parse_run_params(o)) {
  if (o.device < 0 || o.device >= static_cast<int>(g_devices.size()))
    fail(PD_ERR_INVALID_ARG, o.name, ": CUDA device ", o.device, " does not exist (", g_devices.size(),
         " found)");
  device_ = g_devices[o.device];
  bool value_inputs = false;
  for (const auto& in : graph_->inputs) value_inputs = value_inputs || in.value_input;
  // With shape-tensor inputs the shapes depend on their values: check op names now, types and
  // attributes per bucket.
  std::string why = value_inputs ? unsupported_op(*graph_)
                                 : unsupported_reason(*graph_, analyze(*graph_, probe_shapes(*graph_)));
  if (!why.empty()) fail(PD_ERR_UNSUPPORTED, o.name, ": ", why);
  PD_CUDA_CHECK(cudaSetDevice(device_.ordinal));
  // Make the device's primary context current on this thread (before CUDA 12 cudaSetDevice
  // alone does not): the driver-API module calls below need it.
  PD_CUDA_CHECK(cudaFree(nullptr));

  Payload want;
  want.arch = device_.target;
  want.nvrtc = nvrtc_version();
  want.source = fnv1a64_tag(kernel_source().data(), kernel_source().size());
  if (!o.cache.empty()) {
    Payload got = decode_payload(o.cache);
    check_payload(want, got);
    code_ = std::move(got);
  } else {
    code_ = compiled(want);
  }
  CUmodule module = nullptr;
  PD_CU_CHECK(g_drv.ModuleLoadData(&module, code_.code.data()));
  module_.reset(module);
  for (const auto& name : kernel_names()) {
    CUfunction f = nullptr;
    PD_CU_CHECK(g_drv.ModuleGetFunction(&f, module_.get(), name.c_str()));
    fns_[name] = f;
  }
  upload_constants();
}

CudaEngine::~CudaEngine() {
  cudaSetDevice(device_.ordinal);
  cudaFree(nullptr);  // the primary context current for cuModuleUnload
  weights_.reset();
  module_.reset();
}

Payload CudaEngine::compiled(const Payload& want) {
  static std::mutex mu;
  static std::map<std::string, Payload> by_arch;
  std::lock_guard<std::mutex> lock(mu);
  auto it = by_arch.find(want.arch);
  if (it == by_arch.end()) it = by_arch.emplace(want.arch, compile(want)).first;
  return it->second;
}

Payload CudaEngine::compile(Payload p) {
  int cc = 0;
  std::sscanf(p.arch.c_str(), "sm_%d", &cc);
  int n = 0;
  PD_NVRTC_CHECK(nvrtcGetNumSupportedArchs(&n));
  std::vector<int> archs(n);
  if (n > 0) PD_NVRTC_CHECK(nvrtcGetSupportedArchs(archs.data()));
  const bool known = std::find(archs.begin(), archs.end(), cc) != archs.end();
  const int newest = archs.empty() ? cc : *std::max_element(archs.begin(), archs.end());
  const std::string opt = known ? "--gpu-architecture=sm_" + std::to_string(cc)
                                : "--gpu-architecture=compute_" + std::to_string(std::min(cc, newest));
  nvrtcProgram prog = nullptr;
  PD_NVRTC_CHECK(nvrtcCreateProgram(&prog, kernel_source().c_str(), "policyd_kernels.cu", 0, nullptr, nullptr));
  struct Destroy {
    nvrtcProgram* p;
    ~Destroy() { nvrtcDestroyProgram(p); }
  } destroy{&prog};
  // NVRTC's default dialect (C++17 from CUDA 11 on); the source is plain C++11.
  const char* opts[] = {opt.c_str()};
  nvrtcResult r = nvrtcCompileProgram(prog, 1, opts);
  if (r != NVRTC_SUCCESS) {
    size_t len = 0;
    nvrtcGetProgramLogSize(prog, &len);
    std::string logtxt(len, '\0');
    if (len) nvrtcGetProgramLog(prog, &logtxt[0]);
    fail(PD_ERR_INTERNAL, "NVRTC could not compile the CUDA kernels for ", p.arch, " (", opt, "): ",
         nvrtcGetErrorString(r), "\n", logtxt);
  }
  size_t size = 0;
  if (known) {
    PD_NVRTC_CHECK(nvrtcGetCUBINSize(prog, &size));
    p.code.resize(size);
    PD_NVRTC_CHECK(nvrtcGetCUBIN(prog, &p.code[0]));
    p.kind = "cubin";
  } else {
    PD_NVRTC_CHECK(nvrtcGetPTXSize(prog, &size));
    p.code.resize(size);
    PD_NVRTC_CHECK(nvrtcGetPTX(prog, &p.code[0]));
    p.kind = "ptx";
  }
  return p;
}

void CudaEngine::upload_constants() {
  std::vector<const Tensor*> ts;
  size_t total = 0;
  for (const auto& [name, t] : graph_->constants)
    if (t && !weight_ptr_.count(t.get())) {
      weight_ptr_[t.get()] = nullptr;
      ts.push_back(t.get());
      total += align_up(t->nbytes());
    }
  weights_ = gpu::dev_alloc(total);
  char* base = static_cast<char*>(weights_.get());
  size_t off = 0;
  for (const Tensor* t : ts) {
    if (t->nbytes()) PD_CUDA_CHECK(cudaMemcpy(base + off, t->data(), t->nbytes(), cudaMemcpyHostToDevice));
    weight_ptr_[t] = base + off;
    off += align_up(t->nbytes());
  }
  // cudaMemcpy from pageable memory may return before its DMA lands; the contexts' streams
  // do not wait for the legacy stream, so wait here, once per engine.
  PD_CUDA_CHECK(cudaDeviceSynchronize());
}

std::unique_ptr<BackendContext> CudaEngine::create_context() { return std::make_unique<CudaContext>(*this); }

}  // namespace pd::cuda
