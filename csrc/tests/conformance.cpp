// ONNX backend node-test conformance runner.
//
// Runs the node tests of the Debian package libonnx-testdata
// (/usr/share/libonnx-testdata/data/node/test_*/), or those of another directory in the same
// layout (--data testdata/onnx-cases: the generated cases of opsets 18+, csrc/tests/cases/), through the public C ABI (libpolicyd + the
// cpu backend plugin), exactly as the server runs models, and prints pass/fail per op.
// A test belongs to the op of its model's first node; `_expanded` tests (function bodies
// expanded into other ops) are reported apart and are not required.
//
//   pd_conformance [--data DIR] [--backend-dir DIR] [--op NAME]... [--filter SUBSTR]
//                  [--all] [--verbose] [--exceptions FILE] [--list]
//
// --list runs nothing: it prints, for every claimed op (or each --op), the tests DIR has for it.
//
// Without --op/--filter it runs every test of every op policyd claims (the op registry) and
// exits non-zero when one of them fails, unless conformance_exceptions.txt lists it with a
// reason. Comparison: ONNX's backend tolerance, |got - want| <= 1e-7 + 1e-3 * |want|, NaN
// equal to NaN; integer and bool outputs exactly; outputs of random ops by dtype and shape.
#include <dirent.h>
#include <onnx/onnx_pb.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "onnx_import.h"
#include "op.h"
#include "policyd.h"

