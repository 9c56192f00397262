#include "mlafuse/core/shape.h"

#include <sstream>

namespace mlafuse {

std::vector<int64_t> Shape::resolve(int64_t num_tokens) const {
  std::vector<int64_t> out;
  out.reserve(dims.size());
  for (const Dim& d : dims) out.push_back(d.resolve(num_tokens));
  return out;
}

std::string Shape::str() const {
  std::ostringstream os;
  os << '[';
  for (size_t i = 0; i < dims.size(); ++i) {
    if (i) os << ", ";
    if (dims[i].is_tokens()) {
      os << 'T';
    } else {
      os << dims[i].value;
    }
  }
  os << ']';
  return os.str();
}

bool fixed_bytes_fit(const Shape& s, size_t elem_bytes) {
  int64_t n = static_cast<int64_t>(elem_bytes);
  for (const Dim& d : s.dims) {
    if (d.is_tokens()) continue;
    if (d.value < 0 || __builtin_mul_overflow(n, d.value, &n)) return false;
  }
  return true;
}

bool extents_bytes_fit(const std::vector<int64_t>& extents, size_t elem_bytes) {
  int64_t n = static_cast<int64_t>(elem_bytes);
  for (int64_t e : extents) {
    if (e < 0 || (e > 0 && __builtin_mul_overflow(n, e, &n))) return false;
  }
  return true;
}

std::string shape_str(const std::vector<int64_t>& extents) {
  std::ostringstream os;
  os << '[';
  for (size_t i = 0; i < extents.size(); ++i) os << (i ? ", " : "") << extents[i];
  os << ']';
  return os.str();
}

}  // namespace mlafuse
