#include "onnx_import.h"

#include <onnx/onnx_pb.h>

#include <algorithm>
#include <limits>
#include <set>
#include <unordered_map>
#include <unordered_set>

namespace pd {

namespace {

constexpr int64_t kMaxIrVersion = 10;
// The newest opset of each domain whose semantics the ops implement (docs/operators.md): what
// changed up to ai.onnx 21 in the ops policyd has is implemented (Reduce* axes input, Split
// num_outputs, Pad axes, Mish and GroupNormalization of 18, Pad 'wrap' and AveragePool
// dilations of 19, bool ReduceMax/ReduceMin and Gelu of 20, GroupNormalization's per-channel
// scale of 21) or is a new data type (float8, int4) that import refuses by name; the generated
// cases in testdata/onnx-cases check each form against ONNX Runtime (docs/operators.md). A newer opset is refused, as ONNX Runtime refuses one newer than it
// knows. policyd has no ai.onnx.ml ops; models may still import the domain.
constexpr int64_t kMaxOpsetOnnx = 21;
constexpr int64_t kMaxOpsetOnnxMl = 5;

DType dtype_from_onnx(int32_t t) { return static_cast<DType>(t); }

template <typename Src, typename Dst>
void copy_field(const Src& field, Tensor& t) {
  Dst* out = t.as<Dst>();
  for (int i = 0; i < field.size(); ++i) out[i] = static_cast<Dst>(field.Get(i));
}

// The number of values a TensorProto stores in the typed field its data type uses.
int64_t field_count(const onnx::TensorProto& p, DType dt) {
  switch (dt) {
    case DType::F32: return p.float_data_size();
    case DType::F64: return p.double_data_size();
    case DType::I64: return p.int64_data_size();
    case DType::U32: case DType::U64: return p.uint64_data_size();
    default: return p.int32_data_size();
  }
}

// Checks a TensorProto's declared shape against the data it actually carries, before anything
// is allocated: a 100-byte model claiming a 1 GiB tensor fails here naming it. Returns the
// byte size the tensor will take.
uint64_t checked_proto_bytes(const onnx::TensorProto& p, DType dt, const Shape& shape, const std::string& what) {
  const std::string who = what + " '" + p.name() + "'";
  const uint64_t bytes = nbytes_or_fail(shape, dt, who);
  if (p.has_raw_data()) {
    PD_CHECK_ARG(p.raw_data().size() == bytes, who, " has ", p.raw_data().size(),
                 " bytes of data, its shape ", shape_str(shape), " needs ", bytes);
  } else {
    const int64_t have = field_count(p, dt);
    const uint64_t need = bytes / dtype_size(dt);
    PD_CHECK_ARG(static_cast<uint64_t>(have) == need, who, " has ", have, " values of data, its shape ",
                 shape_str(shape), " needs ", need);
  }
  return bytes;
}

bool parse_u64(const std::string& s, uint64_t* out) {
  if (s.empty() || s.size() > 20) return false;
  uint64_t v = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return false;
    const uint64_t d = static_cast<uint64_t>(c - '0');
    if (v > (std::numeric_limits<uint64_t>::max() - d) / 10) return false;
    v = v * 10 + d;
  }
  *out = v;
  return true;
}

bool is_external(const onnx::TensorProto& p, const std::string& who) {
  if (p.data_location() == onnx::TensorProto::EXTERNAL) return true;
  PD_CHECK_ARG(p.external_data_size() == 0, who,
               " has external_data entries but its data_location is not EXTERNAL");
  return false;
}

// Resolves an external tensor's record (ONNX spec: location, offset, length, checksum) against
// the files the host handed over and checks it against the `bytes` the tensor's dims x dtype
// need, before anything is allocated. Returns where the bytes are.
const char* external_bytes(const onnx::TensorProto& p, uint64_t bytes, const std::string& who,
                           const ExternalFiles* files) {
  PD_CHECK_ARG(!p.has_raw_data(), who, " is EXTERNAL but also carries raw_data");
  std::string location;
  uint64_t offset = 0, length = 0;
  bool have_location = false, have_length = false;
  for (const auto& kv : p.external_data()) {
    const std::string& k = kv.key();
    if (k == "location") {
      location = kv.value();
      have_location = true;
    } else if (k == "offset") {
      PD_CHECK_ARG(parse_u64(kv.value(), &offset), who, ": external data offset '", kv.value(),
                   "' is not a non-negative integer");
    } else if (k == "length") {
      PD_CHECK_ARG(parse_u64(kv.value(), &length), who, ": external data length '", kv.value(),
                   "' is not a non-negative integer");
      have_length = true;
    } else if (k == "checksum") {
      // SHA-1 of the file: the host has verified the file's bytes already (manifest SHA-256).
    } else {
      fail(PD_ERR_INVALID_ARG, who, ": unknown external data key '", k,
           "' (known: location, offset, length, checksum)");
    }
  }
  PD_CHECK_ARG(have_location, who, " is EXTERNAL but names no location");
  const std::string name = normalize_external_location(location, who + " external data location");
  const ExternalFile* f = nullptr;
  if (files) {
    auto it = files->find(name);
    if (it != files->end()) f = &it->second;
  }
  if (!f) {
    std::string known;
    if (files)
      for (const auto& [n, _] : *files) known += (known.empty() ? "" : ", ") + n;
    fail(PD_ERR_INVALID_ARG, who, " stores its data in external file '", name,
         "', which was not provided (", known.empty() ? "no external files were given" : "given: " + known, ")");
  }
  PD_CHECK_ARG(offset <= f->size, who, ": offset ", offset, " is past the end of external file '", name,
               "' (", f->size, " bytes)");
  if (!have_length) length = f->size - offset;
  PD_CHECK_ARG(length <= f->size - offset, who, ": offset ", offset, " + length ", length,
               " is past the end of external file '", name, "' (", f->size, " bytes)");
  PD_CHECK_ARG(length == bytes, who, " has ", length, " bytes in external file '", name,
               "' (offset ", offset, "), its shape ", shape_str(Shape(p.dims().begin(), p.dims().end())),
               " needs ", bytes);
  return static_cast<const char*>(f->data) + offset;
}

// Reads a TensorProto into a Tensor. budget, when given, is what the model may still allocate
// for its constants; the tensor's size is checked against it, then taken from it, before the
// allocation. An EXTERNAL tensor is read from `files`.
Tensor to_tensor(const onnx::TensorProto& p, const std::string& what, uint64_t* budget = nullptr,
                 const ExternalFiles* files = nullptr) {
  const std::string who = what + " '" + p.name() + "'";
  const bool external = is_external(p, who);
  DType dt = dtype_from_onnx(p.data_type());
  if (dtype_size(dt) == 0)
    fail(PD_ERR_UNSUPPORTED, what, " '", p.name(), "' has data type ",
         dtype_name(dt), " (", p.data_type(), "), which policyd does not support");
  PD_CHECK_ARG(p.dims_size() <= 64, what, " '", p.name(), "' has rank ", p.dims_size());
  Shape shape(p.dims().begin(), p.dims().end());
  const char* ext = nullptr;
  uint64_t bytes = 0;
  if (external) {
    bytes = nbytes_or_fail(shape, dt, who);
    ext = external_bytes(p, bytes, who, files);
  } else {
    bytes = checked_proto_bytes(p, dt, shape, what);
  }
  if (budget) {
    if (bytes > *budget)
      fail(PD_ERR_INVALID_ARG, what, " '", p.name(), "' of shape ", shape_str(shape), " needs ", bytes,
           " bytes, more than the ", *budget, " bytes left under the engine's memory limit");
    *budget -= bytes;
  }
  Tensor t(dt, shape);
  if (ext || p.has_raw_data()) {
    if (t.nbytes()) std::memcpy(t.data(), ext ? ext : p.raw_data().data(), t.nbytes());
    return t;
  }
  if (t.numel() == 0) return t;
  switch (dt) {
    case DType::F32: copy_field<decltype(p.float_data()), float>(p.float_data(), t); break;
    case DType::F64: copy_field<decltype(p.double_data()), double>(p.double_data(), t); break;
    case DType::I64: copy_field<decltype(p.int64_data()), int64_t>(p.int64_data(), t); break;
    case DType::U32: copy_field<decltype(p.uint64_data()), uint32_t>(p.uint64_data(), t); break;
    case DType::U64: copy_field<decltype(p.uint64_data()), uint64_t>(p.uint64_data(), t); break;
    case DType::I32: copy_field<decltype(p.int32_data()), int32_t>(p.int32_data(), t); break;
    case DType::I16: copy_field<decltype(p.int32_data()), int16_t>(p.int32_data(), t); break;
    case DType::U16: case DType::F16: case DType::BF16:
      copy_field<decltype(p.int32_data()), uint16_t>(p.int32_data(), t); break;
    case DType::I8: copy_field<decltype(p.int32_data()), int8_t>(p.int32_data(), t); break;
    case DType::U8: copy_field<decltype(p.int32_data()), uint8_t>(p.int32_data(), t); break;
    case DType::Bool: copy_field<decltype(p.int32_data()), bool>(p.int32_data(), t); break;
    default: fail(PD_ERR_UNSUPPORTED, what, " '", p.name(), "': unsupported data type");
  }
  return t;
}

Attribute to_attr(const onnx::AttributeProto& a, const std::string& node, uint64_t* budget,
                  const ExternalFiles* files) {
  Attribute r;
  switch (a.type()) {
    case onnx::AttributeProto::INT: r.kind = Attribute::Int; r.i = a.i(); break;
    case onnx::AttributeProto::FLOAT: r.kind = Attribute::Float; r.f = a.f(); break;
    case onnx::AttributeProto::STRING: r.kind = Attribute::String; r.s = a.s(); break;
    case onnx::AttributeProto::INTS:
      r.kind = Attribute::Ints;
      r.ints.assign(a.ints().begin(), a.ints().end());
      break;
    case onnx::AttributeProto::FLOATS:
      r.kind = Attribute::Floats;
      r.floats.assign(a.floats().begin(), a.floats().end());
      break;
    case onnx::AttributeProto::STRINGS:
      r.kind = Attribute::Strings;
      r.strings.assign(a.strings().begin(), a.strings().end());
      break;
    case onnx::AttributeProto::TENSOR:
      r.kind = Attribute::TensorKind;
      r.t = std::make_shared<Tensor>(to_tensor(a.t(), "attribute '" + a.name() + "' of node '" + node + "'", budget, files));
      break;
    default:
      // Graph-valued and other attributes: ops that need them (If, Loop, Scan) are unsupported
      // and say so by name when the graph is specialized.
      r.kind = Attribute::Unsupported;
      break;
  }
  return r;
}

ValueInfo to_value_info(const onnx::ValueInfoProto& v) {
  ValueInfo vi;
  vi.name = v.name();
  if (!v.has_type() || !v.type().has_tensor_type())
    fail(PD_ERR_UNSUPPORTED, "graph input/output '", v.name(),
         "' is not a tensor (sequences and maps are not supported)");
  const auto& tt = v.type().tensor_type();
  vi.dtype = dtype_from_onnx(tt.elem_type());
  if (tt.has_shape()) {
    vi.has_shape = true;
    for (const auto& d : tt.shape().dim()) {
      if (d.has_dim_value()) {
        vi.dims.push_back(d.dim_value());
        vi.dim_params.emplace_back();
      } else {
        vi.dims.push_back(-1);
        vi.dim_params.push_back(d.has_dim_param() ? d.dim_param() : "");
      }
    }
  }
  return vi;
}

// A Constant node becomes a graph constant.
TensorPtr constant_value(const onnx::NodeProto& n, uint64_t* budget, const ExternalFiles* files) {
  for (const auto& a : n.attribute()) {
    const std::string& k = a.name();
    if (k == "value") return std::make_shared<Tensor>(to_tensor(a.t(), "Constant node '" + n.name() + "'", budget, files));
    if (k == "value_float") {
      auto t = std::make_shared<Tensor>(DType::F32, Shape{});
      *t->as<float>() = a.f();
      return t;
    }
    if (k == "value_int") {
      auto t = std::make_shared<Tensor>(DType::I64, Shape{});
      *t->as<int64_t>() = a.i();
      return t;
    }
    if (k == "value_floats") {
      auto t = std::make_shared<Tensor>(DType::F32, Shape{a.floats_size()});
      for (int i = 0; i < a.floats_size(); ++i) t->as<float>()[i] = a.floats(i);
      return t;
    }
    if (k == "value_ints") {
      auto t = std::make_shared<Tensor>(DType::I64, Shape{a.ints_size()});
      for (int i = 0; i < a.ints_size(); ++i) t->as<int64_t>()[i] = a.ints(i);
      return t;
    }
    if (k == "sparse_value" || k == "value_string" || k == "value_strings")
      fail(PD_ERR_UNSUPPORTED, "Constant node '", n.name(), "': attribute '", k, "' is not supported");
  }
  fail(PD_ERR_INVALID_ARG, "Constant node '", n.name(), "' has no value");
}

int max_opset(const std::string& domain) {
  if (domain.empty()) return kMaxOpsetOnnx;
  if (domain == "ai.onnx.ml") return kMaxOpsetOnnxMl;
  return -1;  // a domain we know nothing of: its nodes fail as unsupported operators
}

}  // namespace

