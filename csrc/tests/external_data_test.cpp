// ONNX external data (issue 15): tensors whose bytes live in a sidecar file ("model.onnx.data"),
// handed to the engine as buffers through pd_engine_options_add_external. The models are built
// here with the ONNX protobuf API; the external ones move initializers into buffers at chosen
// offsets and must answer exactly as the self-contained model does.
#include <gtest/gtest.h>
#include <onnx/onnx_pb.h>

#include <cstring>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "error.h"
#include "onnx_import.h"
#include "policyd.h"
#include "test_util.h"

namespace {

using pd::test::Err;
using pd::test::take;

#define EXPECT_HAS(msg, part) EXPECT_NE((msg).find(part), std::string::npos) << (msg)

void add_io(google::protobuf::RepeatedPtrField<onnx::ValueInfoProto>* list, const std::string& name,
            std::vector<int64_t> dims) {
  auto* v = list->Add();
  v->set_name(name);
  auto* tt = v->mutable_type()->mutable_tensor_type();
  tt->set_elem_type(onnx::TensorProto::FLOAT);
  for (int64_t d : dims) {
    if (d < 0) tt->mutable_shape()->add_dim()->set_dim_param("B");
    else tt->mutable_shape()->add_dim()->set_dim_value(d);
  }
}

const std::vector<float> kW = {0.5f, -1.0f, 2.0f, 0.25f, -0.75f, 1.5f};  // [3, 2]
const std::vector<float> kB = {0.125f, -3.0f};                          // [2]

std::string bytes_of(const std::vector<float>& v) {
  return std::string(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(float));
}

// y = MatMul(x, W) + b with x: [B, 3]; W and b initializers with their data inline.
onnx::ModelProto affine_model() {
  onnx::ModelProto m = pd::test::empty_model();
  auto* g = m.mutable_graph();
  auto* w = g->add_initializer();
  w->set_name("W");
  w->set_data_type(onnx::TensorProto::FLOAT);
  w->add_dims(3);
  w->add_dims(2);
  w->set_raw_data(bytes_of(kW));
  auto* b = g->add_initializer();
  b->set_name("b");
  b->set_data_type(onnx::TensorProto::FLOAT);
  b->add_dims(2);
  b->set_raw_data(bytes_of(kB));
  auto* mm = g->add_node();
  mm->set_op_type("MatMul");
  mm->set_name("mm");
  mm->add_input("x");
  mm->add_input("W");
  mm->add_output("xw");
  auto* add = g->add_node();
  add->set_op_type("Add");
  add->set_name("add");
  add->add_input("xw");
  add->add_input("b");
  add->add_output("y");
  add_io(g->mutable_input(), "x", {-1, 3});
  add_io(g->mutable_output(), "y", {-1, 2});
  return m;
}

onnx::TensorProto* initializer(onnx::ModelProto& m, const std::string& name) {
  for (auto& t : *m.mutable_graph()->mutable_initializer())
    if (t.name() == name) return &t;
  ADD_FAILURE() << "no initializer " << name;
  return nullptr;
}

// Moves initializer `name` out of the model: its bytes go to (*file) at `offset` (the file grows,
// zero-padded) and its record names `location`; offset/length keys as given ("" leaves one out).
void externalize(onnx::ModelProto& m, const std::string& name, std::string* file, size_t offset,
                 const std::string& location, const std::string& offset_key, const std::string& length_key) {
  onnx::TensorProto* t = initializer(m, name);
  const std::string data = t->raw_data();
  if (file->size() < offset + data.size()) file->resize(offset + data.size(), '\0');
  file->replace(offset, data.size(), data);
  t->clear_raw_data();
  t->set_data_location(onnx::TensorProto::EXTERNAL);
  auto put = [&](const std::string& k, const std::string& v) {
    auto* e = t->add_external_data();
    e->set_key(k);
    e->set_value(v);
  };
  put("location", location);
  if (!offset_key.empty()) put("offset", offset_key);
  if (!length_key.empty()) put("length", length_key);
}

void externalize(onnx::ModelProto& m, const std::string& name, std::string* file, size_t offset,
                 const std::string& location) {
  externalize(m, name, file, offset, location, std::to_string(offset),
              std::to_string(initializer(m, name)->raw_data().size()));
}

class ExternalData : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_EQ(take(pd_runtime_create(nullptr, &rt_)).msg, ""); }
  void TearDown() override {
    pd_engine_destroy(engine_);
    pd_runtime_destroy(rt_);
  }
  Err create(const onnx::ModelProto& m, const std::map<std::string, std::string>& files, uint64_t max_memory = 0) {
    pd_engine_destroy(engine_);
    engine_ = nullptr;
    const std::string bytes = m.SerializeAsString();
    pd_engine_options* o = nullptr;
    EXPECT_EQ(take(pd_engine_options_create(&o)).msg, "");
    for (const auto& [name, data] : files) {
      EXPECT_EQ(take(pd_engine_options_add_external(o, name.c_str(), data.data(), data.size())).msg, "");
    }
    if (max_memory) {
      EXPECT_EQ(take(pd_engine_options_set_max_memory(o, max_memory)).msg, "");
    }
    Err e = take(pd_engine_create(rt_, bytes.data(), bytes.size(), o, &engine_));
    pd_engine_options_destroy(o);
    return e;
  }
  std::vector<float> run(const std::vector<float>& x) {
    pd_context* ctx = nullptr;
    EXPECT_EQ(take(pd_context_create(engine_, &ctx)).msg, "");
    if (!ctx) return {};
    pd_tensor in{};
    in.dtype = PD_DTYPE_FLOAT32;
    in.rank = 2;
    in.dims[0] = static_cast<int64_t>(x.size() / 3);
    in.dims[1] = 3;
    in.data = const_cast<float*>(x.data());
    in.byte_size = x.size() * sizeof(float);
    pd_tensor out{};
    std::vector<float> r;
    Err e = take(pd_context_run(ctx, &in, 1, &out, 1));
    EXPECT_EQ(e.msg, "");
    if (e.msg.empty()) {
      const float* p = static_cast<const float*>(out.data);
      r.assign(p, p + out.byte_size / sizeof(float));
    }
    pd_context_destroy(ctx);
    return r;
  }
  pd_runtime* rt_ = nullptr;
  pd_engine* engine_ = nullptr;
};

