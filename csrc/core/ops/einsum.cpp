// Einsum (ai.onnx, opset 12+): every equation ONNX allows — implicit output (`ij,jk`) and
// explicit (`ij,jk->ik`), ellipsis (`...ii->...i`) with numpy broadcasting of the ellipsis
// dimensions (and of any labelled dimension of size 1), repeated labels within a term
// (diagonals, traces), any number of inputs, any numeric type.
//
// Kernels:
//   - Two inputs (contractions such as attention's `bmhd,bnhd->bmhn` and `bmhn,bnhd->bmhd`):
//     labels split into batch (both inputs and the output), M (first input and output),
//     N (second input and output) and K (both inputs, summed). Each operand is used in place
//     as a strided [M,K] / [K,N] matrix per batch (transposed or with a leading dimension) when
//     its layout allows, else packed once per run into a contiguous [batch,M,K] / [batch,K,N]
//     scratch (this also sums labels that only one input has, and takes diagonals); then one
//     GEMM per batch index through rc.blas->sgemm for float32 (oneDNN's sgemm in the CPU
//     backend), a plain loop for the other types; the result is written straight into the
//     output when its layout is [batch..,M..,N..] up to strides, else into a scratch that is
//     permuted into place. Nothing is allocated in run().
//   - One input, three or more inputs, or a zero-sized dimension: a strided loop over the
//     output and the summed labels (float32 accumulates in double).
#include <algorithm>
#include <array>
#include <cstring>
#include <string>
#include <type_traits>
#include <vector>

#include "../einsum_plan.h"
#include "../op.h"

