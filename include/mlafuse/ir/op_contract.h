// The op contract of docs/ops.md as constants: op names, operand slots and attribute names,
// shared by the IR (schemas and inference), the passes (patterns and rewrites) and the backends
// (OpCall), so a name is spelled once and a slot is never a bare number. It needs no graph, so a
// backend includes it without one. Also here: how an OutputQuant is spelled as ops and attributes
// (the quant op that computes it, the fused mla_attention's attributes), in one place both ways.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string_view>

#include "mlafuse/core/attributes.h"
#include "mlafuse/quant/output_quant.h"

namespace mlafuse::ir {

namespace ops {
inline constexpr std::string_view kMlaAttention = "mla_attention";
inline constexpr std::string_view kQuantFp8Static = "quant_fp8_static";
inline constexpr std::string_view kQuantFp8Group = "quant_fp8_group";
inline constexpr std::string_view kQuantNvfp4 = "quant_nvfp4";
inline constexpr std::string_view kLinearFp8Block = "linear_fp8_block";
inline constexpr std::string_view kLinearNvfp4 = "linear_nvfp4";
inline constexpr std::string_view kCacheWrite = "cache_write";
}  // namespace ops

// mla_attention(q, kv_c_normed, k_pe, kv_cache, output_scale?)
//     -> (out, kv_cache_out, output_block_scale?)
namespace mla_attention {
namespace in {
inline constexpr size_t kQ = 0;
inline constexpr size_t kKvCNormed = 1;
inline constexpr size_t kKPe = 2;
inline constexpr size_t kKvCache = 3;
inline constexpr size_t kOutputScale = 4;  // optional: static FP8 scale or NVFP4 global scale
}  // namespace in
namespace out {
inline constexpr size_t kOut = 0;
inline constexpr size_t kKvCacheOut = 1;
inline constexpr size_t kOutputBlockScale = 2;  // optional: group FP8 or NVFP4 scales
}  // namespace out
namespace attr {
inline constexpr std::string_view kLayer = "layer";
inline constexpr std::string_view kNumHeads = "num_heads";
inline constexpr std::string_view kQkNopeDim = "qk_nope_dim";
inline constexpr std::string_view kQkRopeDim = "qk_rope_dim";
inline constexpr std::string_view kVHeadDim = "v_head_dim";
inline constexpr std::string_view kKvLoraRank = "kv_lora_rank";
inline constexpr std::string_view kSoftmaxScale = "softmax_scale";      // optional, 0 = default
inline constexpr std::string_view kQuantGroupSize = "quant_group_size";  // fused forms only
inline constexpr std::string_view kQuantScaleUe8m0 = "quant_scale_ue8m0";
inline constexpr std::string_view kQuantColMajor = "quant_col_major";
inline constexpr std::string_view kQuantTmaAligned = "quant_tma_aligned";
}  // namespace attr
}  // namespace mla_attention

// quant_fp8_static(x, scale) -> q
namespace quant_fp8_static {
namespace in {
inline constexpr size_t kX = 0;
inline constexpr size_t kScale = 1;  // [1] f32
}  // namespace in
namespace out {
inline constexpr size_t kQ = 0;
}  // namespace out
}  // namespace quant_fp8_static

// quant_fp8_group(x) -> (q, s)
namespace quant_fp8_group {
namespace in {
inline constexpr size_t kX = 0;
}  // namespace in
namespace out {
inline constexpr size_t kQ = 0;
inline constexpr size_t kS = 1;
}  // namespace out
namespace attr {
inline constexpr std::string_view kGroupSize = "group_size";
inline constexpr std::string_view kUe8m0 = "ue8m0";
inline constexpr std::string_view kColMajor = "col_major";
inline constexpr std::string_view kTmaAligned = "tma_aligned";
inline constexpr std::string_view kEps = "eps";  // optional
}  // namespace attr
}  // namespace quant_fp8_group

// quant_nvfp4(x, global_scale) -> (q, sf)
namespace quant_nvfp4 {
namespace in {
inline constexpr size_t kX = 0;
inline constexpr size_t kGlobalScale = 1;  // [1] f32
}  // namespace in
namespace out {
inline constexpr size_t kQ = 0;
inline constexpr size_t kSf = 1;
}  // namespace out
}  // namespace quant_nvfp4

// linear_fp8_block(xq, xs, wq, ws) -> y
namespace linear_fp8_block {
namespace in {
inline constexpr size_t kXq = 0;
inline constexpr size_t kXs = 1;  // group scales [T, K/G] or a static [1] scale
inline constexpr size_t kWq = 2;
inline constexpr size_t kWs = 3;
}  // namespace in
namespace out {
inline constexpr size_t kY = 0;
}  // namespace out
}  // namespace linear_fp8_block

// linear_nvfp4(xq, sf, global_scale, wq, ws) -> y
namespace linear_nvfp4 {
namespace in {
inline constexpr size_t kXq = 0;
inline constexpr size_t kSf = 1;
inline constexpr size_t kGlobalScale = 2;
inline constexpr size_t kWq = 3;
inline constexpr size_t kWs = 4;
}  // namespace in
namespace out {
inline constexpr size_t kY = 0;
}  // namespace out
}  // namespace linear_nvfp4

// cache_write(kv_c_normed, k_pe, kv_cache) -> kv_cache_out
namespace cache_write {
namespace in {
inline constexpr size_t kKvCNormed = 0;
inline constexpr size_t kKPe = 1;
inline constexpr size_t kKvCache = 2;
}  // namespace in
namespace out {
inline constexpr size_t kKvCacheOut = 0;
}  // namespace out
}  // namespace cache_write

// ---- OutputQuant as ops and attributes ---------------------------------------------------------

// The quant op that computes `q` from a bf16 activation (quant_fp8_static, quant_fp8_group or
// quant_nvfp4), and that op's attributes; q must be quantized.
std::string_view quant_op_of(const OutputQuant& q);
AttrMap quant_op_attrs(const OutputQuant& q);
// What a quant op node computes; nullopt when `op` is no quant op or its group size is no
// format's (the fusion pass then has nothing to fold).
std::optional<OutputQuant> output_quant_of_quant_op(std::string_view op, const AttrMap& attrs);

// The fused mla_attention's attributes for `q`: quant_group_size (the key's group, 16 for NVFP4)
// and, for group FP8, the three layout flags. Static FP8 has none: its output_scale input says it.
void set_fused_quant_attrs(AttrMap& attrs, const OutputQuant& q);
// The quantization a (fused or unfused) mla_attention computes, read from its attributes and
// whether it has an output_scale input. Throws naming the attribute when they name no format
// (a group size no format has, flags on a non-group format, a missing NVFP4 global scale).
OutputQuant fused_output_quant(const AttrMap& attrs, bool has_output_scale);
// The one decoder of an mla_attention call's quantization, for the IR and every backend: the key
// its buffers ask for (SPEC 3.4: the out dtype, whether output_scale is given, the last extent of
// output_block_scale when given), which must be the one its attributes name. Throws naming both
// when they disagree.
OutputQuant mla_attention_output_quant(const AttrMap& attrs, DType out_dtype, bool has_output_scale,
                                       std::optional<int64_t> block_scale_groups,
                                       int64_t output_dim);

}  // namespace mlafuse::ir
