// Random ops of ai.onnx: RandomNormal, RandomUniform (opset 1), RandomNormalLike,
// RandomUniformLike (opset 1), Multinomial (opset 7), Bernoulli (opset 15).
//
// All are flagged kOpRandom: they are never constant-folded. Where their random 64-bit draws
// come from:
//   - No row seeds (the default): from rc.rng, the context's seedable std::mt19937_64 (whose
//     output sequence the C++ standard fixes), in the order the ops run, so a context seeded
//     once gives reproducible results run after run.
//   - Row seeds (pd_context_set_row_seeds, n seeds): every op splits its output into rows
//     along dimension 0, and row r draws from a stream of its own, a SplitMix64 generator
//     (Steele, Lea & Flood 2014) that depends only on seeds[r] and the op:
//       mix(z)  = z ^= z >> 30; z *= 0xbf58476d1ce4e5b9; z ^= z >> 27; z *= 0x94d049bb133111eb;
//                 z ^ (z >> 31)                                     (SplitMix64's finalizer)
//       salt    = FNV-1a 64 of the node's first output name (the same in every shape bucket)
//       state   = mix(seeds[r] ^ mix(salt))
//       draw    = state += 0x9e3779b97f4a7c15; mix(state)
//     A row's values therefore do not depend on the other rows, their number or their order:
//     row r of a batch equals the output of running that row alone with seeds = {seeds[r]}.
//     Dimension 0 of the output (Multinomial: of its input, the batch of distributions) must
//     equal n, except that with n == 1 the whole output draws from seeds[0]'s stream, row after
//     row. The context's stream is neither read nor advanced.
//
// The `seed` attribute is ignored: a model's fixed seed cannot make every request of a policy
// sample the same action.
//
// Samples come from transforms specified here, not from <random>'s distributions (whose
// algorithms differ between standard libraries), applied to each row's draws in order (all of
// the output in one go with the context stream):
//   - uniform u in [0, 1): the top 53 bits of one 64-bit draw, times 2^-53;
//   - uniform u in (0, 1): (top 53 bits + 0.5) * 2^-53;
//   - normal: Box–Muller in double, one pair of draws (u1 in (0,1), u2 in [0,1)) per two
//     outputs, r = sqrt(-2 ln u1), z0 = r cos(2 pi u2), z1 = r sin(2 pi u2); an odd count's last
//     output (of the row) takes z0 of a fresh pair;
//   - RandomUniform: low + (high - low) * u, rounded to the output type and kept below high;
//   - Bernoulli: 1 when u < p (u in [0, 1)), so p <= 0 (or NaN) gives 0 and p >= 1 gives 1;
//   - Multinomial: per row, weights exp(x - max) in double (NaN and -inf weigh 0; when some x
//     is +inf, the +inf classes share all the mass; a row with no mass at all samples
//     uniformly), cumulative sums c_k, then per sample the first k with c_k > u * c_last.
// The values depend only on the seed and the draws, up to last-bit differences of the C
// library's log/cos/sin/exp in double before rounding to the output type.
//
// Conformance: the ONNX node tests of these ops (test_bernoulli*) compare random values drawn
// by numpy and cannot match any other generator; the runner checks their shapes and dtypes only.
#include <algorithm>
#include <cmath>
#include <limits>
#include <string>
#include <utility>

#include "../op.h"

namespace pd {
namespace {

// G is std::mt19937_64 (the context stream) or RowStream: anything whose g() is 64 random bits.
template <typename G>
inline double uniform01(G& g) {
  return static_cast<double>(g() >> 11) * 0x1.0p-53;
}
template <typename G>
inline double uniform_open01(G& g) {
  return (static_cast<double>(g() >> 11) + 0.5) * 0x1.0p-53;
}

// ---- streams (see the comment at the top) ---------------------------------------------------

constexpr uint64_t mix(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

uint64_t fnv1a64(const std::string& s) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (unsigned char c : s) h = (h ^ c) * 0x100000001b3ull;
  return h;
}

// The stream of one row of one op: SplitMix64 from mix(row_seed ^ op_key).
class RowStream {
 public:
  RowStream(uint64_t row_seed, uint64_t op_key) : state_(mix(row_seed ^ op_key)) {}
  uint64_t operator()() {
    state_ += 0x9e3779b97f4a7c15ull;
    return mix(state_);
  }

