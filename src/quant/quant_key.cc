#include "mlafuse/quant/quant_key.h"

#include <functional>
#include <sstream>

#include "mlafuse/core/error.h"

namespace mlafuse {

std::string scale_desc_str(const ScaleDesc& s) {
  std::ostringstream os;
  os << "scale(" << dtype_name(s.dtype) << ", " << (s.is_static ? "static" : "dynamic") << ", ";
  const GroupShape& g = s.group_shape;
  if (g.is_per_tensor()) {
    os << "per-tensor";
  } else if (g.is_per_token()) {
    os << "per-token";
  } else if (g.row == -1 && g.col == 1) {
    os << "per-channel";
  } else {
    os << "group " << g.row << 'x' << g.col;
  }
  os << ')';
  return os.str();
}

std::string QuantKey::str() const {
  std::ostringstream os;
  os << "QuantKey(" << dtype_name(dtype) << ", " << scale_desc_str(scale);
  if (scale2) os << ", scale2=" << scale_desc_str(*scale2);
  os << ", " << (symmetric ? "symmetric" : "asymmetric") << ')';
  return os.str();
}

namespace {
size_t mix(size_t h, size_t v) { return h ^ (v + 0x9e3779b97f4a7c15ULL + (h << 6) + (h >> 2)); }
size_t hash_scale(const ScaleDesc& s) {
  size_t h = static_cast<size_t>(s.dtype);
  h = mix(h, s.is_static);
  h = mix(h, std::hash<int64_t>{}(s.group_shape.row));
  h = mix(h, std::hash<int64_t>{}(s.group_shape.col));
  return h;
}
}  // namespace

size_t QuantKeyHash::operator()(const QuantKey& k) const {
  size_t h = static_cast<size_t>(k.dtype);
  h = mix(h, hash_scale(k.scale));
  h = mix(h, k.scale2 ? hash_scale(*k.scale2) : 0x51ed);
  h = mix(h, k.symmetric);
  return h;
}

}  // namespace mlafuse
