// Neural-network ops (ai.onnx domain): Gemm, MatMul, Conv, MaxPool, AveragePool,
// GlobalAveragePool, GlobalMaxPool, BatchNormalization, LayerNormalization,
// InstanceNormalization; and policyd's fused ops (domain "pd", produced by the fusion pass in
// passes.cpp, run by the CPU backend on oneDNN; these portable versions are the reference):
//   pd.FusedGemm(A, B, C?)     Gemm's attributes + activation, activation_alpha, activation_beta
//   pd.FusedMatMul(A, B, bias?) A rank >= 1, B rank 2, bias [N]: activate(MatMul(A, B) + bias)
//   pd.FusedConv(X, W, B?)     Conv's attributes + activation, activation_alpha, activation_beta
//
// The MatMul broadcasting and the Conv geometry/im2col are shared with the quantized ops
// (quant.cpp, quant_fused.cpp) through nn.h.
//
// Float32 GEMMs go through rc.blas->sgemm (oneDNN's in the CPU backend); double and integer
// types use a plain loop. Conv is im2col into a scratch buffer sized in make() + GEMM (no
// im2col for 1x1/stride-1/unpadded kernels). Kernels that hold scratch are not re-entrant: a
// Program (and so each kernel) is run by one thread at a time.
//
// Exceptions in the ONNX node tests (not failures of these ops):
//   - float16/bfloat16 variants: those types are not computed by policyd's portable kernels
//     (the runner reports them as unsupported data types).
//   - Conv/pooling over more than 3 spatial dimensions is unsupported (no node test has one).
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <type_traits>

#include "../activation.h"
#include "../op.h"
#include "nn.h"

