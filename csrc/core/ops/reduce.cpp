// Reductions and the softmax family (ai.onnx domain):
//   ReduceSum, ReduceMean, ReduceMax, ReduceMin, ReduceProd, ReduceSumSquare, ReduceL1,
//   ReduceL2, ReduceLogSum, ReduceLogSumExp, ArgMax, ArgMin, Softmax, LogSoftmax.
//
// Opset differences handled here:
//   - Reduce* 'axes' is an attribute before opset 18 (ReduceSum: before 13) and an optional
//     input from then on (a constant, or a graph input whose value then becomes part of the
//     shape bucket: axes computed inside the graph are not supported); 'noop_with_empty_axes' comes with the input form. With empty axes and
//     noop_with_empty_axes = 1 nothing is reduced, but the op's elementwise map still applies
//     (ReduceL1/L2 give |x|, ReduceSumSquare x*x, ReduceLogSum log x), as in ONNX Runtime.
//   - ReduceMax/ReduceMin take bool from opset 20 (max: any, min: all; an empty reduction
//     gives false and true, the identities of max and min over {false, true}).
//   - Softmax/LogSoftmax before 13 coerce the input to 2-D at 'axis' (default 1) and normalize
//     each row; from 13 on they normalize along the single 'axis' (default -1).
//
// Exceptions in the ONNX node tests (not failures of these ops):
//   - float16/bfloat16 variants: those types are not computed by policyd's portable kernels
//     (the runner reports them as unsupported data types).
#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <limits>
#include <type_traits>

#include "../op.h"

