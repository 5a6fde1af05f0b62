// The CUDA backend: the graph IR of the core (analyzed per shape bucket exactly like the CPU
// backend's programs) run on one NVIDIA GPU.
//
//  - GEMMs (Gemm, MatMul, the fused ops, Conv after im2col, LSTM's input and recurrent
//    products) go through cuBLASLt in full float32 (CUBLAS_COMPUTE_32F, no TF32), with the bias
//    and Relu in cuBLASLt's epilogue where it has one and a bias/activation kernel otherwise.
//  - Every other op is a kernel of kernels.cpp, compiled by NVRTC when the engine is built, for
//    the exact architecture of its device (PTX for the newest architecture NVRTC knows when the
//    device is newer still), loaded through the driver API.
//  - A context owns one non-blocking stream, a cuBLASLt handle and workspace, and per shape
//    bucket: a device arena (inputs and intermediates), pinned host staging buffers for the
//    inputs and outputs, the bucket's kernels with their arguments bound, and a CUDA graph of
//    the whole run (host->device copies, kernels, device->host copies) captured on the
//    bucket's second run after an eager warm-up run and replayed from then on.
//  - Outputs are views of the context's pinned output buffers, valid until its next run.
//  - Every CUDA, cuBLASLt, NVRTC and driver call is checked; a failure is a pd::Error naming
//    the call, file:line and the library's message. Nothing here exits.
//
// Threading follows backend.h: the engine (module, device copies of the weights) is immutable
// after build and shared by its contexts; a context is used by one thread at a time; every
// entry point sets the engine's device on the calling thread first.
#ifdef PD_FAKE_CUDA
#include "fake_cuda.h"  // the test build: a CPU emulation of the calls below (csrc/cuda/fake)
#else
#include <cublasLt.h>
#include <cuda.h>
#include <cuda_runtime.h>
#include <nvrtc.h>
#endif
#include <dlfcn.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <limits>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "../core/activation.h"
#include "../core/backend.h"
#include "../core/engine_cache.h"
#include "../core/op.h"
#include "../core/program.h"
#include "cuda_common.h"
#include "kernels.h"
#include "support.h"

#ifndef PD_VERSION
#define PD_VERSION "0.0.0"
#endif

