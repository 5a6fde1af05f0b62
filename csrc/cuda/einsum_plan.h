// How the CUDA backend runs an Einsum node, decided on the host from the equation and the
// shapes (no CUDA header: unit-tested without a GPU, and read by support.cpp to refuse what it
// cannot run before anything touches a device). The equation analysis is the cpu backend's
// (csrc/core/einsum_plan.h); this adds the CUDA mapping:
//
//   - One or two inputs become one strided-batched cuBLASLt GEMM (float32 in CUBLAS_COMPUTE_32F,
//     float64 in CUBLAS_COMPUTE_64F), per batch index
//     C[M, N] = A[M, K] * B[K, N]: batch labels are in both inputs and the output, M in the
//     first input and the output, N in the second and the output, K every label the output
//     lacks (an input without a K label broadcasts along it: stride 0). One input is A, with
//     B a vector of ones over K (so traces, diagonals' sums and reductions are a GEMV).
//   - An operand whose batch, row and column labels each collapse to one stride (the strides
//     cuBLASLt takes: batch offset, leading dimension, the other 1) is used in place, as is or
//     transposed; otherwise one strided-copy kernel (pd_copy_4) gathers it into scratch as a
//     contiguous [batch, rows, cols]. Likewise the output is written in place when it is
//     [batch.., M.., N..] up to strides, else the GEMM writes scratch and a copy scatters it.
//   - One input without summed labels (transposes, diagonals) is one strided copy; an output
//     with no elements is nothing; a summed label of size 0 is a memset to zero.
//
// Refused (PD_ERR_UNSUPPORTED naming the node and the equation, so the engine falls back):
// three or more inputs, types other than float32 and float64, a copy of more than kMaxRank dimensions
// after merging, sizes past cuBLASLt's 32-bit ones.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "../core/op.h"

namespace pd::cuda {

// dst[Σ i_d * dst_d] = src[Σ i_d * src_d] over dims (element strides): the pd_copy_4 (float32)
// or pd_copy_8 (float64) kernel.
struct EinsumCopy {
  Shape dims;
  std::vector<int64_t> src, dst;
};

// One GEMM operand (row-major, as Lowering::add_gemm takes them).
struct EinsumOperand {
  static constexpr int kOnes = -1;
  int source = 0;             // input index, or kOnes: a per-bucket vector of ones
  bool pack = false;          // gathered into scratch first (`gather`, scratch = batch * rows * cols)
  EinsumCopy gather;
  bool trans = false;
  int64_t ld = 1;
  int64_t batch_stride = 0;   // elements between batch matrices (0: shared by every batch)
};

struct EinsumCudaPlan {
  enum Kind { kNothing, kZero, kCopy, kGemm };
  Kind kind = kNothing;
  DType dtype = DType::F32;             // of the inputs and the output: F32 or F64
  EinsumCopy copy;                      // kCopy: input 0 -> output
  int64_t batch = 1, m = 1, n = 1, k = 1;
  EinsumOperand a, b;
  bool c_pack = false;                  // the GEMM writes scratch [batch, m, n]; `scatter` moves it
  EinsumCopy scatter;
  int64_t ldc = 1, c_batch_stride = 0;
  int64_t ones = 0;                     // length of the ones vector (one input with sums)

  // Elements of scratch the plan needs: packed A, packed B, packed C.
  int64_t scratch_a() const { return a.pack ? batch * m * k : 0; }
  int64_t scratch_b() const { return b.pack ? batch * k * n : 0; }
  int64_t scratch_c() const { return c_pack ? batch * m * n : 0; }
  // "gemm batch 4 m 9 n 7 k 16: A in place, B in place transposed, C packed" — for tests and logs.
  std::string describe() const;
};

// The plan for the Einsum node of c (its inputs' types and shapes; c.out[0] inferred).
// Throws PD_ERR_UNSUPPORTED naming the node and the equation for what the CUDA backend does
// not run, PD_ERR_INVALID_ARG for a malformed equation.
EinsumCudaPlan plan_einsum(const InferCtx& c);

}  // namespace pd::cuda
