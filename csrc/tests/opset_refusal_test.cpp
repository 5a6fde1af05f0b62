// What opsets 18–21 bring that policyd refuses, and how: the data types of ONNX 1.14+ (float8
// from opset 19, int4/uint4 from opset 21) wherever a model may carry them — a graph input, an
// initializer, a Constant node, ConstantOfShape's value, a Cast target — fail at load with
// PD_ERR_UNSUPPORTED naming the type and the value or node; ops given a form their opset does
// not have (bool ReduceMax before opset 20) fail with PD_ERR_INVALID_ARG naming the node. The
// forms policyd implements are checked against ONNX Runtime in testdata/onnx-cases (ctest
// onnx_cases).
#include <gtest/gtest.h>
#include <onnx/onnx_pb.h>

#include <cmath>
#include <string>
#include <vector>

#include "policyd.h"
#include "test_util.h"

namespace {

using pd::test::Err;
using pd::test::take;
using Shape = std::vector<int64_t>;

constexpr int kFloat8E4M3FN = 17, kFloat8E5M2 = 19, kUint4 = 21, kInt4 = 22;

class OpsetRefusal : public ::testing::Test {
 protected:
  void SetUp() override {
    pd_runtime_options* ro = nullptr;
    ASSERT_EQ(take(pd_runtime_options_create(&ro)).msg, "");
    ASSERT_EQ(take(pd_runtime_create(ro, &rt_)).msg, "");
    pd_runtime_options_destroy(ro);
  }
  void TearDown() override { pd_runtime_destroy(rt_); }

  Err load(const onnx::ModelProto& m) {
    const std::string bytes = m.SerializeAsString();
    pd_engine_options* eo = nullptr;
    take(pd_engine_options_create(&eo));
    take(pd_engine_options_set_backend(eo, "cpu"));
    pd_engine* e = nullptr;
    Err r = take(pd_engine_create(rt_, bytes.data(), bytes.size(), eo, &e));
    pd_engine_options_destroy(eo);
    pd_engine_destroy(e);
    return r;
  }