namespace pd::cuda {
namespace {

using gpu::arch_of;
using gpu::dev_alloc;
using gpu::DevMem;
using gpu::pinned_alloc;
using gpu::PinnedMem;

const HostServices* g_host = nullptr;

// ---- cuBLASLt and NVRTC, opened only where there is a device ---------------------------------
// Loading libcublasLt costs ~75 MB of resident memory and libnvrtc ~12 MB: linked, every
// process that loads the plugin would pay that, GPU or not. So the plugin links only cudart
// and opens these two when it has found a device.
#define PD_LT_FUNCS(X)                                                                              \
  X(cublasLtGetStatusString) X(cublasLtGetVersion) X(cublasLtCreate) X(cublasLtDestroy)            \
  X(cublasLtMatmulDescCreate) X(cublasLtMatmulDescDestroy) X(cublasLtMatmulDescSetAttribute)       \
  X(cublasLtMatrixLayoutCreate) X(cublasLtMatrixLayoutDestroy) X(cublasLtMatrixLayoutSetAttribute) \
  X(cublasLtMatmulPreferenceCreate) X(cublasLtMatmulPreferenceDestroy)                             \
  X(cublasLtMatmulPreferenceSetAttribute) X(cublasLtMatmulAlgoGetHeuristic) X(cublasLtMatmul)
#define PD_NVRTC_FUNCS(X)                                                                       \
  X(nvrtcGetErrorString) X(nvrtcVersion) X(nvrtcGetNumSupportedArchs) X(nvrtcGetSupportedArchs) \
  X(nvrtcCreateProgram) X(nvrtcDestroyProgram) X(nvrtcCompileProgram) X(nvrtcGetProgramLogSize) \
  X(nvrtcGetProgramLog) X(nvrtcGetCUBINSize) X(nvrtcGetCUBIN) X(nvrtcGetPTXSize) X(nvrtcGetPTX)

struct Libs {
#define PD_PTR(f) decltype(&::f) f = nullptr;
  PD_LT_FUNCS(PD_PTR) PD_NVRTC_FUNCS(PD_PTR)
#undef PD_PTR
};
Libs g_libs;

// Every call below goes through the table (a function-like macro per function; taking an
// address, as the table's declaration does, is not a call and is left alone).
#define cublasLtGetStatusString(...) g_libs.cublasLtGetStatusString(__VA_ARGS__)
#define cublasLtGetVersion(...) g_libs.cublasLtGetVersion(__VA_ARGS__)
#define cublasLtCreate(...) g_libs.cublasLtCreate(__VA_ARGS__)
#define cublasLtDestroy(...) g_libs.cublasLtDestroy(__VA_ARGS__)
#define cublasLtMatmulDescCreate(...) g_libs.cublasLtMatmulDescCreate(__VA_ARGS__)
#define cublasLtMatmulDescDestroy(...) g_libs.cublasLtMatmulDescDestroy(__VA_ARGS__)
#define cublasLtMatmulDescSetAttribute(...) g_libs.cublasLtMatmulDescSetAttribute(__VA_ARGS__)
#define cublasLtMatrixLayoutCreate(...) g_libs.cublasLtMatrixLayoutCreate(__VA_ARGS__)
#define cublasLtMatrixLayoutDestroy(...) g_libs.cublasLtMatrixLayoutDestroy(__VA_ARGS__)
#define cublasLtMatrixLayoutSetAttribute(...) g_libs.cublasLtMatrixLayoutSetAttribute(__VA_ARGS__)
#define cublasLtMatmulPreferenceCreate(...) g_libs.cublasLtMatmulPreferenceCreate(__VA_ARGS__)
#define cublasLtMatmulPreferenceDestroy(...) g_libs.cublasLtMatmulPreferenceDestroy(__VA_ARGS__)
#define cublasLtMatmulPreferenceSetAttribute(...) g_libs.cublasLtMatmulPreferenceSetAttribute(__VA_ARGS__)
#define cublasLtMatmulAlgoGetHeuristic(...) g_libs.cublasLtMatmulAlgoGetHeuristic(__VA_ARGS__)
#define cublasLtMatmul(...) g_libs.cublasLtMatmul(__VA_ARGS__)
#define nvrtcGetErrorString(...) g_libs.nvrtcGetErrorString(__VA_ARGS__)
#define nvrtcVersion(...) g_libs.nvrtcVersion(__VA_ARGS__)
#define nvrtcGetNumSupportedArchs(...) g_libs.nvrtcGetNumSupportedArchs(__VA_ARGS__)
#define nvrtcGetSupportedArchs(...) g_libs.nvrtcGetSupportedArchs(__VA_ARGS__)
#define nvrtcCreateProgram(...) g_libs.nvrtcCreateProgram(__VA_ARGS__)
#define nvrtcDestroyProgram(...) g_libs.nvrtcDestroyProgram(__VA_ARGS__)
#define nvrtcCompileProgram(...) g_libs.nvrtcCompileProgram(__VA_ARGS__)
#define nvrtcGetProgramLogSize(...) g_libs.nvrtcGetProgramLogSize(__VA_ARGS__)
#define nvrtcGetProgramLog(...) g_libs.nvrtcGetProgramLog(__VA_ARGS__)
#define nvrtcGetCUBINSize(...) g_libs.nvrtcGetCUBINSize(__VA_ARGS__)
#define nvrtcGetCUBIN(...) g_libs.nvrtcGetCUBIN(__VA_ARGS__)
#define nvrtcGetPTXSize(...) g_libs.nvrtcGetPTXSize(__VA_ARGS__)
#define nvrtcGetPTX(...) g_libs.nvrtcGetPTX(__VA_ARGS__)

// Returns "" or why cuBLASLt or NVRTC cannot be used.
std::string load_libs() {
#ifdef PD_FAKE_CUDA
#define PD_SET(f) g_libs.f = &::f;
  PD_LT_FUNCS(PD_SET) PD_NVRTC_FUNCS(PD_SET)
#undef PD_SET
  return "";
#else
  // The libraries of the toolkit this plugin was compiled with (same major version).
  const std::string major = std::to_string(CUDART_VERSION / 1000);
  const auto open = gpu::dlopen_first;
  // First beside the libcudart this plugin loaded (a toolkit outside the linker's path, e.g.
  // /usr/local/cuda/lib64), then wherever the dynamic linker finds them.
  std::string dir;
  Dl_info info;
  if (dladdr(reinterpret_cast<void*>(&cudaGetDeviceCount), &info) && info.dli_fname) {
    dir = info.dli_fname;
    dir = dir.substr(0, dir.rfind('/') + 1);
  }
  std::string err;
  void* lt = open({dir + "libcublasLt.so." + major, "libcublasLt.so." + major, "libcublasLt.so"}, &err);
  if (!lt) return "cannot load cuBLASLt (" + err + ")";
  const std::string nvso = major == "11" ? "libnvrtc.so.11.2" : "libnvrtc.so." + major;
  void* nv = open({dir + nvso, nvso, "libnvrtc.so"}, &err);
  if (!nv) return "cannot load NVRTC (" + err + ")";
#define PD_SYM(lib, f)                                                  \
  g_libs.f = reinterpret_cast<decltype(g_libs.f)>(dlsym(lib, #f));      \
  if (!g_libs.f) return std::string(#lib " library lacks ") + #f;
#define PD_SYM_LT(f) PD_SYM(lt, f)
#define PD_SYM_NV(f) PD_SYM(nv, f)
  PD_LT_FUNCS(PD_SYM_LT) PD_NVRTC_FUNCS(PD_SYM_NV)
#undef PD_SYM_NV
#undef PD_SYM_LT
#undef PD_SYM
  return "";
#endif
}

void log(pd_log_level level, const std::string& msg) {
  if (g_host && g_host->log) g_host->log(level, msg.c_str());
}

// ---- checks (PD_CUDA_CHECK: cuda_common.h) ---------------------------------------------------

#define PD_CUBLAS_CHECK(call)                                                                 \
  do {                                                                                        \
    cublasStatus_t pd_s_ = (call);                                                            \
    if (pd_s_ != CUBLAS_STATUS_SUCCESS)                                                       \
      ::pd::fail(pd_s_ == CUBLAS_STATUS_ALLOC_FAILED ? PD_ERR_UNAVAILABLE : PD_ERR_INTERNAL,  \
                 "cuBLASLt call ", #call, " failed at ", __FILE__, ":", __LINE__, ": ",       \
                 cublasLtGetStatusString(pd_s_));                                             \
  } while (0)

#define PD_NVRTC_CHECK(call)                                                                  \
  do {                                                                                        \
    nvrtcResult pd_r_ = (call);                                                               \
    if (pd_r_ != NVRTC_SUCCESS)                                                               \
      ::pd::fail(PD_ERR_INTERNAL, "NVRTC call ", #call, " failed at ", __FILE__, ":", __LINE__, \
                 ": ", nvrtcGetErrorString(pd_r_));                                           \
  } while (0)

// ---- the driver API, reached through dlopen so that a machine without libcuda reports
// "no NVIDIA driver" instead of failing to load the plugin ------------------------------------

struct Driver {
  void* handle = nullptr;
  CUresult (*ModuleLoadData)(CUmodule*, const void*) = nullptr;
  CUresult (*ModuleUnload)(CUmodule) = nullptr;
  CUresult (*ModuleGetFunction)(CUfunction*, CUmodule, const char*) = nullptr;
  CUresult (*LaunchKernel)(CUfunction, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned,
                           CUstream, void**, void**) = nullptr;
  CUresult (*GetErrorString)(CUresult, const char**) = nullptr;
};
Driver g_drv;

[[noreturn]] void driver_fail(CUresult r, const char* call, const char* file, int line) {
  const char* msg = nullptr;
  if (g_drv.GetErrorString) g_drv.GetErrorString(r, &msg);
  fail(r == CUDA_ERROR_OUT_OF_MEMORY ? PD_ERR_UNAVAILABLE : PD_ERR_INTERNAL, "CUDA driver call ", call,
       " failed at ", file, ":", line, ": ", msg ? msg : "unknown error", " (", static_cast<int>(r), ")");
}
#define PD_CU_CHECK(call)                                                   \
  do {                                                                      \
    CUresult pd_r_ = (call);                                                \
    if (pd_r_ != CUDA_SUCCESS) driver_fail(pd_r_, #call, __FILE__, __LINE__); \
  } while (0)

// Returns "" or why the driver library cannot be used.
std::string load_driver() {
#ifdef PD_FAKE_CUDA
  g_drv.ModuleLoadData = &fake_cuModuleLoadData;
  g_drv.ModuleUnload = &fake_cuModuleUnload;
  g_drv.ModuleGetFunction = &fake_cuModuleGetFunction;
  g_drv.LaunchKernel = &fake_cuLaunchKernel;
  g_drv.GetErrorString = &fake_cuGetErrorString;
  return "";
#endif
  void* h = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
  if (!h) {
    const char* e = dlerror();
    return std::string("no NVIDIA driver (") + (e ? e : "libcuda.so.1 not found") + ")";
  }
  auto sym = [&](const char* name) { return dlsym(h, name); };
  g_drv.handle = h;
  g_drv.ModuleLoadData = reinterpret_cast<decltype(g_drv.ModuleLoadData)>(sym("cuModuleLoadData"));
  g_drv.ModuleUnload = reinterpret_cast<decltype(g_drv.ModuleUnload)>(sym("cuModuleUnload"));
  g_drv.ModuleGetFunction = reinterpret_cast<decltype(g_drv.ModuleGetFunction)>(sym("cuModuleGetFunction"));
  g_drv.LaunchKernel = reinterpret_cast<decltype(g_drv.LaunchKernel)>(sym("cuLaunchKernel"));
  g_drv.GetErrorString = reinterpret_cast<decltype(g_drv.GetErrorString)>(sym("cuGetErrorString"));
  if (!g_drv.ModuleLoadData || !g_drv.ModuleUnload || !g_drv.ModuleGetFunction || !g_drv.LaunchKernel ||
      !g_drv.GetErrorString)
    return "the NVIDIA driver library libcuda.so.1 lacks the module API";
  return "";
}

// ---- staging and the arena ------------------------------------------------------------------

// Staging of an input or output at or under this size is pinned host memory mapped into the
// device's address space, moved by a copy kernel inside the run's CUDA graph: a kernel node
// starts in about a microsecond, where a small copy-engine transfer costs several, which is
// most of a batch-1 run (docs/gpu.md, measured on an H100). Larger staging uses asynchronous
// DMA copies, which reach the link's bandwidth. POLICYD_CUDA_MAPPED_IO=0 turns mapping off.
constexpr size_t kMappedStagingMax = 64 << 10;

bool mapped_io_enabled() { return gpu::env_switch("POLICYD_CUDA_MAPPED_IO"); }

constexpr size_t kAlign = 256;
size_t align_up(size_t n) { return (n + kAlign - 1) / kAlign * kAlign; }

// ---- devices --------------------------------------------------------------------------------

std::vector<DeviceInfo> g_devices;

std::string nvrtc_version() {
  int major = 0, minor = 0;
  if (nvrtcVersion(&major, &minor) != NVRTC_SUCCESS) return "unknown";
  return std::to_string(major) + "." + std::to_string(minor);
}

// ---- kernel launches ------------------------------------------------------------------------

using Functions = std::unordered_map<std::string, CUfunction>;

template <typename... A>
void launch(CUfunction f, int64_t n, cudaStream_t s, A... args) {
  if (n <= 0) return;
  void* params[] = {static_cast<void*>(&args)...};
  const int64_t blocks = std::min<int64_t>((n + 255) / 256, 8192);
  PD_CU_CHECK(g_drv.LaunchKernel(f, static_cast<unsigned>(blocks), 1, 1, 256, 1, 1, 0,
                                 reinterpret_cast<CUstream>(s), params, nullptr));
}

// ---- cuBLASLt GEMMs -------------------------------------------------------------------------

// Row-major Y[m, n] (leading dimension ldc) = alpha * op(A)[m, k] * op(B)[k, n], in batches
// with element strides sa, sb, sc, and an optional bias [n] + Relu in the epilogue. cuBLASLt
// is column-major: it computes Y^T = op(B)^T op(A)^T, so its "A" is our B and vice versa.
class LtGemm {
 public:
  LtGemm(cublasLtHandle_t h, bool ta, bool tb, int64_t m, int64_t n, int64_t k, int64_t lda, int64_t ldb,
         int64_t ldc, float alpha, int64_t batch, int64_t sa, int64_t sb, int64_t sc, const float* bias,
         bool relu, size_t workspace)
      : alpha_(alpha) {
    PD_CUBLAS_CHECK(cublasLtMatmulDescCreate(&op_, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    cublasOperation_t lt_ta = tb ? CUBLAS_OP_T : CUBLAS_OP_N, lt_tb = ta ? CUBLAS_OP_T : CUBLAS_OP_N;
    PD_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(op_, CUBLASLT_MATMUL_DESC_TRANSA, &lt_ta, sizeof lt_ta));
    PD_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(op_, CUBLASLT_MATMUL_DESC_TRANSB, &lt_tb, sizeof lt_tb));
    cublasLtEpilogue_t epi = bias ? (relu ? CUBLASLT_EPILOGUE_RELU_BIAS : CUBLASLT_EPILOGUE_BIAS)
                                  : (relu ? CUBLASLT_EPILOGUE_RELU : CUBLASLT_EPILOGUE_DEFAULT);
    PD_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(op_, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof epi));
    if (bias)
      PD_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(op_, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof bias));
    PD_CUBLAS_CHECK(tb ? cublasLtMatrixLayoutCreate(&a_, CUDA_R_32F, k, n, ldb)
                       : cublasLtMatrixLayoutCreate(&a_, CUDA_R_32F, n, k, ldb));
    PD_CUBLAS_CHECK(ta ? cublasLtMatrixLayoutCreate(&b_, CUDA_R_32F, m, k, lda)
                       : cublasLtMatrixLayoutCreate(&b_, CUDA_R_32F, k, m, lda));
    PD_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&c_, CUDA_R_32F, n, m, ldc));
    if (batch > 1) {
      const int32_t count = static_cast<int32_t>(batch);
      const std::pair<cublasLtMatrixLayout_t, int64_t> layouts[] = {{a_, sb}, {b_, sa}, {c_, sc}};
      for (const auto& [l, stride] : layouts) {
        PD_CUBLAS_CHECK(cublasLtMatrixLayoutSetAttribute(l, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &count, sizeof count));
        PD_CUBLAS_CHECK(cublasLtMatrixLayoutSetAttribute(l, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, &stride,
                                                         sizeof stride));
      }
    }
    cublasLtMatmulPreference_t pref = nullptr;
    PD_CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref));
    uint64_t ws = workspace;
    cublasStatus_t st = cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof ws);
    cublasLtMatmulHeuristicResult_t res{};
    int found = 0;
    if (st == CUBLAS_STATUS_SUCCESS)
      st = cublasLtMatmulAlgoGetHeuristic(h, op_, a_, b_, c_, c_, pref, 1, &res, &found);
    cublasLtMatmulPreferenceDestroy(pref);
    PD_CUBLAS_CHECK(st);
    if (found == 0)
      fail(PD_ERR_UNSUPPORTED, "cuBLASLt has no algorithm for a ", m, "x", n, "x", k, " float32 GEMM");
    algo_ = res.algo;
  }
  ~LtGemm() {
    if (a_) cublasLtMatrixLayoutDestroy(a_);
    if (b_) cublasLtMatrixLayoutDestroy(b_);
    if (c_) cublasLtMatrixLayoutDestroy(c_);
    if (op_) cublasLtMatmulDescDestroy(op_);
  }
  LtGemm(const LtGemm&) = delete;
  LtGemm& operator=(const LtGemm&) = delete;

  void run(cublasLtHandle_t h, const float* A, const float* B, float* Y, void* ws, size_t ws_size,
           cudaStream_t s) const {
    const float beta = 0.f;
    PD_CUBLAS_CHECK(cublasLtMatmul(h, op_, &alpha_, B, a_, A, b_, &beta, Y, c_, Y, c_, &algo_, ws, ws_size, s));
  }

 private:
  float alpha_;
  cublasLtMatmulDesc_t op_ = nullptr;
  cublasLtMatrixLayout_t a_ = nullptr, b_ = nullptr, c_ = nullptr;
  cublasLtMatmulAlgo_t algo_{};
};

