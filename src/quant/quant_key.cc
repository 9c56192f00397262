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

std::optional<QuantKey> detect_output_quant_key(DType output_dtype, bool has_output_scale,
                                                std::optional<int64_t> block_scale_last_dim,
                                                int64_t output_dim) {
  if (!has_output_scale && !block_scale_last_dim) return std::nullopt;
  if (block_scale_last_dim) {
    const int64_t groups = *block_scale_last_dim;
    if (output_dtype == DType::kFp8E4M3) {
      MLAFUSE_CHECK(!has_output_scale,
                    "output_block_scale given with an fp8e4m3 output: output_scale must be absent "
                    "(per-group FP8 has no static scale)");
      MLAFUSE_CHECK(groups > 0, "output_block_scale has ", groups,
                    " groups in its last dim; expected a positive count");
      MLAFUSE_CHECK(output_dim % groups == 0, "output_dim ", output_dim,
                    " is not divisible by the output_block_scale group count ", groups);
      const int64_t g = output_dim / groups;
      if (g == 128) return kFp8Dynamic128Sym;
      if (g == 64) return kFp8Dynamic64Sym;
      MLAFUSE_FAIL("unsupported output quant group size ", g, " (output_dim ", output_dim, ", ",
                   groups, " groups); expected 128 or 64");
    }
    MLAFUSE_CHECK(has_output_scale, "output_block_scale given with a ", dtype_name(output_dtype),
                  " output but output_scale is missing: NVFP4 needs its global scale");
    MLAFUSE_CHECK(output_dtype == DType::kFp4E2M1x2 || output_dtype == DType::kU8,
                  "output_block_scale given with a ", dtype_name(output_dtype),
                  " output; expected fp8e4m3 (group FP8) or fp4e2m1x2 (NVFP4)");
    return kNvfp4Dynamic;
  }
  MLAFUSE_CHECK(output_dtype == DType::kFp8E4M3, "output_scale given with a ",
                dtype_name(output_dtype), " output; static quantization expects fp8e4m3");
  return kFp8StaticTensorSym;
}

}  // namespace mlafuse
