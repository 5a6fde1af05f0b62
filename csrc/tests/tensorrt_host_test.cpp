// The TensorRT backend's host-only parts (csrc/tensorrt/support.h), which need neither TensorRT
// nor a GPU: the optimization profile on real models, the parameters and the options key, the
// engine-cache payload and the timing-cache envelope, the random-op pre-check, the mapping of
// ONNX-parser errors; and that the runtime reports the plugin's state (here: not installed).
#include <gtest/gtest.h>

#include <fstream>
#include <functional>
#include <map>
#include <sstream>
#include <string>
#include <tuple>
#include <vector>

#include "../tensorrt/support.h"
#include "onnx_import.h"
#include "passes.h"
#include "policyd.h"
#include "test_util.h"

namespace {

namespace trt = pd::trt;

// The model as the core hands it to a backend: imported, folded, fused.
pd::Graph graph_of(const std::string& rel) { return pd::test::backend_graph(std::string(PD_SHARED_DIR) + "/" + rel); }

// The code and message of what f throws ("" when it throws nothing).
struct Thrown {
  pd_error_code code = PD_ERR_INTERNAL;
  std::string msg;
};
Thrown thrown(const std::function<void()>& f) {
  try {
    f();
  } catch (const pd::Error& e) {
    return {e.code(), e.what()};
  }
  return {PD_ERR_INTERNAL, ""};
}

using Dims = std::vector<int64_t>;

// ---- the profile -----------------------------------------------------------------------------

TEST(TensorrtProfile, MlpBatchDimensionSpansTheProfile) {
  const pd::Graph g = graph_of("peers/models/mlp-small.onnx");
  const trt::BatchProfile p = trt::batch_profile(g, 2, 8, 32);
  ASSERT_EQ(p.inputs.size(), 1u);
  EXPECT_TRUE(p.batched);
  EXPECT_EQ(p.inputs[0].name, "obs");
  EXPECT_EQ(p.inputs[0].batch_dim, 0);
  EXPECT_EQ(p.inputs[0].min, (Dims{2, 8}));
  EXPECT_EQ(p.inputs[0].opt, (Dims{8, 8}));
  EXPECT_EQ(p.inputs[0].max, (Dims{32, 8}));
}

TEST(TensorrtProfile, LstmStateInputsCarryTheBatchInTheirSecondDimension) {
  const pd::Graph g = graph_of("peers/models/lstm.onnx");
  const trt::BatchProfile p = trt::batch_profile(g, 1, 4, 16);
  ASSERT_EQ(p.inputs.size(), 3u);
  EXPECT_EQ(p.inputs[0].name, "obs");
  EXPECT_EQ(p.inputs[0].min, (Dims{1, 32}));
  EXPECT_EQ(p.inputs[0].max, (Dims{16, 32}));
  for (int i : {1, 2}) {
    SCOPED_TRACE(p.inputs[i].name);
    EXPECT_EQ(p.inputs[i].batch_dim, 1);
    EXPECT_EQ(p.inputs[i].min, (Dims{1, 1, 128}));
    EXPECT_EQ(p.inputs[i].opt, (Dims{1, 4, 128}));
    EXPECT_EQ(p.inputs[i].max, (Dims{1, 16, 128}));
  }
  // A run's batch comes from every batched input, which must agree.
  float obs[4 * 32] = {}, h[4 * 128] = {}, c[4 * 128] = {};
  pd_tensor in[3] = {pd_tensor{PD_DTYPE_FLOAT32, 2, {4, 32}, obs, sizeof obs},
                     pd_tensor{PD_DTYPE_FLOAT32, 3, {1, 4, 128}, h, sizeof h},
                     pd_tensor{PD_DTYPE_FLOAT32, 3, {1, 4, 128}, c, sizeof c}};
  EXPECT_EQ(trt::run_batch(p, in), 4);
  in[2].dims[1] = 3;
  Thrown t = thrown([&] { trt::run_batch(p, in); });
  EXPECT_EQ(t.code, PD_ERR_INVALID_ARG);
  EXPECT_NE(t.msg.find("input 'c_in' has batch 3, input 'obs' has batch 4"), std::string::npos) << t.msg;
}

TEST(TensorrtProfile, FixedShapeModelGetsItsDeclaredShape) {
  const pd::Graph g = graph_of("models/mujoco_playground/go1_policy.onnx");
  const trt::BatchProfile p = trt::batch_profile(g, 1, 8, 64);
  ASSERT_EQ(p.inputs.size(), 1u);
  EXPECT_FALSE(p.batched);
  EXPECT_EQ(p.inputs[0].batch_dim, -1);
  EXPECT_EQ(p.inputs[0].min, (Dims{1, 48}));
  EXPECT_EQ(p.inputs[0].opt, (Dims{1, 48}));
  EXPECT_EQ(p.inputs[0].max, (Dims{1, 48}));
  // No batch to bound: the key does not depend on the requested profile.
  EXPECT_EQ(trt::options_key({}, p), trt::options_key({}, trt::batch_profile(g, 1, 1, 0)));
  float obs[48] = {};
  pd_tensor in{PD_DTYPE_FLOAT32, 2, {1, 48}, obs, sizeof obs};
  EXPECT_EQ(trt::run_batch(p, &in), 0);
}

TEST(TensorrtProfile, UnboundedMaxGetsTheDefaultAndBadProfilesAreRefused) {
  const pd::Graph g = graph_of("peers/models/mlp-small.onnx");
  trt::BatchProfile p = trt::batch_profile(g, 1, 1, 0);
  EXPECT_EQ(p.max_batch, trt::kDefaultMaxBatch);
  EXPECT_EQ(p.inputs[0].max, (Dims{trt::kDefaultMaxBatch, 8}));
  p = trt::batch_profile(g, 1, 200, 0);  // opt above the default: max follows it
  EXPECT_EQ(p.max_batch, 200);
  for (auto [mn, op, mx] : {std::tuple<int64_t, int64_t, int64_t>{0, 1, 4}, {4, 2, 8}, {1, 8, 4}}) {
    Thrown t = thrown([&] { trt::batch_profile(g, mn, op, mx); });
    EXPECT_EQ(t.code, PD_ERR_INVALID_ARG) << mn << "/" << op << "/" << mx;
    EXPECT_NE(t.msg.find("1 <= min <= opt <= max"), std::string::npos) << t.msg;
  }
}

TEST(TensorrtProfile, RunsOutsideTheProfileAreRefused) {
  const trt::BatchProfile p = trt::batch_profile(graph_of("peers/models/mlp-small.onnx"), 2, 4, 8);
  float x[9 * 8] = {};
  pd_tensor in{PD_DTYPE_FLOAT32, 2, {8, 8}, x, 8 * 8 * sizeof(float)};
  EXPECT_EQ(trt::run_batch(p, &in), 8);
  for (int64_t b : {1, 9}) {
    in.dims[0] = b;
    Thrown t = thrown([&] { trt::run_batch(p, &in); });
    EXPECT_EQ(t.code, PD_ERR_INVALID_ARG);
    EXPECT_NE(t.msg.find(pd::str("batch ", b, " is outside the engine's batch profile [2, 8]")), std::string::npos)
        << t.msg;
  }
}

pd::Graph one_input(pd::Shape dims, int batch_dim) {
  pd::Graph g;
  pd::ValueInfo x;
  x.name = "x";
  x.dtype = pd::DType::F32;
  x.dims = std::move(dims);
  x.dim_params.assign(x.dims.size(), "");
  x.has_shape = true;
  x.batch_dim = batch_dim;
  g.inputs.push_back(x);
  return g;
}

TEST(TensorrtProfile, WhatOneBatchProfileCannotExpressIsUnsupported) {
  pd::Graph g = one_input({-1, -1, 3}, 0);
  g.inputs[0].dim_params[1] = "seq";
  Thrown t = thrown([&] { trt::batch_profile(g, 1, 1, 4); });
  EXPECT_EQ(t.code, PD_ERR_UNSUPPORTED);
  EXPECT_NE(t.msg.find("input 'x' dimension 1 ('seq') is free and not the batch dimension"), std::string::npos) << t.msg;

  g = one_input({2}, -1);
  g.inputs[0].value_input = true;
  t = thrown([&] { trt::batch_profile(g, 1, 1, 4); });
  EXPECT_EQ(t.code, PD_ERR_UNSUPPORTED);
  EXPECT_NE(t.msg.find("input 'x' is a shape tensor"), std::string::npos) << t.msg;

  g = one_input({}, -1);
  g.inputs[0].has_shape = false;
  t = thrown([&] { trt::batch_profile(g, 1, 1, 4); });
  EXPECT_EQ(t.code, PD_ERR_UNSUPPORTED);
  EXPECT_NE(t.msg.find("declares no shape"), std::string::npos) << t.msg;
}

// ---- parameters and the options key ----------------------------------------------------------

TEST(TensorrtParams, DefaultsAndEveryKey) {
  trt::Params p = trt::parse_params({});
  EXPECT_EQ(p.precision, "fp32");
  EXPECT_EQ(p.workspace_mib, 1024);
  EXPECT_EQ(p.builder_optimization_level, 3);
  p = trt::parse_params({{"precision", "bf16"}, {"workspace_mib", "256"}, {"builder_optimization_level", "5"}});
  EXPECT_EQ(p.precision, "bf16");
  EXPECT_EQ(p.workspace_mib, 256);
  EXPECT_EQ(p.builder_optimization_level, 5);
  EXPECT_EQ(trt::parse_params({{"builder_optimization_level", "0"}}).builder_optimization_level, 0);
  EXPECT_EQ(trt::param_keys(), (std::vector<std::string>{"builder_optimization_level", "precision", "workspace_mib"}));
}

TEST(TensorrtParams, BadKeysAndValuesAreNamed) {
  const std::pair<std::map<std::string, std::string>, std::string> cases[] = {
      {{{"precision", "int8"}}, "'precision' must be fp32, fp16 or bf16, got 'int8'"},
      {{{"precision", "FP16"}}, "got 'FP16'"},
      {{{"workspace_mib", "0"}}, "'workspace_mib' must be an integer from 1 to 1048576, got '0'"},
      {{{"workspace_mib", "-5"}}, "got '-5'"},
      {{{"workspace_mib", "12abc"}}, "got '12abc'"},
      {{{"workspace_mib", "99999999999999999999"}}, "workspace_mib"},
      {{{"builder_optimization_level", "6"}}, "'builder_optimization_level' must be an integer from 0 to 5, got '6'"},
      {{{"builder_optimization_level", ""}}, "builder_optimization_level"},
      {{{"fp16", "1"}}, "backend 'tensorrt' has no build parameter 'fp16'"},
  };
  for (const auto& [params, want] : cases) {
    Thrown t = thrown([&] { trt::parse_params(params); });
    EXPECT_EQ(t.code, PD_ERR_INVALID_ARG) << want;
    EXPECT_NE(t.msg.find(want), std::string::npos) << t.msg;
  }
}

TEST(TensorrtParams, OptionsKeyChangesWithEverythingThatChangesThePlan) {
  const pd::Graph g = graph_of("peers/models/mlp-small.onnx");
  const trt::BatchProfile prof = trt::batch_profile(g, 1, 8, 32);
  const trt::Params base;
  const std::string key = trt::options_key(base, prof);
  EXPECT_EQ(key, "precision=fp32;workspace_mib=1024;opt_level=3;batch=1/8/32");
  EXPECT_EQ(trt::options_key(trt::parse_params({}), trt::batch_profile(g, 1, 8, 32)), key);  // stable
  trt::Params p = base;
  p.precision = "fp16";
  EXPECT_NE(trt::options_key(p, prof), key);
  p = base;
  p.workspace_mib = 512;
  EXPECT_NE(trt::options_key(p, prof), key);
  p = base;
  p.builder_optimization_level = 4;
  EXPECT_NE(trt::options_key(p, prof), key);
  for (auto [mn, op, mx] : {std::tuple<int64_t, int64_t, int64_t>{2, 8, 32}, {1, 4, 32}, {1, 8, 64}})
    EXPECT_NE(trt::options_key(base, trt::batch_profile(g, mn, op, mx)), key) << mn << "/" << op << "/" << mx;
}

// ---- the engine cache's payload --------------------------------------------------------------

trt::Payload payload() {
  trt::Payload p;
  p.tensorrt = "10.13.2";
  p.target = "sm_90";
  p.options = "precision=fp32;workspace_mib=1024;opt_level=3;batch=1/8/32";
  p.plan = std::string("ftrt\0\x01\x02plan\n\nbytes", 18);
  p.timing_cache = std::string("tc\0\n\nbin", 8);
  return p;
}

TEST(TensorrtPayload, RoundTrips) {
  const trt::Payload p = payload();
  const trt::Payload got = trt::decode_payload(trt::encode_payload(p));
  EXPECT_EQ(got.tensorrt, p.tensorrt);
  EXPECT_EQ(got.target, p.target);
  EXPECT_EQ(got.options, p.options);
  EXPECT_EQ(got.plan, p.plan);
  EXPECT_EQ(got.timing_cache, p.timing_cache);
  EXPECT_EQ(thrown([&] { trt::check_payload(p, got); }).msg, "");
  trt::Payload none = p;
  none.timing_cache.clear();
  EXPECT_EQ(trt::decode_payload(trt::encode_payload(none)).timing_cache, "");
}

TEST(TensorrtPayload, EveryMismatchIsRefusedBeforeDeserializing) {
  const trt::Payload got = trt::decode_payload(trt::encode_payload(payload()));
  struct Case {
    std::function<void(trt::Payload&)> change;
    std::string want;
  };
  const Case cases[] = {
      {[](trt::Payload& w) { w.tensorrt = "10.14.1"; },
       "built with TensorRT '10.13.2', this runtime is '10.14.1'; rebuild engines"},
      {[](trt::Payload& w) { w.target = "sm_89"; },
       "built for compute capability 'sm_90', this device is 'sm_89'; rebuild engines"},
      {[](trt::Payload& w) { w.options = "precision=fp16;workspace_mib=1024;opt_level=3;batch=1/8/32"; },
       "built with options 'precision=fp32;"},
  };
  for (const auto& c : cases) {
    trt::Payload want = payload();
    c.change(want);
    Thrown t = thrown([&] { trt::check_payload(want, got); });
    EXPECT_EQ(t.code, PD_ERR_INVALID_ARG);
    EXPECT_NE(t.msg.find(c.want), std::string::npos) << t.msg;
  }
}

TEST(TensorrtPayload, TruncatedOrCorruptBytesAreRefused) {
  const std::string good = trt::encode_payload(payload());
  auto refused = [](const std::string& bytes, const std::string& want) {
    Thrown t = thrown([&] { trt::decode_payload(bytes); });
    EXPECT_EQ(t.code, PD_ERR_INVALID_ARG) << want;
    EXPECT_NE(t.msg.find(want), std::string::npos) << t.msg;
  };
  refused(good.substr(0, good.size() - 1), "(truncated?)");
  refused(good + "x", "bytes after the header");
  refused(good.substr(0, 40), "truncated header");
  refused("PDENGINE\x01", "not made by this backend");
  refused("", "not made by this backend");
  // One flipped bit in the plan.
  std::string bad = good;
  bad[good.find("plan\n\nbytes")] ^= 1;
  refused(bad, "(corrupt)");
  // A header line without '=', an unknown key, a size that is not a number.
  std::string h = good;
  h.replace(h.find("target="), 7, "target:");
  refused(h, "bad header line 'target:sm_90'");
  h = good;
  h.replace(h.find("target="), 7, "tarjet=");
  refused(h, "unknown header key 'tarjet'");
  h = good;
  h.replace(h.find("plan_size=") + 10, 1, "x");
  refused(h, "bad plan_size");
  trt::Payload empty = payload();
  empty.plan.clear();
  refused(trt::encode_payload(empty), "no plan");
}

TEST(TensorrtTimingCache, KeptOnlyForTheSameTensorrtAndTarget) {
  const std::string raw("timing\0cache\n\nbytes", 19);
  const std::string blob = trt::encode_timing_cache("10.13.2", "sm_90", raw);
  std::string why;
  EXPECT_EQ(trt::decode_timing_cache(blob, "10.13.2", "sm_90", &why), raw);
  EXPECT_EQ(why, "");
  EXPECT_EQ(trt::decode_timing_cache(blob, "10.14.1", "sm_90", &why), "");
  EXPECT_NE(why.find("measured with TensorRT '10.13.2', this runtime is '10.14.1'"), std::string::npos) << why;
  EXPECT_EQ(trt::decode_timing_cache(blob, "10.13.2", "sm_80", &why), "");
  EXPECT_NE(why.find("measured on 'sm_90', this device is 'sm_80'"), std::string::npos) << why;
  EXPECT_EQ(trt::decode_timing_cache(blob.substr(0, blob.size() - 2), "10.13.2", "sm_90", &why), "");
  EXPECT_NE(why.find("its header says 19"), std::string::npos) << why;
  EXPECT_EQ(trt::decode_timing_cache("raw TensorRT bytes", "10.13.2", "sm_90", &why), "");
  EXPECT_NE(why.find("not made by the tensorrt backend"), std::string::npos) << why;
  EXPECT_EQ(trt::decode_timing_cache("", "10.13.2", "sm_90", &why), "");
  EXPECT_EQ(why, "");  // none given: nothing to warn about
}

// ---- graphs TensorRT must not run ------------------------------------------------------------

TEST(TensorrtSupport, RandomOpsFallBackNamingTheNode) {
  std::string r = trt::unsupported_reason(graph_of("models/mlagents/Basic.onnx"));
  EXPECT_NE(r.find("Multinomial node"), std::string::npos) << r;
  EXPECT_NE(r.find("CPU backend only"), std::string::npos) << r;
  r = trt::unsupported_reason(graph_of("models/mlagents/3DBall.onnx"));
  EXPECT_NE(r.find("RandomNormalLike node"), std::string::npos) << r;
  for (const char* m : {"peers/models/mlp-small.onnx", "peers/models/lstm.onnx", "peers/models/cnn-atari.onnx",
                        "models/mujoco_playground/go1_policy.onnx"})
    EXPECT_EQ(trt::unsupported_reason(graph_of(m)), "") << m;
}

// ---- the ONNX parser's errors ----------------------------------------------------------------

TEST(TensorrtParser, UnsupportedNodeIsUnsupportedNamingNodeAndOp) {
  trt::ParserError e;
  e.code = 8;  // kUNSUPPORTED_NODE
  e.desc = "No importer registered for op: Multinomial.\n";
  e.node = 12;
  e.node_name = "/sample/Multinomial";
  e.node_op = "Multinomial";
  trt::ParserError second = e;
  second.node = 13;
  pd::Error err = trt::parser_failure("basic@1.0.0", {e, second});
  EXPECT_EQ(err.code(), PD_ERR_UNSUPPORTED);
  EXPECT_EQ(std::string(err.what()),
            "basic@1.0.0: TensorRT's ONNX parser refused Multinomial node '/sample/Multinomial' (#12): "
            "kUNSUPPORTED_NODE: No importer registered for op: Multinomial. (and 1 more errors)");
}

TEST(TensorrtParser, OtherErrorsAndCodes) {
  trt::ParserError e;
  e.code = 2;  // kMEM_ALLOC_FAILED
  e.desc = "out of memory";
  pd::Error err = trt::parser_failure("m", {e});
  EXPECT_EQ(err.code(), PD_ERR_UNAVAILABLE);
  EXPECT_NE(std::string(err.what()).find("refused the graph: kMEM_ALLOC_FAILED: out of memory"), std::string::npos)
      << err.what();
  e.code = 11;
  e.node = 3;
  err = trt::parser_failure("m", {e});
  EXPECT_EQ(err.code(), PD_ERR_UNSUPPORTED);
  EXPECT_NE(std::string(err.what()).find("refused node (#3): kUNSUPPORTED_NODE_DATATYPE"), std::string::npos)
      << err.what();
  EXPECT_EQ(trt::parser_failure("m", {}).code(), PD_ERR_UNSUPPORTED);
  EXPECT_EQ(trt::parser_code_name(99), "code 99");
}

// ---- versions and log levels -----------------------------------------------------------------

TEST(TensorrtVersion, LibraryNumbersAndTheMinimum) {
  EXPECT_EQ(trt::version_string(101302), "10.13.2");
  EXPECT_EQ(trt::version_string(100000), "10.0.0");
  EXPECT_EQ(trt::check_version(100001), "");
  EXPECT_EQ(trt::check_version(110100), "");
  EXPECT_NE(trt::check_version(80603).find("TensorRT 8.6.3 is too old"), std::string::npos);
}

TEST(TensorrtLog, SeveritiesMapToLogLevels) {
  pd_log_level l = PD_LOG_INFO;
  ASSERT_TRUE(trt::log_level(0, &l));
  EXPECT_EQ(l, PD_LOG_ERROR);
  ASSERT_TRUE(trt::log_level(1, &l));
  EXPECT_EQ(l, PD_LOG_ERROR);
  ASSERT_TRUE(trt::log_level(2, &l));
  EXPECT_EQ(l, PD_LOG_WARN);
  ASSERT_TRUE(trt::log_level(3, &l));
  EXPECT_EQ(l, PD_LOG_DEBUG);
  EXPECT_FALSE(trt::log_level(4, &l));
}

// ---- the plugin as the runtime sees it -------------------------------------------------------

// Without TensorRT (this machine, CI) the runtime lists tensorrt as not installed and building
// for it fails with UNAVAILABLE naming why; with the plugin built, it loads and either finds
// devices or says which of TensorRT, driver or device is missing.
TEST(TensorrtPlugin, RuntimeReportsItsState) {
  pd_runtime* rt = nullptr;
  ASSERT_EQ(pd_runtime_create(nullptr, &rt), nullptr);
  bool seen = false;
  for (int32_t i = 0; i < pd_runtime_backend_count(rt); ++i) {
    pd_backend_info bi{};
    ASSERT_EQ(pd_runtime_backend_info(rt, i, &bi), nullptr);
    if (std::string(bi.name) != "tensorrt") continue;
    seen = true;
    const std::string why = bi.reason;
#ifdef PD_HAVE_TENSORRT_PLUGIN
    if (bi.available) {
      EXPECT_NE(std::string(bi.version).find("-trt10."), std::string::npos) << bi.version;
      continue;
    }
    EXPECT_EQ(why.find("cannot load plugin"), std::string::npos) << why;
    EXPECT_TRUE(why.find("TensorRT") != std::string::npos || why.find("NVIDIA driver") != std::string::npos ||
                why.find("CUDA device") != std::string::npos)
        << why;
#else
    EXPECT_EQ(bi.available, 0);
    EXPECT_NE(why.find("plugin not installed"), std::string::npos) << why;
    EXPECT_NE(why.find("libpolicyd_backend_tensorrt.so"), std::string::npos) << why;
#endif
    pd_engine_options* o = nullptr;
    ASSERT_EQ(pd_engine_options_create(&o), nullptr);
    ASSERT_EQ(pd_engine_options_set_backend(o, "tensorrt"), nullptr);
    pd_engine* e = nullptr;
    pd_error* err = pd_engine_create(rt, "x", 1, o, &e);
    ASSERT_NE(err, nullptr);
    EXPECT_EQ(pd_error_get_code(err), PD_ERR_UNAVAILABLE);
    EXPECT_NE(std::string(pd_error_get_message(err)).find(why), std::string::npos) << pd_error_get_message(err);
    pd_error_free(err);
    pd_engine_options_destroy(o);
  }
  EXPECT_TRUE(seen);
  pd_runtime_destroy(rt);
}

}  // namespace