// cuBLASLt's workspace per context; NVIDIA recommends 32 MiB on Hopper.
constexpr size_t kWorkspace = 32u << 20;

// ---- the engine -----------------------------------------------------------------------------

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

class CudaEngine;

class CudaContext;

class CudaEngine final : public BackendEngine {
 public:
  CudaEngine(std::shared_ptr<const Graph> g, const BuildOptions& o) : graph_(std::move(g)), opts_(o) {
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
    PD_CU_CHECK(g_drv.ModuleLoadData(&module_, code_.code.data()));
    for (const auto& name : kernel_names()) {
      CUfunction f = nullptr;
      PD_CU_CHECK(g_drv.ModuleGetFunction(&f, module_, name.c_str()));
      fns_[name] = f;
    }
    upload_constants();
  }

  ~CudaEngine() override {
    cudaSetDevice(device_.ordinal);
    cudaFree(nullptr);  // the primary context current for cuModuleUnload
    weights_.reset();
    if (module_) g_drv.ModuleUnload(module_);
  }

  std::unique_ptr<BackendContext> create_context() override;

  std::string serialize() const override { return encode_payload(code_); }

  const Graph& graph() const { return *graph_; }
  const BuildOptions& options() const { return opts_; }
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
  static Payload compiled(const Payload& want) {
    static std::mutex mu;
    static std::map<std::string, Payload> by_arch;
    std::lock_guard<std::mutex> lock(mu);
    auto it = by_arch.find(want.arch);
    if (it == by_arch.end()) it = by_arch.emplace(want.arch, compile(want)).first;
    return it->second;
  }

