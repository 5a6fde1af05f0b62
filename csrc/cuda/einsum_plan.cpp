#include "einsum_plan.h"

#include <algorithm>
#include <limits>

#include "../core/einsum_plan.h"
#include "kernels.h"

namespace pd::cuda {

namespace {

int64_t extent(const std::vector<int>& g, const EinsumEquation& e) {
  int64_t v = 1;
  for (int l : g) v *= e.size[l];
  return v;
}

bool contains(const std::vector<int>& g, int l) { return std::find(g.begin(), g.end(), l) != g.end(); }

// Drops dimensions of size 1 and merges neighbours that are one dimension in both the source
// and the destination, so that the copy kernel's rank is as small as the layouts allow.
EinsumCopy coalesce(const EinsumCopy& in) {
  EinsumCopy r;
  for (size_t d = 0; d < in.dims.size(); ++d) {
    if (in.dims[d] == 1) continue;
    if (!r.dims.empty() && r.src.back() == in.src[d] * in.dims[d] && r.dst.back() == in.dst[d] * in.dims[d]) {
      r.dims.back() *= in.dims[d];
      r.src.back() = in.src[d];
      r.dst.back() = in.dst[d];
      continue;
    }
    r.dims.push_back(in.dims[d]);
    r.src.push_back(in.src[d]);
    r.dst.push_back(in.dst[d]);
  }
  return r;
}

// The label order of a packed operand: [batch.., rows.., cols..].
std::vector<int> packed_order(const std::vector<int>& batch, const std::vector<int>& rows,
                              const std::vector<int>& cols) {
  std::vector<int> order = batch;
  order.insert(order.end(), rows.begin(), rows.end());
  order.insert(order.end(), cols.begin(), cols.end());
  return order;
}

// A copy over the labels of order between label strides `from` and `to`.
EinsumCopy label_copy(const EinsumEquation& e, const std::vector<int>& order, const std::vector<int64_t>& from,
                      const std::vector<int64_t>& to) {
  EinsumCopy c;
  for (int l : order) {
    c.dims.push_back(e.size[l]);
    c.src.push_back(from[l]);
    c.dst.push_back(to[l]);
  }
  return coalesce(c);
}

// Label strides of a contiguous [order..] buffer.
std::vector<int64_t> packed_strides(const EinsumEquation& e, const std::vector<int>& order) {
  std::vector<int64_t> st(e.size.size(), 0);
  int64_t acc = 1;
  for (size_t i = order.size(); i-- > 0;) {
    st[order[i]] = acc;
    acc *= e.size[order[i]];
  }
  return st;
}

// Whether an operand with label strides st is one strided batch of [rows, cols] matrices as
// cuBLASLt takes them: the batch labels one stride (or all 0: one matrix for every batch), the
// columns contiguous with the rows at a leading dimension >= cols, or (allow_trans) the rows
// contiguous with the columns at a leading dimension >= rows. Fills o's trans, ld and stride.
bool in_place(const EinsumEquation& e, const std::vector<int64_t>& st, const std::vector<int>& batch,
              const std::vector<int>& rows, const std::vector<int>& cols, bool allow_trans, EinsumOperand* o) {
  int64_t bs = 0;
  if (std::any_of(batch.begin(), batch.end(), [&](int l) { return st[l] != 0; })) {
    bs = einsum_group_stride(batch, e, st);
    if (bs < 0) return false;
  }
  const int64_t r = extent(rows, e), cl = extent(cols, e);
  const int64_t rs = einsum_group_stride(rows, e, st), cs = einsum_group_stride(cols, e, st);
  if (rs < 0 || cs < 0) return false;
  if (cs == 0 || cs == 1) {
    const int64_t ld = rs == 0 ? std::max<int64_t>(cl, 1) : rs;
    if (ld >= cl) {
      o->trans = false;
      o->ld = ld;
      o->batch_stride = bs;
      return true;
    }
  }
  if (allow_trans && (rs == 0 || rs == 1)) {
    const int64_t ld = cs == 0 ? std::max<int64_t>(r, 1) : cs;
    if (ld >= r) {
      o->trans = true;
      o->ld = ld;
      o->batch_stride = bs;
      return true;
    }
  }
  return false;
}

}  // namespace

std::string EinsumCudaPlan::describe() const {
  auto side = [](const char* name, bool pack, bool trans) {
    return std::string(name) + (pack ? " packed" : trans ? " in place transposed" : " in place");
  };
  switch (kind) {
    case kNothing: return "nothing (empty output)";
    case kZero: return "zeros (a summed label of size 0)";
    case kCopy: return str("copy of rank ", copy.dims.size());
    case kGemm: break;
  }
  return str("gemm batch ", batch, " m ", m, " n ", n, " k ", k, ": ", side("A", a.pack, a.trans), ", ",
             b.source == EinsumOperand::kOnes ? std::string("B ones") : side("B", b.pack, b.trans), ", ",
             side("C", c_pack, false));
}

EinsumCudaPlan plan_einsum(const InferCtx& c) {
  const std::string eq = c.node.attr_string("equation", "");
  const size_t ni = c.num_inputs();
  if (ni > 2)
    c.unsupported("the CUDA backend runs Einsum of one or two inputs; equation '", eq, "' has ", ni,
                  " (the cpu backend runs it)");
  for (size_t i = 0; i < ni; ++i)
    if (c.input(i).dtype != DType::F32 && c.in[i].dtype != DType::F64)
      c.unsupported("the CUDA backend runs Einsum in float32 and float64 only, input ", i, " is ",
                    dtype_name(c.in[i].dtype), " (equation '", eq, "')");
  const EinsumEquation e = parse_einsum(c);
  const Shape& ys = c.out[0].shape;
  EinsumCudaPlan p;
  p.dtype = c.in[0].dtype;
  if (numel(ys) == 0) return p;
  if (einsum_has_zero_size(e)) {  // the output has elements, so the empty label is summed
    p.kind = EinsumCudaPlan::kZero;
    return p;
  }
  auto check_rank = [&](const EinsumCopy& cp, const char* what) {
    if (cp.dims.size() > static_cast<size_t>(kMaxRank))
      c.unsupported("the CUDA backend's ", what, " of equation '", eq, "' needs a copy over ", cp.dims.size(),
                    " dimensions, above its kernels' ", kMaxRank);
  };
  std::vector<int64_t> sc(e.size.size(), 0);  // the output's label strides
  {
    const std::vector<int64_t> os = strides_of(ys);
    for (size_t d = 0; d < e.out.size(); ++d)
      if (ys[d] != 1) sc[e.out[d]] = os[d];
  }
  const std::vector<int64_t> sa = einsum_label_strides(e, c.in[0].shape, 0);
  std::vector<int64_t> sb;
  std::vector<int> batch, M, N, K;
  if (ni == 2) {
    const EinsumGroups g = einsum_groups(e);
    batch = g.batch;
    M = g.M;
    N = g.N;
    // A label one input has and the other and the output lack is summed like a K label; the
    // input without it broadcasts along it (stride 0). K keeps the first input's order (so
    // that it may stay in place), then the second's own labels.
    for (int l : e.terms[0])
      if ((contains(g.K, l) || contains(g.only_a, l)) && !contains(K, l)) K.push_back(l);
    K.insert(K.end(), g.only_b.begin(), g.only_b.end());
    sb = einsum_label_strides(e, c.in[1].shape, 1);
  } else {
    for (int l : e.out)
      if (e.size[l] != 1) M.push_back(l);
    for (int l : e.terms[0])
      if (e.size[l] != 1 && !contains(e.out, l) && !contains(K, l)) K.push_back(l);
    if (K.empty()) {  // a transpose or a diagonal: one copy
      EinsumCopy cp;
      cp.dims = ys;
      cp.dst = strides_of(ys);
      for (size_t d = 0; d < ys.size(); ++d) cp.src.push_back(ys[d] == 1 ? 0 : sa[e.out[d]]);
      p.kind = EinsumCudaPlan::kCopy;
      p.copy = coalesce(cp);
      check_rank(p.copy, "transpose");
      return p;
    }
  }
  p.kind = EinsumCudaPlan::kGemm;
  p.batch = extent(batch, e);
  p.m = extent(M, e);
  p.n = extent(N, e);
  p.k = extent(K, e);
  constexpr int64_t kI32 = std::numeric_limits<int32_t>::max();
  if (p.batch > kI32 || p.m > kI32 || p.n > kI32 || p.k > kI32)
    c.unsupported("equation '", eq, "' is a GEMM of batch ", p.batch, ", ", p.m, "x", p.n, "x", p.k,
                  ", past cuBLASLt's 32-bit sizes");
  auto operand = [&](EinsumOperand* o, int source, const std::vector<int64_t>& st, const std::vector<int>& rows,
                     const std::vector<int>& cols) {
    o->source = source;
    if (in_place(e, st, batch, rows, cols, true, o)) return;
    const std::vector<int> order = packed_order(batch, rows, cols);
    o->pack = true;
    o->gather = label_copy(e, order, st, packed_strides(e, order));
    o->trans = false;
    o->ld = std::max<int64_t>(extent(cols, e), 1);
    o->batch_stride = extent(rows, e) * extent(cols, e);
    check_rank(o->gather, source == 0 ? "gather of input 0" : "gather of input 1");
  };
  operand(&p.a, 0, sa, M, K);
  if (ni == 2) {
    operand(&p.b, 1, sb, K, N);
  } else {  // B: ones [K, 1], the same for every batch
    p.b.source = EinsumOperand::kOnes;
    p.b.ld = 1;
    p.b.batch_stride = 0;
    p.ones = p.k;
  }
  EinsumOperand out;
  if (in_place(e, sc, batch, M, N, false, &out)) {
    p.ldc = out.ld;
    p.c_batch_stride = out.batch_stride;
  } else {
    const std::vector<int> order = packed_order(batch, M, N);
    p.c_pack = true;
    p.scatter = label_copy(e, order, packed_strides(e, order), sc);
    p.ldc = std::max<int64_t>(p.n, 1);
    p.c_batch_stride = p.m * p.n;
    check_rank(p.scatter, "scatter of the output");
  }
  return p;
}

}  // namespace pd::cuda
