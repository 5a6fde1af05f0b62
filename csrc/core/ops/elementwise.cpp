// Elementwise operators (ai.onnx): unary math and activations (Gelu from opset 20), broadcasting binary arithmetic,
// comparison and logic, the variadic Max/Min/Sum/Mean, Where, Clip, Cast/CastLike and Identity.
//
// Kernels are templates over the element type and a small functor for the operation, so the
// inner loops have no per-element calls through pointers and vectorize where the math allows.
// Broadcasting ops plan in make() (see Plan): the output shape is collapsed (size-1 dims dropped,
// dims merged where every input is contiguous or broadcast across both), and run() takes one of
// the fast paths: same shape, one side a scalar, one side a suffix of the other ([N,C] + [C]),
// or the general row loop with precomputed strides, whose inner loop is again contiguous or
// scalar for each input.
//
// Documented exceptions (node tests that do not pass, and why):
//   - float16 / bfloat16 computation: our kernels compute in float, double, the integer types
//     and bool. Ops given float16/bfloat16 fail with UNSUPPORTED "data type ... is not
//     supported" (tests max_float16, min_float16, mod_mixed_sign_float16). Cast/CastLike do
//     convert to and from float16/bfloat16, and Where and Identity only move bytes, so those
//     accept them.
//   - string: Cast/CastLike to or from string (cast_FLOAT_to_STRING, cast_STRING_to_FLOAT,
//     castlike_*STRING*) fail with UNSUPPORTED: policyd tensors carry no strings.
//   - identity_opt / identity_sequence: optional and sequence values are not tensors; the
//     importer rejects those models.
//   - cast_FLOAT_to_BFLOAT16 / castlike_FLOAT_to_BFLOAT16: the ONNX 1.12 test data were made by
//     truncating float32 to its upper 16 bits; we round to nearest even (tensor.h's
//     float_to_bf16), as ONNX Runtime, PyTorch, onnx.helper.float32_to_bfloat16 and later ONNX
//     test data do (onnx/onnx#3876). Truncation is off by up to 2^-8 relative, over the 1e-3
//     tolerance.
//   - cast_BFLOAT16_to_FLOAT / castlike_BFLOAT16_to_FLOAT: the conversion itself is exact; the
//     1.12 test data store the bfloat16 tensors with data_type uint16 (numpy has no bfloat16),
//     which the runner must reinterpret for the tests to run.
#include <cmath>
#include <cstring>
#include <initializer_list>
#include <limits>
#include <memory>
#include <type_traits>
#include <vector>

#include "../activation.h"
#include "../op.h"