  // NVRTC: SASS for the device's architecture when NVRTC knows it, else PTX for the newest
  // architecture it knows (the driver compiles that for the device at load).
  static Payload compile(Payload p) {
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

  // Every graph constant, once, in one device allocation: shared by all contexts.
  void upload_constants() {
    std::vector<const Tensor*> ts;
    size_t total = 0;
    for (const auto& [name, t] : graph_->constants)
      if (t && !weight_ptr_.count(t.get())) {
        weight_ptr_[t.get()] = nullptr;
        ts.push_back(t.get());
        total += align_up(t->nbytes());
      }
    weights_ = dev_alloc(total);
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

  std::shared_ptr<const Graph> graph_;
  BuildOptions opts_;
  DeviceInfo device_;
  Payload code_;
  CUmodule module_ = nullptr;
  Functions fns_;
  DevMem weights_;
  std::unordered_map<const Tensor*, void*> weight_ptr_;
};

// ---- one shape bucket -----------------------------------------------------------------------

using Step = std::function<void(cudaStream_t)>;

struct Value {
  DType dtype = DType::Undefined;
  Shape shape;
  void* dev = nullptr;
  size_t bytes() const { return static_cast<size_t>(numel(shape)) * dtype_size(dtype); }
};

Strided strided(const Shape& dims, const std::vector<int64_t>& s0, const std::vector<int64_t>& s1,
                const std::vector<int64_t>& s2 = {}) {
  if (dims.size() > static_cast<size_t>(kMaxRank))
    fail(PD_ERR_UNSUPPORTED, "rank ", dims.size(), " is above the CUDA kernels' ", kMaxRank);
  Strided p;
  p.rank = static_cast<int32_t>(dims.size());
  for (size_t d = 0; d < dims.size(); ++d) {
    p.dims[d] = dims[d];
    p.s0[d] = d < s0.size() ? s0[d] : 0;
    p.s1[d] = d < s1.size() ? s1[d] : 0;
    p.s2[d] = d < s2.size() ? s2[d] : 0;
  }
  if (dims.empty()) {  // a scalar: one element at offset 0
    p.rank = 1;
    p.dims[0] = 1;
  }
  return p;
}

class Bucket {
 public:
  Bucket(const CudaEngine& e, BucketKey key, cublasLtHandle_t lt, void* ws, cudaEvent_t ev0, cudaEvent_t ev1)
      : e_(e), key_(std::move(key)), lt_(lt), ws_(ws), ev0_(ev0), ev1_(ev1) {
    const Graph& g = e.graph();
    Analysis a = analyze(g, key_.shapes, key_.values);
    std::string why = unsupported_reason(g, a);
    if (!why.empty()) fail(PD_ERR_UNSUPPORTED, e.options().name, ": ", why);
    // Sizes first: inputs and the outputs of live, non-alias nodes live in the arena; folded
    // values that are not graph constants are uploaded to a per-bucket pool.
    std::vector<std::pair<std::string, size_t>> arena_values;
    for (size_t i = 0; i < g.inputs.size(); ++i)
      arena_values.emplace_back(g.inputs[i].name, bytes_of(a.values.at(g.inputs[i].name)));
    std::vector<const Node*> live;
    for (size_t i = 0; i < g.nodes.size(); ++i) {
      if (!a.live[i]) continue;
      const Node& n = g.nodes[i];
      live.push_back(&n);
      const OpSchema* s = ops().find(n.domain, n.op);
      PD_ASSERT(s);
      if (s->flags & kOpAlias) continue;
      for (const auto& o : n.outputs)
        if (!o.empty()) arena_values.emplace_back(o, bytes_of(a.values.at(o)));
    }
    size_t total = 0;
    std::unordered_map<std::string, size_t> offset;
    for (const auto& [name, b] : arena_values) {
      offset[name] = total;
      total += align_up(b);
    }
    arena_bytes_ = total;
    arena_ = dev_alloc(total);
    char* base = static_cast<char*>(arena_.get());
    for (const auto& [name, off] : offset) {
      const TensorInfo& t = a.values.at(name);
      values_[name] = Value{t.dtype, t.shape, base + off};
    }
    // Constants read by live nodes or outputs.
    auto ensure = [&](const std::string& name) -> Value& {
      auto it = values_.find(name);
      if (it != values_.end()) return it->second;
      const TensorInfo& t = a.values.at(name);
      PD_ASSERT(t.value);
      Value v{t.dtype, t.shape, const_cast<void*>(e_.weight(t.value.get()))};
      if (!v.dev) {
        consts_.push_back(dev_alloc(t.value->nbytes()));
        extra_bytes_ += t.value->nbytes();
        v.dev = consts_.back().get();
        if (t.value->nbytes())
          PD_CUDA_CHECK(cudaMemcpy(v.dev, t.value->data(), t.value->nbytes(), cudaMemcpyHostToDevice));
      }
      return values_[name] = v;
    };
    for (const Node* n : live) {
      const OpSchema* s = ops().find(n->domain, n->op);
      for (const auto& in : n->inputs)
        if (!in.empty() && !values_.count(in)) ensure(in);
      if (s->flags & kOpAlias) {  // the output is the input's bytes
        const TensorInfo& t = a.values.at(n->outputs[0]);
        values_[n->outputs[0]] = Value{t.dtype, t.shape, values_.at(n->inputs[0]).dev};
        continue;
      }
      build_step(*n, a);
    }
    // Staging buffers.
    for (const auto& in : g.inputs) {
      const Value& v = values_.at(in.name);
      in_.push_back(staging(v));
    }
    for (const auto& o : g.outputs) {
      const Value& v = ensure(o.name);
      out_.push_back(staging(v));
      out_values_.push_back(v);
    }
    // Per-bucket constants were uploaded with cudaMemcpy from pageable memory: let the DMA land
    // before the context's (non-blocking) stream reads them.
    if (!consts_.empty()) PD_CUDA_CHECK(cudaDeviceSynchronize());
  }

  ~Bucket() {
    if (exec_) cudaGraphExecDestroy(exec_);
  }

  const BucketKey& key() const { return key_; }
  // Device memory of the bucket: the arena, per-step scratch (im2col, LSTM gates) and folded
  // constants of its own.
  size_t arena_bytes() const { return arena_bytes_ + extra_bytes_; }

  void run(cudaStream_t s, bool graphs, bool profile, const pd_tensor* inputs, pd_tensor* outputs, double* dev_ms) {
    for (size_t i = 0; i < in_.size(); ++i)
      if (in_[i].bytes) std::memcpy(in_[i].host.get(), inputs[i].data, in_[i].bytes);
    if (!warm_ || !graphs) {
      enqueue(s, profile, false);
      warm_ = true;
    } else {
      if (!exec_) capture(s, profile);
      PD_CUDA_CHECK(cudaGraphLaunch(exec_, s));
    }
    PD_CUDA_CHECK(cudaStreamSynchronize(s));
    if (needs_flag_ && *static_cast<int*>(flag_host_.get()) != 0)
      fail(PD_ERR_INVALID_ARG, "a Gather index is out of range");
    if (profile) {
      float ms = 0;
      PD_CUDA_CHECK(cudaEventElapsedTime(&ms, ev0_, ev1_));
      *dev_ms = ms;
    }
    for (size_t i = 0; i < out_.size(); ++i) {
      const Value& v = out_values_[i];
      pd_tensor& o = outputs[i];
      o.dtype = static_cast<int32_t>(v.dtype);
      o.rank = static_cast<int32_t>(v.shape.size());
      for (size_t d = 0; d < v.shape.size() && d < PD_MAX_RANK; ++d) o.dims[d] = v.shape[d];
      o.byte_size = v.bytes();
      o.data = out_[i].host.get();
    }
  }

 private:
  struct Staging {
    void* dev;
    size_t bytes;
    PinnedMem host;
    void* mapped = nullptr;  // the device's address of host, when moved by a copy kernel
  };

  Staging staging(const Value& v) const {
    const size_t n = v.bytes();
    if (!mapped_io_ || n == 0 || n > kMappedStagingMax) return Staging{v.dev, n, pinned_alloc(n)};
    Staging st{v.dev, n, pinned_alloc(n, cudaHostAllocMapped)};
    PD_CUDA_CHECK(cudaHostGetDevicePointer(&st.mapped, st.host.get(), 0));
    return st;
  }

  // Copies n bytes between device addresses (a mapped host buffer is one) with a copy kernel.
  void copy_kernel_bytes(cudaStream_t s, const void* from, void* to, size_t n) const {
    Strided flat{};  // rank 0: element i to element i
    if (n % 4 == 0) launch(fn("pd_copy_4"), static_cast<int64_t>(n / 4), s, from, to, static_cast<int64_t>(n / 4), flat);
    else launch(fn("pd_copy_1"), static_cast<int64_t>(n), s, from, to, static_cast<int64_t>(n), flat);
  }

  static size_t bytes_of(const TensorInfo& t) { return static_cast<size_t>(numel(t.shape)) * dtype_size(t.dtype); }

  // Everything a run does, in stream order: what the CUDA graph captures. The profiling events
  // are recorded as external event nodes when captured (so each replay records them); outside a
  // capture the runtime refuses that flag (cudaErrorIllegalState), so eager runs record plainly.
  void enqueue(cudaStream_t s, bool profile, bool capturing) {
    auto record = [&](cudaEvent_t ev) {
      if (capturing) PD_CUDA_CHECK(cudaEventRecordWithFlags(ev, s, cudaEventRecordExternal));
      else PD_CUDA_CHECK(cudaEventRecord(ev, s));
    };
    for (const auto& in : in_) {
      if (!in.bytes) continue;
      if (in.mapped) copy_kernel_bytes(s, in.mapped, in.dev, in.bytes);
      else PD_CUDA_CHECK(cudaMemcpyAsync(in.dev, in.host.get(), in.bytes, cudaMemcpyHostToDevice, s));
    }
    if (needs_flag_) PD_CUDA_CHECK(cudaMemsetAsync(flag_dev_.get(), 0, sizeof(int), s));
    if (profile) record(ev0_);
    for (const auto& st : steps_) st(s);
    if (profile) record(ev1_);
    for (const auto& o : out_) {
      if (!o.bytes) continue;
      if (o.mapped) copy_kernel_bytes(s, o.dev, o.mapped, o.bytes);
      else PD_CUDA_CHECK(cudaMemcpyAsync(o.host.get(), o.dev, o.bytes, cudaMemcpyDeviceToHost, s));
    }
    if (needs_flag_)
      PD_CUDA_CHECK(cudaMemcpyAsync(flag_host_.get(), flag_dev_.get(), sizeof(int), cudaMemcpyDeviceToHost, s));
  }

  void capture(cudaStream_t s, bool profile) {
    PD_CUDA_CHECK(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal));
    cudaGraph_t graph = nullptr;
    try {
      enqueue(s, profile, true);
    } catch (...) {
      cudaStreamEndCapture(s, &graph);
      if (graph) cudaGraphDestroy(graph);
      throw;
    }
    PD_CUDA_CHECK(cudaStreamEndCapture(s, &graph));
    cudaError_t e = cudaGraphInstantiateWithFlags(&exec_, graph, 0);
    cudaGraphDestroy(graph);
    if (e != cudaSuccess) {
      exec_ = nullptr;
      gpu::cuda_fail(e, "cudaGraphInstantiateWithFlags(&exec_, graph, 0)", __FILE__, __LINE__);
    }
  }

  const Value& val(const std::string& name) const { return values_.at(name); }
  static const float* cf(const Value& v) { return static_cast<const float*>(v.dev); }
  static float* f(const Value& v) { return static_cast<float*>(v.dev); }

  CUfunction fn(const char* name) const { return e_.fn(name); }

  void build_step(const Node& n, const Analysis& a) {
    std::vector<TensorInfo> tin;
    for (const auto& v : n.inputs) tin.push_back(v.empty() ? TensorInfo{} : a.values.at(v));
    InferCtx c(n, tin);
    for (size_t o = 0; o < n.outputs.size(); ++o)
      if (!n.outputs[o].empty()) c.out[o] = a.values.at(n.outputs[o]);
    const std::string op = n.domain.empty() ? n.op : n.domain + "." + n.op;
    if (op == "Gemm" || op == "pd.FusedGemm") return gemm(c);
    if (op == "MatMul" || op == "pd.FusedMatMul") return matmul(c);
    if (op == "Conv" || op == "pd.FusedConv") return conv(c);
    if (op == "LSTM") return lstm(c);
    if (unary(c, op)) return;
    if (binary(c, op)) return;
    if (op == "Cast") return cast(c);
    if (op == "Concat") return concat(c);
    if (op == "Split") return split(c);
    if (op == "Slice") return slice(c);
    if (op == "Transpose") return transpose(c);
    if (op == "Expand") return expand(c);
    if (op == "Gather") return gather(c);
    if (op == "Softmax" || op == "LogSoftmax") return softmax(c, op == "LogSoftmax");
    if (op == "ArgMax" || op == "ArgMin") return argext(c, op == "ArgMin");
    if (op == "Not") {
      const Value x = val(n.inputs[0]), y = val(n.outputs[0]);
      CUfunction k = fn("pd_not_bool");
      const long long cnt = numel(y.shape);
      steps_.push_back([=](cudaStream_t s) { launch(k, cnt, s, x.dev, y.dev, cnt); });
      return;
    }
    fail(PD_ERR_UNSUPPORTED, n.describe(), ": no CUDA kernel");
  }

  // bias/activation after a GEMM, when cuBLASLt's epilogue cannot do it.
  void bias_act(float* y, long long count, const float* bias, long long cols, long long rows_mod, long long bm,
                long long bn, float beta, Act act, float aa, float ab) {
    if (!bias && act == Act::None) return;
    CUfunction k = fn("pd_bias_act_f32");
    const int code = static_cast<int>(act);
    steps_.push_back([=](cudaStream_t s) {
      launch(k, count, s, y, count, bias, cols, rows_mod, bm, bn, beta, code, aa, ab);
    });
  }

  struct Activation {
    Act act = Act::None;
    float a = 0, b = 0;
  };
  static Activation activation(const InferCtx& c) {
    Activation r;
    if (c.node.domain != "pd") return r;
    parse_act(c.node.attr_string("activation", ""), &r.act);
    r.a = c.node.attr_float("activation_alpha", 0.f);
    r.b = c.node.attr_float("activation_beta", 0.f);
    return r;
  }

  void add_gemm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, int64_t lda, int64_t ldb, int64_t ldc, float alpha,
                int64_t batch, int64_t sa, int64_t sb, int64_t sc, const float* A, const float* B, float* Y,
                const float* bias, bool relu) {
    if (m == 0 || n == 0) return;
    if (k == 0) {  // an empty product: zeros (then the epilogue)
      const size_t bytes = static_cast<size_t>(m * n * std::max<int64_t>(batch, 1)) * sizeof(float);
      steps_.push_back([=](cudaStream_t s) { PD_CUDA_CHECK(cudaMemsetAsync(Y, 0, bytes, s)); });
      if (bias || relu) bias_act(Y, m * n, bias, n, m, 0, 1, 1.f, relu ? Act::Relu : Act::None, 0, 0);
      return;
    }
    gemms_.push_back(std::make_unique<LtGemm>(lt_, ta, tb, m, n, k, lda, ldb, ldc, alpha, batch, sa, sb, sc, bias,
                                              relu, kWorkspace));
    const LtGemm* g = gemms_.back().get();
    cublasLtHandle_t h = lt_;
    void* ws = ws_;
    steps_.push_back([=](cudaStream_t s) { g->run(h, A, B, Y, ws, kWorkspace, s); });
  }

