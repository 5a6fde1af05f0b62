// Tests of Einsum (csrc/core/ops/einsum.cpp) through the C ABI on the cpu backend: one-node
// models built with the ONNX protobuf API, compared with a naive reference that loops over
// every label. Covers attention's contractions (`bmhd,bnhd->bmhn`, `bmhn,bnhd->bmhd`) with a
// batch dimension the engine batches over, broadcasting of batch and heads, ellipsis,
// implicit output, diagonals and traces, three inputs and integer types. EinsumCuda runs the
// same kind of models on the CUDA backend's plan over the CPU emulation of CUDA (build/fakecuda:
// strided-batched cuBLASLt GEMMs, copy kernels, graph capture and replay) against the same
// reference and the cpu backend; the plan each form gets is checked in cuda_host_test.cpp.
#include <gtest/gtest.h>
#include <onnx/onnx_pb.h>

#include <cmath>
#include <cstdint>
#include <map>
#include <random>
#include <string>
#include <type_traits>
#include <vector>

#include "policyd.h"
#include "test_util.h"

#ifndef PD_FAKE_CUDA_DIR
#error "PD_FAKE_CUDA_DIR: the fake-CUDA plugin's directory (csrc/tests/CMakeLists.txt)"
#endif

namespace {

std::string take(pd_error* e) {
  if (!e) return "";
  std::string m = pd_error_get_message(e);
  pd_error_free(e);
  return m;
}

using Dims = std::vector<int64_t>;

// A model of one Einsum node "the_einsum" over inputs x0, x1, ... of the given shapes (-1: a
// symbolic dimension "batch") and element type.
std::string einsum_model(const std::string& eq, const std::vector<Dims>& shapes,
                         int elem = onnx::TensorProto::FLOAT) {
  onnx::ModelProto m = pd::test::empty_model();
  auto* g = m.mutable_graph();
  auto* n = g->add_node();
  n->set_op_type("Einsum");
  n->set_name("the_einsum");
  auto* a = n->add_attribute();
  a->set_name("equation");
  a->set_type(onnx::AttributeProto::STRING);
  a->set_s(eq);
  n->add_output("y");
  for (size_t i = 0; i < shapes.size(); ++i) {
    const std::string name = "x" + std::to_string(i);
    n->add_input(name);
    auto* v = g->add_input();
    v->set_name(name);
    auto* tt = v->mutable_type()->mutable_tensor_type();
    tt->set_elem_type(elem);
    auto* sh = tt->mutable_shape();
    for (int64_t d : shapes[i]) {
      if (d < 0) sh->add_dim()->set_dim_param("batch");
      else sh->add_dim()->set_dim_value(d);
    }
  }
  auto* y = g->add_output();
  y->set_name("y");
  y->mutable_type()->mutable_tensor_type()->set_elem_type(elem);
  return m.SerializeAsString();
}

// The naive reference: an explicit equation of letters only (no '...'); a dimension of size 1
// broadcasts against its label's size.
template <typename T>
std::vector<T> reference(const std::string& eq, const std::vector<Dims>& shapes, const std::vector<std::vector<T>>& in,
                         Dims* out_shape) {
  const size_t arrow = eq.find("->");
  std::vector<std::string> terms;
  for (size_t s = 0;;) {
    size_t c = eq.find(',', s);
    if (c == std::string::npos || c > arrow) c = arrow;
    terms.push_back(eq.substr(s, c - s));
    if (c == arrow) break;
    s = c + 1;
  }
  const std::string out = eq.substr(arrow + 2);
  std::map<char, int64_t> size;
  for (size_t i = 0; i < terms.size(); ++i)
    for (size_t d = 0; d < terms[i].size(); ++d)
      size[terms[i][d]] = std::max(size[terms[i][d]], shapes[i][d]);
  std::vector<char> labels;
  for (auto& [l, s] : size) labels.push_back(l);
  out_shape->clear();
  for (char l : out) out_shape->push_back(size[l]);
  int64_t on = 1;
  for (int64_t d : *out_shape) on *= d;
  std::vector<double> acc(on, 0.0);
  std::map<char, int64_t> idx;
  for (char l : labels) idx[l] = 0;
  int64_t total = 1;
  for (char l : labels) total *= size[l];
  for (int64_t it = 0; it < total; ++it) {
    double p = 1.0;
    for (size_t i = 0; i < terms.size(); ++i) {
      int64_t off = 0;
      for (size_t d = 0; d < terms[i].size(); ++d)
        off = off * shapes[i][d] + (shapes[i][d] == 1 ? 0 : idx[terms[i][d]]);
      p *= static_cast<double>(in[i][off]);
    }
    int64_t o = 0;
    for (size_t d = 0; d < out.size(); ++d) o = o * (*out_shape)[d] + idx[out[d]];
    acc[o] += p;
    for (size_t k = labels.size(); k-- > 0;) {
      if (++idx[labels[k]] < size[labels[k]]) break;
      idx[labels[k]] = 0;
    }
  }
  return std::vector<T>(acc.begin(), acc.end());
}

class Einsum : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_EQ(take(pd_runtime_create(nullptr, &rt_)), ""); }
  void TearDown() override { pd_runtime_destroy(rt_); }

  static std::vector<float> random(const Dims& s, uint32_t seed) {
    int64_t n = 1;
    for (int64_t d : s) n *= d;
    std::mt19937 g(seed);
    std::uniform_real_distribution<float> u(-1.f, 1.f);
    std::vector<float> v(n);
    for (auto& x : v) x = u(g);
    return v;
  }

  // Runs `eq` on random inputs of `shapes` (model declared with `model_shapes`, default the
  // same) and compares with reference(ref_eq) over the same data.
  void check(const std::string& eq, const std::vector<Dims>& shapes, const std::string& ref_eq,
             std::vector<Dims> model_shapes = {}) {
    SCOPED_TRACE(eq);
    if (model_shapes.empty()) model_shapes = shapes;
    const std::string m = einsum_model(eq, model_shapes);
    pd_engine* e = nullptr;
    ASSERT_EQ(take(pd_engine_create(rt_, m.data(), m.size(), nullptr, &e)), "");
    pd_context* c = nullptr;
    ASSERT_EQ(take(pd_context_create(e, &c)), "");
    std::vector<std::vector<float>> data;
    std::vector<pd_tensor> in(shapes.size());
    for (size_t i = 0; i < shapes.size(); ++i) data.push_back(random(shapes[i], 17 + static_cast<uint32_t>(i)));
    for (size_t i = 0; i < shapes.size(); ++i) {
      in[i].dtype = PD_DTYPE_FLOAT32;
      in[i].rank = static_cast<int32_t>(shapes[i].size());
      for (size_t d = 0; d < shapes[i].size(); ++d) in[i].dims[d] = shapes[i][d];
      in[i].data = data[i].data();
      in[i].byte_size = data[i].size() * sizeof(float);
    }
    pd_tensor out{};
    ASSERT_EQ(take(pd_context_run(c, in.data(), in.size(), &out, 1)), "");
    Dims want_shape;
    const std::vector<float> want = reference<float>(ref_eq, shapes, data, &want_shape);
    ASSERT_EQ(out.rank, static_cast<int32_t>(want_shape.size()));
    for (size_t d = 0; d < want_shape.size(); ++d) EXPECT_EQ(out.dims[d], want_shape[d]) << "dim " << d;
    ASSERT_EQ(out.byte_size, want.size() * sizeof(float));
    const float* y = static_cast<const float*>(out.data);
    for (size_t i = 0; i < want.size(); ++i)
      ASSERT_NEAR(y[i], want[i], 1e-5 + 1e-5 * std::fabs(want[i])) << "element " << i;
    pd_context_destroy(c);
    pd_engine_destroy(e);
  }

  pd_runtime* rt_ = nullptr;
};

