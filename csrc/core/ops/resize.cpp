// Resize (ai.onnx, opsets 11–21): nearest, linear and cubic interpolation of float and double
// tensors, as ONNX Runtime computes them.
//
//   - inputs X, roi (tf_crop_and_resize only), scales, sizes: scales and sizes decide the
//     output shape, so they must be constants or graph inputs (InferCtx::const_input); exactly
//     one of them is given (an empty tensor counts as absent).
//   - coordinate_transformation_mode: half_pixel (default), half_pixel_symmetric (19),
//     pytorch_half_pixel, align_corners, asymmetric, tf_half_pixel_for_nn, tf_crop_and_resize
//     (then extrapolation_value outside the roi).
//   - nearest_mode: round_prefer_floor (default), round_prefer_ceil, floor, ceil.
//   - cubic_coeff_a, exclude_outside.
//   - opset 18: axes (the axes scales/sizes name), keep_aspect_ratio_policy (stretch,
//     not_larger, not_smaller, with sizes), antialias (linear and cubic: the kernel widens by
//     1/scale when downscaling; the edge pixel repeats beyond the edges, as in ONNX's
//     reference and ONNX Runtime).
//
// The interpolation is separable: make() computes, per resized axis and output index, the
// input indices and weights (one for nearest, two for linear, four for cubic, more with
// antialias) and run() applies the axes one after the other through two scratch buffers.
// Resize before opset 11 (no coordinate modes) is refused as unsupported.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "../op.h"