  void gemm(const InferCtx& c) {
    const Node& n = c.node;
    const Shape& as = c.in[0].shape;
    const Shape& bs = c.in[1].shape;
    const bool ta = n.attr_int("transA", 0) != 0, tb = n.attr_int("transB", 0) != 0;
    const float alpha = n.attr_float("alpha", 1.f), beta = n.attr_float("beta", 1.f);
    const int64_t m = ta ? as[1] : as[0], k = ta ? as[0] : as[1], nn = tb ? bs[0] : bs[1];
    const Activation act = activation(c);
    const Value A = val(n.inputs[0]), B = val(n.inputs[1]), Y = val(n.outputs[0]);
    const float* bias = nullptr;
    int64_t bm = 0, bn = 0;
    if (c.has_input(2) && beta != 0.f && numel(c.in[2].shape) > 0) {
      bias = cf(val(n.inputs[2]));
      std::vector<int64_t> st = broadcast_strides(c.in[2].shape, Shape{m, nn});
      bm = st[0];
      bn = st[1];
    }
    const bool row_bias = bias && bm == 0 && bn == 1 && beta == 1.f;
    const bool lt_relu = act.act == Act::Relu && (row_bias || !bias);
    add_gemm(ta, tb, m, nn, k, ta ? m : k, tb ? k : nn, nn, alpha, 1, 0, 0, 0, cf(A), cf(B), f(Y),
             row_bias ? bias : nullptr, lt_relu);
    bias_act(f(Y), m * nn, row_bias ? nullptr : bias, nn, std::numeric_limits<long long>::max(), bm, bn, beta,
             lt_relu ? Act::None : act.act, act.a, act.b);
  }

  void matmul(const InferCtx& c) {
    const Node& n = c.node;
    Shape a = c.in[0].shape, b = c.in[1].shape;
    const bool a1 = a.size() == 1, b1 = b.size() == 1;
    if (a1) a.insert(a.begin(), 1);
    if (b1) b.push_back(1);
    const int64_t m = a[a.size() - 2], k = a.back(), nn = b.back();
    const Shape ab(a.begin(), a.end() - 2), bb(b.begin(), b.end() - 2);
    const int64_t na = numel(ab), nb = numel(bb);
    const Value A = val(n.inputs[0]), B = val(n.inputs[1]), Y = val(n.outputs[0]);
    const Activation act = activation(c);
    const float* bias = c.has_input(2) ? cf(val(n.inputs[2])) : nullptr;
    const int64_t bias_n = bias ? numel(c.in[2].shape) : 0;
    const bool row_bias = bias && bias_n == nn;
    const bool lt_relu = act.act == Act::Relu && (row_bias || !bias);
    const int64_t out_blocks = std::max(na, nb);
    if (nb == 1) {  // B shared: one GEMM over all rows of A
      add_gemm(false, false, na * m, nn, k, k, nn, nn, 1.f, 1, 0, 0, 0, cf(A), cf(B), f(Y), row_bias ? bias : nullptr,
               lt_relu);
    } else if (ab == bb || na == 1) {
      add_gemm(false, false, m, nn, k, k, nn, nn, 1.f, nb, na == 1 ? 0 : m * k, k * nn, m * nn, cf(A), cf(B), f(Y),
               row_bias ? bias : nullptr, lt_relu);
    } else {
      fail(PD_ERR_UNSUPPORTED, n.describe(), ": the CUDA backend runs batched MatMul only when the batch ",
           "dimensions are equal or one side has none (", shape_str(c.in[0].shape), " x ", shape_str(c.in[1].shape), ")");
    }
    const long long total = out_blocks * m * nn;
    bias_act(f(Y), total, row_bias ? nullptr : bias, nn, std::numeric_limits<long long>::max(), 0,
             bias_n == 1 ? 0 : 1, 1.f, lt_relu ? Act::None : act.act, act.a, act.b);
  }

