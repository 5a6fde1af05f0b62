// Sizes from callers and models are checked before they are used (issue 13): the C ABI's input
// checks, shape inference, the importer's initializer and opset checks, the engine memory limit.
#include <gtest/gtest.h>
#include <onnx/onnx_pb.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include "policyd.h"
#include "test_util.h"

namespace {

using pd::test::Err;
using pd::test::take;

#define EXPECT_HAS(msg, part) EXPECT_NE((msg).find(part), std::string::npos) << (msg)

onnx::ValueInfoProto* add_io(google::protobuf::RepeatedPtrField<onnx::ValueInfoProto>* list, const std::string& name,
                             int elem, const std::vector<std::string>& dims) {
  auto* v = list->Add();
  v->set_name(name);
  auto* tt = v->mutable_type()->mutable_tensor_type();
  tt->set_elem_type(elem);
  auto* shape = tt->mutable_shape();
  for (const auto& d : dims) {
    if (!d.empty() && d[0] >= '0' && d[0] <= '9') shape->add_dim()->set_dim_value(std::stoll(d));
    else shape->add_dim()->set_dim_param(d);
  }
  return v;
}

onnx::ModelProto model(int opset = 17) { return pd::test::empty_model(opset); }

// y = Softmax(x) over x: [B, M], a free dimension after the batch.
std::string softmax_model() {
  onnx::ModelProto m = model();
  auto* g = m.mutable_graph();
  auto* n = g->add_node();
  n->set_op_type("Softmax");
  n->set_name("softmax");
  n->add_input("x");
  n->add_output("y");
  add_io(g->mutable_input(), "x", onnx::TensorProto::FLOAT, {"B", "M"});
  add_io(g->mutable_output(), "y", onnx::TensorProto::FLOAT, {"B", "M"});
  return m.SerializeAsString();
}

// y = ConstantOfShape(shape): the output's shape is the value of an input (a shape tensor).
std::string constant_of_shape_model() {
  onnx::ModelProto m = model();
  auto* g = m.mutable_graph();
  auto* n = g->add_node();
  n->set_op_type("ConstantOfShape");
  n->set_name("fill");
  n->add_input("shape");
  n->add_output("y");
  add_io(g->mutable_input(), "shape", onnx::TensorProto::INT64, {"2"});
  add_io(g->mutable_output(), "y", onnx::TensorProto::FLOAT, {"a", "b"});
  return m.SerializeAsString();
}

// y = x + w with w an initializer of `elems` floats; raw: the data is there, else none is.
std::string initializer_model(int64_t elems, bool with_data) {
  onnx::ModelProto m = model();
  auto* g = m.mutable_graph();
  auto* w = g->add_initializer();
  w->set_name("w");
  w->set_data_type(onnx::TensorProto::FLOAT);
  w->add_dims(elems);
  if (with_data) w->set_raw_data(std::string(static_cast<size_t>(elems) * 4, '\0'));
  auto* n = g->add_node();
  n->set_op_type("Add");
  n->add_input("x");
  n->add_input("w");
  n->add_output("y");
  add_io(g->mutable_input(), "x", onnx::TensorProto::FLOAT, {std::to_string(elems)});
  add_io(g->mutable_output(), "y", onnx::TensorProto::FLOAT, {std::to_string(elems)});
  return m.SerializeAsString();
}

class Limits : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_EQ(take(pd_runtime_create(nullptr, &rt_)).msg, ""); }
  void TearDown() override {
    pd_context_destroy(ctx_);
    pd_engine_destroy(engine_);
    pd_runtime_destroy(rt_);
  }
  Err create(const std::string& m, uint64_t max_memory = 0) {
    pd_context_destroy(ctx_);
    pd_engine_destroy(engine_);
    ctx_ = nullptr;
    engine_ = nullptr;
    pd_engine_options* o = nullptr;
    EXPECT_EQ(take(pd_engine_options_create(&o)).msg, "");
    if (max_memory) {
      EXPECT_EQ(take(pd_engine_options_set_max_memory(o, max_memory)).msg, "");
    }
    Err e = take(pd_engine_create(rt_, m.data(), m.size(), o, &engine_));
    pd_engine_options_destroy(o);
    if (e.msg.empty()) {
      EXPECT_EQ(take(pd_context_create(engine_, &ctx_)).msg, "");
    }
    return e;
  }
  Err run(std::vector<pd_tensor> in) {
    std::vector<pd_tensor> out(pd_engine_output_count(engine_));
    return take(pd_context_run(ctx_, in.data(), static_cast<int32_t>(in.size()), out.data(),
                               static_cast<int32_t>(out.size())));
  }
  pd_runtime* rt_ = nullptr;
  pd_engine* engine_ = nullptr;
  pd_context* ctx_ = nullptr;
};

