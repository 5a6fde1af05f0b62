// Shape and data-movement operators (domain ai.onnx): Shape, Size, Reshape, Flatten, Squeeze,
// Unsqueeze, Gather, GatherElements, Expand, ConstantOfShape, Concat, Slice, Split, Transpose,
// Pad, Tile, Range, Constant.
//
// Every kernel here moves whole elements as bytes (by element size), so each op supports every
// fixed-size data type, float16/bfloat16 and bool included, without per-type code. Only Range
// (arithmetic) and the conversion of Pad's float `value` attribute (opset < 11) look at types.
// Plans (strides, run lengths, index maps) are built in make(); run() is loops of memcpy or
// strided element copies and never allocates.
//
// Reshape, Flatten, Squeeze and Unsqueeze are alias ops (kOpAlias): the program shares the
// input's bytes and runs nothing.
//
// Values that decide an output shape (Reshape's shape, Expand's shape, Tile's repeats, Slice's
// starts/ends/axes/steps, Split's split, Squeeze/Unsqueeze axes, Pad's pads/axes,
// ConstantOfShape's shape, Range's inputs) are read with InferCtx::const_input: they must be
// constants or graph inputs (which then become shape-tensor inputs of the bucket). Pad's
// constant_value, Gather/GatherElements indices and all data inputs may be computed at run time.
//
// Exceptions to the ONNX node tests: none known (float16/bfloat16 tensors are handled as bytes;
// string tensors are refused as unsupported).

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "../op.h"

namespace pd {
namespace {

// ---------------------------------------------------------------------------------------------
// Byte-level helpers

// Element size of a tensor the data-movement kernels can move; fails for string/undefined.
size_t elem_size(const InferCtx& c, DType t) {
  size_t es = dtype_size(t);
  if (es == 0) c.unsupported("data type ", dtype_name(t), " is not supported");
  return es;
}

template <size_t ES>
inline void strided_copy_n(char* out, int64_t os, const char* in, int64_t is, int64_t n) {
  for (int64_t i = 0; i < n; ++i) std::memcpy(out + i * os, in + i * is, ES);
}

// Copies n elements of es bytes with byte strides is (input) and os (output).
inline void strided_copy(char* out, int64_t os, const char* in, int64_t is, int64_t n, size_t es) {
  if (is == static_cast<int64_t>(es) && os == static_cast<int64_t>(es)) {
    std::memcpy(out, in, static_cast<size_t>(n) * es);
    return;
  }
  switch (es) {
    case 1: strided_copy_n<1>(out, os, in, is, n); break;
    case 2: strided_copy_n<2>(out, os, in, is, n); break;
    case 4: strided_copy_n<4>(out, os, in, is, n); break;
    case 8: strided_copy_n<8>(out, os, in, is, n); break;
    default:
      for (int64_t i = 0; i < n; ++i) std::memcpy(out + i * os, in + i * is, es);
  }
}

// Copies one element of es bytes.
inline void copy_elem(char* out, const char* in, size_t es) {
  switch (es) {
    case 1: *out = *in; break;
    case 2: std::memcpy(out, in, 2); break;
    case 4: std::memcpy(out, in, 4); break;
    case 8: std::memcpy(out, in, 8); break;
    default: std::memcpy(out, in, es);
  }
}

// Fills n elements at out with the es-byte pattern elem (by doubling memcpy).
inline void fill_elems(char* out, int64_t n, const char* elem, size_t es) {
  if (n <= 0) return;
  const size_t total = static_cast<size_t>(n) * es;
  std::memcpy(out, elem, es);
  size_t done = es;
  while (done < total) {
    size_t c = std::min(done, total - done);
    std::memcpy(out + done, out, c);
    done += c;
  }
}

int64_t prod(const Shape& s, size_t from, size_t to) {
  int64_t p = 1;
  for (size_t i = from; i < to; ++i) p *= s[i];
  return p;
}

// A copy of an N-d view of the input (arbitrary element strides, possibly 0 or negative, and an
// offset) into a contiguous output. Dimensions of size 1 are dropped and adjacent dimensions that
// are contiguous in both tensors merged, so that the innermost loop is as long as possible
// (one memcpy when the whole copy is contiguous).
class CopyPlan {
 public:
  CopyPlan() = default;
  CopyPlan(const Shape& out_dims, const std::vector<int64_t>& in_strides, int64_t in_offset,
           size_t es)
      : es_(es), in_off_(in_offset * static_cast<int64_t>(es)) {
    std::vector<int64_t> ost = strides_of(out_dims);
    for (size_t i = 0; i < out_dims.size(); ++i) {
      if (out_dims[i] == 0) {
        empty_ = true;
        return;
      }
      if (out_dims[i] == 1) continue;
      const int64_t d = out_dims[i];
      const int64_t is = in_strides[i] * static_cast<int64_t>(es);
      const int64_t os = ost[i] * static_cast<int64_t>(es);
      if (!dims_.empty() && is_.back() == is * d && os_.back() == os * d) {
        dims_.back() *= d;
        is_.back() = is;
        os_.back() = os;
      } else {
        dims_.push_back(d);
        is_.push_back(is);
        os_.push_back(os);
      }
    }
    if (dims_.empty()) {
      dims_.push_back(1);
      is_.push_back(static_cast<int64_t>(es));
      os_.push_back(static_cast<int64_t>(es));
    }
  }

  void run(const void* in, void* out) const {
    if (empty_) return;
    const char* src = static_cast<const char*>(in) + in_off_;
    char* dst = static_cast<char*>(out);
    const size_t r = dims_.size();
    if (r == 1) {
      strided_copy(dst, os_[0], src, is_[0], dims_[0], es_);
    } else if (r == 2) {
      for (int64_t i = 0; i < dims_[0]; ++i)
        strided_copy(dst + i * os_[0], os_[1], src + i * is_[0], is_[1], dims_[1], es_);
    } else {
      rec(0, src, dst);
    }
  }

 private:
  void rec(size_t d, const char* src, char* dst) const {
    if (d + 1 == dims_.size()) {
      strided_copy(dst, os_[d], src, is_[d], dims_[d], es_);
      return;
    }
    for (int64_t i = 0; i < dims_[d]; ++i) rec(d + 1, src + i * is_[d], dst + i * os_[d]);
  }

