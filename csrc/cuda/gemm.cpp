#include "gemm.h"

namespace pd::cuda {

LtHandle make_lt_handle() {
  cublasLtHandle_t h = nullptr;
  PD_CUBLAS_CHECK(cublasLtCreate(&h));
  return LtHandle(h);
}

LtGemm::LtGemm(cublasLtHandle_t h, bool ta, bool tb, int64_t m, int64_t n, int64_t k, int64_t lda, int64_t ldb,
         int64_t ldc, float alpha, int64_t batch, int64_t sa, int64_t sb, int64_t sc, const float* bias,
         bool relu, size_t workspace, bool f64)
    : alpha_(alpha), alpha64_(alpha), f64_(f64) {
  try {
    prepare(h, ta, tb, m, n, k, lda, ldb, ldc, batch, sa, sb, sc, bias, relu, workspace);
  } catch (...) {
    release();  // a constructor that throws runs no destructor
    throw;
  }
}

void LtGemm::prepare(cublasLtHandle_t h, bool ta, bool tb, int64_t m, int64_t n, int64_t k, int64_t lda, int64_t ldb,
                     int64_t ldc, int64_t batch, int64_t sa, int64_t sb, int64_t sc, const float* bias, bool relu,
                     size_t workspace) {
  if (f64_ && (bias || relu)) fail(PD_ERR_INTERNAL, "a float64 cuBLASLt GEMM has no epilogue here");
  const cudaDataType_t t = f64_ ? CUDA_R_64F : CUDA_R_32F;
  PD_CUBLAS_CHECK(cublasLtMatmulDescCreate(&op_, f64_ ? CUBLAS_COMPUTE_64F : CUBLAS_COMPUTE_32F, t));
  cublasOperation_t lt_ta = tb ? CUBLAS_OP_T : CUBLAS_OP_N, lt_tb = ta ? CUBLAS_OP_T : CUBLAS_OP_N;
  PD_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(op_, CUBLASLT_MATMUL_DESC_TRANSA, &lt_ta, sizeof lt_ta));
  PD_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(op_, CUBLASLT_MATMUL_DESC_TRANSB, &lt_tb, sizeof lt_tb));
  cublasLtEpilogue_t epi = bias ? (relu ? CUBLASLT_EPILOGUE_RELU_BIAS : CUBLASLT_EPILOGUE_BIAS)
                                : (relu ? CUBLASLT_EPILOGUE_RELU : CUBLASLT_EPILOGUE_DEFAULT);
  PD_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(op_, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof epi));
  if (bias)
    PD_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(op_, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof bias));
  PD_CUBLAS_CHECK(tb ? cublasLtMatrixLayoutCreate(&a_, t, k, n, ldb) : cublasLtMatrixLayoutCreate(&a_, t, n, k, ldb));
  PD_CUBLAS_CHECK(ta ? cublasLtMatrixLayoutCreate(&b_, t, m, k, lda) : cublasLtMatrixLayoutCreate(&b_, t, k, m, lda));
  PD_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&c_, t, n, m, ldc));
  if (batch > 1) {
    const int32_t count = static_cast<int32_t>(batch);
    const std::pair<cublasLtMatrixLayout_t, int64_t> layouts[] = {{a_, sb}, {b_, sa}, {c_, sc}};
    for (const auto& [l, stride] : layouts) {
      PD_CUBLAS_CHECK(cublasLtMatrixLayoutSetAttribute(l, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &count, sizeof count));
      PD_CUBLAS_CHECK(cublasLtMatrixLayoutSetAttribute(l, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, &stride,
                                                       sizeof stride));
    }
  }
  cublasLtMatmulPreference_t pref = nullptr;
  PD_CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref));
  uint64_t ws = workspace;
  cublasStatus_t st = cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof ws);
  cublasLtMatmulHeuristicResult_t res{};
  int found = 0;
  if (st == CUBLAS_STATUS_SUCCESS)
    st = cublasLtMatmulAlgoGetHeuristic(h, op_, a_, b_, c_, c_, pref, 1, &res, &found);
  cublasLtMatmulPreferenceDestroy(pref);
  PD_CUBLAS_CHECK(st);
  if (found == 0)
    fail(PD_ERR_UNSUPPORTED, "cuBLASLt has no algorithm for a ", m, "x", n, "x", k, f64_ ? " float64" : " float32",
         " GEMM");
  algo_ = res.algo;
}

}  // namespace pd::cuda
