// The checked CUDA runtime call every CUDA-based plugin (csrc/cuda, csrc/tensorrt) makes.
// Header-only: each plugin compiles csrc/gpu/ against its own runtime (the real cuda_runtime.h,
// or the CPU emulation of csrc/cuda/fake in the cuda plugin's test build). Include it after
// that header.
#pragma once

#include "../core/error.h"

namespace pd::gpu {

[[noreturn]] inline void cuda_fail(cudaError_t e, const char* call, const char* file, int line) {
  const pd_error_code code = e == cudaErrorMemoryAllocation ? PD_ERR_UNAVAILABLE : PD_ERR_INTERNAL;
  fail(code, "CUDA call ", call, " failed at ", file, ":", line, ": ", cudaGetErrorName(e), ": ",
       cudaGetErrorString(e));
}

}  // namespace pd::gpu

// Every CUDA runtime call goes through this: a failure becomes a pd::Error naming the call,
// the place and the runtime's own message (out of memory: PD_ERR_UNAVAILABLE).
#define PD_CUDA_CHECK(call)                                                            \
  do {                                                                                 \
    cudaError_t pd_e_ = (call);                                                        \
    if (pd_e_ != cudaSuccess) ::pd::gpu::cuda_fail(pd_e_, #call, __FILE__, __LINE__); \
  } while (0)
