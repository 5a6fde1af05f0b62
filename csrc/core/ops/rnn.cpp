// Recurrent ops of ai.onnx: LSTM, GRU and RNN (opset 7 and 14; 14 added `layout`).
//
// One kernel shape serves all three: the input projection X·Wᵀ of every time step is one GEMM
// per direction (rc.blas->sgemm for float), the recurrent projection H·Rᵀ is one GEMM per step
// over the whole batch, and the gates are computed row by row in place. Constant W and R (the
// usual case: initializers) are transposed once in make() so the GEMMs read B untransposed.
// Scratch is sized in make(); run() allocates nothing.
//
// Semantics follow the ONNX spec, and ONNX Runtime where the spec is silent:
//   - gate order in W/R/B: LSTM i, o, f, c; GRU z, r, h; peepholes P: i, o, f.
//   - `clip` bounds every gate's pre-activation to [-clip, clip] (not the cell state).
//   - `activations` names are case-insensitive; `activation_alpha/beta` are consumed, in the
//     order of the activations, only by the functions that take them (LeakyRelu, ThresholdedRelu,
//     Elu: alpha; Affine, ScaledTanh, HardSigmoid: alpha and beta); a function whose values run
//     out uses its ONNX default (LeakyRelu 0.01, ThresholdedRelu 1, Elu 1, HardSigmoid 0.2/0.5,
//     Affine 1/0, ScaledTanh 1/1). A list of one direction's activations is reused for both
//     directions of a bidirectional op.
//   - `sequence_lens`: batch entry b runs len[b] steps (the reverse direction walks time
//     len[b]-1 .. 0); Y is zero at t >= len[b]; Y_h/Y_c hold the state after the last step
//     (the initial state when len[b] is 0).
//   - `input_forget` (LSTM): f = 1 - i.
//
// Float math is single precision, with vectorized polynomial exp/tanh (relative error below
// 4e-7) for Sigmoid/Tanh (4 lanes, 8 with AVX2 when the CPU has it); double inputs compute in
// double with <cmath>.
//
// Conformance exceptions: none (float16 inputs are reported as an unsupported data type).
#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstring>

#include "../op.h"

