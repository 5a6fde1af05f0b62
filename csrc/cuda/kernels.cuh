// The CUDA backend's kernels. This file is compiled twice: by NVRTC at engine build (CMake
// embeds it into kernels.cpp as a string, see pd_kernel_source.inc) for the device, and as
// host C++ by the fake-CUDA test build (csrc/cuda/fake/), which runs every kernel on the CPU.
// So: no includes, only the math functions NVRTC has built in, no shared memory or
// __syncthreads (each thread's work is independent: grid-stride loops), extern "C" names.
typedef long long i64;
typedef unsigned long long u64;
typedef unsigned int u32;
typedef unsigned short u16;
typedef unsigned char u8;

struct Strided {
  int rank;
  int pad_;
  i64 dims[8];
  i64 s0[8];
  i64 s1[8];
  i64 s2[8];
};

#define PD_LOOP(i, n) \
  for (i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x; i < (n); i += (i64)blockDim.x * gridDim.x)

// Offsets of element i in up to three operands.
__device__ __forceinline__ void pd_offsets(const Strided& p, i64 i, i64* o0, i64* o1, i64* o2) {
  if (p.rank == 0) { *o0 = i; *o1 = i; *o2 = i; return; }
  i64 a = 0, b = 0, c = 0;
  for (int d = p.rank - 1; d >= 0; --d) {
    const i64 dim = p.dims[d];
    const i64 k = i % dim;
    i /= dim;
    a += k * p.s0[d];
    b += k * p.s1[d];
    c += k * p.s2[d];
  }
  *o0 = a; *o1 = b; *o2 = c;
}

__device__ __forceinline__ float pd_softplus(float x) { return x > 20.f ? x : log1pf(expf(x)); }

// Codes 0..10 are pd::Act; 100.. the plain unary ops (kernels.h).
__device__ __forceinline__ float pd_apply(int code, float x, float a, float b) {
  switch (code) {
    case 0: return x;
    case 1: return x > 0.f ? x : 0.f;
    case 2: return tanhf(x);
    case 3: return 1.f / (1.f + expf(-x));
    case 4: return x >= 0.f ? x : a * (expf(x) - 1.f);
    case 5: return x >= 0.f ? x : a * x;
    case 6: return pd_softplus(x);
    case 7: return fminf(fmaxf(x, a), b);
    case 8: return x * tanhf(pd_softplus(x));
    case 9: return fmaxf(0.f, fminf(1.f, a * x + b));
    case 10: return x / (1.f + expf(-a * x));
    case 100: return expf(x);
    case 101: return logf(x);
    case 102: return -x;
    case 103: return fabsf(x);
    case 104: return sqrtf(x);
    case 105: return 1.f / x;
    case 106: return floorf(x);
    case 107: return ceilf(x);
    case 108: return erff(x);
    case 109: return sinf(x);
    case 110: return cosf(x);
  }
  return x;
}

extern "C" __global__ void pd_unary_f32(const float* x, float* y, i64 n, int code, float a, float b) {
  PD_LOOP(i, n) y[i] = pd_apply(code, x[i], a, b);
}

// y[i] = act(y[i] + beta * bias[row * bm + col * bn]) over y viewed as rows of `cols`
// elements; row is taken modulo rows_mod (Conv: the output channel of [N*M, H*W]).
extern "C" __global__ void pd_bias_act_f32(float* y, i64 n, const float* bias, i64 cols, i64 rows_mod,
                                           i64 bm, i64 bn, float beta, int act, float a, float b) {
  PD_LOOP(i, n) {
    float v = y[i];
    if (bias) {
      const i64 row = (i / cols) % rows_mod, col = i % cols;
      v += beta * bias[row * bm + col * bn];
    }
    y[i] = pd_apply(act, v, a, b);
  }
}

__device__ __forceinline__ float pd_binf(int op, float a, float b) {
  switch (op) {
    case 0: return a + b;
    case 1: return a - b;
    case 2: return a * b;
    case 3: return a / b;
    case 4: return powf(a, b);
    case 5: return (a != a || b != b) ? a + b : fmaxf(a, b);
    case 6: return (a != a || b != b) ? a + b : fminf(a, b);
  }
  return 0.f;
}

__device__ __forceinline__ i64 pd_bini(int op, i64 a, i64 b) {
  switch (op) {
    case 0: return a + b;
    case 1: return a - b;
    case 2: return a * b;
    case 3: return b == 0 ? 0 : a / b;
    case 5: return a > b ? a : b;
    case 6: return a < b ? a : b;
  }
  return 0;
}

template <typename T>
__device__ __forceinline__ bool pd_cmp(int op, T a, T b) {
  switch (op) {
    case 20: return a == b;
    case 21: return a < b;
    case 22: return a > b;
    case 23: return a <= b;
    case 24: return a >= b;
  }
  return false;
}

extern "C" __global__ void pd_binary_f32(const float* a, const float* b, float* y, i64 n, int op, Strided p) {
  PD_LOOP(i, n) {
    i64 oa, ob, oy;
    pd_offsets(p, i, &oa, &ob, &oy);
    y[i] = pd_binf(op, a[oa], b[ob]);
  }
}