  void conv(const InferCtx& c) {
    const Node& n = c.node;
    const Shape& xs = c.in[0].shape;
    const Shape& ws = c.in[1].shape;
    const Shape& ys = c.out[0].shape;
    const int64_t N = xs[0], C = xs[1], H = xs[2], W = xs[3], M = ws[0], KH = ws[2], KW = ws[3];
    const int64_t OH = ys[2], OW = ys[3];
    std::vector<int64_t> strides = n.attr_ints("strides", {1, 1}), dil = n.attr_ints("dilations", {1, 1}),
                         pads = n.attr_ints("pads", {0, 0, 0, 0});
    if (strides.empty()) strides = {1, 1};
    if (dil.empty()) dil = {1, 1};
    if (pads.empty()) pads = {0, 0, 0, 0};
    const std::string auto_pad = n.attr_string("auto_pad", "NOTSET");
    int64_t pb[2] = {pads[0], pads[1]};
    const int64_t in_[2] = {H, W}, k_[2] = {KH, KW}, out_[2] = {OH, OW};
    for (int i = 0; i < 2; ++i) {
      if (auto_pad == "VALID") pb[i] = 0;
      if (auto_pad == "SAME_UPPER" || auto_pad == "SAME_LOWER") {
        const int64_t ek = (k_[i] - 1) * dil[i] + 1;
        const int64_t total = std::max<int64_t>(0, (out_[i] - 1) * strides[i] + ek - in_[i]);
        pb[i] = auto_pad == "SAME_UPPER" ? total / 2 : total - total / 2;
      }
    }
    const int64_t K = C * KH * KW, P = OH * OW;
    const Value X = val(n.inputs[0]), Wt = val(n.inputs[1]), Y = val(n.outputs[0]);
    const bool direct = KH == 1 && KW == 1 && strides[0] == 1 && strides[1] == 1 && pb[0] == 0 && pb[1] == 0 &&
                        OH == H && OW == W;
    const float* col = cf(X);
    if (!direct) {
      scratch_.push_back(dev_alloc(static_cast<size_t>(N * K * P) * sizeof(float)));
      extra_bytes_ += static_cast<size_t>(N * K * P) * sizeof(float);
      float* colp = static_cast<float*>(scratch_.back().get());
      col = colp;
      CUfunction k = fn("pd_im2col_f32");
      const long long cnt = N * K * P;
      const long long sh = strides[0], sw = strides[1], ph = pb[0], pw = pb[1], dh = dil[0], dw = dil[1];
      const void* x = X.dev;
      const long long NN = N, CC = C, HH = H, WW = W, KKH = KH, KKW = KW, OOH = OH, OOW = OW;
      steps_.push_back([=](cudaStream_t s) {
        launch(k, cnt, s, x, colp, NN, CC, HH, WW, KKH, KKW, OOH, OOW, sh, sw, ph, pw, dh, dw);
      });
    }
    // Y_n [M, P] = W [M, K] x col_n [K, P], for every image n.
    add_gemm(false, false, M, P, K, K, P, P, 1.f, N, 0, K * P, M * P, cf(Wt), col, f(Y), nullptr, false);
    const Activation act = activation(c);
    const float* bias = c.has_input(2) ? cf(val(n.inputs[2])) : nullptr;
    bias_act(f(Y), N * M * P, bias, P, M, 1, 0, 1.f, act.act, act.a, act.b);
  }

  void lstm(const InferCtx& c) {
    const Node& n = c.node;
    const Shape& xs = c.in[0].shape;  // [T, B, I]
    const int64_t T = xs[0], B = xs[1], I = xs[2];
    const int64_t H = n.attr_int("hidden_size", c.in[2].shape[2]);
    const Value X = val(n.inputs[0]), Wv = val(n.inputs[1]), Rv = val(n.inputs[2]);
    const float* bias = c.has_input(3) ? cf(val(n.inputs[3])) : nullptr;
    auto out = [&](size_t i) -> float* {
      return i < n.outputs.size() && !n.outputs[i].empty() ? f(val(n.outputs[i])) : nullptr;
    };
    float* Y = out(0);
    float* h = out(1);
    float* cst = out(2);
    auto scratch = [&](size_t floats) {
      scratch_.push_back(dev_alloc(floats * sizeof(float)));
      extra_bytes_ += floats * sizeof(float);
      return static_cast<float*>(scratch_.back().get());
    };
    if (!h) h = scratch(B * H);
    if (!cst) cst = scratch(B * H);
    float* xg = scratch(T * B * 4 * H);
    float* hg = scratch(B * 4 * H);
    const size_t state = static_cast<size_t>(B * H) * sizeof(float);
    const void* h0 = c.has_input(5) ? val(n.inputs[5]).dev : nullptr;
    const void* c0 = c.has_input(6) ? val(n.inputs[6]).dev : nullptr;
    steps_.push_back([=](cudaStream_t s) {
      if (h0) PD_CUDA_CHECK(cudaMemcpyAsync(h, h0, state, cudaMemcpyDeviceToDevice, s));
      else PD_CUDA_CHECK(cudaMemsetAsync(h, 0, state, s));
      if (c0) PD_CUDA_CHECK(cudaMemcpyAsync(cst, c0, state, cudaMemcpyDeviceToDevice, s));
      else PD_CUDA_CHECK(cudaMemsetAsync(cst, 0, state, s));
    });
    // All time steps' input products at once: XG [T*B, 4H] = X [T*B, I] x W^T.
    add_gemm(false, true, T * B, 4 * H, I, I, I, 4 * H, 1.f, 1, 0, 0, 0, cf(X), cf(Wv), xg, nullptr, false);
    CUfunction cell = fn("pd_lstm_cell_f32");
    const long long BB = B, HH = H;
    for (int64_t t = 0; t < T; ++t) {
      add_gemm(false, true, B, 4 * H, H, H, H, 4 * H, 1.f, 1, 0, 0, 0, h, cf(Rv), hg, nullptr, false);
      const float* xgt = xg + t * B * 4 * H;
      float* yt = Y ? Y + t * B * H : nullptr;
      steps_.push_back([=](cudaStream_t s) { launch(cell, BB * HH, s, xgt, hg, bias, h, cst, yt, BB, HH); });
    }
  }

  bool unary(const InferCtx& c, const std::string& op) {
    static const std::map<std::string, int> kCodes = {
        {"Relu", 1},        {"Tanh", 2},          {"Sigmoid", 3},     {"Elu", 4},         {"LeakyRelu", 5},
        {"Softplus", 6},    {"Clip", 7},          {"HardSigmoid", 9}, {"Exp", kUExp},     {"Log", kULog},
        {"Neg", kUNeg},     {"Abs", kUAbs},       {"Sqrt", kUSqrt},   {"Reciprocal", kUReciprocal},
        {"Floor", kUFloor}, {"Ceil", kUCeil},     {"Erf", kUErf},     {"Sin", kUSin},     {"Cos", kUCos}};
    auto it = kCodes.find(op);
    if (it == kCodes.end()) return false;
    const Node& n = c.node;
    float a = 0, b = 0;
    if (op == "Elu") a = n.attr_float("alpha", 1.f);
    if (op == "LeakyRelu") a = n.attr_float("alpha", 0.01f);
    if (op == "HardSigmoid") a = n.attr_float("alpha", 0.2f), b = n.attr_float("beta", 0.5f);
    if (op == "Clip") {
      a = -std::numeric_limits<float>::infinity();
      b = std::numeric_limits<float>::infinity();
      if (c.opset() < 11) {
        a = n.attr_float("min", a);
        b = n.attr_float("max", b);
      } else {
        if (c.has_input(1)) a = static_cast<float>(c.const_input(1, "min").float_at(0));
        if (c.has_input(2)) b = static_cast<float>(c.const_input(2, "max").float_at(0));
      }
    }
    const Value x = val(n.inputs[0]), y = val(n.outputs[0]);
    CUfunction k = fn("pd_unary_f32");
    const long long cnt = numel(y.shape);
    const int code = it->second;
    steps_.push_back([=](cudaStream_t s) { launch(k, cnt, s, x.dev, y.dev, cnt, code, a, b); });
    return true;
  }