const std::vector<float> kX = {1, 2, 3, -1, 0.5f, 4};

TEST_F(ExternalData, AnswersAsTheSelfContainedModel) {
  ASSERT_EQ(create(affine_model(), {}).msg, "");
  const std::vector<float> want = run(kX);
  ASSERT_EQ(want.size(), 4u);

  // W at offset 16 and b at 4096 of one file, as PyTorch aligns them; b's length key left out
  // (the rest of the file).
  onnx::ModelProto m = affine_model();
  std::string data;
  externalize(m, "W", &data, 16, "model.onnx.data");
  externalize(m, "b", &data, 4096, "model.onnx.data", "4096", "");
  ASSERT_EQ(create(m, {{"model.onnx.data", data}}).msg, "");
  EXPECT_EQ(run(kX), want);

  // Two files, one in a folder named with "./", the other given with a "./" name.
  onnx::ModelProto m2 = affine_model();
  std::string w, b;
  externalize(m2, "W", &w, 0, "./weights/W.bin");
  externalize(m2, "b", &b, 8, "b.bin", "8", "");
  ASSERT_EQ(create(m2, {{"weights/W.bin", w}, {"./b.bin", b}}).msg, "");
  EXPECT_EQ(run(kX), want);
}

TEST_F(ExternalData, CountsAgainstTheMemoryLimit) {
  onnx::ModelProto m = affine_model();
  std::string data;
  externalize(m, "W", &data, 0, "model.onnx.data");
  Err e = create(m, {{"model.onnx.data", data}}, 8);
  EXPECT_EQ(e.code, PD_ERR_INVALID_ARG);
  EXPECT_HAS(e.msg, "initializer 'W'");
  EXPECT_HAS(e.msg, "memory limit");
}

struct Refusal {
  const char* what;
  std::string location, offset, length;
  std::map<std::string, std::string> files;  // "" value: the real file's bytes
  std::vector<std::string> says;
};