extern "C" __global__ void pd_binary_i64(const i64* a, const i64* b, i64* y, i64 n, int op, Strided p) {
  PD_LOOP(i, n) {
    i64 oa, ob, oy;
    pd_offsets(p, i, &oa, &ob, &oy);
    y[i] = pd_bini(op, a[oa], b[ob]);
  }
}

extern "C" __global__ void pd_compare_f32(const float* a, const float* b, u8* y, i64 n, int op, Strided p) {
  PD_LOOP(i, n) {
    i64 oa, ob, oy;
    pd_offsets(p, i, &oa, &ob, &oy);
    y[i] = pd_cmp<float>(op, a[oa], b[ob]) ? 1 : 0;
  }
}

extern "C" __global__ void pd_compare_i64(const i64* a, const i64* b, u8* y, i64 n, int op, Strided p) {
  PD_LOOP(i, n) {
    i64 oa, ob, oy;
    pd_offsets(p, i, &oa, &ob, &oy);
    y[i] = pd_cmp<i64>(op, a[oa], b[ob]) ? 1 : 0;
  }
}

extern "C" __global__ void pd_logic_bool(const u8* a, const u8* b, u8* y, i64 n, int op, Strided p) {
  PD_LOOP(i, n) {
    i64 oa, ob, oy;
    pd_offsets(p, i, &oa, &ob, &oy);
    const bool x = a[oa] != 0, z = b[ob] != 0;
    y[i] = (op == 40 ? (x && z) : op == 41 ? (x || z) : (x != z)) ? 1 : 0;
  }
}

extern "C" __global__ void pd_not_bool(const u8* x, u8* y, i64 n) {
  PD_LOOP(i, n) y[i] = x[i] ? 0 : 1;
}

// Cast between the ONNX types 1 float, 2 uint8, 3 int8, 6 int32, 7 int64, 9 bool, 11 double.
// Float to integer truncates toward zero, as ONNX Runtime's static_cast does.
__device__ __forceinline__ bool pd_is_float(int t) { return t == 1 || t == 11; }
__device__ __forceinline__ double pd_load_f(const void* p, int t, i64 i) {
  switch (t) {
    case 1: return ((const float*)p)[i];
    case 11: return ((const double*)p)[i];
    case 2: return ((const u8*)p)[i];
    case 3: return ((const signed char*)p)[i];
    case 6: return ((const int*)p)[i];
    case 7: return (double)((const i64*)p)[i];
    case 9: return ((const u8*)p)[i] ? 1.0 : 0.0;
  }
  return 0;
}
__device__ __forceinline__ i64 pd_load_i(const void* p, int t, i64 i) {
  switch (t) {
    case 1: return (i64)((const float*)p)[i];
    case 11: return (i64)((const double*)p)[i];
    case 2: return ((const u8*)p)[i];
    case 3: return ((const signed char*)p)[i];
    case 6: return ((const int*)p)[i];
    case 7: return ((const i64*)p)[i];
    case 9: return ((const u8*)p)[i] ? 1 : 0;
  }
  return 0;
}
extern "C" __global__ void pd_cast(const void* x, void* y, i64 n, int from, int to) {
  PD_LOOP(i, n) {
    if (to == 9) {
      ((u8*)y)[i] = pd_is_float(from) ? (pd_load_f(x, from, i) != 0.0) : (pd_load_i(x, from, i) != 0);
    } else if (pd_is_float(to)) {
      const double v = pd_load_f(x, from, i);
      if (to == 1) ((float*)y)[i] = (float)v; else ((double*)y)[i] = v;
    } else {
      const i64 v = pd_load_i(x, from, i);
      switch (to) {
        case 2: ((u8*)y)[i] = (u8)v; break;
        case 3: ((signed char*)y)[i] = (signed char)v; break;
        case 6: ((int*)y)[i] = (int)v; break;
        case 7: ((i64*)y)[i] = v; break;
      }
    }
  }
}

// y[out offset] = x[in offset] over p.dims: Transpose, Slice, Expand, Concat and Split pieces.
// s0: strides of x, s1: strides of y (element units; the host offsets the base pointers).
#define PD_COPY(NAME, T)                                                   \
  extern "C" __global__ void NAME(const T* x, T* y, i64 n, Strided p) {    \
    PD_LOOP(i, n) {                                                        \
      i64 ox, oy, unused;                                                  \
      pd_offsets(p, i, &ox, &oy, &unused);                                 \
      y[oy] = x[ox];                                                       \
    }                                                                      \
  }
PD_COPY(pd_copy_1, u8)
PD_COPY(pd_copy_2, u16)
PD_COPY(pd_copy_4, u32)
PD_COPY(pd_copy_8, u64)