namespace pd {
namespace {

// ---------------------------------------------------------------------------------------------
// Type sets and checks

constexpr uint32_t bit(DType t) { return 1u << static_cast<uint32_t>(t); }
constexpr uint32_t kFloatTypes =
    bit(DType::F32) | bit(DType::F64) | bit(DType::F16) | bit(DType::BF16);
constexpr uint32_t kSignedTypes =
    bit(DType::I8) | bit(DType::I16) | bit(DType::I32) | bit(DType::I64);
constexpr uint32_t kUnsignedTypes =
    bit(DType::U8) | bit(DType::U16) | bit(DType::U32) | bit(DType::U64);
constexpr uint32_t kNumTypes = kFloatTypes | kSignedTypes | kUnsignedTypes;
constexpr uint32_t kBoolType = bit(DType::Bool);
// Every tensor type policyd holds (no string).
constexpr uint32_t kAnyTypes = kNumTypes | kBoolType;

bool is_half(DType t) { return t == DType::F16 || t == DType::BF16; }

// Fails for a type outside `allowed` (an invalid model) and, for one allowed but not computed
// by our kernels (float16, bfloat16, string), reports it as unsupported.
void check_type(const InferCtx& c, size_t i, uint32_t allowed, bool computes = true) {
  DType t = c.input(i).dtype;
  if (t == DType::String) c.unsupported("data type string is not supported");
  uint32_t b = static_cast<uint32_t>(t) < 32 ? bit(t) : 0;
  if (!(allowed & b))
    c.fail("input ", i, " ('", c.node.inputs[i], "') has type ", dtype_name(t), ", which ",
           c.node.op, " does not accept");
  if (computes && is_half(t)) c.unsupported("data type ", dtype_name(t), " is not supported");
}

void check_same_type(const InferCtx& c, size_t i, size_t j) {
  if (c.input(i).dtype != c.input(j).dtype)
    c.fail("inputs ", i, " and ", j, " must have the same type, got ", dtype_name(c.in[i].dtype),
           " and ", dtype_name(c.in[j].dtype));
}

// ---------------------------------------------------------------------------------------------
// Type dispatch: pick(Types<...>{}, c, dtype, f) calls f(Tag<T>{}) for the T of dtype.

template <class... Ts> struct Types {};
template <class T> struct Tag { using type = T; };

using FloatTs = Types<float, double>;
using SignedNumTs = Types<float, double, int8_t, int16_t, int32_t, int64_t>;
using NumTs = Types<float, double, int8_t, int16_t, int32_t, int64_t, uint8_t, uint16_t, uint32_t,
                    uint64_t>;
using AllTs = Types<float, double, int8_t, int16_t, int32_t, int64_t, uint8_t, uint16_t, uint32_t,
                    uint64_t, bool>;
using BoolTs = Types<bool>;

using KernelPtr = std::unique_ptr<Kernel>;

template <class F, class T, class... Ts>
KernelPtr pick_impl(DType t, F& f) {
  if (t == dtype_of<T>()) return f(Tag<T>{});
  if constexpr (sizeof...(Ts) > 0) return pick_impl<F, Ts...>(t, f);
  else return nullptr;
}

template <class... Ts, class F>
KernelPtr pick(Types<Ts...>, const InferCtx& c, DType t, F f) {
  KernelPtr k = pick_impl<F, Ts...>(t, f);
  if (!k) c.unsupported("data type ", dtype_name(t), " is not supported");
  return k;
}

// ---------------------------------------------------------------------------------------------
// Integer arithmetic without undefined behaviour: wraps like the hardware does.

template <class T>
using WideUnsigned = std::conditional_t<(sizeof(T) < 4), uint32_t, std::make_unsigned_t<T>>;

template <class T> inline T wrap_add(T a, T b) {
  if constexpr (std::is_integral_v<T>) return static_cast<T>(WideUnsigned<T>(a) + WideUnsigned<T>(b));
  else return a + b;
}
template <class T> inline T wrap_sub(T a, T b) {
  if constexpr (std::is_integral_v<T>) return static_cast<T>(WideUnsigned<T>(a) - WideUnsigned<T>(b));
  else return a - b;
}
template <class T> inline T wrap_mul(T a, T b) {
  if constexpr (std::is_integral_v<T>) return static_cast<T>(WideUnsigned<T>(a) * WideUnsigned<T>(b));
  else return a * b;
}
template <class T> inline T wrap_neg(T a) {
  if constexpr (std::is_integral_v<T>) return static_cast<T>(WideUnsigned<T>(0) - WideUnsigned<T>(a));
  else return -a;
}

// Floating point to integer without undefined behaviour: truncation toward zero (C semantics)
// in range. Out of range or NaN gives what x86-64 code (numpy, ONNX Runtime) gives there: the
// conversion's "integer indefinite" value (INT32_MIN for types up to 32-bit signed, INT64_MIN for
// the wider ones), wrapped to To.
template <class To, class F>
inline To float_to_int(F v) {
  if constexpr (std::is_same_v<To, bool>) {
    return v != F(0);
  } else if constexpr (sizeof(To) < 4 || std::is_same_v<To, int32_t>) {
    if (v > F(-2147483649.0) && v < F(2147483648.0))
      return static_cast<To>(static_cast<int32_t>(v));
    return static_cast<To>(std::numeric_limits<int32_t>::min());
  } else {
    if constexpr (std::is_same_v<To, uint64_t>) {
      if (v >= F(0) && v < F(18446744073709551616.0)) return static_cast<To>(v);
    }
    if (v >= F(-9223372036854775808.0) && v < F(9223372036854775808.0))
      return static_cast<To>(static_cast<int64_t>(v));
    return static_cast<To>(std::numeric_limits<int64_t>::min());
  }
}

// ---------------------------------------------------------------------------------------------
// Broadcast plans

constexpr int kMaxIn = 3;

struct Plan {
  enum Kind { Empty, Same, ScalarA, ScalarB, SuffixA, SuffixB, General };
  Kind kind = Empty;
  int64_t n = 0;      // output elements
  // The general form, always filled (Where uses it for every kind but Same): rows of `inner`
  // output elements; input k starts row r at the offset of r's multi-index over `dims`
  // (strides st[k]) and steps inner_st[k] (0 or 1) along the row.
  int64_t inner = 0;
  int64_t rows = 0;
  std::vector<int64_t> dims;
  std::vector<int64_t> st[kMaxIn];
  int64_t inner_st[kMaxIn] = {0, 0, 0};
};

Plan make_plan(std::initializer_list<const Shape*> ins, const Shape& out) {
  Plan p;
  p.n = numel(out);
  if (p.n == 0) return p;  // Empty
  const int k_in = static_cast<int>(ins.size());
  std::vector<int64_t> full[kMaxIn];
  {
    int k = 0;
    for (const Shape* s : ins) full[k++] = broadcast_strides(*s, out);
  }
  // Collapse: drop size-1 dims, merge a dim into the previous one when every input is
  // contiguous (or broadcast) across both.
  std::vector<int64_t> d;
  std::vector<int64_t> s[kMaxIn];
  for (size_t i = 0; i < out.size(); ++i) {
    if (out[i] == 1) continue;
    bool merge = !d.empty();
    for (int k = 0; k < k_in && merge; ++k)
      if (s[k].back() != full[k][i] * out[i]) merge = false;
    if (merge) {
      d.back() *= out[i];
      for (int k = 0; k < k_in; ++k) s[k].back() = full[k][i];
    } else {
      d.push_back(out[i]);
      for (int k = 0; k < k_in; ++k) s[k].push_back(full[k][i]);
    }
  }
  if (d.empty()) {  // a single element
    d.push_back(1);
    for (int k = 0; k < k_in; ++k) s[k].push_back(1);
  }
  p.inner = d.back();
  p.rows = p.n / p.inner;
  for (int k = 0; k < k_in; ++k) {
    p.inner_st[k] = s[k].back();
    PD_ASSERT(p.inner_st[k] == 0 || p.inner_st[k] == 1);
    p.st[k].assign(s[k].begin(), s[k].end() - 1);
  }
  p.dims.assign(d.begin(), d.end() - 1);

  p.kind = Plan::General;
  if (k_in == 2) {
    const int64_t a = p.inner_st[0], b = p.inner_st[1];
    if (d.size() == 1) {
      if (a == 1 && b == 1) p.kind = Plan::Same;
      else if (a == 0 && b == 1) p.kind = Plan::ScalarA;
      else if (a == 1 && b == 0) p.kind = Plan::ScalarB;
    } else if (d.size() == 2 && a == 1 && b == 1) {
      if (s[0][0] == p.inner && s[1][0] == 0) p.kind = Plan::SuffixB;
      else if (s[0][0] == 0 && s[1][0] == p.inner) p.kind = Plan::SuffixA;
    }
  } else {
    bool same = d.size() == 1;
    for (int k = 0; k < k_in; ++k) same = same && p.inner_st[k] == 1;
    if (same) p.kind = Plan::Same;
  }
  return p;
}

// Offsets of row r of a general plan into each of k_in inputs.
template <int K>
inline void row_offsets(const Plan& p, int64_t r, int64_t (&off)[K]) {
  for (int k = 0; k < K; ++k) off[k] = 0;
  for (size_t d = p.dims.size(); d-- > 0;) {
    const int64_t dim = p.dims[d];
    const int64_t i = r % dim;
    r /= dim;
    for (int k = 0; k < K; ++k) off[k] += i * p.st[k][d];
  }
}

// One row of a binary op: sa/sb are 1 (contiguous) or 0 (broadcast scalar).
template <class Op, class A, class B, class O>
inline void binary_row(const Op& op, const A* a, int64_t sa, const B* b, int64_t sb, O* o,
                       int64_t n) {
  if (sa && sb) {
    for (int64_t i = 0; i < n; ++i) o[i] = op(a[i], b[i]);
  } else if (sa) {
    const B bv = *b;
    for (int64_t i = 0; i < n; ++i) o[i] = op(a[i], bv);
  } else if (sb) {
    const A av = *a;
    for (int64_t i = 0; i < n; ++i) o[i] = op(av, b[i]);
  } else {
    const O v = op(*a, *b);
    for (int64_t i = 0; i < n; ++i) o[i] = v;
  }
}

// o = op(a, b) under plan p. o may be a (in place) when a has the output's shape.
template <class Op, class A, class B, class O>
void apply2(const Plan& p, const Op& op, const A* a, const B* b, O* o) {
  switch (p.kind) {
    case Plan::Empty: return;
    case Plan::Same: binary_row(op, a, 1, b, 1, o, p.n); return;
    case Plan::ScalarA: binary_row(op, a, 0, b, 1, o, p.n); return;
    case Plan::ScalarB: binary_row(op, a, 1, b, 0, o, p.n); return;
    case Plan::SuffixB:
      for (int64_t r = 0; r < p.rows; ++r)
        binary_row(op, a + r * p.inner, 1, b, 1, o + r * p.inner, p.inner);
      return;
    case Plan::SuffixA:
      for (int64_t r = 0; r < p.rows; ++r)
        binary_row(op, a, 1, b + r * p.inner, 1, o + r * p.inner, p.inner);
      return;
    case Plan::General:
      for (int64_t r = 0; r < p.rows; ++r) {
        int64_t off[2];
        row_offsets(p, r, off);
        binary_row(op, a + off[0], p.inner_st[0], b + off[1], p.inner_st[1], o + r * p.inner,
                   p.inner);
      }
      return;
  }
}

// ---------------------------------------------------------------------------------------------
// Kernels

template <class Op>
Op make_op(const Node& n) {
  if constexpr (std::is_constructible_v<Op, const Node&>) return Op(n);
  else return Op{};
}

template <class Op, class T, class O>
class UnaryKernel final : public Kernel {
 public:
  UnaryKernel(Op op, int64_t n) : op_(op), n_(n) {}
  void run(RunCtx&, const View* in, View* out) override {
    const T* x = in[0].as<const T>();
    O* y = out[0].as<O>();
    // Locals: a store through y (say, of int8) may alias the members as far as the compiler
    // knows, which would stop the loop from vectorizing.
    const Op op = op_;
    const int64_t n = n_;
    for (int64_t i = 0; i < n; ++i) y[i] = op(x[i]);
  }