namespace pd {
namespace {

// ---- activations ------------------------------------------------------------------------

enum class RAct { Sigmoid, Tanh, Relu, LeakyRelu, ThresholdedRelu, HardSigmoid, Elu, Softsign,
                  Softplus, Affine, ScaledTanh };

struct ActFn {
  RAct kind = RAct::Sigmoid;
  float alpha = 0, beta = 0;
};

// Vectorized float sigmoid and tanh with GCC/Clang vector extensions: 4 lanes (the SSE2/NEON
// baseline) and, on x86-64 CPUs that have it, an AVX2 build of the same code with 8 lanes,
// chosen once at run time.
typedef float vf4 __attribute__((vector_size(16)));
typedef int32_t vi4 __attribute__((vector_size(16)));
#if defined(__x86_64__) && defined(__GNUC__)
#define PD_RNN_AVX2 1
// 32-byte vectors are only used inside the AVX2 functions, where everything is inlined.
#pragma GCC diagnostic ignored "-Wpsabi"
typedef float vf8 __attribute__((vector_size(32)));
typedef int32_t vi8 __attribute__((vector_size(32)));
#endif

#define PD_INLINE inline __attribute__((always_inline))

template <typename V>
PD_INLINE V vload(const float* p) { V v; std::memcpy(&v, p, sizeof v); return v; }
template <typename V>
PD_INLINE void vstore(float* p, const V& v) { std::memcpy(p, &v, sizeof v); }
template <typename V>
PD_INLINE V vclamp(const V& x0, float lo, float hi) {
  const V x = x0 < lo ? V{} + lo : x0;
  return x > hi ? V{} + hi : x;
}
PD_INLINE float sclamp(float x, float lo, float hi) { return x < lo ? lo : (x > hi ? hi : x); }

// exp: Cephes expf's range reduction and polynomial; 2^n assembled in the exponent bits.
constexpr float kExpLo = -87.3365447504f, kExpHi = 88.3762626647949f;
template <typename V>
PD_INLINE V exp_poly(const V& x, const V& t) {
  const V n = t - 12582912.0f;
  V r = x - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  const V z = r * r;
  V y = r * 1.9875691500e-4f + 1.3981999507e-3f;
  y = y * r + 8.3334519073e-3f;
  y = y * r + 4.1665795894e-2f;
  y = y * r + 1.6666665459e-1f;
  y = y * r + 5.0000001201e-1f;
  return y * z + r + 1.0f;
}
template <typename V, typename VI>
PD_INLINE V vexp(const V& x0) {
  const V x = vclamp(x0, kExpLo, kExpHi);
  const V t = x * 1.44269504088896341f + 12582912.0f;
  const V y = exp_poly(x, t);
  const VI e = ((VI)t - 0x4B400000 + 127) << 23;
  return y * (V)e;
}
PD_INLINE float sexp(float x) {
  x = sclamp(x, kExpLo, kExpHi);
  const float t = x * 1.44269504088896341f + 12582912.0f;
  const float y = exp_poly(x, t);
  int32_t ti;
  std::memcpy(&ti, &t, 4);
  const int32_t e = (ti - 0x4B400000 + 127) * (1 << 23);
  float s;
  std::memcpy(&s, &e, 4);
  return y * s;
}
// tanh: the rational approximation of Eigen/MLAS on [-9, 9].
template <typename V>
PD_INLINE V tanh_rational(const V& x) {
  const V x2 = x * x;
  V p = x2 * -2.76076847742355e-16f + 2.00018790482477e-13f;
  p = p * x2 + -8.60467152213735e-11f;
  p = p * x2 + 5.12229709037114e-08f;
  p = p * x2 + 1.48572235717979e-05f;
  p = p * x2 + 6.37261928875436e-04f;
  p = p * x2 + 4.89352455891786e-03f;
  V q = x2 * 1.19825839466702e-06f + 1.18534705686654e-04f;
  q = q * x2 + 2.26843463243900e-03f;
  q = q * x2 + 4.89352518554385e-03f;
  return p * x / q;
}

template <typename V, typename VI>
PD_INLINE void sigmoid_lanes(float* x, int64_t n) {
  constexpr int64_t L = sizeof(V) / sizeof(float);
  int64_t i = 0;
  for (; i + L <= n; i += L) vstore(x + i, 1.0f / (1.0f + vexp<V, VI>(-vload<V>(x + i))));
  for (; i < n; ++i) x[i] = 1.0f / (1.0f + sexp(-x[i]));
}
template <typename V>
PD_INLINE void tanh_lanes(float* x, int64_t n) {
  constexpr int64_t L = sizeof(V) / sizeof(float);
  int64_t i = 0;
  for (; i + L <= n; i += L) vstore(x + i, tanh_rational(vclamp(vload<V>(x + i), -9.f, 9.f)));
  for (; i < n; ++i) x[i] = tanh_rational(sclamp(x[i], -9.f, 9.f));
}

void sigmoid4(float* x, int64_t n) { sigmoid_lanes<vf4, vi4>(x, n); }
void tanh4(float* x, int64_t n) { tanh_lanes<vf4>(x, n); }
#ifdef PD_RNN_AVX2
__attribute__((target("avx2"))) void sigmoid8(float* x, int64_t n) {
  sigmoid_lanes<vf8, vi8>(x, n);
}
__attribute__((target("avx2"))) void tanh8(float* x, int64_t n) { tanh_lanes<vf8>(x, n); }
bool have_avx2() {
  static const bool yes = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") != 0;
  }();
  return yes;
}
#endif

void sigmoid_inplace(float* x, int64_t n) {
#ifdef PD_RNN_AVX2
  if (have_avx2()) return sigmoid8(x, n);
#endif
  sigmoid4(x, n);
}
void tanh_inplace(float* x, int64_t n) {
#ifdef PD_RNN_AVX2
  if (have_avx2()) return tanh8(x, n);
#endif
  tanh4(x, n);
}
void sigmoid_inplace(double* x, int64_t n) {
  for (int64_t i = 0; i < n; ++i) x[i] = 1.0 / (1.0 + std::exp(-x[i]));
}
void tanh_inplace(double* x, int64_t n) {
  for (int64_t i = 0; i < n; ++i) x[i] = std::tanh(x[i]);
}

template <typename T>
void activate(const ActFn& a, T* x, int64_t n) {
  const T al = static_cast<T>(a.alpha), be = static_cast<T>(a.beta);
  switch (a.kind) {
    case RAct::Sigmoid: sigmoid_inplace(x, n); return;
    case RAct::Tanh: tanh_inplace(x, n); return;
    case RAct::ScaledTanh:
      for (int64_t i = 0; i < n; ++i) x[i] *= be;
      tanh_inplace(x, n);
      for (int64_t i = 0; i < n; ++i) x[i] *= al;
      return;
    case RAct::Relu:
      for (int64_t i = 0; i < n; ++i) x[i] = x[i] > T(0) ? x[i] : T(0);
      return;
    case RAct::LeakyRelu:
      for (int64_t i = 0; i < n; ++i) x[i] = x[i] >= T(0) ? x[i] : al * x[i];
      return;
    case RAct::ThresholdedRelu:
      for (int64_t i = 0; i < n; ++i) x[i] = x[i] > al ? x[i] : T(0);
      return;
    case RAct::HardSigmoid:
      for (int64_t i = 0; i < n; ++i) x[i] = std::max(T(0), std::min(T(1), al * x[i] + be));
      return;
    case RAct::Elu:
      for (int64_t i = 0; i < n; ++i) x[i] = x[i] >= T(0) ? x[i] : al * (std::exp(x[i]) - T(1));
      return;
    case RAct::Softsign:
      for (int64_t i = 0; i < n; ++i) x[i] = x[i] / (T(1) + std::fabs(x[i]));
      return;
    case RAct::Softplus:
      for (int64_t i = 0; i < n; ++i)
        x[i] = x[i] > T(20) ? x[i] : static_cast<T>(std::log1p(std::exp(x[i])));
      return;
    case RAct::Affine:
      for (int64_t i = 0; i < n; ++i) x[i] = al * x[i] + be;
      return;
  }
}

// Parses `activations` (+ alpha/beta) into nd * per_dir functions, direction-major.
std::vector<ActFn> parse_activations(const InferCtx& c, int64_t nd,
                                     const std::vector<std::string>& defaults) {
  const size_t per_dir = defaults.size();
  std::vector<std::string> names = c.node.attr_strings("activations");
  if (names.empty()) {
    for (int64_t d = 0; d < nd; ++d) names.insert(names.end(), defaults.begin(), defaults.end());
  } else if (names.size() == per_dir && nd == 2) {
    std::vector<std::string> both = names;
    both.insert(both.end(), names.begin(), names.end());
    names = both;
  } else if (names.size() != per_dir * static_cast<size_t>(nd)) {
    c.fail("'activations' has ", names.size(), " entries; expected ", per_dir * nd);
  }
  const std::vector<float> alphas = c.node.attr_floats("activation_alpha");
  const std::vector<float> betas = c.node.attr_floats("activation_beta");
  size_t ai = 0, bi = 0;
  std::vector<ActFn> out;
  for (const std::string& name : names) {
    std::string l = name;
    for (char& ch : l) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
    static const struct { const char* n; RAct k; int na, nb; float da, db; } kTable[] = {
        {"sigmoid", RAct::Sigmoid, 0, 0, 0, 0},
        {"tanh", RAct::Tanh, 0, 0, 0, 0},
        {"relu", RAct::Relu, 0, 0, 0, 0},
        {"leakyrelu", RAct::LeakyRelu, 1, 0, 0.01f, 0},
        {"thresholdedrelu", RAct::ThresholdedRelu, 1, 0, 1.0f, 0},
        {"hardsigmoid", RAct::HardSigmoid, 1, 1, 0.2f, 0.5f},
        {"elu", RAct::Elu, 1, 0, 1.0f, 0},
        {"softsign", RAct::Softsign, 0, 0, 0, 0},
        {"softplus", RAct::Softplus, 0, 0, 0, 0},
        {"affine", RAct::Affine, 1, 1, 1.0f, 0},
        {"scaledtanh", RAct::ScaledTanh, 1, 1, 1.0f, 1.0f},
    };
    bool found = false;
    for (const auto& e : kTable) {
      if (l != e.n) continue;
      ActFn f;
      f.kind = e.k;
      f.alpha = e.da;
      f.beta = e.db;
      if (e.na && ai < alphas.size()) f.alpha = alphas[ai++];
      if (e.nb && bi < betas.size()) f.beta = betas[bi++];
      out.push_back(f);
      found = true;
      break;
    }
    if (!found) c.unsupported("activation '", name, "' is not supported");
  }
  return out;
}

// ---- shapes and attributes ----------------------------------------------------------------

enum class Cell { RNN, GRU, LSTM };

struct Plan {
  Cell cell = Cell::LSTM;
  int64_t gates = 4;  // G: 4 LSTM, 3 GRU, 1 RNN
  int64_t S = 0, N = 0, I = 0, H = 0, nd = 1;  // seq, batch, input, hidden, directions
  int direction = 0;  // 0 forward, 1 reverse, 2 bidirectional
  int layout = 0;     // 0: [S, N, ...]; 1: [N, S, ...]
  bool has_clip = false;
  float clip = 0;
  bool input_forget = false;
  bool linear_before_reset = false;
  std::vector<ActFn> acts;  // nd * per_dir
  int per_dir = 3;
  bool has_b = false, has_seq = false, has_h0 = false, has_c0 = false, has_p = false;
  bool out_y = false, out_yh = false, out_yc = false;
};

const char* cell_name(Cell c) { return c == Cell::LSTM ? "LSTM" : c == Cell::GRU ? "GRU" : "RNN"; }

Plan make_plan(const InferCtx& c, Cell cell) {
  Plan p;
  p.cell = cell;
  p.gates = cell == Cell::LSTM ? 4 : cell == Cell::GRU ? 3 : 1;
  const TensorInfo& x = c.input(0);
  const TensorInfo& w = c.input(1);
  const TensorInfo& r = c.input(2);
  if (x.dtype != DType::F32 && x.dtype != DType::F64)
    c.unsupported("data type ", dtype_name(x.dtype), " is not supported (float and double are)");
  for (size_t i : {size_t{1}, size_t{2}, size_t{3}, size_t{5}, size_t{6}, size_t{7}})
    if (c.has_input(i) && c.in[i].dtype != x.dtype)
      c.fail("input ", i, " has data type ", dtype_name(c.in[i].dtype), ", expected ",
             dtype_name(x.dtype));
  if (x.shape.size() != 3) c.fail("X must have rank 3, got ", shape_str(x.shape));
  if (w.shape.size() != 3) c.fail("W must have rank 3, got ", shape_str(w.shape));
  if (r.shape.size() != 3) c.fail("R must have rank 3, got ", shape_str(r.shape));

  p.layout = c.opset() >= 14 ? static_cast<int>(c.node.attr_int("layout", 0)) : 0;
  if (p.layout != 0 && p.layout != 1) c.fail("layout must be 0 or 1, got ", p.layout);
  p.S = p.layout == 0 ? x.shape[0] : x.shape[1];
  p.N = p.layout == 0 ? x.shape[1] : x.shape[0];
  p.I = x.shape[2];

  const std::string dir = c.node.attr_string("direction", "forward");
  if (dir == "forward") p.direction = 0;
  else if (dir == "reverse") p.direction = 1;
  else if (dir == "bidirectional") p.direction = 2;
  else c.fail("direction must be forward, reverse or bidirectional, got '", dir, "'");
  p.nd = p.direction == 2 ? 2 : 1;

  p.H = c.node.attr_int("hidden_size", r.shape[2]);
  if (p.H <= 0) c.fail("hidden_size must be positive, got ", p.H);
  const int64_t GH = p.gates * p.H;
  if (w.shape != Shape{p.nd, GH, p.I})
    c.fail("W has shape ", shape_str(w.shape), ", expected ", shape_str({p.nd, GH, p.I}));
  if (r.shape != Shape{p.nd, GH, p.H})
    c.fail("R has shape ", shape_str(r.shape), ", expected ", shape_str({p.nd, GH, p.H}));
  p.has_b = c.has_input(3);
  if (p.has_b && c.in[3].shape != Shape{p.nd, 2 * GH})
    c.fail("B has shape ", shape_str(c.in[3].shape), ", expected ", shape_str({p.nd, 2 * GH}));
  p.has_seq = c.has_input(4);
  if (p.has_seq) {
    if (c.in[4].dtype != DType::I32)
      c.fail("sequence_lens must be int32, got ", dtype_name(c.in[4].dtype));
    if (c.in[4].shape != Shape{p.N})
      c.fail("sequence_lens has shape ", shape_str(c.in[4].shape), ", expected ",
             shape_str({p.N}));
  }
  const Shape state = p.layout == 0 ? Shape{p.nd, p.N, p.H} : Shape{p.N, p.nd, p.H};
  p.has_h0 = c.has_input(5);
  if (p.has_h0 && c.in[5].shape != state)
    c.fail("initial_h has shape ", shape_str(c.in[5].shape), ", expected ", shape_str(state));
  if (cell == Cell::LSTM) {
    p.has_c0 = c.has_input(6);
    if (p.has_c0 && c.in[6].shape != state)
      c.fail("initial_c has shape ", shape_str(c.in[6].shape), ", expected ", shape_str(state));
    p.has_p = c.has_input(7);
    if (p.has_p && c.in[7].shape != Shape{p.nd, 3 * p.H})
      c.fail("P has shape ", shape_str(c.in[7].shape), ", expected ",
             shape_str({p.nd, 3 * p.H}));
    p.input_forget = c.node.attr_int("input_forget", 0) != 0;
  } else if (c.num_inputs() > 6) {
    c.fail(cell_name(cell), " takes at most 6 inputs, got ", c.num_inputs());
  }
  if (cell == Cell::GRU) p.linear_before_reset = c.node.attr_int("linear_before_reset", 0) != 0;
  if (c.node.has("clip")) {
    p.has_clip = true;
    p.clip = c.node.attr_float("clip", 0);
    if (!(p.clip > 0)) c.fail("clip must be positive, got ", p.clip);
  }
  if (cell == Cell::LSTM) {
    p.per_dir = 3;
    p.acts = parse_activations(c, p.nd, {"Sigmoid", "Tanh", "Tanh"});
  } else if (cell == Cell::GRU) {
    p.per_dir = 2;
    p.acts = parse_activations(c, p.nd, {"Sigmoid", "Tanh"});
  } else {
    p.per_dir = 1;
    p.acts = parse_activations(c, p.nd, {"Tanh"});
  }
  const size_t n_out = c.node.outputs.size();
  const size_t max_out = cell == Cell::LSTM ? 3 : 2;
  if (n_out > max_out) c.fail(cell_name(cell), " has at most ", max_out, " outputs");
  p.out_y = n_out > 0 && !c.node.outputs[0].empty();
  p.out_yh = n_out > 1 && !c.node.outputs[1].empty();
  p.out_yc = n_out > 2 && !c.node.outputs[2].empty();
  return p;
}

void rnn_infer(InferCtx& c, Cell cell) {
  const Plan p = make_plan(c, cell);
  const DType t = c.in[0].dtype;
  const Shape y = p.layout == 0 ? Shape{p.S, p.nd, p.N, p.H} : Shape{p.N, p.S, p.nd, p.H};
  const Shape state = p.layout == 0 ? Shape{p.nd, p.N, p.H} : Shape{p.N, p.nd, p.H};
  for (size_t i = 0; i < c.out.size(); ++i) {
    c.out[i].dtype = t;
    c.out[i].shape = i == 0 ? y : state;
  }
}

// ---- GEMM ----------------------------------------------------------------------------------

// C[m, n] = A[m, k] · op(B) + beta * C (row-major with leading dimensions), where op(B) is
// B[k, n] (trans_b false) or B[n, k]ᵀ.
inline void gemm(const RunCtx& rc, bool trans_b, int64_t m, int64_t n, int64_t k, const float* a,
                 int64_t lda, const float* b, int64_t ldb, float beta, float* c, int64_t ldc) {
  rc.blas->sgemm(false, trans_b, m, n, k, 1.0f, a, lda, b, ldb, beta, c, ldc);
}
inline void gemm(const RunCtx&, bool trans_b, int64_t m, int64_t n, int64_t k, const double* a,
                 int64_t lda, const double* b, int64_t ldb, double beta, double* c, int64_t ldc) {
  for (int64_t i = 0; i < m; ++i) {
    double* cr = c + i * ldc;
    for (int64_t j = 0; j < n; ++j) cr[j] = beta == 0 ? 0.0 : beta * cr[j];
    for (int64_t p = 0; p < k; ++p) {
      const double av = a[i * lda + p];
      if (trans_b) {
        for (int64_t j = 0; j < n; ++j) cr[j] += av * b[j * ldb + p];
      } else {
        const double* br = b + p * ldb;
        for (int64_t j = 0; j < n; ++j) cr[j] += av * br[j];
      }
    }
  }
}

// Weights [nd, rows, cols] transposed per direction to [nd, cols, rows], so that the GEMMs
// read B untransposed (faster for the small batches of RL policies).
template <typename T>
std::vector<T> transpose_weights(const Tensor& w) {
  const int64_t nd = w.shape()[0], rows = w.shape()[1], cols = w.shape()[2];
  std::vector<T> t(static_cast<size_t>(nd * rows * cols));
  const T* src = w.as<T>();
  for (int64_t d = 0; d < nd; ++d)
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = 0; c < cols; ++c)
        t[(d * cols + c) * rows + r] = src[(d * rows + r) * cols + c];
  return t;
}

