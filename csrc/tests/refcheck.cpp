// Reference checker and engine benchmark for one backend, through the public C ABI.
//
//   pd_refcheck [--backend NAME] [--backend-dir DIR] [--repo DIR] [--cache-roundtrip]
//               [--rtol R] [--atol A] REF.json...
//       Runs each ONNX Runtime reference (testdata/reference/*.json: model path relative to
//       --repo, inputs, expected outputs) on the backend, three times on one context (on cuda
//       an eager run, the graph capture, a replay: all must agree), and compares every deterministic
//       output: |got - want| <= atol + rtol * |want| (defaults 1e-5, 1e-3); integers exactly;
//       outputs of random ops by dtype and shape. A model the backend refuses with
//       PD_ERR_UNSUPPORTED is reported as FALLBACK with the reason (the server would run it on
//       the next backend) and is not a failure. --cache-roundtrip also serializes each engine,
//       builds a second one from the cache and requires the same outputs (GPU backends).
//       Exit status 1 when any comparison fails. --batch-profile MIN,OPT,MAX sets the engines'
//       batch profile (pd_engine_options_set_batch_profile: tensorrt's optimization profile);
//       --param BACKEND.KEY=VALUE (repeatable) a backend parameter (cuda.graphs=false).
//   pd_refcheck --bench 1,32,256 [--seconds S] [--backend …] [--repo …] REF.json...
//       For each distinct model of the references: engine time per run at each batch size
//       (end to end through pd_context_run, host<->device copies included) and, where the
//       backend measures it (cuda), the device time of the kernels alone. Prints one
//       "BENCH <model> <batch> <e2e p50 us> <e2e mean us> <device mean us>" line each.
//   pd_refcheck --list-ops MODEL.onnx...
//       The ops of each model after the core's passes (what a backend must run).
//   pd_refcheck --export-gemms MODEL.onnx DIR
//       Writes the model's chain of Gemm layers (W as [out, in] float32, bias, activation) to
//       DIR/layers.txt + DIR/*.bin, for a PyTorch-eager baseline of the same MLP
//       (bench/gpu/torch_mlp.py).
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <map>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "onnx_import.h"
#include "passes.h"
#include "policyd.h"
#include "test_util.h"

