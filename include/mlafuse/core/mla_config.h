// Sizes of one MLA (multi-head latent attention) layer; DeepSeek-V3 values by default (SPEC 4).
#pragma once

#include <cmath>
#include <cstdint>
#include <string>

namespace mlafuse {

struct MlaConfig {
  int64_t num_heads = 128;      // H (per GPU under tensor parallelism: 16, 32, 64 or 128)
  int64_t qk_nope_dim = 128;    // P
  int64_t qk_rope_dim = 64;     // R
  int64_t v_head_dim = 128;     // V
  int64_t kv_lora_rank = 512;   // L
  int64_t hidden = 7168;
  int64_t page_size = 64;
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