namespace pd {

namespace {


void require_float(const InferCtx& c, DType t) {
  if (t != DType::F32 && t != DType::F64)
    c.unsupported("data type ", dtype_name(t), " is not supported");
}
void require_numeric(const InferCtx& c, DType t) {
  if (!dtype_supported(t) || t == DType::Bool)
    c.unsupported("data type ", dtype_name(t), " is not supported");
}
void require_same(const InferCtx& c, size_t i, DType t) {
  if (c.has_input(i) && c.in[i].dtype != t)
    c.fail("input ", i, " has type ", dtype_name(c.in[i].dtype), ", expected ", dtype_name(t));
}

// ---------------------------------------------------------------------------------------------
// GEMM core shared by Gemm, MatMul, Conv and the fused ops
// ---------------------------------------------------------------------------------------------

// Computation type of the epilogue / non-float GEMM scaling.
template <typename T>
using CompT = typename std::conditional<std::is_floating_point<T>::value, T, double>::type;

// c[m,n] = alpha * op(a) * op(b), row-major with leading dimensions.
template <typename T>
void gemm(RunCtx& rc, bool ta, bool tb, int64_t m, int64_t n, int64_t k, float alpha, const T* a,
          int64_t lda, const T* b, int64_t ldb, T* c, int64_t ldc) {
  if (m == 0 || n == 0) return;
  if constexpr (std::is_same<T, float>::value) {
    rc.blas->sgemm(ta, tb, m, n, k, alpha, a, lda, b, ldb, 0.f, c, ldc);
  } else {
    (void)rc;
    for (int64_t i = 0; i < m; ++i) {
      T* crow = c + i * ldc;
      for (int64_t j = 0; j < n; ++j) crow[j] = T(0);
      for (int64_t p = 0; p < k; ++p) {
        const T av = ta ? a[p * lda + i] : a[i * lda + p];
        if (!tb) {
          const T* brow = b + p * ldb;
          for (int64_t j = 0; j < n; ++j) crow[j] = static_cast<T>(crow[j] + av * brow[j]);
        } else {
          for (int64_t j = 0; j < n; ++j) crow[j] = static_cast<T>(crow[j] + av * b[j * ldb + p]);
        }
      }
      if (alpha != 1.f)
        for (int64_t j = 0; j < n; ++j)
          crow[j] = static_cast<T>(static_cast<CompT<T>>(alpha) * static_cast<CompT<T>>(crow[j]));
    }
  }
}

// What follows a GEMM: y[i,j] = act(y[i,j] + beta * bias[i*bm + j*bn]).
struct Epilogue {
  bool bias = false;   // which input holds the bias is the op's business
  int64_t bm = 0, bn = 0;
  double beta = 1.0;
  Act act = Act::None;
  float act_alpha = 0.f, act_beta = 0.f;
  bool active() const { return bias || act != Act::None; }
};

template <Act A, typename T>
inline T act_one(T x, float aa, float ab) {
  if constexpr (A == Act::None) {
    return x;
  } else if constexpr (std::is_floating_point<T>::value) {
    return activate<T>(A, x, aa, ab);
  } else {
    return static_cast<T>(activate<double>(A, static_cast<double>(x), aa, ab));
  }
}

template <Act A, typename T>
void epilogue_rows(const Epilogue& e, T* y, int64_t m, int64_t n, const T* bias) {
  using C = CompT<T>;
  const float aa = e.act_alpha, ab = e.act_beta;
  const C beta = static_cast<C>(e.beta);
  for (int64_t i = 0; i < m; ++i) {
    T* row = y + i * n;
    if (bias) {
      const T* br = bias + i * e.bm;
      if (e.bn == 1) {
        for (int64_t j = 0; j < n; ++j)
          row[j] = act_one<A>(static_cast<T>(row[j] + beta * static_cast<C>(br[j])), aa, ab);
      } else if (e.bn == 0) {
        const C bv = beta * static_cast<C>(br[0]);
        for (int64_t j = 0; j < n; ++j) row[j] = act_one<A>(static_cast<T>(row[j] + bv), aa, ab);
      } else {
        for (int64_t j = 0; j < n; ++j)
          row[j] = act_one<A>(static_cast<T>(row[j] + beta * static_cast<C>(br[j * e.bn])), aa, ab);
      }
    } else {
      for (int64_t j = 0; j < n; ++j) row[j] = act_one<A>(row[j], aa, ab);
    }
  }
}

// Applies the epilogue to y viewed as [m, n]; bias may be nullptr (no bias).
template <typename T>
void run_epilogue(const Epilogue& e, T* y, int64_t m, int64_t n, const T* bias) {
  if (!e.bias) bias = nullptr;
  if (!bias && e.act == Act::None) return;
  switch (e.act) {
#define PD_EPI_CASE(A) \
  case Act::A: return epilogue_rows<Act::A>(e, y, m, n, bias);
    PD_EPI_CASE(None)
    PD_EPI_CASE(Relu)
    PD_EPI_CASE(Tanh)
    PD_EPI_CASE(Sigmoid)
    PD_EPI_CASE(Elu)
    PD_EPI_CASE(LeakyRelu)
    PD_EPI_CASE(Softplus)
    PD_EPI_CASE(Clip)
    PD_EPI_CASE(Mish)
    PD_EPI_CASE(HardSigmoid)
    PD_EPI_CASE(Swish)
#undef PD_EPI_CASE
  }
}

// The fused ops' activation attributes.
Epilogue activation_of(const InferCtx& c) {
  Epilogue e;
  const std::string name = c.node.attr_string("activation", "");
  if (!parse_act(name, &e.act)) c.unsupported("unknown activation '", name, "'");
  e.act_alpha = c.node.attr_float("activation_alpha", 0.f);
  e.act_beta = c.node.attr_float("activation_beta", 0.f);
  return e;
}

bool is_fused(const InferCtx& c) { return c.node.domain == "pd"; }

// ---------------------------------------------------------------------------------------------
// Gemm / pd.FusedGemm
// ---------------------------------------------------------------------------------------------

struct GemmPlan {
  bool ta = false, tb = false;
  int64_t m = 0, n = 0, k = 0;
  float alpha = 1.f;
  Epilogue epi;
};

GemmPlan gemm_plan(const InferCtx& c) {
  const TensorInfo& a = c.input(0);
  const TensorInfo& b = c.input(1);
  if (a.shape.size() != 2 || b.shape.size() != 2)
    c.fail("A and B must be 2-D, got ", shape_str(a.shape), " and ", shape_str(b.shape));
  GemmPlan p;
  p.ta = c.node.attr_int("transA", 0) != 0;
  p.tb = c.node.attr_int("transB", 0) != 0;
  p.alpha = c.node.attr_float("alpha", 1.f);
  p.m = p.ta ? a.shape[1] : a.shape[0];
  p.k = p.ta ? a.shape[0] : a.shape[1];
  const int64_t kb = p.tb ? b.shape[1] : b.shape[0];
  p.n = p.tb ? b.shape[0] : b.shape[1];
  if (kb != p.k)
    c.fail("inner dimensions differ: A ", shape_str(a.shape), (p.ta ? " (transposed)" : ""), ", B ",
           shape_str(b.shape), (p.tb ? " (transposed)" : ""));
  if (is_fused(c)) p.epi = activation_of(c);
  const float beta = c.node.attr_float("beta", 1.f);
  if (c.has_input(2)) {
    const Shape& cs = c.in[2].shape;
    if (cs.size() > 2) c.fail("C must have rank <= 2, got ", shape_str(cs));
    const Shape full = {p.m, p.n};
    const size_t off = 2 - cs.size();
    for (size_t i = 0; i < cs.size(); ++i)
      if (cs[i] != 1 && cs[i] != full[off + i])
        c.fail("C ", shape_str(cs), " cannot be broadcast to [", p.m, ",", p.n, "]");
    std::vector<int64_t> st = broadcast_strides(cs, full);
    p.epi.bm = st[0];
    p.epi.bn = st[1];
    p.epi.beta = beta;
    p.epi.bias = beta != 0.f && numel(cs) > 0;
  } else if (!is_fused(c) && c.opset() < 11) {
    c.fail("input C is required before opset 11");
  }
  return p;
}

void infer_gemm(InferCtx& c) {
  const TensorInfo& a = c.input(0);
  require_numeric(c, a.dtype);
  require_same(c, 1, a.dtype);
  require_same(c, 2, a.dtype);
  GemmPlan p = gemm_plan(c);
  c.out[0].dtype = a.dtype;
  c.out[0].shape = {p.m, p.n};
}

std::unique_ptr<Kernel> make_gemm(const InferCtx& c) {
  GemmPlan p = gemm_plan(c);
  return dispatch_numeric(c.in[0].dtype, c.node.op.c_str(), [&](auto* tag) {
    using T = PD_TAG_TYPE(tag);
    return make_kernel([p](RunCtx& rc, const View* in, View* out) {
      T* y = out[0].as<T>();
      const int64_t lda = p.ta ? p.m : p.k, ldb = p.tb ? p.k : p.n;
      gemm<T>(rc, p.ta, p.tb, p.m, p.n, p.k, p.alpha, in[0].as<const T>(), lda, in[1].as<const T>(),
              ldb, y, p.n);
      run_epilogue<T>(p.epi, y, p.m, p.n, p.epi.bias ? in[2].as<const T>() : nullptr);
    });
  });
}

// ---------------------------------------------------------------------------------------------
// MatMul / pd.FusedMatMul
// ---------------------------------------------------------------------------------------------

struct MatMulPlan : MatMulShape {
  Epilogue epi;
};

}  // namespace

Shape matmul_shape(const InferCtx& c, MatMulShape* p, size_t ai, size_t bi) {
  Shape a = c.input(ai).shape, b = c.input(bi).shape;
  if (a.empty() || b.empty()) c.fail("MatMul inputs must have rank >= 1");
  const bool a1 = a.size() == 1, b1 = b.size() == 1;
  if (a1) a.insert(a.begin(), 1);
  if (b1) b.push_back(1);
  const int64_t m = a[a.size() - 2], k = a.back(), kb = b[b.size() - 2], n = b.back();
  if (k != kb)
    c.fail("inner dimensions differ: ", shape_str(c.in[ai].shape), " x ", shape_str(c.in[bi].shape));
  const Shape ab(a.begin(), a.end() - 2), bb(b.begin(), b.end() - 2);
  const Shape ob = broadcast(c, ab, bb);
  Shape out = ob;
  if (!a1) out.push_back(m);
  if (!b1) out.push_back(n);
  if (p) {
    p->m = m;
    p->n = n;
    p->k = k;
    p->batch = numel(ob);
    p->fold = numel(bb) == 1 && numel(ab) == p->batch;
    if (!p->fold && p->batch > 0) {
      std::vector<int64_t> as = broadcast_strides(ab, ob), bs = broadcast_strides(bb, ob);
      p->a_off.resize(p->batch);
      p->b_off.resize(p->batch);
      std::vector<int64_t> idx(ob.size(), 0);
      for (int64_t i = 0; i < p->batch; ++i) {
        int64_t ao = 0, bo = 0;
        for (size_t d = 0; d < ob.size(); ++d) {
          ao += idx[d] * as[d];
          bo += idx[d] * bs[d];
        }
        p->a_off[i] = ao * m * k;
        p->b_off[i] = bo * k * n;
        for (size_t d = ob.size(); d-- > 0;) {
          if (++idx[d] < ob[d]) break;
          idx[d] = 0;
        }
      }
    }
  }
  return out;
}

namespace {

void infer_matmul(InferCtx& c) {
  const TensorInfo& a = c.input(0);
  require_numeric(c, a.dtype);
  require_same(c, 1, a.dtype);
  if (is_fused(c)) {
    if (c.input(1).shape.size() != 2) c.fail("B must be 2-D, got ", shape_str(c.in[1].shape));
    require_same(c, 2, a.dtype);
    if (c.has_input(2)) {
      const Shape& bs = c.in[2].shape;
      const int64_t n = c.in[1].shape[1];
      if (bs.size() != 1 || (bs[0] != n && bs[0] != 1))
        c.fail("bias must be 1-D [", n, "], got ", shape_str(bs));
    }
    activation_of(c);
  }
  c.out[0].dtype = a.dtype;
  c.out[0].shape = matmul_shape(c, nullptr);
}

std::unique_ptr<Kernel> make_matmul(const InferCtx& c) {
  MatMulPlan p;
  matmul_shape(c, &p);
  if (is_fused(c)) {
    p.epi = activation_of(c);
    if (c.has_input(2)) {
      p.epi.bias = true;
      p.epi.bm = 0;
      p.epi.bn = c.in[2].shape[0] == 1 ? 0 : 1;
    }
  }
  return dispatch_numeric(c.in[0].dtype, c.node.op.c_str(), [&](auto* tag) {
    using T = PD_TAG_TYPE(tag);
    return make_kernel([p](RunCtx& rc, const View* in, View* out) {
      const T* a = in[0].as<const T>();
      const T* b = in[1].as<const T>();
      T* y = out[0].as<T>();
      const int64_t mn = p.m * p.n;
      if (p.fold) {
        gemm<T>(rc, false, false, p.batch * p.m, p.n, p.k, 1.f, a, p.k, b, p.n, y, p.n);
      } else {
        for (int64_t i = 0; i < p.batch; ++i)
          gemm<T>(rc, false, false, p.m, p.n, p.k, 1.f, a + p.a_off[i], p.k, b + p.b_off[i], p.n,
                  y + i * mn, p.n);
      }
      if (p.epi.active())
        run_epilogue<T>(p.epi, y, p.batch * p.m, p.n, p.epi.bias ? in[2].as<const T>() : nullptr);
    });
  });
}

// ---------------------------------------------------------------------------------------------
// Spatial geometry shared by Conv and the pools
// ---------------------------------------------------------------------------------------------

}  // namespace

Geometry geometry(const InferCtx& c, const Shape& x, const std::vector<int64_t>& kernel,
                  bool ceil_mode, bool allow_dilations) {
  if (x.size() < 3) c.fail("input must have rank >= 3 ([N, C, spatial...]), got ", shape_str(x));
  const int nsp = static_cast<int>(x.size()) - 2;
  if (nsp > kMaxSpatial) c.unsupported("more than ", kMaxSpatial, " spatial dimensions");
  if (static_cast<int>(kernel.size()) != nsp)
    c.fail("kernel has ", kernel.size(), " spatial dims, input has ", nsp);
  const std::vector<int64_t> ones(nsp, 1);
  std::vector<int64_t> strides = c.node.attr_ints("strides", ones);
  std::vector<int64_t> dil = c.node.attr_ints("dilations", ones);
  std::vector<int64_t> pads = c.node.attr_ints("pads", std::vector<int64_t>(2 * nsp, 0));
  if (strides.empty()) strides = ones;
  if (dil.empty()) dil = ones;
  if (pads.empty()) pads.assign(2 * nsp, 0);
  if (static_cast<int>(strides.size()) != nsp) c.fail("'strides' must have ", nsp, " values");
  if (static_cast<int>(dil.size()) != nsp) c.fail("'dilations' must have ", nsp, " values");
  if (static_cast<int>(pads.size()) != 2 * nsp) c.fail("'pads' must have ", 2 * nsp, " values");
  if (!allow_dilations)
    for (int64_t d : dil)
      if (d != 1) c.fail("'dilations' is not supported by this op at this opset");
  const std::string auto_pad = c.node.attr_string("auto_pad", "NOTSET");
  if (auto_pad != "NOTSET" && auto_pad != "SAME_UPPER" && auto_pad != "SAME_LOWER" &&
      auto_pad != "VALID")
    c.fail("unknown auto_pad '", auto_pad, "'");
  Geometry g;
  g.nsp = nsp;
  for (int i = 0; i < nsp; ++i) {
    const int s = kMaxSpatial - nsp + i;
    const int64_t in = x[2 + i], k = kernel[i], st = strides[i], dl = dil[i];
    if (k < 1) c.fail("kernel dims must be >= 1");
    if (st < 1) c.fail("'strides' must be >= 1");
    if (dl < 1) c.fail("'dilations' must be >= 1");
    // Model attributes: bound them so that the geometry below cannot overflow.
    constexpr int64_t kMaxGeom = int64_t{1} << 31;
    if (k > kMaxGeom || st > kMaxGeom || dl > kMaxGeom || pads[i] > kMaxGeom || pads[nsp + i] > kMaxGeom)
      c.fail("kernel, 'strides', 'dilations' and 'pads' must be at most ", kMaxGeom);
    const int64_t ek = (k - 1) * dl + 1;  // effective kernel extent
    int64_t pb = 0, pe = 0, out = 0;
    if (auto_pad == "SAME_UPPER" || auto_pad == "SAME_LOWER") {
      out = (in + st - 1) / st;
      const int64_t total = std::max<int64_t>(0, (out - 1) * st + ek - in);
      pb = auto_pad == "SAME_UPPER" ? total / 2 : total - total / 2;
      pe = total - pb;
    } else {
      if (auto_pad == "NOTSET") {
        pb = pads[i];
        pe = pads[nsp + i];
        if (pb < 0 || pe < 0) c.fail("'pads' must be >= 0");
      }
      const int64_t span = in + pb + pe - ek;
      if (span < 0)
        c.fail("kernel extent ", ek, " is larger than the padded input ", in + pb + pe);
      out = (ceil_mode ? (span + st - 1) / st : span / st) + 1;
      // A window may not start in the end padding (ceil mode).
      if (ceil_mode && (out - 1) * st >= in + pb) --out;
    }
    g.in[s] = in;
    g.k[s] = k;
    g.out[s] = out;
    g.stride[s] = st;
    g.dil[s] = dl;
    g.pad_b[s] = pb;
    g.pad_e[s] = pe;
  }
  return g;
}

Shape spatial_out_shape(const Geometry& g, int64_t n, int64_t ch) {
  Shape s = {n, ch};
  for (int i = kMaxSpatial - g.nsp; i < kMaxSpatial; ++i) s.push_back(g.out[i]);
  return s;
}

// ---------------------------------------------------------------------------------------------
// Conv / pd.FusedConv
// ---------------------------------------------------------------------------------------------

ConvShape conv_shape(const InferCtx& c, size_t xi, size_t wi) {
  const TensorInfo& x = c.input(xi);
  const TensorInfo& w = c.input(wi);
  if (w.shape.size() != x.shape.size())
    c.fail("W ", shape_str(w.shape), " must have the rank of X ", shape_str(x.shape));
  std::vector<int64_t> kernel(w.shape.begin() + 2, w.shape.end());
  std::vector<int64_t> ks = c.node.attr_ints("kernel_shape");
  if (!ks.empty() && ks != kernel)
    c.fail("'kernel_shape' does not match W ", shape_str(w.shape));
  ConvShape p;
  p.g = geometry(c, x.shape, kernel, false, true);
  p.n = x.shape[0];
  p.c = x.shape[1];
  p.m = w.shape[0];
  p.groups = c.node.attr_int("group", 1);
  if (p.groups < 1 || p.c % p.groups != 0 || p.m % p.groups != 0)
    c.fail("group ", p.groups, " must divide the input channels ", p.c, " and output channels ",
           p.m);
  p.cg = p.c / p.groups;
  p.mg = p.m / p.groups;
  if (w.shape[1] != p.cg)
    c.fail("W ", shape_str(w.shape), " must have ", p.cg, " input channels per group");
  bool direct = true;
  for (int i = 0; i < kMaxSpatial; ++i)
    direct = direct && p.g.k[i] == 1 && p.g.stride[i] == 1 && p.g.pad_b[i] == 0;
  p.direct = direct;  // (out == in then, as pad_e only matters for the end)
  for (int i = 0; i < kMaxSpatial; ++i) p.direct = p.direct && p.g.out[i] == p.g.in[i];
  return p;
}

namespace {

struct ConvPlan : ConvShape {
  Epilogue epi;
};

ConvPlan conv_plan(const InferCtx& c) {
  ConvPlan p;
  static_cast<ConvShape&>(p) = conv_shape(c, 0, 1);
  if (c.has_input(2)) {
    const Shape& bs = c.in[2].shape;
    if (bs.size() != 1 || bs[0] != p.m) c.fail("B must be [", p.m, "], got ", shape_str(bs));
  }
  if (is_fused(c)) p.epi = activation_of(c);
  if (c.has_input(2)) {
    p.epi.bias = true;
    p.epi.bm = 1;
    p.epi.bn = 0;
  }
  return p;
}

void infer_conv(InferCtx& c) {
  const TensorInfo& x = c.input(0);
  require_float(c, x.dtype);
  require_same(c, 1, x.dtype);
  require_same(c, 2, x.dtype);
  ConvPlan p = conv_plan(c);
  c.out[0].dtype = x.dtype;
  c.out[0].shape = spatial_out_shape(p.g, p.n, p.m);
}

inline int64_t ceil_div(int64_t a, int64_t b) { return a <= 0 ? -((-a) / b) : (a + b - 1) / b; }

}  // namespace

template <typename T>
void im2col(const Geometry& g, int64_t channels, const T* x, T* col) {
  const int64_t ID = g.in[0], IH = g.in[1], IW = g.in[2];
  const int64_t OD = g.out[0], OH = g.out[1], OW = g.out[2];
  const int64_t osz = OD * OH * OW;
  T* dst = col;
  for (int64_t ci = 0; ci < channels; ++ci) {
    const T* xc = x + ci * ID * IH * IW;
    for (int64_t kd = 0; kd < g.k[0]; ++kd)
      for (int64_t kh = 0; kh < g.k[1]; ++kh)
        for (int64_t kw = 0; kw < g.k[2]; ++kw, dst += osz) {
          const int64_t off_w = kw * g.dil[2] - g.pad_b[2];  // iw = ow * sw + off_w
          const int64_t sw = g.stride[2];
          int64_t lo = off_w >= 0 ? 0 : ceil_div(-off_w, sw);
          int64_t hi = ceil_div(IW - off_w, sw);
          lo = std::min(lo, OW);
          hi = std::max(lo, std::min(hi, OW));
          for (int64_t od = 0; od < OD; ++od) {
            const int64_t id = od * g.stride[0] + kd * g.dil[0] - g.pad_b[0];
            for (int64_t oh = 0; oh < OH; ++oh) {
              T* d = dst + (od * OH + oh) * OW;
              const int64_t ih = oh * g.stride[1] + kh * g.dil[1] - g.pad_b[1];
              if (id < 0 || id >= ID || ih < 0 || ih >= IH) {
                std::fill(d, d + OW, T(0));
                continue;
              }
              const T* src = xc + (id * IH + ih) * IW + off_w;
              std::fill(d, d + lo, T(0));
              if (sw == 1) {
                if (hi > lo) std::memcpy(d + lo, src + lo, static_cast<size_t>(hi - lo) * sizeof(T));
              } else {
                for (int64_t ow = lo; ow < hi; ++ow) d[ow] = src[ow * sw];
              }
              std::fill(d + hi, d + OW, T(0));
            }
          }
        }
  }
}

template void im2col<float>(const Geometry&, int64_t, const float*, float*);
template void im2col<double>(const Geometry&, int64_t, const double*, double*);
template void im2col<int32_t>(const Geometry&, int64_t, const int32_t*, int32_t*);

namespace {

template <typename T>
class ConvKernel final : public Kernel {
 public:
  explicit ConvKernel(const ConvPlan& p) : p_(p) {
    if (!p_.direct) col_.resize(static_cast<size_t>(p_.cg * p_.g.k_size() * p_.g.out_size()));
  }
  void run(RunCtx& rc, const View* in, View* out) override {
    const T* x = in[0].as<const T>();
    const T* w = in[1].as<const T>();
    const T* bias = p_.epi.bias ? in[2].as<const T>() : nullptr;
    T* y = out[0].as<T>();
    const int64_t isz = p_.g.in_size(), osz = p_.g.out_size();
    const int64_t kdim = p_.cg * p_.g.k_size();
    for (int64_t n = 0; n < p_.n; ++n) {
      T* yn = y + n * p_.m * osz;
      for (int64_t gi = 0; gi < p_.groups; ++gi) {
        const T* xg = x + (n * p_.c + gi * p_.cg) * isz;
        const T* cols = xg;
        if (!p_.direct) {
          im2col<T>(p_.g, p_.cg, xg, col_.data());
          cols = col_.data();
        }
        gemm<T>(rc, false, false, p_.mg, osz, kdim, 1.f, w + gi * p_.mg * kdim, kdim, cols, osz,
                yn + gi * p_.mg * osz, osz);
      }
      run_epilogue<T>(p_.epi, yn, p_.m, osz, bias);
    }
  }

