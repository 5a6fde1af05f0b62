// Tests of the C ABI: loading, errors that name the problem, signatures, runs.
#include <gtest/gtest.h>
#include <onnx/onnx_pb.h>

#include <atomic>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <new>
#include <sstream>
#include <string>
#include <vector>

#include "policyd.h"
#include "test_util.h"

// Every operator new of the process (this binary, libpolicyd and its plugins) is counted, so a
// test can assert that a call allocates nothing.
namespace {

using pd::test::slurp;
std::atomic<long> g_allocations{0};
}  // namespace
// GCC cannot see that these replacements pair malloc with free.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
void* operator new(std::size_t n) {
  g_allocations.fetch_add(1, std::memory_order_relaxed);
  if (void* p = std::malloc(n ? n : 1)) return p;
  throw std::bad_alloc();
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
#pragma GCC diagnostic pop

namespace {

std::string take(pd_error* e) {
  if (!e) return "";
  std::string m = pd_error_get_message(e);
  pd_error_free(e);
  return m;
}

class Engine : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_EQ(take(pd_runtime_create(nullptr, &rt_)), ""); }
  void TearDown() override { pd_runtime_destroy(rt_); }
  pd_runtime* rt_ = nullptr;
};

// A one-node model built with the ONNX protobuf API.
std::string one_node_model(const std::string& op, const std::string& in_name = "x") {
  onnx::ModelProto m = pd::test::empty_model();
  auto* g = m.mutable_graph();
  auto* n = g->add_node();
  n->set_op_type(op);
  n->set_name("the_node");
  n->add_input(in_name);
  n->add_output("y");
  for (const char* name : {"x", "y"}) {
    auto* v = std::string(name) == "x" ? g->add_input() : g->add_output();
    v->set_name(name);
    auto* tt = v->mutable_type()->mutable_tensor_type();
    tt->set_elem_type(onnx::TensorProto::FLOAT);
    tt->mutable_shape()->add_dim()->set_dim_param("batch");
    tt->mutable_shape()->add_dim()->set_dim_value(4);
  }
  return m.SerializeAsString();
}

TEST(Abi, VersionMatchesHeader) {
  uint32_t major = 0, minor = 0;
  pd_api_version(&major, &minor);
  EXPECT_EQ(major, PD_API_VERSION_MAJOR);
  EXPECT_EQ(minor, PD_API_VERSION_MINOR);
  EXPECT_STRNE(pd_version_string(), "");
}

TEST_F(Engine, CpuBackendLoadsAndGpuOnesSayWhyNot) {
  bool cpu = false;
  for (int32_t i = 0; i < pd_runtime_backend_count(rt_); ++i) {
    pd_backend_info info;
    ASSERT_EQ(take(pd_runtime_backend_info(rt_, i, &info)), "");
    if (std::string(info.name) == "cpu") {
      cpu = info.available == 1;
      EXPECT_NE(std::string(info.version).find("onednn-"), std::string::npos);
    } else if (!info.available) {
      EXPECT_STRNE(info.reason, "") << info.name;
    }
  }
  EXPECT_TRUE(cpu);
}

TEST_F(Engine, GarbageIsRejectedWithAClearError) {
  pd_engine* e = nullptr;
  const char junk[] = "definitely not a protobuf \xff\xff\xff";
  pd_error* err = pd_engine_create(rt_, junk, sizeof junk, nullptr, &e);
  ASSERT_NE(err, nullptr);
  EXPECT_EQ(pd_error_get_code(err), PD_ERR_INVALID_ARG);
  EXPECT_NE(take(err).find("not an ONNX model"), std::string::npos);
  EXPECT_EQ(e, nullptr);
}

