// The CUDA backend's host-only parts, which need no GPU: the op support table that decides
// fallback, the engine-cache payload, the kernel source (compiled with NVRTC when the toolkit
// is present: NVRTC is a compiler and needs no driver), and, with the plugin built, that
// loading it on a machine without a GPU reports why it is unavailable.
#include <gtest/gtest.h>
#include <onnx/onnx_pb.h>

#include <fstream>
#include <functional>
#include <regex>
#include <set>
#include <sstream>
#include <string>

#include "../cuda/einsum_plan.h"
#include "../cuda/kernels.h"
#include "../cuda/support.h"
#include "engine_cache.h"
#include "onnx_import.h"
#include "passes.h"
#include "policyd.h"
#include "program.h"
#include "test_util.h"

#ifdef PD_HAVE_NVRTC
#include <nvrtc.h>
#endif

namespace {

// The model as the core hands it to a backend: imported, folded, fused; analyzed at batch 1.
std::string reason_for(const std::string& rel) {
  pd::Graph g = pd::test::backend_graph(std::string(PD_SHARED_DIR) + "/" + rel);
  std::vector<pd::Shape> shapes;
  for (const auto& in : g.inputs) {
    pd::Shape s = in.dims;
    for (auto& d : s)
      if (d < 0) d = 1;
    shapes.push_back(s);
  }
  return pd::cuda::unsupported_reason(g, pd::analyze(g, shapes));
}

TEST(CudaSupport, RunsThePeerModelsAndTheDeterministicPolicies) {
  for (const char* m : {"peers/models/mlp-small.onnx", "peers/models/mlp-med.onnx", "peers/models/mlp-large.onnx",
                        "peers/models/cnn-atari.onnx", "peers/models/lstm.onnx", "models/godot_rl/JumperHard.onnx",
                        "models/godot_rl/MultiAgentSimple_player.onnx", "models/godot_rl/ScoreTheGoal.onnx",
                        "models/learning_to_fly/actor.onnx", "models/mujoco_playground/go1_policy.onnx",
                        "models/snn_ctrl/mapless_navi_policy.onnx", "models/unitree_rl_lab/g1_velocity_v0.onnx"})
    EXPECT_EQ(reason_for(m), "") << m;
}

TEST(CudaSupport, RandomOpsFallBackNamingTheNode) {
  const std::string r = reason_for("models/mlagents/3DBall.onnx");
  EXPECT_NE(r.find("RandomNormalLike node"), std::string::npos) << r;
  EXPECT_NE(r.find("CPU backend only"), std::string::npos) << r;
  EXPECT_NE(reason_for("models/mlagents/Basic.onnx").find("Multinomial node"), std::string::npos);
}

TEST(CudaSupport, OpsWithoutKernelAndWrongTypesAreNamed) {
  pd::Graph g;
  pd::ValueInfo x;
  x.name = "x";
  x.dtype = pd::DType::F64;
  x.dims = {2, 3};
  x.has_shape = true;
  g.inputs.push_back(x);
  pd::Node relu;
  relu.name = "r";
  relu.op = "Relu";
  relu.opset = 17;
  relu.inputs = {"x"};
  relu.outputs = {"y"};
  g.nodes.push_back(relu);
  pd::ValueInfo y;
  y.name = "y";
  g.outputs.push_back(y);
  std::string r = pd::cuda::unsupported_reason(g, pd::analyze(g, {{2, 3}}));
  EXPECT_NE(r.find("Relu node 'r'"), std::string::npos) << r;
  EXPECT_NE(r.find("float32 only"), std::string::npos) << r;
  EXPECT_NE(r.find("double"), std::string::npos) << r;

  g.inputs[0].dtype = pd::DType::F32;
  g.nodes[0].op = "MaxPool";  // a real op without a CUDA kernel
  g.nodes[0].attrs["kernel_shape"].kind = pd::Attribute::Ints;
  g.nodes[0].attrs["kernel_shape"].ints = {1};
  r = pd::cuda::unsupported_reason(g, pd::analyze(g, {{2, 3, 4}}));
  EXPECT_NE(r.find("no CUDA kernel for MaxPool"), std::string::npos) << r;
}

// A graph of one Einsum node "scores" over inputs of the given shapes and type.
pd::Graph einsum_graph(const std::string& eq, const std::vector<pd::Shape>& shapes,
                       pd::DType t = pd::DType::F32) {
  pd::Graph g;
  pd::Node n;
  n.name = "scores";
  n.op = "Einsum";
  n.opset = 17;
  for (size_t i = 0; i < shapes.size(); ++i) {
    pd::ValueInfo v;
    v.name = "x" + std::to_string(i);
    v.dtype = t;
    v.dims = shapes[i];
    v.has_shape = true;
    g.inputs.push_back(v);
    n.inputs.push_back(v.name);
  }
  n.outputs = {"y"};
  n.attrs["equation"].kind = pd::Attribute::String;
  n.attrs["equation"].s = eq;
  g.nodes.push_back(n);
  pd::ValueInfo y;
  y.name = "y";
  g.outputs.push_back(y);
  return g;
}

// The CUDA plan of the graph's Einsum node at its input shapes.
pd::cuda::EinsumCudaPlan einsum_plan_of(const pd::Graph& g, const std::vector<pd::Shape>& shapes) {
  const pd::Analysis a = pd::analyze(g, shapes);
  const pd::Node& n = g.nodes[0];
  std::vector<pd::TensorInfo> in;
  for (const auto& v : n.inputs) in.push_back(a.values.at(v));
  pd::InferCtx c(n, in);
  c.out[0] = a.values.at(n.outputs[0]);
  return pd::cuda::plan_einsum(c);
}

std::string einsum_plan_str(const std::string& eq, const std::vector<pd::Shape>& shapes) {
  return einsum_plan_of(einsum_graph(eq, shapes), shapes).describe();
}

TEST(CudaSupport, EinsumRunsOneAndTwoInputsFallsBackOtherwise) {
  // One or two float32/float64 inputs run on the CUDA backend.
  for (const auto& [eq, shapes] : std::vector<std::pair<std::string, std::vector<pd::Shape>>>{
           {"bmhd,bnhd->bmhn", {{1, 5, 4, 8}, {1, 5, 4, 8}}},
           {"bmhn,bnhd->bmhd", {{2, 5, 4, 5}, {2, 5, 4, 8}}},
           {"ii->i", {{4, 4}}},
           {"ij->", {{4, 3}}}}) {
    pd::Graph g = einsum_graph(eq, shapes);
    EXPECT_EQ(pd::cuda::unsupported_reason(g, pd::analyze(g, shapes)), "") << eq;
    EXPECT_EQ(pd::cuda::unsupported_op(g), "") << eq;
  }
  // Three inputs, or integers: UNSUPPORTED naming the node and the equation (the engine falls
  // back to the cpu backend).
  pd::Graph three = einsum_graph("ij,jk,kl->il", {{2, 3}, {3, 4}, {4, 5}});
  std::string r = pd::cuda::unsupported_reason(three, pd::analyze(three, {{2, 3}, {3, 4}, {4, 5}}));
  EXPECT_NE(r.find("Einsum node 'scores': the CUDA backend runs Einsum of one or two inputs; equation "
                   "'ij,jk,kl->il' has 3"),
            std::string::npos)
      << r;
  pd::Graph ints = einsum_graph("ij,jk->ik", {{2, 3}, {3, 2}}, pd::DType::I64);
  r = pd::cuda::unsupported_reason(ints, pd::analyze(ints, {{2, 3}, {3, 2}}));
  EXPECT_NE(r.find("Einsum node 'scores': the CUDA backend runs Einsum in float32 and float64 only, input 0 is "
                   "int64 (equation 'ij,jk->ik')"),
            std::string::npos)
      << r;
  // A transpose of nine dimensions that no two merge: above the copy kernel's rank.
  const std::vector<pd::Shape> nine = {{2, 2, 2, 2, 2, 2, 2, 2, 2}};
  pd::Graph wide = einsum_graph("abcdefghi->ihgfedcba", nine);
  r = pd::cuda::unsupported_reason(wide, pd::analyze(wide, nine));
  EXPECT_NE(r.find("Einsum node 'scores': the CUDA backend's transpose of equation 'abcdefghi->ihgfedcba' needs a "
                   "copy over 9 dimensions, above its kernels' 8"),
            std::string::npos)
      << r;
  // The same with neighbours kept together merges to two dimensions.
  EXPECT_EQ(einsum_plan_str("abcdefghi->efghiabcd", nine), "copy of rank 2");
}

// Which operands the plan uses in place: the cuBLASLt strided batch is one stride per operand,
// so a layout whose batch labels are no single stride is gathered into scratch first.
TEST(CudaSupport, EinsumPlanUsesOperandsInPlaceWhenTheStridesAllow) {
  // Attention at batch 1: heads are the GEMM batch; Q [m, d] in place (ld = h*d), K [d, n]
  // transposed in place, the scores written in place (ld = h*n). No copy at all.
  EXPECT_EQ(einsum_plan_str("bmhd,bnhd->bmhn", {{1, 9, 4, 16}, {1, 7, 4, 16}}),
            "gemm batch 4 m 9 n 7 k 16: A in place, B in place transposed, C in place");
  pd::cuda::EinsumCudaPlan p = einsum_plan_of(einsum_graph("bmhd,bnhd->bmhn", {{1, 9, 4, 16}, {1, 7, 4, 16}}),
                                              {{1, 9, 4, 16}, {1, 7, 4, 16}});
  EXPECT_FALSE(p.a.trans);
  EXPECT_EQ(p.a.ld, 64);
  EXPECT_EQ(p.a.batch_stride, 16);
  EXPECT_TRUE(p.b.trans);
  EXPECT_EQ(p.b.ld, 64);
  EXPECT_EQ(p.ldc, 28);
  EXPECT_EQ(p.c_batch_stride, 7);
  EXPECT_EQ(einsum_plan_str("bmhn,bnhd->bmhd", {{1, 9, 4, 7}, {1, 7, 4, 16}}),
            "gemm batch 4 m 9 n 16 k 7: A in place, B in place, C in place");
  // At batch 3 (b, h) is no single stride in any operand: gather, GEMM, scatter.
  EXPECT_EQ(einsum_plan_str("bmhd,bnhd->bmhn", {{3, 9, 4, 16}, {3, 7, 4, 16}}),
            "gemm batch 12 m 9 n 7 k 16: A packed, B packed, C packed");
  // Heads-first layouts batch over (b, h) in place at any batch.
  EXPECT_EQ(einsum_plan_str("bhmd,bhnd->bhmn", {{3, 4, 9, 16}, {3, 4, 7, 16}}),
            "gemm batch 12 m 9 n 7 k 16: A in place, B in place transposed, C in place");
  // Keys shared by every batch and head: batch stride 0.
  p = einsum_plan_of(einsum_graph("bhmd,bhnd->bhmn", {{3, 4, 9, 16}, {1, 1, 7, 16}}), {{3, 4, 9, 16}, {1, 1, 7, 16}});
  EXPECT_EQ(p.describe(), "gemm batch 12 m 9 n 7 k 16: A in place, B in place transposed, C in place");
  EXPECT_EQ(p.b.batch_stride, 0);
  // A transposed output is computed in scratch and scattered.
  EXPECT_EQ(einsum_plan_str("ij,jk->ki", {{3, 4}, {4, 5}}), "gemm batch 1 m 3 n 5 k 4: A in place, B in place, C packed");
  // One input: a copy without sums, a GEMV with a ones vector with them.
  EXPECT_EQ(einsum_plan_str("ijk->kji", {{2, 3, 4}}), "copy of rank 3");
  EXPECT_EQ(einsum_plan_str("ii->i", {{5, 5}}), "copy of rank 1");
  EXPECT_EQ(einsum_plan_str("ii", {{5, 5}}), "gemm batch 1 m 1 n 1 k 5: A in place transposed, B ones, C in place");
  EXPECT_EQ(einsum_plan_str("ij->j", {{3, 4}}), "gemm batch 1 m 4 n 1 k 3: A in place transposed, B ones, C in place");
  // A label only the first input has is summed as a K label, the second input broadcast along it.
  EXPECT_EQ(einsum_plan_str("ij,j->", {{3, 4}, {4}}), "gemm batch 1 m 1 n 1 k 12: A in place, B packed, C in place");
  // A summed label of size 0: zeros; no output elements: nothing.
  EXPECT_EQ(einsum_plan_str("ij,jk->ik", {{3, 0}, {0, 4}}), "zeros (a summed label of size 0)");
  EXPECT_EQ(einsum_plan_str("ij,jk->ik", {{0, 2}, {2, 4}}), "nothing (empty output)");
}

TEST(CudaSupport, TableListsTheFusedOps) {
  std::vector<std::string> ops = pd::cuda::supported_ops();
  std::set<std::string> s(ops.begin(), ops.end());
  for (const char* op : {"pd.FusedGemm", "pd.FusedMatMul", "pd.FusedConv", "LSTM", "Gather", "Softmax", "Einsum"})
    EXPECT_TRUE(s.count(op)) << op;
  EXPECT_FALSE(s.count("Multinomial"));
  EXPECT_TRUE(std::is_sorted(ops.begin(), ops.end()));
}

pd::cuda::Payload payload() {
  pd::cuda::Payload p;
  p.arch = "sm_90";
  p.nvrtc = "12.4";
  p.source = pd::fnv1a64_tag(pd::cuda::kernel_source().data(), pd::cuda::kernel_source().size());
  p.kind = "cubin";
  p.code = std::string("\x7f" "ELF\0\0binary", 12);
  return p;
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
}

TEST(CudaPayload, RoundTripsAndRefusesAnotherArchitecture) {
  const pd::cuda::Payload p = payload();
  const pd::cuda::Payload got = pd::cuda::decode_payload(pd::cuda::encode_payload(p));
  EXPECT_EQ(got.code, p.code);
  EXPECT_EQ(got.arch, "sm_90");
  EXPECT_EQ(error_of([&] { pd::cuda::check_payload(p, got); }), "");
  pd::cuda::Payload want = p;
  want.arch = "sm_80";
  std::string msg = error_of([&] { pd::cuda::check_payload(want, got); });
  EXPECT_NE(msg.find("architecture 'sm_90', this device needs 'sm_80'; rebuild engines"), std::string::npos) << msg;
  want = p;
  want.source = "fnv1a64:0000000000000000";
  EXPECT_NE(error_of([&] { pd::cuda::check_payload(want, got); }).find("kernel source"), std::string::npos);
  std::string bad = pd::cuda::encode_payload(p);
  bad.pop_back();
  EXPECT_NE(error_of([&] { pd::cuda::decode_payload(bad); }).find("header says"), std::string::npos);
  EXPECT_NE(error_of([&] { pd::cuda::decode_payload("PDENGINE"); }).find("not made by this backend"), std::string::npos);
}

TEST(CudaKernels, EveryLaunchedKernelIsDefinedOnce) {
  const std::string& src = pd::cuda::kernel_source();
  for (const auto& name : pd::cuda::kernel_names()) {
    // Defined directly or through the PD_COPY / PD_GATHER macros.
    std::regex def("(__global__ void " + name + "\\()|((PD_COPY|PD_GATHER)\\(" + name + ",)");
    auto n = std::distance(std::sregex_iterator(src.begin(), src.end(), def), std::sregex_iterator());
    EXPECT_EQ(n, 1) << name;
  }
  EXPECT_EQ(pd::cuda::copy_kernel(4), "pd_copy_4");
  EXPECT_EQ(pd::cuda::copy_kernel(3), "");
  EXPECT_EQ(pd::cuda::gather_kernel(16), "");
}

#ifdef PD_HAVE_NVRTC
// The kernels compile for the oldest and newest architectures the CUDA backend targets here.
TEST(CudaKernels, CompileWithNvrtc) {
  int n = 0;
  ASSERT_EQ(nvrtcGetNumSupportedArchs(&n), NVRTC_SUCCESS);
  std::vector<int> archs(n);
  ASSERT_EQ(nvrtcGetSupportedArchs(archs.data()), NVRTC_SUCCESS);
  for (int arch : {70, 80, archs.back()}) {
    nvrtcProgram prog = nullptr;
    ASSERT_EQ(nvrtcCreateProgram(&prog, pd::cuda::kernel_source().c_str(), "k.cu", 0, nullptr, nullptr), NVRTC_SUCCESS);
    const std::string opt = "--gpu-architecture=sm_" + std::to_string(arch);
    const char* opts[] = {opt.c_str()};
    nvrtcResult r = nvrtcCompileProgram(prog, 1, opts);
    size_t len = 0;
    nvrtcGetProgramLogSize(prog, &len);
    std::string log(len, '\0');
    if (len) nvrtcGetProgramLog(prog, &log[0]);
    EXPECT_EQ(r, NVRTC_SUCCESS) << opt << "\n" << log;
    size_t cubin = 0;
    if (r == NVRTC_SUCCESS) {
      ASSERT_EQ(nvrtcGetCUBINSize(prog, &cubin), NVRTC_SUCCESS);
      EXPECT_GT(cubin, 1000u) << opt;
    }
    nvrtcDestroyProgram(&prog);
  }
}
#endif

#ifdef PD_HAVE_CUDA_PLUGIN
// Without a GPU (this machine, CI) the plugin loads and says why it is unavailable; the runtime
// still serves on cpu. With a GPU the same test checks that it found devices.
TEST(CudaPlugin, ReportsWhyItIsUnavailableOrItsDevices) {
  pd_runtime* rt = nullptr;
  ASSERT_EQ(pd_runtime_create(nullptr, &rt), nullptr);
  bool seen = false;
  for (int32_t i = 0; i < pd_runtime_backend_count(rt); ++i) {
    pd_backend_info bi{};
    ASSERT_EQ(pd_runtime_backend_info(rt, i, &bi), nullptr);
    if (std::string(bi.name) == "cpu") {
      EXPECT_EQ(bi.available, 1);
    }
    if (std::string(bi.name) != "cuda") continue;
    seen = true;
    int32_t n = -1;
    ASSERT_EQ(pd_runtime_device_count(rt, "cuda", &n), nullptr);
    if (bi.available) {
      EXPECT_GT(n, 0);
      EXPECT_TRUE(std::regex_match(std::string(bi.version), std::regex("[0-9.]+-k[0-9a-f]{8}-cudart[0-9]+-cublaslt[0-9]+-nvrtc[0-9.]+")))
          << bi.version;
    } else {
      EXPECT_EQ(n, 0);
      const std::string why = bi.reason;
      // The plugin itself loaded (its CUDA libraries are installed) and refused: no driver or no device.
      EXPECT_EQ(why.find("cannot load plugin"), std::string::npos) << why;
      EXPECT_TRUE(why.find("no NVIDIA driver") != std::string::npos || why.find("CUDA device") != std::string::npos ||
                  why.find("driver too old") != std::string::npos)
          << why;
      // Building for it fails cleanly, naming the reason.
      pd_engine_options* o = nullptr;
      ASSERT_EQ(pd_engine_options_create(&o), nullptr);
      ASSERT_EQ(pd_engine_options_set_backend(o, "cuda"), nullptr);
      pd_engine* e = nullptr;
      pd_error* err = pd_engine_create(rt, "x", 1, o, &e);
      ASSERT_NE(err, nullptr);
      EXPECT_EQ(pd_error_get_code(err), PD_ERR_UNAVAILABLE);
      EXPECT_NE(std::string(pd_error_get_message(err)).find(why), std::string::npos);
      pd_error_free(err);
      pd_engine_options_destroy(o);
    }
  }
  EXPECT_TRUE(seen);
  pd_runtime_destroy(rt);
}
#endif

// On the CPU emulation of CUDA (build/fakecuda): an index out of range in a Gather whose indices
// are an input is caught on the device and fails that run with INVALID_ARG; the context stays
// usable, and the memory it reports grows with its buckets.
std::string gather_model() {
  onnx::ModelProto m = pd::test::empty_model();
  auto* g = m.mutable_graph();
  auto* n = g->add_node();
  n->set_op_type("Gather");
  n->set_name("pick");
  n->add_input("table");
  n->add_input("idx");
  n->add_output("y");
  auto io = [](onnx::ValueInfoProto* v, const char* name, int type, std::vector<int64_t> dims) {
    v->set_name(name);
    auto* tt = v->mutable_type()->mutable_tensor_type();
    tt->set_elem_type(type);
    for (int64_t d : dims) {
      if (d < 0) tt->mutable_shape()->add_dim()->set_dim_param("batch");
      else tt->mutable_shape()->add_dim()->set_dim_value(d);
    }
  };
  io(g->add_input(), "table", onnx::TensorProto::FLOAT, {4, 2});
  io(g->add_input(), "idx", onnx::TensorProto::INT64, {-1});
  io(g->add_output(), "y", onnx::TensorProto::FLOAT, {-1, 2});
  return m.SerializeAsString();
}

TEST(FakeCuda, GatherIndexOutOfRangeFailsTheRunOnly) {
  pd_runtime_options* ro = nullptr;
  ASSERT_EQ(pd_runtime_options_create(&ro), nullptr);
  ASSERT_EQ(pd_runtime_options_set_backend_dir(ro, PD_FAKE_CUDA_DIR), nullptr);
  pd_runtime* rt = nullptr;
  ASSERT_EQ(pd_runtime_create(ro, &rt), nullptr);
  pd_runtime_options_destroy(ro);
  pd_engine_options* eo = nullptr;
  ASSERT_EQ(pd_engine_options_create(&eo), nullptr);
  ASSERT_EQ(pd_engine_options_set_backend(eo, "cuda"), nullptr);
  const std::string model = gather_model();
  pd_engine* e = nullptr;
  pd_error* err = pd_engine_create(rt, model.data(), model.size(), eo, &e);
  ASSERT_EQ(err, nullptr) << pd_error_get_message(err);
  pd_context* c = nullptr;
  ASSERT_EQ(pd_context_create(e, &c), nullptr);

  float table[8] = {0, 1, 10, 11, 20, 21, 30, 31};
  auto run = [&](std::vector<int64_t> idx, pd_tensor* out) {
    pd_tensor in[2] = {};
    in[0] = pd_tensor{PD_DTYPE_FLOAT32, 2, {4, 2}, table, sizeof table};
    in[1] = pd_tensor{PD_DTYPE_INT64, 1, {static_cast<int64_t>(idx.size())}, idx.data(), idx.size() * 8};
    return pd_context_run(c, in, 2, out, 1);
  };
  pd_tensor out{};
  ASSERT_EQ(run({2, -1}, &out), nullptr);
  ASSERT_EQ(out.rank, 2);
  const float* y = static_cast<const float*>(out.data);
  EXPECT_EQ(std::vector<float>(y, y + 4), (std::vector<float>{20, 21, 30, 31}));

  err = run({1, 4}, &out);
  ASSERT_NE(err, nullptr);
  EXPECT_EQ(pd_error_get_code(err), PD_ERR_INVALID_ARG);
  EXPECT_NE(std::string(pd_error_get_message(err)).find("Gather index is out of range"), std::string::npos)
      << pd_error_get_message(err);
  pd_error_free(err);

  pd_memory_info mi{};
  ASSERT_EQ(pd_context_memory(c, &mi), nullptr);
  EXPECT_EQ(mi.buckets, 1u);
  EXPECT_GE(mi.arena_bytes, sizeof table + 16 + 16);
  ASSERT_EQ(run({0, 0, 3}, &out), nullptr);  // a second bucket, and the context still works
  y = static_cast<const float*>(out.data);
  EXPECT_EQ(std::vector<float>(y, y + 6), (std::vector<float>{0, 1, 0, 1, 30, 31}));
  ASSERT_EQ(pd_context_memory(c, &mi), nullptr);
  EXPECT_EQ(mi.buckets, 2u);

  pd_context_destroy(c);
  pd_engine_destroy(e);
  pd_engine_options_destroy(eo);
  pd_runtime_destroy(rt);
}

}  // namespace