 private:
  ConvPlan p_;
  std::vector<T> col_;
};

std::unique_ptr<Kernel> make_conv(const InferCtx& c) {
  ConvPlan p = conv_plan(c);
  return dispatch_float(c.in[0].dtype, c.node.op.c_str(), [&](auto* tag) -> std::unique_ptr<Kernel> {
    using T = PD_TAG_TYPE(tag);
    return std::make_unique<ConvKernel<T>>(p);
  });
}

// ---------------------------------------------------------------------------------------------
// MaxPool / AveragePool
// ---------------------------------------------------------------------------------------------

struct PoolPlan {
  Geometry g;
  int64_t nc = 0;  // N * C
  bool count_include_pad = false;
  bool col_major_indices = false;  // MaxPool storage_order = 1
};

PoolPlan pool_plan(const InferCtx& c) {
  const TensorInfo& x = c.input(0);
  const bool is_max = c.node.op == "MaxPool";
  std::vector<int64_t> ks = c.node.attr_ints("kernel_shape");
  if (ks.empty()) c.fail("'kernel_shape' is required");
  const bool ceil_mode = c.node.attr_int("ceil_mode", 0) != 0;
  if (ceil_mode && c.opset() < 10) c.fail("'ceil_mode' needs opset 10");
  const bool dil_ok = is_max ? c.opset() >= 10 : c.opset() >= 19;
  PoolPlan p;
  p.g = geometry(c, x.shape, ks, ceil_mode, dil_ok);
  p.nc = x.shape[0] * x.shape[1];
  p.count_include_pad = !is_max && c.node.attr_int("count_include_pad", 0) != 0;
  p.col_major_indices = is_max && c.node.attr_int("storage_order", 0) != 0;
  return p;
}

void infer_pool(InferCtx& c) {
  const TensorInfo& x = c.input(0);
  if (c.node.op == "MaxPool") require_numeric(c, x.dtype);
  else require_float(c, x.dtype);
  PoolPlan p = pool_plan(c);
  c.out[0].dtype = x.dtype;
  c.out[0].shape = spatial_out_shape(p.g, x.shape[0], x.shape[1]);
  if (c.out.size() > 1) {
    if (c.node.op != "MaxPool") c.fail("has one output");
    c.out[1].dtype = DType::I64;
    c.out[1].shape = c.out[0].shape;
  }
}

// Range [lo, hi) of kernel taps whose input position start + k*dil lies in [0, in).
inline void tap_range(int64_t start, int64_t k, int64_t dil, int64_t in, int64_t* lo, int64_t* hi) {
  int64_t l = start >= 0 ? 0 : ceil_div(-start, dil);
  int64_t h = in - start <= 0 ? 0 : ceil_div(in - start, dil);
  l = std::min(l, k);
  *lo = l;
  *hi = std::max(l, std::min(h, k));
}

template <typename T>
void run_maxpool(const PoolPlan& p, const T* x, T* y, int64_t* idx) {
  const Geometry& g = p.g;
  const int64_t ID = g.in[0], IH = g.in[1], IW = g.in[2];
  const int64_t isz = g.in_size();
  T* yo = y;
  int64_t* io = idx;
  for (int64_t nc = 0; nc < p.nc; ++nc) {
    const T* xc = x + nc * isz;
    for (int64_t od = 0; od < g.out[0]; ++od) {
      const int64_t sd = od * g.stride[0] - g.pad_b[0];
      int64_t dlo, dhi;
      tap_range(sd, g.k[0], g.dil[0], ID, &dlo, &dhi);
      for (int64_t oh = 0; oh < g.out[1]; ++oh) {
        const int64_t sh = oh * g.stride[1] - g.pad_b[1];
        int64_t hlo, hhi;
        tap_range(sh, g.k[1], g.dil[1], IH, &hlo, &hhi);
        for (int64_t ow = 0; ow < g.out[2]; ++ow) {
          const int64_t sw = ow * g.stride[2] - g.pad_b[2];
          int64_t wlo, whi;
          tap_range(sw, g.k[2], g.dil[2], IW, &wlo, &whi);
          T best = std::numeric_limits<T>::has_infinity ? -std::numeric_limits<T>::infinity()
                                                        : std::numeric_limits<T>::lowest();
          int64_t bi = -1;
          for (int64_t kd = dlo; kd < dhi; ++kd) {
            const int64_t id = sd + kd * g.dil[0];
            for (int64_t kh = hlo; kh < hhi; ++kh) {
              const int64_t ih = sh + kh * g.dil[1];
              const T* row = xc + (id * IH + ih) * IW;
              for (int64_t kw = wlo; kw < whi; ++kw) {
                const int64_t iw = sw + kw * g.dil[2];
                const T v = row[iw];
                if (v > best || bi < 0) {
                  best = v;
                  bi = (id * IH + ih) * IW + iw;
                }
              }
            }
          }
          *yo++ = best;
          if (io) {
            int64_t flat = 0;
            if (bi >= 0) {
              if (!p.col_major_indices) {
                flat = bi;
              } else {
                // Column-major over the real spatial dims (reversed strides).
                const int64_t iw = bi % IW, ih = (bi / IW) % IH, id = bi / (IW * IH);
                if (g.nsp == 1) flat = iw;
                else if (g.nsp == 2) flat = ih + iw * IH;
                else flat = id + ih * ID + iw * ID * IH;
              }
            }
            *io++ = nc * isz + flat;
          }
        }
      }
    }
  }
}

template <typename T>
void run_avgpool(const PoolPlan& p, const T* x, T* y) {
  const Geometry& g = p.g;
  const int64_t ID = g.in[0], IH = g.in[1], IW = g.in[2];
  const int64_t isz = g.in_size();
  // Number of taps whose position lies within [-pad_b, in + pad_e) (count_include_pad).
  auto padded_taps = [](int64_t start, int64_t k, int64_t dil, int64_t pb, int64_t in, int64_t pe) {
    int64_t lo, hi;
    tap_range(start + pb, k, dil, in + pb + pe, &lo, &hi);
    return hi - lo;
  };
  T* yo = y;
  for (int64_t nc = 0; nc < p.nc; ++nc) {
    const T* xc = x + nc * isz;
    for (int64_t od = 0; od < g.out[0]; ++od) {
      const int64_t sd = od * g.stride[0] - g.pad_b[0];
      int64_t dlo, dhi;
      tap_range(sd, g.k[0], g.dil[0], ID, &dlo, &dhi);
      const int64_t dpad = padded_taps(sd, g.k[0], g.dil[0], g.pad_b[0], ID, g.pad_e[0]);
      for (int64_t oh = 0; oh < g.out[1]; ++oh) {
        const int64_t sh = oh * g.stride[1] - g.pad_b[1];
        int64_t hlo, hhi;
        tap_range(sh, g.k[1], g.dil[1], IH, &hlo, &hhi);
        const int64_t hpad = padded_taps(sh, g.k[1], g.dil[1], g.pad_b[1], IH, g.pad_e[1]);
        for (int64_t ow = 0; ow < g.out[2]; ++ow) {
          const int64_t sw = ow * g.stride[2] - g.pad_b[2];
          int64_t wlo, whi;
          tap_range(sw, g.k[2], g.dil[2], IW, &wlo, &whi);
          T sum = 0;
          for (int64_t kd = dlo; kd < dhi; ++kd) {
            const int64_t id = sd + kd * g.dil[0];
            for (int64_t kh = hlo; kh < hhi; ++kh) {
              const T* row = xc + (id * IH + sh + kh * g.dil[1]) * IW + sw;
              for (int64_t kw = wlo; kw < whi; ++kw) sum += row[kw * g.dil[2]];
            }
          }
          int64_t count;
          if (p.count_include_pad)
            count = dpad * hpad * padded_taps(sw, g.k[2], g.dil[2], g.pad_b[2], IW, g.pad_e[2]);
          else
            count = (dhi - dlo) * (hhi - hlo) * (whi - wlo);
          *yo++ = sum / static_cast<T>(count);
        }
      }
    }
  }
}

std::unique_ptr<Kernel> make_pool(const InferCtx& c) {
  PoolPlan p = pool_plan(c);
  if (c.node.op == "MaxPool") {
    // out[1] exists only when the node lists an Indices output.
    const bool indices = c.node.outputs.size() > 1;
    return dispatch_numeric(c.in[0].dtype, "MaxPool", [&](auto* tag) {
      using T = PD_TAG_TYPE(tag);
      return make_kernel([p, indices](RunCtx&, const View* in, View* out) {
        run_maxpool<T>(p, in[0].as<const T>(), out[0].as<T>(),
                       indices ? out[1].as<int64_t>() : nullptr);
      });
    });
  }
  return dispatch_float(c.in[0].dtype, "AveragePool", [&](auto* tag) {
    using T = PD_TAG_TYPE(tag);
    return make_kernel([p](RunCtx&, const View* in, View* out) {
      run_avgpool<T>(p, in[0].as<const T>(), out[0].as<T>());
    });
  });
}

// ---------------------------------------------------------------------------------------------
// GlobalAveragePool / GlobalMaxPool
// ---------------------------------------------------------------------------------------------

void infer_global_pool(InferCtx& c) {
  const TensorInfo& x = c.input(0);
  require_float(c, x.dtype);
  if (x.shape.size() < 2) c.fail("input must have rank >= 2, got ", shape_str(x.shape));
  Shape out = x.shape;
  for (size_t i = 2; i < out.size(); ++i) out[i] = 1;
  c.out[0].dtype = x.dtype;
  c.out[0].shape = out;
}

std::unique_ptr<Kernel> make_global_pool(const InferCtx& c) {
  const Shape& s = c.in[0].shape;
  const int64_t rows = s[0] * s[1];
  int64_t n = 1;
  for (size_t i = 2; i < s.size(); ++i) n *= s[i];
  const bool is_max = c.node.op == "GlobalMaxPool";
  return dispatch_float(c.in[0].dtype, c.node.op.c_str(), [&](auto* tag) {
    using T = PD_TAG_TYPE(tag);
    return make_kernel([rows, n, is_max](RunCtx&, const View* in, View* out) {
      const T* x = in[0].as<const T>();
      T* y = out[0].as<T>();
      for (int64_t r = 0; r < rows; ++r) {
        const T* xr = x + r * n;
        if (is_max) {
          T m = n > 0 ? xr[0] : -std::numeric_limits<T>::infinity();
          for (int64_t i = 1; i < n; ++i) m = (xr[i] > m || xr[i] != xr[i]) ? xr[i] : m;
          y[r] = m;
        } else {
          T sum = 0;
          for (int64_t i = 0; i < n; ++i) sum += xr[i];
          y[r] = sum / static_cast<T>(n);
        }
      }
    });
  });
}

// ---------------------------------------------------------------------------------------------
// BatchNormalization
// ---------------------------------------------------------------------------------------------

struct BatchNormPlan {
  int64_t n = 0, c = 0, s = 1;  // X as [N, C, S]
  bool per_activation = false;   // opset < 9 with spatial = 0: parameters are [C, S]
  bool training = false;
  size_t n_out = 1;  // outputs the node lists
  double eps = 1e-5, momentum = 0.9;
};

BatchNormPlan batchnorm_plan(const InferCtx& c) {
  const Shape& xs = c.in[0].shape;
  if (xs.size() < 2) c.fail("X must have rank >= 2 ([N, C, ...]), got ", shape_str(xs));
  BatchNormPlan p;
  p.n = xs[0];
  p.c = xs[1];
  for (size_t i = 2; i < xs.size(); ++i) p.s *= xs[i];
  p.eps = c.node.attr_float("epsilon", 1e-5f);
  p.momentum = c.node.attr_float("momentum", 0.9f);
  p.n_out = c.node.outputs.size();
  if (c.opset() < 9) p.per_activation = c.node.attr_int("spatial", 1) == 0;
  if (c.opset() >= 14) {
    p.training = c.node.attr_int("training_mode", 0) != 0;
  } else {
    for (size_t i = 1; i < c.node.outputs.size(); ++i)
      if (!c.node.outputs[i].empty())
        c.unsupported("training-mode outputs (mean, var, saved_mean, saved_var) before opset 14");
  }
  if (p.training && p.per_activation) c.unsupported("training mode with spatial = 0");
  const int64_t pn = p.per_activation ? p.c * p.s : p.c;
  for (size_t i = 1; i <= 4; ++i) {
    const TensorInfo& t = c.input(i);
    if (numel(t.shape) != pn || (!p.per_activation && t.shape.size() != 1))
      c.fail("input ", i, " must have ", pn, " elements ([C]), got ", shape_str(t.shape));
  }
  return p;
}

void infer_batchnorm(InferCtx& c) {
  const TensorInfo& x = c.input(0);
  require_float(c, x.dtype);
  for (size_t i = 1; i <= 4; ++i) {
    c.input(i);
    if (c.in[i].dtype != x.dtype)
      c.unsupported("input ", i, " of type ", dtype_name(c.in[i].dtype), " with X of type ",
                    dtype_name(x.dtype));
  }
  BatchNormPlan p = batchnorm_plan(c);
  c.out[0].dtype = x.dtype;
  c.out[0].shape = x.shape;
  for (size_t i = 1; i < c.out.size(); ++i) {
    if (i > 2) c.fail("has at most 3 outputs from opset 14");
    c.out[i].dtype = x.dtype;
    c.out[i].shape = {p.c};
    if (!p.training && !c.node.outputs[i].empty())
      c.fail("outputs running_mean and running_var need training_mode = 1");
  }
}

template <typename T>
class BatchNormKernel final : public Kernel {
 public:
  BatchNormKernel(const BatchNormPlan& p, const InferCtx& c) : p_(p) {
    const int64_t pn = p_.per_activation ? p_.c * p_.s : p_.c;
    a_.resize(static_cast<size_t>(pn));
    b_.resize(static_cast<size_t>(pn));
    if (!p_.training && c.in[1].value && c.in[2].value && c.in[3].value && c.in[4].value) {
      // Constant parameters: fold them into y = x * a + b once.
      fold(c.in[1].value->as<T>(), c.in[2].value->as<T>(), c.in[3].value->as<T>(),
           c.in[4].value->as<T>());
      folded_ = true;
    }
  }
  void run(RunCtx&, const View* in, View* out) override {
    const T* x = in[0].as<const T>();
    T* y = out[0].as<T>();
    if (p_.training) return run_training(in, out);
    if (!folded_)
      fold(in[1].as<const T>(), in[2].as<const T>(), in[3].as<const T>(), in[4].as<const T>());
    for (int64_t n = 0; n < p_.n; ++n)
      for (int64_t c = 0; c < p_.c; ++c) {
        const int64_t off = (n * p_.c + c) * p_.s;
        const T* xr = x + off;
        T* yr = y + off;
        if (p_.per_activation) {
          const T* a = a_.data() + c * p_.s;
          const T* b = b_.data() + c * p_.s;
          for (int64_t i = 0; i < p_.s; ++i) yr[i] = xr[i] * a[i] + b[i];
        } else {
          const T a = a_[c], b = b_[c];
          for (int64_t i = 0; i < p_.s; ++i) yr[i] = xr[i] * a + b;
        }
      }
  }