namespace {

std::string read_file(const std::string& path, bool* ok) {
  std::ifstream f(path, std::ios::binary);
  *ok = static_cast<bool>(f);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

struct Result {
  enum Kind { Pass, Fail, Excepted } kind;
  std::string detail;
};

const std::set<std::string> kRandomOps = {"Multinomial", "RandomNormal", "RandomNormalLike",
                                          "RandomUniform", "RandomUniformLike", "Bernoulli"};

bool is_dtype_exception(const std::string& msg) {
  return msg.find("float16") != std::string::npos || msg.find("bfloat16") != std::string::npos ||
         msg.find("string") != std::string::npos;
}

std::string err_msg(pd_error* e) {
  std::string m = pd_error_get_message(e);
  pd_error_free(e);
  return m;
}

bool close_enough(double got, double want) {
  if (std::isnan(want)) return std::isnan(got);
  if (std::isinf(want)) return got == want;
  return std::fabs(got - want) <= 1e-7 + 1e-3 * std::fabs(want);
}

double elem(const void* p, pd::DType t, int64_t i) {
  switch (t) {
    case pd::DType::F32: return static_cast<const float*>(p)[i];
    case pd::DType::F64: return static_cast<const double*>(p)[i];
    case pd::DType::F16: return pd::half_to_float(static_cast<const uint16_t*>(p)[i]);
    case pd::DType::BF16: return pd::bf16_to_float(static_cast<const uint16_t*>(p)[i]);
    default: return 0;
  }
}

// The backend the tests run on (--backend; "cpu" by default). On another backend a model it
// refuses with PD_ERR_UNSUPPORTED is not a failure: the host runs it on the next backend.
std::string g_backend = "cpu";

Result run_test(pd_runtime* rt, const std::string& dir, const std::string& op) {
  bool ok;
  std::string model = read_file(dir + "/model.onnx", &ok);
  if (!ok) return {Result::Fail, "cannot read model.onnx"};
  pd_engine* eng = nullptr;
  pd_engine_options* eo = nullptr;
  pd_error_free(pd_engine_options_create(&eo));
  pd_error_free(pd_engine_options_set_backend(eo, g_backend.c_str()));
  pd_error* created = pd_engine_create(rt, model.data(), model.size(), eo, &eng);
  pd_engine_options_destroy(eo);
  if (pd_error* e = created) {
    pd_error_code code = pd_error_get_code(e);
    std::string m = err_msg(e);
    if (code == PD_ERR_UNSUPPORTED && is_dtype_exception(m)) return {Result::Excepted, m};
    if (code == PD_ERR_UNSUPPORTED && g_backend != "cpu") return {Result::Excepted, "falls back: " + m};
    return {Result::Fail, "load: " + m};
  }
  struct EngineGuard { pd_engine* e; ~EngineGuard() { pd_engine_destroy(e); } } eg{eng};
  // Inputs by name (falling back to order).
  int n_in = pd_engine_input_count(eng), n_out = pd_engine_output_count(eng);
  std::vector<pd::Tensor> inputs(n_in);
  std::vector<bool> have(n_in, false);
  std::string ds = dir + "/test_data_set_0";
  for (int i = 0;; ++i) {
    std::string data = read_file(ds + "/input_" + std::to_string(i) + ".pb", &ok);
    if (!ok) break;
    std::string name;
    pd::Tensor t;
    try {
      t = pd::decode_tensor_proto(data.data(), data.size(), &name);
    } catch (const pd::Error& e) {
      if (is_dtype_exception(e.what())) return {Result::Excepted, e.what()};
      return {Result::Fail, std::string("input ") + std::to_string(i) + ": " + e.what()};
    }
    int slot = -1;
    for (int k = 0; k < n_in; ++k) {
      pd_io_info info;
      pd_error_free(pd_engine_input_info(eng, k, &info));
      if (name == info.name) slot = k;
    }
    if (slot < 0 && i < n_in && !have[i]) slot = i;
    if (slot < 0) continue;  // an input that became a constant (listed initializer)
    inputs[slot] = std::move(t);
    // ONNX 1.12's test data stores bfloat16 tensors as uint16 bit patterns.
    pd_io_info want;
    pd_error_free(pd_engine_input_info(eng, slot, &want));
    if (want.dtype == PD_DTYPE_BFLOAT16 && inputs[slot].dtype() == pd::DType::U16) {
      pd::Tensor b(pd::DType::BF16, inputs[slot].shape());
      std::memcpy(b.data(), inputs[slot].data(), b.nbytes());
      inputs[slot] = std::move(b);
    }
    have[slot] = true;
  }
  std::vector<pd_tensor> in(n_in);
  for (int k = 0; k < n_in; ++k) {
    if (!have[k]) return {Result::Fail, "test data lacks input " + std::to_string(k)};
    pd_tensor& p = in[k];
    p.dtype = static_cast<int32_t>(inputs[k].dtype());
    p.rank = static_cast<int32_t>(inputs[k].shape().size());
    for (int d = 0; d < p.rank; ++d) p.dims[d] = inputs[k].shape()[d];
    p.data = inputs[k].data();
    p.byte_size = inputs[k].nbytes();
  }
  pd_context* ctx = nullptr;
  if (pd_error* e = pd_context_create(eng, &ctx)) return {Result::Fail, "context: " + err_msg(e)};
  struct CtxGuard { pd_context* c; ~CtxGuard() { pd_context_destroy(c); } } cg{ctx};
  std::vector<pd_tensor> out(n_out);
  if (pd_error* e = pd_context_run(ctx, in.data(), n_in, out.data(), n_out)) {
    pd_error_code code = pd_error_get_code(e);
    std::string m = err_msg(e);
    if (code == PD_ERR_UNSUPPORTED && is_dtype_exception(m)) return {Result::Excepted, m};
    return {Result::Fail, "run: " + m};
  }
  double max_err = 0;
  for (int i = 0; i < n_out; ++i) {
    std::string data = read_file(ds + "/output_" + std::to_string(i) + ".pb", &ok);
    if (!ok) return {Result::Fail, "missing output_" + std::to_string(i) + ".pb"};
    pd::Tensor want;
    std::string name;
    try {
      want = pd::decode_tensor_proto(data.data(), data.size(), &name);
    } catch (const pd::Error& e) {
      return {Result::Fail, std::string("expected output: ") + e.what()};
    }
    const pd_tensor& got = out[i];
    pd::Shape gs(got.dims, got.dims + got.rank);
    if (static_cast<pd::DType>(got.dtype) == pd::DType::BF16 && want.dtype() == pd::DType::U16) {
      pd::Tensor b(pd::DType::BF16, want.shape());
      std::memcpy(b.data(), want.data(), b.nbytes());
      want = std::move(b);
    }
    if (static_cast<pd::DType>(got.dtype) != want.dtype())
      return {Result::Fail, "output " + std::to_string(i) + ": dtype " +
                                pd::dtype_name(static_cast<pd::DType>(got.dtype)) + ", want " +
                                pd::dtype_name(want.dtype())};
    if (gs != want.shape())
      return {Result::Fail, "output " + std::to_string(i) + ": shape " + pd::shape_str(gs) +
                                ", want " + pd::shape_str(want.shape())};
    if (kRandomOps.count(op)) continue;
    pd::DType t = want.dtype();
    bool is_float = t == pd::DType::F32 || t == pd::DType::F64 || t == pd::DType::F16 || t == pd::DType::BF16;
    for (int64_t k = 0; k < want.numel(); ++k) {
      if (is_float) {
        double g = elem(got.data, t, k), w = elem(want.data(), t, k);
        if (!close_enough(g, w)) {
          std::ostringstream os;
          os << "output " << i << "[" << k << "] = " << g << ", want " << w;
          return {Result::Fail, os.str()};
        }
        if (!std::isnan(w) && !std::isinf(w)) max_err = std::max(max_err, std::fabs(g - w));
      } else {
        size_t sz = pd::dtype_size(t);
        if (std::memcmp(static_cast<const char*>(got.data) + k * sz,
                        static_cast<const char*>(want.data()) + k * sz, sz) != 0) {
          std::ostringstream os;
          os << "output " << i << "[" << k << "] differs (" << pd::dtype_name(t) << ")";
          return {Result::Fail, os.str()};
        }
      }
    }
  }
  std::ostringstream os;
  os << "max abs err " << max_err;
  return {Result::Pass, os.str()};
}

std::string first_op(const std::string& dir) {
  bool ok;
  std::string model = read_file(dir + "/model.onnx", &ok);
  onnx::ModelProto m;
  if (!ok || !m.ParseFromString(model) || m.graph().node_size() == 0) return "";
  // The op under test: the first node that is not a Constant feeding it.
  int idx = 0;
  while (idx + 1 < m.graph().node_size() && m.graph().node(idx).op_type() == "Constant") ++idx;
  const auto& n = m.graph().node(idx);
  return (n.domain().empty() || n.domain() == "ai.onnx") ? n.op_type() : n.domain() + "." + n.op_type();
}

void usage() {
  std::puts(
      "usage: pd_conformance [--data DIR] [--backend NAME] [--backend-dir DIR] [--op NAME]... [--filter SUBSTR]\n"
      "                      [--all] [--verbose] [--exceptions FILE] [--list]\n"
      "  --data DIR      the node tests (default: Debian's libonnx-testdata; testdata/onnx-cases\n"
      "                  holds the generated ones of opsets 18+)\n"
      "  --list          run nothing: print the tests DIR has for each claimed op (or each --op)\n"
      "  --backend NAME  run on this backend (default cpu); a test it refuses as unsupported is\n"
      "                  reported as an exception (falls back), not a failure\n"
      "  --op NAME       run the tests of op NAME (repeatable)\n"
      "  --filter S      run the tests whose name contains S\n"
      "  --all           run every node test, claimed op or not (report only)\n"
      "  --verbose       print every test, not only failures\n"
      "  --exceptions F  file of 'test_name reason' lines: documented exceptions");
}

}  // namespace

int main(int argc, char** argv) {
  std::string data = "/usr/share/libonnx-testdata/data/node";
  std::string backend_dir, filter, exceptions_file;
  std::set<std::string> only_ops;
  bool all = false, verbose = false, list = false;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) { usage(); std::exit(2); }
      return argv[++i];
    };
    if (a == "--data") data = next();
    else if (a == "--backend-dir") backend_dir = next();
    else if (a == "--backend") g_backend = next();
    else if (a == "--op") only_ops.insert(next());
    else if (a == "--filter") filter = next();
    else if (a == "--all") all = true;
    else if (a == "--verbose") verbose = true;
    else if (a == "--list") list = true;
    else if (a == "--exceptions") exceptions_file = next();
    else if (a == "--help" || a == "-h") { usage(); return 0; }
    else { usage(); return 2; }
  }
  std::map<std::string, std::string> exceptions;
  if (!exceptions_file.empty()) {
    std::ifstream f(exceptions_file);
    if (!f) { std::fprintf(stderr, "cannot read %s\n", exceptions_file.c_str()); return 2; }
    std::string line;
    while (std::getline(f, line)) {
      if (line.empty() || line[0] == '#') continue;
      auto sp = line.find(' ');
      exceptions[line.substr(0, sp)] = sp == std::string::npos ? "" : line.substr(sp + 1);
    }
  }
  std::set<std::string> claimed;
  for (const auto& n : pd::ops().names("")) claimed.insert(n);

  pd_runtime_options* ro = nullptr;
  pd_error_free(pd_runtime_options_create(&ro));
  if (!backend_dir.empty()) pd_error_free(pd_runtime_options_set_backend_dir(ro, backend_dir.c_str()));
  pd_runtime* rt = nullptr;
  if (pd_error* e = pd_runtime_create(ro, &rt)) {
    std::fprintf(stderr, "runtime: %s\n", err_msg(e).c_str());
    return 2;
  }
  pd_runtime_options_destroy(ro);

  std::vector<std::string> tests;
  if (DIR* d = opendir(data.c_str())) {
    while (dirent* ent = readdir(d)) {
      std::string n = ent->d_name;
      if (n.rfind("test_", 0) == 0) tests.push_back(n);
    }
    closedir(d);
  } else {
    std::fprintf(stderr, "cannot open %s (install Debian's libonnx-testdata)\n", data.c_str());
    return 2;
  }
  std::sort(tests.begin(), tests.end());

  if (list) {
    std::map<std::string, std::vector<std::string>> by_op;
    for (const auto& t : tests)
      if (t.find("_expanded") == std::string::npos) by_op[first_op(data + "/" + t)].push_back(t);
    const std::set<std::string>& which = only_ops.empty() ? claimed : only_ops;
    int none = 0;
    for (const auto& op : which) {
      const auto it = by_op.find(op);
      const size_t n = it == by_op.end() ? 0 : it->second.size();
      if (!n) ++none;
      std::printf("%-24s %3zu%s\n", op.c_str(), n, n ? "" : "  (no tests in this directory)");
      if (it != by_op.end())
        for (const auto& t : it->second) std::printf("    %s\n", t.c_str());
    }
    std::printf("%zu ops; %d without tests in %s\n", which.size(), none, data.c_str());
    pd_runtime_destroy(rt);
    return 0;
  }

  struct Count { int pass = 0, fail = 0, exc = 0; };
  std::map<std::string, Count> per_op;
  int pass = 0, fail = 0, exc = 0, exp_pass = 0, exp_total = 0;
  for (const auto& t : tests) {
    std::string dir = data + "/" + t;
    bool expanded = t.find("_expanded") != std::string::npos;
    std::string op = first_op(dir);
    if (!filter.empty() && t.find(filter) == std::string::npos) continue;
    if (!only_ops.empty() && !only_ops.count(op)) continue;
    bool is_claimed = claimed.count(op) != 0;
    if (only_ops.empty() && filter.empty() && !all && (!is_claimed || expanded)) continue;
    Result r = run_test(rt, dir, op);
    auto ex = exceptions.find(t);
    if (r.kind == Result::Fail && ex != exceptions.end()) r = {Result::Excepted, ex->second};
    if (expanded) {
      ++exp_total;
      if (r.kind == Result::Pass) ++exp_pass;
      if (verbose) std::printf("%-6s %s (expanded): %s\n", r.kind == Result::Pass ? "ok" : "--", t.c_str(), r.detail.c_str());
      continue;
    }
    Count& c = per_op[op.empty() ? "?" : op];
    const char* tag = r.kind == Result::Pass ? "ok" : r.kind == Result::Fail ? "FAIL" : "exc";
    if (r.kind == Result::Pass) { ++c.pass; ++pass; }
    else if (r.kind == Result::Fail) { ++c.fail; ++fail; }
    else { ++c.exc; ++exc; }
    if (verbose || r.kind != Result::Pass)
      std::printf("%-5s %-55s %s%s\n", tag, t.c_str(), r.detail.c_str(), is_claimed ? "" : "  [op not claimed]");
  }
  std::printf("\n%-24s %6s %6s %6s\n", "op", "pass", "fail", "exc");
  for (const auto& [op, c] : per_op)
    std::printf("%-24s %6d %6d %6d%s\n", op.c_str(), c.pass, c.fail, c.exc, claimed.count(op) ? "" : "  (not claimed)");
  if (exp_total) std::printf("expanded tests (not required): %d/%d pass\n", exp_pass, exp_total);
  std::printf("conformance: %zu ops claimed; %d tests passed, %d failed, %d documented exceptions\n",
              claimed.size(), pass, fail, exc);
  pd_runtime_destroy(rt);
  return fail == 0 ? 0 : 1;
}
