// What the C++ test programs share: reading a file whole, a model's graph as the core hands it to
// a backend (imported, then the passes pd_engine_create runs, in its order), an empty model to
// build test graphs in, and a pd_error taken apart.
#pragma once

#include <onnx/onnx_pb.h>

#include <cstdint>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <string>

#include "ir.h"
#include "onnx_import.h"
#include "passes.h"
#include "policyd.h"

namespace pd::test {

// The file's bytes; throws std::runtime_error naming the path when it cannot be read.
inline std::string slurp(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw std::runtime_error("cannot read " + path);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

// The ONNX file at path, imported and optimized as pd_engine_create does before build().
inline Graph backend_graph(const std::string& path) {
  const std::string bytes = slurp(path);
  Graph g = import_onnx(bytes.data(), bytes.size());
  eliminate_dead_nodes(g);
  fuse_quantized(g);
  fold_constants(g);
  fuse(g);
  eliminate_dead_nodes(g);
  return g;
}

// An empty model (IR 8, the default domain at opset, graph "g") for a test to add nodes to.
inline onnx::ModelProto empty_model(int64_t opset = 17) {
  onnx::ModelProto m;
  m.set_ir_version(8);
  auto* os = m.add_opset_import();
  os->set_domain("");
  os->set_version(opset);
  m.mutable_graph()->set_name("g");
  return m;
}

// A pd_error's code and message ("" on success), the error freed.
struct Err {
  pd_error_code code = PD_ERR_INTERNAL;
  std::string msg;
};

inline Err take(pd_error* e) {
  if (!e) return {};
  Err r{pd_error_get_code(e), pd_error_get_message(e)};
  pd_error_free(e);
  return r;
}

}  // namespace pd::test