namespace pd {

namespace {

constexpr size_t kMaxDims = 16;


// ---------------------------------------------------------------------------------------------
// Reduce*
// ---------------------------------------------------------------------------------------------

enum class RK { Sum, Mean, Max, Min, Prod, SumSquare, L1, L2, LogSum, LogSumExp };

struct ReduceOpInfo {
  const char* name;
  RK kind;
  int axes_input_opset;  // opset from which 'axes' is an input
};

constexpr ReduceOpInfo kReduceOps[] = {
    {"ReduceSum", RK::Sum, 13},          {"ReduceMean", RK::Mean, 18},
    {"ReduceMax", RK::Max, 18},          {"ReduceMin", RK::Min, 18},
    {"ReduceProd", RK::Prod, 18},        {"ReduceSumSquare", RK::SumSquare, 18},
    {"ReduceL1", RK::L1, 18},            {"ReduceL2", RK::L2, 18},
    {"ReduceLogSum", RK::LogSum, 18},    {"ReduceLogSumExp", RK::LogSumExp, 18},
};

const ReduceOpInfo& reduce_info(const Node& n) {
  for (const auto& r : kReduceOps)
    if (n.op == r.name) return r;
  fail(PD_ERR_INTERNAL, "internal error: ", n.describe(), " is not a reduction");
}

// The reduced-axis mask of a Reduce* node for an input of rank `rank`; *noop is set when the
// node is an identity (empty axes with noop_with_empty_axes).
std::vector<bool> reduce_mask(const InferCtx& c, size_t rank, bool* noop) {
  const ReduceOpInfo& info = reduce_info(c.node);
  std::vector<int64_t> axes;
  bool noop_empty = false;
  if (c.opset() >= info.axes_input_opset) {
    if (c.node.has("axes"))
      c.fail("'axes' is an input, not an attribute, from opset ", info.axes_input_opset);
    if (c.has_input(1)) {
      const Tensor& t = c.const_input(1, "reduction axes");
      if (t.dtype() != DType::I64) c.fail("'axes' must be int64");
      if (t.shape().size() > 1) c.fail("'axes' must be 1-D");
      axes = t.to_ints();
    }
    noop_empty = c.node.attr_int("noop_with_empty_axes", 0) != 0;
  } else {
    if (c.num_inputs() > 1) c.fail("takes one input before opset ", info.axes_input_opset);
    axes = c.node.attr_ints("axes");
  }
  std::vector<bool> mask(rank, false);
  *noop = false;
  if (axes.empty()) {
    if (noop_empty) *noop = true;
    else mask.assign(rank, true);
    return mask;
  }
  for (int64_t a : axes) {
    int64_t ax = c.axis(a, static_cast<int64_t>(rank));
    if (rank == 0) continue;  // axis 0/-1 of a scalar: nothing to reduce
    if (mask[ax]) c.fail("axis ", a, " appears twice in 'axes'");
    mask[ax] = true;
  }
  return mask;
}

bool bool_reduce_ok(const InferCtx& c) {
  const RK k = reduce_info(c.node).kind;
  return (k == RK::Max || k == RK::Min) && c.opset() >= 20;
}

void infer_reduce(InferCtx& c) {
  const TensorInfo& x = c.input(0);
  if (x.dtype == DType::Bool && !bool_reduce_ok(c)) {
    const RK k = reduce_info(c.node).kind;
    if (k == RK::Max || k == RK::Min) c.fail("bool input needs opset 20 (the model imports opset ", c.opset(), ")");
    c.fail("bool input is not allowed (only ReduceMax and ReduceMin take bool, from opset 20)");
  }
  if (!dtype_supported(x.dtype))
    c.unsupported("data type ", dtype_name(x.dtype), " is not supported");
  bool noop = false;
  std::vector<bool> mask = reduce_mask(c, x.shape.size(), &noop);
  bool keep = c.node.attr_int("keepdims", 1) != 0;
  Shape out;
  for (size_t i = 0; i < x.shape.size(); ++i) {
    if (!mask[i]) out.push_back(x.shape[i]);
    else if (keep) out.push_back(1);
  }
  c.out[0].dtype = x.dtype;
  c.out[0].shape = out;
}

// The iteration plan: the input's dims with size-1 dims dropped and neighbours of the same kind
// (reduced or kept) merged, and each merged dim's stride in the output (0 when reduced).
struct ReducePlan {
  bool identity = false;
  int64_t in_n = 0, out_n = 0, red_n = 1;
  int nd = 0;
  std::array<int64_t, kMaxDims> size{}, ostride{};
};

ReducePlan make_reduce_plan(const InferCtx& c) {
  const Shape& xs = c.in[0].shape;
  bool noop = false;
  std::vector<bool> mask = reduce_mask(c, xs.size(), &noop);
  ReducePlan p;
  p.in_n = numel(xs);
  p.out_n = numel(c.out[0].shape);
  p.identity = noop;
  if (noop) return p;
  std::vector<int64_t> sz;
  std::vector<bool> red;
  for (size_t i = 0; i < xs.size(); ++i) {
    if (mask[i]) p.red_n *= xs[i];
    if (xs[i] == 1) continue;
    if (!sz.empty() && red.back() == mask[i]) {
      sz.back() *= xs[i];
    } else {
      sz.push_back(xs[i]);
      red.push_back(mask[i]);
    }
  }
  if (sz.empty()) {
    sz.push_back(1);
    red.push_back(false);
  }
  if (sz.size() > kMaxDims) c.unsupported("input rank is too large");
  p.nd = static_cast<int>(sz.size());
  int64_t acc = 1;
  for (int i = p.nd - 1; i >= 0; --i) {
    p.size[i] = sz[i];
    p.ostride[i] = red[i] ? 0 : acc;
    if (!red[i]) acc *= sz[i];
  }
  return p;
}

template <typename T>
inline T abs_of(T v) {
  if constexpr (std::is_signed<T>::value) return v < T(0) ? T(-v) : v;
  else return v;
}

template <typename T>
inline bool is_nan(T v) {
  if constexpr (std::is_floating_point<T>::value) return v != v;
  else return false;
}

template <typename T, RK K>
struct Reducer {
  static T init() {
    if constexpr (K == RK::Prod) return T(1);
    if constexpr (K == RK::Max || K == RK::LogSumExp) {
      if constexpr (std::numeric_limits<T>::has_infinity) return -std::numeric_limits<T>::infinity();
      else return std::numeric_limits<T>::lowest();
    }
    if constexpr (K == RK::Min) {
      if constexpr (std::numeric_limits<T>::has_infinity) return std::numeric_limits<T>::infinity();
      else return std::numeric_limits<T>::max();
    }
    return T(0);
  }
  // For LogSumExp this is the first pass (the maximum).
  static T combine(T a, T x) {
    if constexpr (K == RK::Sum || K == RK::Mean || K == RK::LogSum) return T(a + x);
    if constexpr (K == RK::SumSquare || K == RK::L2) return T(a + x * x);
    if constexpr (K == RK::L1) return T(a + abs_of(x));
    if constexpr (K == RK::Prod) return T(a * x);
    if constexpr (K == RK::Max || K == RK::LogSumExp) return (x > a || is_nan(x)) ? x : a;
    if constexpr (K == RK::Min) return (x < a || is_nan(x)) ? x : a;
    return a;
  }
};

// Calls body(x_offset, out_offset, inner_len, inner_reduced) for every run of the innermost
// merged dim, in input order.
template <typename F>
inline void for_each_run(const ReducePlan& p, F&& body) {
  const int nd = p.nd;
  const int64_t inner = p.size[nd - 1];
  const bool inner_red = p.ostride[nd - 1] == 0;
  const int64_t runs = inner == 0 ? 0 : p.in_n / inner;
  std::array<int64_t, kMaxDims> idx{};
  int64_t o = 0;
  for (int64_t r = 0; r < runs; ++r) {
    body(r * inner, o, inner, inner_red);
    for (int d = nd - 2; d >= 0; --d) {
      o += p.ostride[d];
      if (++idx[d] < p.size[d]) break;
      o -= p.ostride[d] * p.size[d];
      idx[d] = 0;
    }
  }
}

template <typename T, RK K>
void run_reduce(const ReducePlan& p, const T* x, T* y, double* scratch) {
  using R = Reducer<T, K>;
  if (p.identity) {
    // No axis is reduced, but each element still goes through the op's own map, as ONNX
    // Runtime (and ONNX's reference) compute it: |x| for L1 and L2, x*x for SumSquare, log(x)
    // for LogSum; the others are the identity.
    if constexpr (K == RK::L1 || K == RK::L2) {
      for (int64_t i = 0; i < p.in_n; ++i) y[i] = abs_of(x[i]);
    } else if constexpr (K == RK::SumSquare) {
      for (int64_t i = 0; i < p.in_n; ++i) y[i] = T(x[i] * x[i]);
    } else if constexpr (K == RK::LogSum) {
      for (int64_t i = 0; i < p.in_n; ++i) y[i] = static_cast<T>(std::log(static_cast<double>(x[i])));
    } else {
      std::memcpy(y, x, static_cast<size_t>(p.in_n) * sizeof(T));
    }
    return;
  }
  const T init = R::init();
  for (int64_t i = 0; i < p.out_n; ++i) y[i] = init;
  for_each_run(p, [&](int64_t xo, int64_t o, int64_t n, bool red) {
    const T* xs = x + xo;
    if (red) {
      T a = y[o];
      for (int64_t i = 0; i < n; ++i) a = R::combine(a, xs[i]);
      y[o] = a;
    } else {
      T* ys = y + o;
      for (int64_t i = 0; i < n; ++i) ys[i] = R::combine(ys[i], xs[i]);
    }
  });
  if constexpr (K == RK::LogSumExp) {
    // Second pass: sum of exp(x - max) per output, in the scratch.
    for (int64_t i = 0; i < p.out_n; ++i) scratch[i] = 0;
    for_each_run(p, [&](int64_t xo, int64_t o, int64_t n, bool red) {
      const T* xs = x + xo;
      if (red) {
        const double m = std::isfinite(double(y[o])) ? double(y[o]) : 0.0;
        double s = 0;
        for (int64_t i = 0; i < n; ++i) s += std::exp(double(xs[i]) - m);
        scratch[o] += s;
      } else {
        for (int64_t i = 0; i < n; ++i) {
          const double m = std::isfinite(double(y[o + i])) ? double(y[o + i]) : 0.0;
          scratch[o + i] += std::exp(double(xs[i]) - m);
        }
      }
    });
    for (int64_t i = 0; i < p.out_n; ++i) {
      const double m = std::isfinite(double(y[i])) ? double(y[i]) : 0.0;
      y[i] = static_cast<T>(m + std::log(scratch[i]));
    }
  } else if constexpr (K == RK::Mean) {
    if constexpr (std::is_floating_point<T>::value) {
      const T n = static_cast<T>(p.red_n);
      for (int64_t i = 0; i < p.out_n; ++i) y[i] = y[i] / n;
    } else {
      for (int64_t i = 0; i < p.out_n; ++i)
        y[i] = p.red_n == 0 ? T(0) : static_cast<T>(y[i] / static_cast<T>(p.red_n));
    }
  } else if constexpr (K == RK::L2) {
    for (int64_t i = 0; i < p.out_n; ++i) {
      if constexpr (std::is_same<T, float>::value) y[i] = std::sqrt(y[i]);
      else y[i] = static_cast<T>(std::sqrt(static_cast<double>(y[i])));
    }
  } else if constexpr (K == RK::LogSum) {
    for (int64_t i = 0; i < p.out_n; ++i) {
      if constexpr (std::is_same<T, float>::value) y[i] = std::log(y[i]);
      else y[i] = static_cast<T>(std::log(static_cast<double>(y[i])));
    }
  }
}

template <typename T>
std::unique_ptr<Kernel> make_reduce_t(RK k, const ReducePlan& p) {
  switch (k) {
#define PD_REDUCE_CASE(K)                                                        \
  case RK::K:                                                                    \
    return make_kernel([p](RunCtx&, const View* in, View* out) {                 \
      run_reduce<T, RK::K>(p, in[0].as<const T>(), out[0].as<T>(), nullptr);    \
    });
    PD_REDUCE_CASE(Sum)
    PD_REDUCE_CASE(Mean)
    PD_REDUCE_CASE(Max)
    PD_REDUCE_CASE(Min)
    PD_REDUCE_CASE(Prod)
    PD_REDUCE_CASE(SumSquare)
    PD_REDUCE_CASE(L1)
    PD_REDUCE_CASE(L2)
    PD_REDUCE_CASE(LogSum)
#undef PD_REDUCE_CASE
    case RK::LogSumExp: {
      std::vector<double> scratch(static_cast<size_t>(std::max<int64_t>(p.out_n, 1)));
      return make_kernel([p, scratch](RunCtx&, const View* in, View* out) mutable {
        run_reduce<T, RK::LogSumExp>(p, in[0].as<const T>(), out[0].as<T>(), scratch.data());
      });
    }
  }
  return nullptr;
}

std::unique_ptr<Kernel> make_reduce(const InferCtx& c) {
  ReducePlan p = make_reduce_plan(c);
  RK k = reduce_info(c.node).kind;
  if (c.in[0].dtype == DType::Bool) {
    // Bytes 0/1 as uint8: max is any, min is all; min's identity (255) of an empty
    // reduction becomes true.
    const bool is_min = k == RK::Min;
    return make_kernel([p, is_min](RunCtx&, const View* in, View* out) {
      uint8_t* y = out[0].as<uint8_t>();
      if (is_min) {
        run_reduce<uint8_t, RK::Min>(p, in[0].as<const uint8_t>(), y, nullptr);
        for (int64_t i = 0; i < p.out_n; ++i) y[i] = y[i] != 0;
      } else {
        run_reduce<uint8_t, RK::Max>(p, in[0].as<const uint8_t>(), y, nullptr);
      }
    });
  }
  return dispatch_numeric(c.in[0].dtype, c.node.op.c_str(), [&](auto* tag) {
                            using T = PD_TAG_TYPE(tag);
                            return make_reduce_t<T>(k, p);
                          });
}

// ---------------------------------------------------------------------------------------------
// ArgMax / ArgMin
// ---------------------------------------------------------------------------------------------

// A tensor seen as [outer, n, inner] around one axis.
struct AxisPlan {
  int64_t outer = 1, n = 1, inner = 1;
};

AxisPlan axis_plan(const Shape& s, int64_t axis) {
  AxisPlan p;
  for (int64_t i = 0; i < axis; ++i) p.outer *= s[i];
  p.n = s.empty() ? 1 : s[axis];
  for (size_t i = static_cast<size_t>(axis) + 1; i < s.size(); ++i) p.inner *= s[i];
  return p;
}

void infer_arg(InferCtx& c) {
  const TensorInfo& x = c.input(0);
  if (!dtype_supported(x.dtype) || x.dtype == DType::Bool)
    c.unsupported("data type ", dtype_name(x.dtype), " is not supported");
  const int64_t rank = static_cast<int64_t>(x.shape.size());
  if (rank == 0) c.fail("input must have rank >= 1");
  int64_t axis = c.axis(c.node.attr_int("axis", 0), rank);
  if (x.shape[axis] == 0) c.fail("cannot take ", c.node.op, " over an empty axis");
  if (c.opset() < 12 && c.node.has("select_last_index"))
    c.fail("'select_last_index' needs opset 12");
  bool keep = c.node.attr_int("keepdims", 1) != 0;
  Shape out = x.shape;
  if (keep) out[axis] = 1;
  else out.erase(out.begin() + axis);
  c.out[0].dtype = DType::I64;
  c.out[0].shape = out;
}

template <typename T, bool kMax, bool kLast>
void run_arg(const AxisPlan& p, const T* x, int64_t* y) {
  auto better = [](T v, T best) {
    if constexpr (kMax) return kLast ? v >= best : v > best;
    else return kLast ? v <= best : v < best;
  };
  for (int64_t o = 0; o < p.outer; ++o) {
    const T* xo = x + o * p.n * p.inner;
    int64_t* yo = y + o * p.inner;
    for (int64_t j = 0; j < p.inner; ++j) {
      T best = xo[j];
      int64_t bi = 0;
      for (int64_t k = 1; k < p.n; ++k) {
        T v = xo[k * p.inner + j];
        if (better(v, best)) {
          best = v;
          bi = k;
        }
      }
      yo[j] = bi;
    }
  }
}

std::unique_ptr<Kernel> make_arg(const InferCtx& c) {
  const Shape& s = c.in[0].shape;
  int64_t axis = c.axis(c.node.attr_int("axis", 0), static_cast<int64_t>(s.size()));
  AxisPlan p = axis_plan(s, axis);
  const bool is_max = c.node.op == "ArgMax";
  const bool last = c.node.attr_int("select_last_index", 0) != 0;
  return dispatch_numeric(c.in[0].dtype, c.node.op.c_str(), [&](auto* tag) {
    using T = PD_TAG_TYPE(tag);
    using Fn = void (*)(const AxisPlan&, const T*, int64_t*);
    Fn fn = is_max ? (last ? run_arg<T, true, true> : run_arg<T, true, false>)
                   : (last ? run_arg<T, false, true> : run_arg<T, false, false>);
    return make_kernel([p, fn](RunCtx&, const View* in, View* out) {
      fn(p, in[0].as<const T>(), out[0].as<int64_t>());
    });
  });
}

// ---------------------------------------------------------------------------------------------
// Softmax / LogSoftmax
// ---------------------------------------------------------------------------------------------

// The row helpers are inlined into their callers, so that softmax_rows_avx2 below compiles them
// with AVX2 (8 lanes) while the default build stays SSE2.
#define PD_SOFTMAX_INLINE inline __attribute__((always_inline))

// exp(x) for x <= 0 (Cephes' single-precision polynomial; relative error ~2 ulp), written
// without branches so that the compiler vectorizes loops over it.
PD_SOFTMAX_INLINE float exp_nonpos(float x) {
  // Clamp x to >= -87 on the bit pattern: for x <= 0 the unsigned order of the bits is the
  // order of magnitudes (a float compare would keep GCC from vectorizing under
  // -ftrapping-math).
  uint32_t bits;
  std::memcpy(&bits, &x, sizeof(bits));
  const uint32_t kMinus87 = 0xC2AE0000u;
  bits = bits > kMinus87 ? kMinus87 : bits;
  std::memcpy(&x, &bits, sizeof(x));
  // n = round(x / ln2) with the 1.5*2^23 trick (exact for |x/ln2| < 2^22).
  const float kMagic = 12582912.0f;
  float n = (x * 1.44269504088896341f + kMagic) - kMagic;
  float r = x - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  float z = r * r;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * z + r + 1.0f;
  int32_t e = (static_cast<int32_t>(n) + 127) << 23;
  float scale;
  std::memcpy(&scale, &e, sizeof(scale));
  return p * scale;
}

template <typename T>
PD_SOFTMAX_INLINE T exp_shifted(T v) {
  if constexpr (std::is_same<T, float>::value) return exp_nonpos(v);
  else return std::exp(v);
}

// Sum with 8 independent partial sums (vectorizable; float adds are not reassociated).
template <typename T>
PD_SOFTMAX_INLINE T sum_of(const T* y, int64_t n) {
  T acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int j = 0; j < 8; ++j) acc[j] += y[i + j];
  T t = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
  for (; i < n; ++i) t += y[i];
  return t;
}

// Maximum of x[0..n), n >= 1; *nan is set when an element is NaN.
PD_SOFTMAX_INLINE float max_of(const float* x, int64_t n, bool* nan) {
  // On order-preserving integer keys of the bits, with 8 lanes, so that it vectorizes.
  auto key = [](const float* p) {
    int32_t b;
    std::memcpy(&b, p, sizeof(b));
    return b ^ ((b >> 31) & 0x7FFFFFFF);
  };
  auto is_nan_bits = [](const float* p) -> uint32_t {
    uint32_t b;
    std::memcpy(&b, p, sizeof(b));
    return (b & 0x7FFFFFFFu) > 0x7F800000u;
  };
  int32_t acc[8];
  uint32_t bad[8];
  for (int j = 0; j < 8; ++j) {
    acc[j] = std::numeric_limits<int32_t>::min();
    bad[j] = 0;
  }
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int j = 0; j < 8; ++j) {
      const int32_t k = key(x + i + j);
      acc[j] = k > acc[j] ? k : acc[j];
      bad[j] |= is_nan_bits(x + i + j);
    }
  int32_t m = std::numeric_limits<int32_t>::min();
  uint32_t any_bad = 0;
  for (int j = 0; j < 8; ++j) {
    m = acc[j] > m ? acc[j] : m;
    any_bad |= bad[j];
  }
  for (; i < n; ++i) {
    const int32_t k = key(x + i);
    m = k > m ? k : m;
    any_bad |= is_nan_bits(x + i);
  }
  *nan = any_bad != 0;
  const int32_t b = m ^ ((m >> 31) & 0x7FFFFFFF);
  float r;
  std::memcpy(&r, &b, sizeof(r));
  return r;
}
inline double max_of(const double* x, int64_t n, bool* nan) {
  double m = x[0];
  bool bad = false;
  for (int64_t i = 0; i < n; ++i) {
    m = x[i] > m ? x[i] : m;
    bad = bad || x[i] != x[i];
  }
  *nan = bad;
  return m;
}