TEST_F(Einsum, AttentionScoresAndValues) {
  // 4 heads, 9 query and 7 key tokens, d = 16; the batch dimension is symbolic.
  check("bmhd,bnhd->bmhn", {{3, 9, 4, 16}, {3, 7, 4, 16}}, "bmhd,bnhd->bmhn", {{-1, 9, 4, 16}, {-1, 7, 4, 16}});
  check("bmhn,bnhd->bmhd", {{3, 9, 4, 7}, {3, 7, 4, 16}}, "bmhn,bnhd->bmhd", {{-1, 9, 4, 7}, {-1, 7, 4, 16}});
  check("bmhd,bnhd->bmhn", {{1, 9, 4, 16}, {1, 7, 4, 16}}, "bmhd,bnhd->bmhn", {{-1, 9, 4, 16}, {-1, 7, 4, 16}});
  // Heads-first layouts and other output orders.
  check("bhmd,bhnd->bhmn", {{2, 4, 9, 16}, {2, 4, 7, 16}}, "bhmd,bhnd->bhmn");
  check("bhmn,bhnd->bhmd", {{2, 4, 9, 7}, {2, 4, 7, 16}}, "bhmn,bhnd->bhmd");
  check("bmhd,bnhd->bhnm", {{2, 9, 4, 16}, {2, 7, 4, 16}}, "bmhd,bnhd->bhnm");
}

