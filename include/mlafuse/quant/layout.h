// Memory layouts a graph value can ask for; the executor allocates buffers from them.
#pragma once

#include <cstdint>
#include <optional>
#include <string_view>
#include <vector>

#include "mlafuse/core/dtype.h"

namespace mlafuse {

enum class Layout {
  kRowMajor,       // contiguous, last dim fastest
  kColMajor,       // 2-D [T, G] with strides (1, T)
  kColMajorTma,    // 2-D [T, G] with strides (1, round_up(T, 4))
  kNvfp4Swizzled,  // 2-D logical [T, D/16] e4m3 block scales stored swizzled as
                   // u8 [round_up(T, 128), round_up(D/16, 4)] (SPEC 3.3)
};

std::string_view layout_name(Layout l);
std::optional<Layout> parse_layout(std::string_view name);

// Physical extents, strides (elements) and storage size for a value of logical extents `shape`.
struct LayoutPlan {
  std::vector<int64_t> shape;
  std::vector<int64_t> strides;
  int64_t storage_numel = 0;
};
LayoutPlan plan_layout(Layout layout, const std::vector<int64_t>& logical_shape);

}  // namespace mlafuse
