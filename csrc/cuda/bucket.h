// One shape bucket of a CUDA context: the device arena (inputs and intermediates), the
// lowered program (lower.h) and its staged run (../gpu/staged_run.h: pinned staging, eager
// first run, graph capture, replay, and the one fallback to eager runs).
#pragma once

#include "libs.h"  // first: the runtime csrc/gpu/ compiles against

#include <string>
#include <vector>

#include "../core/backend.h"
#include "../core/program.h"
#include "../gpu/staged_run.h"
#include "engine.h"
#include "lower.h"

namespace pd::cuda {

// Staging of an input or output at or under this size is pinned host memory mapped into the
// device's address space, moved by a copy kernel inside the run's CUDA graph: a kernel node
// starts in about a microsecond, where a small copy-engine transfer costs several, which is
// most of a batch-1 run (docs/gpu.md, measured on an H100). Larger staging uses asynchronous
// DMA copies, which reach the link's bandwidth. The backend parameter cuda.mapped_io=false
// turns mapping off.
constexpr size_t kMappedStagingMax = 64 << 10;

class Bucket {
 public:
  // lt, ws: the context's cuBLASLt handle and workspace.
  Bucket(const CudaEngine& e, BucketKey key, cublasLtHandle_t lt, void* ws);
  Bucket(const Bucket&) = delete;
  Bucket& operator=(const Bucket&) = delete;

  const BucketKey& key() const { return key_; }
  // Device memory of the bucket: the arena, per-step scratch (im2col, LSTM gates) and folded
  // constants of its own.
  size_t bytes() const { return arena_bytes_ + plan_.extra_bytes_; }

  // One run on stream s; outputs point into the bucket's pinned staging (valid until its next
  // run). PD_ERR_INVALID_ARG when a Gather index was out of range.
  void run(cudaStream_t s, bool profile, const gpu::RunEvents& ev, const pd_tensor* inputs, pd_tensor* outputs,
           double* dev_ms);

  gpu::StagedRun::Mode mode() const { return run_.mode(); }

 private:
  gpu::Staging staging(void* dev, size_t bytes) const {
    return gpu::stage(dev, bytes, e_.run_params().mapped_io && bytes <= kMappedStagingMax);
  }

  const CudaEngine& e_;
  BucketKey key_;
  size_t arena_bytes_ = 0;
  DevMem arena_;
  Lowering plan_;
  gpu::StagedRun run_;
  std::vector<Value> out_values_;
  std::vector<const void*> host_in_;
};

}  // namespace pd::cuda
