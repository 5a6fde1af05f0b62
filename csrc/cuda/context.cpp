#include "context.h"

namespace pd::cuda {

const CudaEngine& CudaContext::on_device(const CudaEngine& e) {
  PD_CUDA_CHECK(cudaSetDevice(e.ordinal()));
  PD_CUDA_CHECK(cudaFree(nullptr));
  return e;
}

CudaContext::CudaContext(const CudaEngine& e)
    : e_(on_device(e)),
      stream_(gpu::make_stream()),
      lt_(make_lt_handle()),
      ws_(gpu::dev_alloc(kWorkspace)),
      ev0_(gpu::make_event()),
      ev1_(gpu::make_event()) {}

CudaContext::~CudaContext() {
  cudaSetDevice(e_.ordinal());
  cudaStreamSynchronize(stream_.get());
  buckets_.clear();
}

void CudaContext::run(const pd_tensor* inputs, pd_tensor* outputs) {
  PD_CUDA_CHECK(cudaSetDevice(e_.ordinal()));
  Bucket* b = buckets_.find_or_make([&](const Bucket& k) { return k.key().matches(inputs); },
                                    [&] {
                                      return std::make_unique<Bucket>(e_, BucketKey::of(e_.graph(), inputs), lt_.get(),
                                                                      ws_.get());
                                    });
  b->run(stream_.get(), e_.options().profile, gpu::RunEvents{ev0_.get(), ev1_.get()}, inputs, outputs, &last_ms_);
}

}  // namespace pd::cuda
