// Tests of the C ABI: loading, errors that name the problem, signatures, runs.
#include <gtest/gtest.h>
#include <onnx/onnx_pb.h>

#include <cmath>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "policyd.h"

namespace {

std::string slurp(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  EXPECT_TRUE(f) << "cannot read " << path;
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

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
  onnx::ModelProto m;
  m.set_ir_version(8);
  auto* os = m.add_opset_import();
  os->set_domain("");
  os->set_version(17);
  auto* g = m.mutable_graph();
  g->set_name("g");
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

TEST(Abi, DestroyAcceptsNull) {
  pd_runtime_destroy(nullptr);
  pd_engine_destroy(nullptr);
  pd_context_destroy(nullptr);
  pd_error_free(nullptr);
  pd_engine_options_destroy(nullptr);
  pd_runtime_options_destroy(nullptr);
}

}  // namespace
