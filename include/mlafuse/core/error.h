// Errors: one exception type whose message names the tensor, the shape and what was expected.
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>

namespace mlafuse {

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

namespace detail {
template <typename... Args>
std::string concat(const Args&... args) {
  std::ostringstream os;
  (os << ... << args);
  return os.str();
}
}  // namespace detail

}  // namespace mlafuse

// MLAFUSE_CHECK(cond, "tensor q: expected ", a, ", got ", b): throws mlafuse::Error when cond is
// false. Stays on in release builds (never an assert).
#define MLAFUSE_CHECK(cond, ...)                                     \
  do {                                                               \
    if (!(cond)) throw ::mlafuse::Error(::mlafuse::detail::concat(__VA_ARGS__)); \
  } while (0)

#define MLAFUSE_FAIL(...) throw ::mlafuse::Error(::mlafuse::detail::concat(__VA_ARGS__))