 private:
  Op op_;
  int64_t n_;
};

template <class Op, class A, class B, class O>
class BinaryKernel final : public Kernel {
 public:
  BinaryKernel(Plan p, Op op) : p_(std::move(p)), op_(op) {}
  void run(RunCtx&, const View* in, View* out) override {
    apply2(p_, op_, in[0].as<const A>(), in[1].as<const B>(), out[0].as<O>());
  }

 private:
  Plan p_;
  Op op_;
};

class CopyKernel final : public Kernel {
 public:
  void run(RunCtx&, const View* in, View* out) override {
    if (out[0].data != in[0].data) std::memcpy(out[0].data, in[0].data, out[0].nbytes());
  }
};

// ---------------------------------------------------------------------------------------------
// Unary ops

struct AbsOp {
  template <class T> T operator()(T x) const {
    if constexpr (std::is_unsigned_v<T>) return x;
    else if constexpr (std::is_integral_v<T>) return x < 0 ? wrap_neg(x) : x;
    else return std::abs(x);
  }
};
struct NegOp { template <class T> T operator()(T x) const { return wrap_neg(x); } };
struct ExpOp { template <class T> T operator()(T x) const { return std::exp(x); } };
struct LogOp { template <class T> T operator()(T x) const { return std::log(x); } };
struct SqrtOp { template <class T> T operator()(T x) const { return std::sqrt(x); } };
struct ReciprocalOp { template <class T> T operator()(T x) const { return T(1) / x; } };
struct SinOp { template <class T> T operator()(T x) const { return std::sin(x); } };
struct CosOp { template <class T> T operator()(T x) const { return std::cos(x); } };
struct FloorOp { template <class T> T operator()(T x) const { return std::floor(x); } };
struct CeilOp { template <class T> T operator()(T x) const { return std::ceil(x); } };
// Round half to even (the default floating-point rounding mode).
struct RoundOp { template <class T> T operator()(T x) const { return std::nearbyint(x); } };
struct SignOp {
  template <class T> T operator()(T x) const {
    if constexpr (std::is_unsigned_v<T>) return x > T(0) ? T(1) : T(0);
    else return x > T(0) ? T(1) : x < T(0) ? T(-1) : x;  // 0 and NaN pass through
  }
};
struct ErfOp {
  template <class T> T operator()(T x) const {
    if constexpr (std::is_floating_point_v<T>) return std::erf(x);
    else return static_cast<T>(std::erf(static_cast<double>(x)));
  }
};
struct NotOp { bool operator()(bool x) const { return !x; } };
struct SoftsignOp {
  template <class T> T operator()(T x) const { return x / (T(1) + std::abs(x)); }
};

// The activations shared with the fused ops go through activate() so both agree exactly.
template <Act A>
struct ActOp {
  float alpha = 0.f, beta = 0.f;
  template <class T> T operator()(T x) const { return activate(A, x, alpha, beta); }
};
struct SigmoidOp : ActOp<Act::Sigmoid> {};
struct TanhOp : ActOp<Act::Tanh> {};
struct SoftplusOp : ActOp<Act::Softplus> {};
struct MishOp : ActOp<Act::Mish> {};
struct EluOp : ActOp<Act::Elu> {
  explicit EluOp(const Node& n) { alpha = n.attr_float("alpha", 1.f); }
};
struct LeakyReluOp : ActOp<Act::LeakyRelu> {
  explicit LeakyReluOp(const Node& n) { alpha = n.attr_float("alpha", 0.01f); }
};
struct HardSigmoidOp : ActOp<Act::HardSigmoid> {
  explicit HardSigmoidOp(const Node& n) {
    alpha = n.attr_float("alpha", 0.2f);
    beta = n.attr_float("beta", 0.5f);
  }
};
struct ReluOp {
  template <class T> T operator()(T x) const {
    if constexpr (std::is_floating_point_v<T>) return activate(Act::Relu, x, 0.f, 0.f);
    else return x > T(0) ? x : T(0);
  }
};
// HardSwish(x) = x * HardSigmoid(x; alpha = 1/6, beta = 0.5).
struct HardSwishOp {
  template <class T> T operator()(T x) const {
    return x * activate(Act::HardSigmoid, x, 1.f / 6.f, 0.5f);
  }
};
// Selu(x) = gamma * Elu(x; alpha).
struct SeluOp {
  float alpha, gamma;
  explicit SeluOp(const Node& n)
      : alpha(n.attr_float("alpha", 1.67326319217681884765625f)),
        gamma(n.attr_float("gamma", 1.05070102214813232421875f)) {}
  template <class T> T operator()(T x) const {
    return T(gamma) * activate(Act::Elu, x, alpha, 0.f);
  }
};

// Gelu (opset 20): x * Phi(x), with approximate = "none" (the erf form) or "tanh"; computed in
// double, rounded once.
struct GeluOp {
  bool tanh_form = false;
  explicit GeluOp(const Node& n) : tanh_form(n.attr_string("approximate", "none") == "tanh") {}
  template <class T> T operator()(T x) const {
    const double v = static_cast<double>(x);
    if (tanh_form) {
      constexpr double kC = 0.7978845608028654;  // sqrt(2 / pi)
      return static_cast<T>(0.5 * v * (1.0 + std::tanh(kC * (v + 0.044715 * v * v * v))));
    }
    return static_cast<T>(0.5 * v * (1.0 + std::erf(v * 0.7071067811865476)));
  }
};

void infer_gelu(InferCtx& c) {
  if (c.opset() < 20) c.fail("Gelu needs opset 20 (the model imports opset ", c.opset(), ")");
  const std::string a = c.node.attr_string("approximate", "none");
  if (a != "none" && a != "tanh") c.fail("approximate must be 'none' or 'tanh', got '", a, "'");
  check_type(c, 0, kFloatTypes);
  c.out[0].dtype = c.in[0].dtype;
  c.out[0].shape = c.in[0].shape;
}

template <uint32_t Allowed>
void infer_unary(InferCtx& c) {
  check_type(c, 0, Allowed);
  c.out[0].dtype = c.in[0].dtype;
  c.out[0].shape = c.in[0].shape;
}

template <class Op, class TL>
KernelPtr make_unary(const InferCtx& c) {
  Op op = make_op<Op>(c.node);
  const int64_t n = numel(c.out[0].shape);
  return pick(TL{}, c, c.in[0].dtype, [&](auto tag) -> KernelPtr {
    using T = typename decltype(tag)::type;
    using O = decltype(op(T{}));
    return std::make_unique<UnaryKernel<Op, T, O>>(op, n);
  });
}

void infer_identity(InferCtx& c) {
  c.input(0);
  c.out[0] = c.in[0];  // type, shape and, for a constant, the value itself
}

// ---------------------------------------------------------------------------------------------
// Binary ops

struct AddOp { template <class T> T operator()(T a, T b) const { return wrap_add(a, b); } };
struct SubOp { template <class T> T operator()(T a, T b) const { return wrap_sub(a, b); } };
struct MulOp { template <class T> T operator()(T a, T b) const { return wrap_mul(a, b); } };
// Integer division truncates toward zero (C). Division by zero gives 0 and MIN / -1 wraps,
// where the hardware would trap.
struct DivOp {
  template <class T> T operator()(T a, T b) const {
    if constexpr (std::is_integral_v<T>) {
      if (b == T(0)) return T(0);
      if constexpr (std::is_signed_v<T>)
        if (b == T(-1)) return wrap_neg(a);
      return static_cast<T>(a / b);
    } else {
      return a / b;
    }
  }
};
// Mod with fmod=0 (integers): the result takes the sign of the divisor, like Python's %.
struct ModFloorOp {
  template <class T> T operator()(T a, T b) const {
    if (b == T(0)) return T(0);
    if constexpr (std::is_signed_v<T>) {
      if (b == T(-1)) return T(0);
      T r = static_cast<T>(a % b);
      if (r != 0 && ((r < 0) != (b < 0))) r = static_cast<T>(r + b);
      return r;
    } else {
      return static_cast<T>(a % b);
    }
  }
};
// Mod with fmod=1: the result takes the sign of the dividend, like C's fmod and %.
struct ModTruncOp {
  template <class T> T operator()(T a, T b) const {
    if constexpr (std::is_floating_point_v<T>) {
      return std::fmod(a, b);
    } else {
      if (b == T(0)) return T(0);
      if constexpr (std::is_signed_v<T>)
        if (b == T(-1)) return T(0);
      return static_cast<T>(a % b);
    }
  }
};
// Max/Min propagate NaN (numpy's maximum/minimum, which the reference uses).
struct MaxOp {
  template <class T> T operator()(T a, T b) const {
    if constexpr (std::is_floating_point_v<T>) {
      if (a != a) return a;
      if (b != b) return b;
    }
    return a < b ? b : a;
  }
};
struct MinOp {
  template <class T> T operator()(T a, T b) const {
    if constexpr (std::is_floating_point_v<T>) {
      if (a != a) return a;
      if (b != b) return b;
    }
    return b < a ? b : a;
  }
};
struct EqualOp { template <class T> bool operator()(T a, T b) const { return a == b; } };
struct LessOp { template <class T> bool operator()(T a, T b) const { return a < b; } };
struct LessEqualOp { template <class T> bool operator()(T a, T b) const { return a <= b; } };
struct GreaterOp { template <class T> bool operator()(T a, T b) const { return a > b; } };
struct GreaterEqualOp { template <class T> bool operator()(T a, T b) const { return a >= b; } };
struct AndOp { bool operator()(bool a, bool b) const { return a && b; } };
struct OrOp { bool operator()(bool a, bool b) const { return a || b; } };
struct XorOp { bool operator()(bool a, bool b) const { return a != b; } };

// Pow: base type T, exponent type E (opset 12+ mixes them); the result has the base's type.
template <class T>
inline T int_pow(T base, int64_t e) {
  if (e < 0) {  // 1/base^|e| truncated: nonzero only for base 1 and -1
    if (base == T(1)) return T(1);
    if constexpr (std::is_signed_v<T>)
      if (base == T(-1)) return (e & 1) ? T(-1) : T(1);
    return T(0);
  }
  T r = T(1);
  while (e) {
    if (e & 1) r = wrap_mul(r, base);
    base = wrap_mul(base, base);
    e >>= 1;
  }
  return r;
}
struct PowOp {
  template <class T, class E> T operator()(T a, E b) const {
    if constexpr (std::is_floating_point_v<T>) {
      if constexpr (std::is_same_v<T, E>) return std::pow(a, b);
      else if constexpr (std::is_floating_point_v<E>)
        return static_cast<T>(std::pow(static_cast<double>(a), static_cast<double>(b)));
      else return std::pow(a, static_cast<T>(b));
    } else if constexpr (std::is_integral_v<E>) {
      if constexpr (std::is_same_v<E, uint64_t>)
        return int_pow(a, b > uint64_t(INT64_MAX) ? INT64_MAX : static_cast<int64_t>(b));
      else return int_pow(a, static_cast<int64_t>(b));
    } else {
      return float_to_int<T>(std::pow(static_cast<double>(a), static_cast<double>(b)));
    }
  }
};
struct SquareOp { template <class T> T operator()(T x) const { return x * x; } };

// Broadcasting binary op with both inputs of one type in `Allowed`. BoolOut: comparison.
template <uint32_t Allowed, bool BoolOut>
void infer_binary(InferCtx& c) {
  check_type(c, 0, Allowed);
  check_type(c, 1, Allowed);
  check_same_type(c, 0, 1);
  c.out[0].dtype = BoolOut ? DType::Bool : c.in[0].dtype;
  c.out[0].shape = broadcast(c, c.in[0].shape, c.in[1].shape);
}

template <class Op, class A, class B = A>
KernelPtr binary_kernel(const InferCtx& c, Op op = Op{}) {
  using O = decltype(op(A{}, B{}));
  return std::make_unique<BinaryKernel<Op, A, B, O>>(
      make_plan({&c.in[0].shape, &c.in[1].shape}, c.out[0].shape), op);
}

template <class Op, class TL>
KernelPtr make_binary(const InferCtx& c) {
  return pick(TL{}, c, c.in[0].dtype, [&](auto tag) -> KernelPtr {
    return binary_kernel<Op, typename decltype(tag)::type>(c);
  });
}

void infer_mod(InferCtx& c) {
  infer_binary<kNumTypes, false>(c);
  const int64_t fmod = c.node.attr_int("fmod", 0);
  if (fmod != 0 && fmod != 1) c.fail("attribute fmod must be 0 or 1, got ", fmod);
  if (fmod == 0 && (kFloatTypes & bit(c.in[0].dtype)))
    c.fail("fmod must be 1 for floating-point inputs (type ", dtype_name(c.in[0].dtype), ")");
}

KernelPtr make_mod(const InferCtx& c) {
  if (c.node.attr_int("fmod", 0) == 1) return make_binary<ModTruncOp, NumTs>(c);
  return pick(Types<int8_t, int16_t, int32_t, int64_t, uint8_t, uint16_t, uint32_t, uint64_t>{},
              c, c.in[0].dtype,
              [&](auto tag) -> KernelPtr { return binary_kernel<ModFloorOp, typename decltype(tag)::type>(c); });
}

void infer_pow(InferCtx& c) {
  if (c.opset() < 12) {
    check_type(c, 0, kFloatTypes);
    check_type(c, 1, kFloatTypes);
    check_same_type(c, 0, 1);
  } else {
    check_type(c, 0, kFloatTypes | bit(DType::I32) | bit(DType::I64));
    check_type(c, 1, kNumTypes);
  }
  c.out[0].dtype = c.in[0].dtype;
  c.out[0].shape = broadcast(c, c.in[0].shape, c.in[1].shape);
}

KernelPtr make_pow(const InferCtx& c) {
  // x ^ 2 and x ^ 1 with a constant exponent (common in losses and normalizations written
  // out by exporters) avoid the library pow; both are exact, so the results are identical.
  const TensorInfo& e = c.in[1];
  if (e.value && e.value->numel() == 1 && c.in[0].shape == c.out[0].shape) {
    const double v = e.value->float_at(0);
    if (v == 1.0) return std::make_unique<CopyKernel>();
    if (v == 2.0 && c.in[0].dtype == DType::F32)
      return std::make_unique<UnaryKernel<SquareOp, float, float>>(SquareOp{}, numel(c.out[0].shape));
  }
  return pick(Types<float, double, int32_t, int64_t>{}, c, c.in[0].dtype, [&](auto base) {
    using T = typename decltype(base)::type;
    return pick(NumTs{}, c, c.in[1].dtype, [&](auto exp) -> KernelPtr {
      return binary_kernel<PowOp, T, typename decltype(exp)::type>(c);
    });
  });
}

// ---------------------------------------------------------------------------------------------
// Variadic Max, Min, Sum, Mean (multidirectional broadcasting across all inputs)

template <class Op, class T, bool Mean>
class VariadicKernel final : public Kernel {
 public:
  VariadicKernel(std::vector<Plan> plans, int64_t n) : plans_(std::move(plans)), n_(n) {}
  void run(RunCtx&, const View* in, View* out) override {
    T* o = out[0].as<T>();
    const Op op{};
    apply2(plans_[0], op, in[0].as<const T>(), in[1].as<const T>(), o);
    for (size_t k = 1; k < plans_.size(); ++k)
      apply2(plans_[k], op, static_cast<const T*>(o), in[k + 1].as<const T>(), o);
    if constexpr (Mean) {
      const T d = static_cast<T>(plans_.size() + 1);
      const int64_t n = n_;
      for (int64_t i = 0; i < n; ++i) o[i] /= d;
    }
  }

