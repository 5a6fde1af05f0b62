// A CUDA context: one non-blocking stream, a cuBLASLt handle and workspace, the profiling
// events and the shape buckets (../gpu/bucket_cache.h). Every resource is an owned handle
// (../gpu/resources.h) made in the member initializers, so a constructor that fails half-way
// (out of memory, a failed cudaEventCreate) releases what it made. Used by one thread at a time.
#pragma once

#include "libs.h"  // first: the runtime csrc/gpu/ compiles against

#include <memory>
#include <string>
#include <vector>

#include "../core/backend.h"
#include "../gpu/bucket_cache.h"
#include "../gpu/resources.h"
#include "bucket.h"
#include "engine.h"
#include "gemm.h"

namespace pd::cuda {

class CudaContext final : public BackendContext {
 public:
  explicit CudaContext(const CudaEngine& e);
  ~CudaContext() override;

  // The CUDA backend runs no random ops (support.cpp refuses them), so seeds change nothing.
  void set_seed(uint64_t) override {}
  void set_row_seeds(const uint64_t*, size_t) override {}

  ContextMemory memory() const override {
    ContextMemory m;
    m.arena_bytes = buckets_.bytes();
    m.buckets = buckets_.count();
    return m;
  }

  double last_device_ms() const override { return e_.options().profile ? last_ms_ : -1; }

  void run(const pd_tensor* inputs, pd_tensor* outputs) override;
  // Device pointers in and out (CUDA shared memory): the inputs are copied device->host into
  // the context's scratch and run as run() does; the results are copied host->device into the
  // caller's buffers. Two extra PCIe crossings per tensor; binding the caller's buffers to the
  // bucket's arena directly is not done yet.
  void run_device(const pd_tensor* inputs, pd_tensor* outputs, const std::vector<std::string>& names) override;

 private:
  // Sets the device and makes its primary context current before any member is made.
  static const CudaEngine& on_device(const CudaEngine& e);

  // Declared in the order they are made; released in reverse (buckets first, stream last).
  const CudaEngine& e_;
  gpu::Stream stream_;
  LtHandle lt_;
  gpu::DevMem ws_;
  gpu::Event ev0_, ev1_;
  gpu::BucketCache<Bucket> buckets_;
  double last_ms_ = -1;
  // run_device's host scratch, reused (grows only).
  std::vector<std::vector<unsigned char>> dev_in_;
  std::vector<pd_tensor> dev_args_, dev_res_;
};

}  // namespace pd::cuda
