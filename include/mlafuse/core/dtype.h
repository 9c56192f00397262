// Element types of tensors and graph values (SPEC section 1).
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>

namespace mlafuse {

enum class DType {
  kBF16,
  kF16,
  kF32,
  kI32,
  kU8,
  kFp8E4M3,   // OCP E4M3 "fn"
  kE8M0,      // power-of-two scale, 2^(e-127)
  kFp4E2M1x2  // two E2M1 values per byte, element 2i in the low nibble
};

// Bytes per stored element (fp4e2m1x2 stores two values in one byte element).
size_t dtype_size(DType t);
// Stable lowercase name used in the text IR and in messages: "bf16", "fp8e4m3", ...
std::string_view dtype_name(DType t);
std::optional<DType> parse_dtype(std::string_view name);
bool is_float_activation(DType t);  // bf16, f16, f32

}  // namespace mlafuse
