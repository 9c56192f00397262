// Sizes of one MLA (multi-head latent attention) layer; DeepSeek-V3 values by default (SPEC 4).
#pragma once

#include <cmath>
#include <cstdint>
#include <string>

namespace mlafuse {

// DeepSeek-V3's MLA dimensions (SPEC 4), defined once: MlaConfig's defaults, and the sizes the
// CUDA decode kernels are specialised for (their kMla* constants are aliases of these).
namespace deepseek_mla {
inline constexpr int64_t kNumHeads = 128;
inline constexpr int64_t kQkNopeDim = 128;                      // P
inline constexpr int64_t kQkRopeDim = 64;                       // R
inline constexpr int64_t kVHeadDim = 128;                       // V
inline constexpr int64_t kKvLoraRank = 512;                     // L
inline constexpr int64_t kQkHeadDim = kQkNopeDim + kQkRopeDim;  // P + R = 192
inline constexpr int64_t kCacheRow = kKvLoraRank + kQkRopeDim;  // L + R = 576
inline constexpr int64_t kHidden = 7168;
inline constexpr int64_t kPageSize = 64;
// The attention scale DeepSeek-V3 runs with: 1/sqrt(P+R) times the square of YaRN's mscale (its
// config's rope factor 40, mscale_all_dim 1: mscale = 0.1 * ln(40) + 1), as its reference model
// and vLLM compute it; about 0.1352 against the plain 1/sqrt(192) = 0.0722.
inline double softmax_scale() {
  const double mscale = 0.1 * std::log(40.0) + 1.0;
  return mscale * mscale / std::sqrt(static_cast<double>(kQkHeadDim));
}
}  // namespace deepseek_mla

struct MlaConfig {
  // H (per GPU under tensor parallelism: 16, 32, 64 or 128)
  int64_t num_heads = deepseek_mla::kNumHeads;
  int64_t qk_nope_dim = deepseek_mla::kQkNopeDim;
  int64_t qk_rope_dim = deepseek_mla::kQkRopeDim;
  int64_t v_head_dim = deepseek_mla::kVHeadDim;
  int64_t kv_lora_rank = deepseek_mla::kKvLoraRank;
  int64_t hidden = deepseek_mla::kHidden;
  int64_t page_size = deepseek_mla::kPageSize;
  double softmax_scale = 0.0;   // 0 means the default 1/sqrt(P+R)

  int64_t qk_head_dim() const { return qk_nope_dim + qk_rope_dim; }  // 192
  int64_t cache_row() const { return kv_lora_rank + qk_rope_dim; }   // 576
  int64_t output_dim() const { return num_heads * v_head_dim; }      // H*V
  float scale() const {
    return softmax_scale > 0 ? static_cast<float>(softmax_scale)
                             : 1.0f / std::sqrt(static_cast<float>(qk_head_dim()));
  }
  // Throws mlafuse::Error naming the first field that is not positive.
  void validate() const;
  std::string str() const;
};

}  // namespace mlafuse