  size_t es_ = 0;
  int64_t in_off_ = 0;  // bytes
  bool empty_ = false;
  std::vector<int64_t> dims_, is_, os_;  // strides in bytes
};

std::unique_ptr<Kernel> copy_plan_kernel(CopyPlan plan) {
  return make_kernel([plan = std::move(plan)](RunCtx&, const View* in, View* out) {
    plan.run(in[0].data, out[0].data);
  });
}

// Kernel that writes a value known at specialization (Shape, Size, Constant).
std::unique_ptr<Kernel> make_value_kernel(const InferCtx& c) {
  TensorPtr v = c.out[0].value;
  PD_ASSERT(v);
  return make_kernel([v](RunCtx&, const View*, View* out) {
    if (v->nbytes()) std::memcpy(out[0].data, v->data(), v->nbytes());
  });
}

TensorPtr i64_tensor(const Shape& shape, const std::vector<int64_t>& vals) {
  auto t = std::make_shared<Tensor>(DType::I64, shape);
  std::copy(vals.begin(), vals.end(), t->as<int64_t>());
  return t;
}

// A 1-D integer constant input (axes, pads, shape...).
std::vector<int64_t> ints_input(const InferCtx& c, size_t i, const char* what) {
  const Tensor& t = c.const_input(i, what);
  if (t.shape().size() > 1) c.fail(what, " must be a 1-D tensor, got shape ", shape_str(t.shape()));
  if (t.dtype() != DType::I64 && t.dtype() != DType::I32)
    c.fail(what, " must be int64 or int32, got ", dtype_name(t.dtype()));
  return t.to_ints();
}

// Normalizes axes against rank, failing on out-of-range or repeated axes.
std::vector<int64_t> norm_axes(const InferCtx& c, const std::vector<int64_t>& axes, int64_t rank) {
  std::vector<int64_t> out;
  std::vector<bool> seen(static_cast<size_t>(rank), false);
  for (int64_t a : axes) {
    if (rank == 0 || a < -rank || a >= rank) c.fail("axis ", a, " is out of range for rank ", rank);
    int64_t n = a < 0 ? a + rank : a;
    if (seen[n]) c.fail("axis ", a, " is repeated");
    seen[n] = true;
    out.push_back(n);
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Shape, Size, Constant

void shape_infer(InferCtx& c) {
  const Shape& s = c.input(0).shape;
  const int64_t r = static_cast<int64_t>(s.size());
  int64_t start = c.node.attr_int("start", 0);
  int64_t end = c.node.attr_int("end", r);
  if (start < 0) start += r;
  if (end < 0) end += r;
  start = std::clamp<int64_t>(start, 0, r);
  end = std::clamp<int64_t>(end, 0, r);
  std::vector<int64_t> v;
  for (int64_t i = start; i < end; ++i) v.push_back(s[i]);
  const Shape os{static_cast<int64_t>(v.size())};
  c.out[0] = TensorInfo{DType::I64, os, i64_tensor(os, v)};
}

void size_infer(InferCtx& c) {
  const Shape& s = c.input(0).shape;
  c.out[0] = TensorInfo{DType::I64, Shape{}, i64_tensor(Shape{}, {numel(s)})};
}

void constant_infer(InferCtx& c) {
  const Node& n = c.node;
  static const char* kUnsupported[] = {"sparse_value", "value_string", "value_strings"};
  for (const char* k : kUnsupported)
    if (n.has(k)) c.unsupported("attribute '", k, "' is not supported");
  int given = 0;
  TensorPtr v;
  if (n.has("value")) {
    ++given;
    v = n.attr_tensor("value");
    if (!v) c.fail("attribute 'value' has no tensor");
  }
  if (n.has("value_float")) {
    ++given;
    auto t = std::make_shared<Tensor>(DType::F32, Shape{});
    *t->as<float>() = n.attr_float("value_float", 0.f);
    v = t;
  }
  if (n.has("value_floats")) {
    ++given;
    std::vector<float> f = n.attr_floats("value_floats");
    auto t = std::make_shared<Tensor>(DType::F32, Shape{static_cast<int64_t>(f.size())});
    std::copy(f.begin(), f.end(), t->as<float>());
    v = t;
  }
  if (n.has("value_int")) {
    ++given;
    v = i64_tensor(Shape{}, {n.attr_int("value_int", 0)});
  }
  if (n.has("value_ints")) {
    ++given;
    std::vector<int64_t> i = n.attr_ints("value_ints");
    v = i64_tensor(Shape{static_cast<int64_t>(i.size())}, i);
  }
  if (given != 1) c.fail("exactly one value attribute must be given, got ", given);
  if (v->dtype() == DType::String || dtype_size(v->dtype()) == 0)
    c.unsupported("data type ", dtype_name(v->dtype()), " is not supported");
  c.out[0] = TensorInfo{v->dtype(), v->shape(), v};
}

// ---------------------------------------------------------------------------------------------
// Alias ops: Reshape, Flatten, Squeeze, Unsqueeze

void reshape_infer(InferCtx& c) {
  const TensorInfo& x = c.input(0);
  std::vector<int64_t> spec;
  if (c.has_input(1)) spec = ints_input(c, 1, "shape");
  else if (c.node.has("shape")) spec = c.node.attr_ints("shape");  // opset < 5
  else c.fail("input 1 (shape) is required");
  const bool allowzero = c.opset() >= 14 && c.node.attr_int("allowzero", 0) != 0;
  Shape out(spec.size());
  int64_t neg = -1, known = 1;  // known: product of the non-zero dimensions given
  bool has_zero = false, known_zero = false;
  for (size_t i = 0; i < spec.size(); ++i) {
    int64_t v = spec[i];
    if (v == -1) {
      if (neg >= 0) c.fail("shape ", shape_str(spec), " has more than one -1");
      neg = static_cast<int64_t>(i);
      continue;
    }
    if (v == 0) {
      has_zero = true;
      if (!allowzero) {
        if (i >= x.shape.size())
          c.fail("shape ", shape_str(spec), " copies dimension ", i, " that input shape ",
                 shape_str(x.shape), " does not have");
        v = x.shape[i];
      }
    }
    if (v < 0) c.fail("shape ", shape_str(spec), " has an invalid dimension ", v);
    out[i] = v;
    if (v == 0) known_zero = true;
    else if (!checked_mul(known, v, &known))
      c.fail("shape ", shape_str(spec), " has more elements than a 64-bit count can hold");
  }
  const int64_t total = numel(x.shape);
  if (neg >= 0) {
    if (allowzero && has_zero) c.fail("shape ", shape_str(spec), " has both -1 and 0 with allowzero");
    if (known_zero || total % known != 0)
      c.fail("cannot reshape ", shape_str(x.shape), " to ", shape_str(spec));
    out[neg] = total / known;
  }
  int64_t out_count;
  if (!checked_numel(out, &out_count) || out_count != total)
    c.fail("cannot reshape ", shape_str(x.shape), " to ", shape_str(spec));
  c.out[0] = TensorInfo{x.dtype, out, nullptr};
}

void flatten_infer(InferCtx& c) {
  const TensorInfo& x = c.input(0);
  const int64_t r = static_cast<int64_t>(x.shape.size());
  int64_t a = c.node.attr_int("axis", 1);
  if (a < -r || a > r) c.fail("axis ", a, " is out of range for rank ", r);
  if (a < 0) a += r;
  c.out[0] = TensorInfo{x.dtype, Shape{prod(x.shape, 0, a), prod(x.shape, a, r)}, nullptr};
}

// The axes of Squeeze/Unsqueeze: the attribute before opset 13, the optional input after.
bool squeeze_axes(const InferCtx& c, std::vector<int64_t>* axes) {
  if (c.has_input(1)) {
    *axes = ints_input(c, 1, "axes");
    return true;
  }
  if (c.node.has("axes")) {
    *axes = c.node.attr_ints("axes");
    return true;
  }
  return false;
}

void squeeze_infer(InferCtx& c) {
  const TensorInfo& x = c.input(0);
  const int64_t r = static_cast<int64_t>(x.shape.size());
  std::vector<int64_t> axes;
  std::vector<bool> drop(static_cast<size_t>(r), false);
  if (squeeze_axes(c, &axes) && !axes.empty()) {
    for (int64_t a : norm_axes(c, axes, r)) {
      if (x.shape[a] != 1)
        c.fail("cannot squeeze axis ", a, " of size ", x.shape[a], " (input shape ",
               shape_str(x.shape), ")");
      drop[a] = true;
    }
  } else {
    for (int64_t i = 0; i < r; ++i) drop[i] = x.shape[i] == 1;
  }
  Shape out;
  for (int64_t i = 0; i < r; ++i)
    if (!drop[i]) out.push_back(x.shape[i]);
  c.out[0] = TensorInfo{x.dtype, out, nullptr};
}

void unsqueeze_infer(InferCtx& c) {
  const TensorInfo& x = c.input(0);
  std::vector<int64_t> axes;
  if (!squeeze_axes(c, &axes)) c.fail("axes are required");
  const int64_t r = static_cast<int64_t>(x.shape.size() + axes.size());
  std::vector<bool> ins(static_cast<size_t>(r), false);
  for (int64_t a : norm_axes(c, axes, r)) ins[a] = true;
  Shape out;
  size_t j = 0;
  for (int64_t i = 0; i < r; ++i) out.push_back(ins[i] ? 1 : x.shape[j++]);
  c.out[0] = TensorInfo{x.dtype, out, nullptr};
}

// ---------------------------------------------------------------------------------------------
// Gather, GatherElements

void check_index_type(const InferCtx& c, DType t) {
  if (t != DType::I64 && t != DType::I32)
    c.fail("indices must be int32 or int64, got ", dtype_name(t));
}

template <typename I>
inline int64_t read_index(const void* p, int64_t j) {
  return static_cast<int64_t>(static_cast<const I*>(p)[j]);
}

void gather_infer(InferCtx& c) {
  const TensorInfo& x = c.input(0);
  const TensorInfo& idx = c.input(1);
  elem_size(c, x.dtype);
  check_index_type(c, idx.dtype);
  const int64_t r = static_cast<int64_t>(x.shape.size());
  if (r == 0) c.fail("data must have rank >= 1");
  const int64_t axis = c.axis(c.node.attr_int("axis", 0), r);
  const int64_t n = x.shape[axis];
  if (idx.value) {
    for (int64_t j = 0; j < idx.value->numel(); ++j) {
      int64_t k = idx.value->int_at(j);
      if (k < -n || k >= n) c.fail("index ", k, " is out of range for axis of size ", n);
    }
  }
  Shape out(x.shape.begin(), x.shape.begin() + axis);
  out.insert(out.end(), idx.shape.begin(), idx.shape.end());
  out.insert(out.end(), x.shape.begin() + axis + 1, x.shape.end());
  c.out[0] = TensorInfo{x.dtype, out, nullptr};
}

struct GatherPlan {
  int64_t outer = 0, n = 0, nidx = 0;
  size_t es = 0, inner = 0;  // inner: bytes per gathered slice
  std::string who;           // for run-time errors
};

template <typename Get>
void gather_run(const GatherPlan& p, const char* src, char* dst, Get get) {
  for (int64_t o = 0; o < p.outer; ++o) {
    const char* base = src + static_cast<size_t>(o * p.n) * p.inner;
    for (int64_t j = 0; j < p.nidx; ++j) {
      const char* s = base + static_cast<size_t>(get(j)) * p.inner;
      if (p.inner == p.es) copy_elem(dst, s, p.es);
      else std::memcpy(dst, s, p.inner);
      dst += p.inner;
    }
  }
}

template <typename I>
void gather_dynamic(const GatherPlan& p, const View* in, View* out) {
  const I* ind = static_cast<const I*>(in[1].data);
  // Validate once, then gather without checks.
  for (int64_t j = 0; j < p.nidx; ++j) {
    int64_t k = static_cast<int64_t>(ind[j]);
    if (k < -p.n || k >= p.n)
      fail(PD_ERR_INVALID_ARG, p.who, ": index ", k, " is out of range for axis of size ", p.n);
  }
  gather_run(p, static_cast<const char*>(in[0].data), static_cast<char*>(out[0].data),
             [&](int64_t j) {
               int64_t k = static_cast<int64_t>(ind[j]);
               return k < 0 ? k + p.n : k;
             });
}

std::unique_ptr<Kernel> gather_make(const InferCtx& c) {
  const TensorInfo& x = c.in[0];
  const TensorInfo& idx = c.in[1];
  const int64_t r = static_cast<int64_t>(x.shape.size());
  const int64_t axis = c.axis(c.node.attr_int("axis", 0), r);
  GatherPlan p;
  p.es = dtype_size(x.dtype);
  p.outer = prod(x.shape, 0, axis);
  p.n = x.shape[axis];
  p.inner = static_cast<size_t>(prod(x.shape, axis + 1, r)) * p.es;
  p.nidx = numel(idx.shape);
  p.who = c.node.describe();
  if (idx.value) {
    std::vector<int64_t> k = idx.value->to_ints();
    for (int64_t& v : k) v = v < 0 ? v + p.n : v;
    return make_kernel([p, k = std::move(k)](RunCtx&, const View* in, View* out) {
      gather_run(p, static_cast<const char*>(in[0].data), static_cast<char*>(out[0].data),
                 [&](int64_t j) { return k[j]; });
    });
  }
  if (idx.dtype == DType::I32)
    return make_kernel([p](RunCtx&, const View* in, View* out) { gather_dynamic<int32_t>(p, in, out); });
  return make_kernel([p](RunCtx&, const View* in, View* out) { gather_dynamic<int64_t>(p, in, out); });
}

void gather_elements_infer(InferCtx& c) {
  const TensorInfo& x = c.input(0);
  const TensorInfo& idx = c.input(1);
  elem_size(c, x.dtype);
  check_index_type(c, idx.dtype);
  const int64_t r = static_cast<int64_t>(x.shape.size());
  if (r == 0) c.fail("data must have rank >= 1");
  if (idx.shape.size() != x.shape.size())
    c.fail("indices rank ", idx.shape.size(), " differs from data rank ", r);
  const int64_t axis = c.axis(c.node.attr_int("axis", 0), r);
  for (int64_t d = 0; d < r; ++d)
    if (d != axis && idx.shape[d] > x.shape[d])
      c.fail("indices shape ", shape_str(idx.shape), " exceeds data shape ", shape_str(x.shape));
  if (idx.value) {
    const int64_t n = x.shape[axis];
    for (int64_t j = 0; j < idx.value->numel(); ++j) {
      int64_t k = idx.value->int_at(j);
      if (k < -n || k >= n) c.fail("index ", k, " is out of range for axis of size ", n);
    }
  }
  c.out[0] = TensorInfo{x.dtype, idx.shape, nullptr};
}

struct GatherElementsPlan {
  Shape ishape;
  std::vector<int64_t> istride;  // elements of indices
  std::vector<int64_t> xstride;  // bytes of data
  int64_t axis = 0, n = 0;
  size_t es = 0;
  std::string who;

  template <typename I>
  void rec(size_t d, const I* ind, const char* xbase, char*& out) const {
    const int64_t len = ishape[d];
    if (d + 1 == ishape.size()) {
      const bool at_axis = static_cast<int64_t>(d) == axis;
      for (int64_t j = 0; j < len; ++j) {
        int64_t k = static_cast<int64_t>(ind[j]);
        if (k < -n || k >= n)
          fail(PD_ERR_INVALID_ARG, who, ": index ", k, " is out of range for axis of size ", n);
        if (k < 0) k += n;
        const char* s = xbase + k * xstride[axis] + (at_axis ? 0 : j * xstride[d]);
        copy_elem(out, s, es);
        out += es;
      }
      return;
    }
    for (int64_t j = 0; j < len; ++j)
      rec(d + 1, ind + j * istride[d],
          static_cast<int64_t>(d) == axis ? xbase : xbase + j * xstride[d], out);
  }
};

std::unique_ptr<Kernel> gather_elements_make(const InferCtx& c) {
  const TensorInfo& x = c.in[0];
  const TensorInfo& idx = c.in[1];
  GatherElementsPlan p;
  p.es = dtype_size(x.dtype);
  p.axis = c.axis(c.node.attr_int("axis", 0), static_cast<int64_t>(x.shape.size()));
  p.n = x.shape[p.axis];
  p.ishape = idx.shape;
  p.istride = strides_of(idx.shape);
  p.xstride = strides_of(x.shape);
  for (int64_t& s : p.xstride) s *= static_cast<int64_t>(p.es);
  p.who = c.node.describe();
  const bool i32 = idx.dtype == DType::I32;
  return make_kernel([p, i32](RunCtx&, const View* in, View* out) {
    if (numel(p.ishape) == 0) return;
    char* dst = static_cast<char*>(out[0].data);
    const char* src = static_cast<const char*>(in[0].data);
    if (i32) p.rec(0, static_cast<const int32_t*>(in[1].data), src, dst);
    else p.rec(0, static_cast<const int64_t*>(in[1].data), src, dst);
  });
}

// ---------------------------------------------------------------------------------------------
// Expand, Tile, Transpose, Slice (strided copies)

void expand_infer(InferCtx& c) {
  const TensorInfo& x = c.input(0);
  elem_size(c, x.dtype);
  std::vector<int64_t> shape = ints_input(c, 1, "shape");
  for (int64_t d : shape)
    if (d < 0) c.fail("shape ", shape_str(shape), " has a negative dimension");
  c.out[0] = TensorInfo{x.dtype, broadcast(c, x.shape, shape), nullptr};
}

std::unique_ptr<Kernel> expand_make(const InferCtx& c) {
  const Shape& out = c.out[0].shape;
  return copy_plan_kernel(
      CopyPlan(out, broadcast_strides(c.in[0].shape, out), 0, dtype_size(c.in[0].dtype)));
}

void tile_infer(InferCtx& c) {
  const TensorInfo& x = c.input(0);
  elem_size(c, x.dtype);
  std::vector<int64_t> rep = ints_input(c, 1, "repeats");
  if (rep.size() != x.shape.size())
    c.fail("repeats has ", rep.size(), " values for an input of rank ", x.shape.size());
  Shape out(x.shape.size());
  for (size_t i = 0; i < rep.size(); ++i) {
    if (rep[i] < 0) c.fail("repeats ", shape_str(rep), " has a negative value");
    if (!checked_mul(x.shape[i], rep[i], &out[i]))
      c.fail("repeats ", shape_str(rep), " make dimension ", i, " larger than a 64-bit count can hold");
  }
  c.out[0] = TensorInfo{x.dtype, out, nullptr};
}

std::unique_ptr<Kernel> tile_make(const InferCtx& c) {
  // Tile is a broadcast over the interleaved shape [r0, d0, r1, d1, ...] with stride 0 on
  // every repeat dimension.
  const Shape& xs = c.in[0].shape;
  std::vector<int64_t> rep = c.in[1].value->to_ints();
  std::vector<int64_t> xst = strides_of(xs);
  Shape dims;
  std::vector<int64_t> st;
  for (size_t i = 0; i < xs.size(); ++i) {
    dims.push_back(rep[i]);
    st.push_back(0);
    dims.push_back(xs[i]);
    st.push_back(xst[i]);
  }
  return copy_plan_kernel(CopyPlan(dims, st, 0, dtype_size(c.in[0].dtype)));
}

std::vector<int64_t> transpose_perm(const InferCtx& c, size_t r) {
  std::vector<int64_t> perm = c.node.attr_ints("perm");
  if (!c.node.has("perm") || (perm.empty() && r > 0)) {
    perm.resize(r);
    for (size_t i = 0; i < r; ++i) perm[i] = static_cast<int64_t>(r - 1 - i);
  }
  if (perm.size() != r) c.fail("perm has ", perm.size(), " values for an input of rank ", r);
  std::vector<bool> seen(r, false);
  for (int64_t& p : perm) {
    const int64_t rank = static_cast<int64_t>(r);
    if (p < -rank || p >= rank || seen[p < 0 ? p + rank : p])
      c.fail("perm ", shape_str(perm), " is not a permutation");
    if (p < 0) p += rank;
    seen[p] = true;
  }
  return perm;
}

void transpose_infer(InferCtx& c) {
  const TensorInfo& x = c.input(0);
  elem_size(c, x.dtype);
  std::vector<int64_t> perm = transpose_perm(c, x.shape.size());
  Shape out(perm.size());
  for (size_t i = 0; i < perm.size(); ++i) out[i] = x.shape[perm[i]];
  c.out[0] = TensorInfo{x.dtype, out, nullptr};
}

std::unique_ptr<Kernel> transpose_make(const InferCtx& c) {
  const Shape& xs = c.in[0].shape;
  std::vector<int64_t> perm = transpose_perm(c, xs.size());
  std::vector<int64_t> xst = strides_of(xs), st(perm.size());
  for (size_t i = 0; i < perm.size(); ++i) st[i] = xst[perm[i]];
  return copy_plan_kernel(CopyPlan(c.out[0].shape, st, 0, dtype_size(c.in[0].dtype)));
}

struct SliceSpec {
  Shape out;
  std::vector<int64_t> start, step;
};

SliceSpec slice_spec(const InferCtx& c) {
  const Shape& xs = c.input(0).shape;
  const int64_t r = static_cast<int64_t>(xs.size());
  std::vector<int64_t> starts, ends, axes, steps;
  bool has_axes = false, has_steps = false;
  if (c.opset() < 10) {
    starts = c.node.attr_ints("starts");
    ends = c.node.attr_ints("ends");
    has_axes = c.node.has("axes");
    if (has_axes) axes = c.node.attr_ints("axes");
  } else {
    starts = ints_input(c, 1, "starts");
    ends = ints_input(c, 2, "ends");
    has_axes = c.has_input(3);
    if (has_axes) axes = ints_input(c, 3, "axes");
    has_steps = c.has_input(4);
    if (has_steps) steps = ints_input(c, 4, "steps");
  }
  if (starts.size() != ends.size())
    c.fail("starts has ", starts.size(), " values but ends has ", ends.size());
  if (!has_axes) {
    axes.resize(starts.size());
    for (size_t i = 0; i < axes.size(); ++i) axes[i] = static_cast<int64_t>(i);
  }
  if (!has_steps) steps.assign(starts.size(), 1);
  if (axes.size() != starts.size() || steps.size() != starts.size())
    c.fail("starts, ends, axes and steps must have the same length");
  axes = norm_axes(c, axes, r);

  SliceSpec s;
  s.out = xs;
  s.start.assign(xs.size(), 0);
  s.step.assign(xs.size(), 1);
  for (size_t i = 0; i < axes.size(); ++i) {
    const int64_t a = axes[i], d = xs[a], step = steps[i];
    if (step == 0) c.fail("step of axis ", a, " is 0");
    int64_t b = starts[i], e = ends[i];
    if (b < 0) b += d;
    if (e < 0) e += d;
    int64_t len;
    if (step > 0) {
      b = std::clamp<int64_t>(b, 0, d);
      e = std::clamp<int64_t>(e, 0, d);
      len = e > b ? (e - b + step - 1) / step : 0;
    } else {
      if (d == 0) {
        b = 0;
        len = 0;
      } else {
        b = std::clamp<int64_t>(b, 0, d - 1);
        e = std::clamp<int64_t>(e, -1, d - 1);
        // -step cannot overflow meaningfully: step == INT64_MIN selects at most one element.
        const int64_t ns = step == std::numeric_limits<int64_t>::min()
                               ? std::numeric_limits<int64_t>::max()
                               : -step;
        len = b > e ? (b - e + ns - 1) / ns : 0;
      }
    }
    s.out[a] = len;
    s.start[a] = b;
    s.step[a] = step;
  }
  return s;
}

void slice_infer(InferCtx& c) {
  const TensorInfo& x = c.input(0);
  elem_size(c, x.dtype);
  c.out[0] = TensorInfo{x.dtype, slice_spec(c).out, nullptr};
}

std::unique_ptr<Kernel> slice_make(const InferCtx& c) {
  SliceSpec s = slice_spec(c);
  const Shape& xs = c.in[0].shape;
  std::vector<int64_t> xst = strides_of(xs), st(xs.size());
  int64_t off = 0;
  if (numel(s.out) > 0)
    for (size_t i = 0; i < xs.size(); ++i) {
      off += s.start[i] * xst[i];
      st[i] = s.step[i] * xst[i];
    }
  return copy_plan_kernel(CopyPlan(s.out, st, off, dtype_size(c.in[0].dtype)));
}

// ---------------------------------------------------------------------------------------------
// Concat, Split

void concat_infer(InferCtx& c) {
  const size_t n = c.num_inputs();
  if (n == 0) c.fail("at least one input is required");
  const TensorInfo& x0 = c.input(0);
  elem_size(c, x0.dtype);
  const int64_t r = static_cast<int64_t>(x0.shape.size());
  if (r == 0) c.fail("inputs must have rank >= 1");
  if (!c.node.has("axis")) c.fail("attribute 'axis' is required");
  const int64_t axis = c.axis(c.node.attr_int("axis", 0), r);
  Shape out = x0.shape;
  out[axis] = 0;
  for (size_t k = 0; k < n; ++k) {
    const TensorInfo& x = c.input(k);
    if (x.dtype != x0.dtype)
      c.fail("input ", k, " has type ", dtype_name(x.dtype), ", input 0 has ", dtype_name(x0.dtype));
    bool ok = static_cast<int64_t>(x.shape.size()) == r;
    for (int64_t d = 0; ok && d < r; ++d) ok = d == axis || x.shape[d] == x0.shape[d];
    if (!ok)
      c.fail("input ", k, " shape ", shape_str(x.shape), " does not match input 0 shape ",
             shape_str(x0.shape), " outside axis ", axis);
    if (!checked_add(out[axis], x.shape[axis], &out[axis]))
      c.fail("the inputs' dimensions ", axis, " add up to more than a 64-bit count can hold");
  }
  c.out[0] = TensorInfo{x0.dtype, out, nullptr};
}

std::unique_ptr<Kernel> concat_make(const InferCtx& c) {
  const Shape& out = c.out[0].shape;
  const int64_t r = static_cast<int64_t>(out.size());
  const int64_t axis = c.axis(c.node.attr_int("axis", 0), r);
  const size_t es = dtype_size(c.out[0].dtype);
  const int64_t outer = prod(out, 0, axis);
  const size_t inner = static_cast<size_t>(prod(out, axis + 1, r)) * es;
  std::vector<size_t> runs;
  for (size_t k = 0; k < c.num_inputs(); ++k)
    runs.push_back(static_cast<size_t>(c.in[k].shape[axis]) * inner);
  return make_kernel([outer, runs = std::move(runs)](RunCtx&, const View* in, View* out) {
    char* dst = static_cast<char*>(out[0].data);
    const size_t n = runs.size();
    for (int64_t o = 0; o < outer; ++o)
      for (size_t k = 0; k < n; ++k) {
        const size_t run = runs[k];
        if (!run) continue;
        std::memcpy(dst, static_cast<const char*>(in[k].data) + o * run, run);
        dst += run;
      }
  });
}

std::vector<int64_t> split_sizes(const InferCtx& c, int64_t dim) {
  const int64_t nout = static_cast<int64_t>(c.node.outputs.size());
  std::vector<int64_t> split;
  if (c.has_input(1)) {
    split = ints_input(c, 1, "split");
  } else if (c.node.has("split")) {
    split = c.node.attr_ints("split");
  } else if (c.node.has("num_outputs")) {  // opset 18
    const int64_t n = c.node.attr_int("num_outputs", 0);
    if (n != nout) c.fail("num_outputs is ", n, " but the node has ", nout, " outputs");
    if (n <= 0) c.fail("num_outputs must be positive, got ", n);
    // Chunks of ceil(dim / n); the last one holds what remains.
    const int64_t chunk = (dim + n - 1) / n;
    if (dim - chunk * (n - 1) < 0)
      c.fail("cannot split a dimension of ", dim, " into ", n, " chunks of ", chunk);
    split.assign(static_cast<size_t>(n), chunk);
    split.back() = dim - chunk * (n - 1);
  } else {
    if (nout == 0 || dim % nout != 0)
      c.fail("cannot split a dimension of ", dim, " into ", nout, " equal parts");
    split.assign(static_cast<size_t>(nout), dim / nout);
  }
  if (static_cast<int64_t>(split.size()) != nout)
    c.fail("split has ", split.size(), " values but the node has ", nout, " outputs");
  int64_t sum = 0;
  for (int64_t s : split) {
    if (s < 0) c.fail("split ", shape_str(split), " has a negative value");
    sum += s;
  }
  if (sum != dim) c.fail("split ", shape_str(split), " does not add up to the dimension ", dim);
  return split;
}

void split_infer(InferCtx& c) {
  const TensorInfo& x = c.input(0);
  elem_size(c, x.dtype);
  const int64_t r = static_cast<int64_t>(x.shape.size());
  if (r == 0) c.fail("input must have rank >= 1");
  const int64_t axis = c.axis(c.node.attr_int("axis", 0), r);
  std::vector<int64_t> split = split_sizes(c, x.shape[axis]);
  for (size_t k = 0; k < split.size(); ++k) {
    Shape s = x.shape;
    s[axis] = split[k];
    c.out[k] = TensorInfo{x.dtype, s, nullptr};
  }
}

std::unique_ptr<Kernel> split_make(const InferCtx& c) {
  const Shape& xs = c.in[0].shape;
  const int64_t r = static_cast<int64_t>(xs.size());
  const int64_t axis = c.axis(c.node.attr_int("axis", 0), r);
  const size_t es = dtype_size(c.in[0].dtype);
  const int64_t outer = prod(xs, 0, axis);
  const size_t inner = static_cast<size_t>(prod(xs, axis + 1, r)) * es;
  std::vector<size_t> runs;
  for (int64_t s : split_sizes(c, xs[axis])) runs.push_back(static_cast<size_t>(s) * inner);
  return make_kernel([outer, runs = std::move(runs)](RunCtx&, const View* in, View* out) {
    const char* src = static_cast<const char*>(in[0].data);
    const size_t n = runs.size();
    for (int64_t o = 0; o < outer; ++o)
      for (size_t k = 0; k < n; ++k) {
        const size_t run = runs[k];
        if (run && out[k].data) std::memcpy(static_cast<char*>(out[k].data) + o * run, src, run);
        src += run;
      }
  });
}

// ---------------------------------------------------------------------------------------------
// Pad

enum class PadMode { Constant, Reflect, Edge, Wrap };

struct PadSpec {
  PadMode mode = PadMode::Constant;
  std::vector<int64_t> before, after;  // per dimension
  Shape out;
};

PadSpec pad_spec(const InferCtx& c) {
  const Shape& xs = c.input(0).shape;
  const int64_t r = static_cast<int64_t>(xs.size());
  PadSpec s;
  const std::string mode = c.node.attr_string("mode", "constant");
  if (mode == "constant") s.mode = PadMode::Constant;
  else if (mode == "reflect") s.mode = PadMode::Reflect;
  else if (mode == "edge") s.mode = PadMode::Edge;
  else if (mode == "wrap") s.mode = PadMode::Wrap;
  else c.fail("unknown mode '", mode, "'");
  std::vector<int64_t> pads;
  if (c.opset() < 11) {
    if (!c.node.has("pads")) c.fail("attribute 'pads' is required");
    pads = c.node.attr_ints("pads");
  } else {
    pads = ints_input(c, 1, "pads");
  }
  std::vector<int64_t> axes;
  if (c.has_input(3)) {
    axes = norm_axes(c, ints_input(c, 3, "axes"), r);
  } else {
    for (int64_t i = 0; i < r; ++i) axes.push_back(i);
  }
  const size_t na = axes.size();
  if (pads.size() != 2 * na)
    c.fail("pads has ", pads.size(), " values; expected ", 2 * na);
  s.before.assign(xs.size(), 0);
  s.after.assign(xs.size(), 0);
  for (size_t i = 0; i < na; ++i) {
    s.before[axes[i]] = pads[i];
    s.after[axes[i]] = pads[i + na];
  }
  s.out = xs;
  for (int64_t d = 0; d < r; ++d) {
    if (!checked_add(xs[d], s.before[d], &s.out[d]) || !checked_add(s.out[d], s.after[d], &s.out[d]))
      c.fail("pads ", shape_str(pads), " overflow dimension ", d);
    if (s.out[d] < 0) c.fail("pads ", shape_str(pads), " remove more than dimension ", d, " holds");
    if (s.mode != PadMode::Constant && xs[d] == 0 && s.out[d] > 0)
      c.fail("cannot pad an empty dimension in mode '", mode, "'");
  }
  return s;
}

struct ConvertFloat {
  double v;
  char* out;
  template <typename T>
  void operator()() const {
    T x = static_cast<T>(v);
    std::memcpy(out, &x, sizeof(T));
  }
};

// Writes the float value converted to dtype t into out (Pad's `value` attribute).
void float_to_bytes(const InferCtx& c, DType t, double v, char* out) {
  if (t == DType::F16) {
    uint16_t h = float_to_half(static_cast<float>(v));
    std::memcpy(out, &h, 2);
    return;
  }
  if (t == DType::BF16) {
    uint16_t h = float_to_bf16(static_cast<float>(v));
    std::memcpy(out, &h, 2);
    return;
  }
  dispatch_all(t, c.node.describe().c_str(), ConvertFloat{v, out});
}

void pad_infer(InferCtx& c) {
  const TensorInfo& x = c.input(0);
  elem_size(c, x.dtype);
  PadSpec s = pad_spec(c);
  if (c.opset() >= 11 && c.has_input(2)) {
    const TensorInfo& v = c.in[2];
    if (v.dtype != x.dtype)
      c.fail("constant_value has type ", dtype_name(v.dtype), ", data has ", dtype_name(x.dtype));
    if (numel(v.shape) != 1) c.fail("constant_value must be a scalar, got shape ", shape_str(v.shape));
  }
  c.out[0] = TensorInfo{x.dtype, s.out, nullptr};
}

int64_t pad_source(PadMode m, int64_t o, int64_t before, int64_t n) {
  const int64_t i = o - before;
  if (i >= 0 && i < n) return i;
  switch (m) {
    case PadMode::Constant: return -1;
    case PadMode::Edge: return i < 0 ? 0 : n - 1;
    case PadMode::Wrap: return ((i % n) + n) % n;
    case PadMode::Reflect: {
      if (n == 1) return 0;
      const int64_t p = 2 * (n - 1);
      const int64_t k = ((i % p) + p) % p;
      return k < n ? k : p - k;
    }
  }
  return -1;
}

struct PadPlan {
  struct Seg {
    int64_t out_off, in_off, bytes;  // in_off < 0: constant
  };
  size_t es = 0;
  Shape out;
  std::vector<int64_t> ostride;                // bytes
  std::vector<std::vector<int64_t>> map;       // outer dims: input byte offset or -1
  std::vector<Seg> segs;                       // innermost dimension
  bool const_input = false;
  char cval[16] = {};

  void rec(size_t d, const char* src, char* dst, const char* cv) const {
    if (d + 1 == out.size()) {
      for (const Seg& s : segs) {
        if (s.in_off < 0) fill_elems(dst + s.out_off, s.bytes / static_cast<int64_t>(es), cv, es);
        else if (s.bytes == static_cast<int64_t>(es)) copy_elem(dst + s.out_off, src + s.in_off, es);
        else std::memcpy(dst + s.out_off, src + s.in_off, static_cast<size_t>(s.bytes));
      }
      return;
    }
    const std::vector<int64_t>& m = map[d];
    for (int64_t o = 0; o < out[d]; ++o) {
      char* p = dst + o * ostride[d];
      if (m[o] < 0) fill_elems(p, ostride[d] / static_cast<int64_t>(es), cv, es);
      else rec(d + 1, src + m[o], p, cv);
    }
  }
};

std::unique_ptr<Kernel> pad_make(const InferCtx& c) {
  const TensorInfo& x = c.in[0];
  PadSpec s = pad_spec(c);
  PadPlan p;
  p.es = dtype_size(x.dtype);
  p.out = s.out;
  const size_t r = s.out.size();
  const int64_t es = static_cast<int64_t>(p.es);
  p.ostride = strides_of(s.out);
  for (int64_t& v : p.ostride) v *= es;
  std::vector<int64_t> xst = strides_of(x.shape);
  if (c.opset() < 11) float_to_bytes(c, x.dtype, c.node.attr_float("value", 0.f), p.cval);
  else p.const_input = c.has_input(2);
  if (r > 0) {
    for (size_t d = 0; d + 1 < r; ++d) {
      std::vector<int64_t> m(static_cast<size_t>(s.out[d]));
      for (int64_t o = 0; o < s.out[d]; ++o) {
        int64_t k = pad_source(s.mode, o, s.before[d], x.shape[d]);
        m[o] = k < 0 ? -1 : k * xst[d] * es;
      }
      p.map.push_back(std::move(m));
    }
    const size_t d = r - 1;
    int64_t prev = -2;
    for (int64_t o = 0; o < s.out[d]; ++o) {
      const int64_t k = pad_source(s.mode, o, s.before[d], x.shape[d]);
      const bool extend = !p.segs.empty() && ((k < 0 && prev < 0) || (k >= 0 && prev >= 0 && k == prev + 1));
      if (extend) p.segs.back().bytes += es;
      else p.segs.push_back({o * es, k < 0 ? -1 : k * es, es});
      prev = k < 0 ? -1 : k;
    }
  }
  const bool empty = numel(s.out) == 0;
  return make_kernel([p = std::move(p), empty](RunCtx&, const View* in, View* out) {
    if (empty) return;
    const char* cv = p.const_input && in[2].data ? static_cast<const char*>(in[2].data) : p.cval;
    const char* src = static_cast<const char*>(in[0].data);
    char* dst = static_cast<char*>(out[0].data);
    if (p.out.empty()) copy_elem(dst, src, p.es);
    else p.rec(0, src, dst, cv);
  });
}

// ---------------------------------------------------------------------------------------------
// ConstantOfShape, Range

void constant_of_shape_infer(InferCtx& c) {
  std::vector<int64_t> shape = ints_input(c, 0, "shape");
  for (int64_t d : shape)
    if (d < 0) c.fail("shape ", shape_str(shape), " has a negative dimension");
  DType t = DType::F32;
  if (TensorPtr v = c.node.attr_tensor("value")) {
    if (v->numel() != 1) c.fail("attribute 'value' must hold one element, has ", v->numel());
    t = v->dtype();
    elem_size(c, t);
  }
  c.out[0] = TensorInfo{t, shape, nullptr};
}

std::unique_ptr<Kernel> constant_of_shape_make(const InferCtx& c) {
  char elem[16] = {};
  const size_t es = dtype_size(c.out[0].dtype);
  if (TensorPtr v = c.node.attr_tensor("value")) std::memcpy(elem, v->data(), es);
  bool zero = true;
  for (size_t i = 0; i < es; ++i) zero = zero && elem[i] == 0;
  struct Fill {
    char elem[16];
    size_t es;
    bool zero;
  } f;
  std::memcpy(f.elem, elem, sizeof elem);
  f.es = es;
  f.zero = zero;
  return make_kernel([f](RunCtx&, const View*, View* out) {
    if (f.zero) std::memset(out[0].data, 0, out[0].nbytes());
    else fill_elems(static_cast<char*>(out[0].data), out[0].numel(), f.elem, f.es);
  });
}

void range_infer(InferCtx& c) {
  const TensorInfo& s0 = c.input(0);
  const DType t = s0.dtype;
  if (t != DType::F32 && t != DType::F64 && t != DType::I16 && t != DType::I32 && t != DType::I64)
    c.unsupported("data type ", dtype_name(t), " is not supported");
  for (size_t i = 0; i < 3; ++i) {
    const TensorInfo& v = c.input(i);
    if (v.dtype != t) c.fail("input ", i, " has type ", dtype_name(v.dtype), ", input 0 has ", dtype_name(t));
    if (numel(v.shape) != 1) c.fail("input ", i, " must be a scalar, got shape ", shape_str(v.shape));
  }
  const Tensor& start = c.const_input(0, "start");
  const Tensor& limit = c.const_input(1, "limit");
  const Tensor& delta = c.const_input(2, "delta");
  int64_t n;
  if (t == DType::F32 || t == DType::F64) {
    const double s = start.float_at(0), l = limit.float_at(0), d = delta.float_at(0);
    if (d == 0) c.fail("delta is 0");
    const double q = std::ceil((l - s) / d);
    if (!std::isfinite(q)) c.fail("range has no finite length");
    if (q > static_cast<double>(int64_t{1} << 62)) c.fail("range has ", q, " elements, too many");
    n = static_cast<int64_t>(std::max(0.0, q));
  } else {
    const int64_t s = start.int_at(0), l = limit.int_at(0), d = delta.int_at(0);
    if (d == 0) c.fail("delta is 0");
    int64_t diff;
    if (__builtin_sub_overflow(l, s, &diff) || (d == -1 && diff == INT64_MIN))
      c.fail("range from ", s, " to ", l, " has more elements than a 64-bit count can hold");
    int64_t q = diff / d;
    if (q * d != diff && ((diff > 0) == (d > 0))) ++q;  // ceil
    n = std::max<int64_t>(0, q);
  }
  c.out[0] = TensorInfo{t, Shape{n}, nullptr};
}

template <typename T>
void range_run(RunCtx&, const View* in, View* out) {
  const T s = *static_cast<const T*>(in[0].data);
  const T d = *static_cast<const T*>(in[2].data);
  T* o = static_cast<T*>(out[0].data);
  const int64_t n = out[0].numel();
  for (int64_t i = 0; i < n; ++i) o[i] = static_cast<T>(s + static_cast<T>(i) * d);
}

struct RangeMake {
  template <typename T>
  std::unique_ptr<Kernel> operator()() const {
    return make_kernel(range_run<T>);
  }
};

std::unique_ptr<Kernel> range_make(const InferCtx& c) {
  return dispatch_numeric(c.out[0].dtype, c.node.describe().c_str(), RangeMake{});
}

}  // namespace

void register_shape_ops(OpRegistry& r) {
  r.add({"", "Shape", shape_infer, make_value_kernel, kOpNone});
  r.add({"", "Size", size_infer, make_value_kernel, kOpNone});
  r.add({"", "Constant", constant_infer, make_value_kernel, kOpNone});
  r.add({"", "Reshape", reshape_infer, nullptr, kOpAlias});
  r.add({"", "Flatten", flatten_infer, nullptr, kOpAlias});
  r.add({"", "Squeeze", squeeze_infer, nullptr, kOpAlias});
  r.add({"", "Unsqueeze", unsqueeze_infer, nullptr, kOpAlias});
  r.add({"", "Gather", gather_infer, gather_make, kOpNone});
  r.add({"", "GatherElements", gather_elements_infer, gather_elements_make, kOpNone});
  r.add({"", "Expand", expand_infer, expand_make, kOpNone});
  r.add({"", "Tile", tile_infer, tile_make, kOpNone});
  r.add({"", "Transpose", transpose_infer, transpose_make, kOpNone});
  r.add({"", "Slice", slice_infer, slice_make, kOpNone});
  r.add({"", "Concat", concat_infer, concat_make, kOpNone});
  r.add({"", "Split", split_infer, split_make, kOpNone});
  r.add({"", "Pad", pad_infer, pad_make, kOpNone});
  r.add({"", "ConstantOfShape", constant_of_shape_infer, constant_of_shape_make, kOpNone});
  r.add({"", "Range", range_infer, range_make, kOpNone});
}

}  // namespace pd
