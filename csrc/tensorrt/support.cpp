#include "support.h"

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <set>

#include "../core/engine_cache.h"

namespace pd::trt {

// ---- parameters ------------------------------------------------------------------------------

std::vector<std::string> param_keys() { return {"builder_optimization_level", "precision", "workspace_mib"}; }

namespace {

// A whole decimal integer in [lo, hi], or false.
bool parse_int(const std::string& s, int64_t lo, int64_t hi, int64_t* out) {
  if (s.empty() || s.size() > 18) return false;
  for (char c : s)
    if (c < '0' || c > '9') return false;
  const int64_t v = std::strtoll(s.c_str(), nullptr, 10);
  if (v < lo || v > hi) return false;
  *out = v;
  return true;
}

}  // namespace

Params parse_params(const std::map<std::string, std::string>& params) {
  Params p;
  for (const auto& [k, v] : params) {
    if (k == "precision") {
      if (v != "fp32" && v != "fp16" && v != "bf16")
        fail(PD_ERR_INVALID_ARG, "tensorrt parameter 'precision' must be fp32, fp16 or bf16, got '", v, "'");
      p.precision = v;
    } else if (k == "workspace_mib") {
      // Up to 1 TiB: more than any GPU has, small enough not to overflow in bytes.
      if (!parse_int(v, 1, int64_t{1} << 20, &p.workspace_mib))
        fail(PD_ERR_INVALID_ARG, "tensorrt parameter 'workspace_mib' must be an integer from 1 to 1048576, got '", v,
             "'");
    } else if (k == "builder_optimization_level") {
      int64_t level = 0;
      if (!parse_int(v, 0, 5, &level))
        fail(PD_ERR_INVALID_ARG, "tensorrt parameter 'builder_optimization_level' must be an integer from 0 to 5, got '",
             v, "'");
      p.builder_optimization_level = static_cast<int>(level);
    } else {
      fail(PD_ERR_INVALID_ARG, "backend 'tensorrt' has no build parameter '", k,
           "' (known: builder_optimization_level, precision, workspace_mib)");
    }
  }
  return p;
}

// ---- the optimization profile ----------------------------------------------------------------

BatchProfile batch_profile(const Graph& g, int64_t min_batch, int64_t opt_batch, int64_t max_batch) {
  if (max_batch == 0) max_batch = std::max(opt_batch, kDefaultMaxBatch);
  PD_CHECK_ARG(min_batch >= 1 && opt_batch >= min_batch && max_batch >= opt_batch,
               "batch profile must satisfy 1 <= min <= opt <= max, got min ", min_batch, ", opt ", opt_batch, ", max ",
               max_batch);
  BatchProfile p;
  p.min_batch = min_batch;
  p.opt_batch = opt_batch;
  p.max_batch = max_batch;
  for (const auto& in : g.inputs) {
    if (!in.has_shape)
      fail(PD_ERR_UNSUPPORTED, "input '", in.name, "' declares no shape; the tensorrt backend needs its rank");
    if (in.value_input)
      fail(PD_ERR_UNSUPPORTED, "input '", in.name,
           "' is a shape tensor (its values select shapes); the tensorrt backend builds one profile over the batch "
           "dimension only");
    InputProfile ip;
    ip.name = in.name;
    ip.batch_dim = in.batch_dim;
    for (size_t d = 0; d < in.dims.size(); ++d) {
      int64_t lo = in.dims[d], mid = in.dims[d], hi = in.dims[d];
      if (static_cast<int>(d) == in.batch_dim) {
        lo = min_batch;
        mid = opt_batch;
        hi = max_batch;
      } else if (in.dims[d] < 0) {
        const std::string sym = d < in.dim_params.size() && !in.dim_params[d].empty() ? " ('" + in.dim_params[d] + "')" : "";
        fail(PD_ERR_UNSUPPORTED, "input '", in.name, "' dimension ", d, sym,
             " is free and not the batch dimension; the tensorrt backend builds one profile over the batch "
             "dimension only");
      }
      ip.min.push_back(lo);
      ip.opt.push_back(mid);
      ip.max.push_back(hi);
    }
    p.batched = p.batched || ip.batch_dim >= 0;
    p.inputs.push_back(std::move(ip));
  }
  if (!p.batched) p.min_batch = p.opt_batch = p.max_batch = 1;
  return p;
}

int64_t run_batch(const BatchProfile& p, const pd_tensor* inputs) {
  int64_t batch = 0;
  std::string first;
  for (size_t i = 0; i < p.inputs.size(); ++i) {
    const InputProfile& ip = p.inputs[i];
    if (ip.batch_dim < 0) continue;
    PD_CHECK_ARG(ip.batch_dim < inputs[i].rank, "input '", ip.name, "' has rank ", inputs[i].rank, ", its batch is dimension ",
                 ip.batch_dim);
    const int64_t b = inputs[i].dims[ip.batch_dim];
    if (first.empty()) {
      batch = b;
      first = ip.name;
    } else {
      PD_CHECK_ARG(b == batch, "input '", ip.name, "' has batch ", b, ", input '", first, "' has batch ", batch);
    }
  }
  if (first.empty()) return 0;
  PD_CHECK_ARG(batch >= p.min_batch && batch <= p.max_batch, "batch ", batch, " is outside the engine's batch profile [",
               p.min_batch, ", ", p.max_batch, "] (the tensorrt plan was built for it; rebuild with a larger max_batch)");
  return batch;
}

std::string options_key(const Params& params, const BatchProfile& profile) {
  return str("precision=", params.precision, ";workspace_mib=", params.workspace_mib,
             ";opt_level=", params.builder_optimization_level, ";batch=", profile.min_batch, "/", profile.opt_batch, "/",
             profile.max_batch);
}

// ---- graphs TensorRT must not run ------------------------------------------------------------

std::string unsupported_reason(const Graph& g) {
  static const std::set<std::string> kRandom = {"RandomNormal", "RandomNormalLike", "RandomUniform",
                                                "RandomUniformLike", "Multinomial", "Bernoulli"};
  for (const auto& n : g.nodes)
    if (n.domain.empty() && kRandom.count(n.op))
      return n.describe() +
             ": random operators run on the CPU backend only (TensorRT would draw from its own generator, not the "
             "seeded per-row streams of csrc/core/ops/random.cpp)";
  return "";
}

// ---- the ONNX parser's errors ----------------------------------------------------------------

std::string parser_code_name(int code) {
  static const char* const kNames[] = {"kSUCCESS",
                                       "kINTERNAL_ERROR",
                                       "kMEM_ALLOC_FAILED",
                                       "kMODEL_DESERIALIZE_FAILED",
                                       "kINVALID_VALUE",
                                       "kINVALID_GRAPH",
                                       "kINVALID_NODE",
                                       "kUNSUPPORTED_GRAPH",
                                       "kUNSUPPORTED_NODE",
                                       "kUNSUPPORTED_NODE_ATTR",
                                       "kUNSUPPORTED_NODE_INPUT",
                                       "kUNSUPPORTED_NODE_DATATYPE",
                                       "kUNSUPPORTED_NODE_DYNAMIC",
                                       "kUNSUPPORTED_NODE_SHAPE",
                                       "kREFIT_FAILED"};
  if (code >= 0 && code < static_cast<int>(sizeof kNames / sizeof kNames[0])) return kNames[code];
  return str("code ", code);
}

Error parser_failure(const std::string& model, const std::vector<ParserError>& errors) {
  if (errors.empty())
    return Error(PD_ERR_UNSUPPORTED, str(model, ": TensorRT's ONNX parser refused the model without saying why"));
  const ParserError& e = errors.front();
  const pd_error_code code = e.code == 2 /* kMEM_ALLOC_FAILED */ ? PD_ERR_UNAVAILABLE : PD_ERR_UNSUPPORTED;
  std::string where;
  if (!e.node_op.empty() || !e.node_name.empty() || e.node >= 0) {
    where = e.node_op.empty() ? "node" : e.node_op + " node";
    if (!e.node_name.empty()) where += " '" + e.node_name + "'";
    if (e.node >= 0) where += str(" (#", e.node, ")");
  } else {
    where = "the graph";
  }
  std::string desc = e.desc;
  while (!desc.empty() && (desc.back() == '\n' || desc.back() == ' ')) desc.pop_back();
  std::string more = errors.size() > 1 ? str(" (and ", errors.size() - 1, " more errors)") : "";
  return Error(code, str(model, ": TensorRT's ONNX parser refused ", where, ": ", parser_code_name(e.code), ": ", desc,
                         more));
}

// ---- versions --------------------------------------------------------------------------------

std::string version_string(int32_t v) { return str(v / 10000, ".", v / 100 % 100, ".", v % 100); }

std::string check_version(int32_t v) {
  if (v < 100000)
    return str("TensorRT ", version_string(v), " is too old: the tensorrt backend needs TensorRT 10 or newer");
  return "";
}

bool log_level(int severity, pd_log_level* level) {
  switch (severity) {
    case 0:  // kINTERNAL_ERROR
    case 1:  // kERROR
      *level = PD_LOG_ERROR;
      return true;
    case 2:  // kWARNING
      *level = PD_LOG_WARN;
      return true;
    case 3:  // kINFO
      *level = PD_LOG_DEBUG;
      return true;
    default:  // kVERBOSE
      return false;
  }
}

// ---- payloads --------------------------------------------------------------------------------

namespace {

const char kPayloadMagic[] = "policyd-tensorrt-engine 1\n";
const char kTimingMagic[] = "policyd-tensorrt-timing 1\n";

// "key=value\n" lines up to an empty line; the rest after it.
std::map<std::string, std::string> header(const std::string& b, size_t start, const char* what, size_t* body) {
  const size_t end = b.find("\n\n", start);
  if (end == std::string::npos) fail(PD_ERR_INVALID_ARG, what, ": truncated header");
  std::map<std::string, std::string> kv;
  size_t pos = start;
  while (pos <= end) {
    const size_t nl = b.find('\n', pos);
    const std::string line = b.substr(pos, nl - pos);
    pos = nl + 1;
    const size_t eq = line.find('=');
    if (eq == std::string::npos) fail(PD_ERR_INVALID_ARG, what, ": bad header line '", line, "'");
    kv[line.substr(0, eq)] = line.substr(eq + 1);
  }
  *body = end + 2;
  return kv;
}

size_t size_field(const std::map<std::string, std::string>& kv, const std::string& key, const char* what) {
  auto it = kv.find(key);
  if (it == kv.end()) fail(PD_ERR_INVALID_ARG, what, ": no ", key, " in the header");
  int64_t v = 0;
  if (!parse_int(it->second, 0, int64_t{1} << 50, &v)) fail(PD_ERR_INVALID_ARG, what, ": bad ", key, " '", it->second, "'");
  return static_cast<size_t>(v);
}

const std::string& field(const std::map<std::string, std::string>& kv, const std::string& key, const char* what) {
  auto it = kv.find(key);
  if (it == kv.end()) fail(PD_ERR_INVALID_ARG, what, ": no ", key, " in the header");
  return it->second;
}

}  // namespace

std::string encode_payload(const Payload& p) {
  std::string h = kPayloadMagic;
  h += "tensorrt=" + p.tensorrt + "\ntarget=" + p.target + "\noptions=" + p.options +
       "\nplan_size=" + std::to_string(p.plan.size()) + "\nplan_fnv1a64=" + fnv1a64_tag(p.plan.data(), p.plan.size()) +
       "\ntiming_cache_size=" + std::to_string(p.timing_cache.size()) + "\n\n";
  return h + p.plan + p.timing_cache;
}

Payload decode_payload(const std::string& b) {
  static const char* kWhat = "TensorRT engine cache";
  const size_t ml = std::strlen(kPayloadMagic);
  if (b.compare(0, ml, kPayloadMagic) != 0)
    fail(PD_ERR_INVALID_ARG, kWhat, ": not made by this backend (no 'policyd-tensorrt-engine 1' header)");
  size_t body = 0;
  const auto kv = header(b, ml, kWhat, &body);
  static const std::set<std::string> kKeys = {"tensorrt",     "target",      "options",          "plan_size",
                                              "plan_fnv1a64", "timing_cache_size"};
  for (const auto& [k, v] : kv)
    if (!kKeys.count(k)) fail(PD_ERR_INVALID_ARG, kWhat, ": unknown header key '", k, "'");
  Payload p;
  p.tensorrt = field(kv, "tensorrt", kWhat);
  p.target = field(kv, "target", kWhat);
  p.options = field(kv, "options", kWhat);
  const size_t plan = size_field(kv, "plan_size", kWhat), timing = size_field(kv, "timing_cache_size", kWhat);
  const size_t have = b.size() - body;
  if (plan + timing != have)
    fail(PD_ERR_INVALID_ARG, kWhat, ": ", have, " bytes after the header, it says ", plan, " + ", timing, " (truncated?)");
  p.plan = b.substr(body, plan);
  p.timing_cache = b.substr(body + plan, timing);
  const std::string sum = fnv1a64_tag(p.plan.data(), p.plan.size());
  if (sum != field(kv, "plan_fnv1a64", kWhat))
    fail(PD_ERR_INVALID_ARG, kWhat, ": the plan's checksum is ", sum, ", the header says ", kv.at("plan_fnv1a64"),
         " (corrupt)");
  if (p.plan.empty()) fail(PD_ERR_INVALID_ARG, kWhat, ": no plan");
  return p;
}

void check_payload(const Payload& want, const Payload& got) {
  auto cmp = [](const char* what, const std::string& w, const std::string& g, const char* need) {
    if (w != g)
      fail(PD_ERR_INVALID_ARG, "TensorRT engine cache was built ", what, " '", g, "', ", need, " '", w,
           "'; rebuild engines");
  };
  cmp("with TensorRT", want.tensorrt, got.tensorrt, "this runtime is");
  cmp("for compute capability", want.target, got.target, "this device is");
  cmp("with options", want.options, got.options, "this engine asks for");
}

std::string encode_timing_cache(const std::string& tensorrt, const std::string& target, const std::string& raw) {
  return std::string(kTimingMagic) + "tensorrt=" + tensorrt + "\ntarget=" + target +
         "\nsize=" + std::to_string(raw.size()) + "\n\n" + raw;
}

std::string decode_timing_cache(const std::string& b, const std::string& tensorrt, const std::string& target,
                                std::string* why) {
  why->clear();
  if (b.empty()) return "";
  const size_t ml = std::strlen(kTimingMagic);
  if (b.compare(0, ml, kTimingMagic) != 0) {
    *why = "the timing cache was not made by the tensorrt backend (no 'policyd-tensorrt-timing 1' header)";
    return "";
  }
  try {
    size_t body = 0;
    const auto kv = header(b, ml, "timing cache", &body);
    const std::string& v = field(kv, "tensorrt", "timing cache");
    const std::string& t = field(kv, "target", "timing cache");
    if (v != tensorrt) {
      *why = str("the timing cache was measured with TensorRT '", v, "', this runtime is '", tensorrt, "'");
      return "";
    }
    if (t != target) {
      *why = str("the timing cache was measured on '", t, "', this device is '", target, "'");
      return "";
    }
    const size_t n = size_field(kv, "size", "timing cache");
    if (n != b.size() - body) {
      *why = str("the timing cache has ", b.size() - body, " bytes, its header says ", n);
      return "";
    }
    return b.substr(body);
  } catch (const Error& e) {
    *why = e.what();
    return "";
  }
}

}  // namespace pd::trt
