// pd_quant_bench: a by-hand timing of policyd's int8 path (not a test; not run by ctest).
//
//   pd_quant_bench MODEL.onnx [--batch 256] [--runs 200] [--threads 1] [--write-int8 OUT.onnx]
//                  [--only int8|float32]
//
// Quantizes the float model's Gemm/MatMul layers (constant 2-D weights) the way ONNX Runtime's
// quantize_dynamic does with its defaults (per-tensor symmetric int8 weights, uint8
// activations through DynamicQuantizeLinear, MatMulInteger -> Cast -> Mul(x_scale * w_scale)
// [-> Add bias]), then times `runs` runs of both models at one batch size through the C ABI
// on the cpu backend, after warm-up, and prints the throughput of each and how far the int8
// outputs are from the float ones. --write-int8 saves the quantized model (to run it on ONNX
// Runtime for comparison).
#include <onnx/onnx_pb.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "policyd.h"
#include "test_util.h"

namespace {

const onnx::TensorProto* find_init(const onnx::GraphProto& g, const std::string& name) {
  for (const auto& t : g.initializer())
    if (t.name() == name) return &t;
  return nullptr;
}

std::vector<float> floats_of(const onnx::TensorProto& t) {
  int64_t n = 1;
  for (int64_t d : t.dims()) n *= d;
  std::vector<float> v(static_cast<size_t>(n));
  if (t.has_raw_data()) std::memcpy(v.data(), t.raw_data().data(), v.size() * sizeof(float));
  else for (int64_t i = 0; i < n; ++i) v[i] = t.float_data(static_cast<int>(i));
  return v;
}

// Rewrites every Gemm (alpha = beta = 1, transA = 0) and MatMul with a constant float [K, N]
// (Gemm transB: [N, K]) weight into ONNX Runtime's dynamic-quantization pattern.
int quantize_dynamic(onnx::ModelProto& m) {
  onnx::GraphProto* g = m.mutable_graph();
  google::protobuf::RepeatedPtrField<onnx::NodeProto> out;
  int done = 0;
  for (const auto& n : g->node()) {
    const bool gemm = n.op_type() == "Gemm", mm = n.op_type() == "MatMul";
    const onnx::TensorProto* w = (gemm || mm) && n.input_size() >= 2 ? find_init(*g, n.input(1)) : nullptr;
    bool ok = w && w->data_type() == onnx::TensorProto::FLOAT && w->dims_size() == 2;
    bool tb = false;
    for (const auto& a : n.attribute()) {
      if (a.name() == "transB") tb = a.i() != 0;
      if (a.name() == "transA" && a.i() != 0) ok = false;
      if ((a.name() == "alpha" || a.name() == "beta") && a.f() != 1.f) ok = false;
    }
    if (!ok) {
      *out.Add() = n;
      continue;
    }
    const int64_t k = tb ? w->dims(1) : w->dims(0), nn = tb ? w->dims(0) : w->dims(1);
    std::vector<float> wf = floats_of(*w);
    float amax = 0;
    for (float v : wf) amax = std::max(amax, std::fabs(v));
    const float scale = amax > 0 ? amax / 127.f : 1.f;
    std::string wq(static_cast<size_t>(k * nn), '\0');
    for (int64_t i = 0; i < k; ++i)
      for (int64_t j = 0; j < nn; ++j) {
        const float v = tb ? wf[j * k + i] : wf[i * nn + j];
        const float q = std::nearbyint(v / scale);
        wq[i * nn + j] = static_cast<char>(static_cast<int8_t>(std::max(-127.f, std::min(127.f, q))));
      }
    const std::string p = n.name().empty() ? n.output(0) : n.name();
    auto* t = g->add_initializer();
    t->set_name(p + "_Wq");
    t->set_data_type(onnx::TensorProto::INT8);
    t->add_dims(k);
    t->add_dims(nn);
    t->set_raw_data(wq);
    t = g->add_initializer();
    t->set_name(p + "_Wz");
    t->set_data_type(onnx::TensorProto::INT8);
    t->set_raw_data(std::string(1, '\0'));
    t = g->add_initializer();
    t->set_name(p + "_Ws");
    t->set_data_type(onnx::TensorProto::FLOAT);
    t->add_float_data(scale);
    auto node = [&](const char* op, std::vector<std::string> in, std::vector<std::string> o, const std::string& name) {
      onnx::NodeProto* x = out.Add();
      x->set_op_type(op);
      x->set_name(p + name);
      for (auto& s : in) x->add_input(s);
      for (auto& s : o) x->add_output(s);
      return x;
    };
    node("DynamicQuantizeLinear", {n.input(0)}, {p + "_xq", p + "_xs", p + "_xz"}, "_QuantizeLinear");
    node("MatMulInteger", {p + "_xq", p + "_Wq", p + "_xz", p + "_Wz"}, {p + "_y32"}, "_MatMulInteger");
    auto* cast = node("Cast", {p + "_y32"}, {p + "_yf"}, "_cast");
    auto* a = cast->add_attribute();
    a->set_name("to");
    a->set_type(onnx::AttributeProto::INT);
    a->set_i(onnx::TensorProto::FLOAT);
    node("Mul", {p + "_xs", p + "_Ws"}, {p + "_s"}, "_scales_mul");
    const bool bias = gemm && n.input_size() >= 3 && !n.input(2).empty();
    node("Mul", {p + "_yf", p + "_s"}, {bias ? p + "_ym" : n.output(0)}, "_output_scale_mul");
    if (bias) node("Add", {p + "_ym", n.input(2)}, {n.output(0)}, "_bias_add");
    ++done;
  }
  g->mutable_node()->Swap(&out);
  // Drop the float weights nothing reads any more.
  std::set<std::string> used;
  for (const auto& n : g->node())
    for (const auto& i : n.input()) used.insert(i);
  google::protobuf::RepeatedPtrField<onnx::TensorProto> keep;
  for (const auto& t : g->initializer())
    if (used.count(t.name())) *keep.Add() = t;
  g->mutable_initializer()->Swap(&keep);
  return done;
}

struct Timed {
  double seconds = 0;
  std::vector<float> out;
};

Timed time_model(pd_runtime* rt, const std::string& bytes, const std::vector<float>& x, int64_t batch, int64_t width,
                 int runs, int threads) {
  pd_engine_options* eo = nullptr;
  pd_engine_options_create(&eo);
  pd_engine_options_set_threads(eo, threads);
  pd_engine* e = nullptr;
  pd_error* err = pd_engine_create(rt, bytes.data(), bytes.size(), eo, &e);
  pd_engine_options_destroy(eo);
  if (err) {
    std::fprintf(stderr, "load: %s\n", pd_error_get_message(err));
    std::exit(1);
  }
  pd_context* c = nullptr;
  pd_context_create(e, &c);
  pd_tensor in{};
  in.dtype = PD_DTYPE_FLOAT32;
  in.rank = 2;
  in.dims[0] = batch;
  in.dims[1] = width;
  in.data = const_cast<float*>(x.data());
  in.byte_size = x.size() * sizeof(float);
  pd_tensor o{};
  for (int i = 0; i < 20; ++i) pd_context_run(c, &in, 1, &o, 1);
  const auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < runs; ++i) {
    if (pd_error* re = pd_context_run(c, &in, 1, &o, 1)) {
      std::fprintf(stderr, "run: %s\n", pd_error_get_message(re));
      std::exit(1);
    }
  }
  Timed t;
  t.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const float* p = static_cast<const float*>(o.data);
  t.out.assign(p, p + o.byte_size / sizeof(float));
  pd_context_destroy(c);
  pd_engine_destroy(e);
  return t;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s MODEL.onnx [--batch N] [--runs N] [--threads N] [--write-int8 OUT]\n", argv[0]);
    return 2;
  }
  int64_t batch = 256;
  int runs = 200, threads = 1;
  std::string write, only;
  for (int i = 2; i + 1 < argc; i += 2) {
    std::string a = argv[i];
    if (a == "--batch") batch = std::atoll(argv[i + 1]);
    else if (a == "--runs") runs = std::atoi(argv[i + 1]);
    else if (a == "--threads") threads = std::atoi(argv[i + 1]);
    else if (a == "--write-int8") write = argv[i + 1];
    else if (a == "--only") only = argv[i + 1];
  }
  const std::string f32 = pd::test::slurp(argv[1]);
  onnx::ModelProto m;
  if (!m.ParseFromString(f32)) {
    std::fprintf(stderr, "cannot parse %s\n", argv[1]);
    return 1;
  }
  const int layers = quantize_dynamic(m);
  const std::string i8 = m.SerializeAsString();
  if (!write.empty()) std::ofstream(write, std::ios::binary) << i8;
  const auto& in0 = m.graph().input(0);
  const int64_t width = in0.type().tensor_type().shape().dim(1).dim_value();
  std::vector<float> x(static_cast<size_t>(batch * width));
  std::mt19937 r(1);
  std::normal_distribution<float> d(0.f, 1.f);
  for (auto& v : x) v = d(r);
  pd_runtime* rt = nullptr;
  pd_runtime_create(nullptr, &rt);
  if (!only.empty()) {  // one model alone (for a profiler)
    const Timed t = time_model(rt, only == "int8" ? i8 : f32, x, batch, width, runs, threads);
    std::printf("%s: %.3f ms/run\n", only.c_str(), 1e3 * t.seconds / runs);
    pd_runtime_destroy(rt);
    return 0;
  }
  const Timed a = time_model(rt, f32, x, batch, width, runs, threads);
  const Timed b = time_model(rt, i8, x, batch, width, runs, threads);
  double max_diff = 0, max_ref = 0;
  for (size_t i = 0; i < a.out.size() && i < b.out.size(); ++i) {
    max_diff = std::max(max_diff, static_cast<double>(std::fabs(a.out[i] - b.out[i])));
    max_ref = std::max(max_ref, static_cast<double>(std::fabs(a.out[i])));
  }
  std::printf("%s: %d layers quantized; batch %lld, %d runs, %d thread(s)\n", argv[1], layers,
              static_cast<long long>(batch), runs, threads);
  std::printf("float32: %.3f ms/run, %.0f rows/s\n", 1e3 * a.seconds / runs, runs * batch / a.seconds);
  std::printf("int8:    %.3f ms/run, %.0f rows/s (%.2fx)\n", 1e3 * b.seconds / runs, runs * batch / b.seconds,
              a.seconds / b.seconds);
  std::printf("int8 vs float32 outputs: max |diff| %.4g (max |float32| %.4g)\n", max_diff, max_ref);
  pd_runtime_destroy(rt);
  return 0;
}
