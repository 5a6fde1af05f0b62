// The run switches of the CUDA-based plugins, as backend parameters (BuildOptions::params,
// "<backend>.<key>" in the config, config/params.go): cuda.graphs, cuda.mapped_io and
// tensorrt.graphs. They change how a context runs, never what build() produces, so they are
// not part of an engine cache's options key. Runtime-free (no CUDA header needed): the
// tensorrt plugin's host-only support.cpp parses them too.
#pragma once

#include <map>
#include <string>

#include "../core/error.h"

namespace pd::gpu {

struct RunParams {
  // Capture each shape bucket's run as a CUDA graph (after an eager first run) and replay it;
  // false: every run launches eagerly (to tell graph capture from kernel faults).
  bool graphs = true;
  // cuda only: small staging (kMappedStagingMax) is mapped pinned memory moved by copy
  // kernels inside the graph; false: DMA copies for all staging.
  bool mapped_io = true;
};

// "true" or "false" (what the Go config writes for a boolean); PD_ERR_INVALID_ARG otherwise.
inline bool parse_bool(const char* backend, const std::string& key, const std::string& v) {
  if (v == "true") return true;
  if (v == "false") return false;
  fail(PD_ERR_INVALID_ARG, backend, " parameter '", key, "' must be true or false, got '", v, "'");
}

// Removes the run switches a backend knows from *params (graphs; mapped_io when with_mapped_io)
// and returns them; what stays is the backend's build parameters.
inline RunParams take_run_params(const char* backend, std::map<std::string, std::string>* params,
                                 bool with_mapped_io) {
  RunParams r;
  for (auto it = params->begin(); it != params->end();) {
    if (it->first == "graphs") {
      r.graphs = parse_bool(backend, it->first, it->second);
    } else if (with_mapped_io && it->first == "mapped_io") {
      r.mapped_io = parse_bool(backend, it->first, it->second);
    } else {
      ++it;
      continue;
    }
    it = params->erase(it);
  }
  return r;
}

}  // namespace pd::gpu