TEST_F(ExternalData, RefusesBadRecordsNamingTensorAndFile) {
  const std::vector<Refusal> cases = {
      {"missing file", "model.onnx.data", "0", "24", {}, {"initializer 'W'", "'model.onnx.data'", "not provided"}},
      {"other file only", "model.onnx.data", "0", "24", {{"other.data", ""}}, {"'model.onnx.data'", "given: other.data"}},
      {"absolute path", "/etc/model.onnx.data", "0", "24", {{"model.onnx.data", ""}},
       {"initializer 'W'", "'/etc/model.onnx.data'", "absolute"}},
      {"dot-dot", "../model.onnx.data", "0", "24", {{"model.onnx.data", ""}},
       {"initializer 'W'", "'../model.onnx.data'", "'..'"}},
      {"dot-dot inside", "w/../../model.onnx.data", "0", "24", {{"model.onnx.data", ""}}, {"'..'"}},
      {"offset past the end", "model.onnx.data", "1000", "24", {{"model.onnx.data", ""}},
       {"initializer 'W'", "'model.onnx.data'", "offset 1000 is past the end", "(32 bytes)"}},
      {"length past the end", "model.onnx.data", "16", "24", {{"model.onnx.data", ""}},
       {"initializer 'W'", "'model.onnx.data'", "offset 16 + length 24 is past the end"}},
      {"huge length", "model.onnx.data", "8", "18446744073709551615", {{"model.onnx.data", ""}},
       {"past the end"}},
      {"size mismatch", "model.onnx.data", "0", "8", {{"model.onnx.data", ""}},
       {"initializer 'W'", "has 8 bytes in external file 'model.onnx.data'", "[3,2]", "needs 24"}},
      {"rest of file too long", "model.onnx.data", "0", "", {{"model.onnx.data", ""}}, {"has 32 bytes", "needs 24"}},
      {"bad offset", "model.onnx.data", "-4", "24", {{"model.onnx.data", ""}}, {"offset '-4'"}},
      {"no location", "", "0", "24", {{"model.onnx.data", ""}}, {"initializer 'W'", "is empty"}},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.what);
    onnx::ModelProto m = affine_model();
    std::string data;
    externalize(m, "W", &data, 0, c.location, c.offset, c.length);
    data.resize(32, '\0');  // 24 bytes of W and 8 more
    std::map<std::string, std::string> files;
    for (const auto& [n, v] : c.files) files[n] = v.empty() ? data : v;
    Err e = create(m, files);
    EXPECT_EQ(e.code, PD_ERR_INVALID_ARG);
    for (const auto& s : c.says) EXPECT_HAS(e.msg, s);
  }
}

TEST_F(ExternalData, RefusesUnknownKeysAndInconsistentRecords) {
  onnx::ModelProto m = affine_model();
  std::string data;
  externalize(m, "W", &data, 0, "model.onnx.data");
  auto* k = initializer(m, "W")->add_external_data();
  k->set_key("basepath");
  k->set_value("/tmp");
  Err e = create(m, {{"model.onnx.data", data}});
  EXPECT_EQ(e.code, PD_ERR_INVALID_ARG);
  EXPECT_HAS(e.msg, "unknown external data key 'basepath'");

  onnx::ModelProto m2 = affine_model();
  auto* kv = initializer(m2, "W")->add_external_data();  // keys, but DEFAULT location and raw data
  kv->set_key("location");
  kv->set_value("model.onnx.data");
  e = create(m2, {{"model.onnx.data", data}});
  EXPECT_EQ(e.code, PD_ERR_INVALID_ARG);
  EXPECT_HAS(e.msg, "data_location is not EXTERNAL");
}

TEST_F(ExternalData, AddExternalRefusesBadNames) {
  pd_engine_options* o = nullptr;
  ASSERT_EQ(take(pd_engine_options_create(&o)).msg, "");
  const char d[4] = {0};
  for (const char* bad : {"", "/abs.data", "../up.data", "a/../../up.data", "C:\\w.data", "w\\x.data", "./"}) {
    SCOPED_TRACE(bad);
    Err e = take(pd_engine_options_add_external(o, bad, d, sizeof d));
    EXPECT_EQ(e.code, PD_ERR_INVALID_ARG);
  }
  EXPECT_EQ(take(pd_engine_options_add_external(o, "x.data", nullptr, 4)).code, PD_ERR_INVALID_ARG);
  EXPECT_EQ(take(pd_engine_options_add_external(o, "empty.data", nullptr, 0)).msg, "");
  EXPECT_EQ(take(pd_engine_options_add_external(nullptr, "x.data", d, 4)).code, PD_ERR_INVALID_ARG);
  pd_engine_options_destroy(o);
}