namespace {

using json = nlohmann::json;

using pd::test::slurp;

std::string take(pd_error* e) {
  std::string m = pd_error_get_message(e);
  pd_error_free(e);
  return m;
}

struct Failure : std::runtime_error {
  pd_error_code code;
  Failure(pd_error_code c, const std::string& m) : std::runtime_error(m), code(c) {}
};

void check(pd_error* e, const char* what) {
  if (!e) return;
  pd_error_code c = pd_error_get_code(e);
  throw Failure(c, std::string(what) + ": " + take(e));
}

int dtype_of(const std::string& kserve) {
  static const std::map<std::string, int> m = {{"FP32", PD_DTYPE_FLOAT32}, {"FP64", PD_DTYPE_FLOAT64},
                                               {"INT64", PD_DTYPE_INT64},   {"INT32", PD_DTYPE_INT32},
                                               {"BOOL", PD_DTYPE_BOOL},     {"UINT8", PD_DTYPE_UINT8},
                                               {"INT8", PD_DTYPE_INT8}};
  auto it = m.find(kserve);
  if (it == m.end()) throw std::runtime_error("unsupported datatype " + kserve);
  return it->second;
}

size_t dsize(int dt) {
  switch (dt) {
    case PD_DTYPE_FLOAT64: case PD_DTYPE_INT64: return 8;
    case PD_DTYPE_FLOAT32: case PD_DTYPE_INT32: return 4;
    default: return 1;
  }
}

struct HostTensor {
  std::string name;
  int dtype = 0;
  std::vector<int64_t> shape;
  std::vector<unsigned char> bytes;
  bool deterministic = true;
  pd_tensor view() {
    pd_tensor t{};
    t.dtype = dtype;
    t.rank = static_cast<int32_t>(shape.size());
    for (size_t d = 0; d < shape.size(); ++d) t.dims[d] = shape[d];
    t.data = bytes.data();
    t.byte_size = bytes.size();
    return t;
  }
};

HostTensor from_json(const json& j) {
  HostTensor t;
  t.name = j.at("name").get<std::string>();
  t.dtype = dtype_of(j.at("datatype").get<std::string>());
  t.shape = j.at("shape").get<std::vector<int64_t>>();
  if (j.contains("deterministic")) t.deterministic = j.at("deterministic").get<bool>();
  const json& d = j.at("data");
  t.bytes.resize(d.size() * dsize(t.dtype));
  for (size_t i = 0; i < d.size(); ++i) {
    unsigned char* p = t.bytes.data() + i * dsize(t.dtype);
    switch (t.dtype) {
      case PD_DTYPE_FLOAT32: { float v = d[i].get<float>(); std::memcpy(p, &v, 4); break; }
      case PD_DTYPE_FLOAT64: { double v = d[i].get<double>(); std::memcpy(p, &v, 8); break; }
      case PD_DTYPE_INT64: { int64_t v = d[i].get<int64_t>(); std::memcpy(p, &v, 8); break; }
      case PD_DTYPE_INT32: { int32_t v = d[i].get<int32_t>(); std::memcpy(p, &v, 4); break; }
      case PD_DTYPE_BOOL: *p = d[i].get<bool>() ? 1 : 0; break;
      case PD_DTYPE_UINT8: *p = d[i].get<uint8_t>(); break;
      case PD_DTYPE_INT8: *p = static_cast<unsigned char>(d[i].get<int8_t>()); break;
    }
  }
  return t;
}

double value_at(const void* p, int dt, size_t i) {
  switch (dt) {
    case PD_DTYPE_FLOAT32: return static_cast<const float*>(p)[i];
    case PD_DTYPE_FLOAT64: return static_cast<const double*>(p)[i];
    case PD_DTYPE_INT64: return static_cast<double>(static_cast<const int64_t*>(p)[i]);
    case PD_DTYPE_INT32: return static_cast<const int32_t*>(p)[i];
    case PD_DTYPE_INT8: return static_cast<const int8_t*>(p)[i];
    default: return static_cast<const uint8_t*>(p)[i];
  }
}

struct Options {
  std::string backend = "cpu", backend_dir, repo = ".";
  double rtol = 1e-3, atol = 1e-5;
  bool cache_roundtrip = false;
  std::vector<int64_t> bench;
  double seconds = 1.0;
  std::vector<int64_t> batch_profile;  // --batch-profile min,opt,max (tensorrt's optimization profile)
  std::vector<std::pair<std::string, std::string>> params;  // --param <backend>.<key>=value
};

struct Engine {
  pd_engine* e = nullptr;
  ~Engine() { pd_engine_destroy(e); }
};
struct Context {
  pd_context* c = nullptr;
  ~Context() { pd_context_destroy(c); }
};

void make_engine(pd_runtime* rt, const Options& o, const std::string& model, const std::string& name,
                 const std::string* cache, bool profile, Engine* out) {
  std::string bytes = slurp(model);
  pd_engine_options* eo = nullptr;
  check(pd_engine_options_create(&eo), "options");
  check(pd_engine_options_set_backend(eo, o.backend.c_str()), "backend");
  check(pd_engine_options_set_name(eo, name.c_str()), "name");
  if (profile) check(pd_engine_options_set_profiling(eo, 1), "profiling");
  if (cache) check(pd_engine_options_set_cache(eo, cache->data(), cache->size()), "cache");
  for (const auto& [k, v] : o.params) check(pd_engine_options_set_param(eo, k.c_str(), v.c_str()), "param");
  if (o.batch_profile.size() == 3)
    check(pd_engine_options_set_batch_profile(eo, o.batch_profile[0], o.batch_profile[1], o.batch_profile[2]),
          "batch profile");
  pd_error* err = pd_engine_create(rt, bytes.data(), bytes.size(), eo, &out->e);
  pd_engine_options_destroy(eo);
  check(err, "engine");
}

// Runs the reference's inputs three times on one context (cuda: an eager run, the run that
// captures the CUDA graph, a replay) and returns the last outputs, copied out. *unstable names
// a deterministic output whose runs differ.
std::vector<HostTensor> run_inputs(pd_engine* e, std::vector<HostTensor>& inputs, const std::vector<HostTensor>& want,
                                   std::string* unstable) {
  Context c;
  check(pd_context_create(e, &c.c), "context");
  std::vector<pd_tensor> in;
  for (auto& t : inputs) in.push_back(t.view());
  std::vector<HostTensor> res, first;
  for (int run = 0; run < 3; ++run) {
    std::vector<pd_tensor> out(pd_engine_output_count(e));
    check(pd_context_run(c.c, in.data(), static_cast<int32_t>(in.size()), out.data(),
                         static_cast<int32_t>(out.size())), "run");
    res.clear();
    for (auto& t : out) {
      HostTensor h;
      h.dtype = t.dtype;
      h.shape.assign(t.dims, t.dims + t.rank);
      const auto* p = static_cast<const unsigned char*>(t.data);
      h.bytes.assign(p, p + t.byte_size);
      res.push_back(std::move(h));
    }
    if (run == 0) first = res;
    for (size_t i = 0; i < res.size() && unstable->empty(); ++i) {
      pd_io_info info;
      check(pd_engine_output_info(e, static_cast<int32_t>(i), &info), "output info");
      bool deterministic = true;
      for (const auto& w : want)
        if (w.name == info.name) deterministic = w.deterministic;
      if (deterministic && res[i].bytes != first[i].bytes)
        *unstable = std::string(info.name) + " differs between run 1 and run " + std::to_string(run + 1);
    }
  }
  return res;
}

// Compares got against the reference outputs; returns "" or what differs.
std::string compare(pd_engine* e, const std::vector<HostTensor>& got, const std::vector<HostTensor>& want,
                    const Options& o, double* worst) {
  for (const auto& w : want) {
    int idx = -1;
    for (int32_t i = 0; i < pd_engine_output_count(e); ++i) {
      pd_io_info info;
      check(pd_engine_output_info(e, i, &info), "output info");
      if (w.name == info.name) idx = i;
    }
    if (idx < 0) return "no output named " + w.name;
    const HostTensor& g = got[idx];
    if (g.dtype != w.dtype) return w.name + ": dtype differs";
    if (g.shape != w.shape) return w.name + ": shape differs";
    if (!w.deterministic) continue;
    const size_t n = w.bytes.size() / dsize(w.dtype);
    const bool exact = w.dtype != PD_DTYPE_FLOAT32 && w.dtype != PD_DTYPE_FLOAT64;
    for (size_t i = 0; i < n; ++i) {
      double a = value_at(g.bytes.data(), g.dtype, i), b = value_at(w.bytes.data(), w.dtype, i);
      double err = std::fabs(a - b);
      if (!exact) *worst = std::max(*worst, err / (o.atol + o.rtol * std::fabs(b)));
      if (exact ? a != b : !(err <= o.atol + o.rtol * std::fabs(b))) {
        std::ostringstream m;
        m << w.name << "[" << i << "]: got " << a << ", want " << b;
        return m.str();
      }
    }
  }
  return "";
}

int check_refs(pd_runtime* rt, const Options& o, const std::vector<std::string>& files) {
  int failed = 0, passed = 0, fallback = 0;
  for (const auto& f : files) {
    json j = json::parse(slurp(f));
    std::string id = j.at("id").get<std::string>() + "_b" + std::to_string(j.at("batch").get<int>());
    std::string model = o.repo + "/" + j.at("model").get<std::string>();
    std::vector<HostTensor> in, want;
    for (const auto& t : j.at("inputs")) in.push_back(from_json(t));
    for (const auto& t : j.at("outputs")) want.push_back(from_json(t));
    try {
      Engine e;
      try {
        make_engine(rt, o, model, id, nullptr, false, &e);
      } catch (const Failure& fl) {
        if (fl.code == PD_ERR_UNSUPPORTED) {
          std::printf("FALLBACK %-45s %s\n", id.c_str(), fl.what());
          ++fallback;
          continue;
        }
        throw;
      }
      double worst = 0;
      std::string unstable;
      std::string diff = compare(e.e, run_inputs(e.e, in, want, &unstable), want, o, &worst);
      if (diff.empty()) diff = unstable;
      if (diff.empty() && o.cache_roundtrip) {
        void* data = nullptr;
        size_t size = 0;
        check(pd_engine_serialize(e.e, &data, &size), "serialize");
        std::string blob(static_cast<const char*>(data), size);
        pd_engine_serialized_free(data);
        Engine e2;
        make_engine(rt, o, model, id + " (from cache)", &blob, false, &e2);
        diff = compare(e2.e, run_inputs(e2.e, in, want, &unstable), want, o, &worst);
        if (diff.empty()) diff = unstable;
        if (!diff.empty()) diff = "from its cache: " + diff;
      }
      if (diff.empty()) {
        std::printf("PASS     %-45s worst %.3f of tolerance\n", id.c_str(), worst);
        ++passed;
      } else {
        std::printf("FAIL     %-45s %s\n", id.c_str(), diff.c_str());
        ++failed;
      }
    } catch (const std::exception& ex) {
      std::printf("FAIL     %-45s %s\n", id.c_str(), ex.what());
      ++failed;
    }
  }
  std::printf("refcheck %s: %d passed, %d failed, %d fell back\n", o.backend.c_str(), passed, failed, fallback);
  return failed ? 1 : 0;
}

int bench(pd_runtime* rt, const Options& o, const std::vector<std::string>& files) {
  std::set<std::string> seen;
  for (const auto& f : files) {
    json j = json::parse(slurp(f));
    std::string model = j.at("model").get<std::string>();
    if (!seen.insert(model).second) continue;
    std::string id = j.at("id").get<std::string>();
    // End-to-end times come from an engine without profiling (what a server runs); the device
    // time from a second, profiled engine (its events are part of its CUDA graph).
    Engine e, ep;
    try {
      make_engine(rt, o, o.repo + "/" + model, id, nullptr, false, &e);
      make_engine(rt, o, o.repo + "/" + model, id, nullptr, true, &ep);
    } catch (const Failure& fl) {
      std::printf("BENCH-SKIP %s %s\n", id.c_str(), fl.what());
      continue;
    }
    if (!pd_engine_batchable(e.e)) {
      std::printf("BENCH-SKIP %s not batchable\n", id.c_str());
      continue;
    }
    std::vector<HostTensor> ref_in;
    for (const auto& t : j.at("inputs")) ref_in.push_back(from_json(t));
    for (int64_t batch : o.bench) {
      // Inputs of this batch: the reference's first row repeated.
      std::vector<HostTensor> in;
      for (int32_t i = 0; i < pd_engine_input_count(e.e); ++i) {
        pd_io_info info;
        check(pd_engine_input_info(e.e, i, &info), "input info");
        HostTensor t = ref_in.at(i);
        int bd = info.batch_dim;
        int64_t b0 = t.shape.at(bd);
        size_t outer = 1, inner = dsize(t.dtype);
        for (int d = 0; d < bd; ++d) outer *= t.shape[d];
        for (size_t d = bd + 1; d < t.shape.size(); ++d) inner *= t.shape[d];
        std::vector<unsigned char> bytes(outer * batch * inner);
        for (size_t a = 0; a < outer; ++a)
          for (int64_t b = 0; b < batch; ++b)
            std::memcpy(&bytes[(a * batch + b) * inner], &t.bytes[(a * b0 + b % b0) * inner], inner);
        t.shape[bd] = batch;
        t.bytes = std::move(bytes);
        in.push_back(std::move(t));
      }
      Context c, cp;
      check(pd_context_create(e.e, &c.c), "context");
      check(pd_context_create(ep.e, &cp.c), "context");
      std::vector<pd_tensor> iv;
      for (auto& t : in) iv.push_back(t.view());
      std::vector<pd_tensor> ov(pd_engine_output_count(e.e));
      auto run = [&](pd_context* ctx) {
        check(pd_context_run(ctx, iv.data(), static_cast<int32_t>(iv.size()), ov.data(),
                             static_cast<int32_t>(ov.size())), "run");
      };
      for (int i = 0; i < 20; ++i) run(c.c), run(cp.c);  // warm-up (CUDA: eager run, then graph capture)
      std::vector<double> us;
      auto t_end = std::chrono::steady_clock::now() + std::chrono::duration<double>(o.seconds);
      while (std::chrono::steady_clock::now() < t_end || us.size() < 20) {
        auto t0 = std::chrono::steady_clock::now();
        run(c.c);
        us.push_back(std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count());
      }
      double dev_sum = 0;
      bool dev = true;
      const size_t dev_runs = std::max<size_t>(20, us.size() / 4);
      for (size_t i = 0; i < dev_runs && dev; ++i) {
        run(cp.c);
        double ms = 0;
        pd_error* err = pd_context_device_time(cp.c, &ms);
        if (err) {
          pd_error_free(err);
          dev = false;
        } else {
          dev_sum += ms * 1000;
        }
      }
      double mean = 0;
      for (double v : us) mean += v;
      mean /= us.size();
      std::sort(us.begin(), us.end());
      std::printf("BENCH %s %lld %.1f %.1f %s\n", id.c_str(), static_cast<long long>(batch), us[us.size() / 2],
                  mean, dev ? std::to_string(dev_sum / dev_runs).c_str() : "-");
      std::fflush(stdout);
    }
  }
  return 0;
}

int list_ops(const std::vector<std::string>& models) {
  for (const auto& m : models) {
    pd::Graph g = pd::test::backend_graph(m);
    std::map<std::string, int> count;
    for (const auto& n : g.nodes) {
      std::string k = (n.domain.empty() ? "" : n.domain + ".") + n.op;
      if (n.has("activation")) k += "(" + n.attr_string("activation", "") + ")";
      ++count[k];
    }
    std::printf("%s:", m.c_str());
    for (const auto& [k, v] : count) std::printf(" %s×%d", k.c_str(), v);
    std::printf("\n");
  }
  return 0;
}

// The chain of Gemm layers of an MLP: W as [out, in], bias [out], activation after it.
int export_gemms(const std::string& model, const std::string& dir) {
  pd::Graph g = pd::test::backend_graph(model);
  std::ofstream layers(dir + "/layers.txt");
  if (!layers) throw std::runtime_error("cannot write " + dir + "/layers.txt");
  int i = 0;
  for (const auto& n : g.nodes) {
    if (n.op != "Gemm" && n.op != "FusedGemm") {
      if (n.op == "Relu" || n.op == "Tanh" || n.op == "Elu") {
        layers << "act " << n.op << "\n";
        continue;
      }
      throw std::runtime_error(model + ": not a chain of Gemm layers (" + n.describe() + ")");
    }
    if (n.attr_float("alpha", 1.f) != 1.f || n.attr_int("transA", 0) != 0 || n.inputs.size() < 3 ||
        !g.is_constant(n.inputs[1]) || !g.is_constant(n.inputs[2]))
      throw std::runtime_error(model + ": " + n.describe() + " is not a plain linear layer");
    const pd::Tensor& w = *g.constants.at(n.inputs[1]);
    const pd::Tensor& b = *g.constants.at(n.inputs[2]);
    const bool tb = n.attr_int("transB", 0) != 0;
    const int64_t out = tb ? w.shape()[0] : w.shape()[1], in = tb ? w.shape()[1] : w.shape()[0];
    std::vector<float> wt(out * in);
    for (int64_t r = 0; r < out; ++r)
      for (int64_t c = 0; c < in; ++c) wt[r * in + c] = tb ? w.as<float>()[r * in + c] : w.as<float>()[c * out + r];
    std::string wf = "w" + std::to_string(i) + ".bin", bf = "b" + std::to_string(i) + ".bin";
    std::ofstream(dir + "/" + wf, std::ios::binary).write(reinterpret_cast<const char*>(wt.data()), wt.size() * 4);
    std::ofstream(dir + "/" + bf, std::ios::binary).write(static_cast<const char*>(b.data()), b.nbytes());
    layers << "linear " << in << " " << out << " " << wf << " " << bf << "\n";
    std::string act = n.attr_string("activation", "");
    if (!act.empty()) layers << "act " << act << "\n";
    ++i;
  }
  return 0;
}

void usage() {
  std::fprintf(stderr,
               "usage: pd_refcheck [--backend NAME] [--backend-dir DIR] [--repo DIR] [--rtol R] [--atol A]\n"
               "                   [--cache-roundtrip] [--batch-profile MIN,OPT,MAX] [--param BACKEND.KEY=VALUE]...\n"
               "                   [--bench 1,32,256 [--seconds S]] REF.json...\n"
               "       pd_refcheck --list-ops MODEL.onnx...\n"
               "       pd_refcheck --export-gemms MODEL.onnx DIR\n");
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  std::vector<std::string> files;
  std::string mode = "check";
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) {
        usage();
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "--backend") o.backend = next();
    else if (a == "--backend-dir") o.backend_dir = next();
    else if (a == "--repo") o.repo = next();
    else if (a == "--rtol") o.rtol = std::stod(next());
    else if (a == "--atol") o.atol = std::stod(next());
    else if (a == "--seconds") o.seconds = std::stod(next());
    else if (a == "--cache-roundtrip") o.cache_roundtrip = true;
    else if (a == "--param") {  // a backend parameter (cuda.graphs=false)
      const std::string kv = next();
      const size_t eq = kv.find('=');
      if (eq == std::string::npos) {
        usage();
        return 2;
      }
      o.params.emplace_back(kv.substr(0, eq), kv.substr(eq + 1));
    }
    else if (a == "--list-ops") mode = "list";
    else if (a == "--export-gemms") mode = "export";
    else if (a == "--bench") {
      mode = "bench";
      std::stringstream ss(next());
      for (std::string b; std::getline(ss, b, ',');) o.bench.push_back(std::stoll(b));
    } else if (a == "--batch-profile") {
      std::stringstream ss(next());
      for (std::string b; std::getline(ss, b, ',');) o.batch_profile.push_back(std::stoll(b));
      if (o.batch_profile.size() != 3) {
        std::fprintf(stderr, "pd_refcheck: --batch-profile takes min,opt,max\n");
        return 2;
      }
    } else if (a.rfind("--", 0) == 0) {
      usage();
      return 2;
    } else {
      files.push_back(a);
    }
  }
  if (files.empty()) {
    usage();
    return 2;
  }
  try {
    if (mode == "list") return list_ops(files);
    if (mode == "export") {
      if (files.size() != 2) {
        usage();
        return 2;
      }
      return export_gemms(files[0], files[1]);
    }
    pd_runtime_options* ro = nullptr;
    check(pd_runtime_options_create(&ro), "runtime options");
    if (!o.backend_dir.empty()) check(pd_runtime_options_set_backend_dir(ro, o.backend_dir.c_str()), "backend dir");
    pd_runtime* rt = nullptr;
    pd_error* err = pd_runtime_create(ro, &rt);
    pd_runtime_options_destroy(ro);
    check(err, "runtime");
    for (int32_t i = 0; i < pd_runtime_backend_count(rt); ++i) {
      pd_backend_info bi;
      check(pd_runtime_backend_info(rt, i, &bi), "backend info");
      std::printf("backend %-8s %s %s\n", bi.name, bi.available ? "available" : "unavailable:",
                  bi.available ? bi.version : bi.reason);
      int32_t nd = 0;
      if (bi.available && !pd_runtime_device_count(rt, bi.name, &nd))
        for (int32_t d = 0; d < nd; ++d) {
          pd_device_info di;
          check(pd_runtime_device_info(rt, bi.name, d, &di), "device info");
          std::printf("  device %d: %s %s, %.1f GiB\n", di.ordinal, di.name, di.target,
                      di.total_memory / 1073741824.0);
        }
    }
    int rc = mode == "bench" ? bench(rt, o, files) : check_refs(rt, o, files);
    pd_runtime_destroy(rt);
    return rc;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "pd_refcheck: %s\n", e.what());
    return 1;
  }
}
