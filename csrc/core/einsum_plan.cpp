// Einsum's equation analysis (einsum_plan.h), moved here unchanged from ops/einsum.cpp so that
// the CUDA backend parses and groups labels exactly as the portable kernels do.
#include "einsum_plan.h"

#include <algorithm>
#include <string>

namespace pd {

namespace {

int letter_id(char ch) {
  if (ch >= 'A' && ch <= 'Z') return ch - 'A';
  if (ch >= 'a' && ch <= 'z') return 26 + (ch - 'a');
  return -1;
}

// Splits a term into the labels before and after its ellipsis; *has_ellipsis says if it has one.
void split_term(const InferCtx& c, const std::string& t, std::vector<int>* before, std::vector<int>* after,
                bool* has_ellipsis) {
  *has_ellipsis = false;
  for (size_t i = 0; i < t.size(); ++i) {
    if (t[i] == '.') {
      if (*has_ellipsis || t.compare(i, 3, "...") != 0)
        c.fail("equation term '", t, "': '.' must come as one '...' per term");
      *has_ellipsis = true;
      i += 2;
      continue;
    }
    const int id = letter_id(t[i]);
    if (id < 0) c.fail("equation term '", t, "': '", std::string(1, t[i]), "' is not a letter");
    (*has_ellipsis ? after : before)->push_back(id);
  }
}

}  // namespace

EinsumEquation parse_einsum(const InferCtx& c) {
  if (!c.node.has("equation")) c.fail("attribute 'equation' is required");
  std::string eq;
  for (char ch : c.node.attr_string("equation", "")) if (ch != ' ') eq += ch;
  const size_t arrow = eq.find("->");
  const bool explicit_out = arrow != std::string::npos;
  const std::string lhs = explicit_out ? eq.substr(0, arrow) : eq;
  const std::string rhs = explicit_out ? eq.substr(arrow + 2) : "";
  if (rhs.find("->") != std::string::npos || rhs.find(',') != std::string::npos)
    c.fail("equation '", eq, "' has more than one output term");
  std::vector<std::string> terms;
  for (size_t s = 0;;) {
    const size_t comma = lhs.find(',', s);
    terms.push_back(lhs.substr(s, comma == std::string::npos ? std::string::npos : comma - s));
    if (comma == std::string::npos) break;
    s = comma + 1;
  }
  const size_t n = c.num_inputs();
  if (n == 0) c.fail("needs at least one input");
  if (terms.size() != n)
    c.fail("equation '", eq, "' has ", terms.size(), " input terms for ", n, " inputs");

  EinsumEquation e;
  // Ellipsis dimensions: how many each input has; the output has the most of them.
  std::vector<std::vector<int>> before(n), after(n);
  std::vector<bool> has_ell(n);
  std::vector<int64_t> ell(n, 0);
  int64_t max_ell = 0;
  for (size_t i = 0; i < n; ++i) {
    const TensorInfo& in = c.input(i);
    if (in.dtype != c.in[0].dtype)
      c.fail("input ", i, " has type ", dtype_name(in.dtype), ", input 0 ", dtype_name(c.in[0].dtype));
    bool h = false;
    split_term(c, terms[i], &before[i], &after[i], &h);
    has_ell[i] = h;
    const int64_t rank = static_cast<int64_t>(in.shape.size());
    const int64_t letters = static_cast<int64_t>(before[i].size() + after[i].size());
    if (h ? rank < letters : rank != letters)
      c.fail("input ", i, " has rank ", rank, " but its term '", terms[i], "' has ", letters, " labels",
             h ? " and '...'" : "");
    ell[i] = h ? rank - letters : 0;
    max_ell = std::max(max_ell, ell[i]);
  }
  if (max_ell > kEinsumEllipsis) c.unsupported("more than ", kEinsumEllipsis, " dimensions under '...'");
  e.size.assign(kEinsumEllipsis + max_ell, 0);
  e.used.assign(kEinsumEllipsis + max_ell, false);
  std::vector<int> count(kEinsumEllipsis + max_ell, 0);
  for (size_t i = 0; i < n; ++i) {
    std::vector<int>& t = e.terms.emplace_back(before[i]);
    for (int64_t j = 0; j < ell[i]; ++j) t.push_back(static_cast<int>(kEinsumEllipsis + max_ell - ell[i] + j));
    t.insert(t.end(), after[i].begin(), after[i].end());
    const Shape& s = c.in[i].shape;
    for (size_t d = 0; d < t.size(); ++d) {
      const int l = t[d];
      ++count[l];
      for (size_t d2 = 0; d2 < d; ++d2)
        if (t[d2] == l && s[d2] != s[d])
          c.fail("input ", i, ": repeated label in term '", terms[i], "' spans dimensions of sizes ", s[d2],
                 " and ", s[d]);
      if (!e.used[l] || e.size[l] == 1) e.size[l] = s[d];
      else if (s[d] != e.size[l] && s[d] != 1)
        c.fail("input ", i, " dimension ", d, " has size ", s[d], " where the equation's label has size ",
               e.size[l], " (sizes must match or be 1)");
      e.used[l] = true;
    }
  }
  if (explicit_out) {
    std::vector<int> ob, oa;
    bool h = false;
    split_term(c, rhs, &ob, &oa, &h);
    e.out = ob;
    if (h)
      for (int64_t j = 0; j < max_ell; ++j) e.out.push_back(static_cast<int>(kEinsumEllipsis + j));
    e.out.insert(e.out.end(), oa.begin(), oa.end());
    for (size_t d = 0; d < e.out.size(); ++d) {
      const int l = e.out[d];
      if (!e.used[l]) c.fail("output term '", rhs, "' has a label that no input has");
      for (size_t d2 = 0; d2 < d; ++d2)
        if (e.out[d2] == l) c.fail("output term '", rhs, "' repeats a label");
    }
  } else {
    for (int64_t j = 0; j < max_ell; ++j) e.out.push_back(static_cast<int>(kEinsumEllipsis + j));
    for (int l = 0; l < kEinsumEllipsis; ++l)
      if (count[l] == 1) e.out.push_back(l);
  }
  return e;
}

std::vector<int64_t> einsum_label_strides(const EinsumEquation& e, const Shape& s, size_t i) {
  std::vector<int64_t> st(e.size.size(), 0);
  const std::vector<int64_t> ds = strides_of(s);
  for (size_t d = 0; d < s.size(); ++d)
    if (s[d] != 1) st[e.terms[i][d]] += ds[d];
  return st;
}

bool einsum_has_zero_size(const EinsumEquation& e) {
  for (size_t l = 0; l < e.size.size(); ++l)
    if (e.used[l] && e.size[l] == 0) return true;
  return false;
}

// The stride of a group of labels seen as one dimension of an operand, or -1 when the group's
// labels are not laid out as one (row-major, in group order); 0 for an empty group.
int64_t einsum_group_stride(const std::vector<int>& g, const EinsumEquation& e, const std::vector<int64_t>& st) {
  if (g.empty()) return 0;
  for (size_t i = 0; i + 1 < g.size(); ++i)
    if (st[g[i]] != st[g[i + 1]] * e.size[g[i + 1]]) return -1;
  return st[g.back()] > 0 ? st[g.back()] : -1;
}

EinsumGroups einsum_groups(const EinsumEquation& e) {
  auto in_term = [&](size_t i, int l) {
    return std::find(e.terms[i].begin(), e.terms[i].end(), l) != e.terms[i].end();
  };
  auto in_out = [&](int l) { return std::find(e.out.begin(), e.out.end(), l) != e.out.end(); };
  EinsumGroups g;
  auto& [batch, M, N, K, only_a, only_b] = g;
  for (int l : e.out) {
    if (e.size[l] == 1) continue;
    const bool a = in_term(0, l), b = in_term(1, l);
    (a && b ? batch : a ? M : N).push_back(l);
  }
  for (int l : e.terms[0]) {
    if (e.size[l] == 1 || in_out(l)) continue;
    std::vector<int>& grp = in_term(1, l) ? K : only_a;
    if (std::find(grp.begin(), grp.end(), l) == grp.end()) grp.push_back(l);
  }
  for (int l : e.terms[1]) {
    if (e.size[l] == 1 || in_out(l) || in_term(0, l)) continue;
    if (std::find(only_b.begin(), only_b.end(), l) == only_b.end()) only_b.push_back(l);
  }
  return g;
}

}  // namespace pd
