// pd_onnx_cases: writes the generated ONNX node tests (see cases.h) or checks committed ones.
//
//   pd_onnx_cases --out DIR [--filter S]   write model.onnx and the inputs of every case
//   pd_onnx_cases --check DIR              exit 1 unless DIR holds exactly the cases the
//                                          generator writes, byte-equal, each with its outputs
//   pd_onnx_cases --list                   name, opset and op of every case
#include <dirent.h>
#include <sys/stat.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <stdexcept>

#include "cases.h"
#include "tensor.h"

namespace pd::cases {

namespace {

uint32_t fnv1a32(const std::string& s) {
  uint32_t h = 2166136261u;
  for (unsigned char ch : s) {
    h ^= ch;
    h *= 16777619u;
  }
  return h;
}

void set_attr_name(onnx::AttributeProto* a, const std::string& name, onnx::AttributeProto::AttributeType t) {
  a->set_name(name);
  a->set_type(t);
}

std::vector<Group>& registry() {
  static std::vector<Group> g;
  return g;
}

}  // namespace

Register::Register(const char* group, CaseFn fn) { registry().push_back({group, fn}); }
const std::vector<Group>& groups() { return registry(); }

NodeRef& NodeRef::i(const std::string& name, int64_t v) {
  auto* a = n_->add_attribute();
  set_attr_name(a, name, onnx::AttributeProto::INT);
  a->set_i(v);
  return *this;
}
NodeRef& NodeRef::f(const std::string& name, float v) {
  auto* a = n_->add_attribute();
  set_attr_name(a, name, onnx::AttributeProto::FLOAT);
  a->set_f(v);
  return *this;
}
NodeRef& NodeRef::s(const std::string& name, const std::string& v) {
  auto* a = n_->add_attribute();
  set_attr_name(a, name, onnx::AttributeProto::STRING);
  a->set_s(v);
  return *this;
}
NodeRef& NodeRef::ints(const std::string& name, const std::vector<int64_t>& v) {
  auto* a = n_->add_attribute();
  set_attr_name(a, name, onnx::AttributeProto::INTS);
  for (int64_t x : v) a->add_ints(x);
  return *this;
}
NodeRef& NodeRef::floats(const std::string& name, const std::vector<float>& v) {
  auto* a = n_->add_attribute();
  set_attr_name(a, name, onnx::AttributeProto::FLOATS);
  for (float x : v) a->add_floats(x);
  return *this;
}

onnx::TensorProto make_tensor(const std::string& name, Elem t, const Dims& dims, const std::vector<double>& v) {
  int64_t n = 1;
  for (int64_t d : dims) n *= d;
  if (static_cast<int64_t>(v.size()) != n)
    throw std::runtime_error("tensor '" + name + "': " + std::to_string(v.size()) + " values for " +
                             std::to_string(n) + " elements");
  const size_t sz = dtype_size(static_cast<DType>(t));
  if (sz == 0) throw std::runtime_error("tensor '" + name + "': unsupported element type");
  std::string raw(static_cast<size_t>(n) * sz, '\0');
  char* p = raw.data();
  for (int64_t k = 0; k < n; ++k) {
    const double x = v[k];
    auto put = [&](auto val) { std::memcpy(p + k * sz, &val, sz); };
    switch (t) {
      case F32: put(static_cast<float>(x)); break;
      case F64: put(x); break;
      case F16: put(float_to_half(static_cast<float>(x))); break;
      case BF16: put(float_to_bf16(static_cast<float>(x))); break;
      case I8: put(static_cast<int8_t>(x)); break;
      case U8: put(static_cast<uint8_t>(x)); break;
      case I16: put(static_cast<int16_t>(x)); break;
      case U16: put(static_cast<uint16_t>(x)); break;
      case I32: put(static_cast<int32_t>(x)); break;
      case U32: put(static_cast<uint32_t>(x)); break;
      case I64: put(static_cast<int64_t>(x)); break;
      case U64: put(static_cast<uint64_t>(x)); break;
      case BOOL: put(static_cast<uint8_t>(x != 0)); break;
    }
  }
  onnx::TensorProto tp;
  tp.set_name(name);
  for (int64_t d : dims) tp.add_dims(d);
  tp.set_data_type(t);
  tp.set_raw_data(raw);
  return tp;
}

Case::Case(std::string name, int opset, int ir_version)
    : name_(std::move(name)), opset_(opset), rng_(fnv1a32(name_)) {
  if (name_.rfind("test_", 0) != 0) throw std::runtime_error("case '" + name_ + "': names start with test_");
  model_.set_ir_version(ir_version);
  model_.set_producer_name("pd_onnx_cases");
  auto* os = model_.add_opset_import();
  os->set_domain("");
  os->set_version(opset);
  model_.mutable_graph()->set_name(name_);
}

namespace {
void add_value_info(onnx::ValueInfoProto* v, const std::string& name, Elem t, const Dims* dims) {
  v->set_name(name);
  auto* tt = v->mutable_type()->mutable_tensor_type();
  tt->set_elem_type(t);
  if (dims) {
    auto* sh = tt->mutable_shape();
    for (int64_t d : *dims) sh->add_dim()->set_dim_value(d);
  }
}
}  // namespace

Case& Case::input(const std::string& name, Elem t, const Dims& dims, double lo, double hi) {
  int64_t n = 1;
  for (int64_t d : dims) n *= d;
  std::vector<double> v(static_cast<size_t>(n));
  const bool is_float = t == F32 || t == F64 || t == F16 || t == BF16;
  for (auto& x : v) {
    const uint32_t r = rng_();
    if (t == BOOL) x = (r >> 31) != 0;
    else if (is_float) x = lo + (hi - lo) * (static_cast<double>(r >> 8) / 16777216.0);
    else x = std::floor(lo + (hi - lo + 1) * (static_cast<double>(r) / 4294967296.0));
  }
  return input_values(name, t, dims, v);
}

Case& Case::input_values(const std::string& name, Elem t, const Dims& dims, const std::vector<double>& v) {
  add_value_info(model_.mutable_graph()->add_input(), name, t, &dims);
  inputs_.push_back(make_tensor(name, t, dims, v));
  return *this;
}

Case& Case::constant(const std::string& name, Elem t, const Dims& dims, const std::vector<double>& v) {
  *model_.mutable_graph()->add_initializer() = make_tensor(name, t, dims, v);
  return *this;
}

NodeRef Case::node(const std::string& op, const std::vector<std::string>& inputs,
                   const std::vector<std::string>& outputs, const std::string& name) {
  auto* g = model_.mutable_graph();
  auto* n = g->add_node();
  n->set_op_type(op);
  n->set_name(name.empty() ? op + "_" + std::to_string(g->node_size() - 1) : name);
  for (const auto& i : inputs) n->add_input(i);
  for (const auto& o : outputs) n->add_output(o);
  return NodeRef(n);
}

Case& Case::output(const std::string& name, Elem t) {
  add_value_info(model_.mutable_graph()->add_output(), name, t, nullptr);
  return *this;
}

}  // namespace pd::cases

