// Seeded random MLA weights stored as a DeepSeek-V3 checkpoint stores them: `kv_b_proj` and
// `o_proj` in block FP8 (e4m3 codes, one f32 `weight_scale_inv` per 128x128 block), dequantized
// to bf16 where the attention math needs bf16 (W_UK_T, W_UV, kv_b_proj), exactly as vLLM does.
// The weight type itself (BlockFp8Weight, its check and dequantization) is the MLA contract's:
// mla/block_fp8_weight.h.
#pragma once

#include <cstdint>
#include <string>

#include "mlafuse/core/mla_config.h"
#include "mlafuse/core/tensor.h"
#include "mlafuse/mla/block_fp8_weight.h"
#include "mlafuse/mla/weight_store.h"

namespace mlafuse::models {

// Quantizes an f32 [N, K] matrix per 128x128 block as DeepSeek's conversion does:
// scale = amax(block) / 448 (an all-zero block gets scale 1), codes = e4m3(w / scale).
BlockFp8Weight quantize_block_fp8(const Tensor& w);
// bf16 [N, K]: the f32 dequantized value rounded to bf16, what vLLM feeds the bf16 matmuls.
Tensor dequantize_block_fp8_bf16(const BlockFp8Weight& w);
// y[t, n] = sum_k x[t, k] * dequant(w)[n, k], all in f32 (no activation quantization): the
// o_proj of the f32 end-to-end reference. x: [T, K] f32 -> [T, N] f32.
Tensor linear_block_fp8_f32(const Tensor& x, const BlockFp8Weight& w);

// W_UK_T and W_UV from the dequantized kv_b_proj ([H*(P+V), L] bf16, rows per head: P nope rows,
// then V value rows), as vLLM's MLA absorbs them:
//   w_uk_t[h, p, l] = kv_b_proj[h*(P+V) + p, l]        // [H, P, L]
//   w_uv[h, l, v]   = kv_b_proj[h*(P+V) + P + v, l]    // [H, L, V]
// Both are exact copies of bf16 values, so the absorbed (decode) and expanded (prefill) forms use
// the same numbers.
MlaLayerWeights mla_layer_weights_from_kv_b_proj(const Tensor& kv_b_proj, const MlaConfig& cfg);
// The same from the checkpoint's block-FP8 kv_b_proj ([H*(P+V), L]): the bf16 tensors from its
// dequantized value (dequantize_block_fp8_bf16), and the checkpoint form itself as kv_b_proj_fp8
// when L is a multiple of 128 (whole groups for the latents' quantization; DeepSeek's L is 512).
// Configs with another L keep only the bf16 form.
MlaLayerWeights mla_layer_weights_from_block_fp8(const BlockFp8Weight& kv_b_proj,
                                                 const MlaConfig& cfg);

// How the random weights are drawn (standard deviations of the pre-quantization f32 values).
// Defaults keep activations O(1): with q, kv_c_normed, k_pe ~ N(0, 1), kv_b_proj's 2/sqrt(L)
// gives attention scores of standard deviation ~1.7 (peaked but not one-hot softmax), and o_proj's
// 1/sqrt(H*V) keeps y on the scale of the attention output. Each 128x128 block's values are
// additionally scaled by 2^u, u uniform in [-1, 1], so block scales differ as in a real checkpoint.
struct WeightInit {
  double kv_b_proj_std_times_sqrt_l = 2.0;
  double o_proj_std_times_sqrt_hv = 1.0;
  bool vary_block_magnitude = true;
};

// Names under which the store keeps checkpoint tensors (the graph's `weight` values).
std::string o_proj_weight_name(int64_t layer);     // "layers.{i}.o_proj.weight"
std::string o_proj_scale_name(int64_t layer);      // "layers.{i}.o_proj.weight_scale_inv"
std::string kv_b_proj_weight_name(int64_t layer);  // "layers.{i}.kv_b_proj.weight"
std::string kv_b_proj_scale_name(int64_t layer);   // "layers.{i}.kv_b_proj.weight_scale_inv"

// Host weights of `num_layers` independent MLA layers, deterministic in `seed` (the same on every
// platform and thread count). `layers[i]` holds what the attention reads
// (mla_layer_weights_from_block_fp8); `tensors` holds each layer's block-FP8 kv_b_proj and o_proj
// ([hidden, H*V]) with their scales.
WeightStore make_mla_weights(const MlaConfig& cfg, int64_t num_layers, uint64_t seed,
                             const WeightInit& init = {});

// The block-FP8 o_proj (or kv_b_proj) of layer i, viewed from a store made above.
BlockFp8Weight o_proj_of(const WeightStore& store, int64_t layer);
BlockFp8Weight kv_b_proj_of(const WeightStore& store, int64_t layer);

}  // namespace mlafuse::models