 private:
  void fold(const T* scale, const T* bias, const T* mean, const T* var) {
    for (size_t i = 0; i < a_.size(); ++i) {
      const double a = static_cast<double>(scale[i]) / std::sqrt(static_cast<double>(var[i]) + p_.eps);
      a_[i] = static_cast<T>(a);
      b_[i] = static_cast<T>(static_cast<double>(bias[i]) - static_cast<double>(mean[i]) * a);
    }
  }
  // Statistics of the batch; running statistics updated with momentum.
  void run_training(const View* in, View* out) {
    const T* x = in[0].as<const T>();
    const T* scale = in[1].as<const T>();
    const T* bias = in[2].as<const T>();
    const T* in_mean = in[3].as<const T>();
    const T* in_var = in[4].as<const T>();
    T* y = out[0].as<T>();
    T* run_mean = p_.n_out > 1 ? out[1].as<T>() : nullptr;
    T* run_var = p_.n_out > 2 ? out[2].as<T>() : nullptr;
    const int64_t cnt = p_.n * p_.s;
    for (int64_t c = 0; c < p_.c; ++c) {
      double sum = 0;
      for (int64_t n = 0; n < p_.n; ++n) {
        const T* xr = x + (n * p_.c + c) * p_.s;
        for (int64_t i = 0; i < p_.s; ++i) sum += xr[i];
      }
      const double mean = cnt ? sum / cnt : 0;
      double sq = 0;
      for (int64_t n = 0; n < p_.n; ++n) {
        const T* xr = x + (n * p_.c + c) * p_.s;
        for (int64_t i = 0; i < p_.s; ++i) sq += (xr[i] - mean) * (xr[i] - mean);
      }
      const double var = cnt ? sq / cnt : 0;
      const double a = static_cast<double>(scale[c]) / std::sqrt(var + p_.eps);
      const T ta = static_cast<T>(a), tb = static_cast<T>(static_cast<double>(bias[c]) - mean * a);
      for (int64_t n = 0; n < p_.n; ++n) {
        const int64_t off = (n * p_.c + c) * p_.s;
        for (int64_t i = 0; i < p_.s; ++i) y[off + i] = x[off + i] * ta + tb;
      }
      if (run_mean)
        run_mean[c] = static_cast<T>(in_mean[c] * p_.momentum + mean * (1 - p_.momentum));
      if (run_var) run_var[c] = static_cast<T>(in_var[c] * p_.momentum + var * (1 - p_.momentum));
    }
  }