 private:
  std::vector<Plan> plans_;  // inputs 0 and 1 into the output, then output and input k
  int64_t n_;
};

template <uint32_t Allowed>
void infer_variadic(InferCtx& c) {
  const size_t n = c.in.size();
  if (n == 0) c.fail("needs at least one input");
  Shape s = c.input(0).shape;
  for (size_t i = 0; i < n; ++i) {
    check_type(c, i, Allowed);
    check_same_type(c, 0, i);
    s = broadcast(c, s, c.in[i].shape);
  }
  c.out[0].dtype = c.in[0].dtype;
  c.out[0].shape = s;
}

template <class Op, class TL, bool Mean = false>
KernelPtr make_variadic(const InferCtx& c) {
  const Shape& out = c.out[0].shape;
  if (c.in.size() == 1) return std::make_unique<CopyKernel>();
  std::vector<Plan> plans;
  plans.push_back(make_plan({&c.in[0].shape, &c.in[1].shape}, out));
  for (size_t k = 2; k < c.in.size(); ++k) plans.push_back(make_plan({&out, &c.in[k].shape}, out));
  return pick(TL{}, c, c.in[0].dtype, [&](auto tag) -> KernelPtr {
    using T = typename decltype(tag)::type;
    return std::make_unique<VariadicKernel<Op, T, Mean>>(std::move(plans), numel(out));
  });
}

// ---------------------------------------------------------------------------------------------
// Where

template <class T>
class WhereKernel final : public Kernel {
 public:
  explicit WhereKernel(Plan p) : p_(std::move(p)) {}
  void run(RunCtx&, const View* in, View* out) override {
    const bool* c = in[0].as<const bool>();
    const T* x = in[1].as<const T>();
    const T* y = in[2].as<const T>();
    T* o = out[0].as<T>();
    if (p_.kind == Plan::Empty) return;
    if (p_.kind == Plan::Same) {
      const int64_t n = p_.n;
      for (int64_t i = 0; i < n; ++i) {
        const T xv = x[i], yv = y[i];  // both loaded: lets the loop vectorize as a select
        o[i] = c[i] ? xv : yv;
      }
      return;
    }
    const int64_t sc = p_.inner_st[0], sx = p_.inner_st[1], sy = p_.inner_st[2];
    const int64_t rows = p_.rows, inner = p_.inner;
    for (int64_t r = 0; r < rows; ++r) {
      int64_t off[3];
      row_offsets(p_, r, off);
      const bool* cr = c + off[0];
      const T* xr = x + off[1];
      const T* yr = y + off[2];
      T* orow = o + r * inner;
      for (int64_t i = 0; i < inner; ++i) {
        const T xv = xr[i * sx], yv = yr[i * sy];
        orow[i] = cr[i * sc] ? xv : yv;
      }
    }
  }

