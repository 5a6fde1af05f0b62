// The staged run of one shape bucket, the same for every CUDA-based plugin:
//
//   pinned staging: the caller's inputs are copied into pinned host buffers, the outputs land
//     in pinned host buffers the caller reads (valid until the bucket's next run);
//   eager:   the first run enqueues everything (copies in, the plugin's body, copies out) on
//            the context's stream;
//   capture: the second run captures the same sequence as a CUDA graph and instantiates it;
//   replay:  that run and every later one launch the graph.
//
// One fallback, whatever the plugin: when capture cannot be begun, the body fails under
// capture (TensorRT cannot enqueue some plans under capture), the capture cannot be ended or
// the graph cannot be instantiated, the bucket logs one warning saying why, clears the
// runtime's error state and runs eagerly from then on — this run included, so the request is
// served. A failure of an eager run or of a graph launch is the request's error (PD_ERR_*).
// The graph switch (backend parameter <backend>.graphs=false) makes every run eager.
//
// Header-only, like check.h: include after the plugin's runtime header.
#pragma once

#include <cstring>
#include <exception>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "../core/backend.h"
#include "check.h"
#include "resources.h"

namespace pd::gpu {

// One input or output between the caller's memory and the device buffer dev (not owned).
struct Staging {
  void* dev = nullptr;
  size_t bytes = 0;
  PinnedMem host;
  void* mapped = nullptr;  // the device's address of host, when moved by a copy kernel
};

// Staging for bytes at dev: pinned host memory, mapped into the device's address space when
// mapped is true (and bytes > 0).
inline Staging stage(void* dev, size_t bytes, bool mapped) {
  if (!mapped || bytes == 0) return Staging{dev, bytes, pinned_alloc(bytes), nullptr};
  Staging st{dev, bytes, pinned_alloc(bytes, cudaHostAllocMapped), nullptr};
  PD_CUDA_CHECK(cudaHostGetDevicePointer(&st.mapped, st.host.get(), 0));
  return st;
}

// The events a profiled run records around the body (owned by the context).
struct RunEvents {
  cudaEvent_t start = nullptr, stop = nullptr;
};

using LogFn = void (*)(pd_log_level, const std::string&);

class StagedRun {
 public:
  // The bucket's device work between the copies in and out, enqueued on the stream given.
  using Body = std::function<void(cudaStream_t)>;
  // Copies n bytes from one device address to another with a kernel (a mapped staging buffer
  // is one); needed only for mapped staging.
  using CopyKernel = std::function<void(cudaStream_t, const void* from, void* to, size_t n)>;

  enum class Mode {
    kCold,      // no run has succeeded yet: the next is eager
    kWarm,      // one eager run done: the next captures (when graphs are on)
    kReplay,    // a graph was captured: runs launch it
    kEagerOnly  // capture failed once: every run is eager
  };

  // what names the bucket in the fallback's log line ("mlp: shape [1x8]"); log receives it.
  StagedRun(std::string what, LogFn log, Body body, CopyKernel copy = {})
      : what_(std::move(what)), log_(log), body_(std::move(body)), copy_(std::move(copy)) {}
  StagedRun(const StagedRun&) = delete;
  StagedRun& operator=(const StagedRun&) = delete;

  void add_input(Staging s) { in_.push_back(std::move(s)); }
  void add_output(Staging s) { out_.push_back(std::move(s)); }

  // One run: host[i] (in_[i].bytes each) into the input staging, the run in the current mode,
  // then waits for the stream. With profile, *device_ms gets the body's device time.
  void run(cudaStream_t s, bool graphs, bool profile, const RunEvents& ev, const void* const* host,
           double* device_ms) {
    for (size_t i = 0; i < in_.size(); ++i)
      if (in_[i].bytes) std::memcpy(in_[i].host.get(), host[i], in_[i].bytes);
    if (graphs && mode_ == Mode::kWarm) capture(s, profile, ev);
    if (graphs && mode_ == Mode::kReplay) {
      PD_CUDA_CHECK(cudaGraphLaunch(exec_.get(), s));
    } else {
      enqueue(s, profile, ev, false);
      if (mode_ == Mode::kCold) mode_ = Mode::kWarm;
    }
    PD_CUDA_CHECK(cudaStreamSynchronize(s));
    if (profile) {
      float ms = 0;
      PD_CUDA_CHECK(cudaEventElapsedTime(&ms, ev.start, ev.stop));
      *device_ms = ms;
    }
  }

