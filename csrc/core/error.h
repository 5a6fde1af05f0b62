// Errors inside the library. Code below the C ABI throws pd::Error; every exported function
// catches it (and anything else) in one place and turns it into a pd_error*.
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>

#include "policyd.h"

namespace pd {

class Error : public std::runtime_error {
 public:
  Error(pd_error_code code, std::string msg) : std::runtime_error(std::move(msg)), code_(code) {}
  pd_error_code code() const { return code_; }

 private:
  pd_error_code code_;
};

// Thrown when an op needs the value of a tensor (a Reshape's shape, a Slice's starts) that is
// not a constant. When that tensor is a graph input, the engine makes it a shape-tensor input
// whose values join the shape bucket (see ValueInfo::value_input).
class NeedsValue : public Error {
 public:
  NeedsValue(std::string value, std::string msg)
      : Error(PD_ERR_UNSUPPORTED, std::move(msg)), value_(std::move(value)) {}
  const std::string& value() const { return value_; }

 private:
  std::string value_;
};

namespace detail {
inline void append(std::ostringstream&) {}
template <typename T, typename... Rest>
void append(std::ostringstream& os, const T& v, const Rest&... rest) {
  os << v;
  append(os, rest...);
}
}  // namespace detail

// Concatenates the arguments with operator<< into one message.
template <typename... Args>
std::string str(const Args&... args) {
  std::ostringstream os;
  detail::append(os, args...);
  return os.str();
}

template <typename... Args>
[[noreturn]] void fail(pd_error_code code, const Args&... args) {
  throw Error(code, str(args...));
}

// Throws INVALID_ARG with the message when cond is false. For checks of the model or the
// caller's data, never of our own invariants.
#define PD_CHECK_ARG(cond, ...)                                   \
  do {                                                            \
    if (!(cond)) ::pd::fail(PD_ERR_INVALID_ARG, __VA_ARGS__);     \
  } while (0)

// Throws INTERNAL naming the broken invariant and where it broke.
#define PD_ASSERT(cond)                                                                   \
  do {                                                                                    \
    if (!(cond))                                                                          \
      ::pd::fail(PD_ERR_INTERNAL, "internal error: ", #cond, " (", __FILE__, ":", __LINE__, ")"); \
  } while (0)

}  // namespace pd
