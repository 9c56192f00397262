#include "mlafuse/quant/output_quant.h"

#include <vector>

#include "mlafuse/core/error.h"

namespace mlafuse {

bool OutputFormatInfo::group_fp8() const {
  return key && key->dtype == DType::kFp8E4M3 && !key->scale.is_static &&
         key->scale.group_shape.is_per_group();
}

bool OutputFormatInfo::takes_scale() const {
  return key && (key->scale.is_static || (key->scale2 && key->scale2->is_static));
}

std::span<const OutputFormatInfo> output_formats() {
  static const std::vector<OutputFormatInfo> table = {
#define MLAFUSE_FORMAT_ROW(id, name, key) {OutputFormat::id, name, key},
      MLAFUSE_OUTPUT_FORMATS(MLAFUSE_FORMAT_ROW)
#undef MLAFUSE_FORMAT_ROW
  };
  return table;
}

const OutputFormatInfo& output_format_info(OutputFormat f) {
  return output_formats()[static_cast<size_t>(f)];
}

std::optional<OutputFormat> find_output_format(std::string_view name) {
  for (const OutputFormatInfo& i : output_formats()) {
    if (i.name == name) return i.format;
  }
  return std::nullopt;
}

std::optional<OutputFormat> output_format_of(const std::optional<QuantKey>& key) {
  for (const OutputFormatInfo& i : output_formats()) {
    if (i.key == key) return i.format;
  }
  return std::nullopt;
}

std::string output_format_names(std::string_view sep, bool with_none) {
  std::string s;
  for (const OutputFormatInfo& i : output_formats()) {
    if (!with_none && i.format == OutputFormat::kBf16) continue;
    if (!s.empty()) s += sep;
    s += i.name;
  }
  return s;
}

Layout group_scale_layout(bool col_major, bool tma_aligned) {
  if (!col_major) return Layout::kRowMajor;
  return tma_aligned ? Layout::kColMajorTma : Layout::kColMajor;
}

OutputQuant OutputQuant::make(OutputFormat format, bool col_major, bool tma_aligned, bool ue8m0) {
  const OutputFormatInfo& info = output_format_info(format);
  for (const auto& [flag, on] : {std::pair<const char*, bool>{"col_major", col_major},
                                 {"tma_aligned", tma_aligned},
                                 {"ue8m0", ue8m0}}) {
    MLAFUSE_CHECK(info.group_fp8() || !on, "output quantization ", info.name, ": ", flag,
                  " applies to group FP8 scales only");
  }
  MLAFUSE_CHECK(!tma_aligned || col_major,
                "output quantization: tma_aligned pads column-major scales and needs col_major");
  return OutputQuant{format, group_scale_layout(col_major, tma_aligned), ue8m0};
}

Layout OutputQuant::block_scale_layout() const {
  return key() && key()->dtype == DType::kFp4E2M1x2 ? Layout::kNvfp4Swizzled : scale_layout;
}

std::string OutputQuant::str() const {
  std::string s(info().name);
  if (col_major()) s += " col_major";
  if (ue8m0) s += " ue8m0";
  if (tma_aligned()) s += " tma_aligned";
  return s;
}

std::span<const OutputQuant> all_output_quants() {
  static const std::vector<OutputQuant> all = [] {
    std::vector<OutputQuant> v;
    for (const OutputFormatInfo& f : output_formats()) {
      if (!f.group_fp8()) {
        v.push_back(OutputQuant{f.format});
        continue;
      }
      for (Layout l : {Layout::kRowMajor, Layout::kColMajor, Layout::kColMajorTma}) {
        for (bool ue8m0 : {false, true}) v.push_back(OutputQuant{f.format, l, ue8m0});
      }
    }
    return v;
  }();
  return all;
}

OutputQuant parse_output_quant(std::string_view text) {
  const size_t end = text.find(' ');
  const std::string_view name = text.substr(0, end);
  const std::optional<OutputFormat> format = find_output_format(name);
  MLAFUSE_CHECK(format.has_value(), "unknown quantization '", name, "' (expected ",
                output_format_names(", ", true), ")");
  bool col_major = false, ue8m0 = false, tma_aligned = false;
  std::string_view rest = end == std::string_view::npos ? "" : text.substr(end + 1);
  while (!rest.empty()) {
    const size_t sp = rest.find(' ');
    const std::string_view flag = rest.substr(0, sp);
    rest = sp == std::string_view::npos ? "" : rest.substr(sp + 1);
    if (flag == "col_major") {
      col_major = true;
    } else if (flag == "ue8m0") {
      ue8m0 = true;
    } else if (flag == "tma_aligned") {
      tma_aligned = true;
    } else {
      MLAFUSE_FAIL("unknown quantization flag '", flag, "' in '", text,
                   "' (expected col_major, ue8m0 or tma_aligned)");
    }
  }
  return OutputQuant::make(*format, col_major, tma_aligned, ue8m0);
}

}  // namespace mlafuse
