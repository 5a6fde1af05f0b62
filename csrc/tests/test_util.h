// What the C++ test programs share: reading a file whole, and a model's graph as the core hands
// it to a backend (imported, then the passes pd_engine_create runs, in its order).
#pragma once

#include <fstream>
#include <sstream>
#include <stdexcept>
#include <string>

#include "ir.h"
#include "onnx_import.h"
#include "passes.h"

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
  fold_constants(g);
  fuse(g);
  eliminate_dead_nodes(g);
  return g;
}

}  // namespace pd::test
