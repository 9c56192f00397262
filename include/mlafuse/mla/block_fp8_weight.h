// A weight as a DeepSeek-V3 checkpoint stores it: block FP8 (e4m3 codes, one f32
// `weight_scale_inv` per 128x128 block). Here in the MLA contract because a layer's weights may
// carry kv_b_proj in this form (weight_store.h) and every backend reads it; models/weights.h
// draws and quantizes such weights.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "mlafuse/core/tensor.h"

namespace mlafuse {

inline constexpr int64_t kWeightBlock = 128;  // DeepSeek-V3's block-FP8 weight tile

// Dequantized value: w[n, k] = e4m3(weight[n, k]) * weight_scale_inv[n / 128, k / 128] (the name
// is the checkpoint's: it multiplies). Both tensors undefined = no such weight.
struct BlockFp8Weight {
  Tensor weight;            // [N, K] fp8e4m3 (or u8 codes)
  Tensor weight_scale_inv;  // [ceil(N/128), ceil(K/128)] f32
  bool empty() const { return !weight.defined() && !weight_scale_inv.defined(); }
};

// Checks dtypes, contiguity, the device and the scales' shape of a block-FP8 weight, and the
// codes' shape when `shape` is given; throws naming `name` and what was expected.
void check_block_fp8(const BlockFp8Weight& w, const std::string& name,
                     Device device = Device::kCpu, const std::vector<int64_t>& shape = {});
// f32 [N, K]: codes times their block's scale, in f32 (exact: e4m3 times an f32 scale). Host.
Tensor dequantize_block_fp8(const BlockFp8Weight& w);

}  // namespace mlafuse