namespace pd {

namespace {

// The equation analysis lives in ../einsum_plan.h (shared with the CUDA backend).
constexpr int kEllipsis = kEinsumEllipsis;
using Equation = EinsumEquation;
Equation parse(const InferCtx& c) { return parse_einsum(c); }

void infer_einsum(InferCtx& c) {
  const DType t = c.input(0).dtype;
  if (!dtype_supported(t) || t == DType::Bool) c.unsupported("data type ", dtype_name(t), " is not supported");
  const Equation e = parse(c);
  c.out[0].dtype = t;
  c.out[0].shape.clear();
  for (int l : e.out) c.out[0].shape.push_back(e.size[l]);
}

// Stride of each label in input i (the sum over a repeated label's dimensions; 0 where the
// input broadcasts a dimension of size 1 or lacks the label).
std::vector<int64_t> label_strides(const Equation& e, const Shape& s, size_t i) {
  return einsum_label_strides(e, s, i);
}

template <typename T>
using Acc = typename std::conditional<std::is_same<T, float>::value, double, T>::type;

// dst[outer] (strided by dst_st) = sum over the inner space of prod_i src_i[outer, inner], with
// each space walked by an odometer. Serves both the generic kernel (n sources) and packing /
// unpacking (one source).
struct Walk {
  std::vector<int64_t> outer, inner;                    // dimension sizes
  std::vector<std::vector<int64_t>> src_outer, src_inner;  // per source, per dimension
  std::vector<int64_t> dst_st;                          // per outer dimension
};

template <typename T, size_t N>
void walk(const Walk& w, const std::array<const T*, N>& src, size_t nsrc, T* dst) {
  const size_t ro = w.outer.size(), ri = w.inner.size();
  int64_t no = 1, ni = 1;
  for (int64_t d : w.outer) no *= d;
  for (int64_t d : w.inner) ni *= d;
  if (no == 0) return;
  // Fixed-size odometers (rank is bounded by the number of label ids).
  std::array<int64_t, 2 * kEllipsis> io{}, ii{};
  std::array<int64_t, 2 * kEllipsis> base{};  // per source, offset of the outer index
  std::array<int64_t, 2 * kEllipsis> off{};
  int64_t dst_off = 0;
  for (int64_t o = 0; o < no; ++o) {
    Acc<T> sum = Acc<T>(0);
    for (size_t s = 0; s < nsrc; ++s) off[s] = base[s];
    std::fill(ii.begin(), ii.begin() + ri, 0);
    for (int64_t k = 0; k < ni; ++k) {
      Acc<T> p = static_cast<Acc<T>>(src[0][off[0]]);
      for (size_t s = 1; s < nsrc; ++s) p = static_cast<Acc<T>>(p * static_cast<Acc<T>>(src[s][off[s]]));
      sum = static_cast<Acc<T>>(sum + p);
      for (size_t d = ri; d-- > 0;) {
        for (size_t s = 0; s < nsrc; ++s) off[s] += w.src_inner[s][d];
        if (++ii[d] < w.inner[d]) break;
        for (size_t s = 0; s < nsrc; ++s) off[s] -= w.src_inner[s][d] * w.inner[d];
        ii[d] = 0;
      }
    }
    dst[dst_off] = static_cast<T>(sum);
    for (size_t d = ro; d-- > 0;) {
      for (size_t s = 0; s < nsrc; ++s) base[s] += w.src_outer[s][d];
      dst_off += w.dst_st[d];
      if (++io[d] < w.outer[d]) break;
      for (size_t s = 0; s < nsrc; ++s) base[s] -= w.src_outer[s][d] * w.outer[d];
      dst_off -= w.dst_st[d] * w.outer[d];
      io[d] = 0;
    }
  }
}

// ---- the generic kernel ----

Walk generic_walk(const Equation& e, const InferCtx& c) {
  const size_t n = e.terms.size();
  Walk w;
  w.src_outer.resize(n);
  w.src_inner.resize(n);
  std::vector<std::vector<int64_t>> st(n);
  for (size_t i = 0; i < n; ++i) st[i] = label_strides(e, c.in[i].shape, i);
  const std::vector<int64_t> os = strides_of(c.out[0].shape);
  for (size_t d = 0; d < e.out.size(); ++d) {
    w.outer.push_back(e.size[e.out[d]]);
    w.dst_st.push_back(os[d]);
    for (size_t i = 0; i < n; ++i) w.src_outer[i].push_back(st[i][e.out[d]]);
  }
  for (size_t l = 0; l < e.size.size(); ++l) {
    if (!e.used[l] || std::find(e.out.begin(), e.out.end(), static_cast<int>(l)) != e.out.end()) continue;
    w.inner.push_back(e.size[l]);
    for (size_t i = 0; i < n; ++i) w.src_inner[i].push_back(st[i][l]);
  }
  return w;
}

// ---- the contraction (two inputs) ----

// One GEMM per batch: C[M,N] = op(A)[M,K] * op(B)[K,N], leading dimensions as BLAS takes them.
template <typename T>
void small_gemm(RunCtx& rc, bool ta, bool tb, int64_t m, int64_t n, int64_t k, const T* a, int64_t lda,
                const T* b, int64_t ldb, T* c, int64_t ldc) {
  if constexpr (std::is_same<T, float>::value) {
    rc.blas->sgemm(ta, tb, m, n, k, 1.f, a, lda, b, ldb, 0.f, c, ldc);
  } else {
    (void)rc;
    for (int64_t i = 0; i < m; ++i) {
      T* crow = c + i * ldc;
      for (int64_t j = 0; j < n; ++j) crow[j] = T(0);
      for (int64_t p = 0; p < k; ++p) {
        const T av = ta ? a[p * lda + i] : a[i * lda + p];
        for (int64_t j = 0; j < n; ++j)
          crow[j] = static_cast<T>(crow[j] + av * (tb ? b[j * ldb + p] : b[p * ldb + j]));
      }
    }
  }
}

struct Operand {
  bool pack = false;  // gathered into scratch first (else used in place)
  bool trans = false;
  int64_t ld = 1;
  Walk gather;        // source -> contiguous [batch.., rows.., cols..] (pack only)
  std::vector<int64_t> batch_off;
};

struct ContractionPlan {
  int64_t m = 1, n = 1, k = 1, batch = 1;
  Operand a, b, c;         // c.pack: GEMM into scratch, then c.gather scatters it into the output
  size_t scratch_a = 0, scratch_b = 0, scratch_c = 0;  // elements
};

int64_t group_stride(const std::vector<int>& g, const Equation& e, const std::vector<int64_t>& st) {
  return einsum_group_stride(g, e, st);
}

// Chooses how an operand of logical shape [rows, cols] is used in place: not transposed (cols
// contiguous, ld = row stride) or transposed (rows contiguous, ld = col stride), or returns
// false when it must be packed. allow_trans is false for the output.
bool in_place(int64_t rs, int64_t cs, int64_t rows, int64_t cols, bool allow_trans, Operand* o) {
  if (rs < 0 || cs < 0) return false;
  if (cs == 0 || cs == 1) {
    const int64_t ld = rs == 0 ? std::max<int64_t>(cols, 1) : rs;
    if (ld >= cols) {
      o->trans = false;
      o->ld = ld;
      return true;
    }
  }
  if (allow_trans && (rs == 0 || rs == 1)) {
    const int64_t ld = cs == 0 ? std::max<int64_t>(rows, 1) : cs;
    if (ld >= rows) {
      o->trans = true;
      o->ld = ld;
      return true;
    }
  }
  return false;
}

ContractionPlan contraction_plan(const Equation& e, const InferCtx& c) {
  ContractionPlan p;
  const std::vector<int64_t> sa = label_strides(e, c.in[0].shape, 0);
  const std::vector<int64_t> sb = label_strides(e, c.in[1].shape, 1);
  const Shape& yshape = c.out[0].shape;
  std::vector<int64_t> sc(e.size.size(), 0);
  {
    const std::vector<int64_t> os = strides_of(yshape);
    for (size_t d = 0; d < e.out.size(); ++d)
      if (yshape[d] != 1) sc[e.out[d]] = os[d];
  }
  // Groups (einsum_groups); labels only one input has and the output lacks are summed while
  // packing.
  const EinsumGroups groups = einsum_groups(e);
  const std::vector<int>& batch = groups.batch;
  const std::vector<int>& M = groups.M;
  const std::vector<int>& N = groups.N;
  const std::vector<int>& K = groups.K;
  const std::vector<int>& only_a = groups.only_a;
  const std::vector<int>& only_b = groups.only_b;
  auto extent = [&](const std::vector<int>& g) {
    int64_t v = 1;
    for (int l : g) v *= e.size[l];
    return v;
  };
  p.m = extent(M);
  p.n = extent(N);
  p.k = extent(K);
  p.batch = extent(batch);

  // Packing walk of one operand into [batch.., rows.., cols..], summing `summed`.
  auto pack_walk = [&](const std::vector<int64_t>& st, const std::vector<int>& rows, const std::vector<int>& cols,
                       const std::vector<int>& summed) {
    Walk w;
    w.src_outer.resize(1);
    w.src_inner.resize(1);
    std::vector<int> order = batch;
    order.insert(order.end(), rows.begin(), rows.end());
    order.insert(order.end(), cols.begin(), cols.end());
    Shape dims;
    for (int l : order) dims.push_back(e.size[l]);
    w.dst_st = strides_of(dims);
    for (int l : order) {
      w.outer.push_back(e.size[l]);
      w.src_outer[0].push_back(st[l]);
    }
    for (int l : summed) {
      w.inner.push_back(e.size[l]);
      w.src_inner[0].push_back(st[l]);
    }
    return w;
  };
  // The batch offsets of an operand with label strides st.
  auto offsets = [&](const std::vector<int64_t>& st) {
    std::vector<int64_t> off(p.batch, 0);
    std::vector<int64_t> idx(batch.size(), 0);
    int64_t o = 0;
    for (int64_t i = 0; i < p.batch; ++i) {
      off[i] = o;
      for (size_t d = batch.size(); d-- > 0;) {
        o += st[batch[d]];
        if (++idx[d] < e.size[batch[d]]) break;
        o -= st[batch[d]] * e.size[batch[d]];
        idx[d] = 0;
      }
    }
    return off;
  };
  // A packed operand is contiguous [batch, rows, cols].
  auto packed_strides = [&](const std::vector<int>& rows, const std::vector<int>& cols) {
    std::vector<int64_t> st(e.size.size(), 0);
    std::vector<int> order = batch;
    order.insert(order.end(), rows.begin(), rows.end());
    order.insert(order.end(), cols.begin(), cols.end());
    int64_t acc = 1;
    for (size_t i = order.size(); i-- > 0;) {
      st[order[i]] = acc;
      acc *= e.size[order[i]];
    }
    return st;
  };
  auto plan_operand = [&](Operand* o, const std::vector<int64_t>& st, const std::vector<int>& rows,
                          const std::vector<int>& cols, const std::vector<int>& summed, int64_t r, int64_t cl,
                          bool allow_trans, size_t* scratch) {
    o->pack = !summed.empty() || !in_place(group_stride(rows, e, st), group_stride(cols, e, st), r, cl, allow_trans, o);
    if (o->pack) {
      o->gather = pack_walk(st, rows, cols, summed);
      o->trans = false;
      o->ld = std::max<int64_t>(cl, 1);
      *scratch = static_cast<size_t>(p.batch * r * cl);
      o->batch_off = offsets(packed_strides(rows, cols));
    } else {
      o->batch_off = offsets(st);
    }
  };
  plan_operand(&p.a, sa, M, K, only_a, p.m, p.k, true, &p.scratch_a);
  plan_operand(&p.b, sb, K, N, only_b, p.k, p.n, true, &p.scratch_b);
  plan_operand(&p.c, sc, M, N, {}, p.m, p.n, false, &p.scratch_c);
  if (p.c.pack) {
    // Scatter: walk the scratch [batch, M, N] in order, writing to the output's strides.
    Walk& w = p.c.gather;
    const std::vector<int64_t> ps = packed_strides(M, N);
    std::vector<int> order = batch;
    order.insert(order.end(), M.begin(), M.end());
    order.insert(order.end(), N.begin(), N.end());
    w.dst_st.clear();
    w.src_outer[0].clear();
    for (int l : order) {
      w.src_outer[0].push_back(ps[l]);
      w.dst_st.push_back(sc[l]);
    }
  }
  return p;
}

bool has_zero_size(const Equation& e) { return einsum_has_zero_size(e); }

template <typename T>
class ContractionKernel final : public Kernel {
 public:
  explicit ContractionKernel(ContractionPlan p)
      : p_(std::move(p)), sa_(p_.scratch_a), sb_(p_.scratch_b), sc_(p_.scratch_c) {}
  void run(RunCtx& rc, const View* in, View* out) override {
    const T* a = in[0].as<const T>();
    const T* b = in[1].as<const T>();
    T* y = out[0].as<T>();
    if (p_.a.pack) {
      walk<T, 1>(p_.a.gather, {a}, 1, sa_.data());
      a = sa_.data();
    }
    if (p_.b.pack) {
      walk<T, 1>(p_.b.gather, {b}, 1, sb_.data());
      b = sb_.data();
    }
    T* c = p_.c.pack ? sc_.data() : y;
    for (int64_t i = 0; i < p_.batch; ++i)
      small_gemm<T>(rc, p_.a.trans, p_.b.trans, p_.m, p_.n, p_.k, a + p_.a.batch_off[i], p_.a.ld,
                    b + p_.b.batch_off[i], p_.b.ld, c + p_.c.batch_off[i], p_.c.ld);
    if (p_.c.pack) walk<T, 1>(p_.c.gather, {static_cast<const T*>(c)}, 1, y);
  }