 private:
  Plan p_;
};

void infer_where(InferCtx& c) {
  if (c.input(0).dtype != DType::Bool)
    c.fail("condition must be bool, got ", dtype_name(c.in[0].dtype));
  check_type(c, 1, kAnyTypes, /*computes=*/false);
  check_same_type(c, 1, 2);
  c.out[0].dtype = c.in[1].dtype;
  c.out[0].shape = broadcast(c, broadcast(c, c.in[0].shape, c.in[1].shape), c.in[2].shape);
}

KernelPtr make_where(const InferCtx& c) {
  Plan p = make_plan({&c.in[0].shape, &c.in[1].shape, &c.in[2].shape}, c.out[0].shape);
  if (is_half(c.in[1].dtype)) return std::make_unique<WhereKernel<uint16_t>>(std::move(p));
  return pick(AllTs{}, c, c.in[1].dtype, [&](auto tag) -> KernelPtr {
    return std::make_unique<WhereKernel<typename decltype(tag)::type>>(std::move(p));
  });
}

// ---------------------------------------------------------------------------------------------
// Clip: bounds are attributes before opset 11, optional scalar inputs from 11 on (read at run
// time, so they need not be constant). Omitted bounds do not clip.

template <class T>
class ClipKernel final : public Kernel {
 public:
  ClipKernel(int64_t n, bool min_in, bool max_in, T lo, T hi)
      : n_(n), min_in_(min_in), max_in_(max_in), lo_(lo), hi_(hi) {}
  void run(RunCtx&, const View* in, View* out) override {
    const T lo = min_in_ ? *in[1].as<const T>() : lo_;
    const T hi = max_in_ ? *in[2].as<const T>() : hi_;
    const T* x = in[0].as<const T>();
    T* y = out[0].as<T>();
    const int64_t n = n_;
    if constexpr (std::is_same_v<T, float>) {
      for (int64_t i = 0; i < n; ++i) y[i] = activate(Act::Clip, x[i], lo, hi);
    } else {  // the same formula as activate's Clip: min(max(x, lo), hi)
      for (int64_t i = 0; i < n; ++i) {
        const T v = x[i] < lo ? lo : x[i];
        y[i] = hi < v ? hi : v;
      }
    }
  }

