// Tensors: data types, shapes, owned constant tensors and non-owning views.
#pragma once

#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "error.h"
#include "policyd.h"

namespace pd {

enum class DType : int32_t {
  Undefined = 0,
  F32 = 1,
  U8 = 2,
  I8 = 3,
  U16 = 4,
  I16 = 5,
  I32 = 6,
  I64 = 7,
  String = 8,
  Bool = 9,
  F16 = 10,
  F64 = 11,
  U32 = 12,
  U64 = 13,
  BF16 = 16,
};

using Shape = std::vector<int64_t>;

size_t dtype_size(DType t);          // 0 for String/Undefined
const char* dtype_name(DType t);     // ONNX name: "float", "int64", ...
bool dtype_supported(DType t);       // a type our kernels compute with
std::string shape_str(const Shape& s);  // "[1,8]"

inline int64_t numel(const Shape& s) {
  int64_t n = 1;
  for (int64_t d : s) n *= d;
  return n;
}

// The largest tensor the library allocates, accepts from a caller or lets shape inference
// produce: 16 GiB.
constexpr uint64_t kMaxTensorBytes = uint64_t{1} << 34;

// Overflow-checked sizes: every product of dimensions that comes from a model or a caller goes
// through these before it is used. checked_mul: *out = a * b, false on int64 overflow.
inline bool checked_mul(int64_t a, int64_t b, int64_t* out) { return !__builtin_mul_overflow(a, b, out); }
inline bool checked_add(int64_t a, int64_t b, int64_t* out) { return !__builtin_add_overflow(a, b, out); }
// The element count of dims[0..rank): false when a dimension is negative or the product
// overflows int64 (a zero dimension makes the count 0 whatever the others are).
bool checked_numel(const int64_t* dims, size_t rank, int64_t* n);
inline bool checked_numel(const Shape& s, int64_t* n) { return checked_numel(s.data(), s.size(), n); }
// The byte size of such a tensor of type t: false as above, or when count * element size
// exceeds max_bytes (kMaxTensorBytes unless given).
bool checked_nbytes(const int64_t* dims, size_t rank, DType t, uint64_t* bytes,
                    uint64_t max_bytes = kMaxTensorBytes);
inline bool checked_nbytes(const Shape& s, DType t, uint64_t* bytes, uint64_t max_bytes = kMaxTensorBytes) {
  return checked_nbytes(s.data(), s.size(), t, bytes, max_bytes);
}
// The byte size, or throws INVALID_ARG "<what> of shape [..] ..." naming what is wrong
// (negative dimension, overflow, more than max_bytes).
uint64_t nbytes_or_fail(const Shape& s, DType t, const std::string& what, uint64_t max_bytes = kMaxTensorBytes);

// An owned, immutable-after-construction tensor: initializers, folded constants.
// Data is 64-byte aligned.
class Tensor {
 public:
  Tensor() = default;
  Tensor(DType t, Shape s);  // zero-filled
  DType dtype() const { return dtype_; }
  const Shape& shape() const { return shape_; }
  int64_t numel() const { return pd::numel(shape_); }
  size_t nbytes() const { return static_cast<size_t>(numel()) * dtype_size(dtype_); }
  void* data() { return data_.get(); }
  const void* data() const { return data_.get(); }
  template <typename T> T* as() { return static_cast<T*>(data()); }
  template <typename T> const T* as() const { return static_cast<const T*>(data()); }
  // Reads element i converted to int64/double (for shape arithmetic and attribute-like inputs).
  int64_t int_at(int64_t i) const;
  double float_at(int64_t i) const;
  std::vector<int64_t> to_ints() const;

 private:
  struct Free { void operator()(void* p) const { std::free(p); } };
  DType dtype_ = DType::Undefined;
  Shape shape_;
  std::unique_ptr<void, Free> data_;
};

using TensorPtr = std::shared_ptr<const Tensor>;

// A non-owning view used by kernels at run time. Shapes are those of the shape bucket.
struct View {
  DType dtype = DType::Undefined;
  const Shape* shape = nullptr;
  void* data = nullptr;
  int64_t numel() const { return shape ? pd::numel(*shape) : 0; }
  size_t nbytes() const { return static_cast<size_t>(numel()) * dtype_size(dtype); }
  template <typename T> T* as() const { return static_cast<T*>(data); }
};

// Half-precision conversions (Cast and data loading).
float half_to_float(uint16_t h);
uint16_t float_to_half(float f);
float bf16_to_float(uint16_t h);
uint16_t float_to_bf16(float f);

// Calls f with T the C++ type of dtype, over the numeric types our kernels compute with: a
// generic lambda gets a null T* as a type tag (`[&](auto* tag) { using T = PD_TAG_TYPE(tag); }`),
// a functor its template operator()<T>(). Throws UNSUPPORTED (naming what) for any other type.
#define PD_TAG_TYPE(tag) typename std::remove_pointer<decltype(tag)>::type
template <typename T, typename F>
decltype(auto) invoke_typed(F& f) {
  if constexpr (std::is_invocable_v<F&, T*>) return f(static_cast<T*>(nullptr));
  else return f.template operator()<T>();
}
#define PD_DISPATCH_CASE(E, T) \
  case ::pd::DType::E: return invoke_typed<T>(f);
// Numeric types without bool.
template <typename F>
decltype(auto) dispatch_numeric(DType t, const char* what, F&& f) {
  switch (t) {
    PD_DISPATCH_CASE(F32, float)
    PD_DISPATCH_CASE(F64, double)
    PD_DISPATCH_CASE(I8, int8_t)
    PD_DISPATCH_CASE(U8, uint8_t)
    PD_DISPATCH_CASE(I16, int16_t)
    PD_DISPATCH_CASE(U16, uint16_t)
    PD_DISPATCH_CASE(I32, int32_t)
    PD_DISPATCH_CASE(I64, int64_t)
    PD_DISPATCH_CASE(U32, uint32_t)
    PD_DISPATCH_CASE(U64, uint64_t)
    default: fail(PD_ERR_UNSUPPORTED, what, ": data type ", dtype_name(t), " is not supported");
  }
}
// Numeric types and bool.
template <typename F>
decltype(auto) dispatch_all(DType t, const char* what, F&& f) {
  if (t == DType::Bool) return invoke_typed<bool>(f);
  return dispatch_numeric(t, what, std::forward<F>(f));
}
// Floating-point types only.
template <typename F>
decltype(auto) dispatch_float(DType t, const char* what, F&& f) {
  switch (t) {
    PD_DISPATCH_CASE(F32, float)
    PD_DISPATCH_CASE(F64, double)
    default: fail(PD_ERR_UNSUPPORTED, what, ": data type ", dtype_name(t), " is not supported");
  }
}

template <typename T> constexpr DType dtype_of();
template <> constexpr DType dtype_of<float>() { return DType::F32; }
template <> constexpr DType dtype_of<double>() { return DType::F64; }
template <> constexpr DType dtype_of<int8_t>() { return DType::I8; }
template <> constexpr DType dtype_of<uint8_t>() { return DType::U8; }
template <> constexpr DType dtype_of<int16_t>() { return DType::I16; }
template <> constexpr DType dtype_of<uint16_t>() { return DType::U16; }
template <> constexpr DType dtype_of<int32_t>() { return DType::I32; }
template <> constexpr DType dtype_of<int64_t>() { return DType::I64; }
template <> constexpr DType dtype_of<uint32_t>() { return DType::U32; }
template <> constexpr DType dtype_of<uint64_t>() { return DType::U64; }
template <> constexpr DType dtype_of<bool>() { return DType::Bool; }

}  // namespace pd