namespace {

using pd::cases::Case;

std::vector<Case> all_cases() {
  std::vector<Case> out;
  for (const auto& g : pd::cases::groups()) g.fn(out);
  std::sort(out.begin(), out.end(), [](const Case& a, const Case& b) { return a.name() < b.name(); });
  for (size_t i = 1; i < out.size(); ++i)
    if (out[i].name() == out[i - 1].name()) throw std::runtime_error("case '" + out[i].name() + "' is defined twice");
  return out;
}

std::string serialize(const google::protobuf::MessageLite& m) {
  std::string s;
  if (!m.SerializeToString(&s)) throw std::runtime_error("cannot serialize");
  return s;
}

bool read_file(const std::string& path, std::string* out) {
  std::ifstream f(path, std::ios::binary);
  if (!f) return false;
  std::stringstream ss;
  ss << f.rdbuf();
  *out = ss.str();
  return true;
}

void write_file(const std::string& path, const std::string& data) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f << data;
  if (!f) throw std::runtime_error("cannot write " + path);
}

void mkdir_p(const std::string& path) {
  if (::mkdir(path.c_str(), 0755) != 0 && errno != EEXIST) throw std::runtime_error("cannot create " + path);
}

std::vector<std::string> list_dir(const std::string& dir) {
  std::vector<std::string> out;
  if (DIR* d = opendir(dir.c_str())) {
    while (dirent* e = readdir(d)) {
      std::string n = e->d_name;
      if (n != "." && n != "..") out.push_back(n);
    }
    closedir(d);
  }
  std::sort(out.begin(), out.end());
  return out;
}

