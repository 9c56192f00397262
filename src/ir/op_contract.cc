#include "mlafuse/ir/op_contract.h"

#include <string>

#include "mlafuse/core/error.h"

namespace mlafuse::ir {

namespace {

namespace mla_attr = mla_attention::attr;
namespace qfg_attr = quant_fp8_group::attr;

// "128 (fp8-group128), 64 (fp8-group64) or 16 (nvfp4)": the group sizes of the table, for errors.
std::string group_sizes_str(bool group_fp8_only) {
  std::string s;
  std::string last;
  for (const OutputFormatInfo& f : output_formats()) {
    if (!f.has_block_scale() || (group_fp8_only && !f.group_fp8())) continue;
    if (!last.empty()) s += (s.empty() ? "" : ", ") + last;
    last = std::to_string(f.key->group_size()) + " (" + std::string(f.name) + ")";
  }
  return s.empty() ? last : s + " or " + last;
}

// The format with a block scale of group `g` (any when g == 0 means none), taking a scale or not.
std::optional<OutputFormat> format_with(int64_t g, bool takes_scale) {
  for (const OutputFormatInfo& f : output_formats()) {
    const int64_t fg = f.key ? f.key->group_size() : 0;
    if (f.key && fg == g && f.takes_scale() == takes_scale) return f.format;
  }
  return std::nullopt;
}

}  // namespace

std::string_view quant_op_of(const OutputQuant& q) {
  const OutputFormatInfo& f = q.info();
  MLAFUSE_CHECK(f.key.has_value(), "output quantization ", f.name, " has no quant op");
  if (f.group_fp8()) return ops::kQuantFp8Group;
  return f.key->dtype == DType::kFp4E2M1x2 ? ops::kQuantNvfp4 : ops::kQuantFp8Static;
}

AttrMap quant_op_attrs(const OutputQuant& q) {
  AttrMap a;
  if (quant_op_of(q) != ops::kQuantFp8Group) return a;
  a.set(qfg_attr::kGroupSize, q.group_size());
  a.set(qfg_attr::kUe8m0, q.ue8m0);
  a.set(qfg_attr::kColMajor, q.col_major());
  a.set(qfg_attr::kTmaAligned, q.tma_aligned());
  return a;
}

std::optional<OutputQuant> output_quant_of_quant_op(std::string_view op, const AttrMap& a) {
  std::optional<OutputFormat> format;
  if (op == ops::kQuantFp8Group) {
    const int64_t g = a.get<int64_t>(qfg_attr::kGroupSize);
    format = format_with(g, false);
    if (!format || !output_format_info(*format).group_fp8()) return std::nullopt;
    return OutputQuant::make(*format, a.get<bool>(qfg_attr::kColMajor),
                             a.get<bool>(qfg_attr::kTmaAligned) && a.get<bool>(qfg_attr::kColMajor),
                             a.get<bool>(qfg_attr::kUe8m0));
  }
  if (op == ops::kQuantFp8Static) format = output_format_of(kFp8StaticTensorSym);
  if (op == ops::kQuantNvfp4) format = output_format_of(kNvfp4Dynamic);
  if (!format) return std::nullopt;
  return OutputQuant{*format};
}

void set_fused_quant_attrs(AttrMap& attrs, const OutputQuant& q) {
  if (q.group_size() > 0) attrs.set(mla_attr::kQuantGroupSize, q.group_size());
  if (!q.info().group_fp8()) return;
  attrs.set(mla_attr::kQuantScaleUe8m0, q.ue8m0);
  attrs.set(mla_attr::kQuantColMajor, q.col_major());
  attrs.set(mla_attr::kQuantTmaAligned, q.tma_aligned());
}

OutputQuant fused_output_quant(const AttrMap& a, bool has_output_scale) {
  constexpr std::string_view op = ops::kMlaAttention;
  const bool has_group = a.has(mla_attr::kQuantGroupSize);
  const int64_t g = a.get_or<int64_t>(mla_attr::kQuantGroupSize, 0);
  const std::optional<OutputFormat> group_format = format_with(g, false);
  const bool is_group_fp8 =
      has_group && group_format && output_format_info(*group_format).group_fp8();
  for (std::string_view flag :
       {mla_attr::kQuantScaleUe8m0, mla_attr::kQuantColMajor, mla_attr::kQuantTmaAligned}) {
    MLAFUSE_CHECK(!a.has(flag) || is_group_fp8, op, " attribute ", flag,
                  " is only meaningful with a group-FP8 quant_group_size (", group_sizes_str(true),
                  ")", has_group ? ", got quant_group_size " + std::to_string(g) : std::string());
  }
  if (!has_group && !has_output_scale) return OutputQuant{};
  if (!has_group) return OutputQuant{*format_with(0, true)};  // static per-tensor FP8
  if (is_group_fp8) {
    MLAFUSE_CHECK(!has_output_scale, op, " with quant_group_size ", g,
                  " (dynamic group FP8) takes no output_scale");
    const bool col_major = a.get_or<bool>(mla_attr::kQuantColMajor, false);
    // tma_aligned pads column-major scales only: on row-major ones it changes nothing.
    return OutputQuant::make(*group_format, col_major,
                             col_major && a.get_or<bool>(mla_attr::kQuantTmaAligned, false),
                             a.get_or<bool>(mla_attr::kQuantScaleUe8m0, false));
  }
  // A present quant_group_size names a group (0 would be a second spelling of static FP8).
  const std::optional<OutputFormat> scaled =
      g > 0 ? format_with(g, true) : std::optional<OutputFormat>{};
  MLAFUSE_CHECK(scaled.has_value(), op, " attribute quant_group_size must be ",
                group_sizes_str(false), ", got ", g);
  MLAFUSE_CHECK(has_output_scale, op, " with quant_group_size ", g, " (",
                output_format_info(*scaled).name, ") needs output_scale, the global scale");
  return OutputQuant{*scaled};
}

OutputQuant mla_attention_output_quant(const AttrMap& attrs, DType out_dtype, bool has_output_scale,
                                       std::optional<int64_t> block_scale_groups,
                                       int64_t output_dim) {
  const std::optional<QuantKey> asked =
      detect_output_quant_key(out_dtype, has_output_scale, block_scale_groups, output_dim);
  const OutputQuant quant = fused_output_quant(attrs, has_output_scale);
  if (quant.key() == asked) return quant;
  const std::string attr =
      attrs.has(mla_attr::kQuantGroupSize)
          ? "quant_group_size " + std::to_string(attrs.get<int64_t>(mla_attr::kQuantGroupSize))
          : std::string("no quant_group_size");
  const std::string block =
      block_scale_groups ? "of " + std::to_string(*block_scale_groups) + " groups" : "absent";
  MLAFUSE_FAIL(ops::kMlaAttention, ": the attributes (", attr, ": ", quant.info().name,
               ") disagree with the buffers (output_scale ", has_output_scale ? "given" : "absent",
               ", output_block_scale ", block, "), which ask for ",
               asked ? asked->str() : std::string("no quantization"));
}

}  // namespace mlafuse::ir