  bool binary(const InferCtx& c, const std::string& op) {
    static const std::map<std::string, int> kCodes = {
        {"Add", kBAdd},       {"Sub", kBSub},   {"Mul", kBMul},         {"Div", kBDiv},
        {"Pow", kBPow},       {"Max", kBMax},   {"Min", kBMin},         {"Equal", kBEqual},
        {"Less", kBLess},     {"Greater", kBGreater}, {"LessOrEqual", kBLessOrEqual},
        {"GreaterOrEqual", kBGreaterOrEqual}, {"And", kBAnd}, {"Or", kBOr}, {"Xor", kBXor}};
    auto it = kCodes.find(op);
    if (it == kCodes.end()) return false;
    const Node& n = c.node;
    const int code = it->second;
    const Value y = val(n.outputs[0]);
    const DType t = c.in[0].dtype;
    const char* kernel = code >= kBAnd           ? "pd_logic_bool"
                         : code >= kBEqual       ? (t == DType::F32 ? "pd_compare_f32" : "pd_compare_i64")
                         : t == DType::F32       ? "pd_binary_f32"
                                                 : "pd_binary_i64";
    if (code == kBPow && t != DType::F32) fail(PD_ERR_UNSUPPORTED, n.describe(), ": Pow runs in float32 only on CUDA");
    CUfunction k = fn(kernel);
    const long long cnt = numel(y.shape);
    // Max/Min take 1..N inputs: fold them pairwise into the output.
    size_t ninputs = 0;
    for (size_t i = 0; i < n.inputs.size(); ++i)
      if (!n.inputs[i].empty()) ninputs = i + 1;
    if (ninputs == 1) {
      const Value x = val(n.inputs[0]);
      const size_t bytes = y.bytes();
      steps_.push_back([=](cudaStream_t s) {
        PD_CUDA_CHECK(cudaMemcpyAsync(y.dev, x.dev, bytes, cudaMemcpyDeviceToDevice, s));
      });
      return true;
    }
    for (size_t i = 1; i < ninputs; ++i) {
      const Value a = i == 1 ? val(n.inputs[0]) : y;
      const Value b = val(n.inputs[i]);
      Strided p;
      if (!(a.shape == y.shape && b.shape == y.shape))
        p = strided(y.shape, broadcast_strides(a.shape, y.shape), broadcast_strides(b.shape, y.shape));
      steps_.push_back([=](cudaStream_t s) { launch(k, cnt, s, a.dev, b.dev, y.dev, cnt, code, p); });
    }
    return true;
  }

  void cast(const InferCtx& c) {
    const Value x = val(c.node.inputs[0]), y = val(c.node.outputs[0]);
    if (x.dtype == y.dtype) {
      const size_t bytes = y.bytes();
      steps_.push_back([=](cudaStream_t s) {
        if (bytes) PD_CUDA_CHECK(cudaMemcpyAsync(y.dev, x.dev, bytes, cudaMemcpyDeviceToDevice, s));
      });
      return;
    }
    CUfunction k = fn("pd_cast");
    const long long cnt = numel(y.shape);
    const int from = static_cast<int>(x.dtype), to = static_cast<int>(y.dtype);
    steps_.push_back([=](cudaStream_t s) { launch(k, cnt, s, x.dev, y.dev, cnt, from, to); });
  }

  // y[out_off + Σ i_d * ys_d] = x[in_off + Σ i_d * xs_d] over dims (element offsets and strides).
  void copy(const Value& x, int64_t in_off, const std::vector<int64_t>& xs, const Value& y, int64_t out_off,
            const std::vector<int64_t>& ys, const Shape& dims) {
    const size_t es = dtype_size(x.dtype);
    const std::string name = copy_kernel(es);
    if (name.empty()) fail(PD_ERR_UNSUPPORTED, "no CUDA copy for ", es, "-byte elements");
    CUfunction k = fn(name.c_str());
    const long long cnt = numel(dims);
    if (cnt == 0) return;
    Strided p = strided(dims, xs, ys);
    const void* src = static_cast<const char*>(x.dev) + in_off * es;
    void* dst = static_cast<char*>(y.dev) + out_off * es;
    steps_.push_back([=](cudaStream_t s) { launch(k, cnt, s, src, dst, cnt, p); });
  }

  void concat(const InferCtx& c) {
    const Node& n = c.node;
    const Value y = val(n.outputs[0]);
    const int64_t r = static_cast<int64_t>(y.shape.size());
    const int64_t axis = c.axis(n.attr_int("axis", 0), r);
    const std::vector<int64_t> ys = strides_of(y.shape);
    int64_t off = 0;
    for (const auto& in : n.inputs) {
      if (in.empty()) continue;
      const Value x = val(in);
      copy(x, 0, strides_of(x.shape), y, off * ys[axis], ys, x.shape);
      off += x.shape[axis];
    }
  }

  void split(const InferCtx& c) {
    const Node& n = c.node;
    const Value x = val(n.inputs[0]);
    const int64_t axis = c.axis(n.attr_int("axis", 0), static_cast<int64_t>(x.shape.size()));
    const std::vector<int64_t> xs = strides_of(x.shape);
    int64_t off = 0;
    for (const auto& o : n.outputs) {
      if (o.empty()) continue;
      const Value y = val(o);
      copy(x, off * xs[axis], xs, y, 0, strides_of(y.shape), y.shape);
      off += y.shape[axis];
    }
  }

  std::vector<int64_t> ints(const InferCtx& c, size_t i, const char* what) {
    return c.const_input(i, what).to_ints();
  }

  void slice(const InferCtx& c) {
    const Node& n = c.node;
    const Value x = val(n.inputs[0]), y = val(n.outputs[0]);
    const Shape& xsh = x.shape;
    const int64_t r = static_cast<int64_t>(xsh.size());
    std::vector<int64_t> starts, ends, axes, steps;
    if (c.opset() < 10) {
      starts = n.attr_ints("starts");
      ends = n.attr_ints("ends");
      axes = n.attr_ints("axes");
    } else {
      starts = ints(c, 1, "starts");
      ends = ints(c, 2, "ends");
      if (c.has_input(3)) axes = ints(c, 3, "axes");
      if (c.has_input(4)) steps = ints(c, 4, "steps");
    }
    if (axes.empty())
      for (size_t i = 0; i < starts.size(); ++i) axes.push_back(static_cast<int64_t>(i));
    if (steps.empty()) steps.assign(starts.size(), 1);
    const std::vector<int64_t> xst = strides_of(xsh);
    std::vector<int64_t> st = xst;
    int64_t in_off = 0;
    for (size_t i = 0; i < axes.size(); ++i) {
      const int64_t ax = c.axis(axes[i], r), d = xsh[ax], step = steps[i];
      int64_t b = starts[i];
      if (b < 0) b += d;
      b = step > 0 ? std::clamp<int64_t>(b, 0, d) : std::clamp<int64_t>(b, 0, std::max<int64_t>(d - 1, 0));
      in_off += b * xst[ax];
      st[ax] = xst[ax] * step;
    }
    copy(x, in_off, st, y, 0, strides_of(y.shape), y.shape);
  }

  void transpose(const InferCtx& c) {
    const Value x = val(c.node.inputs[0]), y = val(c.node.outputs[0]);
    std::vector<int64_t> perm = c.node.attr_ints("perm");
    if (perm.empty())
      for (size_t i = 0; i < x.shape.size(); ++i) perm.push_back(static_cast<int64_t>(x.shape.size() - 1 - i));
    const std::vector<int64_t> xst = strides_of(x.shape);
    std::vector<int64_t> st(perm.size());
    for (size_t i = 0; i < perm.size(); ++i) st[i] = xst[perm[i]];
    copy(x, 0, st, y, 0, strides_of(y.shape), y.shape);
  }

  void expand(const InferCtx& c) {
    const Value x = val(c.node.inputs[0]), y = val(c.node.outputs[0]);
    copy(x, 0, broadcast_strides(x.shape, y.shape), y, 0, strides_of(y.shape), y.shape);
  }

  void gather(const InferCtx& c) {
    const Node& n = c.node;
    const Value x = val(n.inputs[0]), idx = val(n.inputs[1]), y = val(n.outputs[0]);
    const int64_t r = static_cast<int64_t>(x.shape.size());
    const int64_t axis = c.axis(n.attr_int("axis", 0), r);
    long long outer = 1, inner = 1;
    for (int64_t d = 0; d < axis; ++d) outer *= x.shape[d];
    for (int64_t d = axis + 1; d < r; ++d) inner *= x.shape[d];
    const long long len = x.shape[axis], nidx = numel(idx.shape);
    const std::string name = gather_kernel(dtype_size(x.dtype));
    if (name.empty()) fail(PD_ERR_UNSUPPORTED, n.describe(), ": element size");
    CUfunction k = fn(name.c_str());
    const int idx64 = idx.dtype == DType::I64 ? 1 : 0;
    needs_flag_ = true;
    if (!flag_dev_) flag_dev_ = dev_alloc(sizeof(int)), flag_host_ = pinned_alloc(sizeof(int));
    int* bad = static_cast<int*>(flag_dev_.get());
    const long long cnt = outer * nidx * inner;
    steps_.push_back([=](cudaStream_t s) {
      launch(k, cnt, s, x.dev, static_cast<const void*>(idx.dev), idx64, y.dev, outer, len, nidx, inner, bad);
    });
  }

