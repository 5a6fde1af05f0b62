// Engine caches: the envelope that binds a backend's serialized engine to the model, backend,
// version, target and options (csrc/core/engine_cache.h), and the C ABI around it.
#include <gtest/gtest.h>

#include <fstream>
#include <functional>
#include <sstream>
#include <string>

#include "engine_cache.h"
#include "error.h"
#include "policyd.h"
#include "test_util.h"

namespace {

using pd::test::slurp;

pd::CacheBinding binding() {
  pd::CacheBinding b;
  b.backend = "cuda";
  b.backend_version = "policyd-cuda-0.1.0 cudart-11080";
  b.target = "sm_90";
  b.model_fingerprint = pd::fnv1a64_tag("model", 5);
  b.model_digest = "sha256:abc";
  b.options = "";
  return b;
}

std::string error_of(const std::function<void()>& f, pd_error_code* code = nullptr) {
  try {
    f();
  } catch (const pd::Error& e) {
    if (code) *code = e.code();
    return e.what();
  }
  return "";
}

TEST(EngineCache, RoundTripsBindingAndPayload) {
  std::string payload("\0binary\xff payload", 16);
  std::string blob = pd::encode_engine_cache(binding(), payload);
  std::string got_payload;
  pd::CacheBinding got = pd::decode_engine_cache(blob.data(), blob.size(), &got_payload);
  EXPECT_EQ(got_payload, payload);
  EXPECT_EQ(got.backend, "cuda");
  EXPECT_EQ(got.target, "sm_90");
  EXPECT_EQ(got.model_digest, "sha256:abc");
  EXPECT_EQ(error_of([&] { pd::check_engine_cache(binding(), got); }), "");
}

TEST(EngineCache, FingerprintIsFnv1a64) {
  // FNV-1a 64 of "" is the offset basis; of "a" a published test vector.
  EXPECT_EQ(pd::fnv1a64_tag("", 0), "fnv1a64:cbf29ce484222325");
  EXPECT_EQ(pd::fnv1a64_tag("a", 1), "fnv1a64:af63dc4c8601ec8c");
}

TEST(EngineCache, EveryMismatchedFieldIsRefusedByName) {
  const std::string blob = pd::encode_engine_cache(binding(), "x");
  const pd::CacheBinding got = pd::decode_engine_cache(blob.data(), blob.size(), nullptr);
  struct Case {
    const char* field;
    std::string pd::CacheBinding::*member;
  } cases[] = {{"backend", &pd::CacheBinding::backend},
               {"backend_version", &pd::CacheBinding::backend_version},
               {"target", &pd::CacheBinding::target},
               {"model_fingerprint", &pd::CacheBinding::model_fingerprint},
               {"model_digest", &pd::CacheBinding::model_digest},
               {"options", &pd::CacheBinding::options}};
  for (const auto& c : cases) {
    pd::CacheBinding want = binding();
    want.*c.member = "other";
    pd_error_code code{};
    std::string msg = error_of([&] { pd::check_engine_cache(want, got); }, &code);
    EXPECT_EQ(code, PD_ERR_INVALID_ARG) << c.field;
    EXPECT_NE(msg.find(std::string(c.field) + " is '"), std::string::npos) << msg;
    EXPECT_NE(msg.find("'other' here"), std::string::npos) << msg;
    EXPECT_NE(msg.find("rebuild engines"), std::string::npos) << msg;
  }
}

TEST(EngineCache, CorruptOrForeignBytesAreRefused) {
  const std::string blob = pd::encode_engine_cache(binding(), "payload bytes");
  auto decode = [](const std::string& b) {
    return error_of([&] { pd::decode_engine_cache(b.data(), b.size(), nullptr); });
  };
  EXPECT_NE(decode("not a cache at all").find("not an engine cache"), std::string::npos);
  EXPECT_NE(decode(blob.substr(0, blob.size() - 1)).find("payload of"), std::string::npos);
  std::string flipped = blob;
  flipped.back() ^= 1;
  EXPECT_NE(decode(flipped).find("corrupt"), std::string::npos);
  std::string newer = blob;
  newer[8] = 9;  // format version
  EXPECT_NE(decode(newer).find("format 9"), std::string::npos);
  EXPECT_EQ(decode(blob), "");
}

std::string take(pd_error* e, pd_error_code* code = nullptr) {
  if (!e) return "";
  if (code) *code = pd_error_get_code(e);
  std::string m = pd_error_get_message(e);
  pd_error_free(e);
  return m;
}

// Through the C ABI on the cpu backend: no serialization, and a cache for another backend,
// target or model is refused before anything is built.
class CacheAbi : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_EQ(take(pd_runtime_create(nullptr, &rt_)), "");
    model_ = slurp(std::string(PD_SHARED_DIR) + "/peers/models/mlp-small.onnx");
    ASSERT_FALSE(model_.empty());
    ASSERT_EQ(take(pd_engine_options_create(&opts_)), "");
  }
  void TearDown() override {
    pd_engine_options_destroy(opts_);
    pd_runtime_destroy(rt_);
  }
  pd_runtime* rt_ = nullptr;
  pd_engine_options* opts_ = nullptr;
  std::string model_;
};

