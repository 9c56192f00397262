// Quantization keys (SPEC section 2): what a quantized tensor is, compared and hashed by value.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>

#include "mlafuse/core/dtype.h"

namespace mlafuse {

// Extent of the elements that share one scale; -1 means the full extent of that dimension.
struct GroupShape {
  int64_t row = -1;
  int64_t col = -1;

  static constexpr GroupShape per_tensor() { return {-1, -1}; }
  static constexpr GroupShape per_token() { return {1, -1}; }
  static constexpr GroupShape per_channel() { return {-1, 1}; }
  static constexpr GroupShape per_group(int64_t g) { return {1, g}; }
  constexpr bool is_per_tensor() const { return row == -1 && col == -1; }
  constexpr bool is_per_token() const { return row == 1 && col == -1; }
  constexpr bool is_per_group() const { return row == 1 && col >= 1; }
  constexpr bool operator==(const GroupShape&) const = default;
};

struct ScaleDesc {
  DType dtype = DType::kF32;
  bool is_static = false;
  GroupShape group_shape;
  constexpr bool operator==(const ScaleDesc&) const = default;
};

struct QuantKey {
  DType dtype = DType::kFp8E4M3;
  ScaleDesc scale;
  std::optional<ScaleDesc> scale2;  // NVFP4's per-tensor global scale
  bool symmetric = true;
  bool operator==(const QuantKey&) const = default;

  // "QuantKey(fp8e4m3, scale(f32, dynamic, group 1x128), symmetric)"
  std::string str() const;
  // Group size along the last dim for per-group keys; 0 otherwise.
  int64_t group_size() const { return scale.group_shape.is_per_group() ? scale.group_shape.col : 0; }
};

struct QuantKeyHash {
  size_t operator()(const QuantKey& k) const;
};

std::string scale_desc_str(const ScaleDesc& s);

// quant_fp8_group's `eps` when the attribute is absent (SPEC 3.2: amax = max(eps, max |x|)).
inline constexpr double kDefaultQuantEps = 1e-10;

inline const QuantKey kFp8StaticTensorSym{
    DType::kFp8E4M3, ScaleDesc{DType::kF32, true, GroupShape::per_tensor()}, std::nullopt, true};
inline const QuantKey kFp8DynamicTensorSym{
    DType::kFp8E4M3, ScaleDesc{DType::kF32, false, GroupShape::per_tensor()}, std::nullopt, true};
inline const QuantKey kFp8DynamicTokenSym{
    DType::kFp8E4M3, ScaleDesc{DType::kF32, false, GroupShape::per_token()}, std::nullopt, true};
inline const QuantKey kFp8Dynamic128Sym{
    DType::kFp8E4M3, ScaleDesc{DType::kF32, false, GroupShape::per_group(128)}, std::nullopt, true};
inline const QuantKey kFp8Dynamic64Sym{
    DType::kFp8E4M3, ScaleDesc{DType::kF32, false, GroupShape::per_group(64)}, std::nullopt, true};
inline const QuantKey kNvfp4Dynamic{
    DType::kFp4E2M1x2, ScaleDesc{DType::kFp8E4M3, false, GroupShape::per_group(16)},
    ScaleDesc{DType::kF32, true, GroupShape::per_tensor()}, true};

}  // namespace mlafuse
