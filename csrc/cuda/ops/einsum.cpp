// The CUDA lowering of Einsum (csrc/core/ops/einsum.cpp runs it on the CPU): the plan of
// ../einsum_plan.h as steps — strided copies (pd_copy_4 / pd_copy_8) into scratch, one
// strided-batched cuBLASLt GEMM, a copy out of scratch. Scratch and the ones vector are
// allocated here, at bucket build; a run only enqueues (eagerly or under graph capture).
#include <vector>

#include "../einsum_plan.h"
#include "../lower.h"

namespace pd::cuda {

void Lowering::einsum(const InferCtx& c) {
  const Node& nd = c.node;
  const EinsumCudaPlan p = plan_einsum(c);
  const Value y = val(nd.outputs[0]);
  switch (p.kind) {
    case EinsumCudaPlan::kNothing:
      return;
    case EinsumCudaPlan::kZero: {
      void* dst = y.dev;
      const size_t bytes = y.bytes();
      steps_.push_back([=](cudaStream_t s) { PD_CUDA_CHECK(cudaMemsetAsync(dst, 0, bytes, s)); });
      return;
    }
    case EinsumCudaPlan::kCopy:
      copy(val(nd.inputs[0]), 0, p.copy.src, y, 0, p.copy.dst, p.copy.dims);
      return;
    case EinsumCudaPlan::kGemm:
      break;
  }
  const bool f64 = p.dtype == DType::F64;
  const size_t es = dtype_size(p.dtype);
  auto scratch = [&](int64_t elems) {
    const size_t bytes = static_cast<size_t>(elems) * es;
    scratch_.push_back(dev_alloc(bytes));
    extra_bytes_ += bytes;
    return Value{p.dtype, Shape{elems}, scratch_.back().get()};
  };
  auto operand = [&](const EinsumOperand& o, int64_t elems) -> const void* {
    if (o.source == EinsumOperand::kOnes) {
      const size_t n = static_cast<size_t>(p.ones);
      const std::vector<float> ones32(f64 ? 0 : n, 1.f);
      const std::vector<double> ones64(f64 ? n : 0, 1.0);
      consts_.push_back(dev_alloc(n * es));
      extra_bytes_ += n * es;
      // Uploaded once; the bucket synchronizes the device before its first run.
      PD_CUDA_CHECK(cudaMemcpy(consts_.back().get(), f64 ? static_cast<const void*>(ones64.data()) : ones32.data(),
                               n * es, cudaMemcpyHostToDevice));
      return consts_.back().get();
    }
    const Value x = val(nd.inputs[static_cast<size_t>(o.source)]);
    if (!o.pack) return x.dev;
    const Value packed = scratch(elems);
    copy(x, 0, o.gather.src, packed, 0, o.gather.dst, o.gather.dims);
    return packed.dev;
  };
  const void* A = operand(p.a, p.scratch_a());
  const void* B = operand(p.b, p.scratch_b());
  const Value out = p.c_pack ? scratch(p.scratch_c()) : y;
  // m, n, k > 0 here: the output has elements and no summed label is empty.
  gemms_.push_back(std::make_unique<LtGemm>(lt_, p.a.trans, p.b.trans, p.m, p.n, p.k, p.a.ld, p.b.ld, p.ldc, 1.f,
                                            p.batch, p.a.batch_stride, p.b.batch_stride, p.c_batch_stride, nullptr,
                                            false, kWorkspace, f64));
  const LtGemm* g = gemms_.back().get();
  cublasLtHandle_t h = lt_;
  void* ws = ws_;
  void* Y = out.dev;
  steps_.push_back([=](cudaStream_t s) { g->run(h, A, B, Y, ws, kWorkspace, s); });
  if (p.c_pack) copy(out, 0, p.scatter.src, y, 0, p.scatter.dst, p.scatter.dims);
}

}  // namespace pd::cuda