  BatchNormPlan p_;
  std::vector<T> a_, b_;
  bool folded_ = false;
};

std::unique_ptr<Kernel> make_batchnorm(const InferCtx& c) {
  BatchNormPlan p = batchnorm_plan(c);
  return dispatch_float(c.in[0].dtype, "BatchNormalization", [&](auto* tag) -> std::unique_ptr<Kernel> {
    using T = PD_TAG_TYPE(tag);
    return std::make_unique<BatchNormKernel<T>>(p, c);
  });
}

// ---------------------------------------------------------------------------------------------
// LayerNormalization (opset 17)
// ---------------------------------------------------------------------------------------------

struct LayerNormPlan {
  int64_t outer = 1, inner = 1;
  float eps = 1e-5f;
  bool has_bias = false;
  size_t n_out = 1;  // outputs the node lists
  // Offsets of Scale / B for each of the `inner` normalized elements; empty = contiguous [inner].
  std::vector<int64_t> scale_idx, bias_idx;
};

int64_t layernorm_axis(const InferCtx& c) {
  return c.axis(c.node.attr_int("axis", -1), static_cast<int64_t>(c.in[0].shape.size()));
}

// Where the parameter (Scale or B) of shape ps is read for each normalized element, when it
// broadcasts to x's shape without varying over the leading (un-normalized) dims.
std::vector<int64_t> layernorm_param_index(const InferCtx& c, const Shape& xs, int64_t axis,
                                           const Shape& ps, const char* what) {
  if (ps.size() > xs.size()) c.fail(what, " ", shape_str(ps), " has a higher rank than X");
  const size_t off = xs.size() - ps.size();
  for (size_t i = 0; i < ps.size(); ++i) {
    if (ps[i] != 1 && ps[i] != xs[off + i])
      c.fail(what, " ", shape_str(ps), " cannot be broadcast to X ", shape_str(xs));
    if (static_cast<int64_t>(off + i) < axis && ps[i] != 1)
      c.unsupported(what, " ", shape_str(ps), " varies over dims before axis ", axis);
  }
  const Shape inner_shape(xs.begin() + axis, xs.end());
  const Shape pin(ps.begin() + std::min(ps.size(), static_cast<size_t>(std::max<int64_t>(0, axis - static_cast<int64_t>(off)))), ps.end());
  if (pin == inner_shape) return {};  // contiguous
  std::vector<int64_t> st = broadcast_strides(pin, inner_shape);
  const int64_t n = numel(inner_shape);
  std::vector<int64_t> idx(static_cast<size_t>(n));
  std::vector<int64_t> ctr(inner_shape.size(), 0);
  for (int64_t j = 0; j < n; ++j) {
    int64_t o = 0;
    for (size_t d = 0; d < inner_shape.size(); ++d) o += ctr[d] * st[d];
    idx[j] = o;
    for (size_t d = inner_shape.size(); d-- > 0;) {
      if (++ctr[d] < inner_shape[d]) break;
      ctr[d] = 0;
    }
  }
  return idx;
}

LayerNormPlan layernorm_plan(const InferCtx& c) {
  const Shape& xs = c.in[0].shape;
  const int64_t axis = layernorm_axis(c);
  LayerNormPlan p;
  for (int64_t i = 0; i < axis; ++i) p.outer *= xs[i];
  for (size_t i = static_cast<size_t>(axis); i < xs.size(); ++i) p.inner *= xs[i];
  p.eps = c.node.attr_float("epsilon", 1e-5f);
  p.scale_idx = layernorm_param_index(c, xs, axis, c.input(1).shape, "Scale");
  p.has_bias = c.has_input(2);
  if (p.has_bias) p.bias_idx = layernorm_param_index(c, xs, axis, c.in[2].shape, "B");
  p.n_out = c.node.outputs.size();
  return p;
}

void infer_layernorm(InferCtx& c) {
  const TensorInfo& x = c.input(0);
  require_float(c, x.dtype);
  require_same(c, 1, x.dtype);
  require_same(c, 2, x.dtype);
  if (x.shape.empty()) c.fail("X must have rank >= 1");
  const int64_t stash = c.node.attr_int("stash_type", 1);
  if (stash != 1) c.unsupported("stash_type ", stash, " (only 1, float, is supported)");
  layernorm_plan(c);
  const int64_t axis = layernorm_axis(c);
  c.out[0].dtype = x.dtype;
  c.out[0].shape = x.shape;
  Shape stat = x.shape;
  for (size_t i = static_cast<size_t>(axis); i < stat.size(); ++i) stat[i] = 1;
  for (size_t i = 1; i < c.out.size() && i < 3; ++i) {
    c.out[i].dtype = DType::F32;
    c.out[i].shape = stat;
  }
  if (c.out.size() > 3) c.fail("has at most 3 outputs");
}

template <typename T>
void run_layernorm(const LayerNormPlan& p, const T* x, const T* scale, const T* bias, T* y,
                   float* mean_out, float* inv_out) {
  const int64_t n = p.inner;
  for (int64_t o = 0; o < p.outer; ++o) {
    const T* xr = x + o * n;
    T* yr = y + o * n;
    T sum = 0;
    for (int64_t i = 0; i < n; ++i) sum += xr[i];
    const T mean = sum / static_cast<T>(n);
    T sq = 0;
    for (int64_t i = 0; i < n; ++i) sq += (xr[i] - mean) * (xr[i] - mean);
    const T inv = T(1) / std::sqrt(sq / static_cast<T>(n) + static_cast<T>(p.eps));
    if (mean_out) mean_out[o] = static_cast<float>(mean);
    if (inv_out) inv_out[o] = static_cast<float>(inv);
    const bool sc = p.scale_idx.empty(), bc = p.bias_idx.empty();
    if (sc && bc) {
      if (bias)
        for (int64_t i = 0; i < n; ++i) yr[i] = (xr[i] - mean) * inv * scale[i] + bias[i];
      else
        for (int64_t i = 0; i < n; ++i) yr[i] = (xr[i] - mean) * inv * scale[i];
    } else {
      for (int64_t i = 0; i < n; ++i) {
        T v = (xr[i] - mean) * inv * scale[sc ? i : p.scale_idx[i]];
        if (bias) v += bias[bc ? i : p.bias_idx[i]];
        yr[i] = v;
      }
    }
  }
}

std::unique_ptr<Kernel> make_layernorm(const InferCtx& c) {
  LayerNormPlan p = layernorm_plan(c);
  return dispatch_float(c.in[0].dtype, "LayerNormalization", [&](auto* tag) {
    using T = PD_TAG_TYPE(tag);
    return make_kernel([p](RunCtx&, const View* in, View* out) {
      run_layernorm<T>(p, in[0].as<const T>(), in[1].as<const T>(),
                       p.has_bias ? in[2].as<const T>() : nullptr, out[0].as<T>(),
                       p.n_out > 1 ? out[1].as<float>() : nullptr,
                       p.n_out > 2 ? out[2].as<float>() : nullptr);
    });
  });
}

// ---------------------------------------------------------------------------------------------
// InstanceNormalization
// ---------------------------------------------------------------------------------------------

void infer_instancenorm(InferCtx& c) {
  const TensorInfo& x = c.input(0);
  require_float(c, x.dtype);
  require_same(c, 1, x.dtype);
  require_same(c, 2, x.dtype);
  if (x.shape.size() < 3) c.fail("input must have rank >= 3, got ", shape_str(x.shape));
  for (size_t i = 1; i <= 2; ++i)
    if (c.input(i).shape != Shape{x.shape[1]})
      c.fail("input ", i, " must be [", x.shape[1], "], got ", shape_str(c.in[i].shape));
  c.out[0].dtype = x.dtype;
  c.out[0].shape = x.shape;
}

std::unique_ptr<Kernel> make_instancenorm(const InferCtx& c) {
  const Shape& s = c.in[0].shape;
  const int64_t n = s[0], ch = s[1];
  int64_t sp = 1;
  for (size_t i = 2; i < s.size(); ++i) sp *= s[i];
  const float eps = c.node.attr_float("epsilon", 1e-5f);
  return dispatch_float(c.in[0].dtype, "InstanceNormalization", [&](auto* tag) {
    using T = PD_TAG_TYPE(tag);
    return make_kernel([n, ch, sp, eps](RunCtx&, const View* in, View* out) {
      const T* x = in[0].as<const T>();
      const T* scale = in[1].as<const T>();
      const T* bias = in[2].as<const T>();
      T* y = out[0].as<T>();
      for (int64_t r = 0; r < n * ch; ++r) {
        const int64_t ci = r % ch;
        const T* xr = x + r * sp;
        T* yr = y + r * sp;
        T sum = 0;
        for (int64_t i = 0; i < sp; ++i) sum += xr[i];
        const T mean = sum / static_cast<T>(sp);
        T sq = 0;
        for (int64_t i = 0; i < sp; ++i) sq += (xr[i] - mean) * (xr[i] - mean);
        const T a = scale[ci] / std::sqrt(sq / static_cast<T>(sp) + static_cast<T>(eps));
        const T b = bias[ci] - mean * a;
        for (int64_t i = 0; i < sp; ++i) yr[i] = xr[i] * a + b;
      }
    });
  });
}

}  // namespace

void register_nn_ops(OpRegistry& r) {
  r.add(OpSchema{"", "Gemm", infer_gemm, make_gemm});
  r.add(OpSchema{"", "MatMul", infer_matmul, make_matmul});
  r.add(OpSchema{"", "Conv", infer_conv, make_conv});
  r.add(OpSchema{"", "MaxPool", infer_pool, make_pool});
  r.add(OpSchema{"", "AveragePool", infer_pool, make_pool});
  r.add(OpSchema{"", "GlobalAveragePool", infer_global_pool, make_global_pool});
  r.add(OpSchema{"", "GlobalMaxPool", infer_global_pool, make_global_pool});
  r.add(OpSchema{"", "BatchNormalization", infer_batchnorm, make_batchnorm});
  r.add(OpSchema{"", "LayerNormalization", infer_layernorm, make_layernorm});
  r.add(OpSchema{"", "InstanceNormalization", infer_instancenorm, make_instancenorm});
  r.add(OpSchema{"pd", "FusedGemm", infer_gemm, make_gemm});
  r.add(OpSchema{"pd", "FusedMatMul", infer_matmul, make_matmul});
  r.add(OpSchema{"pd", "FusedConv", infer_conv, make_conv});
}

}  // namespace pd