std::string normalize_external_location(const std::string& location, const std::string& what) {
  PD_CHECK_ARG(!location.empty(), what, " is empty");
  PD_CHECK_ARG(location.find('\0') == std::string::npos, what, " '", location, "' contains a NUL byte");
  PD_CHECK_ARG(location.find('\\') == std::string::npos, what, " '", location,
               "' contains a backslash; names are relative to the model, with '/'");
  PD_CHECK_ARG(location[0] != '/', what, " '", location, "' is an absolute path; names are relative to the model");
  PD_CHECK_ARG(!(location.size() >= 2 && location[1] == ':'), what, " '", location,
               "' is an absolute path; names are relative to the model");
  std::string out;
  size_t i = 0;
  while (i <= location.size()) {
    size_t j = location.find('/', i);
    if (j == std::string::npos) j = location.size();
    const std::string part = location.substr(i, j - i);
    PD_CHECK_ARG(part != "..", what, " '", location, "' contains '..'; names must stay beside the model");
    if (!part.empty() && part != ".") out += (out.empty() ? "" : "/") + part;
    i = j + 1;
  }
  PD_CHECK_ARG(!out.empty(), what, " '", location, "' names no file");
  return out;
}

namespace {

void inline_tensor(onnx::TensorProto* p, const std::string& what, const ExternalFiles& files) {
  const std::string who = what + " '" + p->name() + "'";
  if (!is_external(*p, who)) return;
  DType dt = dtype_from_onnx(p->data_type());
  if (dtype_size(dt) == 0) return;  // import_onnx names it
  PD_CHECK_ARG(p->dims_size() <= 64, who, " has rank ", p->dims_size());
  const uint64_t bytes = nbytes_or_fail(Shape(p->dims().begin(), p->dims().end()), dt, who);
  const char* src = external_bytes(*p, bytes, who, &files);
  p->set_raw_data(src, bytes);
  p->clear_external_data();
  p->set_data_location(onnx::TensorProto::DEFAULT);
}

}  // namespace