// ---- the kernel ----------------------------------------------------------------------------

template <typename T>
class RecurrentKernel final : public Kernel {
 public:
  // w, r: the constant values of W and R (nullptr when computed at run time).
  RecurrentKernel(Plan p, const Tensor* w, const Tensor* r) : p_(std::move(p)) {
    if (w) wt_ = transpose_weights<T>(*w);
    if (r) rt_ = transpose_weights<T>(*r);
    const int64_t GH = p_.gates * p_.H;
    xw_.assign(static_cast<size_t>(p_.S * p_.N * GH), T(0));
    g_.assign(static_cast<size_t>(p_.N * GH), T(0));
    h_.assign(static_cast<size_t>(p_.N * p_.H), T(0));
    c_.assign(static_cast<size_t>(p_.N * p_.H), T(0));
    tmp_.assign(static_cast<size_t>(p_.N * p_.H), T(0));
    bias_.assign(static_cast<size_t>(GH + p_.H), T(0));
  }

  void run(RunCtx& rc, const View* in, View* out) override {
    const int64_t S = p_.S, N = p_.N, I = p_.I, H = p_.H, G = p_.gates, GH = G * H;
    const T* x = in[0].as<const T>();
    const T* w = in[1].as<const T>();
    const T* r = in[2].as<const T>();
    const T* b = p_.has_b ? in[3].as<const T>() : nullptr;
    const int32_t* lens = p_.has_seq ? in[4].as<const int32_t>() : nullptr;
    const T* h0 = p_.has_h0 ? in[5].as<const T>() : nullptr;
    const T* c0 = p_.has_c0 ? in[6].as<const T>() : nullptr;
    const T* pp = p_.has_p ? in[7].as<const T>() : nullptr;
    T* y = p_.out_y ? out[0].as<T>() : nullptr;
    T* yh = p_.out_yh ? out[1].as<T>() : nullptr;
    T* yc = p_.out_yc ? out[2].as<T>() : nullptr;
    if (lens)
      for (int64_t n = 0; n < N; ++n)
        if (lens[n] < 0 || lens[n] > S)
          fail(PD_ERR_INVALID_ARG, cell_name(p_.cell), ": sequence_lens[", n, "] = ", lens[n],
               " is outside [0, ", S, "]");
    // Strides of Y (per t, per direction, per batch) and of the [nd, N, H] states.
    const int64_t nd = p_.nd;
    const int64_t y_t = p_.layout == 0 ? nd * N * H : nd * H;
    const int64_t y_n = p_.layout == 0 ? H : S * nd * H;
    const int64_t y_d = p_.layout == 0 ? N * H : H;
    const int64_t s_d = p_.layout == 0 ? N * H : H;
    const int64_t s_n = p_.layout == 0 ? H : nd * H;
    // Rows of X (and of xw_) for (t, n).
    const int64_t x_t = p_.layout == 0 ? N : 1;
    const int64_t x_n = p_.layout == 0 ? 1 : S;

    for (int64_t d = 0; d < nd; ++d) {
      const bool reverse = p_.direction == 1 || (p_.direction == 2 && d == 1);
      const T* wd = w + d * GH * I;
      const T* rd = r + d * GH * H;
      const ActFn* acts = p_.acts.data() + d * p_.per_dir;
      T* bias = bias_.data();  // GH summed biases (+ H: GRU's Rbh when linear_before_reset)
      if (b) {
        const T* wb = b + d * 2 * GH;
        const T* rb = wb + GH;
        for (int64_t j = 0; j < GH; ++j) bias[j] = wb[j] + rb[j];
        if (p_.cell == Cell::GRU && p_.linear_before_reset)
          for (int64_t j = 0; j < H; ++j) {
            bias[2 * H + j] = wb[2 * H + j];
            bias[GH + j] = rb[2 * H + j];
          }
      }
      // Input projection of every time step at once.
      if (!wt_.empty())
        gemm(rc, false, S * N, GH, I, x, I, wt_.data() + d * I * GH, GH, T(0), xw_.data(), GH);
      else
        gemm(rc, true, S * N, GH, I, x, I, wd, I, T(0), xw_.data(), GH);
      // Initial state.
      T* hs = h_.data();
      T* cs = c_.data();
      for (int64_t n = 0; n < N; ++n) {
        if (h0) std::memcpy(hs + n * H, h0 + d * s_d + n * s_n, sizeof(T) * H);
        else std::fill(hs + n * H, hs + (n + 1) * H, T(0));
        if (p_.cell == Cell::LSTM) {
          if (c0) std::memcpy(cs + n * H, c0 + d * s_d + n * s_n, sizeof(T) * H);
          else std::fill(cs + n * H, cs + (n + 1) * H, T(0));
        }
      }
      for (int64_t s = 0; s < S; ++s) {
        const bool zero_state = s == 0 && !h0;
        // Recurrent projection; GRU without linear_before_reset projects z and r only here.
        const int64_t rn = (p_.cell == Cell::GRU && !p_.linear_before_reset) ? 2 * H : GH;
        if (zero_state) std::fill(g_.begin(), g_.end(), T(0));
        else proj_h(rc, d, rd, hs, 0, rn);

        if (p_.cell == Cell::GRU && !p_.linear_before_reset) {
          // Phase 1: z, r for every active row, and r ⊙ H_prev; then (r ⊙ H_prev)·Rhᵀ.
          for (int64_t n = 0; n < N; ++n) {
            const int64_t len = lens ? lens[n] : S;
            if (s >= len) continue;
            const int64_t t = reverse ? len - 1 - s : s;
            T* gr = g_.data() + n * GH;
            add_bias(gr, xw_.data() + (t * x_t + n * x_n) * GH, bias, 2 * H);
            clip(gr, 2 * H);
            activate(acts[0], gr, 2 * H);
            const T* rg = gr + H;
            const T* hp = hs + n * H;
            T* rh = tmp_.data() + n * H;
            for (int64_t j = 0; j < H; ++j) rh[j] = rg[j] * hp[j];
          }
          // With a zero state the h block stays zero (filled above).
          if (!zero_state)
            proj_h(rc, d, rd, tmp_.data(), 2 * H, H);
        }

        for (int64_t n = 0; n < N; ++n) {
          const int64_t len = lens ? lens[n] : S;
          if (s >= len) {
            if (y) {
              T* yr = y + s * y_t + d * y_d + n * y_n;
              std::fill(yr, yr + H, T(0));
            }
            continue;
          }
          const int64_t t = reverse ? len - 1 - s : s;
          const T* xr = xw_.data() + (t * x_t + n * x_n) * GH;
          T* gr = g_.data() + n * GH;
          T* hp = hs + n * H;
          switch (p_.cell) {
            case Cell::LSTM:
              lstm_row(gr, xr, bias, hp, cs + n * H, pp ? pp + d * 3 * H : nullptr, acts,
                       tmp_.data() + n * H);
              break;
            case Cell::GRU: gru_row(gr, xr, bias, hp, acts); break;
            case Cell::RNN: rnn_row(gr, xr, bias, hp, acts); break;
          }
          if (y) std::memcpy(y + t * y_t + d * y_d + n * y_n, hp, sizeof(T) * H);
        }
      }
      for (int64_t n = 0; n < N; ++n) {
        if (yh) std::memcpy(yh + d * s_d + n * s_n, hs + n * H, sizeof(T) * H);
        if (yc) std::memcpy(yc + d * s_d + n * s_n, cs + n * H, sizeof(T) * H);
      }
    }
  }

