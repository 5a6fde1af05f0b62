// Activation functions shared by the unary ops and the fused Gemm/MatMul/Conv ops (whose
// activation the CPU backend maps to a oneDNN eltwise post-op).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>

namespace pd {

enum class Act : int32_t {
  None = 0, Relu, Tanh, Sigmoid, Elu, LeakyRelu, Softplus, Clip, Mish, HardSigmoid, Swish,
};

// Parses the `activation` attribute of a fused op ("" = None); returns false for an unknown name.
inline bool parse_act(const std::string& s, Act* a) {
  static const struct { const char* n; Act a; } kNames[] = {
      {"", Act::None}, {"Relu", Act::Relu}, {"Tanh", Act::Tanh}, {"Sigmoid", Act::Sigmoid},
      {"Elu", Act::Elu}, {"LeakyRelu", Act::LeakyRelu}, {"Softplus", Act::Softplus},
      {"Clip", Act::Clip}, {"Mish", Act::Mish}, {"HardSigmoid", Act::HardSigmoid},
      {"Swish", Act::Swish}};
  for (const auto& e : kNames)
    if (s == e.n) { *a = e.a; return true; }
  return false;
}

// alpha/beta follow the ONNX op's attributes: Elu alpha; LeakyRelu alpha; Clip min=alpha,
// max=beta; HardSigmoid alpha, beta; Swish: x * sigmoid(alpha * x).
template <typename T>
inline T activate(Act a, T x, float alpha, float beta) {
  switch (a) {
    case Act::None: return x;
    case Act::Relu: return x > T(0) ? x : T(0);
    case Act::Tanh: return std::tanh(x);
    case Act::Sigmoid: return T(1) / (T(1) + std::exp(-x));
    case Act::Elu: return x >= T(0) ? x : T(alpha) * (std::exp(x) - T(1));
    case Act::LeakyRelu: return x >= T(0) ? x : T(alpha) * x;
    case Act::Softplus: return x > T(20) ? x : std::log1p(std::exp(x));
    case Act::Clip: return std::min(std::max(x, T(alpha)), T(beta));
    case Act::Mish: {
      T sp = x > T(20) ? x : std::log1p(std::exp(x));
      return x * std::tanh(sp);
    }
    case Act::HardSigmoid: return std::max(T(0), std::min(T(1), T(alpha) * x + T(beta)));
    case Act::Swish: return x / (T(1) + std::exp(-T(alpha) * x));
  }
  return x;
}

template <typename T>
inline void activate_inplace(Act a, T* x, int64_t n, float alpha, float beta) {
  if (a == Act::None) return;
  for (int64_t i = 0; i < n; ++i) x[i] = activate(a, x[i], alpha, beta);
}

}  // namespace pd
