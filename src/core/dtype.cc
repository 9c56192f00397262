#include "mlafuse/core/dtype.h"

#include "mlafuse/core/error.h"

namespace mlafuse {

size_t dtype_size(DType t) {
  switch (t) {
    case DType::kBF16:
    case DType::kF16:
      return 2;
    case DType::kF32:
    case DType::kI32:
      return 4;
    case DType::kU8:
    case DType::kFp8E4M3:
    case DType::kE8M0:
    case DType::kFp4E2M1x2:
      return 1;
  }
  MLAFUSE_FAIL("unknown dtype");
}

std::string_view dtype_name(DType t) {
  switch (t) {
    case DType::kBF16: return "bf16";
    case DType::kF16: return "f16";
    case DType::kF32: return "f32";
    case DType::kI32: return "i32";
    case DType::kU8: return "u8";
    case DType::kFp8E4M3: return "fp8e4m3";
    case DType::kE8M0: return "e8m0";
    case DType::kFp4E2M1x2: return "fp4e2m1x2";
  }
  return "?";
}

std::optional<DType> parse_dtype(std::string_view name) {
  for (DType t : {DType::kBF16, DType::kF16, DType::kF32, DType::kI32, DType::kU8,
                  DType::kFp8E4M3, DType::kE8M0, DType::kFp4E2M1x2}) {
    if (dtype_name(t) == name) return t;
  }
  return std::nullopt;
}

bool is_float_activation(DType t) {
  return t == DType::kBF16 || t == DType::kF16 || t == DType::kF32;
}

}  // namespace mlafuse
