// The CUDA backend's kernels as NVRTC source, and the codes their parameters use. Host-only:
// no CUDA header, so the source and the tables are unit-tested without a GPU
// (csrc/tests/cuda_host_test.cpp; with the toolkit present the test also compiles the source
// with NVRTC for several architectures).
//
// One module holds every kernel; the engine compiles it once, at build, for the exact
// architecture of its device (docs/gpu.md says why NVRTC rather than nvcc ahead of time).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace pd::cuda {

// Unary op codes of pd_unary_f32. 0..10 equal pd::Act (activation.h), so a fused op's
// activation is passed as is.
enum UnaryCode : int {
  kUExp = 100, kULog, kUNeg, kUAbs, kUSqrt, kUReciprocal, kUFloor, kUCeil, kUErf, kUSin, kUCos,
};

// Binary op codes of pd_binary_f32 / pd_binary_i64 / pd_compare_* / pd_logic_bool.
enum BinaryCode : int {
  kBAdd = 0, kBSub, kBMul, kBDiv, kBPow, kBMax, kBMin,
  kBEqual = 20, kBLess, kBGreater, kBLessOrEqual, kBGreaterOrEqual,
  kBAnd = 40, kBOr, kBXor,
};

// Reduction codes of pd_softmax_f32.
enum SoftmaxCode : int { kSoftmax = 0, kLogSoftmax = 1 };

constexpr int kMaxRank = 8;

// Iteration plan of the strided kernels, passed by value: the linear index of an element of
// dims (row-major) is decomposed and dotted with the strides of up to three operands.
// rank == 0 means "contiguous, no broadcast": operand offsets equal the linear index.
struct Strided {
  int32_t rank = 0;
  int32_t pad_ = 0;
  int64_t dims[kMaxRank] = {};
  int64_t s0[kMaxRank] = {};
  int64_t s1[kMaxRank] = {};
  int64_t s2[kMaxRank] = {};
};

// The NVRTC source of the module (the same string for every model).
const std::string& kernel_source();

// Names of the kernels the backend launches; each is an extern "C" __global__ function of
// kernel_source().
const std::vector<std::string>& kernel_names();

// Name of the strided-copy kernel for elements of esize bytes (1, 2, 4 or 8); "" otherwise.
std::string copy_kernel(size_t esize);
// Name of the gather kernel for elements of esize bytes; "" otherwise.
std::string gather_kernel(size_t esize);

}  // namespace pd::cuda