pd_tensor tensor(pd_dtype t, std::vector<int64_t> dims, void* data, uint64_t bytes) {
  pd_tensor r{};
  r.dtype = t;
  r.rank = static_cast<int32_t>(dims.size());
  for (size_t i = 0; i < dims.size(); ++i) r.dims[i] = dims[i];
  r.data = data;
  r.byte_size = bytes;
  return r;
}

// 3 * 6148914691236517206 wraps to 2 elements: before, the check agreed with 8 bytes of data
// and Softmax ran over 2^64 rows (SIGSEGV inside pd_context_run).
TEST_F(Limits, ShapeWhoseCountWrapsIsRefusedNamingTheInput) {
  ASSERT_EQ(create(softmax_model()).msg, "");
  float data[2] = {1, 2};
  Err e = run({tensor(PD_DTYPE_FLOAT32, {3, 6148914691236517206LL}, data, sizeof data)});
  EXPECT_EQ(e.code, PD_ERR_INVALID_ARG);
  EXPECT_HAS(e.msg, "input 'x'");
  EXPECT_HAS(e.msg, "[3,6148914691236517206]");
  EXPECT_HAS(e.msg, "more elements than a 64-bit count can hold");
}

// 4 * 2^62 wraps to 0: before, the run answered an empty result.
TEST_F(Limits, ShapeWhoseCountWrapsToZeroIsRefused) {
  ASSERT_EQ(create(softmax_model()).msg, "");
  Err e = run({tensor(PD_DTYPE_FLOAT32, {4, int64_t{1} << 62}, nullptr, 0)});
  EXPECT_EQ(e.code, PD_ERR_INVALID_ARG);
  EXPECT_HAS(e.msg, "input 'x'");
  EXPECT_HAS(e.msg, "more elements than a 64-bit count can hold");
}

// A count that fits int64 but whose byte size does not (2^62 floats), or is absurd.
TEST_F(Limits, ByteSizeOverflowAndTheTensorLimitAreRefused) {
  ASSERT_EQ(create(softmax_model()).msg, "");
  float data[4] = {};
  Err e = run({tensor(PD_DTYPE_FLOAT32, {1, int64_t{1} << 62}, data, 0)});
  EXPECT_EQ(e.code, PD_ERR_INVALID_ARG);
  EXPECT_HAS(e.msg, "input 'x'");
  EXPECT_HAS(e.msg, "more than the limit of 17179869184 bytes per tensor");
}

TEST_F(Limits, InconsistentTensorsAreRefusedNamingTheInput) {
  ASSERT_EQ(create(softmax_model()).msg, "");
  float data[4] = {1, 2, 3, 4};
  struct Case {
    const char* name;
    pd_tensor t;
    const char* want;
  } cases[] = {
      {"rank -1", tensor(PD_DTYPE_FLOAT32, {}, data, 16), "rank -1 is out of range [0, 8]"},
      {"rank 9", tensor(PD_DTYPE_FLOAT32, {}, data, 16), "rank 9 is out of range [0, 8]"},
      {"negative dim", tensor(PD_DTYPE_FLOAT32, {1, -4}, data, 16), "negative dimension -4"},
      {"byte size short", tensor(PD_DTYPE_FLOAT32, {1, 4}, data, 12), "12 bytes of data, its shape [1,4] needs 16"},
      {"null data", tensor(PD_DTYPE_FLOAT32, {1, 4}, nullptr, 16), "data is NULL for 16 bytes"},
      {"batch 0", tensor(PD_DTYPE_FLOAT32, {0, 4}, data, 0), "batch size must be at least 1"},
      {"dtype", tensor(PD_DTYPE_INT64, {1, 2}, data, 16), "expected float, got int64"},
  };
  cases[0].t.rank = -1;
  cases[1].t.rank = 9;
  for (const auto& c : cases) {
    Err e = run({c.t});
    EXPECT_EQ(e.code, PD_ERR_INVALID_ARG) << c.name;
    EXPECT_HAS(e.msg, "input 'x'") << c.name;
    EXPECT_HAS(e.msg, c.want) << c.name;
  }
  // And the good one still runs.
  EXPECT_EQ(run({tensor(PD_DTYPE_FLOAT32, {1, 4}, data, 16)}).msg, "");
}

