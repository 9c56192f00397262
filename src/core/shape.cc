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

std::string shape_str(const std::vector<int64_t>& extents) {
  std::ostringstream os;
  os << '[';
  for (size_t i = 0; i < extents.size(); ++i) os << (i ? ", " : "") << extents[i];
  os << ']';
  return os.str();
}

}  // namespace mlafuse
