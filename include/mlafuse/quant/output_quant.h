// The output quantization of an attention: the table of formats (SPEC 2, 3) and the one
// descriptor, OutputQuant, that the CLI, the graph builder, the fusion pass, the fused node's
// attributes and the backends all speak. Every list of formats in the project is this table: the
// CLI choices, the fusion rules' accepted group sizes, the CPU dispatch and the CUDA epilogue list
// (an X-macro expansion of MLAFUSE_OUTPUT_FORMATS), so adding a format starts with one row here.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "mlafuse/quant/layout.h"
#include "mlafuse/quant/quant_key.h"

namespace mlafuse {

// X(id, name, key): `name` is the CLI spelling, `key` the QuantKey (std::nullopt: the bf16 output,
// no quantization). Everything else about a format (its quant op, its scales, whether it takes the
// group-scale layout flags) is derived from the key.
#define MLAFUSE_OUTPUT_FORMATS(X)                    \
  X(kBf16, "none", std::nullopt)                     \
  X(kFp8Static, "fp8-static", kFp8StaticTensorSym)   \
  X(kFp8Group128, "fp8-group128", kFp8Dynamic128Sym) \
  X(kFp8Group64, "fp8-group64", kFp8Dynamic64Sym)    \
  X(kNvfp4, "nvfp4", kNvfp4Dynamic)

enum class OutputFormat : uint8_t {
#define MLAFUSE_FORMAT_ENUM(id, name, key) id,
  MLAFUSE_OUTPUT_FORMATS(MLAFUSE_FORMAT_ENUM)
#undef MLAFUSE_FORMAT_ENUM
};

struct OutputFormatInfo {
  OutputFormat format;
  std::string_view name;
  std::optional<QuantKey> key;

  // Dynamic per-group FP8: its scales take the layout flags (col_major, tma_aligned, ue8m0).
  bool group_fp8() const;
  // Takes a [1] f32 scale input: the static FP8 scale or NVFP4's global scale.
  bool takes_scale() const;
  // Writes a block-scale output (group FP8 scales, NVFP4 swizzled e4m3 scales).
  bool has_block_scale() const { return key && key->group_size() > 0; }
  // The quantized output's dtype (bf16 for kBf16).
  DType code_dtype() const { return key ? key->dtype : DType::kBF16; }
};

// The rows of MLAFUSE_OUTPUT_FORMATS, in table order (kBf16 first).
std::span<const OutputFormatInfo> output_formats();
const OutputFormatInfo& output_format_info(OutputFormat f);
std::optional<OutputFormat> find_output_format(std::string_view name);
// The format of a key (nullopt key: kBf16); nullopt for a key no format has.
std::optional<OutputFormat> output_format_of(const std::optional<QuantKey>& key);
// The names joined by `sep` ("fp8-static|fp8-group128|..."), with or without "none".
std::string output_format_names(std::string_view sep, bool with_none);

// One output quantization: a format and, for group FP8, where its scales live (row_major,
// col_major or col_major_tma) and whether they are powers of two. Other formats keep the
// defaults: their scale layout is fixed by the format (block_scale_layout()).
struct OutputQuant {
  OutputFormat format = OutputFormat::kBf16;
  Layout scale_layout = Layout::kRowMajor;
  bool ue8m0 = false;

  // Group FP8 with the given flags, or another format (whose flags must be false). Throws naming
  // the flag when one does not apply (a layout flag on a non-group format, tma_aligned without
  // col_major).
  static OutputQuant make(OutputFormat format, bool col_major = false, bool tma_aligned = false,
                          bool ue8m0 = false);

  const OutputFormatInfo& info() const { return output_format_info(format); }
  std::optional<QuantKey> key() const { return info().key; }
  bool quantized() const { return format != OutputFormat::kBf16; }
  bool col_major() const { return scale_layout != Layout::kRowMajor; }
  bool tma_aligned() const { return scale_layout == Layout::kColMajorTma; }
  int64_t group_size() const { return key() ? key()->group_size() : 0; }
  // The layout of the block-scale output: scale_layout for group FP8, nvfp4_swizzled for NVFP4.
  Layout block_scale_layout() const;

  // "fp8-group128 col_major ue8m0 tma_aligned": the name, then the flags that are set.
  std::string str() const;
  bool operator==(const OutputQuant&) const = default;
};

// Every distinct OutputQuant, in table order: each format, and group FP8 with each of its three
// scale layouts, without and with ue8m0 (kBf16 first; 15 for the table above).
std::span<const OutputQuant> all_output_quants();

// What an attention op's caller asked for (SPEC 3.4), read from its buffers: a key of the table
// (group FP8 by its group size). `block_scale_last_dim` is the last extent
// of output_block_scale when given. Returns nullopt for "no quantization"; throws mlafuse::Error
// naming the offending values on every violated precondition.
std::optional<QuantKey> detect_output_quant_key(DType output_dtype, bool has_output_scale,
                                                std::optional<int64_t> block_scale_last_dim,
                                                int64_t output_dim);

// Parses str()'s form ("nvfp4", "fp8-group64 col_major tma_aligned"); throws naming the accepted
// names or the unknown flag.
OutputQuant parse_output_quant(std::string_view text);

// The group-scale layout the two layout flags name (tma_aligned pads column-major scales only).
Layout group_scale_layout(bool col_major, bool tma_aligned);

}  // namespace mlafuse