// One contiguous row: y = softmax(x) (or log-softmax).
template <typename T, bool kLog>
PD_SOFTMAX_INLINE void softmax_row(const T* x, T* y, int64_t n) {
  bool nan = false;
  const T m = max_of(x, n, &nan);
  if (nan || !std::isfinite(m)) {
    // inf or NaN present: the slow, exact path gives the IEEE result.
    T s = 0;
    for (int64_t i = 0; i < n; ++i) s += std::exp(x[i] - m);
    for (int64_t i = 0; i < n; ++i)
      y[i] = kLog ? x[i] - m - std::log(s) : std::exp(x[i] - m) / s;
    return;
  }
  // y holds exp(x - max) first (also for log-softmax, as scratch).
  for (int64_t i = 0; i < n; ++i) y[i] = exp_shifted<T>(x[i] - m);
  const T s = sum_of(y, n);
  if constexpr (kLog) {
    const T lse = m + std::log(s);
    for (int64_t i = 0; i < n; ++i) y[i] = x[i] - lse;
  } else {
    const T inv = T(1) / s;
    for (int64_t i = 0; i < n; ++i) y[i] *= inv;
  }
}

// Strided version (normalizing along a non-innermost axis).
template <typename T, bool kLog>
inline void softmax_strided(const T* x, T* y, int64_t n, int64_t st) {
  T m = x[0];
  for (int64_t i = 1; i < n; ++i) m = (x[i * st] > m || x[i * st] != x[i * st]) ? x[i * st] : m;
  if (!std::isfinite(m)) {
    T s = 0;
    for (int64_t i = 0; i < n; ++i) s += std::exp(x[i * st] - m);
    for (int64_t i = 0; i < n; ++i)
      y[i * st] = kLog ? x[i * st] - m - std::log(s) : std::exp(x[i * st] - m) / s;
    return;
  }
  T s = 0;
  for (int64_t i = 0; i < n; ++i) {
    T e = exp_shifted<T>(x[i * st] - m);
    if (!kLog) y[i * st] = e;
    s += e;
  }
  if (kLog) {
    const T lse = m + std::log(s);
    for (int64_t i = 0; i < n; ++i) y[i * st] = x[i * st] - lse;
  } else {
    const T inv = T(1) / s;
    for (int64_t i = 0; i < n; ++i) y[i * st] *= inv;
  }
}