// Gather along an axis: x [outer, axis_len, inner], indices [nidx] (int64 or int32, negative
// counts from the end), y [outer, nidx, inner]. An index out of range writes zeros and sets
// *bad (checked by the host after the run).
#define PD_GATHER(NAME, T)                                                                      \
  extern "C" __global__ void NAME(const T* x, const void* idx, int idx64, T* y, i64 outer,      \
                                  i64 axis_len, i64 nidx, i64 inner, int* bad) {                \
    PD_LOOP(i, outer * nidx * inner) {                                                          \
      const i64 in_ = i % inner, j = (i / inner) % nidx, o = i / (inner * nidx);                \
      i64 k = idx64 ? ((const i64*)idx)[j] : (i64)((const int*)idx)[j];                         \
      if (k < 0) k += axis_len;                                                                 \
      if (k < 0 || k >= axis_len) { y[i] = (T)0; *bad = 1; continue; }                          \
      y[i] = x[(o * axis_len + k) * inner + in_];                                               \
    }                                                                                           \
  }
PD_GATHER(pd_gather_1, u8)
PD_GATHER(pd_gather_2, u16)
PD_GATHER(pd_gather_4, u32)
PD_GATHER(pd_gather_8, u64)

// Softmax / LogSoftmax over the middle dimension of x [outer, r, inner]: one thread per row.
extern "C" __global__ void pd_softmax_f32(const float* x, float* y, i64 outer, i64 r, i64 inner, int code) {
  PD_LOOP(t, outer * inner) {
    const i64 o = t / inner, in_ = t % inner;
    const float* px = x + o * r * inner + in_;
    float* py = y + o * r * inner + in_;
    float m = -__int_as_float(0x7f800000);
    for (i64 k = 0; k < r; ++k) m = fmaxf(m, px[k * inner]);
    float s = 0.f;
    for (i64 k = 0; k < r; ++k) s += expf(px[k * inner] - m);
    if (code == 1) {
      const float ls = logf(s);
      for (i64 k = 0; k < r; ++k) py[k * inner] = px[k * inner] - m - ls;
    } else {
      const float inv = 1.f / s;
      for (i64 k = 0; k < r; ++k) py[k * inner] = expf(px[k * inner] - m) * inv;
    }
  }
}

// ArgMax / ArgMin over the middle dimension of x [outer, r, inner] into int64 y [outer, inner].
// NaN wins, as in ONNX Runtime; ties go to the first index unless select_last.
extern "C" __global__ void pd_argext_f32(const float* x, i64* y, i64 outer, i64 r, i64 inner, int is_min,
                                         int select_last) {
  PD_LOOP(t, outer * inner) {
    const i64 o = t / inner, in_ = t % inner;
    const float* px = x + o * r * inner + in_;
    i64 best = 0;
    float bv = px[0];
    for (i64 k = 1; k < r; ++k) {
      const float v = px[k * inner];
      if (bv != bv) break;
      const bool better = v != v || (is_min ? (select_last ? v <= bv : v < bv) : (select_last ? v >= bv : v > bv));
      if (better) { best = k; bv = v; }
    }
    y[t] = best;
  }
}

// im2col of a 2-D convolution, NCHW: col [N][C*KH*KW][OH*OW].
extern "C" __global__ void pd_im2col_f32(const float* x, float* col, i64 N, i64 C, i64 H, i64 W, i64 KH, i64 KW,
                                         i64 OH, i64 OW, i64 sh, i64 sw, i64 ph, i64 pw, i64 dh, i64 dw) {
  const i64 P = OH * OW, K = C * KH * KW;
  PD_LOOP(i, N * K * P) {
    const i64 p = i % P, k = (i / P) % K, n = i / (P * K);
    const i64 ow = p % OW, oh = p / OW;
    const i64 kw = k % KW, kh = (k / KW) % KH, c = k / (KW * KH);
    const i64 ih = oh * sh - ph + kh * dh, iw = ow * sw - pw + kw * dw;
    col[i] = (ih >= 0 && ih < H && iw >= 0 && iw < W) ? x[((n * C + c) * H + ih) * W + iw] : 0.f;
  }
}

// One LSTM time step after the two GEMMs: g [B, 4H] = X_t W^T + H_{t-1} R^T (ONNX gate order
// i, o, f, c), bias [8H] (Wb then Rb) or null. Updates c and h in place and writes y_t.
extern "C" __global__ void pd_lstm_cell_f32(const float* xg, const float* hg, const float* bias, float* h,
                                            float* c, float* y, i64 B, i64 H) {
  PD_LOOP(t, B * H) {
    const i64 b = t / H, j = t % H;
    float g[4];
    for (int q = 0; q < 4; ++q) {
      float v = xg[b * 4 * H + q * H + j] + hg[b * 4 * H + q * H + j];
      if (bias) v += bias[q * H + j] + bias[4 * H + q * H + j];
      g[q] = v;
    }
    const float it = 1.f / (1.f + expf(-g[0]));
    const float ot = 1.f / (1.f + expf(-g[1]));
    const float ft = 1.f / (1.f + expf(-g[2]));
    const float ct = tanhf(g[3]);
    const float cn = ft * c[t] + it * ct;
    const float hn = ot * tanhf(cn);
    c[t] = cn;
    h[t] = hn;
    if (y) y[t] = hn;
  }
}