TEST_F(Einsum, BroadcastsBatchAndHeads) {
  // Keys shared by the whole batch and by every head: dimensions of size 1 broadcast.
  check("bmhd,bnhd->bmhn", {{3, 9, 4, 16}, {1, 7, 1, 16}}, "bmhd,bnhd->bmhn");
  check("bmhn,bnhd->bmhd", {{1, 9, 4, 7}, {3, 7, 1, 16}}, "bmhn,bnhd->bmhd");
}

TEST_F(Einsum, Ellipsis) {
  // Batch and heads under '...', with the second input's ellipsis of lower rank (broadcast).
  check("...md,...nd->...mn", {{3, 4, 9, 16}, {4, 7, 16}}, "bhmd,hnd->bhmn");
  check("...mn,...nd->...md", {{3, 4, 9, 7}, {1, 4, 7, 16}}, "bhmn,bhnd->bhmd");
  check("b...d,b...d->b...", {{2, 5, 3, 8}, {2, 5, 3, 8}}, "bijd,bijd->bij");
  // Implicit output with an ellipsis: '...' first, then the labels used once, sorted.
  check("...ij,...jk", {{2, 3, 4}, {4, 5}}, "bij,jk->bik");
}

TEST_F(Einsum, ImplicitOutputSortsLabelsUsedOnce) {
  check("bhmd,bhnd", {{2, 3, 4, 5}, {2, 3, 6, 5}}, "bhmd,bhnd->mn");
  check("ij,jk", {{3, 4}, {4, 5}}, "ij,jk->ik");
  check("ba", {{3, 4}}, "ba->ab");
  check("i,i", {{7}, {7}}, "i,i->");
}

TEST_F(Einsum, DiagonalsTracesAndSums) {
  check("ii->i", {{5, 5}}, "ii->i");
  check("ii", {{5, 5}}, "ii->");
  check("bii->b", {{3, 4, 4}}, "bii->b");
  check("...ii->...i", {{2, 3, 4, 4}}, "abii->abi");
  check("ij->", {{3, 4}}, "ij->");
  check("ij->j", {{3, 4}}, "ij->j");
  check("ijk->kji", {{2, 3, 4}}, "ijk->kji");
  // A contraction whose inputs also have their own summed labels and a diagonal.
  check("iij,jkl->ik", {{3, 3, 4}, {4, 5, 2}}, "iij,jkl->ik");
  check("ij,kl->ijkl", {{2, 3}, {4, 5}}, "ij,kl->ijkl");
}

TEST_F(Einsum, ThreeInputs) {
  check("ij,jk,kl->il", {{2, 3}, {3, 4}, {4, 5}}, "ij,jk,kl->il");
  check("i,i,i->", {{6}, {6}, {6}}, "i,i,i->");
}