 private:
  int64_t n_;
  bool min_in_, max_in_;
  T lo_, hi_;
};

void infer_clip(InferCtx& c) {
  if (c.opset() < 11) {
    check_type(c, 0, kFloatTypes);
    if (c.num_inputs() > 1) c.fail("takes one input before opset 11 (min and max are attributes)");
  } else {
    check_type(c, 0, c.opset() < 12 ? kFloatTypes : kNumTypes);
    for (size_t i = 1; i < 3; ++i) {
      if (!c.has_input(i)) continue;
      check_same_type(c, 0, i);
      if (numel(c.in[i].shape) != 1)
        c.fail(i == 1 ? "min" : "max", " must be a scalar, got shape ", shape_str(c.in[i].shape));
    }
  }
  c.out[0].dtype = c.in[0].dtype;
  c.out[0].shape = c.in[0].shape;
}

KernelPtr make_clip(const InferCtx& c) {
  const int64_t n = numel(c.out[0].shape);
  const bool attrs = c.opset() < 11;
  const bool min_in = !attrs && c.has_input(1);
  const bool max_in = !attrs && c.has_input(2);
  return pick(NumTs{}, c, c.in[0].dtype, [&](auto tag) -> KernelPtr {
    using T = typename decltype(tag)::type;
    T lo = std::numeric_limits<T>::lowest(), hi = std::numeric_limits<T>::max();
    if (attrs) {
      if (c.node.has("min")) lo = static_cast<T>(c.node.attr_float("min", 0.f));
      if (c.node.has("max")) hi = static_cast<T>(c.node.attr_float("max", 0.f));
    }
    return std::make_unique<ClipKernel<T>>(n, min_in, max_in, lo, hi);
  });
}

// ---------------------------------------------------------------------------------------------
// Cast / CastLike: every pair of float, double, the integer types, bool, float16 and bfloat16.

struct Half { uint16_t bits; };
struct BHalf { uint16_t bits; };

template <class T> inline auto cast_load(T v) { return v; }
inline float cast_load(Half v) { return half_to_float(v.bits); }
inline float cast_load(BHalf v) { return bf16_to_float(v.bits); }

template <class To, class V>
inline To cast_store(V v) {
  if constexpr (std::is_same_v<To, Half>) return Half{float_to_half(static_cast<float>(v))};
  else if constexpr (std::is_same_v<To, BHalf>) return BHalf{float_to_bf16(static_cast<float>(v))};
  else if constexpr (std::is_same_v<To, bool>) return v != V(0);
  else if constexpr (std::is_integral_v<To> && std::is_floating_point_v<V>) return float_to_int<To>(v);
  else return static_cast<To>(v);
}

template <class From, class To>
class CastKernel final : public Kernel {
 public:
  explicit CastKernel(int64_t n) : n_(n) {}
  void run(RunCtx&, const View* in, View* out) override {
    const From* x = in[0].as<const From>();
    To* y = out[0].as<To>();
    const int64_t n = n_;
    for (int64_t i = 0; i < n; ++i) y[i] = cast_store<To>(cast_load(x[i]));
  }