std::string first_op(const Case& c) {
  const auto& g = c.model().graph();
  for (const auto& n : g.node())
    if (n.op_type() != "Constant") return n.op_type();
  return "";
}

// The files a case consists of (relative to its directory), with their bytes.
std::map<std::string, std::string> case_files(const Case& c) {
  std::map<std::string, std::string> f;
  f["model.onnx"] = serialize(c.model());
  for (size_t i = 0; i < c.inputs().size(); ++i)
    f["test_data_set_0/input_" + std::to_string(i) + ".pb"] = serialize(c.inputs()[i]);
  return f;
}

int check(const std::string& dir, const std::vector<Case>& cases) {
  int problems = 0;
  auto problem = [&](const std::string& s) {
    std::printf("STALE %s\n", s.c_str());
    ++problems;
  };
  std::set<std::string> names;
  for (const Case& c : cases) {
    names.insert(c.name());
    const std::string cd = dir + "/" + c.name();
    for (const auto& [rel, bytes] : case_files(c)) {
      std::string have;
      if (!read_file(cd + "/" + rel, &have)) problem(c.name() + ": " + rel + " is missing");
      else if (have != bytes) problem(c.name() + ": " + rel + " differs from what the generator writes");
    }
    std::set<std::string> want_data;
    for (size_t i = 0; i < c.inputs().size(); ++i) want_data.insert("input_" + std::to_string(i) + ".pb");
    for (int i = 0; i < c.model().graph().output_size(); ++i) {
      const std::string o = "output_" + std::to_string(i) + ".pb";
      want_data.insert(o);
      std::string have;
      if (!read_file(cd + "/test_data_set_0/" + o, &have)) problem(c.name() + ": " + o + " is missing (run make refs)");
    }
    for (const auto& f : list_dir(cd + "/test_data_set_0"))
      if (!want_data.count(f)) problem(c.name() + ": test_data_set_0/" + f + " is not the generator's");
  }
  for (const auto& d : list_dir(dir)) {
    if (d.rfind("test_", 0) != 0) continue;
    if (!names.count(d)) problem(d + ": no longer generated (run make refs)");
  }
  if (problems) {
    std::printf("%d problems: testdata/onnx-cases is stale; `make refs` regenerates it\n", problems);
    return 1;
  }
  std::printf("onnx-cases: %zu cases, all current\n", cases.size());
  return 0;
}

void usage() {
  std::puts(
      "usage: pd_onnx_cases --out DIR [--filter S] | --check DIR | --list\n"
      "  --out DIR    write model.onnx and test_data_set_0/input_*.pb of every case under DIR\n"
      "  --check DIR  exit 1 unless DIR holds exactly the generator's cases, byte-equal, with outputs\n"
      "  --list       print every case: name, opset, op");
}

}  // namespace

int main(int argc, char** argv) {
  std::string out_dir, check_dir, filter;
  bool list = false;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) { usage(); std::exit(2); }
      return argv[++i];
    };
    if (a == "--out") out_dir = next();
    else if (a == "--check") check_dir = next();
    else if (a == "--filter") filter = next();
    else if (a == "--list") list = true;
    else { usage(); return a == "--help" || a == "-h" ? 0 : 2; }
  }
  try {
    std::vector<Case> cases = all_cases();
    if (list) {
      for (const Case& c : cases) std::printf("%-56s opset %2d  %s\n", c.name().c_str(), c.opset(), first_op(c).c_str());
      return 0;
    }
    if (!check_dir.empty()) return check(check_dir, cases);
    if (out_dir.empty()) { usage(); return 2; }
    mkdir_p(out_dir);
    int n = 0;
    for (const Case& c : cases) {
      if (!filter.empty() && c.name().find(filter) == std::string::npos) continue;
      const std::string cd = out_dir + "/" + c.name();
      mkdir_p(cd);
      mkdir_p(cd + "/test_data_set_0");
      for (const auto& [rel, bytes] : case_files(c)) write_file(cd + "/" + rel, bytes);
      ++n;
    }
    std::printf("wrote %d cases to %s\n", n, out_dir.c_str());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "pd_onnx_cases: %s\n", e.what());
    return 1;
  }
  return 0;
}
