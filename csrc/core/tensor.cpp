#include "tensor.h"

#include <cmath>
#include <algorithm>
#include <cstdlib>

namespace pd {

size_t dtype_size(DType t) {
  switch (t) {
    case DType::F32: case DType::I32: case DType::U32: return 4;
    case DType::U8: case DType::I8: case DType::Bool: return 1;
    case DType::U16: case DType::I16: case DType::F16: case DType::BF16: return 2;
    case DType::I64: case DType::F64: case DType::U64: return 8;
    default: return 0;
  }
}

const char* dtype_name(DType t) {
  switch (t) {
    case DType::F32: return "float";
    case DType::U8: return "uint8";
    case DType::I8: return "int8";
    case DType::U16: return "uint16";
    case DType::I16: return "int16";
    case DType::I32: return "int32";
    case DType::I64: return "int64";
    case DType::String: return "string";
    case DType::Bool: return "bool";
    case DType::F16: return "float16";
    case DType::F64: return "double";
    case DType::U32: return "uint32";
    case DType::U64: return "uint64";
    case DType::BF16: return "bfloat16";
    default: break;
  }
  // ONNX's newer types, which policyd refuses by name (quantized models, opset 19-23).
  switch (static_cast<int32_t>(t)) {
    case 17: return "float8e4m3fn";
    case 18: return "float8e4m3fnuz";
    case 19: return "float8e5m2";
    case 20: return "float8e5m2fnuz";
    case 21: return "uint4";
    case 22: return "int4";
    case 23: return "float4e2m1";
    default: return "undefined";
  }
}

bool dtype_supported(DType t) {
  return dtype_size(t) != 0;
}

std::string shape_str(const Shape& s) {
  std::string out = "[";
  for (size_t i = 0; i < s.size(); ++i) {
    if (i) out += ",";
    out += std::to_string(s[i]);
  }
  return out + "]";
}

bool checked_numel(const int64_t* dims, size_t rank, int64_t* n) {
  // The product of the non-zero dimensions must fit as well: the strides of [0, 2^62, 4] are
  // products of the later dimensions, whatever the count.
  int64_t c = 1;
  bool empty = false;
  for (size_t i = 0; i < rank; ++i) {
    if (dims[i] < 0) return false;
    if (dims[i] == 0) empty = true;
    else if (!checked_mul(c, dims[i], &c)) return false;
  }
  *n = empty ? 0 : c;
  return true;
}

bool checked_nbytes(const int64_t* dims, size_t rank, DType t, uint64_t* bytes, uint64_t max_bytes) {
  int64_t n;
  if (!checked_numel(dims, rank, &n)) return false;
  const uint64_t es = dtype_size(t);
  if (es != 0 && static_cast<uint64_t>(n) > max_bytes / es) return false;
  *bytes = static_cast<uint64_t>(n) * es;
  return true;
}

uint64_t nbytes_or_fail(const Shape& s, DType t, const std::string& what, uint64_t max_bytes) {
  for (int64_t d : s) PD_CHECK_ARG(d >= 0, what, " of shape ", shape_str(s), " has a negative dimension");
  int64_t n;
  PD_CHECK_ARG(checked_numel(s, &n), what, " of shape ", shape_str(s),
               " has more elements than a 64-bit count can hold");
  uint64_t bytes;
  PD_CHECK_ARG(checked_nbytes(s, t, &bytes, max_bytes), what, " of shape ", shape_str(s), " needs ", n, " ",
               dtype_name(t), " elements, more than the limit of ", max_bytes, " bytes per tensor");
  return bytes;
}

Tensor::Tensor(DType t, Shape s) : dtype_(t), shape_(std::move(s)) {
  // Sizes come from models: refuse overflow and absurd sizes before allocating.
  size_t n = nbytes_or_fail(shape_, t, "tensor");
  size_t alloc = (n + 63) / 64 * 64;
  if (alloc == 0) alloc = 64;
  void* p = std::aligned_alloc(64, alloc);
  if (!p) fail(PD_ERR_UNAVAILABLE, "out of memory allocating ", alloc, " bytes");
  std::memset(p, 0, alloc);
  data_.reset(p);
}

int64_t Tensor::int_at(int64_t i) const {
  switch (dtype_) {
    case DType::I64: return as<int64_t>()[i];
    case DType::I32: return as<int32_t>()[i];
    case DType::I16: return as<int16_t>()[i];
    case DType::I8: return as<int8_t>()[i];
    case DType::U8: return as<uint8_t>()[i];
    case DType::U16: return as<uint16_t>()[i];
    case DType::U32: return as<uint32_t>()[i];
    case DType::U64: return static_cast<int64_t>(as<uint64_t>()[i]);
    case DType::Bool: return as<bool>()[i] ? 1 : 0;
    case DType::F32: return static_cast<int64_t>(as<float>()[i]);
    case DType::F64: return static_cast<int64_t>(as<double>()[i]);
    default: fail(PD_ERR_UNSUPPORTED, "cannot read ", dtype_name(dtype_), " as an integer");
  }
}

double Tensor::float_at(int64_t i) const {
  switch (dtype_) {
    case DType::F32: return as<float>()[i];
    case DType::F64: return as<double>()[i];
    case DType::F16: return half_to_float(as<uint16_t>()[i]);
    case DType::BF16: return bf16_to_float(as<uint16_t>()[i]);
    default: return static_cast<double>(int_at(i));
  }
}

std::vector<int64_t> Tensor::to_ints() const {
  std::vector<int64_t> v(static_cast<size_t>(numel()));
  for (int64_t i = 0; i < numel(); ++i) v[i] = int_at(i);
  return v;
}

float half_to_float(uint16_t h) {
  uint32_t sign = (h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1f;
  uint32_t mant = h & 0x3ff;
  uint32_t bits;
  if (exp == 0) {
    if (mant == 0) {
      bits = sign;
    } else {  // subnormal: normalize
      exp = 127 - 15 + 1;
      while ((mant & 0x400) == 0) {
        mant <<= 1;
        --exp;
      }
      mant &= 0x3ff;
      bits = sign | (exp << 23) | (mant << 13);
    }
  } else if (exp == 31) {
    bits = sign | 0x7f800000u | (mant << 13);
  } else {
    bits = sign | ((exp + 127 - 15) << 23) | (mant << 13);
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

uint16_t float_to_half(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  uint32_t sign = (x >> 16) & 0x8000u;
  uint32_t absx = x & 0x7fffffffu;
  if (absx >= 0x7f800000u) return static_cast<uint16_t>(sign | 0x7c00u | (absx > 0x7f800000u ? 0x200u : 0));
  if (absx >= 0x477ff000u) return static_cast<uint16_t>(sign | 0x7c00u);  // overflow -> inf
  if (absx < 0x38800000u) {  // subnormal or zero in half
    float af;
    std::memcpy(&af, &absx, 4);
    // round to nearest even on the half subnormal grid (2^-24)
    float scaled = af * 16777216.0f;  // 2^24
    uint32_t m = static_cast<uint32_t>(std::nearbyint(scaled));
    return static_cast<uint16_t>(sign | m);
  }
  uint32_t exp = ((absx >> 23) - 127 + 15);
  uint32_t mant = absx & 0x7fffff;
  uint32_t h = (exp << 10) | (mant >> 13);
  uint32_t rest = mant & 0x1fff;
  if (rest > 0x1000u || (rest == 0x1000u && (h & 1))) ++h;  // round half to even
  return static_cast<uint16_t>(sign | h);
}

float bf16_to_float(uint16_t h) {
  uint32_t bits = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

uint16_t float_to_bf16(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  if ((x & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((x >> 16) | 0x40);  // NaN
  uint32_t lsb = (x >> 16) & 1;
  x += 0x7fff + lsb;  // round to nearest even
  return static_cast<uint16_t>(x >> 16);
}

}  // namespace pd
