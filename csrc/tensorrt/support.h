// The TensorRT backend's host-only parts, which need neither TensorRT nor a GPU: the build
// parameters and the options key an engine cache is bound to, the optimization profile over
// the batch dimension, the graphs it refuses before TensorRT sees them (random operators), the
// mapping of ONNX-parser errors to pd errors, the engine-cache payload and the timing-cache
// envelope. Compiled and unit-tested everywhere (csrc/tests/tensorrt_host_test.cpp);
// backend_tensorrt.cpp holds everything that calls TensorRT or CUDA.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "../core/error.h"
#include "../core/ir.h"
#include "policyd.h"

namespace pd::trt {

// ---- parameters ("tensorrt.<key>" of pd_engine_options_set_param) ----------------------------

struct Params {
  std::string precision = "fp32";  // fp32 | fp16 | bf16
  int64_t workspace_mib = 1024;    // IBuilderConfig memory pool limit kWORKSPACE, > 0
  int builder_optimization_level = 3;  // 0..5, TensorRT's default 3
};

// The keys Params knows, sorted.
std::vector<std::string> param_keys();

// Throws PD_ERR_INVALID_ARG naming the key (and the value) it does not accept.
Params parse_params(const std::map<std::string, std::string>& params);

// ---- the optimization profile ----------------------------------------------------------------

// The largest batch a plan is built for when the engine options give no bound
// (pd_engine_options_set_batch_profile's max 0).
constexpr int64_t kDefaultMaxBatch = 64;

struct InputProfile {
  std::string name;
  int batch_dim = -1;  // -1: the input has no batch dimension (its dims are fixed)
  std::vector<int64_t> min, opt, max;
};

struct BatchProfile {
  int64_t min_batch = 1, opt_batch = 1, max_batch = 1;
  bool batched = false;  // some input has a batch dimension
  std::vector<InputProfile> inputs;  // one per graph input, in the graph's order
};

// min/opt/max dims for every input of g (graph inputs: declared dims, -1 where free, batch_dim
// where the core found one). Batch dimensions get [min_batch, opt_batch, max_batch] (max_batch
// 0: max(opt_batch, kDefaultMaxBatch)); fixed dimensions are fixed. Throws PD_ERR_UNSUPPORTED
// naming the input for what one profile over the batch cannot express (a free dimension that is
// not the batch, a shape-tensor input, an input without a declared shape), and
// PD_ERR_INVALID_ARG for a profile that is not 1 <= min <= opt <= max.
BatchProfile batch_profile(const Graph& g, int64_t min_batch, int64_t opt_batch, int64_t max_batch);

// The batch size of a run (inputs checked against the signature by the host), or 0 when no
// input has a batch dimension; throws PD_ERR_INVALID_ARG when it is outside [min, max] or the
// inputs disagree on it.
int64_t run_batch(const BatchProfile& p, const pd_tensor* inputs);

// Everything that changes the plan, as a stable string an engine cache is bound to:
// "precision=fp16;workspace_mib=1024;opt_level=3;batch=1/8/64".
std::string options_key(const Params& params, const BatchProfile& profile);

// ---- graphs TensorRT must not run ------------------------------------------------------------

// "" or why not: the first random operator (RandomNormal[Like], RandomUniform[Like],
// Multinomial, Bernoulli), naming the node. TensorRT would run them with its own generator;
// policyd's seeds and per-row streams (csrc/core/ops/random.cpp) would be ignored.
std::string unsupported_reason(const Graph& g);

// ---- the ONNX parser's errors ----------------------------------------------------------------

// nvonnxparser::IParserError, copied out of the parser (codes as nvonnxparser::ErrorCode).
struct ParserError {
  int code = 0;
  std::string desc;
  int node = -1;           // index of the ONNX node, -1 when none
  std::string node_name;   // "" when none
  std::string node_op;     // "" when none
};

// The names of nvonnxparser::ErrorCode ("kUNSUPPORTED_NODE"), "code <n>" for others.
std::string parser_code_name(int code);

// The pd::Error a failed parse becomes: PD_ERR_UNAVAILABLE when the parser ran out of memory,
// else PD_ERR_UNSUPPORTED (the core has already checked the model, so the host falls back to the
// next backend), naming the model, the first failing node and its operator, and how many
// errors there were.
Error parser_failure(const std::string& model, const std::vector<ParserError>& errors);

// ---- versions --------------------------------------------------------------------------------

// getInferLibVersion()'s number ((major * 100 + minor) * 100 + patch) as "10.13.2".
std::string version_string(int32_t lib_version);
// "" when the library version is at least TensorRT 10, else why not.
std::string check_version(int32_t lib_version);

// TensorRT's ILogger severities (kINTERNAL_ERROR 0 .. kVERBOSE 4) as policyd log levels; kINFO is
// debug (TensorRT is chatty), kVERBOSE is dropped (returns false).
bool log_level(int severity, pd_log_level* level);

// ---- the engine cache's payload --------------------------------------------------------------

// What BackendEngine::serialize returns (the core wraps it in its envelope, engine_cache.h): the
// TensorRT version and compute capability the plan was built with, the options key and the
// serialized plan, plus the timing cache of the build.
struct Payload {
  std::string tensorrt;  // "10.13.2"
  std::string target;    // "sm_90"
  std::string options;   // options_key
  std::string plan;
  std::string timing_cache;  // the raw ITimingCache::serialize bytes ("" when none)
};
std::string encode_payload(const Payload& p);
// Throws PD_ERR_INVALID_ARG ("TensorRT engine cache: …") for bytes that are not a payload:
// another magic, a truncated or corrupt header, sizes that do not add up.
Payload decode_payload(const std::string& bytes);
// Throws PD_ERR_INVALID_ARG naming the field when got was made by another TensorRT, for another
// compute capability or with other options ("…; rebuild engines"). Called before TensorRT
// deserializes anything.
void check_payload(const Payload& want, const Payload& got);

// ---- timing caches ---------------------------------------------------------------------------

// pd_engine_timing_cache's bytes: TensorRT's serialized timing cache with the TensorRT version
// and target it was measured with.
std::string encode_timing_cache(const std::string& tensorrt, const std::string& target, const std::string& raw);
// The raw cache inside blob when it was made by this TensorRT for this target; otherwise ""
// and *why says what differs (the caller logs it and builds without: a timing cache only makes
// a build faster).
std::string decode_timing_cache(const std::string& blob, const std::string& tensorrt, const std::string& target,
                                std::string* why);

}  // namespace pd::trt