TEST_F(Einsum, IntegersAndBadEquations) {
  const std::string m = einsum_model("ij,jk->ik", {{2, 3}, {3, 2}}, onnx::TensorProto::INT64);
  pd_engine* e = nullptr;
  ASSERT_EQ(take(pd_engine_create(rt_, m.data(), m.size(), nullptr, &e)), "");
  pd_context* c = nullptr;
  ASSERT_EQ(take(pd_context_create(e, &c)), "");
  int64_t a[6] = {1, 2, 3, 4, 5, 6}, b[6] = {7, 8, 9, 10, 11, 12};
  pd_tensor in[2] = {};
  for (int i = 0; i < 2; ++i) {
    in[i].dtype = PD_DTYPE_INT64;
    in[i].rank = 2;
    in[i].dims[0] = i == 0 ? 2 : 3;
    in[i].dims[1] = i == 0 ? 3 : 2;
    in[i].data = i == 0 ? a : b;
    in[i].byte_size = sizeof a;
  }
  pd_tensor out{};
  ASSERT_EQ(take(pd_context_run(c, in, 2, &out, 1)), "");
  const int64_t* y = static_cast<const int64_t*>(out.data);
  EXPECT_EQ(y[0], 58);
  EXPECT_EQ(y[1], 64);
  EXPECT_EQ(y[2], 139);
  EXPECT_EQ(y[3], 154);
  pd_context_destroy(c);
  pd_engine_destroy(e);

  for (const auto& [eq, why] : std::vector<std::pair<std::string, std::string>>{
           {"ij,jk->ik,", "more than one output"},
           {"ij,jk->iz", "no input has"},
           {"ij,jk->ii", "repeats a label"},
           {"ijk,jk->ik", "rank 2 but its term"},
           {"i.j,jk->ik", "'...'"},
           {"ij->ik,jk", "more than one output"},
           {"ij", "1 input terms for 2 inputs"},
           {"i1,jk->ik", "not a letter"}}) {
    const std::string bad = einsum_model(eq, {{2, 3}, {3, 2}});
    pd_engine* be = nullptr;
    const std::string msg = take(pd_engine_create(rt_, bad.data(), bad.size(), nullptr, &be));
    EXPECT_NE(msg.find(why), std::string::npos) << eq << ": " << msg;
    EXPECT_NE(msg.find("the_einsum"), std::string::npos) << eq << ": " << msg;
    pd_engine_destroy(be);
  }
  const std::string mismatch = einsum_model("ij,jk->ik", {{2, 3}, {4, 2}});
  pd_engine* be = nullptr;
  const std::string msg = take(pd_engine_create(rt_, mismatch.data(), mismatch.size(), nullptr, &be));
  EXPECT_NE(msg.find("sizes must match or be 1"), std::string::npos) << msg;
  pd_engine_destroy(be);
}

// ---- the CUDA backend (on the emulation) ------------------------------------------------------

// Each model is built on the cuda backend (the fake plugin) and on cpu, then run three times
// with new inputs each time (the CUDA bucket's eager run, its graph capture, a replay); each
// output is compared with the naive reference over the same inputs and with the cpu backend.
class EinsumCuda : public ::testing::Test {
 protected:
  void SetUp() override {
    pd_runtime_options* ro = nullptr;
    ASSERT_EQ(take(pd_runtime_options_create(&ro)), "");
    ASSERT_EQ(take(pd_runtime_options_set_backend_dir(ro, PD_FAKE_CUDA_DIR)), "");
    ASSERT_EQ(take(pd_runtime_create(ro, &cuda_rt_)), "");
    pd_runtime_options_destroy(ro);
    ASSERT_EQ(take(pd_runtime_create(nullptr, &cpu_rt_)), "");
  }
  void TearDown() override {
    pd_runtime_destroy(cuda_rt_);
    pd_runtime_destroy(cpu_rt_);
  }

  // The engine of model on backend ("cuda" or "cpu"); "" or the error.
  static std::string build(pd_runtime* rt, const char* backend, const std::string& model, pd_engine** e,
                           pd_error_code* code = nullptr) {
    pd_engine_options* eo = nullptr;
    pd_error_free(pd_engine_options_create(&eo));
    pd_error_free(pd_engine_options_set_backend(eo, backend));
    pd_error* err = pd_engine_create(rt, model.data(), model.size(), eo, e);
    pd_engine_options_destroy(eo);
    if (code && err) *code = pd_error_get_code(err);
    return take(err);
  }

  template <typename T>
  static std::vector<T> run(pd_context* c, const std::vector<Dims>& shapes, const std::vector<std::vector<T>>& data,
                            Dims* shape) {
    std::vector<pd_tensor> in(shapes.size());
    for (size_t i = 0; i < shapes.size(); ++i) {
      in[i].dtype = std::is_same<T, double>::value ? PD_DTYPE_FLOAT64 : PD_DTYPE_FLOAT32;
      in[i].rank = static_cast<int32_t>(shapes[i].size());
      for (size_t d = 0; d < shapes[i].size(); ++d) in[i].dims[d] = shapes[i][d];
      in[i].data = const_cast<T*>(data[i].data());
      in[i].byte_size = data[i].size() * sizeof(T);
    }
    pd_tensor out{};
    const std::string err = take(pd_context_run(c, in.data(), in.size(), &out, 1));
    EXPECT_EQ(err, "");
    if (!err.empty()) return {};
    shape->assign(out.dims, out.dims + out.rank);
    const T* y = static_cast<const T*>(out.data);
    return std::vector<T>(y, y + out.byte_size / sizeof(T));
  }