 private:
  // g_[:, col0 : col0 + ncols] = a[N, H] · (R's rows col0 .. col0 + ncols of direction d)ᵀ.
  void proj_h(const RunCtx& rc, int64_t d, const T* rd, const T* a, int64_t col0,
              int64_t ncols) {
    const int64_t N = p_.N, H = p_.H, GH = p_.gates * H;
    if (!rt_.empty())
      gemm(rc, false, N, ncols, H, a, H, rt_.data() + d * H * GH + col0, GH, T(0),
           g_.data() + col0, GH);
    else
      gemm(rc, true, N, ncols, H, a, H, rd + col0 * H, H, T(0), g_.data() + col0, GH);
  }

  static void add_bias(T* __restrict g, const T* __restrict xr, const T* __restrict bias,
                       int64_t n) {
    for (int64_t j = 0; j < n; ++j) g[j] += xr[j] + bias[j];
  }
  void clip(T* g, int64_t n) const {
    if (!p_.has_clip) return;
    const T lo = -static_cast<T>(p_.clip), hi = static_cast<T>(p_.clip);
    for (int64_t j = 0; j < n; ++j) g[j] = std::min(hi, std::max(lo, g[j]));
  }

  // g: [i, o, f, c] recurrent projections, becomes the gates; h, c: state rows (updated).
  void lstm_row(T* __restrict g, const T* __restrict xr, const T* __restrict bias,
                T* __restrict h, T* __restrict c, const T* __restrict peep, const ActFn* acts,
                T* __restrict tmp) const {
    const int64_t H = p_.H;
    add_bias(g, xr, bias, 4 * H);
    T* gi = g;
    T* go = g + H;
    T* gf = g + 2 * H;
    T* gc = g + 3 * H;
    // Without peepholes and input_forget, i, o and f are computed in one pass.
    const bool fused = !peep && !p_.input_forget;
    if (fused) {
      clip(g, 4 * H);
      activate(acts[0], g, 3 * H);
    } else {
      if (peep) {
        const T* pi = peep;
        const T* pf = peep + 2 * H;
        for (int64_t j = 0; j < H; ++j) {
          gi[j] += pi[j] * c[j];
          gf[j] += pf[j] * c[j];
        }
      }
      clip(gi, H);
      activate(acts[0], gi, H);
      if (p_.input_forget) {
        for (int64_t j = 0; j < H; ++j) gf[j] = T(1) - gi[j];
      } else {
        clip(gf, H);
        activate(acts[0], gf, H);
      }
      clip(gc, H);
    }
    activate(acts[1], gc, H);
    for (int64_t j = 0; j < H; ++j) c[j] = gf[j] * c[j] + gi[j] * gc[j];
    if (!fused) {
      if (peep) {
        const T* po = peep + H;
        for (int64_t j = 0; j < H; ++j) go[j] += po[j] * c[j];
      }
      clip(go, H);
      activate(acts[0], go, H);
    }
    std::memcpy(tmp, c, sizeof(T) * H);
    activate(acts[2], tmp, H);
    for (int64_t j = 0; j < H; ++j) h[j] = go[j] * tmp[j];
  }

