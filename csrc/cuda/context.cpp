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


namespace {
// A copy between the caller's device memory and ours; a pointer the runtime does not know as
// device memory of this device is the caller's error, named.
void copy_checked(void* dst, const void* src, size_t n, cudaMemcpyKind kind, const char* what,
                  const std::string& name) {
  const cudaError_t e = cudaMemcpy(dst, src, n, kind);
  if (e == cudaErrorInvalidValue || e == cudaErrorInvalidDevicePointer)
    fail(PD_ERR_INVALID_ARG, what, " '", name, "': ", n, " bytes at ", kind == cudaMemcpyDeviceToHost ? src : dst,
         " are not device memory of this device (", cudaGetErrorName(e), ")");
  PD_CUDA_CHECK(e);
}
}  // namespace

void CudaContext::run_device(const pd_tensor* inputs, pd_tensor* outputs, const std::vector<std::string>& names) {
  PD_CUDA_CHECK(cudaSetDevice(e_.ordinal()));
  const auto& g = e_.graph();
  const size_t ni = g.inputs.size(), no = g.outputs.size();
  if (dev_in_.size() < ni) dev_in_.resize(ni);
  dev_args_.assign(inputs, inputs + ni);
  for (size_t i = 0; i < ni; ++i) {
    const size_t n = inputs[i].byte_size;
    if (dev_in_[i].size() < n) dev_in_[i].resize(n);
    if (n) copy_checked(dev_in_[i].data(), inputs[i].data, n, cudaMemcpyDeviceToHost, "input", g.inputs[i].name);
    dev_args_[i].data = dev_in_[i].data();
  }
  dev_res_.assign(no, pd_tensor{});
  run(dev_args_.data(), dev_res_.data());
  for (size_t i = 0; i < no; ++i)
    PD_CHECK_ARG(dev_res_[i].byte_size <= outputs[i].byte_size, "output '", names[i], "': the result needs ",
                 dev_res_[i].byte_size, " bytes, the device buffer given has ", outputs[i].byte_size);
  for (size_t i = 0; i < no; ++i) {
    void* dst = outputs[i].data;
    if (dev_res_[i].byte_size)
      copy_checked(dst, dev_res_[i].data, dev_res_[i].byte_size, cudaMemcpyHostToDevice, "output", names[i]);
    outputs[i] = dev_res_[i];
    outputs[i].data = dst;
  }
}

}  // namespace pd::cuda
