// GEMMs on cuBLASLt: one prepared matrix multiplication (LtGemm) per GEMM of a bucket, the
// context's cuBLASLt handle as an owned handle, and the workspace size.
#pragma once

#include "libs.h"  // first: the runtime csrc/gpu/ compiles against

#include <cstdint>

#include "../gpu/resources.h"

namespace pd::cuda {

// cuBLASLt's workspace per context; NVIDIA recommends 32 MiB on Hopper.
constexpr size_t kWorkspace = 32u << 20;

// The context's cuBLASLt handle (destroyed through the dlopen'ed table).
struct LtDestroy {
  void operator()(cublasLtHandle_t h) const { cublasLtDestroy(h); }
};
using LtHandle = gpu::Handle<cublasLtHandle_t, LtDestroy>;
LtHandle make_lt_handle();

// ---- cuBLASLt GEMMs -------------------------------------------------------------------------

// Row-major Y[m, n] (leading dimension ldc) = alpha * op(A)[m, k] * op(B)[k, n], in batches
// with element strides sa, sb, sc, and an optional bias [n] + Relu in the epilogue. cuBLASLt
// is column-major: it computes Y^T = op(B)^T op(A)^T, so its "A" is our B and vice versa.
// float32 (CUBLAS_COMPUTE_32F), or float64 (CUBLAS_COMPUTE_64F; f64, no epilogue: Einsum's).
class LtGemm {
 public:
  LtGemm(cublasLtHandle_t h, bool ta, bool tb, int64_t m, int64_t n, int64_t k, int64_t lda, int64_t ldb,
         int64_t ldc, float alpha, int64_t batch, int64_t sa, int64_t sb, int64_t sc, const float* bias,
         bool relu, size_t workspace, bool f64 = false);
  ~LtGemm() { release(); }
  LtGemm(const LtGemm&) = delete;
  LtGemm& operator=(const LtGemm&) = delete;

  void run(cublasLtHandle_t h, const void* A, const void* B, void* Y, void* ws, size_t ws_size,
           cudaStream_t s) const {
    const float beta = 0.f;
    const double beta64 = 0.0;
    const void* alpha = f64_ ? static_cast<const void*>(&alpha64_) : &alpha_;
    const void* b = f64_ ? static_cast<const void*>(&beta64) : &beta;
    PD_CUBLAS_CHECK(cublasLtMatmul(h, op_, alpha, B, a_, A, b_, b, Y, c_, Y, c_, &algo_, ws, ws_size, s));
  }

 private:
  // The constructor's work; throws, leaving what it made for release().
  void prepare(cublasLtHandle_t h, bool ta, bool tb, int64_t m, int64_t n, int64_t k, int64_t lda, int64_t ldb,
               int64_t ldc, int64_t batch, int64_t sa, int64_t sb, int64_t sc, const float* bias, bool relu,
               size_t workspace);
  void release() {
    if (a_) cublasLtMatrixLayoutDestroy(a_);
    if (b_) cublasLtMatrixLayoutDestroy(b_);
    if (c_) cublasLtMatrixLayoutDestroy(c_);
    if (op_) cublasLtMatmulDescDestroy(op_);
  }

  float alpha_;
  double alpha64_;
  bool f64_;
  cublasLtMatmulDesc_t op_ = nullptr;
  cublasLtMatrixLayout_t a_ = nullptr, b_ = nullptr, c_ = nullptr;
  cublasLtMatmulAlgo_t algo_{};
};

}  // namespace pd::cuda
