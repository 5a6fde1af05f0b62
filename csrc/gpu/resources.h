// RAII for the CUDA objects a GPU plugin owns: device and pinned memory, streams, events,
// graphs and graph execs, and library handles (a cuBLASLt handle: gpu::Handle with the
// library's destroy call). Each is a std::unique_ptr with a deleter, made by a function that
// checks the creating call, so an object exists only when its creation succeeded and a
// constructor that throws half-way releases what it made before (no naked destroy calls in
// control flow). Header-only, like check.h: include after the plugin's runtime header.
#pragma once

#include <algorithm>
#include <memory>
#include <type_traits>

#include "check.h"

namespace pd::gpu {

struct DevFree {
  void operator()(void* p) const { cudaFree(p); }
};
using DevMem = std::unique_ptr<void, DevFree>;
struct HostFree {
  void operator()(void* p) const { cudaFreeHost(p); }
};
using PinnedMem = std::unique_ptr<void, HostFree>;

inline DevMem dev_alloc(size_t bytes) {
  void* p = nullptr;
  PD_CUDA_CHECK(cudaMalloc(&p, std::max<size_t>(bytes, 256)));
  return DevMem(p);
}
inline PinnedMem pinned_alloc(size_t bytes, unsigned flags = cudaHostAllocDefault) {
  void* p = nullptr;
  PD_CUDA_CHECK(cudaHostAlloc(&p, std::max<size_t>(bytes, 64), flags));
  return PinnedMem(p);
}

// A handle type H (a pointer: cudaStream_t, cublasLtHandle_t) owned with destroy D.
template <typename H, typename D>
using Handle = std::unique_ptr<std::remove_pointer_t<H>, D>;

struct StreamDestroy {
  void operator()(cudaStream_t s) const {
    cudaStreamSynchronize(s);  // nothing of ours may still run on it
    cudaStreamDestroy(s);
  }
};
struct EventDestroy {
  void operator()(cudaEvent_t e) const { cudaEventDestroy(e); }
};
struct GraphDestroy {
  void operator()(cudaGraph_t g) const { cudaGraphDestroy(g); }
};
struct GraphExecDestroy {
  void operator()(cudaGraphExec_t e) const { cudaGraphExecDestroy(e); }
};
using Stream = Handle<cudaStream_t, StreamDestroy>;
using Event = Handle<cudaEvent_t, EventDestroy>;
using Graph = Handle<cudaGraph_t, GraphDestroy>;
using GraphExec = Handle<cudaGraphExec_t, GraphExecDestroy>;

// A non-blocking stream (it does not wait for the legacy default stream).
inline Stream make_stream() {
  cudaStream_t s = nullptr;
  PD_CUDA_CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  return Stream(s);
}
inline Event make_event() {
  cudaEvent_t e = nullptr;
  PD_CUDA_CHECK(cudaEventCreate(&e));
  return Event(e);
}

}  // namespace pd::gpu
