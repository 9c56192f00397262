#include "mlafuse/quant/layout.h"

#include "mlafuse/core/error.h"
#include "mlafuse/core/shape.h"
#include "mlafuse/core/tensor.h"
#include "mlafuse/quant/scale_layout.h"

namespace mlafuse {

std::string_view layout_name(Layout l) {
  switch (l) {
    case Layout::kRowMajor:
      return "row_major";
    case Layout::kColMajor:
      return "col_major";
    case Layout::kColMajorTma:
      return "col_major_tma";
    case Layout::kNvfp4Swizzled:
      return "nvfp4_swizzled";
  }
  return "?";
}

std::optional<Layout> parse_layout(std::string_view name) {
  for (Layout l :
       {Layout::kRowMajor, Layout::kColMajor, Layout::kColMajorTma, Layout::kNvfp4Swizzled}) {
    if (layout_name(l) == name) return l;
  }
  return std::nullopt;
}

LayoutPlan plan_layout(Layout layout, const std::vector<int64_t>& s) {
  LayoutPlan p;
  if (layout == Layout::kRowMajor) {
    p.shape = s;
    p.strides = Tensor::contiguous_strides(s);
    p.storage_numel = 1;
    for (int64_t e : s) p.storage_numel *= e;
    return p;
  }
  MLAFUSE_CHECK(s.size() == 2, "layout ", layout_name(layout),
                " needs a 2-D [T, groups] value, got ", shape_str(s));
  if (layout == Layout::kNvfp4Swizzled) {
    Nvfp4ScaleLayout l{s[0], s[1] * 16};
    p.shape = {l.padded_rows(), l.padded_cols()};
    p.strides = Tensor::contiguous_strides(p.shape);
    p.storage_numel = l.storage_bytes();
    return p;
  }
  GroupScaleLayout g{s[0], s[1], true, layout == Layout::kColMajorTma};
  p.shape = s;
  p.strides = {g.token_stride(), g.group_stride()};
  p.storage_numel = g.storage_numel();
  return p;
}

}  // namespace mlafuse