 private:
  uint64_t state_;
};

// What a random kernel keeps of its node: its name for messages and the key of its row streams,
// mix(salt), made from the node's first output name.
struct RandomSite {
  explicit RandomSite(const Node& n)
      : what(n.describe()), key(mix(fnv1a64(n.outputs.empty() ? std::string() : n.outputs[0]))) {}
  std::string what;
  uint64_t key;
};

// Calls draw(g, begin, end) for the units (output elements, or Multinomial's rows) [begin, end)
// that draw from stream g, in order, covering [0, units). rows is dimension 0 of the tensor
// named by `whose` ("output", "input"), -1 when it is a scalar; units is a multiple of it.
template <typename Draw>
void with_streams(RunCtx& rc, const RandomSite& site, const char* whose, int64_t rows,
                  int64_t units, Draw&& draw) {
  const size_t n = rc.row_seed_count;
  if (n == 0) {
    PD_ASSERT(rc.rng != nullptr);
    draw(*rc.rng, int64_t{0}, units);
    return;
  }
  if (n == 1) {
    RowStream g(rc.row_seeds[0], site.key);
    draw(g, int64_t{0}, units);
    return;
  }
  if (rows < 0)
    fail(PD_ERR_INVALID_ARG, site.what, ": ", n, " row seeds, but its ", whose,
         " is a scalar (no dimension 0 to split into rows)");
  if (static_cast<uint64_t>(rows) != n)
    fail(PD_ERR_INVALID_ARG, site.what, ": ", n, " row seeds, but its ", whose, " has ", rows,
         " rows (dimension 0 must equal the number of row seeds)");
  const int64_t per_row = units / rows;
  for (int64_t r = 0; r < rows; ++r) {
    RowStream g(rc.row_seeds[r], site.key);
    draw(g, r * per_row, (r + 1) * per_row);
  }
}

int64_t rows_of(const View& v) { return v.shape->empty() ? -1 : (*v.shape)[0]; }

// Output element writers for the float types we generate: float, double, float16 (bits).
struct OutF32 {
  using type = float;
  static float conv(double v) { return static_cast<float>(v); }
  static double back(float v) { return v; }
};
struct OutF64 {
  using type = double;
  static double conv(double v) { return v; }
  static double back(double v) { return v; }
};
struct OutF16 {
  using type = uint16_t;
  static uint16_t conv(double v) { return float_to_half(static_cast<float>(v)); }
  static double back(uint16_t v) { return half_to_float(v); }
};

DType float_dtype_attr(const InferCtx& c, DType def, const char* what) {
  const int64_t v = c.node.attr_int("dtype", static_cast<int64_t>(def));
  const DType t = static_cast<DType>(v);
  if (t != DType::F32 && t != DType::F64 && t != DType::F16)
    c.fail(what, " 'dtype' must be float, double or float16, got ", v);
  return t;
}

// ---- RandomNormal / RandomUniform (and the *Like forms) ----------------------------------

enum class Dist { Normal, Uniform };

template <typename Out>
class GenKernel final : public Kernel {
 public:
  GenKernel(RandomSite site, Dist dist, double a, double b)
      : site_(std::move(site)), dist_(dist), a_(a), b_(b) {}
  void run(RunCtx& rc, const View*, View* out) override {
    using T = typename Out::type;
    T* o = out[0].as<T>();
    auto draw = [&](auto& g, int64_t begin, int64_t end) {
      if (dist_ == Dist::Normal) {
        const double mean = a_, scale = b_;
        for (int64_t i = begin; i < end; i += 2) {
          const double u1 = uniform_open01(g), u2 = uniform01(g);
          const double r = std::sqrt(-2.0 * std::log(u1));
          const double th = 6.283185307179586476925 * u2;
          o[i] = Out::conv(mean + scale * r * std::cos(th));
          if (i + 1 < end) o[i + 1] = Out::conv(mean + scale * r * std::sin(th));
        }
      } else {
        const double low = a_, high = b_;
        for (int64_t i = begin; i < end; ++i) {
          T v = Out::conv(low + (high - low) * uniform01(g));
          // Rounding to the output type may reach high itself; keep the interval half-open.
          if (Out::back(v) >= high && high > low) v = below_high_;
          o[i] = v;
        }
      }
    };
    with_streams(rc, site_, "output", rows_of(out[0]), out[0].numel(), draw);
  }
  void set_below_high(typename Out::type v) { below_high_ = v; }

