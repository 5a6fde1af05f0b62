// The CUDA lowering of the reduction ops (csrc/core/ops/reduce.cpp runs them on the CPU):
// members of Lowering (../lower.h), each adding a node's steps to its bucket's program.
#include <algorithm>
#include <limits>
#include <map>
#include <string>

#include "../../core/activation.h"
#include "../lower.h"

namespace pd::cuda {

void Lowering::softmax(const InferCtx& c, bool logsm) {
  const Node& n = c.node;
  const Value x = val(n.inputs[0]), y = val(n.outputs[0]);
  const int64_t r = static_cast<int64_t>(x.shape.size());
  const int64_t axis = c.axis(n.attr_int("axis", c.opset() < 13 ? 1 : -1), std::max<int64_t>(r, 1));
  long long outer = 1, mid = 1, inner = 1;
  for (int64_t d = 0; d < axis; ++d) outer *= x.shape[d];
  if (c.opset() < 13) {
    for (int64_t d = axis; d < r; ++d) mid *= x.shape[d];
  } else {
    mid = r ? x.shape[axis] : 1;
    for (int64_t d = axis + 1; d < r; ++d) inner *= x.shape[d];
  }
  CUfunction k = fn("pd_softmax_f32");
  const int code = logsm ? kLogSoftmax : kSoftmax;
  steps_.push_back([=](cudaStream_t s) { launch(k, outer * inner, s, x.dev, y.dev, outer, mid, inner, code); });
}

void Lowering::argext(const InferCtx& c, bool is_min) {
  const Node& n = c.node;
  const Value x = val(n.inputs[0]), y = val(n.outputs[0]);
  const int64_t r = static_cast<int64_t>(x.shape.size());
  const int64_t axis = c.axis(n.attr_int("axis", 0), r);
  long long outer = 1, inner = 1;
  for (int64_t d = 0; d < axis; ++d) outer *= x.shape[d];
  for (int64_t d = axis + 1; d < r; ++d) inner *= x.shape[d];
  const long long mid = x.shape[axis];
  const int mn = is_min ? 1 : 0, last = n.attr_int("select_last_index", 0) != 0 ? 1 : 0;
  CUfunction k = fn("pd_argext_f32");
  steps_.push_back([=](cudaStream_t s) { launch(k, outer * inner, s, x.dev, y.dev, outer, mid, inner, mn, last); });
}

}  // namespace pd::cuda