  // As Einsum::check, on both backends; T is float or double.
  template <typename T = float>
  void check(const std::string& eq, const std::vector<Dims>& shapes, const std::string& ref_eq,
             std::vector<Dims> model_shapes = {}) {
    SCOPED_TRACE(eq);
    if (model_shapes.empty()) model_shapes = shapes;
    const std::string m = einsum_model(eq, model_shapes,
                                       std::is_same<T, double>::value ? onnx::TensorProto::DOUBLE
                                                                      : onnx::TensorProto::FLOAT);
    pd_engine *ce = nullptr, *pe = nullptr;
    ASSERT_EQ(build(cuda_rt_, "cuda", m, &ce), "");
    EXPECT_STREQ(pd_engine_backend(ce), "cuda");
    ASSERT_EQ(build(cpu_rt_, "cpu", m, &pe), "");
    pd_context *cc = nullptr, *pc = nullptr;
    ASSERT_EQ(take(pd_context_create(ce, &cc)), "");
    ASSERT_EQ(take(pd_context_create(pe, &pc)), "");
    for (uint32_t r = 0; r < 3; ++r) {
      SCOPED_TRACE(pd::str("run ", r));
      std::vector<std::vector<T>> data;
      std::mt19937 g(101 + r);
      std::uniform_real_distribution<T> u(-1, 1);
      for (const Dims& sh : shapes) {
        int64_t n = 1;
        for (int64_t d : sh) n *= d;
        std::vector<T> v(static_cast<size_t>(n));
        for (auto& x : v) x = u(g);
        data.push_back(std::move(v));
      }
      Dims want_shape, got_shape, cpu_shape;
      const std::vector<T> want = reference<T>(ref_eq, shapes, data, &want_shape);
      const std::vector<T> got = run<T>(cc, shapes, data, &got_shape);
      const std::vector<T> cpu = run<T>(pc, shapes, data, &cpu_shape);
      ASSERT_EQ(got_shape, want_shape);
      ASSERT_EQ(cpu_shape, want_shape);
      ASSERT_EQ(got.size(), want.size());
      ASSERT_EQ(cpu.size(), want.size());
      const double tol = std::is_same<T, double>::value ? 1e-12 : 1e-5;
      for (size_t i = 0; i < want.size(); ++i) {
        ASSERT_NEAR(got[i], want[i], tol + tol * std::fabs(want[i])) << "element " << i << " (reference)";
        ASSERT_NEAR(got[i], cpu[i], tol + tol * std::fabs(cpu[i])) << "element " << i << " (cpu backend)";
      }
    }
    pd_context_destroy(cc);
    pd_context_destroy(pc);
    pd_engine_destroy(ce);
    pd_engine_destroy(pe);
  }

  pd_runtime* cuda_rt_ = nullptr;
  pd_runtime* cpu_rt_ = nullptr;
};

TEST_F(EinsumCuda, AttentionScoresAndValues) {
  // Batch 1: one strided-batched GEMM over the heads, every operand in place. Batch 3: the
  // batch and head labels are no single stride, so the operands are gathered into scratch.
  for (int64_t b : {1, 3}) {
    check("bmhd,bnhd->bmhn", {{b, 9, 4, 16}, {b, 7, 4, 16}}, "bmhd,bnhd->bmhn", {{-1, 9, 4, 16}, {-1, 7, 4, 16}});
    check("bmhn,bnhd->bmhd", {{b, 9, 4, 7}, {b, 7, 4, 16}}, "bmhn,bnhd->bmhd", {{-1, 9, 4, 7}, {-1, 7, 4, 16}});
  }
  // Heads-first: batch and heads collapse to one batch stride whatever the batch.
  check("bhmd,bhnd->bhmn", {{2, 4, 9, 16}, {2, 4, 7, 16}}, "bhmd,bhnd->bhmn");
  check("bhmn,bhnd->bhmd", {{2, 4, 9, 7}, {2, 4, 7, 16}}, "bhmn,bhnd->bhmd");
}

TEST_F(EinsumCuda, BroadcastsBatchAndHeads) {
  // Keys shared by the whole batch and every head (a batch stride of 0), and the mixed case.
  check("bhmd,bhnd->bhmn", {{2, 4, 9, 16}, {1, 1, 7, 16}}, "bhmd,bhnd->bhmn");
  check("bmhd,bnhd->bmhn", {{3, 9, 4, 16}, {1, 7, 1, 16}}, "bmhd,bnhd->bmhn");
  check("bmhn,bnhd->bmhd", {{1, 9, 4, 7}, {3, 7, 1, 16}}, "bmhn,bnhd->bmhd");
  check("...md,...nd->...mn", {{3, 4, 9, 16}, {4, 7, 16}}, "bhmd,hnd->bhmn");
}

