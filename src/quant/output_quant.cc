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
      std::string sizes;  // "128 or 64"
      for (const OutputFormatInfo& f : output_formats()) {
        if (!f.group_fp8()) continue;
        if (f.key->group_size() == g) return f.key;
        sizes += (sizes.empty() ? "" : " or ") + std::to_string(f.key->group_size());
      }
      MLAFUSE_FAIL("unsupported output quant group size ", g, " (output_dim ", output_dim, ", ",
                   groups, " groups); expected ", sizes);
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