std::string inline_external_data(const void* data, size_t size, const ExternalFiles& externals) {
  onnx::ModelProto m;
  if (size > static_cast<size_t>(std::numeric_limits<int>::max()) ||
      !m.ParseFromArray(data, static_cast<int>(size)))
    fail(PD_ERR_INVALID_ARG, "not an ONNX model: the protobuf could not be parsed");
  auto* gp = m.mutable_graph();
  for (auto& init : *gp->mutable_initializer()) inline_tensor(&init, "initializer", externals);
  for (auto& n : *gp->mutable_node())
    for (auto& a : *n.mutable_attribute())
      if (a.has_t()) inline_tensor(a.mutable_t(), "attribute '" + a.name() + "' of node '" + n.name() + "'", externals);
  std::string out;
  PD_CHECK_ARG(m.SerializeToString(&out), "the model with its external data inlined does not serialize (over 2 GiB?)");
  return out;
}

Graph import_onnx(const void* data, size_t size, uint64_t max_constant_bytes, const ExternalFiles* externals) {
  onnx::ModelProto m;
  if (size > static_cast<size_t>(std::numeric_limits<int>::max()) ||
      !m.ParseFromArray(data, static_cast<int>(size)))
    fail(PD_ERR_INVALID_ARG, "not an ONNX model: the protobuf could not be parsed");
  Graph g;
  // What the constants may still take (initializers, Constant nodes, tensor attributes),
  // counted before each is allocated.
  uint64_t left = max_constant_bytes;
  uint64_t* budget = max_constant_bytes ? &left : nullptr;
  g.ir_version = m.ir_version();
  g.producer = m.producer_name() + (m.producer_version().empty() ? "" : " " + m.producer_version());
  PD_CHECK_ARG(m.has_graph(), "invalid model: it has no graph");
  if (g.ir_version < 3 || g.ir_version > kMaxIrVersion)
    fail(PD_ERR_UNSUPPORTED, "ONNX IR version ", g.ir_version, " is not supported (3 to ",
         kMaxIrVersion, ")");
  for (const auto& o : m.opset_import()) {
    std::string d = o.domain() == "ai.onnx" ? "" : o.domain();
    if (d == "pd")
      fail(PD_ERR_INVALID_ARG, "invalid model: it imports domain 'pd', policyd's own fused operators, ",
           "which only policyd's passes may create");
    const int newest = max_opset(d);
    if (newest > 0 && o.version() > newest)
      fail(PD_ERR_UNSUPPORTED, "opset ", o.version(), " of domain ", d.empty() ? "ai.onnx" : d,
           " is newer than the newest supported, ", newest);
    g.opsets[d] = static_cast<int>(o.version());
  }
  if (!g.opsets.count("")) fail(PD_ERR_INVALID_ARG, "invalid model: it imports no ai.onnx opset");

  const onnx::GraphProto& gp = m.graph();
  if (gp.sparse_initializer_size() > 0)
    fail(PD_ERR_UNSUPPORTED, "sparse initializers are not supported");

  std::unordered_set<std::string> defined;
  for (const auto& init : gp.initializer()) {
    PD_CHECK_ARG(!init.name().empty(), "invalid model: an initializer has no name");
    g.constants[init.name()] = std::make_shared<Tensor>(to_tensor(init, "initializer", budget, externals));
    defined.insert(init.name());
  }
  std::unordered_set<std::string> input_names;
  for (const auto& in : gp.input()) {
    // Since IR 4, initializers may also be listed as inputs (overridable defaults). Like ONNX
    // Runtime's default, policyd treats them as constants.
    if (g.constants.count(in.name())) continue;
    PD_CHECK_ARG(input_names.insert(in.name()).second, "invalid model: graph input '", in.name(),
                 "' is listed twice");
    ValueInfo vi = to_value_info(in);
    if (dtype_size(vi.dtype) == 0)
      fail(PD_ERR_UNSUPPORTED, "graph input '", in.name(), "' has data type ", dtype_name(vi.dtype));
    if (vi.dims.size() > PD_MAX_RANK)
      fail(PD_ERR_UNSUPPORTED, "graph input '", in.name(), "' has rank ", vi.dims.size(),
           " (at most ", PD_MAX_RANK, ")");
    g.inputs.push_back(std::move(vi));
    defined.insert(in.name());
  }

  // Nodes, sorted topologically (ONNX requires it; ONNX Runtime sorts anyway, and so do we).
  std::vector<Node> pending;
  std::unordered_set<std::string> produced;
  int idx = 0;
  for (const auto& np : gp.node()) {
    std::string name = np.name().empty() ? np.op_type() + "_" + std::to_string(idx) : np.name();
    ++idx;
    std::string domain = np.domain() == "ai.onnx" ? "" : np.domain();
    if (np.op_type() == "Constant" && domain.empty()) {
      PD_CHECK_ARG(np.output_size() == 1, "invalid model: Constant node '", name, "' needs one output");
      onnx::NodeProto copy = np;
      copy.set_name(name);
      PD_CHECK_ARG(!defined.count(np.output(0)) && !produced.count(np.output(0)),
                   "invalid model: value '", np.output(0), "' is produced twice");
      g.constants[np.output(0)] = constant_value(copy, budget, externals);
      defined.insert(np.output(0));
      continue;
    }
    Node n;
    n.name = name;
    n.op = np.op_type();
    n.domain = domain;
    auto os = g.opsets.find(domain);
    if (os == g.opsets.end())
      fail(PD_ERR_INVALID_ARG, "invalid model: node '", name, "' uses domain '", domain,
           "' which the model does not import");
    n.opset = os->second;
    n.inputs.assign(np.input().begin(), np.input().end());
    n.outputs.assign(np.output().begin(), np.output().end());
    for (const auto& out : n.outputs) {
      if (out.empty()) continue;
      PD_CHECK_ARG(!defined.count(out) && produced.insert(out).second, "invalid model: value '", out,
                   "' is produced by more than one node (node '", name, "')");
    }
    for (const auto& a : np.attribute()) n.attrs[a.name()] = to_attr(a, name, budget, externals);
    pending.push_back(std::move(n));
  }
  // Kahn-style pass in file order: repeatedly emit nodes whose inputs are all defined.
  std::vector<bool> done(pending.size(), false);
  size_t emitted = 0;
  while (emitted < pending.size()) {
    bool progress = false;
    for (size_t i = 0; i < pending.size(); ++i) {
      if (done[i]) continue;
      bool ready = true;
      for (const auto& in : pending[i].inputs)
        if (!in.empty() && !defined.count(in)) { ready = false; break; }
      if (!ready) continue;
      for (const auto& out : pending[i].outputs)
        if (!out.empty()) defined.insert(out);
      g.nodes.push_back(std::move(pending[i]));
      done[i] = true;
      ++emitted;
      progress = true;
    }
    if (!progress) {
      for (size_t i = 0; i < pending.size(); ++i) {
        if (done[i]) continue;
        for (const auto& in : pending[i].inputs)
          if (!in.empty() && !defined.count(in)) {
            if (produced.count(in))
              fail(PD_ERR_INVALID_ARG, "invalid model: the graph has a cycle through value '", in,
                   "' (node '", pending[i].name, "')");
            fail(PD_ERR_INVALID_ARG, "invalid model: input '", in, "' of ", pending[i].describe(),
                 " is not produced by any node, initializer or graph input");
          }
      }
      PD_ASSERT(false);
    }
  }

  std::set<std::string> seen_out;
  for (const auto& o : gp.output()) {
    // Exporters sometimes list an output twice; like ONNX Runtime we serve it once.
    if (!seen_out.insert(o.name()).second) continue;
    if (!defined.count(o.name()))
      fail(PD_ERR_INVALID_ARG, "invalid model: graph output '", o.name(),
           "' is not produced by any node, initializer or graph input");
    ValueInfo vi = to_value_info(o);
    g.outputs.push_back(std::move(vi));
  }
  PD_CHECK_ARG(!g.outputs.empty(), "invalid model: the graph has no outputs");

  // The batch dimension: the symbolic first dimension of the first input, found by name in
  // every other input (recurrent state is often [layers, batch, hidden]).
  std::string batch_sym;
  bool have_batch = !g.inputs.empty() && !g.inputs[0].dims.empty() && g.inputs[0].dims[0] < 0;
  if (have_batch) batch_sym = g.inputs[0].dim_params[0];
  for (auto& in : g.inputs) {
    in.batch_dim = -1;
    if (!have_batch) continue;
    if (!batch_sym.empty()) {
      for (size_t d = 0; d < in.dims.size(); ++d)
        if (in.dim_params[d] == batch_sym) { in.batch_dim = static_cast<int>(d); break; }
    }
    if (in.batch_dim < 0 && !in.dims.empty() && in.dims[0] < 0 &&
        (batch_sym.empty() || in.dim_params[0].empty()))
      in.batch_dim = 0;
  }
  return g;
}

Tensor decode_tensor_proto(const void* data, size_t size, std::string* name) {
  onnx::TensorProto p;
  if (!p.ParseFromArray(data, static_cast<int>(size)))
    fail(PD_ERR_INVALID_ARG, "not an ONNX TensorProto");
  if (name) *name = p.name();
  return to_tensor(p, "tensor");
}

}  // namespace pd