// A shape computed inside the model from a caller's values: [2^62, 4] floats wrap to 0 bytes.
TEST_F(Limits, ShapeFromValuesIsCheckedNamingTheNode) {
  ASSERT_EQ(create(constant_of_shape_model()).msg, "");
  int64_t shape[2] = {int64_t{1} << 62, 4};
  Err e = run({tensor(PD_DTYPE_INT64, {2}, shape, sizeof shape)});
  EXPECT_EQ(e.code, PD_ERR_INVALID_ARG);
  EXPECT_HAS(e.msg, "ConstantOfShape node 'fill'");
  EXPECT_HAS(e.msg, "output 'y' of shape [4611686018427387904,4]");
  int64_t ok[2] = {2, 3};
  EXPECT_EQ(run({tensor(PD_DTYPE_INT64, {2}, ok, sizeof ok)}).msg, "");
}

// A ~90-byte model declaring a 1 GiB initializer and holding no data fails at once, naming it,
// without allocating (checked in a child process: its peak RSS must not grow by the 1 GiB the
// importer allocated and zeroed before).
TEST_F(Limits, InitializerLargerThanItsDataFailsBeforeAllocating) {
  const std::string m = initializer_model(int64_t{1} << 28, false);
  EXPECT_LT(m.size(), 120u);
  int fds[2];
  ASSERT_EQ(pipe(fds), 0);
  long rss_before_kb = 0;
  {
    std::ifstream st("/proc/self/statm");
    long size = 0, resident = 0;
    st >> size >> resident;
    rss_before_kb = resident * (sysconf(_SC_PAGESIZE) / 1024);
  }
  pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    close(fds[0]);
    pd_engine* e = nullptr;
    Err err = take(pd_engine_create(rt_, m.data(), m.size(), nullptr, &e));
    std::string out = std::to_string(err.code) + "|" + err.msg;
    (void)!write(fds[1], out.data(), out.size());
    _exit(0);
  }
  close(fds[1]);
  std::string got;
  char buf[512];
  for (ssize_t k; (k = read(fds[0], buf, sizeof buf)) > 0;) got.append(buf, k);
  close(fds[0]);
  int status = 0;
  struct rusage ru{};
  ASSERT_EQ(wait4(pid, &status, 0, &ru), pid);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(got.substr(0, 2), std::to_string(PD_ERR_INVALID_ARG) + "|");
  EXPECT_HAS(got, "initializer 'w' has 0 values of data, its shape [268435456] needs 268435456");
  EXPECT_LT(ru.ru_maxrss - rss_before_kb, 256 * 1024) << "the child's peak RSS grew by "
                                                     << (ru.ru_maxrss - rss_before_kb) / 1024 << " MiB";
}

TEST_F(Limits, OpsetNewerThanSupportedIsRefused) {
  onnx::ModelProto m = onnx::ModelProto();
  m.ParseFromString(softmax_model());
  m.mutable_opset_import(0)->set_version(9999);
  Err e = create(m.SerializeAsString());
  EXPECT_EQ(e.code, PD_ERR_UNSUPPORTED);
  EXPECT_HAS(e.msg, "opset 9999 of domain ai.onnx is newer than the newest supported, 21");
  m.mutable_opset_import(0)->set_version(21);
  EXPECT_EQ(create(m.SerializeAsString()).msg, "");
}

TEST_F(Limits, OpsetOfMlDomainAndOurOwnDomainAreChecked) {
  onnx::ModelProto m;
  m.ParseFromString(softmax_model());
  auto* ml = m.add_opset_import();
  ml->set_domain("ai.onnx.ml");
  ml->set_version(99);
  Err e = create(m.SerializeAsString());
  EXPECT_EQ(e.code, PD_ERR_UNSUPPORTED);
  EXPECT_HAS(e.msg, "opset 99 of domain ai.onnx.ml is newer than the newest supported, 5");
  ml->set_domain("pd");
  ml->set_version(1);
  e = create(m.SerializeAsString());
  EXPECT_EQ(e.code, PD_ERR_INVALID_ARG);
  EXPECT_HAS(e.msg, "imports domain 'pd'");
}

