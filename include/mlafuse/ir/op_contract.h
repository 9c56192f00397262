// The op contract of docs/ops.md as constants: op names, operand slots and attribute names,
// shared by the IR (schemas and inference), the passes (patterns and rewrites) and the backends
// (OpCall), so a name is spelled once and a slot is never a bare number. Dependency-free, so a
// backend includes it without the graph.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

namespace mlafuse::ir {

namespace ops {
inline constexpr std::string_view kMlaAttention = "mla_attention";
inline constexpr std::string_view kQuantFp8Static = "quant_fp8_static";
inline constexpr std::string_view kQuantFp8Group = "quant_fp8_group";
inline constexpr std::string_view kQuantNvfp4 = "quant_nvfp4";
inline constexpr std::string_view kLinearFp8Block = "linear_fp8_block";
inline constexpr std::string_view kLinearNvfp4 = "linear_nvfp4";
inline constexpr std::string_view kCacheWrite = "cache_write";

inline constexpr int64_t kNvfp4BlockSize = 16;  // quant_group_size of a fused NVFP4 attention
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

// quant_fp8_group(x) -> (q, s)
namespace quant_fp8_group::attr {
inline constexpr std::string_view kGroupSize = "group_size";
inline constexpr std::string_view kUe8m0 = "ue8m0";
inline constexpr std::string_view kColMajor = "col_major";
inline constexpr std::string_view kTmaAligned = "tma_aligned";
inline constexpr std::string_view kEps = "eps";  // optional
}  // namespace quant_fp8_group::attr

}  // namespace mlafuse::ir
