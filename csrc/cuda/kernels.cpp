#include "kernels.h"

namespace pd::cuda {

namespace {

// The source of csrc/cuda/kernels.cuh, embedded by CMake as a raw string literal. Every kernel
// is a grid-stride loop over its elements, so any grid size is correct; the host picks one
// block per 256 elements up to a cap.
const char* const kSource =
#include "pd_kernel_source.inc"
    ;


}  // namespace

const std::string& kernel_source() {
  static const std::string s = kSource;
  return s;
}

const std::vector<std::string>& kernel_names() {
  static const std::vector<std::string> names = {
      "pd_unary_f32",   "pd_bias_act_f32", "pd_binary_f32",  "pd_binary_i64",    "pd_compare_f32",
      "pd_compare_i64", "pd_logic_bool",   "pd_not_bool",    "pd_cast",          "pd_copy_1",
      "pd_copy_2",      "pd_copy_4",       "pd_copy_8",      "pd_gather_1",      "pd_gather_2",
      "pd_gather_4",    "pd_gather_8",     "pd_softmax_f32", "pd_argext_f32",    "pd_im2col_f32",
      "pd_lstm_cell_f32"};
  return names;
}

std::string copy_kernel(size_t esize) {
  return esize == 1 || esize == 2 || esize == 4 || esize == 8 ? "pd_copy_" + std::to_string(esize) : "";
}

std::string gather_kernel(size_t esize) {
  return esize == 1 || esize == 2 || esize == 4 || esize == 8 ? "pd_gather_" + std::to_string(esize) : "";
}

}  // namespace pd::cuda
