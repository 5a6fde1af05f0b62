// The CUDA backend: the graph IR of the core (analyzed per shape bucket exactly like the CPU
// backend's programs) run on one NVIDIA GPU. docs/gpu.md describes it; the files:
//
//  - libs.{h,cpp}: the runtime headers (real, or the CPU emulation of fake/ in the test build),
//    cuBLASLt and NVRTC opened with dlopen where there is a device, the driver API, checks.
//  - gemm.{h,cpp}: GEMMs through cuBLASLt in full float32 (CUBLAS_COMPUTE_32F, no TF32), with
//    the bias and Relu in cuBLASLt's epilogue where it has one and a kernel otherwise; float64
//    (CUBLAS_COMPUTE_64F) for Einsum.
//  - einsum_plan.{h,cpp}: how an Einsum becomes one strided-batched GEMM and copies (host-only,
//    also read by support.cpp).
//  - engine.{h,cpp}: the kernels of kernels.cuh compiled by NVRTC when the engine is built, for
//    the exact architecture of its device (PTX for the newest architecture NVRTC knows when the
//    device is newer still), loaded through the driver API; the weights on the device.
//  - lower.{h,cpp}, ops/*.cpp: a bucket's graph lowered to steps, by op family.
//  - bucket.{h,cpp}: one shape bucket: the device arena, the lowered program and its staged run
//    (../gpu/staged_run.h: pinned staging, eager first run, graph capture, replay; a failed
//    capture falls back to eager runs with one warning, as in the tensorrt plugin).
//  - context.{h,cpp}: one non-blocking stream, a cuBLASLt handle and workspace, the buckets.
//  - this file: the backend, its probe and the plugin's entry point.
//
// Outputs are views of the bucket's pinned output buffers, valid until its next run. Every
// CUDA, cuBLASLt, NVRTC and driver call is checked; a failure is a pd::Error naming the call,
// file:line and the library's message. Nothing here exits.
//
// Threading follows backend.h: the engine (module, device copies of the weights) is immutable
// after build and shared by its contexts; a context is used by one thread at a time; every
// entry point sets the engine's device on the calling thread first.
#include "libs.h"  // first: the runtime csrc/gpu/ compiles against

#include "../core/backend.h"
#include "../core/engine_cache.h"
#include "../gpu/probe.h"
#include "engine.h"
#include "kernels.h"

#include <cstring>

#ifndef PD_VERSION
#define PD_VERSION "0.0.0"
#endif

namespace pd::cuda {
namespace {

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
  // CUDA shared memory (Triton's extension): the exporter's cudaIpcGetMemHandle bytes, opened
  // on the device; the mapping is the driver's, released by ipc_close.
  void* ipc_open(int device, const void* handle, size_t size) override {
    PD_CHECK_ARG(handle && size == sizeof(cudaIpcMemHandle_t), "a CUDA IPC memory handle is ",
                 sizeof(cudaIpcMemHandle_t), " bytes, got ", size);
    PD_CHECK_ARG(device >= 0 && device < static_cast<int>(g_devices.size()), "CUDA device ", device,
                 " out of range: ", g_devices.size(), " devices");
    PD_CUDA_CHECK(cudaSetDevice(device));
    cudaIpcMemHandle_t h;
    std::memcpy(&h, handle, sizeof h);
    void* p = nullptr;
    const cudaError_t e = cudaIpcOpenMemHandle(&p, h, cudaIpcMemLazyEnablePeerAccess);
    // A handle the driver does not know (forged, freed, another machine's) is the caller's.
    if (e == cudaErrorInvalidResourceHandle || e == cudaErrorInvalidValue)
      fail(PD_ERR_INVALID_ARG, "cudaIpcOpenMemHandle on device ", device, " refused the handle: ",
           cudaGetErrorName(e), ": ", cudaGetErrorString(e));
    PD_CUDA_CHECK(e);
    return p;
  }
  void device_copy(int device, void* dst, const void* src, size_t n, bool to_device) override {
    PD_CUDA_CHECK(cudaSetDevice(device));
    const cudaError_t e = cudaMemcpy(dst, src, n, to_device ? cudaMemcpyHostToDevice : cudaMemcpyDeviceToHost);
    if (e == cudaErrorInvalidValue || e == cudaErrorInvalidDevicePointer)
      fail(PD_ERR_INVALID_ARG, n, " bytes at ", to_device ? dst : src, " are not device memory of device ", device,
           " (", cudaGetErrorName(e), ")");
    PD_CUDA_CHECK(e);
  }
  void ipc_close(int device, void* ptr) override {
    PD_CUDA_CHECK(cudaSetDevice(device));
    PD_CUDA_CHECK(cudaIpcCloseMemHandle(ptr));
  }
  // The parameters are run switches (cuda.graphs, cuda.mapped_io): checked here, never part of
  // what build() produces, so no engine cache depends on them.
  std::string options_key(const BuildOptions& o) const override {
    parse_run_params(o);
    return "";
  }
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