 private:
  RandomSite site_;
  Dist dist_;
  double a_, b_;
  typename Out::type below_high_{};
};

// The largest value of the output type below high (for float16: computed on the bits).
template <typename Out>
typename Out::type largest_below(double high);
template <>
float largest_below<OutF32>(double high) {
  const float h = static_cast<float>(high);
  return std::nextafter(h, -std::numeric_limits<float>::infinity());
}
template <>
double largest_below<OutF64>(double high) {
  return std::nextafter(high, -std::numeric_limits<double>::infinity());
}
template <>
uint16_t largest_below<OutF16>(double high) {
  const uint16_t h = float_to_half(static_cast<float>(high));
  // Positive values step down by decrementing the bits, negative ones by incrementing;
  // +0 steps to -smallest subnormal.
  if (h == 0x0000) return 0x8001;
  return (h & 0x8000) ? static_cast<uint16_t>(h + 1) : static_cast<uint16_t>(h - 1);
}

template <typename Out>
std::unique_ptr<Kernel> make_gen(const Node& n, Dist dist, double a, double b) {
  auto k = std::make_unique<GenKernel<Out>>(RandomSite(n), dist, a, b);
  if (dist == Dist::Uniform) k->set_below_high(largest_below<Out>(b));
  return k;
}

std::unique_ptr<Kernel> make_gen_for(const Node& n, DType t, Dist dist, double a, double b) {
  switch (t) {
    case DType::F64: return make_gen<OutF64>(n, dist, a, b);
    case DType::F16: return make_gen<OutF16>(n, dist, a, b);
    default: return make_gen<OutF32>(n, dist, a, b);
  }
}

void check_uniform_bounds(const InferCtx& c) {
  const float low = c.node.attr_float("low", 0.f), high = c.node.attr_float("high", 1.f);
  if (!(low <= high)) c.fail("'low' (", low, ") must not exceed 'high' (", high, ")");
}

void random_infer(InferCtx& c) {
  if (!c.node.has("shape")) c.fail("attribute 'shape' is required");
  Shape s = c.node.attr_ints("shape");
  for (int64_t d : s)
    if (d < 0) c.fail("'shape' has a negative dimension: ", shape_str(s));
  if (c.node.op == "RandomUniform") check_uniform_bounds(c);
  c.out[0].dtype = float_dtype_attr(c, DType::F32, c.node.op.c_str());
  c.out[0].shape = std::move(s);
}

void random_like_infer(InferCtx& c) {
  const TensorInfo& x = c.input(0);
  if (c.node.has("dtype")) {
    c.out[0].dtype = float_dtype_attr(c, DType::F32, c.node.op.c_str());
  } else {
    if (x.dtype != DType::F32 && x.dtype != DType::F64 && x.dtype != DType::F16)
      c.fail("input has data type ", dtype_name(x.dtype),
             "; without a 'dtype' attribute the output type is the input's, which must be "
             "float, double or float16");
    c.out[0].dtype = x.dtype;
  }
  if (c.node.op == "RandomUniformLike") check_uniform_bounds(c);
  c.out[0].shape = x.shape;
}

std::unique_ptr<Kernel> make_random(const InferCtx& c) {
  const bool normal = c.node.op == "RandomNormal" || c.node.op == "RandomNormalLike";
  if (normal)
    return make_gen_for(c.node, c.out[0].dtype, Dist::Normal, c.node.attr_float("mean", 0.f),
                        c.node.attr_float("scale", 1.f));
  return make_gen_for(c.node, c.out[0].dtype, Dist::Uniform, c.node.attr_float("low", 0.f),
                      c.node.attr_float("high", 1.f));
}

// ---- Bernoulli -------------------------------------------------------------------------------

// Reads probability i of the input as double.
inline double prob_at(DType t, const void* p, int64_t i) {
  switch (t) {
    case DType::F32: return static_cast<const float*>(p)[i];
    case DType::F64: return static_cast<const double*>(p)[i];
    default: return half_to_float(static_cast<const uint16_t*>(p)[i]);
  }
}

void bernoulli_infer(InferCtx& c) {
  const TensorInfo& x = c.input(0);
  if (x.dtype != DType::F32 && x.dtype != DType::F64 && x.dtype != DType::F16)
    c.unsupported("input data type ", dtype_name(x.dtype),
                  " is not supported (float, double and float16 are)");
  const DType t = c.node.has("dtype") ? static_cast<DType>(c.node.attr_int("dtype", 0)) : x.dtype;
  if (t != DType::F16 && t != DType::BF16 && !dtype_supported(t))
    c.unsupported("output data type ", dtype_name(t), " is not supported");
  if (t == DType::String) c.fail("'dtype' cannot be string");
  c.out[0].dtype = t;
  c.out[0].shape = x.shape;
}

template <typename T>
std::unique_ptr<Kernel> make_bernoulli_typed(RandomSite site, DType in_t, T one) {
  return make_kernel([site = std::move(site), in_t, one](RunCtx& rc, const View* in, View* out) {
    T* o = out[0].as<T>();
    const void* p = in[0].data;
    auto draw = [&](auto& g, int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) o[i] = uniform01(g) < prob_at(in_t, p, i) ? one : T(0);
    };
    with_streams(rc, site, "output", rows_of(out[0]), out[0].numel(), draw);
  });
}

struct BernoulliMake {
  const Node& node;
  DType in_t;
  template <typename T>
  std::unique_ptr<Kernel> operator()() const {
    return make_bernoulli_typed<T>(RandomSite(node), in_t, static_cast<T>(1));
  }
};

std::unique_ptr<Kernel> make_bernoulli(const InferCtx& c) {
  const DType in_t = c.in[0].dtype;
  const DType t = c.out[0].dtype;
  if (t == DType::F16) return make_bernoulli_typed<uint16_t>(RandomSite(c.node), in_t, 0x3C00);
  if (t == DType::BF16) return make_bernoulli_typed<uint16_t>(RandomSite(c.node), in_t, 0x3F80);
  return dispatch_all(t, "Bernoulli", BernoulliMake{c.node, in_t});
}

// ---- Multinomial ---------------------------------------------------------------------------

void multinomial_infer(InferCtx& c) {
  const TensorInfo& x = c.input(0);
  if (x.dtype != DType::F32 && x.dtype != DType::F64 && x.dtype != DType::F16)
    c.unsupported("input data type ", dtype_name(x.dtype),
                  " is not supported (float, double and float16 are)");
  if (x.shape.size() != 2)
    c.fail("input must have shape [batch_size, class_size], got ", shape_str(x.shape));
  const int64_t samples = c.node.attr_int("sample_size", 1);
  if (samples < 0) c.fail("'sample_size' must not be negative, got ", samples);
  if (x.shape[1] == 0 && x.shape[0] > 0 && samples > 0) c.fail("class_size must be positive");
  const int64_t dt = c.node.attr_int("dtype", static_cast<int64_t>(DType::I32));
  const DType t = static_cast<DType>(dt);
  if (t != DType::I32 && t != DType::I64) c.fail("'dtype' must be int32 or int64, got ", dt);
  c.out[0].dtype = t;
  c.out[0].shape = {x.shape[0], samples};
}

class MultinomialKernel final : public Kernel {
 public:
  MultinomialKernel(RandomSite site, DType in_t, DType out_t, int64_t batch, int64_t classes,
                    int64_t samples)
      : site_(std::move(site)), in_t_(in_t), out_t_(out_t), batch_(batch), classes_(classes),
        samples_(samples), cdf_(static_cast<size_t>(classes)) {}