  // Output i's bytes after a run: owned by the bucket, valid until its next run.
  void* output(size_t i) const { return out_[i].host.get(); }
  size_t output_bytes(size_t i) const { return out_[i].bytes; }
  Mode mode() const { return mode_; }

 private:
  // Everything a run does, in stream order: what the graph captures. The profiling events are
  // recorded as external event nodes when captured (each replay records them); outside a
  // capture the runtime refuses that flag (cudaErrorIllegalState), so eager runs record plainly.
  void enqueue(cudaStream_t s, bool profile, const RunEvents& ev, bool capturing) {
    auto record = [&](cudaEvent_t e) {
      if (capturing) PD_CUDA_CHECK(cudaEventRecordWithFlags(e, s, cudaEventRecordExternal));
      else PD_CUDA_CHECK(cudaEventRecord(e, s));
    };
    for (const auto& in : in_) {
      if (!in.bytes) continue;
      if (in.mapped) copy_(s, in.mapped, in.dev, in.bytes);
      else PD_CUDA_CHECK(cudaMemcpyAsync(in.dev, in.host.get(), in.bytes, cudaMemcpyHostToDevice, s));
    }
    if (profile) record(ev.start);
    body_(s);
    if (profile) record(ev.stop);
    for (const auto& o : out_) {
      if (!o.bytes) continue;
      if (o.mapped) copy_(s, o.dev, o.mapped, o.bytes);
      else PD_CUDA_CHECK(cudaMemcpyAsync(o.host.get(), o.dev, o.bytes, cudaMemcpyDeviceToHost, s));
    }
  }

  // kWarm -> kReplay with exec_ set, or kEagerOnly with one warning.
  void capture(cudaStream_t s, bool profile, const RunEvents& ev) {
    std::string why;
    cudaError_t e = cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal);
    if (e != cudaSuccess) {
      why = str("cudaStreamBeginCapture: ", cudaGetErrorName(e), ": ", cudaGetErrorString(e));
    } else {
      try {
        enqueue(s, profile, ev, true);
      } catch (const std::exception& ex) {
        why = ex.what();
      } catch (...) {
        why = "unknown exception under capture";
      }
      cudaGraph_t raw = nullptr;
      e = cudaStreamEndCapture(s, &raw);
      Graph graph(raw);
      if (why.empty() && e != cudaSuccess)
        why = str("cudaStreamEndCapture: ", cudaGetErrorName(e), ": ", cudaGetErrorString(e));
      if (why.empty()) {
        cudaGraphExec_t x = nullptr;
        e = cudaGraphInstantiateWithFlags(&x, graph.get(), 0);
        if (e == cudaSuccess) exec_.reset(x);
        else why = str("cudaGraphInstantiateWithFlags: ", cudaGetErrorName(e), ": ", cudaGetErrorString(e));
      }
    }
    if (why.empty()) {
      mode_ = Mode::kReplay;
      return;
    }
    cudaGetLastError();  // capture errors are not sticky; clear them
    mode_ = Mode::kEagerOnly;
    if (log_) log_(PD_LOG_WARN, str(what_, ": no CUDA graph, running eagerly: ", why));
  }

  std::string what_;
  LogFn log_;
  Body body_;
  CopyKernel copy_;
  std::vector<Staging> in_, out_;
  Mode mode_ = Mode::kCold;
  GraphExec exec_;
};

}  // namespace pd::gpu