TEST_F(Engine, InvalidModelNamesTheMissingOutput) {
  std::string m = slurp(PD_SHARED_DIR "/models/mlagents/deterDiscrete1obs3action_INVALID.onnx");
  pd_engine* e = nullptr;
  pd_error* err = pd_engine_create(rt_, m.data(), m.size(), nullptr, &e);
  ASSERT_NE(err, nullptr);
  EXPECT_EQ(pd_error_get_code(err), PD_ERR_INVALID_ARG);
  std::string msg = take(err);
  EXPECT_NE(msg.find("memory_size"), std::string::npos) << msg;
  EXPECT_NE(msg.find("invalid model"), std::string::npos) << msg;
}

TEST_F(Engine, UnsupportedOpNamesOpAndNode) {
  std::string m = one_node_model("NoSuchOp");
  pd_engine* e = nullptr;
  pd_error* err = pd_engine_create(rt_, m.data(), m.size(), nullptr, &e);
  ASSERT_NE(err, nullptr);
  EXPECT_EQ(pd_error_get_code(err), PD_ERR_UNSUPPORTED);
  std::string msg = take(err);
  EXPECT_NE(msg.find("NoSuchOp"), std::string::npos) << msg;
  EXPECT_NE(msg.find("the_node"), std::string::npos) << msg;
}

TEST_F(Engine, UndefinedNodeInputIsInvalid) {
  std::string m = one_node_model("Relu", "nowhere");
  pd_engine* e = nullptr;
  std::string msg = take(pd_engine_create(rt_, m.data(), m.size(), nullptr, &e));
  EXPECT_NE(msg.find("nowhere"), std::string::npos) << msg;
}

TEST_F(Engine, UnknownBackendIsNotFound) {
  std::string m = one_node_model("Relu");
  pd_engine_options* o = nullptr;
  ASSERT_EQ(take(pd_engine_options_create(&o)), "");
  ASSERT_EQ(take(pd_engine_options_set_backend(o, "quantum")), "");
  pd_engine* e = nullptr;
  pd_error* err = pd_engine_create(rt_, m.data(), m.size(), o, &e);
  ASSERT_NE(err, nullptr);
  EXPECT_EQ(pd_error_get_code(err), PD_ERR_NOT_FOUND);
  take(err);
  pd_engine_options_destroy(o);
}

