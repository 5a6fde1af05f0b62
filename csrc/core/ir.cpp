#include "ir.h"

namespace pd {

namespace {
const Attribute* get(const Node& n, const std::string& k, Attribute::Kind kind) {
  auto it = n.attrs.find(k);
  if (it == n.attrs.end()) return nullptr;
  if (it->second.kind != kind)
    fail(PD_ERR_INVALID_ARG, n.describe(), ": attribute '", k, "' has the wrong type");
  return &it->second;
}
}  // namespace

int64_t Node::attr_int(const std::string& k, int64_t def) const {
  const Attribute* a = get(*this, k, Attribute::Int);
  return a ? a->i : def;
}
float Node::attr_float(const std::string& k, float def) const {
  const Attribute* a = get(*this, k, Attribute::Float);
  return a ? a->f : def;
}
std::string Node::attr_string(const std::string& k, const std::string& def) const {
  const Attribute* a = get(*this, k, Attribute::String);
  return a ? a->s : def;
}
std::vector<int64_t> Node::attr_ints(const std::string& k, const std::vector<int64_t>& def) const {
  const Attribute* a = get(*this, k, Attribute::Ints);
  return a ? a->ints : def;
}
std::vector<float> Node::attr_floats(const std::string& k, const std::vector<float>& def) const {
  const Attribute* a = get(*this, k, Attribute::Floats);
  return a ? a->floats : def;
}
std::vector<std::string> Node::attr_strings(const std::string& k) const {
  const Attribute* a = get(*this, k, Attribute::Strings);
  return a ? a->strings : std::vector<std::string>{};
}
TensorPtr Node::attr_tensor(const std::string& k) const {
  const Attribute* a = get(*this, k, Attribute::TensorKind);
  return a ? a->t : nullptr;
}

std::string Node::describe() const {
  return str(domain.empty() ? "" : domain + ".", op, " node '", name, "'");
}

}  // namespace pd