 private:
  ContractionPlan p_;
  std::vector<T> sa_, sb_, sc_;
};

template <typename T>
class GenericKernel final : public Kernel {
 public:
  GenericKernel(Walk w, size_t n) : w_(std::move(w)), n_(n) {}
  void run(RunCtx&, const View* in, View* out) override {
    std::array<const T*, 64> src{};
    for (size_t i = 0; i < n_; ++i) src[i] = in[i].as<const T>();
    walk<T, 64>(w_, src, n_, out[0].as<T>());
  }

 private:
  Walk w_;
  size_t n_;
};

std::unique_ptr<Kernel> make_einsum(const InferCtx& c) {
  const Equation e = parse(c);
  const size_t n = e.terms.size();
  if (n > 64) c.unsupported("more than 64 inputs");
  const bool contraction = n == 2 && !has_zero_size(e);
  return dispatch_numeric(c.in[0].dtype, "Einsum", [&](auto* tag) -> std::unique_ptr<Kernel> {
    using T = PD_TAG_TYPE(tag);
    if (contraction) return std::make_unique<ContractionKernel<T>>(contraction_plan(e, c));
    return std::make_unique<GenericKernel<T>>(generic_walk(e, c), n);
  });
}

}  // namespace

void register_einsum_ops(OpRegistry& r) { r.add(OpSchema{"", "Einsum", infer_einsum, make_einsum}); }

}  // namespace pd