namespace pd {
namespace {

enum class Mode { Nearest, Linear, Cubic };

struct ResizeAttrs {
  Mode mode = Mode::Nearest;
  std::string coord, nearest;
  float cubic_a = -0.75f, extrapolation = 0.f;
  bool exclude_outside = false, antialias = false;
};

ResizeAttrs resize_attrs(const InferCtx& c) {
  ResizeAttrs a;
  const std::string mode = c.node.attr_string("mode", "nearest");
  if (mode == "nearest") a.mode = Mode::Nearest;
  else if (mode == "linear") a.mode = Mode::Linear;
  else if (mode == "cubic") a.mode = Mode::Cubic;
  else c.fail("unknown mode '", mode, "'");
  a.coord = c.node.attr_string("coordinate_transformation_mode", "half_pixel");
  static const char* kCoord[] = {"half_pixel", "half_pixel_symmetric", "pytorch_half_pixel", "align_corners",
                                 "asymmetric", "tf_half_pixel_for_nn", "tf_crop_and_resize"};
  if (std::find(std::begin(kCoord), std::end(kCoord), a.coord) == std::end(kCoord))
    c.fail("unknown coordinate_transformation_mode '", a.coord, "'");
  if (a.coord == "half_pixel_symmetric" && c.opset() < 19)
    c.fail("coordinate_transformation_mode 'half_pixel_symmetric' needs opset 19");
  a.nearest = c.node.attr_string("nearest_mode", "round_prefer_floor");
  if (a.nearest != "round_prefer_floor" && a.nearest != "round_prefer_ceil" && a.nearest != "floor" &&
      a.nearest != "ceil")
    c.fail("unknown nearest_mode '", a.nearest, "'");
  a.cubic_a = c.node.attr_float("cubic_coeff_a", -0.75f);
  a.exclude_outside = c.node.attr_int("exclude_outside", 0) != 0;
  a.extrapolation = c.node.attr_float("extrapolation_value", 0.f);
  a.antialias = c.node.attr_int("antialias", 0) != 0;
  if ((a.antialias || c.node.has("axes") || c.node.has("keep_aspect_ratio_policy")) && c.opset() < 18)
    c.fail("antialias, axes and keep_aspect_ratio_policy need opset 18");
  return a;
}

// Per input dimension: the output size, the scale and the roi [start, end] (normalized).
struct ResizeGeom {
  Shape out;
  std::vector<float> scale, roi_start, roi_end;
  std::vector<bool> resized;
};

ResizeGeom resize_geom(const InferCtx& c, const ResizeAttrs& a) {
  const Shape& xs = c.input(0).shape;
  const int64_t r = static_cast<int64_t>(xs.size());
  if (r == 0) c.fail("input must have rank >= 1");
  std::vector<int64_t> axes;
  if (c.node.has("axes")) {
    std::vector<bool> seen(r, false);
    for (int64_t ax : c.node.attr_ints("axes")) {
      const int64_t n = c.axis(ax, r);
      if (seen[n]) c.fail("axis ", ax, " appears twice in 'axes'");
      seen[n] = true;
      axes.push_back(n);
    }
  } else {
    for (int64_t i = 0; i < r; ++i) axes.push_back(i);
  }
  const size_t na = axes.size();
  ResizeGeom g;
  g.out = xs;
  g.scale.assign(r, 1.f);
  g.roi_start.assign(r, 0.f);
  g.roi_end.assign(r, 1.f);
  g.resized.assign(r, false);
  if (a.coord == "tf_crop_and_resize") {
    if (!c.has_input(1)) c.fail("tf_crop_and_resize needs the roi input");
    const Tensor& roi = c.const_input(1, "roi");
    if (static_cast<size_t>(roi.numel()) != 2 * na) c.fail("roi has ", roi.numel(), " values; expected ", 2 * na);
    for (size_t i = 0; i < na; ++i) {
      g.roi_start[axes[i]] = static_cast<float>(roi.float_at(i));
      g.roi_end[axes[i]] = static_cast<float>(roi.float_at(i + na));
    }
  }
  const bool has_scales = c.has_input(2) && numel(c.in[2].shape) > 0;
  const bool has_sizes = c.has_input(3) && numel(c.in[3].shape) > 0;
  if (has_scales == has_sizes) c.fail("exactly one of scales and sizes must be given");
  if (has_scales) {
    const Tensor& s = c.const_input(2, "scales");
    if (s.dtype() != DType::F32) c.fail("scales must be float");
    if (static_cast<size_t>(s.numel()) != na) c.fail("scales has ", s.numel(), " values; expected ", na);
    for (size_t i = 0; i < na; ++i) {
      const float sc = s.as<float>()[i];
      if (!(sc > 0.f) || !std::isfinite(sc)) c.fail("scales must be positive and finite, got ", sc);
      const int64_t d = axes[i];
      g.scale[d] = sc;
      const float roi_len = a.coord == "tf_crop_and_resize" ? g.roi_end[d] - g.roi_start[d] : 1.f;
      const float o = std::floor(static_cast<float>(xs[d]) * roi_len * sc);
      if (!(o >= 0.f && o < 9.0e15f)) c.fail("scale ", sc, " gives output dimension ", o, " for axis ", d);
      g.out[d] = static_cast<int64_t>(o);
    }
  } else {
    const Tensor& s = c.const_input(3, "sizes");
    if (s.dtype() != DType::I64) c.fail("sizes must be int64");
    if (static_cast<size_t>(s.numel()) != na) c.fail("sizes has ", s.numel(), " values; expected ", na);
    const std::vector<int64_t> sz = s.to_ints();
    for (int64_t v : sz)
      if (v < 0) c.fail("sizes has a negative value ", v);
    const std::string policy = c.node.attr_string("keep_aspect_ratio_policy", "stretch");
    if (policy == "stretch") {
      for (size_t i = 0; i < na; ++i) {
        const int64_t d = axes[i];
        g.out[d] = sz[i];
        g.scale[d] = xs[d] ? static_cast<float>(sz[i]) / static_cast<float>(xs[d]) : 1.f;
      }
    } else if (policy == "not_larger" || policy == "not_smaller") {
      float k = policy == "not_larger" ? 1e30f : 0.f;
      for (size_t i = 0; i < na; ++i) {
        if (!xs[axes[i]]) c.fail("keep_aspect_ratio_policy over a zero-sized axis");
        const float q = static_cast<float>(sz[i]) / static_cast<float>(xs[axes[i]]);
        k = policy == "not_larger" ? std::min(k, q) : std::max(k, q);
      }
      for (size_t i = 0; i < na; ++i) {
        const int64_t d = axes[i];
        g.scale[d] = k;
        const float o = std::round(k * static_cast<float>(xs[d]));
        if (!(k > 0.f && o < 9.0e15f)) c.fail("keep_aspect_ratio_policy gives output dimension ", o, " for axis ", d);
        g.out[d] = static_cast<int64_t>(o);
      }
    } else {
      c.fail("unknown keep_aspect_ratio_policy '", policy, "'");
    }
  }
  for (size_t i = 0; i < na; ++i) g.resized[axes[i]] = true;
  return g;
}

void infer_resize(InferCtx& c) {
  if (c.opset() < 11) c.unsupported("Resize before opset 11 is not supported");
  const TensorInfo& x = c.input(0);
  if (x.dtype != DType::F32 && x.dtype != DType::F64)
    c.unsupported("data type ", dtype_name(x.dtype), " is not supported (float and double only)");
  const ResizeAttrs a = resize_attrs(c);
  const ResizeGeom g = resize_geom(c, a);
  Shape cur = x.shape;
  for (size_t d = 0; d < g.out.size(); ++d) {
    if (x.shape[d] == 0 && g.out[d] > 0) c.fail("cannot resize an empty dimension ", d, " to ", g.out[d]);
    // The kernel resizes axis by axis: an intermediate can be larger than the output.
    cur[d] = g.out[d];
    int64_t n = 0;
    if (!checked_numel(cur, &n) || static_cast<uint64_t>(n) > kMaxTensorBytes / sizeof(double))
      c.unsupported("resizing axis by axis needs an intermediate of shape ", shape_str(cur), ", over the ",
                    kMaxTensorBytes, "-byte limit");
  }
  c.out[0].dtype = x.dtype;
  c.out[0].shape = g.out;
}

// ONNX Runtime's coordinate transforms (float arithmetic, as it computes them).
float original_coord(const std::string& mode, float x, float scale, float len_out, float len_in, float roi_s,
                     float roi_e) {
  if (mode == "half_pixel") return (x + 0.5f) / scale - 0.5f;
  if (mode == "half_pixel_symmetric") {
    const float adjustment = len_out / (scale * len_in);
    const float center = len_in / 2;
    const float offset = center * (1 - adjustment);
    return offset + (x + 0.5f) / scale - 0.5f;
  }
  if (mode == "pytorch_half_pixel") return len_out > 1 ? (x + 0.5f) / scale - 0.5f : 0.f;
  if (mode == "align_corners") return len_out == 1 ? 0.f : x * (len_in - 1) / (len_out - 1);
  if (mode == "asymmetric") return x / scale;
  if (mode == "tf_half_pixel_for_nn") return (x + 0.5f) / scale;
  // tf_crop_and_resize
  return len_out > 1 ? roi_s * (len_in - 1) + (x * (roi_e - roi_s) * (len_in - 1)) / (len_out - 1)
                     : 0.5f * (roi_s + roi_e) * (len_in - 1);
}

float cubic_w(float x, float a) {
  x = std::fabs(x);
  if (x < 1) return ((a + 2) * x - (a + 3)) * x * x + 1;
  if (x < 2) return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a;
  return 0;
}

// The taps of one resized axis: for output index o, idx/w[off[o] .. off[o+1]); outside[o] when
// the coordinate lies outside the input (tf_crop_and_resize: extrapolation_value).
struct AxisTaps {
  int64_t axis = 0, in = 0, out = 0;
  std::vector<int64_t> off, idx;
  std::vector<double> w;
  std::vector<uint8_t> outside;
};

AxisTaps axis_taps(const ResizeAttrs& a, const ResizeGeom& g, int64_t d, int64_t in) {
  AxisTaps t;
  t.axis = d;
  t.in = in;
  t.out = g.out[d];
  t.off.push_back(0);
  t.outside.assign(t.out, 0);
  const float scale = g.scale[d];
  const bool crop = a.coord == "tf_crop_and_resize";
  auto push = [&](int64_t i, double w) {
    t.idx.push_back(std::clamp<int64_t>(i, 0, in - 1));
    t.w.push_back(w);
  };
  for (int64_t o = 0; o < t.out; ++o) {
    float x = original_coord(a.coord, static_cast<float>(o), scale, static_cast<float>(t.out),
                             static_cast<float>(in), g.roi_start[d], g.roi_end[d]);
    if (crop && (x < 0 || x > static_cast<float>(in - 1))) {
      t.outside[o] = 1;
      push(0, 0.0);
    } else if (a.mode == Mode::Nearest) {
      int64_t i;
      if (a.nearest == "round_prefer_floor")
        i = x == static_cast<float>(static_cast<int64_t>(x)) + 0.5f ? static_cast<int64_t>(std::floor(x))
                                                                     : static_cast<int64_t>(std::round(x));
      else if (a.nearest == "round_prefer_ceil") i = static_cast<int64_t>(std::round(x));
      else if (a.nearest == "floor") i = static_cast<int64_t>(std::floor(x));
      else i = static_cast<int64_t>(std::ceil(x));
      push(i, 1.0);
    } else if (a.antialias) {
      // ONNX's definition (and ONNX Runtime's result): the linear or cubic kernel stretched by
      // 1/scale when downscaling, over the 2·⌈support⌉ input pixels nearest the coordinate,
      // normalized; pixels beyond the edges repeat the edge pixel (exclude_outside drops them
      // instead, renormalizing).
      const double fs = std::min(scale, 1.f);
      const int64_t xi = static_cast<int64_t>(std::floor(x));
      const bool whole = x == static_cast<float>(xi);
      const double ratio = whole ? 1.0 : static_cast<double>(x) - static_cast<double>(xi);
      const int64_t base = whole ? xi - 1 : xi;  // the pixel "left" of x
      const int64_t start =
          static_cast<int64_t>(std::floor((a.mode == Mode::Linear ? -1.0 : -2.0) / fs)) + 1;
      const int64_t n = 2 - 2 * start;
      std::vector<double> ws(static_cast<size_t>(n));
      double total = 0;
      for (int64_t k = 0; k < n; ++k) {
        const double u = (static_cast<double>(start + k) - ratio) * fs;
        ws[k] = a.mode == Mode::Linear ? std::clamp(1.0 - std::fabs(u), 0.0, 1.0)
                                       : cubic_w(static_cast<float>(u), a.cubic_a);
        total += ws[k];
      }
      for (double& w : ws) w = total != 0 ? w / total : 0;
      if (a.exclude_outside) {
        double sum = 0;
        for (int64_t k = 0; k < n; ++k) {
          const int64_t i = base + start + k;
          if (i < 0 || i >= in) ws[k] = 0;
          sum += ws[k];
        }
        for (double& w : ws) w = sum != 0 ? w / sum : 0;
      }
      for (int64_t k = 0; k < n; ++k) push(base + start + k, ws[k]);
    } else if (a.mode == Mode::Linear) {
      x = std::clamp(x, 0.f, static_cast<float>(in - 1));
      const int64_t i0 = std::min<int64_t>(static_cast<int64_t>(x), in - 1);
      const int64_t i1 = std::min<int64_t>(i0 + 1, in - 1);
      const double f = x - static_cast<float>(i0);
      if (i0 == i1) {
        push(i0, 1.0);
      } else {
        push(i0, 1.0 - f);
        push(i1, f);
      }
    } else {  // cubic
      const int64_t xi = static_cast<int64_t>(std::floor(x));
      const float s = x - static_cast<float>(xi);
      const float A = a.cubic_a;
      float w[4] = {cubic_w(s + 1, A), cubic_w(s, A), cubic_w(1 - s, A), cubic_w(2 - s, A)};
      if (a.exclude_outside) {
        float sum = 0;
        for (int k = 0; k < 4; ++k) {
          const int64_t i = xi - 1 + k;
          if (i < 0 || i >= in) w[k] = 0;
          sum += w[k];
        }
        for (float& v : w) v = sum != 0 ? v / sum : 0;
      }
      for (int k = 0; k < 4; ++k) push(xi - 1 + k, w[k]);
    }
    t.off.push_back(static_cast<int64_t>(t.idx.size()));
  }
  return t;
}

struct ResizePlan {
  Shape in;
  std::vector<AxisTaps> axes;  // resized axes with in != out or non-trivial taps
  bool crop = false;
  double extrapolation = 0;
  size_t scratch = 0;  // elements of the largest intermediate
};

template <typename T>
class ResizeKernel final : public Kernel {
 public:
  explicit ResizeKernel(ResizePlan p) : p_(std::move(p)), a_(p_.scratch), b_(p_.scratch) {}
  void run(RunCtx&, const View* in, View* out) override {
    const T* x = in[0].as<const T>();
    T* y = out[0].as<T>();
    const int64_t nout = out[0].numel();
    if (nout == 0) return;
    if (p_.axes.empty()) {
      std::memcpy(y, x, static_cast<size_t>(nout) * sizeof(T));
      return;
    }
    Shape cur = p_.in;
    const double* src = nullptr;
    std::vector<double>* bufs[2] = {&a_, &b_};
    int which = 0;
    for (size_t k = 0; k < p_.axes.size(); ++k) {
      const AxisTaps& t = p_.axes[k];
      int64_t outer = 1, inner = 1;
      for (int64_t d = 0; d < t.axis; ++d) outer *= cur[d];
      for (size_t d = t.axis + 1; d < cur.size(); ++d) inner *= cur[d];
      double* dst = bufs[which]->data();
      for (int64_t o = 0; o < outer; ++o) {
        for (int64_t j = 0; j < t.out; ++j) {
          double* dr = dst + (o * t.out + j) * inner;
          for (int64_t i = 0; i < inner; ++i) dr[i] = 0;
          for (int64_t q = t.off[j]; q < t.off[j + 1]; ++q) {
            const double w = t.w[q];
            const int64_t base = (o * t.in + t.idx[q]) * inner;
            if (src) {
              for (int64_t i = 0; i < inner; ++i) dr[i] += w * src[base + i];
            } else {
              for (int64_t i = 0; i < inner; ++i) dr[i] += w * static_cast<double>(x[base + i]);
            }
          }
        }
      }
      cur[t.axis] = t.out;
      src = dst;
      which ^= 1;
    }
    for (int64_t i = 0; i < nout; ++i) y[i] = static_cast<T>(src[i]);
    if (p_.crop) {
      // An element any of whose coordinates lies outside the roi'd input is extrapolation_value.
      const Shape& os = cur;
      const std::vector<int64_t> st = strides_of(os);
      for (const AxisTaps& t : p_.axes) {
        int64_t outer = 1, inner = st[t.axis];
        for (int64_t d = 0; d < t.axis; ++d) outer *= os[d];
        for (int64_t o = 0; o < outer; ++o)
          for (int64_t j = 0; j < t.out; ++j)
            if (t.outside[j])
              for (int64_t i = 0; i < inner; ++i) y[(o * t.out + j) * inner + i] = static_cast<T>(p_.extrapolation);
      }
    }
  }