  pd_runtime* rt_ = nullptr;
};

void add_io(onnx::ValueInfoProto* v, const std::string& name, int elem, std::initializer_list<int64_t> dims) {
  v->set_name(name);
  auto* tt = v->mutable_type()->mutable_tensor_type();
  tt->set_elem_type(elem);
  auto* sh = tt->mutable_shape();
  for (int64_t d : dims) sh->add_dim()->set_dim_value(d);
}

onnx::NodeProto* add_node(onnx::GraphProto* g, const std::string& op, const std::string& name,
                          std::initializer_list<const char*> in, std::initializer_list<const char*> out) {
  auto* n = g->add_node();
  n->set_op_type(op);
  n->set_name(name);
  for (const char* i : in) n->add_input(i);
  for (const char* o : out) n->add_output(o);
  return n;
}

onnx::TensorProto raw_tensor(const std::string& name, int elem, int64_t n, size_t bytes) {
  onnx::TensorProto t;
  t.set_name(name);
  t.set_data_type(elem);
  t.add_dims(n);
  t.set_raw_data(std::string(bytes, '\0'));
  return t;
}

TEST_F(OpsetRefusal, Float8GraphInput) {
  onnx::ModelProto m = pd::test::empty_model(19);
  auto* g = m.mutable_graph();
  add_io(g->add_input(), "x", kFloat8E4M3FN, {4});
  add_node(g, "Identity", "id", {"x"}, {"y"});
  add_io(g->add_output(), "y", kFloat8E4M3FN, {4});
  Err e = load(m);
  EXPECT_EQ(e.code, PD_ERR_UNSUPPORTED);
  EXPECT_NE(e.msg.find("graph input 'x' has data type float8e4m3fn"), std::string::npos) << e.msg;
}

TEST_F(OpsetRefusal, CastToFloat8NamesNodeAndType) {
  for (int to : {kFloat8E4M3FN, kFloat8E5M2, kInt4}) {
    onnx::ModelProto m = pd::test::empty_model(21);
    auto* g = m.mutable_graph();
    add_io(g->add_input(), "x", onnx::TensorProto::FLOAT, {4});
    auto* n = add_node(g, "Cast", "to_small", {"x"}, {"y"});
    auto* a = n->add_attribute();
    a->set_name("to");
    a->set_type(onnx::AttributeProto::INT);
    a->set_i(to);
    auto* s = n->add_attribute();
    s->set_name("saturate");
    s->set_type(onnx::AttributeProto::INT);
    s->set_i(0);
    add_io(g->add_output(), "y", to, {4});
    Err e = load(m);
    EXPECT_EQ(e.code, PD_ERR_UNSUPPORTED) << e.msg;
    EXPECT_NE(e.msg.find("to_small"), std::string::npos) << e.msg;
    const char* name = to == kFloat8E4M3FN ? "float8e4m3fn" : to == kFloat8E5M2 ? "float8e5m2" : "int4";
    EXPECT_NE(e.msg.find(name), std::string::npos) << e.msg;
  }
}

TEST_F(OpsetRefusal, Int4Initializer) {
  onnx::ModelProto m = pd::test::empty_model(21);
  auto* g = m.mutable_graph();
  *g->add_initializer() = raw_tensor("w4", kUint4, 4, 2);
  add_node(g, "Identity", "id", {"w4"}, {"y"});
  add_io(g->add_output(), "y", kUint4, {4});
  Err e = load(m);
  EXPECT_EQ(e.code, PD_ERR_UNSUPPORTED);
  EXPECT_NE(e.msg.find("'w4' has data type uint4"), std::string::npos) << e.msg;
}

TEST_F(OpsetRefusal, Float8ConstantAndConstantOfShape) {
  {
    onnx::ModelProto m = pd::test::empty_model(19);
    auto* g = m.mutable_graph();
    auto* n = add_node(g, "Constant", "k8", {}, {"k"});
    auto* a = n->add_attribute();
    a->set_name("value");
    a->set_type(onnx::AttributeProto::TENSOR);
    *a->mutable_t() = raw_tensor("k", kFloat8E5M2, 3, 3);
    add_node(g, "Identity", "id", {"k"}, {"y"});
    add_io(g->add_output(), "y", kFloat8E5M2, {3});
    Err e = load(m);
    EXPECT_EQ(e.code, PD_ERR_UNSUPPORTED);
    EXPECT_NE(e.msg.find("float8e5m2"), std::string::npos) << e.msg;
  }
  {
    onnx::ModelProto m = pd::test::empty_model(21);
    auto* g = m.mutable_graph();
    add_io(g->add_input(), "shape", onnx::TensorProto::INT64, {2});
    auto* n = add_node(g, "ConstantOfShape", "fill4", {"shape"}, {"y"});
    auto* a = n->add_attribute();
    a->set_name("value");
    a->set_type(onnx::AttributeProto::TENSOR);
    *a->mutable_t() = raw_tensor("v", kInt4, 1, 1);
    add_io(g->add_output(), "y", kInt4, {2, 2});
    Err e = load(m);
    EXPECT_EQ(e.code, PD_ERR_UNSUPPORTED);
    EXPECT_NE(e.msg.find("int4"), std::string::npos) << e.msg;
  }
}

TEST_F(OpsetRefusal, BoolReduceMaxBeforeOpset20) {
  for (int opset : {18, 19}) {
    onnx::ModelProto m = pd::test::empty_model(opset);
    auto* g = m.mutable_graph();
    add_io(g->add_input(), "x", onnx::TensorProto::BOOL, {2, 3});
    add_node(g, "ReduceMax", "any", {"x"}, {"y"});
    add_io(g->add_output(), "y", onnx::TensorProto::BOOL, {1, 1});
    Err e = load(m);
    EXPECT_EQ(e.code, PD_ERR_INVALID_ARG) << e.msg;
    EXPECT_NE(e.msg.find("'any'"), std::string::npos) << e.msg;
    EXPECT_NE(e.msg.find("bool input needs opset 20"), std::string::npos) << e.msg;
  }
  // ReduceSum never takes bool.
  onnx::ModelProto m = pd::test::empty_model(21);
  auto* g = m.mutable_graph();
  add_io(g->add_input(), "x", onnx::TensorProto::BOOL, {2, 3});
  add_node(g, "ReduceSum", "count", {"x"}, {"y"});
  add_io(g->add_output(), "y", onnx::TensorProto::BOOL, {1, 1});
  Err e = load(m);
  EXPECT_EQ(e.code, PD_ERR_INVALID_ARG) << e.msg;
  EXPECT_NE(e.msg.find("'count'"), std::string::npos) << e.msg;
}

onnx::TensorProto float_tensor(const std::string& name, std::initializer_list<float> v) {
  onnx::TensorProto t;
  t.set_name(name);
  t.set_data_type(onnx::TensorProto::FLOAT);
  t.add_dims(static_cast<int64_t>(v.size()));
  for (float x : v) t.add_float_data(x);
  return t;
}

// A one-node model over x [1, 1, 4, 4]; `extra` initializers named by the node's inputs.
onnx::ModelProto one_node(int opset, const std::string& op, std::initializer_list<const char*> in,
                          std::initializer_list<onnx::TensorProto> extra, Shape dims = {1, 1, 4, 4}) {
  onnx::ModelProto m = pd::test::empty_model(opset);
  auto* g = m.mutable_graph();
  auto* v = g->add_input();
  v->set_name("x");
  auto* tt = v->mutable_type()->mutable_tensor_type();
  tt->set_elem_type(onnx::TensorProto::FLOAT);
  for (int64_t d : dims) tt->mutable_shape()->add_dim()->set_dim_value(d);
  for (const auto& t : extra) *g->add_initializer() = t;
  add_node(g, op, "the_node", in, {"y"});
  auto* y = g->add_output();
  y->set_name("y");
  y->mutable_type()->mutable_tensor_type()->set_elem_type(onnx::TensorProto::FLOAT);
  return m;
}

void set_attr(onnx::ModelProto* m, const std::string& name, const std::string& v) {
  auto* a = m->mutable_graph()->mutable_node(0)->add_attribute();
  a->set_name(name);
  a->set_type(onnx::AttributeProto::STRING);
  a->set_s(v);
}
void set_attr(onnx::ModelProto* m, const std::string& name, int64_t v) {
  auto* a = m->mutable_graph()->mutable_node(0)->add_attribute();
  a->set_name(name);
  a->set_type(onnx::AttributeProto::INT);
  a->set_i(v);
}

// Malformed uses of the forms of 18–21 policyd implements fail naming the node, never crash.
TEST_F(OpsetRefusal, MalformedNewForms) {
  struct C {
    const char* what;
    onnx::ModelProto m;
    pd_error_code code;
    const char* msg;
  };
  std::vector<C> cs;
  cs.push_back({"infinite scale", one_node(19, "Resize", {"x", "", "s"}, {float_tensor("s", {1, 1, INFINITY, 1})}),
                PD_ERR_INVALID_ARG, "scales must be positive and finite"});
  cs.push_back({"huge scale", one_node(19, "Resize", {"x", "", "s"}, {float_tensor("s", {1, 1, 1e30f, 1})}),
                PD_ERR_INVALID_ARG, "gives output dimension"});
  cs.push_back({"no scales nor sizes", one_node(19, "Resize", {"x"}, {}), PD_ERR_INVALID_ARG,
                "exactly one of scales and sizes"});
  cs.push_back({"huge intermediate",
                one_node(19, "Resize", {"x", "", "s"}, {float_tensor("s", {1, 1, 4e6f, 2.5e-6f})}, {1, 1, 4, 400000}),
                PD_ERR_UNSUPPORTED, "intermediate"});
  cs.push_back({"Resize-10", one_node(10, "Resize", {"x", "s"}, {float_tensor("s", {1, 1, 2, 2})}),
                PD_ERR_UNSUPPORTED, "before opset 11"});
  {
    onnx::ModelProto m = one_node(18, "Resize", {"x", "", "s"}, {float_tensor("s", {1, 1, 2, 2})});
    set_attr(&m, "coordinate_transformation_mode", "half_pixel_symmetric");
    cs.push_back({"half_pixel_symmetric at 18", m, PD_ERR_INVALID_ARG, "needs opset 19"});
  }
  {
    onnx::ModelProto m = one_node(20, "Gelu", {"x"}, {});
    set_attr(&m, "approximate", "fast");
    cs.push_back({"Gelu approximate", m, PD_ERR_INVALID_ARG, "approximate must be 'none' or 'tanh'"});
  }
  cs.push_back({"Gelu at 19", one_node(19, "Gelu", {"x"}, {}), PD_ERR_INVALID_ARG, "Gelu needs opset 20"});
  {
    // Opset 21 scales per channel: a per-group scale is the old form.
    onnx::ModelProto m = one_node(21, "GroupNormalization", {"x", "s", "b"},
                                  {float_tensor("s", {1, 1}), float_tensor("b", {0, 0})}, {1, 4, 2, 2});
    set_attr(&m, "num_groups", int64_t{2});
    cs.push_back({"GroupNormalization-21 per-group scale", m, PD_ERR_INVALID_ARG, "scale must be [4] at opset 21"});
  }
  {
    onnx::ModelProto m = one_node(18, "GroupNormalization", {"x", "s", "b"},
                                  {float_tensor("s", {1, 1, 1}), float_tensor("b", {0, 0, 0})}, {1, 4, 2, 2});
    set_attr(&m, "num_groups", int64_t{3});
    cs.push_back({"GroupNormalization groups", m, PD_ERR_INVALID_ARG, "does not divide the 4 channels"});
  }
  for (const auto& c : cs) {
    Err e = load(c.m);
    EXPECT_EQ(e.code, c.code) << c.what << ": " << e.msg;
    EXPECT_NE(e.msg.find("'the_node'"), std::string::npos) << c.what << ": " << e.msg;
    EXPECT_NE(e.msg.find(c.msg), std::string::npos) << c.what << ": " << e.msg;
  }
}

TEST_F(OpsetRefusal, NewerOpsetThan21) {
  onnx::ModelProto m = pd::test::empty_model(22);
  auto* g = m.mutable_graph();
  add_io(g->add_input(), "x", onnx::TensorProto::FLOAT, {2});
  add_node(g, "Relu", "r", {"x"}, {"y"});
  add_io(g->add_output(), "y", onnx::TensorProto::FLOAT, {2});
  Err e = load(m);
  EXPECT_EQ(e.code, PD_ERR_UNSUPPORTED);
  EXPECT_NE(e.msg.find("opset 22"), std::string::npos) << e.msg;
}

}  // namespace