  // g: [z, r, h] — z and r already activated when !linear_before_reset (phase 1), and the h
  // block holds (r ⊙ H_prev)·Rhᵀ; with linear_before_reset it holds H_prev·Rhᵀ.
  void gru_row(T* __restrict g, const T* __restrict xr, const T* __restrict bias,
               T* __restrict h, const ActFn* acts) const {
    const int64_t H = p_.H;
    T* gz = g;
    T* gr = g + H;
    T* gh = g + 2 * H;
    if (p_.linear_before_reset) {
      add_bias(g, xr, bias, 2 * H);
      clip(g, 2 * H);
      activate(acts[0], g, 2 * H);
      const T* rbh = bias + 3 * H;
      const T* xh = xr + 2 * H;
      const T* wbh = bias + 2 * H;
      for (int64_t j = 0; j < H; ++j) gh[j] = xh[j] + wbh[j] + gr[j] * (gh[j] + rbh[j]);
    } else {
      add_bias(gh, xr + 2 * H, bias + 2 * H, H);
    }
    clip(gh, H);
    activate(acts[1], gh, H);
    for (int64_t j = 0; j < H; ++j) h[j] = (T(1) - gz[j]) * gh[j] + gz[j] * h[j];
  }

  void rnn_row(T* __restrict g, const T* __restrict xr, const T* __restrict bias,
               T* __restrict h, const ActFn* acts) const {
    const int64_t H = p_.H;
    add_bias(g, xr, bias, H);
    clip(g, H);
    activate(acts[0], g, H);
    std::memcpy(h, g, sizeof(T) * H);
  }

  Plan p_;
  std::vector<T> xw_, g_, h_, c_, tmp_, bias_;
  std::vector<T> wt_, rt_;  // transposed constant W, R: [nd, I, GH], [nd, H, GH]
};

template <Cell C>
void infer_cell(InferCtx& c) { rnn_infer(c, C); }

template <Cell C>
std::unique_ptr<Kernel> make_cell(const InferCtx& c) {
  Plan p = make_plan(c, C);
  const Tensor* w = c.in[1].value.get();
  const Tensor* r = c.in[2].value.get();
  if (c.in[0].dtype == DType::F64)
    return std::make_unique<RecurrentKernel<double>>(std::move(p), w, r);
  return std::make_unique<RecurrentKernel<float>>(std::move(p), w, r);
}

}  // namespace

void register_rnn_ops(OpRegistry& r) {
  r.add({"", "LSTM", infer_cell<Cell::LSTM>, make_cell<Cell::LSTM>, kOpNone});
  r.add({"", "GRU", infer_cell<Cell::GRU>, make_cell<Cell::GRU>, kOpNone});
  r.add({"", "RNN", infer_cell<Cell::RNN>, make_cell<Cell::RNN>, kOpNone});
}

}  // namespace pd