TEST_F(EinsumCuda, ImplicitOutputAndTransposes) {
  check("bhmd,bhnd", {{2, 3, 4, 5}, {2, 3, 6, 5}}, "bhmd,bhnd->mn");
  check("ij,jk", {{3, 4}, {4, 5}}, "ij,jk->ik");
  check("...ij,...jk", {{2, 3, 4}, {4, 5}}, "bij,jk->bik");
  // Outputs in an order the GEMM cannot write: computed in scratch, then scattered.
  check("bmhd,bnhd->bhnm", {{2, 9, 4, 16}, {2, 7, 4, 16}}, "bmhd,bnhd->bhnm");
  check("ij,jk->ki", {{3, 4}, {4, 5}}, "ij,jk->ki");
  // Transposed operands used in place (k contiguous in neither).
  check("ji,kj->ik", {{4, 3}, {5, 4}}, "ji,kj->ik");
}

TEST_F(EinsumCuda, SummedLabelsOuterProductsAndOneInput) {
  check("iij,jkl->ik", {{3, 3, 4}, {4, 5, 2}}, "iij,jkl->ik");
  check("ij,kl->ijkl", {{2, 3}, {4, 5}}, "ij,kl->ijkl");
  check("i,i", {{7}, {7}}, "i,i->");
  check("ba", {{3, 4}}, "ba->ab");
  check("ijk->kji", {{2, 3, 4}}, "ijk->kji");
  check("ii->i", {{5, 5}}, "ii->i");
  check("ii", {{5, 5}}, "ii->");
  check("bii->b", {{3, 4, 4}}, "bii->b");
  check("...ii->...i", {{2, 3, 4, 4}}, "abii->abi");
  check("ij->", {{3, 4}}, "ij->");
  check("ij->j", {{3, 4}}, "ij->j");
  check("ij->i", {{3, 4}}, "ij->i");
}

TEST_F(EinsumCuda, Float64) {
  check<double>("bij,bjk->bik", {{3, 2, 5}, {3, 5, 3}}, "bij,bjk->bik");
  check<double>("bmhd,bnhd->bmhn", {{2, 9, 4, 16}, {2, 7, 4, 16}}, "bmhd,bnhd->bmhn");
  check<double>("ij->i", {{3, 4}}, "ij->i");
  check<double>("...ii->...i", {{3, 5, 5}}, "bii->bi");
}

TEST_F(EinsumCuda, EmptyLabels) {
  // A summed label of size 0: zeros; an output without elements: nothing to do.
  check("ij,jk->ik", {{3, 0}, {0, 4}}, "ij,jk->ik");
  check("ij,jk->ik", {{0, 2}, {2, 4}}, "ij,jk->ik");
}

// What the CUDA backend does not run it refuses as UNSUPPORTED naming the node and the
// equation, so the engine falls back (the repository's backend fallback serves it on cpu).
TEST_F(EinsumCuda, RefusesThreeInputsAndIntegers) {
  struct Case {
    std::string model, says;
  };
  for (const Case& k :
       {Case{einsum_model("ij,jk,kl->il", {{2, 3}, {3, 4}, {4, 5}}),
             "Einsum node 'the_einsum': the CUDA backend runs Einsum of one or two inputs; equation "
             "'ij,jk,kl->il' has 3"},
        Case{einsum_model("ij,jk->ik", {{2, 3}, {3, 2}}, onnx::TensorProto::INT64),
             "Einsum node 'the_einsum': the CUDA backend runs Einsum in float32 and float64 only, input 0 is "
             "int64 (equation 'ij,jk->ik')"}}) {
    pd_engine* e = nullptr;
    pd_error_code code = PD_ERR_INTERNAL;
    const std::string msg = build(cuda_rt_, "cuda", k.model, &e, &code);
    EXPECT_EQ(e, nullptr);
    EXPECT_EQ(code, PD_ERR_UNSUPPORTED) << msg;
    EXPECT_NE(msg.find(k.says), std::string::npos) << msg;
    // The cpu backend runs it.
    pd_engine* pe = nullptr;
    EXPECT_EQ(build(cpu_rt_, "cpu", k.model, &pe), "");
    pd_engine_destroy(pe);
  }
}

}  // namespace