// 1 MiB of weights against a 512 KiB limit fails naming the initializer; 4 MiB allows it.
TEST_F(Limits, MemoryLimitCountsInitializers) {
  const std::string m = initializer_model(int64_t{1} << 18, true);
  Err e = create(m, 512 << 10);
  EXPECT_EQ(e.code, PD_ERR_INVALID_ARG);
  EXPECT_HAS(e.msg, "initializer 'w' of shape [262144] needs 1048576 bytes, more than the 524288 bytes left");
  EXPECT_EQ(create(m, 4 << 20).msg, "");
}

// The activations at batch 1 count too: x [B, 2^20] floats, Softmax: 4 MiB out.
TEST_F(Limits, MemoryLimitCountsTheArenaAtBatchOne) {
  onnx::ModelProto m;
  m.ParseFromString(softmax_model());
  auto* x = m.mutable_graph()->mutable_input(0)->mutable_type()->mutable_tensor_type()->mutable_shape();
  x->mutable_dim(1)->set_dim_value(1 << 20);
  Err e = create(m.SerializeAsString(), 1 << 20);
  EXPECT_EQ(e.code, PD_ERR_INVALID_ARG);
  EXPECT_HAS(e.msg, "0 of weights, 4194304 of activations at batch 1), more than the engine's memory limit of 1048576 bytes");
  EXPECT_EQ(create(m.SerializeAsString(), 8 << 20).msg, "");
}

// Folding that would pass the limit stops before allocating: ConstantOfShape([2^26]) = 256 MiB.
TEST_F(Limits, MemoryLimitCountsFoldedConstants) {
  onnx::ModelProto m = model();
  auto* g = m.mutable_graph();
  auto* shape = g->add_initializer();
  shape->set_name("shape");
  shape->set_data_type(onnx::TensorProto::INT64);
  shape->add_dims(1);
  shape->add_int64_data(int64_t{1} << 26);
  auto* n = g->add_node();
  n->set_op_type("ConstantOfShape");
  n->set_name("big");
  n->add_input("shape");
  n->add_output("c");
  auto* add = g->add_node();
  add->set_op_type("Add");
  add->add_input("x");
  add->add_input("c");
  add->add_output("y");
  add_io(g->mutable_input(), "x", onnx::TensorProto::FLOAT, {"1"});
  add_io(g->mutable_output(), "y", onnx::TensorProto::FLOAT, {"67108864"});
  Err e = create(m.SerializeAsString(), 64 << 20);
  EXPECT_EQ(e.code, PD_ERR_INVALID_ARG);
  EXPECT_HAS(e.msg, "ConstantOfShape node 'big': folding it needs 268435456 bytes");
}

// Shape arithmetic on model values cannot overflow: Tile by 2^62 of a [4] tensor.
TEST_F(Limits, TileWhoseOutputOverflowsNamesTheNode) {
  onnx::ModelProto m = model();
  auto* g = m.mutable_graph();
  auto* rep = g->add_initializer();
  rep->set_name("repeats");
  rep->set_data_type(onnx::TensorProto::INT64);
  rep->add_dims(1);
  rep->add_int64_data(int64_t{1} << 62);
  auto* n = g->add_node();
  n->set_op_type("Tile");
  n->set_name("tile");
  n->add_input("x");
  n->add_input("repeats");
  n->add_output("y");
  add_io(g->mutable_input(), "x", onnx::TensorProto::FLOAT, {"4"});
  add_io(g->mutable_output(), "y", onnx::TensorProto::FLOAT, {"n"});
  Err e = create(m.SerializeAsString());
  EXPECT_EQ(e.code, PD_ERR_INVALID_ARG);
  EXPECT_HAS(e.msg, "Tile node 'tile'");
  EXPECT_HAS(e.msg, "larger than a 64-bit count can hold");
}

TEST(LimitsAbi, MaxMemoryOptionNeedsOptions) {
  Err e = take(pd_engine_options_set_max_memory(nullptr, 1));
  EXPECT_EQ(e.code, PD_ERR_INVALID_ARG);
}

}  // namespace