TEST_F(Engine, RunsAndChecksInputs) {
  std::string m = one_node_model("Relu");
  pd_engine* e = nullptr;
  ASSERT_EQ(take(pd_engine_create(rt_, m.data(), m.size(), nullptr, &e)), "");
  EXPECT_EQ(pd_engine_batchable(e), 1);
  pd_io_info info;
  ASSERT_EQ(take(pd_engine_output_info(e, 0, &info)), "");
  EXPECT_EQ(info.rank, 2);
  EXPECT_EQ(info.dims[0], -1);
  EXPECT_EQ(info.dims[1], 4);
  EXPECT_EQ(info.batch_dim, 0);
  pd_context* c = nullptr;
  ASSERT_EQ(take(pd_context_create(e, &c)), "");
  float x[8] = {-1, 2, -3, 4, 5, -6, 7, -8};
  pd_tensor in{};
  in.dtype = PD_DTYPE_FLOAT32;
  in.rank = 2;
  in.dims[0] = 2;
  in.dims[1] = 4;
  in.data = x;
  in.byte_size = sizeof x;
  pd_tensor out{};
  ASSERT_EQ(take(pd_context_run(c, &in, 1, &out, 1)), "");
  ASSERT_EQ(out.rank, 2);
  EXPECT_EQ(out.dims[0], 2);
  const float* y = static_cast<const float*>(out.data);
  for (int i = 0; i < 8; ++i) EXPECT_EQ(y[i], x[i] > 0 ? x[i] : 0.f);

  in.dims[1] = 3;
  in.byte_size = 6 * sizeof(float);
  std::string msg = take(pd_context_run(c, &in, 1, &out, 1));
  EXPECT_NE(msg.find("input 'x'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("dimension 1 must be 4"), std::string::npos) << msg;
  in.dims[1] = 4;
  in.byte_size = 4;
  msg = take(pd_context_run(c, &in, 1, &out, 1));
  EXPECT_NE(msg.find("bytes"), std::string::npos) << msg;
  in.dtype = PD_DTYPE_INT64;
  msg = take(pd_context_run(c, &in, 1, &out, 1));
  EXPECT_NE(msg.find("expected float"), std::string::npos) << msg;
  pd_context_destroy(c);
  pd_engine_destroy(e);
}

// A batchable float tensor [rows, 4] over data.
pd_tensor rows4(float* data, int64_t rows) {
  pd_tensor t{};
  t.dtype = PD_DTYPE_FLOAT32;
  t.rank = 2;
  t.dims[0] = rows;
  t.dims[1] = 4;
  t.data = data;
  t.byte_size = static_cast<uint64_t>(rows) * 4 * sizeof(float);
  return t;
}

class RandomModel : public Engine {
 protected:
  void SetUp() override {
    Engine::SetUp();
    const std::string m = one_node_model("RandomNormalLike");
    ASSERT_EQ(take(pd_engine_create(rt_, m.data(), m.size(), nullptr, &e_)), "");
    ASSERT_EQ(take(pd_context_create(e_, &c_)), "");
  }
  void TearDown() override {
    pd_context_destroy(c_);
    pd_engine_destroy(e_);
    Engine::TearDown();
  }
  // Runs `rows` rows and returns the output's floats.
  std::vector<float> run(int64_t rows) {
    std::vector<float> x(rows * 4);
    pd_tensor in = rows4(x.data(), rows), out{};
    EXPECT_EQ(take(pd_context_run(c_, &in, 1, &out, 1)), "");
    const float* y = static_cast<const float*>(out.data);
    return std::vector<float>(y, y + rows * 4);
  }
  pd_engine* e_ = nullptr;
  pd_context* c_ = nullptr;
};

TEST_F(RandomModel, RowSeedsThroughTheAbi) {
  const uint64_t seeds[3] = {30, 10, 20};
  std::vector<std::vector<float>> alone;
  for (uint64_t s : seeds) {
    ASSERT_EQ(take(pd_context_set_row_seeds(c_, &s, 1)), "");
    alone.push_back(run(1));
  }
  ASSERT_EQ(take(pd_context_set_row_seeds(c_, seeds, 3)), "");
  const std::vector<float> batch = run(3);
  for (int r = 0; r < 3; ++r)
    EXPECT_EQ(std::vector<float>(batch.begin() + 4 * r, batch.begin() + 4 * r + 4), alone[r]) << "row " << r;
  EXPECT_EQ(run(3), batch) << "the same row seeds, run again";

  // A batch of the wrong size fails naming the op and both sizes, and nothing else changes.
  float x[8] = {};
  pd_tensor in = rows4(x, 2), out{};
  pd_error* err = pd_context_run(c_, &in, 1, &out, 1);
  ASSERT_NE(err, nullptr);
  EXPECT_EQ(pd_error_get_code(err), PD_ERR_INVALID_ARG);
  const std::string msg = take(err);
  EXPECT_NE(msg.find("RandomNormalLike node 'the_node'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("3 row seeds"), std::string::npos) << msg;
  EXPECT_NE(msg.find("2 rows"), std::string::npos) << msg;
  EXPECT_EQ(run(3), batch);

  err = pd_context_set_row_seeds(c_, nullptr, 2);
  ASSERT_NE(err, nullptr);
  EXPECT_EQ(pd_error_get_code(err), PD_ERR_INVALID_ARG);
  take(err);
  err = pd_context_set_row_seeds(nullptr, seeds, 1);
  ASSERT_NE(err, nullptr);
  take(err);
}

TEST_F(RandomModel, NoRowSeedsIsTheContextStream) {
  ASSERT_EQ(take(pd_context_set_seed(c_, 5)), "");
  const std::vector<float> first = run(2), second = run(2);
  ASSERT_EQ(take(pd_context_set_seed(c_, 5)), "");
  EXPECT_EQ(run(2), first);
  const uint64_t seeds[2] = {1, 2};
  ASSERT_EQ(take(pd_context_set_row_seeds(c_, seeds, 2)), "");
  const std::vector<float> seeded = run(2);
  EXPECT_NE(seeded, second);
  ASSERT_EQ(take(pd_context_set_row_seeds(c_, nullptr, 0)), "");
  EXPECT_EQ(run(2), second) << "row-seeded runs advanced the context stream";
  // set_seed leaves row seeds alone.
  ASSERT_EQ(take(pd_context_set_row_seeds(c_, seeds, 2)), "");
  ASSERT_EQ(take(pd_context_set_seed(c_, 99)), "");
  EXPECT_EQ(run(2), seeded);
}

TEST_F(RandomModel, SettingRowSeedsAndRowSeededRunsAllocateNothing) {
  const uint64_t seeds[4] = {1, 2, 3, 4};
  float x[16] = {};
  pd_tensor in = rows4(x, 4), out{};
  ASSERT_EQ(take(pd_context_set_row_seeds(c_, seeds, 4)), "");
  ASSERT_EQ(take(pd_context_run(c_, &in, 1, &out, 1)), "");  // builds the bucket
  const long before = g_allocations.load();
  for (int i = 0; i < 10; ++i) {
    pd_error* e1 = pd_context_set_row_seeds(c_, seeds + (i % 2), 3);
    pd_error* e2 = pd_context_set_row_seeds(c_, seeds, 0);
    pd_error* e3 = pd_context_set_row_seeds(c_, seeds, 4);
    pd_error* e4 = pd_context_run(c_, &in, 1, &out, 1);
    if (e1 || e2 || e3 || e4) FAIL() << take(e1) << take(e2) << take(e3) << take(e4);
  }
  EXPECT_EQ(g_allocations.load() - before, 0);
  // The count sees the library's allocations: more seeds than ever before need more room.
  const std::vector<uint64_t> many(64, 7);
  ASSERT_EQ(take(pd_context_set_row_seeds(c_, many.data(), many.size())), "");
  EXPECT_GT(g_allocations.load() - before, 0);
}

// Bytes of the initializers of an ONNX model (elements times element size).
uint64_t initializer_bytes(const std::string& bytes) {
  onnx::ModelProto m;
  EXPECT_TRUE(m.ParseFromString(bytes));
  uint64_t total = 0;
  for (const auto& t : m.graph().initializer()) {
    uint64_t n = 1;
    for (int64_t d : t.dims()) n *= static_cast<uint64_t>(d);
    EXPECT_EQ(t.data_type(), onnx::TensorProto::FLOAT) << t.name();
    total += n * sizeof(float);
  }
  return total;
}

TEST_F(Engine, MemoryCountsArenasPerBucketAndSharedWeights) {
  const std::string m = slurp(PD_SHARED_DIR "/peers/models/mlp-small.onnx");
  const uint64_t init = initializer_bytes(m);
  ASSERT_GT(init, 0u);
  pd_engine* e = nullptr;
  ASSERT_EQ(take(pd_engine_create(rt_, m.data(), m.size(), nullptr, &e)), "");
  pd_context *c1 = nullptr, *c2 = nullptr;
  ASSERT_EQ(take(pd_context_create(e, &c1)), "");
  ASSERT_EQ(take(pd_context_create(e, &c2)), "");
  pd_memory_info m0{}, m1{}, m2{}, other{};
  ASSERT_EQ(take(pd_context_memory(c1, &m0)), "");
  EXPECT_EQ(m0.arena_bytes, 0u);
  EXPECT_EQ(m0.buckets, 0u);
  EXPECT_GE(m0.weight_bytes, init);

  auto run = [&](int64_t rows) {
    std::vector<float> x(rows * 8, 0.25f);
    pd_tensor in{};
    in.dtype = PD_DTYPE_FLOAT32;
    in.rank = 2;
    in.dims[0] = rows;
    in.dims[1] = 8;
    in.data = x.data();
    in.byte_size = x.size() * sizeof(float);
    pd_tensor out{};
    ASSERT_EQ(take(pd_context_run(c1, &in, 1, &out, 1)), "");
  };
  run(1);
  ASSERT_EQ(take(pd_context_memory(c1, &m1)), "");
  EXPECT_GT(m1.arena_bytes, 0u);
  EXPECT_EQ(m1.buckets, 1u);
  run(1);  // the same bucket
  ASSERT_EQ(take(pd_context_memory(c1, &m2)), "");
  EXPECT_EQ(m2.arena_bytes, m1.arena_bytes);
  run(256);
  ASSERT_EQ(take(pd_context_memory(c1, &m2)), "");
  EXPECT_EQ(m2.buckets, 2u);
  // The batch-256 arena holds at least the input-sized activations of 256 rows.
  EXPECT_GE(m2.arena_bytes, m1.arena_bytes + 255 * 2 * sizeof(float));
  EXPECT_EQ(m2.weight_bytes, m0.weight_bytes);

  // Arenas belong to the context; weights to the engine.
  ASSERT_EQ(take(pd_context_memory(c2, &other)), "");
  EXPECT_EQ(other.arena_bytes, 0u);
  EXPECT_EQ(other.weight_bytes, m0.weight_bytes);

  pd_error* err = pd_context_memory(c1, nullptr);
  ASSERT_NE(err, nullptr);
  EXPECT_EQ(pd_error_get_code(err), PD_ERR_INVALID_ARG);
  take(err);
  pd_context_destroy(c1);
  pd_context_destroy(c2);
  pd_engine_destroy(e);
}

// ABI 1.3: the batch profile, backend parameters and timing caches.
TEST(Abi, BatchProfileMustBeOrdered) {
  pd_engine_options* o = nullptr;
  ASSERT_EQ(take(pd_engine_options_create(&o)), "");
  EXPECT_EQ(take(pd_engine_options_set_batch_profile(o, 1, 8, 64)), "");
  EXPECT_EQ(take(pd_engine_options_set_batch_profile(o, 1, 1, 0)), "");  // max 0: unbounded
  EXPECT_EQ(take(pd_engine_options_set_batch_profile(o, 4, 4, 4)), "");
  const int64_t bad[][3] = {{0, 1, 4}, {-1, 1, 4}, {4, 2, 8}, {1, 8, 4}, {2, 2, -1}};
  for (const auto& b : bad) {
    pd_error* err = pd_engine_options_set_batch_profile(o, b[0], b[1], b[2]);
    ASSERT_NE(err, nullptr) << b[0] << "/" << b[1] << "/" << b[2];
    EXPECT_EQ(pd_error_get_code(err), PD_ERR_INVALID_ARG);
    const std::string msg = take(err);
    EXPECT_NE(msg.find("1 <= min <= opt <= max"), std::string::npos) << msg;
    EXPECT_NE(msg.find("got min " + std::to_string(b[0])), std::string::npos) << msg;
  }
  EXPECT_NE(take(pd_engine_options_set_batch_profile(nullptr, 1, 1, 1)), "");
  pd_engine_options_destroy(o);
}

TEST(Abi, ParamsNameTheirBackend) {
  pd_engine_options* o = nullptr;
  ASSERT_EQ(take(pd_engine_options_create(&o)), "");
  EXPECT_EQ(take(pd_engine_options_set_param(o, "tensorrt.precision", "fp16")), "");
  EXPECT_EQ(take(pd_engine_options_set_param(o, "cuda.anything", "1")), "");
  pd_error* err = pd_engine_options_set_param(o, "onnxruntime.threads", "4");
  ASSERT_NE(err, nullptr);
  EXPECT_EQ(pd_error_get_code(err), PD_ERR_INVALID_ARG);
  std::string msg = take(err);
  EXPECT_NE(msg.find("names unknown backend 'onnxruntime'"), std::string::npos) << msg;
  for (const char* key : {"precision", ".precision", "tensorrt.", ""}) {
    msg = take(pd_engine_options_set_param(o, key, "x"));
    EXPECT_NE(msg.find("'<backend>.<name>'"), std::string::npos) << key << ": " << msg;
  }
  EXPECT_NE(take(pd_engine_options_set_param(o, "cpu.x", nullptr)), "");
  pd_engine_options_destroy(o);
}

TEST_F(Engine, CpuRefusesAParamOfItsOwnAtCreateAndIgnoresOthers) {
  const std::string m = one_node_model("Relu");
  pd_engine_options* o = nullptr;
  ASSERT_EQ(take(pd_engine_options_create(&o)), "");
  ASSERT_EQ(take(pd_engine_options_set_name(o, "relu@1.0.0")), "");
  // Other backends' parameters never reach cpu.
  ASSERT_EQ(take(pd_engine_options_set_param(o, "tensorrt.precision", "fp16")), "");
  pd_engine* e = nullptr;
  ASSERT_EQ(take(pd_engine_create(rt_, m.data(), m.size(), o, &e)), "");
  pd_engine_destroy(e);
  e = nullptr;
  ASSERT_EQ(take(pd_engine_options_set_param(o, "cpu.x", "1")), "");
  pd_error* err = pd_engine_create(rt_, m.data(), m.size(), o, &e);
  ASSERT_NE(err, nullptr);
  EXPECT_EQ(e, nullptr);
  EXPECT_EQ(pd_error_get_code(err), PD_ERR_INVALID_ARG);
  const std::string msg = take(err);
  EXPECT_NE(msg.find("relu@1.0.0"), std::string::npos) << msg;
  EXPECT_NE(msg.find("backend 'cpu' has no build parameter 'x'"), std::string::npos) << msg;
  // An empty value removes the parameter.
  ASSERT_EQ(take(pd_engine_options_set_param(o, "cpu.x", "")), "");
  ASSERT_EQ(take(pd_engine_create(rt_, m.data(), m.size(), o, &e)), "");
  pd_engine_destroy(e);
  pd_engine_options_destroy(o);
}

TEST_F(Engine, CpuKeepsNoTimingCacheAndIgnoresOneGiven) {
  const std::string m = one_node_model("Relu");
  pd_engine_options* o = nullptr;
  ASSERT_EQ(take(pd_engine_options_create(&o)), "");
  EXPECT_NE(take(pd_engine_options_set_timing_cache(o, nullptr, 5)), "");
  const char tc[] = "some timing cache";
  ASSERT_EQ(take(pd_engine_options_set_timing_cache(o, tc, sizeof tc)), "");
  ASSERT_EQ(take(pd_engine_options_set_batch_profile(o, 1, 4, 16)), "");
  pd_engine* e = nullptr;
  ASSERT_EQ(take(pd_engine_create(rt_, m.data(), m.size(), o, &e)), "");
  void* data = reinterpret_cast<void*>(1);
  size_t size = 7;
  ASSERT_EQ(take(pd_engine_timing_cache(e, &data, &size)), "");
  EXPECT_EQ(data, nullptr);
  EXPECT_EQ(size, 0u);
  EXPECT_NE(take(pd_engine_timing_cache(e, nullptr, &size)), "");
  EXPECT_NE(take(pd_engine_timing_cache(nullptr, &data, &size)), "");
  ASSERT_EQ(take(pd_engine_options_set_timing_cache(o, nullptr, 0)), "");  // clears
  pd_engine_destroy(e);
  pd_engine_options_destroy(o);
}

TEST(Abi, DestroyAcceptsNull) {
  pd_runtime_destroy(nullptr);
  pd_engine_destroy(nullptr);
  pd_context_destroy(nullptr);
  pd_error_free(nullptr);
  pd_engine_options_destroy(nullptr);
  pd_runtime_options_destroy(nullptr);
}

}  // namespace