// What the tensorrt backend's parser gets: the model with the external bytes back in raw_data,
// equal to the self-contained model's initializers; the same checks refuse a bad record.
TEST(ExternalDataInline, RestoresRawData) {
  onnx::ModelProto m = affine_model();
  std::string data;
  externalize(m, "W", &data, 16, "model.onnx.data");
  externalize(m, "b", &data, 64, "./model.onnx.data");
  const std::string bytes = m.SerializeAsString();
  pd::ExternalFiles files{{"model.onnx.data", pd::ExternalFile{data.data(), data.size()}}};
  onnx::ModelProto back;
  ASSERT_TRUE(back.ParseFromString(pd::inline_external_data(bytes.data(), bytes.size(), files)));
  onnx::ModelProto want = affine_model();
  for (int i = 0; i < 2; ++i) {
    const auto& t = back.graph().initializer(i);
    EXPECT_EQ(t.data_location(), onnx::TensorProto::DEFAULT);
    EXPECT_EQ(t.external_data_size(), 0);
    EXPECT_EQ(t.raw_data(), want.graph().initializer(i).raw_data()) << t.name();
  }
  pd::ExternalFiles short_file{{"model.onnx.data", pd::ExternalFile{data.data(), 40}}};
  try {
    pd::inline_external_data(bytes.data(), bytes.size(), short_file);
    ADD_FAILURE() << "a short file was inlined";
  } catch (const pd::Error& e) {
    EXPECT_EQ(e.code(), PD_ERR_INVALID_ARG);
    EXPECT_HAS(std::string(e.what()), "initializer 'b': offset 64 is past the end of external file 'model.onnx.data'");
  }
}

// An engine cache binds to the external data too: on the cuda backend over the CPU emulation
// of CUDA, a cache built with one file's weights is refused with other weights in the file.
TEST(ExternalDataCache, BindsTheWeights) {
  pd_runtime_options* ro = nullptr;
  ASSERT_EQ(take(pd_runtime_options_create(&ro)).msg, "");
  ASSERT_EQ(take(pd_runtime_options_set_backend_dir(ro, PD_FAKE_CUDA_DIR)).msg, "");
  pd_runtime* rt = nullptr;
  ASSERT_EQ(take(pd_runtime_create(ro, &rt)).msg, "");
  pd_runtime_options_destroy(ro);
  onnx::ModelProto m = affine_model();
  std::string data;
  externalize(m, "W", &data, 0, "model.onnx.data");
  const std::string bytes = m.SerializeAsString();
  auto build = [&](const std::string& file, const std::string& cache, pd_engine** e) {
    pd_engine_options* o = nullptr;
    EXPECT_EQ(take(pd_engine_options_create(&o)).msg, "");
    EXPECT_EQ(take(pd_engine_options_set_backend(o, "cuda")).msg, "");
    EXPECT_EQ(take(pd_engine_options_add_external(o, "model.onnx.data", file.data(), file.size())).msg, "");
    if (!cache.empty()) {
      EXPECT_EQ(take(pd_engine_options_set_cache(o, cache.data(), cache.size())).msg, "");
    }
    Err r = take(pd_engine_create(rt, bytes.data(), bytes.size(), o, e));
    pd_engine_options_destroy(o);
    return r;
  };
  pd_engine* e = nullptr;
  Err r = build(data, "", &e);
  if (r.code == PD_ERR_UNAVAILABLE || r.code == PD_ERR_NOT_FOUND) {
    pd_runtime_destroy(rt);
    GTEST_SKIP() << "no fake cuda backend: " << r.msg;
  }
  ASSERT_EQ(r.msg, "");
  void* blob = nullptr;
  size_t size = 0;
  ASSERT_EQ(take(pd_engine_serialize(e, &blob, &size)).msg, "");
  const std::string cache(static_cast<const char*>(blob), size);
  pd_engine_serialized_free(blob);
  pd_engine_destroy(e);
  e = nullptr;
  ASSERT_EQ(build(data, cache, &e).msg, "");
  pd_engine_destroy(e);
  e = nullptr;
  std::string other = data;
  other[0] ^= 1;
  r = build(other, cache, &e);
  EXPECT_EQ(r.code, PD_ERR_INVALID_ARG);
  EXPECT_HAS(r.msg, "model_fingerprint");
  pd_engine_destroy(e);
  pd_runtime_destroy(rt);
}

}  // namespace
