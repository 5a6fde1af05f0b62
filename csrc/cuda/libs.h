// The CUDA plugin's libraries: the runtime headers (the real ones, or the CPU emulation of
// csrc/cuda/fake in the test build), cuBLASLt and NVRTC opened with dlopen where there is a
// device (a table of function pointers every call goes through), the driver API reached the
// same way, the checked-call macros of each library, and the plugin's log line.
#pragma once

#ifdef PD_FAKE_CUDA
#include "fake_cuda.h"  // the test build: a CPU emulation of the calls below (csrc/cuda/fake)
#else
#include <cublasLt.h>
#include <cuda.h>
#include <cuda_runtime.h>
#include <nvrtc.h>
#endif

#include <string>

#include "../core/backend.h"
#include "../core/error.h"
#include "../gpu/check.h"

namespace pd::cuda {

extern const HostServices* g_host;

// Writes msg into policyd's log (through the host), when the plugin has been entered.
void log(pd_log_level level, const std::string& msg);

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
extern Libs g_libs;


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
std::string load_libs();

// ---- checks (PD_CUDA_CHECK: ../gpu/check.h) -------------------------------------------------

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
extern Driver g_drv;

[[noreturn]] void driver_fail(CUresult r, const char* call, const char* file, int line);
#define PD_CU_CHECK(call)                                                   \
  do {                                                                      \
    CUresult pd_r_ = (call);                                                \
    if (pd_r_ != CUDA_SUCCESS) driver_fail(pd_r_, #call, __FILE__, __LINE__); \
  } while (0)

// Returns "" or why the driver library cannot be used.
std::string load_driver();

}  // namespace pd::cuda
