// Tests of the random ops (csrc/core/ops/random.cpp) on hand-built one-node graphs run by a
// Program with portable kernels: reproducibility from the context's seed, distributions
// (bounds of 6 standard deviations, so a correct generator does not fail by chance), shapes
// and dtypes, that random nodes are never constant-folded, and per-row seeds: a row of a batch
// samples what it samples alone, whatever its batch-mates and position.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "ir.h"
#include "op.h"
#include "program.h"

namespace pd {
namespace {

Attribute int_attr(int64_t v) {
  Attribute a;
  a.kind = Attribute::Int;
  a.i = v;
  return a;
}
Attribute float_attr(float v) {
  Attribute a;
  a.kind = Attribute::Float;
  a.f = v;
  return a;
}
Attribute ints_attr(std::vector<int64_t> v) {
  Attribute a;
  a.kind = Attribute::Ints;
  a.ints = std::move(v);
  return a;
}

ValueInfo value(const std::string& name, DType t, Shape dims) {
  ValueInfo v;
  v.name = name;
  v.dtype = t;
  v.dims = std::move(dims);
  v.dim_params.assign(v.dims.size(), "");
  v.has_shape = true;
  return v;
}

// A graph of one node `op` with inputs (runtime inputs unless given in `constants`) and one
// output "y".
struct OneNode {
  Graph g;
  explicit OneNode(const std::string& op, int opset) {
    g.opsets[""] = opset;
    Node n;
    n.name = "n";
    n.op = op;
    n.opset = opset;
    n.outputs = {"y"};
    g.nodes.push_back(std::move(n));
    ValueInfo y;
    y.name = "y";
    g.outputs.push_back(y);
  }
  Node& node() { return g.nodes[0]; }
  OneNode& input(const std::string& name, DType t, Shape s) {
    node().inputs.push_back(name);
    g.inputs.push_back(value(name, t, std::move(s)));
    return *this;
  }
  OneNode& constant(const std::string& name, DType t, Shape s) {
    node().inputs.push_back(name);
    g.constants[name] = std::make_shared<Tensor>(t, std::move(s));
    return *this;
  }
  OneNode& attr(const std::string& k, Attribute a) {
    node().attrs[k] = std::move(a);
    return *this;
  }
};

// Runs a program once with the given rng; returns output 0's bytes and fills dtype/shape.
struct Result {
  DType dtype = DType::Undefined;
  Shape shape;
  std::vector<unsigned char> bytes;
  template <typename T>
  std::vector<T> as() const {
    std::vector<T> v(bytes.size() / sizeof(T));
    std::memcpy(v.data(), bytes.data(), v.size() * sizeof(T));
    return v;
  }
};

Result run_once(Program& p, std::mt19937_64& rng, const std::vector<pd_tensor>& inputs) {
  RunCtx rc{&rng, &portable_blas()};
  pd_tensor out{};
  p.run(rc, inputs.data(), &out);
  Result r;
  r.dtype = static_cast<DType>(out.dtype);
  r.shape.assign(out.dims, out.dims + out.rank);
  const auto* b = static_cast<const unsigned char*>(out.data);
  r.bytes.assign(b, b + out.byte_size);
  return r;
}

pd_tensor tensor_of(DType t, const Shape& s, void* data) {
  pd_tensor x{};
  x.dtype = static_cast<int32_t>(t);
  x.rank = static_cast<int32_t>(s.size());
  for (size_t i = 0; i < s.size(); ++i) x.dims[i] = s[i];
  x.data = data;
  x.byte_size = static_cast<uint64_t>(numel(s)) * dtype_size(t);
  return x;
}

// A program over portable kernels for these input shapes.
std::unique_ptr<Program> program(const Graph& g, std::vector<Shape> shapes) {
  BucketKey k;
  k.values.assign(shapes.size(), nullptr);
  k.shapes = std::move(shapes);
  return std::make_unique<Program>(g, std::move(k), nullptr);
}

// Runs a graph without runtime inputs with a fresh rng seeded `seed`.
Result run_seeded(const Graph& g, uint64_t seed) {
  auto p = program(g, {});
  std::mt19937_64 rng(seed);
  return run_once(*p, rng, {});
}

TEST(RandomOps, SameSeedSameSamplesDifferentSeedDifferent) {
  OneNode m("RandomNormal", 17);
  m.attr("shape", ints_attr({3, 5}));
  const Result a = run_seeded(m.g, 42), b = run_seeded(m.g, 42), c = run_seeded(m.g, 43);
  EXPECT_EQ(a.bytes, b.bytes);
  EXPECT_NE(a.bytes, c.bytes);

  // The same program draws new values on each run from the context's stream.
  auto p = program(m.g, {});
  std::mt19937_64 rng(42);
  const Result r1 = run_once(*p, rng, {});
  const Result r2 = run_once(*p, rng, {});
  EXPECT_EQ(r1.bytes, a.bytes);
  EXPECT_NE(r1.bytes, r2.bytes);
}

TEST(RandomOps, SeedAttributeIsIgnored) {
  OneNode m1("RandomUniform", 17), m2("RandomUniform", 17);
  m1.attr("shape", ints_attr({8})).attr("seed", float_attr(1.f));
  m2.attr("shape", ints_attr({8})).attr("seed", float_attr(2.f));
  EXPECT_EQ(run_seeded(m1.g, 7).bytes, run_seeded(m2.g, 7).bytes);
}

TEST(RandomOps, RandomNormalShapesAndDtypes) {
  struct Case { int64_t dtype; DType want; size_t elem; };
  for (const Case& k : {Case{1, DType::F32, 4}, Case{11, DType::F64, 8}, Case{10, DType::F16, 2}}) {
    OneNode m("RandomNormal", 17);
    m.attr("shape", ints_attr({2, 3, 4})).attr("dtype", int_attr(k.dtype));
    const Result r = run_seeded(m.g, 1);
    EXPECT_EQ(r.dtype, k.want);
    EXPECT_EQ(r.shape, (Shape{2, 3, 4}));
    EXPECT_EQ(r.bytes.size(), 24 * k.elem);
  }
  OneNode bad("RandomNormal", 17);
  bad.attr("shape", ints_attr({2})).attr("dtype", int_attr(6));  // int32: not allowed
  EXPECT_THROW(run_seeded(bad.g, 1), Error);
  OneNode no_shape("RandomUniform", 17);
  EXPECT_THROW(run_seeded(no_shape.g, 1), Error);
}

TEST(RandomOps, RandomNormalLikeMoments) {
  const int64_t n = 20000;
  const double mean = 3.0, scale = 2.0;
  OneNode m("RandomNormalLike", 17);
  m.input("x", DType::I64, {n}).attr("mean", float_attr(3.f)).attr("scale", float_attr(2.f));
  m.attr("dtype", int_attr(11));  // double; the input is int64, so dtype is required
  auto p = program(m.g, {{n}});
  std::vector<int64_t> x(n);
  std::mt19937_64 rng(2024);
  const Result r = run_once(*p, rng, {tensor_of(DType::I64, {n}, x.data())});
  ASSERT_EQ(r.dtype, DType::F64);
  ASSERT_EQ(r.shape, (Shape{n}));
  const std::vector<double> v = r.as<double>();
  double s = 0, s2 = 0;
  int64_t within1 = 0;
  for (double e : v) {
    s += e;
    if (std::fabs(e - mean) < scale) ++within1;
  }
  const double mu = s / n;
  for (double e : v) s2 += (e - mu) * (e - mu);
  const double var = s2 / (n - 1);
  // Mean: sd scale/sqrt(n). Variance: sd ~ sqrt(2/n) * scale^2. P(|z| < 1) = 0.682689.
  EXPECT_NEAR(mu, mean, 6 * scale / std::sqrt(double(n)));
  EXPECT_NEAR(var, scale * scale, 6 * std::sqrt(2.0 / n) * scale * scale);
  const double p1 = 0.682689492137;
  EXPECT_NEAR(double(within1) / n, p1, 6 * std::sqrt(p1 * (1 - p1) / n));
}

TEST(RandomOps, RandomUniformBoundsAndMean) {
  const int64_t n = 20000;
  OneNode m("RandomUniform", 17);
  m.attr("shape", ints_attr({n})).attr("low", float_attr(-2.f)).attr("high", float_attr(6.f));
  const Result r = run_seeded(m.g, 5);
  ASSERT_EQ(r.dtype, DType::F32);
  const std::vector<float> v = r.as<float>();
  double s = 0;
  for (float e : v) {
    ASSERT_GE(e, -2.f);
    ASSERT_LT(e, 6.f);
    s += e;
  }
  // Uniform on [a, b): variance (b - a)^2 / 12.
  EXPECT_NEAR(s / n, 2.0, 6 * (8.0 / std::sqrt(12.0)) / std::sqrt(double(n)));
}

TEST(RandomOps, RandomUniformLikeTakesInputDtypeAndShape) {
  OneNode m("RandomUniformLike", 17);
  m.input("x", DType::F64, {2, 7});
  auto p = program(m.g, {{2, 7}});
  std::vector<double> x(14);
  std::mt19937_64 rng(3);
  const Result r = run_once(*p, rng, {tensor_of(DType::F64, {2, 7}, x.data())});
  EXPECT_EQ(r.dtype, DType::F64);
  EXPECT_EQ(r.shape, (Shape{2, 7}));
  for (double e : r.as<double>()) {
    EXPECT_GE(e, 0.0);
    EXPECT_LT(e, 1.0);
  }
  // An integer input without a dtype attribute has no float type to copy.
  OneNode bad("RandomUniformLike", 17);
  bad.input("x", DType::I32, {3});
  EXPECT_THROW(program(bad.g, {{3}}), Error);
}

TEST(RandomOps, RandomNodesAreNotFolded) {
  // All inputs constant: a deterministic op would be folded; a random one must stay a step.
  OneNode m("RandomNormalLike", 17);
  m.constant("c", DType::F32, {16});
  auto p = program(m.g, {});
  EXPECT_EQ(p->step_count(), 1u);
  std::mt19937_64 rng(9);
  const Result a = run_once(*p, rng, {});
  const Result b = run_once(*p, rng, {});
  EXPECT_NE(a.bytes, b.bytes);
}

// Softmax probabilities of a row of logits (-inf allowed).
std::vector<double> softmax(const std::vector<float>& x) {
  double mx = -INFINITY;
  for (float v : x) mx = std::max(mx, double(v));
  std::vector<double> p(x.size());
  double s = 0;
  for (size_t i = 0; i < x.size(); ++i) s += p[i] = std::exp(double(x[i]) - mx);
  for (double& v : p) v /= s;
  return p;
}

TEST(RandomOps, MultinomialFrequenciesMatchSoftmax) {
  const int64_t samples = 20000;
  const std::vector<std::vector<float>> rows = {
      {0.f, 1.f, 2.f, -1.f, -INFINITY},
      {5.f, 5.f, -3.f, 0.5f, 0.f},
  };
  const int64_t B = 2, C = 5;
  std::vector<float> x;
  for (const auto& r : rows) x.insert(x.end(), r.begin(), r.end());
  OneNode m("Multinomial", 7);
  m.input("x", DType::F32, {B, C}).attr("sample_size", int_attr(samples));
  auto p = program(m.g, {{B, C}});
  std::mt19937_64 rng(77);
  const Result r = run_once(*p, rng, {tensor_of(DType::F32, {B, C}, x.data())});
  ASSERT_EQ(r.dtype, DType::I32);  // the default dtype
  ASSERT_EQ(r.shape, (Shape{B, samples}));
  const std::vector<int32_t> v = r.as<int32_t>();
  for (int64_t b = 0; b < B; ++b) {
    std::vector<int64_t> count(C, 0);
    for (int64_t s = 0; s < samples; ++s) {
      const int32_t k = v[b * samples + s];
      ASSERT_GE(k, 0);
      ASSERT_LT(k, C);
      ++count[k];
    }
    const std::vector<double> prob = softmax(rows[b]);
    for (int64_t k = 0; k < C; ++k) {
      if (prob[k] == 0) {
        EXPECT_EQ(count[k], 0) << "row " << b << " class " << k << " has probability 0";
        continue;
      }
      // count ~ Binomial(samples, p): 6 standard deviations.
      const double sd = std::sqrt(samples * prob[k] * (1 - prob[k]));
      EXPECT_NEAR(double(count[k]), samples * prob[k], 6 * sd + 1) << "row " << b << " class " << k;
    }
  }
}

TEST(RandomOps, MultinomialDtypeAndDegenerateRows) {
  // int64 output; a row with all mass on one class always samples it; a row of equal logits
  // (large magnitude, to exercise the max subtraction) samples every class.
  const int64_t B = 2, C = 3, samples = 300;
  std::vector<double> x = {-INFINITY, 0.0, -INFINITY, 800.0, 800.0, 800.0};
  OneNode m("Multinomial", 7);
  m.input("x", DType::F64, {B, C}).attr("sample_size", int_attr(samples));
  m.attr("dtype", int_attr(7));
  auto p = program(m.g, {{B, C}});
  std::mt19937_64 rng(1);
  const Result r = run_once(*p, rng, {tensor_of(DType::F64, {B, C}, x.data())});
  ASSERT_EQ(r.dtype, DType::I64);
  ASSERT_EQ(r.shape, (Shape{B, samples}));
  const std::vector<int64_t> v = r.as<int64_t>();
  std::vector<int64_t> count(C, 0);
  for (int64_t s = 0; s < samples; ++s) {
    EXPECT_EQ(v[s], 1);
    ++count[v[samples + s]];
  }
  for (int64_t k = 0; k < C; ++k) EXPECT_GT(count[k], 0);

  OneNode bad("Multinomial", 7);
  bad.input("x", DType::F32, {4}).attr("dtype", int_attr(7));  // rank 1
  EXPECT_THROW(program(bad.g, {{4}}), Error);
  OneNode bad_dtype("Multinomial", 7);
  bad_dtype.input("x", DType::F32, {1, 4}).attr("dtype", int_attr(1));
  EXPECT_THROW(program(bad_dtype.g, {{1, 4}}), Error);
}

TEST(RandomOps, BernoulliValuesAndFrequency) {
  const int64_t n = 20000;
  std::vector<float> probs(n);
  for (int64_t i = 0; i < n; ++i) probs[i] = i % 4 == 0 ? 0.f : i % 4 == 1 ? 1.f : 0.3f;
  OneNode m("Bernoulli", 15);
  m.input("x", DType::F32, {n});
  auto p = program(m.g, {{n}});
  std::mt19937_64 rng(11);
  const Result r = run_once(*p, rng, {tensor_of(DType::F32, {n}, probs.data())});
  ASSERT_EQ(r.dtype, DType::F32);  // defaults to the input's type
  const std::vector<float> v = r.as<float>();
  int64_t ones = 0, trials = 0;
  for (int64_t i = 0; i < n; ++i) {
    if (i % 4 == 0) ASSERT_EQ(v[i], 0.f);
    else if (i % 4 == 1) ASSERT_EQ(v[i], 1.f);
    else {
      ASSERT_TRUE(v[i] == 0.f || v[i] == 1.f);
      ones += v[i] == 1.f;
      ++trials;
    }
  }
  EXPECT_NEAR(double(ones), 0.3 * trials, 6 * std::sqrt(trials * 0.3 * 0.7) + 1);

  // dtype attribute: bool and int64 outputs.
  for (int64_t dt : {int64_t(9), int64_t(7)}) {
    OneNode mb("Bernoulli", 15);
    mb.input("x", DType::F64, {4}).attr("dtype", int_attr(dt));
    auto pb = program(mb.g, {{4}});
    std::vector<double> pr = {1.0, 0.0, 1.0, 0.0};
    const Result rb = run_once(*pb, rng, {tensor_of(DType::F64, {4}, pr.data())});
    ASSERT_EQ(rb.dtype, static_cast<DType>(dt));
    ASSERT_EQ(rb.shape, (Shape{4}));
    if (dt == 9) EXPECT_EQ(rb.bytes, (std::vector<unsigned char>{1, 0, 1, 0}));
    else EXPECT_EQ(rb.as<int64_t>(), (std::vector<int64_t>{1, 0, 1, 0}));
  }
}

// ---- per-row seeds ---------------------------------------------------------------------------

// Runs with row seeds (rng stays untouched when seeds is not empty: it is checked by callers).
Result run_rows(Program& p, std::mt19937_64& rng, const std::vector<uint64_t>& seeds,
                const std::vector<pd_tensor>& inputs) {
  RunCtx rc{&rng, &portable_blas(), seeds.data(), seeds.size()};
  pd_tensor out{};
  p.run(rc, inputs.data(), &out);
  Result r;
  r.dtype = static_cast<DType>(out.dtype);
  r.shape.assign(out.dims, out.dims + out.rank);
  const auto* b = static_cast<const unsigned char*>(out.data);
  r.bytes.assign(b, b + out.byte_size);
  return r;
}

// Bytes of row r of a result whose dimension 0 has `rows` rows.
std::vector<unsigned char> row_bytes(const Result& res, int64_t r, int64_t rows) {
  const size_t per = res.bytes.size() / static_cast<size_t>(rows);
  return {res.bytes.begin() + r * per, res.bytes.begin() + (r + 1) * per};
}

// One random op over an input of `width` float values per row (none for RandomNormal /
// RandomUniform, whose shape attribute is [rows, width]).
struct RowCase {
  std::string name;
  std::function<void(OneNode&, int64_t rows)> build;  // adds the input or shape and attributes
  bool has_input;
  int64_t width;
};

std::vector<RowCase> row_cases() {
  return {
      {"RandomNormalLike odd width",
       [](OneNode& m, int64_t rows) { m.input("x", DType::F32, {rows, 3}); }, true, 3},
      {"RandomNormalLike float16 rank 3",
       [](OneNode& m, int64_t rows) { m.input("x", DType::F16, {rows, 2, 2}); }, true, 4},
      {"RandomUniformLike double",
       [](OneNode& m, int64_t rows) {
         m.input("x", DType::F64, {rows, 5}).attr("low", float_attr(-1.f));
       }, true, 5},
      {"RandomNormal (shape attribute)",
       [](OneNode& m, int64_t rows) { m.attr("shape", ints_attr({rows, 3})); }, false, 3},
      {"RandomUniform (shape attribute)",
       [](OneNode& m, int64_t rows) { m.attr("shape", ints_attr({rows, 2})); }, false, 2},
      {"Bernoulli", [](OneNode& m, int64_t rows) { m.input("x", DType::F32, {rows, 16}); }, true, 16},
      {"Multinomial",
       [](OneNode& m, int64_t rows) {
         m.input("x", DType::F32, {rows, 4}).attr("sample_size", int_attr(6));
       }, true, 4},
  };
}

std::string op_of(const std::string& case_name) { return case_name.substr(0, case_name.find(' ')); }

int opset_of(const std::string& op) {
  return op == "Multinomial" ? 7 : op == "Bernoulli" ? 15 : 17;
}

// Row i's input: values that differ per row (probabilities for Bernoulli, logits for
// Multinomial), in the input's dtype.
std::vector<unsigned char> row_input(const RowCase& c, DType t, int64_t i) {
  if (!c.has_input) return {};
  std::vector<unsigned char> b(static_cast<size_t>(c.width) * dtype_size(t));
  for (int64_t k = 0; k < c.width; ++k) {
    const float v = op_of(c.name) == "Bernoulli" ? float((i * 7 + k * 3) % 11) / 10.f
                                                 : float((i * 5 + k * 2) % 7) * 0.4f - 1.f;
    if (t == DType::F32) std::memcpy(&b[k * 4], &v, 4);
    else if (t == DType::F64) {
      const double d = v;
      std::memcpy(&b[k * 8], &d, 8);
    } else {
      const uint16_t h = float_to_half(v);
      std::memcpy(&b[k * 2], &h, 2);
    }
  }
  return b;
}

TEST(RowSeeds, RowOfBatchEqualsRowAlone) {
  const std::vector<uint64_t> seeds = {11, 0, 0xffffffffffffffffull, 12, 1234567, 99};
  for (const RowCase& c : row_cases()) {
    const std::string op = op_of(c.name);
    // Each row alone: batch 1 with seeds {s_i}.
    OneNode alone(op, opset_of(op));
    c.build(alone, 1);
    const DType in_t = c.has_input ? alone.g.inputs[0].dtype : DType::Undefined;
    const Shape in1 = c.has_input ? alone.g.inputs[0].dims : Shape{};
    auto p1 = program(alone.g, c.has_input ? std::vector<Shape>{in1} : std::vector<Shape>{});
    std::mt19937_64 rng(1);
    std::vector<std::vector<unsigned char>> want;
    for (size_t i = 0; i < seeds.size(); ++i) {
      std::vector<unsigned char> x = row_input(c, in_t, static_cast<int64_t>(i));
      std::vector<pd_tensor> in;
      if (c.has_input) in.push_back(tensor_of(in_t, in1, x.data()));
      want.push_back(run_rows(*p1, rng, {seeds[i]}, in).bytes);
    }
    // Batches of k rows in several orders: row j holds row order[j]'s input and seed.
    for (int64_t k : {2, 3, 6}) {
      OneNode batched(op, opset_of(op));
      c.build(batched, k);
      Shape ink = in1;
      if (c.has_input) ink[0] = k;
      auto pk = program(batched.g, c.has_input ? std::vector<Shape>{ink} : std::vector<Shape>{});
      std::vector<size_t> order(k);
      std::iota(order.begin(), order.end(), 0);
      for (int perm = 0; perm < 3; ++perm) {
        if (perm == 1) std::reverse(order.begin(), order.end());
        if (perm == 2) std::rotate(order.begin(), order.begin() + 1, order.end());
        std::vector<uint64_t> s;
        std::vector<unsigned char> x;
        for (size_t i : order) {
          s.push_back(seeds[i]);
          std::vector<unsigned char> xi = row_input(c, in_t, static_cast<int64_t>(i));
          x.insert(x.end(), xi.begin(), xi.end());
        }
        std::vector<pd_tensor> in;
        if (c.has_input) in.push_back(tensor_of(in_t, ink, x.data()));
        const Result r = run_rows(*pk, rng, s, in);
        ASSERT_EQ(r.shape[0], k) << c.name;
        for (int64_t j = 0; j < k; ++j)
          EXPECT_EQ(row_bytes(r, j, k), want[order[j]])
              << c.name << ": batch of " << k << ", order " << perm << ", row " << j;
      }
    }
    // The context stream was never read.
    std::mt19937_64 fresh(1);
    EXPECT_EQ(rng(), fresh()) << c.name;
  }
}

TEST(RowSeeds, SameSeedsSameSamplesOtherSeedsOtherSamples) {
  for (const RowCase& c : row_cases()) {
    const std::string op = op_of(c.name);
    OneNode m(op, opset_of(op));
    c.build(m, 3);
    const DType in_t = c.has_input ? m.g.inputs[0].dtype : DType::Undefined;
    Shape in_shape = c.has_input ? m.g.inputs[0].dims : Shape{};
    auto p = program(m.g, c.has_input ? std::vector<Shape>{in_shape} : std::vector<Shape>{});
    std::vector<unsigned char> x;
    for (int64_t i = 0; i < 3; ++i) {
      // The same input on every row: only the seed tells rows apart.
      std::vector<unsigned char> xi = row_input(c, in_t, 1);
      x.insert(x.end(), xi.begin(), xi.end());
    }
    std::vector<pd_tensor> in;
    if (c.has_input) in.push_back(tensor_of(in_t, in_shape, x.data()));
    std::mt19937_64 rng(1);
    const Result a = run_rows(*p, rng, {5, 6, 5}, in);
    const Result b = run_rows(*p, rng, {5, 6, 5}, in);
    EXPECT_EQ(a.bytes, b.bytes) << c.name << ": repeated run";
    EXPECT_EQ(row_bytes(a, 0, 3), row_bytes(a, 2, 3)) << c.name << ": equal seeds";
    // Multinomial rows are few small integers: compare several seeds, not one pair.
    int differ = 0;
    for (uint64_t s = 100; s < 110; ++s)
      differ += row_bytes(run_rows(*p, rng, {5, s, 5}, in), 1, 3) != row_bytes(a, 0, 3);
    EXPECT_GE(differ, 8) << c.name << ": other seeds, other samples";
  }
}

TEST(RowSeeds, OneSeedDrawsTheWholeOutputFromOneStream) {
  // With one row seed the output is one stream, row after row: [2, 3] holds what [1, 6] holds.
  OneNode a("RandomNormalLike", 17), b("RandomNormalLike", 17);
  a.input("x", DType::F32, {2, 3});
  b.input("x", DType::F32, {1, 6});
  auto pa = program(a.g, {{2, 3}});
  auto pb = program(b.g, {{1, 6}});
  std::vector<float> x(6);
  std::mt19937_64 rng(1);
  const Result ra = run_rows(*pa, rng, {77}, {tensor_of(DType::F32, {2, 3}, x.data())});
  const Result rb = run_rows(*pb, rng, {77}, {tensor_of(DType::F32, {1, 6}, x.data())});
  EXPECT_EQ(ra.bytes, rb.bytes);
  // Scalar outputs have no rows but one seed is fine.
  OneNode s("RandomUniform", 17);
  s.attr("shape", ints_attr({}));
  auto ps = program(s.g, {});
  EXPECT_EQ(run_rows(*ps, rng, {3}, {}).bytes, run_rows(*ps, rng, {3}, {}).bytes);
}

TEST(RowSeeds, StreamIsTheDocumentedSplitMix64) {
  // policyd.h promises the stream; a client may reproduce samples from it. RandomUniformLike in
  // double with low 0, high 1 returns u = (draw >> 11) * 2^-53 exactly.
  auto mix = [](uint64_t z) {
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  };
  uint64_t salt = 0xcbf29ce484222325ull;
  for (unsigned char ch : std::string("y")) salt = (salt ^ ch) * 0x100000001b3ull;
  const uint64_t seeds[2] = {42, 7};
  OneNode m("RandomUniformLike", 17);
  m.input("x", DType::F64, {2, 4});
  auto p = program(m.g, {{2, 4}});
  std::vector<double> x(8);
  std::mt19937_64 rng(1);
  const Result r = run_rows(*p, rng, {seeds[0], seeds[1]}, {tensor_of(DType::F64, {2, 4}, x.data())});
  const std::vector<double> v = r.as<double>();
  for (int row = 0; row < 2; ++row) {
    uint64_t state = mix(seeds[row] ^ mix(salt));
    for (int k = 0; k < 4; ++k) {
      state += 0x9e3779b97f4a7c15ull;
      EXPECT_EQ(v[row * 4 + k], static_cast<double>(mix(state) >> 11) * 0x1.0p-53) << row << "," << k;
    }
  }
}

// Two random ops of one graph, outputs "a" and "b", on the same input.
Graph two_ops() {
  Graph g;
  g.opsets[""] = 17;
  for (const char* name : {"a", "b"}) {
    Node n;
    n.name = std::string("node_") + name;
    n.op = "RandomUniformLike";
    n.opset = 17;
    n.inputs = {"x"};
    n.outputs = {name};
    g.nodes.push_back(std::move(n));
    ValueInfo o;
    o.name = name;
    g.outputs.push_back(o);
  }
  g.inputs.push_back(value("x", DType::F32, {2, 8}));
  return g;
}

TEST(RowSeeds, OpsOfOneModelDrawUnrelatedValues) {
  const Graph g = two_ops();
  auto p = program(g, {{2, 8}});
  std::vector<float> x(16);
  const pd_tensor in = tensor_of(DType::F32, {2, 8}, x.data());
  std::mt19937_64 rng(1);
  const uint64_t seeds[2] = {9, 9};
  RunCtx rc{&rng, &portable_blas(), seeds, 2};
  pd_tensor out[2] = {};
  p->run(rc, &in, out);
  ASSERT_EQ(out[0].byte_size, out[1].byte_size);
  EXPECT_NE(std::memcmp(out[0].data, out[1].data, out[0].byte_size), 0);
  // The salt follows the output's name, not the node's place in the graph.
  Graph swapped = g;
  std::swap(swapped.nodes[0], swapped.nodes[1]);
  auto ps = program(swapped, {{2, 8}});
  std::vector<unsigned char> a(static_cast<unsigned char*>(out[0].data),
                               static_cast<unsigned char*>(out[0].data) + out[0].byte_size);
  pd_tensor out2[2] = {};
  ps->run(rc, &in, out2);
  EXPECT_EQ(std::memcmp(out2[0].data, a.data(), a.size()), 0);
}

TEST(RowSeeds, CountMustMatchTheRows) {
  OneNode m("RandomNormalLike", 17);
  m.input("x", DType::F32, {4, 2});
  auto p = program(m.g, {{4, 2}});
  std::vector<float> x(8);
  std::mt19937_64 rng(1);
  try {
    run_rows(*p, rng, {1, 2, 3}, {tensor_of(DType::F32, {4, 2}, x.data())});
    FAIL() << "3 row seeds for 4 rows accepted";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), PD_ERR_INVALID_ARG);
    const std::string msg = e.what();
    EXPECT_NE(msg.find("RandomNormalLike node 'n'"), std::string::npos) << msg;
    EXPECT_NE(msg.find("3 row seeds"), std::string::npos) << msg;
    EXPECT_NE(msg.find("4 rows"), std::string::npos) << msg;
  }
  // Multinomial counts the rows of its input.
  OneNode mn("Multinomial", 7);
  mn.input("x", DType::F32, {2, 3}).attr("sample_size", int_attr(4));
  auto pm = program(mn.g, {{2, 3}});
  try {
    run_rows(*pm, rng, {1, 2, 3}, {tensor_of(DType::F32, {2, 3}, x.data())});
    FAIL() << "3 row seeds for 2 rows accepted";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("Multinomial node 'n'"), std::string::npos) << msg;
    EXPECT_NE(msg.find("input has 2 rows"), std::string::npos) << msg;
  }
  // A scalar output has no rows to split.
  OneNode s("RandomUniform", 17);
  s.attr("shape", ints_attr({}));
  auto ps = program(s.g, {});
  try {
    run_rows(*ps, rng, {1, 2}, {});
    FAIL() << "2 row seeds for a scalar accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("scalar"), std::string::npos) << e.what();
  }
}

TEST(RowSeeds, NoSeedsIsTheContextStreamUntouched) {
  OneNode m("RandomNormal", 17);
  m.attr("shape", ints_attr({2, 5}));
  auto p = program(m.g, {});
  std::mt19937_64 ref(42);
  const Result want1 = run_once(*p, ref, {});
  const Result want2 = run_once(*p, ref, {});
  // Row-seeded runs in between neither read nor advance the context stream.
  std::mt19937_64 rng(42);
  EXPECT_EQ(run_rows(*p, rng, {}, {}).bytes, want1.bytes);
  const Result seeded = run_rows(*p, rng, {1, 2}, {});
  EXPECT_NE(seeded.bytes, want2.bytes);
  EXPECT_EQ(run_rows(*p, rng, {}, {}).bytes, want2.bytes);
}

}  // namespace
}  // namespace pd
