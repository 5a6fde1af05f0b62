// The CUDA lowering of the shape and indexing ops (csrc/core/ops/shape.cpp runs them on the CPU):
// members of Lowering (../lower.h), each adding a node's steps to its bucket's program.
#include <algorithm>
#include <limits>
#include <map>
#include <string>

#include "../../core/activation.h"
#include "../lower.h"

namespace pd::cuda {

// y[out_off + Σ i_d * ys_d] = x[in_off + Σ i_d * xs_d] over dims (element offsets and strides).
void Lowering::copy(const Value& x, int64_t in_off, const std::vector<int64_t>& xs, const Value& y, int64_t out_off,
          const std::vector<int64_t>& ys, const Shape& dims) {
  const size_t es = dtype_size(x.dtype);
  const std::string name = copy_kernel(es);
  if (name.empty()) fail(PD_ERR_UNSUPPORTED, "no CUDA copy for ", es, "-byte elements");
  CUfunction k = fn(name.c_str());
  const long long cnt = numel(dims);
  if (cnt == 0) return;
  Strided p = strided(dims, xs, ys);
  const void* src = static_cast<const char*>(x.dev) + in_off * es;
  void* dst = static_cast<char*>(y.dev) + out_off * es;
  steps_.push_back([=](cudaStream_t s) { launch(k, cnt, s, src, dst, cnt, p); });
}

void Lowering::concat(const InferCtx& c) {
  const Node& n = c.node;
  const Value y = val(n.outputs[0]);
  const int64_t r = static_cast<int64_t>(y.shape.size());
  const int64_t axis = c.axis(n.attr_int("axis", 0), r);
  const std::vector<int64_t> ys = strides_of(y.shape);
  int64_t off = 0;
  for (const auto& in : n.inputs) {
    if (in.empty()) continue;
    const Value x = val(in);
    copy(x, 0, strides_of(x.shape), y, off * ys[axis], ys, x.shape);
    off += x.shape[axis];
  }
}

void Lowering::split(const InferCtx& c) {
  const Node& n = c.node;
  const Value x = val(n.inputs[0]);
  const int64_t axis = c.axis(n.attr_int("axis", 0), static_cast<int64_t>(x.shape.size()));
  const std::vector<int64_t> xs = strides_of(x.shape);
  int64_t off = 0;
  for (const auto& o : n.outputs) {
    if (o.empty()) continue;
    const Value y = val(o);
    copy(x, off * xs[axis], xs, y, 0, strides_of(y.shape), y.shape);
    off += y.shape[axis];
  }
}

std::vector<int64_t> Lowering::ints(const InferCtx& c, size_t i, const char* what) {
  return c.const_input(i, what).to_ints();
}

void Lowering::slice(const InferCtx& c) {
  const Node& n = c.node;
  const Value x = val(n.inputs[0]), y = val(n.outputs[0]);
  const Shape& xsh = x.shape;
  const int64_t r = static_cast<int64_t>(xsh.size());
  std::vector<int64_t> starts, ends, axes, steps;
  if (c.opset() < 10) {
    starts = n.attr_ints("starts");
    ends = n.attr_ints("ends");
    axes = n.attr_ints("axes");
  } else {
    starts = ints(c, 1, "starts");
    ends = ints(c, 2, "ends");
    if (c.has_input(3)) axes = ints(c, 3, "axes");
    if (c.has_input(4)) steps = ints(c, 4, "steps");
  }
  if (axes.empty())
    for (size_t i = 0; i < starts.size(); ++i) axes.push_back(static_cast<int64_t>(i));
  if (steps.empty()) steps.assign(starts.size(), 1);
  const std::vector<int64_t> xst = strides_of(xsh);
  std::vector<int64_t> st = xst;
  int64_t in_off = 0;
  for (size_t i = 0; i < axes.size(); ++i) {
    const int64_t ax = c.axis(axes[i], r), d = xsh[ax], step = steps[i];
    int64_t b = starts[i];
    if (b < 0) b += d;
    b = step > 0 ? std::clamp<int64_t>(b, 0, d) : std::clamp<int64_t>(b, 0, std::max<int64_t>(d - 1, 0));
    in_off += b * xst[ax];
    st[ax] = xst[ax] * step;
  }
  copy(x, in_off, st, y, 0, strides_of(y.shape), y.shape);
}

void Lowering::transpose(const InferCtx& c) {
  const Value x = val(c.node.inputs[0]), y = val(c.node.outputs[0]);
  std::vector<int64_t> perm = c.node.attr_ints("perm");
  if (perm.empty())
    for (size_t i = 0; i < x.shape.size(); ++i) perm.push_back(static_cast<int64_t>(x.shape.size() - 1 - i));
  const std::vector<int64_t> xst = strides_of(x.shape);
  std::vector<int64_t> st(perm.size());
  for (size_t i = 0; i < perm.size(); ++i) st[i] = xst[perm[i]];
  copy(x, 0, st, y, 0, strides_of(y.shape), y.shape);
}

void Lowering::expand(const InferCtx& c) {
  const Value x = val(c.node.inputs[0]), y = val(c.node.outputs[0]);
  copy(x, 0, broadcast_strides(x.shape, y.shape), y, 0, strides_of(y.shape), y.shape);
}

void Lowering::gather(const InferCtx& c) {
  const Node& n = c.node;
  const Value x = val(n.inputs[0]), idx = val(n.inputs[1]), y = val(n.outputs[0]);
  const int64_t r = static_cast<int64_t>(x.shape.size());
  const int64_t axis = c.axis(n.attr_int("axis", 0), r);
  long long outer = 1, inner = 1;
  for (int64_t d = 0; d < axis; ++d) outer *= x.shape[d];
  for (int64_t d = axis + 1; d < r; ++d) inner *= x.shape[d];
  const long long len = x.shape[axis], nidx = numel(idx.shape);
  const std::string name = gather_kernel(dtype_size(x.dtype));
  if (name.empty()) fail(PD_ERR_UNSUPPORTED, n.describe(), ": element size");
  CUfunction k = fn(name.c_str());
  const int idx64 = idx.dtype == DType::I64 ? 1 : 0;
  needs_flag_ = true;
  if (!flag_dev_) flag_dev_ = dev_alloc(sizeof(int));
  int* bad = static_cast<int*>(flag_dev_.get());
  const long long cnt = outer * nidx * inner;
  steps_.push_back([=](cudaStream_t s) {
    launch(k, cnt, s, x.dev, static_cast<const void*>(idx.dev), idx64, y.dev, outer, len, nidx, inner, bad);
  });
}

}  // namespace pd::cuda
