// Softmax over the last axis (csrc/core/ops/reduce.cpp's contiguous-row kernel, which runs an
// AVX2 build of its rows where the CPU has AVX2) through the C ABI on the cpu backend, against a
// double-precision reference computed here: row lengths around the vector widths (1, 3, 7, 8, 9,
// 15, 16, 17, 100 — an attention policy's keys —, 1000), large magnitudes, and rows with +inf,
// -inf and NaN, which take the exact IEEE path (NaN where max - max is inf - inf).
#include <gtest/gtest.h>
#include <onnx/onnx_pb.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "policyd.h"
#include "test_util.h"

namespace {

// y = Softmax(x, axis=-1), x: [rows, n] float32.
std::string softmax_model(int64_t rows, int64_t n) {
  onnx::ModelProto m = pd::test::empty_model(17);
  auto* g = m.mutable_graph();
  auto* node = g->add_node();
  node->set_op_type("Softmax");
  node->set_name("the_softmax");
  node->add_input("x");
  node->add_output("y");
  auto* a = node->add_attribute();
  a->set_name("axis");
  a->set_type(onnx::AttributeProto::INT);
  a->set_i(-1);
  for (auto* v : {g->add_input(), g->add_output()}) {
    v->set_name(v == &g->input(0) ? "x" : "y");
    auto* tt = v->mutable_type()->mutable_tensor_type();
    tt->set_elem_type(onnx::TensorProto::FLOAT);
    tt->mutable_shape()->add_dim()->set_dim_value(rows);
    tt->mutable_shape()->add_dim()->set_dim_value(n);
  }
  return m.SerializeAsString();
}

// softmax of one row in double: exp(x - max) / sum, NaN where IEEE arithmetic gives NaN.
std::vector<double> reference_row(const float* x, int64_t n) {
  double m = -std::numeric_limits<double>::infinity();
  bool nan = false;
  for (int64_t i = 0; i < n; ++i) {
    nan = nan || std::isnan(x[i]);
    m = std::max(m, static_cast<double>(x[i]));
  }
  std::vector<double> y(n);
  if (nan) {
    for (auto& v : y) v = std::numeric_limits<double>::quiet_NaN();
    return y;
  }
  double s = 0;
  for (int64_t i = 0; i < n; ++i) s += std::exp(static_cast<double>(x[i]) - m);
  for (int64_t i = 0; i < n; ++i) y[i] = std::exp(static_cast<double>(x[i]) - m) / s;
  return y;
}

TEST(Softmax, LastAxisRowsMatchDoubleReference) {
  pd_runtime* rt = nullptr;
  ASSERT_EQ(pd::test::take(pd_runtime_create(nullptr, &rt)).msg, "");
  const float inf = std::numeric_limits<float>::infinity(), nan = std::numeric_limits<float>::quiet_NaN();
  std::mt19937 gen(7);
  std::normal_distribution<float> normal(0.f, 3.f);
  for (int64_t n : {1, 3, 7, 8, 9, 15, 16, 17, 100, 1000}) {
    SCOPED_TRACE("n=" + std::to_string(n));
    const int64_t rows = 12;
    std::vector<float> x(rows * n);
    for (auto& v : x) v = normal(gen);
    // Row 1: large magnitudes (exp underflows to 0 for most). Row 2: one +inf. Row 3: one -inf.
    // Row 4: one NaN. Row 5: all -inf (NaN: -inf - -inf). Row 6: +inf and -inf.
    for (int64_t i = 0; i < n; ++i) x[1 * n + i] = (i % 2 ? 1e30f : -1e30f) * static_cast<float>(i + 1) / n;
    x[2 * n + n / 2] = inf;
    x[3 * n + n - 1] = -inf;
    x[4 * n] = nan;
    for (int64_t i = 0; i < n; ++i) x[5 * n + i] = -inf;
    x[6 * n] = inf;
    x[6 * n + n - 1] = -inf;  // n == 1: the +inf is overwritten, the row is all -inf

    const std::string m = softmax_model(rows, n);
    pd_engine* e = nullptr;
    ASSERT_EQ(pd::test::take(pd_engine_create(rt, m.data(), m.size(), nullptr, &e)).msg, "");
    pd_context* c = nullptr;
    ASSERT_EQ(pd::test::take(pd_context_create(e, &c)).msg, "");
    pd_tensor in{};
    in.dtype = PD_DTYPE_FLOAT32;
    in.rank = 2;
    in.dims[0] = rows;
    in.dims[1] = n;
    in.data = x.data();
    in.byte_size = x.size() * sizeof(float);
    pd_tensor out{};
    ASSERT_EQ(pd::test::take(pd_context_run(c, &in, 1, &out, 1)).msg, "");
    ASSERT_EQ(out.byte_size, x.size() * sizeof(float));
    const float* y = static_cast<const float*>(out.data);
    for (int64_t r = 0; r < rows; ++r) {
      const std::vector<double> want = reference_row(x.data() + r * n, n);
      for (int64_t i = 0; i < n; ++i) {
        const float got = y[r * n + i];
        if (std::isnan(want[i])) {
          EXPECT_TRUE(std::isnan(got)) << "row " << r << " element " << i << ": " << got << ", want NaN";
        } else {
          // Cephes' float exp: a few ulp; the normalized sum: float rounding over n terms.
          EXPECT_NEAR(got, want[i], 2e-6 * want[i] + 1e-7) << "row " << r << " element " << i;
        }
      }
    }
    pd_context_destroy(c);
    pd_engine_destroy(e);
  }
  pd_runtime_destroy(rt);
}

}  // namespace