 private:
  ResizePlan p_;
  std::vector<double> a_, b_;
};

std::unique_ptr<Kernel> make_resize(const InferCtx& c) {
  const ResizeAttrs a = resize_attrs(c);
  const ResizeGeom g = resize_geom(c, a);
  ResizePlan p;
  p.in = c.in[0].shape;
  p.crop = a.coord == "tf_crop_and_resize";
  p.extrapolation = a.extrapolation;
  // Intermediates (one axis resized, the next not yet) can be larger than the output.
  Shape cur = p.in;
  size_t biggest = 0;
  for (size_t d = 0; d < cur.size(); ++d) {
    if (!g.resized[d]) continue;
    if (cur[d] == 0 || g.out[d] == 0) {
      cur[d] = g.out[d];
      continue;  // an empty output: run() returns at once
    }
    p.axes.push_back(axis_taps(a, g, static_cast<int64_t>(d), cur[d]));
    cur[d] = g.out[d];
    int64_t n = 0;
    if (!checked_numel(cur, &n)) c.fail("internal error: intermediate shape ", shape_str(cur));  // infer checked
    biggest = std::max<size_t>(biggest, static_cast<size_t>(n));
  }
  p.scratch = std::max<size_t>(biggest, 1);
  return dispatch_float(c.in[0].dtype, "Resize", [&](auto* tag) -> std::unique_ptr<Kernel> {
    using T = PD_TAG_TYPE(tag);
    return std::make_unique<ResizeKernel<T>>(p);
  });
}

}  // namespace

void register_resize_ops(OpRegistry& r) { r.add(OpSchema{"", "Resize", infer_resize, make_resize}); }

}  // namespace pd