 private:
  int64_t n_;
};

using CastTs = Types<float, double, int8_t, int16_t, int32_t, int64_t, uint8_t, uint16_t, uint32_t,
                     uint64_t, bool, Half, BHalf>;

template <class T> constexpr DType cast_dtype() {
  if constexpr (std::is_same_v<T, Half>) return DType::F16;
  else if constexpr (std::is_same_v<T, BHalf>) return DType::BF16;
  else return dtype_of<T>();
}

template <class F, class T, class... Ts>
KernelPtr pick_cast_impl(DType t, F& f) {
  if (t == cast_dtype<T>()) return f(Tag<T>{});
  if constexpr (sizeof...(Ts) > 0) return pick_cast_impl<F, Ts...>(t, f);
  else return nullptr;
}
template <class... Ts, class F>
KernelPtr pick_cast(Types<Ts...>, const InferCtx& c, DType t, F f) {
  KernelPtr k = pick_cast_impl<F, Ts...>(t, f);
  if (!k) c.unsupported("data type ", dtype_name(t), " is not supported");
  return k;
}

void check_cast_type(const InferCtx& c, DType t, const char* what) {
  switch (t) {
    case DType::F32: case DType::F64: case DType::I8: case DType::I16: case DType::I32:
    case DType::I64: case DType::U8: case DType::U16: case DType::U32: case DType::U64:
    case DType::Bool: case DType::F16: case DType::BF16:
      return;
    case DType::String:
      c.unsupported(what, " data type string is not supported");
    default:
      c.unsupported(what, " data type ", static_cast<int>(t), " (", dtype_name(t),
                    ") is not supported");
  }
}

void infer_cast(InferCtx& c) {
  check_cast_type(c, c.input(0).dtype, "input");
  if (!c.node.has("to")) c.fail("attribute 'to' is required");
  const DType to = static_cast<DType>(c.node.attr_int("to", 0));
  check_cast_type(c, to, "target");
  c.out[0].dtype = to;
  c.out[0].shape = c.in[0].shape;
}

void infer_castlike(InferCtx& c) {
  check_cast_type(c, c.input(0).dtype, "input");
  check_cast_type(c, c.input(1).dtype, "target");
  c.out[0].dtype = c.in[1].dtype;
  c.out[0].shape = c.in[0].shape;
}

KernelPtr make_cast(const InferCtx& c) {
  if (c.in[0].dtype == c.out[0].dtype) return std::make_unique<CopyKernel>();
  const int64_t n = numel(c.out[0].shape);
  return pick_cast(CastTs{}, c, c.in[0].dtype, [&](auto from) {
    return pick_cast(CastTs{}, c, c.out[0].dtype, [&](auto to) -> KernelPtr {
      return std::make_unique<CastKernel<typename decltype(from)::type, typename decltype(to)::type>>(n);
    });
  });
}

}  // namespace

void register_elementwise_ops(OpRegistry& r) {
  constexpr uint32_t kF = kFloatTypes;
  constexpr uint32_t kSignedNum = kFloatTypes | kSignedTypes;
  constexpr uint32_t kN = kNumTypes;

  // Unary.
  r.add({"", "Abs", infer_unary<kN>, make_unary<AbsOp, NumTs>});
  r.add({"", "Neg", infer_unary<kSignedNum>, make_unary<NegOp, SignedNumTs>});
  r.add({"", "Exp", infer_unary<kF>, make_unary<ExpOp, FloatTs>});
  r.add({"", "Log", infer_unary<kF>, make_unary<LogOp, FloatTs>});
  r.add({"", "Sqrt", infer_unary<kF>, make_unary<SqrtOp, FloatTs>});
  r.add({"", "Reciprocal", infer_unary<kF>, make_unary<ReciprocalOp, FloatTs>});
  r.add({"", "Sigmoid", infer_unary<kF>, make_unary<SigmoidOp, FloatTs>});
  r.add({"", "Tanh", infer_unary<kF>, make_unary<TanhOp, FloatTs>});
  r.add({"", "Relu", infer_unary<kSignedNum>, make_unary<ReluOp, SignedNumTs>});
  r.add({"", "Elu", infer_unary<kF>, make_unary<EluOp, FloatTs>});
  r.add({"", "LeakyRelu", infer_unary<kF>, make_unary<LeakyReluOp, FloatTs>});
  r.add({"", "Selu", infer_unary<kF>, make_unary<SeluOp, FloatTs>});
  r.add({"", "Softplus", infer_unary<kF>, make_unary<SoftplusOp, FloatTs>});
  r.add({"", "Softsign", infer_unary<kF>, make_unary<SoftsignOp, FloatTs>});
  r.add({"", "Mish", infer_unary<kF>, make_unary<MishOp, FloatTs>});
  r.add({"", "HardSigmoid", infer_unary<kF>, make_unary<HardSigmoidOp, FloatTs>});
  r.add({"", "HardSwish", infer_unary<kF>, make_unary<HardSwishOp, FloatTs>});
  r.add({"", "Gelu", infer_gelu, make_unary<GeluOp, FloatTs>});
  r.add({"", "Sin", infer_unary<kF>, make_unary<SinOp, FloatTs>});
  r.add({"", "Cos", infer_unary<kF>, make_unary<CosOp, FloatTs>});
  r.add({"", "Floor", infer_unary<kF>, make_unary<FloorOp, FloatTs>});
  r.add({"", "Ceil", infer_unary<kF>, make_unary<CeilOp, FloatTs>});
  r.add({"", "Round", infer_unary<kF>, make_unary<RoundOp, FloatTs>});
  r.add({"", "Sign", infer_unary<kN>, make_unary<SignOp, NumTs>});
  r.add({"", "Erf", infer_unary<kN>, make_unary<ErfOp, NumTs>});
  r.add({"", "Not", infer_unary<kBoolType>, make_unary<NotOp, BoolTs>});
  r.add({"", "Identity", infer_identity, nullptr, kOpAlias});

  // Binary, with multidirectional broadcasting.
  r.add({"", "Add", infer_binary<kN, false>, make_binary<AddOp, NumTs>});
  r.add({"", "Sub", infer_binary<kN, false>, make_binary<SubOp, NumTs>});
  r.add({"", "Mul", infer_binary<kN, false>, make_binary<MulOp, NumTs>});
  r.add({"", "Div", infer_binary<kN, false>, make_binary<DivOp, NumTs>});
  r.add({"", "Mod", infer_mod, make_mod});
  r.add({"", "Pow", infer_pow, make_pow});
  r.add({"", "Equal", infer_binary<kN | kBoolType, true>, make_binary<EqualOp, AllTs>});
  r.add({"", "Less", infer_binary<kN, true>, make_binary<LessOp, NumTs>});
  r.add({"", "LessOrEqual", infer_binary<kN, true>, make_binary<LessEqualOp, NumTs>});
  r.add({"", "Greater", infer_binary<kN, true>, make_binary<GreaterOp, NumTs>});
  r.add({"", "GreaterOrEqual", infer_binary<kN, true>, make_binary<GreaterEqualOp, NumTs>});
  r.add({"", "And", infer_binary<kBoolType, true>, make_binary<AndOp, BoolTs>});
  r.add({"", "Or", infer_binary<kBoolType, true>, make_binary<OrOp, BoolTs>});
  r.add({"", "Xor", infer_binary<kBoolType, true>, make_binary<XorOp, BoolTs>});

  // Variadic.
  r.add({"", "Max", infer_variadic<kN>, make_variadic<MaxOp, NumTs>});
  r.add({"", "Min", infer_variadic<kN>, make_variadic<MinOp, NumTs>});
  r.add({"", "Sum", infer_variadic<kF>, make_variadic<AddOp, FloatTs>});
  r.add({"", "Mean", infer_variadic<kF>, make_variadic<AddOp, FloatTs, true>});

  r.add({"", "Where", infer_where, make_where});
  r.add({"", "Clip", infer_clip, make_clip});
  r.add({"", "Cast", infer_cast, make_cast});
  r.add({"", "CastLike", infer_castlike, make_cast});
}

}  // namespace pd