  void softmax(const InferCtx& c, bool logsm) {
    const Node& n = c.node;
    const Value x = val(n.inputs[0]), y = val(n.outputs[0]);
    const int64_t r = static_cast<int64_t>(x.shape.size());
    const int64_t axis = c.axis(n.attr_int("axis", c.opset() < 13 ? 1 : -1), std::max<int64_t>(r, 1));
    long long outer = 1, mid = 1, inner = 1;
    for (int64_t d = 0; d < axis; ++d) outer *= x.shape[d];
    if (c.opset() < 13) {
      for (int64_t d = axis; d < r; ++d) mid *= x.shape[d];
    } else {
      mid = r ? x.shape[axis] : 1;
      for (int64_t d = axis + 1; d < r; ++d) inner *= x.shape[d];
    }
    CUfunction k = fn("pd_softmax_f32");
    const int code = logsm ? kLogSoftmax : kSoftmax;
    steps_.push_back([=](cudaStream_t s) { launch(k, outer * inner, s, x.dev, y.dev, outer, mid, inner, code); });
  }

  void argext(const InferCtx& c, bool is_min) {
    const Node& n = c.node;
    const Value x = val(n.inputs[0]), y = val(n.outputs[0]);
    const int64_t r = static_cast<int64_t>(x.shape.size());
    const int64_t axis = c.axis(n.attr_int("axis", 0), r);
    long long outer = 1, inner = 1;
    for (int64_t d = 0; d < axis; ++d) outer *= x.shape[d];
    for (int64_t d = axis + 1; d < r; ++d) inner *= x.shape[d];
    const long long mid = x.shape[axis];
    const int mn = is_min ? 1 : 0, last = n.attr_int("select_last_index", 0) != 0 ? 1 : 0;
    CUfunction k = fn("pd_argext_f32");
    steps_.push_back([=](cudaStream_t s) { launch(k, outer * inner, s, x.dev, y.dev, outer, mid, inner, mn, last); });
  }

  const CudaEngine& e_;
  BucketKey key_;
  cublasLtHandle_t lt_;
  void* ws_;
  cudaEvent_t ev0_, ev1_;
  size_t arena_bytes_ = 0, extra_bytes_ = 0;
  DevMem arena_;
  std::vector<DevMem> consts_, scratch_;
  std::unordered_map<std::string, Value> values_;
  std::vector<std::unique_ptr<LtGemm>> gemms_;
  std::vector<Step> steps_;
  std::vector<Staging> in_, out_;
  std::vector<Value> out_values_;
  bool needs_flag_ = false;
  DevMem flag_dev_;
  PinnedMem flag_host_;
  bool warm_ = false;
  const bool mapped_io_ = mapped_io_enabled();
  cudaGraphExec_t exec_ = nullptr;
};

// ---- the context ----------------------------------------------------------------------------

constexpr size_t kMaxBuckets = 64;

bool graphs_enabled() { return gpu::env_switch("POLICYD_CUDA_GRAPHS"); }

class CudaContext final : public BackendContext {
 public:
  explicit CudaContext(const CudaEngine& e) : e_(e), graphs_(graphs_enabled()) {
    PD_CUDA_CHECK(cudaSetDevice(e_.ordinal()));
    PD_CUDA_CHECK(cudaFree(nullptr));
    PD_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
    PD_CUBLAS_CHECK(cublasLtCreate(&lt_));
    ws_ = dev_alloc(kWorkspace);
    PD_CUDA_CHECK(cudaEventCreate(&ev0_));
    PD_CUDA_CHECK(cudaEventCreate(&ev1_));
  }
  ~CudaContext() override {
    cudaSetDevice(e_.ordinal());
    if (stream_) cudaStreamSynchronize(stream_);
    buckets_.clear();
    ws_.reset();
    if (ev0_) cudaEventDestroy(ev0_);
    if (ev1_) cudaEventDestroy(ev1_);
    if (lt_) cublasLtDestroy(lt_);
    if (stream_) cudaStreamDestroy(stream_);
  }

  // The CUDA backend runs no random ops (support.cpp refuses them), so seeds change nothing.
  void set_seed(uint64_t) override {}
  void set_row_seeds(const uint64_t*, size_t) override {}

  ContextMemory memory() const override {
    ContextMemory m;
    m.arena_bytes = arena_bytes_.load(std::memory_order_relaxed);
    m.buckets = nbuckets_.load(std::memory_order_relaxed);
    return m;
  }

  double last_device_ms() const override { return e_.options().profile ? last_ms_ : -1; }

  void run(const pd_tensor* inputs, pd_tensor* outputs) override {
    PD_CUDA_CHECK(cudaSetDevice(e_.ordinal()));
    Bucket* b = lookup(inputs);
    b->run(stream_, graphs_, e_.options().profile, inputs, outputs, &last_ms_);
  }

 private:
  Bucket* lookup(const pd_tensor* in) {
    if (last_ && last_->key().matches(in)) return last_;
    for (auto it = buckets_.begin(); it != buckets_.end(); ++it)
      if ((*it)->key().matches(in)) {
        std::rotate(buckets_.begin(), it, it + 1);
        return last_ = buckets_.front().get();
      }
    auto b = std::make_unique<Bucket>(e_, BucketKey::of(e_.graph(), in), lt_, ws_.get(), ev0_, ev1_);
    if (buckets_.size() >= kMaxBuckets) {
      arena_bytes_.fetch_sub(buckets_.back()->arena_bytes(), std::memory_order_relaxed);
      buckets_.pop_back();
    }
    arena_bytes_.fetch_add(b->arena_bytes(), std::memory_order_relaxed);
    buckets_.insert(buckets_.begin(), std::move(b));
    nbuckets_.store(buckets_.size(), std::memory_order_relaxed);
    return last_ = buckets_.front().get();
  }

  const CudaEngine& e_;
  bool graphs_;
  cudaStream_t stream_ = nullptr;
  cublasLtHandle_t lt_ = nullptr;
  DevMem ws_;
  cudaEvent_t ev0_ = nullptr, ev1_ = nullptr;
  std::vector<std::unique_ptr<Bucket>> buckets_;
  Bucket* last_ = nullptr;
  double last_ms_ = -1;
  std::atomic<uint64_t> arena_bytes_{0};
  std::atomic<uint64_t> nbuckets_{0};
};

std::unique_ptr<BackendContext> CudaEngine::create_context() { return std::make_unique<CudaContext>(*this); }

// ---- the backend ----------------------------------------------------------------------------

class CudaBackend final : public Backend {
 public:
  std::string name() const override { return "cuda"; }
  std::string version() const override {
    int rt = 0;
    cudaRuntimeGetVersion(&rt);
    const std::string k = fnv1a64_tag(kernel_source().data(), kernel_source().size());
    // Path-safe (an engine cache lives under engines/cuda-<version>/<sm_XX>/): what the
    // compiled code depends on, the kernel source's fingerprint included.
    return str(PD_VERSION, "-k", k.substr(k.size() - 8), "-cudart", rt, "-cublaslt", cublasLtGetVersion(),
               "-nvrtc", nvrtc_version());
  }
  std::unique_ptr<BackendEngine> build(std::shared_ptr<const Graph> g, const BuildOptions& o) override {
    return std::make_unique<CudaEngine>(std::move(g), o);
  }
  std::vector<DeviceInfo> devices() const override { return g_devices; }
};

// Returns "" when a CUDA device can be used, else why not.
std::string probe() {
  std::string why = load_driver();
  if (!why.empty()) return why;
  int count = 0;
  why = gpu::probe_driver(&count);
  if (!why.empty()) return why;
  why = load_libs();
  if (!why.empty()) return why;
  return gpu::list_devices(count, &g_devices);
}

}  // namespace
}  // namespace pd::cuda

extern "C" __attribute__((visibility("default"))) int pd_backend_entry(const pd::HostServices* host,
                                                                      pd::Backend** out, char* err,
                                                                      size_t err_len) {
  return pd::gpu::backend_entry<pd::cuda::CudaBackend>("cuda", host, &pd::cuda::g_host, &pd::cuda::probe, [] {
    for (const auto& d : pd::cuda::g_devices)
      pd::cuda::log(PD_LOG_INFO, pd::str("cuda device ", d.ordinal, ": ", d.name, " (", d.target, ", ",
                                         d.total_memory >> 20, " MiB)"));
  }, out, err, err_len);
}