TEST_F(CacheAbi, CpuEnginesDoNotSerialize) {
  pd_engine* e = nullptr;
  ASSERT_EQ(take(pd_engine_create(rt_, model_.data(), model_.size(), opts_, &e)), "");
  void* data = reinterpret_cast<void*>(1);
  size_t size = 7;
  pd_error_code code{};
  std::string msg = take(pd_engine_serialize(e, &data, &size), &code);
  EXPECT_EQ(code, PD_ERR_UNSUPPORTED);
  EXPECT_NE(msg.find("does not serialize"), std::string::npos) << msg;
  EXPECT_EQ(data, nullptr);
  EXPECT_EQ(size, 0u);
  pd_engine_destroy(e);
}

TEST_F(CacheAbi, MismatchedCacheIsRefusedAtCreate) {
  pd::CacheBinding b;
  b.backend = "cpu";
  pd_backend_info bi{};
  for (int32_t i = 0; i < pd_runtime_backend_count(rt_); ++i) {
    ASSERT_EQ(take(pd_runtime_backend_info(rt_, i, &bi)), "");
    if (std::string(bi.name) == "cpu") b.backend_version = bi.version;
  }
  b.model_fingerprint = pd::fnv1a64_tag("another model", 13);
  const std::string blob = pd::encode_engine_cache(b, "");
  ASSERT_EQ(take(pd_engine_options_set_cache(opts_, blob.data(), blob.size())), "");
  pd_engine* e = nullptr;
  pd_error_code code{};
  std::string msg = take(pd_engine_create(rt_, model_.data(), model_.size(), opts_, &e), &code);
  EXPECT_EQ(code, PD_ERR_INVALID_ARG);
  EXPECT_NE(msg.find("model_fingerprint"), std::string::npos) << msg;
  EXPECT_EQ(e, nullptr);

  // Bound to this model, it reaches the backend, which has no caches.
  b.model_fingerprint = pd::fnv1a64_tag(model_.data(), model_.size());
  const std::string ok = pd::encode_engine_cache(b, "");
  ASSERT_EQ(take(pd_engine_options_set_cache(opts_, ok.data(), ok.size())), "");
  ASSERT_EQ(take(pd_engine_create(rt_, model_.data(), model_.size(), opts_, &e)), "");
  pd_engine_destroy(e);
}

TEST_F(CacheAbi, OptionsCheckTheirArguments) {
  pd_error_code code{};
  EXPECT_NE(take(pd_engine_options_set_cache(opts_, "junk", 4), &code).find("not an engine cache"), std::string::npos);
  EXPECT_EQ(code, PD_ERR_INVALID_ARG);
  EXPECT_EQ(take(pd_engine_options_set_cache(opts_, nullptr, 0)), "");
  EXPECT_NE(take(pd_engine_options_set_device(opts_, -1)).find("device must be >= 0"), std::string::npos);
  EXPECT_NE(take(pd_engine_options_set_model_digest(opts_, "sha256:a b")).find("printable"), std::string::npos);
  EXPECT_EQ(take(pd_engine_options_set_model_digest(opts_, "sha256:ab")), "");
  int32_t n = -1;
  EXPECT_EQ(take(pd_runtime_device_count(rt_, "cpu", &n)), "");
  EXPECT_EQ(n, 0);
  EXPECT_EQ(take(pd_runtime_device_count(rt_, "nope", &n), &code).find("unknown backend 'nope'"), 0u);
  EXPECT_EQ(code, PD_ERR_NOT_FOUND);
  pd_device_info di;
  EXPECT_NE(take(pd_runtime_device_info(rt_, "cpu", 0, &di)).find("has 0 devices"), std::string::npos);
}

TEST_F(CacheAbi, CpuDoesNotMeasureDeviceTime) {
  pd_engine* e = nullptr;
  ASSERT_EQ(take(pd_engine_options_set_profiling(opts_, 1)), "");
  ASSERT_EQ(take(pd_engine_create(rt_, model_.data(), model_.size(), opts_, &e)), "");
  pd_context* c = nullptr;
  ASSERT_EQ(take(pd_context_create(e, &c)), "");
  double ms = 0;
  pd_error_code code{};
  EXPECT_NE(take(pd_context_device_time(c, &ms), &code).find("does not measure device time"), std::string::npos);
  EXPECT_EQ(code, PD_ERR_UNSUPPORTED);
  pd_context_destroy(c);
  pd_engine_destroy(e);
}

}  // namespace