  // The rows of a stream are rows of the input: the batch of distributions.
  void run(RunCtx& rc, const View* in, View* out) override {
    with_streams(rc, site_, "input", batch_, batch_, [&](auto& g, int64_t begin, int64_t end) {
      for (int64_t b = begin; b < end; ++b) sample_row(g, in[0].data, b, out[0]);
    });
  }

 private:
  template <typename G>
  void sample_row(G& g, const void* x, int64_t b, const View& out) {
    const int64_t C = classes_;
    double* cdf = cdf_.data();
    const int64_t base = b * C;
    // Weights per the comment at the top of the file.
    double mx = -std::numeric_limits<double>::infinity();
    for (int64_t k = 0; k < C; ++k) {
      const double v = prob_at(in_t_, x, base + k);
      if (v > mx) mx = v;  // NaN never compares greater
    }
    double acc = 0;
    if (mx == std::numeric_limits<double>::infinity()) {
      for (int64_t k = 0; k < C; ++k) {
        acc += prob_at(in_t_, x, base + k) == mx ? 1.0 : 0.0;
        cdf[k] = acc;
      }
    } else if (mx == -std::numeric_limits<double>::infinity()) {  // all -inf or NaN
      for (int64_t k = 0; k < C; ++k) cdf[k] = static_cast<double>(k + 1);
      acc = static_cast<double>(C);
    } else {
      for (int64_t k = 0; k < C; ++k) {
        const double v = prob_at(in_t_, x, base + k);
        acc += std::isnan(v) ? 0.0 : std::exp(v - mx);
        cdf[k] = acc;
      }
    }
    // The last class with mass: the answer when u * total rounds up to total.
    int64_t last = C - 1;
    while (last > 0 && cdf[last] == cdf[last - 1]) --last;
    for (int64_t s = 0; s < samples_; ++s) {
      const double u = uniform01(g) * acc;
      int64_t k = std::upper_bound(cdf, cdf + C, u) - cdf;
      if (k > last) k = last;
      if (out_t_ == DType::I32) out.as<int32_t>()[b * samples_ + s] = static_cast<int32_t>(k);
      else out.as<int64_t>()[b * samples_ + s] = k;
    }
  }

  RandomSite site_;
  DType in_t_, out_t_;
  int64_t batch_, classes_, samples_;
  std::vector<double> cdf_;
};

std::unique_ptr<Kernel> make_multinomial(const InferCtx& c) {
  return std::make_unique<MultinomialKernel>(RandomSite(c.node), c.in[0].dtype, c.out[0].dtype,
                                             c.in[0].shape[0], c.in[0].shape[1], c.out[0].shape[1]);
}

}  // namespace

void register_random_ops(OpRegistry& r) {
  r.add({"", "RandomNormal", random_infer, make_random, kOpRandom});
  r.add({"", "RandomUniform", random_infer, make_random, kOpRandom});
  r.add({"", "RandomNormalLike", random_like_infer, make_random, kOpRandom});
  r.add({"", "RandomUniformLike", random_like_infer, make_random, kOpRandom});
  r.add({"", "Bernoulli", bernoulli_infer, make_bernoulli, kOpRandom});
  r.add({"", "Multinomial", multinomial_infer, make_multinomial, kOpRandom});
}

}  // namespace pd