// Contiguous rows of float32: the same arithmetic as the SSE2 build (the same 8 partial sums,
// no FMA), so the results are bit-identical; only the vector width differs. Softmax over the
// keys of an attention policy's scores ([b, m, h, n] over n) is most of what this does.
template <bool kLog>
void softmax_rows_default(const float* x, float* y, int64_t rows, int64_t n) {
  for (int64_t o = 0; o < rows; ++o) softmax_row<float, kLog>(x + o * n, y + o * n, n);
}
#if defined(__x86_64__) && defined(__GNUC__)
#define PD_SOFTMAX_AVX2 1
template <bool kLog>
__attribute__((target("avx2"))) void softmax_rows_avx2(const float* x, float* y, int64_t rows, int64_t n) {
  for (int64_t o = 0; o < rows; ++o) softmax_row<float, kLog>(x + o * n, y + o * n, n);
}
bool softmax_have_avx2() {
  static const bool yes = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") != 0;
  }();
  return yes;
}
#endif

template <typename T, bool kLog>
std::unique_ptr<Kernel> make_softmax_t(const AxisPlan& p) {
  if constexpr (std::is_same<T, float>::value) {
    if (p.inner == 1) {
      auto rows = &softmax_rows_default<kLog>;
#ifdef PD_SOFTMAX_AVX2
      if (softmax_have_avx2()) rows = &softmax_rows_avx2<kLog>;
#endif
      return make_kernel([p, rows](RunCtx&, const View* in, View* out) {
        rows(in[0].as<const float>(), out[0].as<float>(), p.outer, p.n);
      });
    }
  }
  if (p.inner == 1)
    return make_kernel([p](RunCtx&, const View* in, View* out) {
      const T* x = in[0].as<const T>();
      T* y = out[0].as<T>();
      for (int64_t o = 0; o < p.outer; ++o) softmax_row<T, kLog>(x + o * p.n, y + o * p.n, p.n);
    });
  return make_kernel([p](RunCtx&, const View* in, View* out) {
    const T* x = in[0].as<const T>();
    T* y = out[0].as<T>();
    for (int64_t o = 0; o < p.outer; ++o)
      for (int64_t j = 0; j < p.inner; ++j) {
        const int64_t off = o * p.n * p.inner + j;
        softmax_strided<T, kLog>(x + off, y + off, p.n, p.inner);
      }
  });
}

