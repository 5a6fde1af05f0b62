// Which graphs the CUDA backend runs, decided on the host before anything touches a device:
// the op table, the data types and attributes each op supports. A graph with anything else is
// refused at build with PD_ERR_UNSUPPORTED naming the node, so the host falls back to the
// next backend for the whole model. Host-only; unit-tested in csrc/tests/cuda_host_test.cpp.
#pragma once

#include <string>
#include <vector>

#include "../core/ir.h"
#include "../core/program.h"

namespace pd::cuda {

// The ops (domain-qualified: "Gemm", "pd.FusedGemm") with a CUDA kernel, sorted.
std::vector<std::string> supported_ops();

// "" when every live node of the analyzed graph (a: analyze() at some shapes) has a CUDA
// kernel for its types and attributes; otherwise why not, naming the node
// ("RandomNormalLike node '/x': random operators run on the CPU backend only").
std::string unsupported_reason(const Graph& g, const Analysis& a);

// The same by op name alone, for graphs whose shapes depend on input values (shape-tensor
// inputs): their types and attributes are checked per shape bucket.
std::string unsupported_op(const Graph& g);

// Serialized form of the backend's part of an engine cache (the core adds the envelope that
// binds model and backend version): the architecture the code was compiled for, the NVRTC
// version, a fingerprint of the kernel source, the code kind ("cubin" or "ptx") and the code.
struct Payload {
  std::string arch;     // "sm_90"
  std::string nvrtc;    // "11.8"
  std::string source;   // fnv1a64 tag of kernel_source()
  std::string kind;     // "cubin" | "ptx"
  std::string code;
};
std::string encode_payload(const Payload& p);
// Throws PD_ERR_INVALID_ARG ("CUDA engine cache: …") for bytes that are not a payload.
Payload decode_payload(const std::string& bytes);
// Throws PD_ERR_INVALID_ARG naming the field when the payload was made for another device
// architecture, NVRTC or kernel source ("…; rebuild engines").
void check_payload(const Payload& want, const Payload& got);

}  // namespace pd::cuda