int64_t softmax_axis(const InferCtx& c) {
  const int64_t rank = static_cast<int64_t>(c.in[0].shape.size());
  const int64_t def = c.opset() >= 13 ? -1 : 1;
  int64_t a = c.node.attr_int("axis", def);
  if (rank == 0) {
    if (a != 0 && a != -1) c.fail("axis ", a, " is out of range for a scalar");
    return 0;
  }
  if (c.opset() < 13 && a == rank) return rank;  // [N*..., 1]: legal when coercing to 2-D
  return c.axis(a, rank);
}

void infer_softmax(InferCtx& c) {
  const TensorInfo& x = c.input(0);
  if (x.dtype != DType::F32 && x.dtype != DType::F64)
    c.unsupported("data type ", dtype_name(x.dtype), " is not supported");
  softmax_axis(c);
  c.out[0].dtype = x.dtype;
  c.out[0].shape = x.shape;
}

std::unique_ptr<Kernel> make_softmax(const InferCtx& c) {
  const Shape& s = c.in[0].shape;
  const int64_t axis = softmax_axis(c);
  AxisPlan p;
  if (s.empty()) {
    p = AxisPlan{};
  } else if (c.opset() < 13) {
    // Coerce to 2-D [prod(dims[:axis]), prod(dims[axis:])].
    p.outer = 1;
    for (int64_t i = 0; i < axis; ++i) p.outer *= s[i];
    p.n = 1;
    for (size_t i = static_cast<size_t>(axis); i < s.size(); ++i) p.n *= s[i];
    p.inner = 1;
  } else {
    p = axis_plan(s, axis);
  }
  const bool is_log = c.node.op == "LogSoftmax";
  if (p.n == 0 || p.outer == 0 || p.inner == 0)
    return make_kernel([](RunCtx&, const View*, View*) {});
  return dispatch_float(c.in[0].dtype, c.node.op.c_str(), [&](auto* tag) {
    using T = PD_TAG_TYPE(tag);
    return is_log ? make_softmax_t<T, true>(p) : make_softmax_t<T, false>(p);
  });
}

}  // namespace

void register_reduce_ops(OpRegistry& r) {
  for (const auto& info : kReduceOps) r.add(OpSchema{"", info.name, infer_reduce, make_reduce});
  r.add(OpSchema{"", "ArgMax", infer_arg, make_arg});
  r.add(OpSchema{"", "ArgMin", infer_arg, make_arg});
  r.add(OpSchema{"", "Softmax", infer_softmax, make_softmax});
  r.add(OpSchema{"", "LogSoftmax", infer_softmax, make_softmax});
}

}  // namespace pd
