// The weights MLA blocks run with: per layer what `mla_attention` reads (found by its `layer`
// attribute), and every graph `weight` value by name.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "mlafuse/core/error.h"
#include "mlafuse/core/mla_config.h"
#include "mlafuse/core/tensor.h"
#include "mlafuse/mla/block_fp8_weight.h"

namespace mlafuse {

// Weights an `mla_attention` node finds by its `layer` attribute (the layer object owns them in
// an engine). Tensors live on the backend's device.
struct MlaLayerWeights {
  Tensor w_uk_t;     // [H, P, L] bf16: absorbs q_nope into the latent space
  Tensor w_uv;       // [H, L, V] bf16: latent output -> per-head value space
  Tensor kv_b_proj;  // [H*(P+V), L] bf16, dequantized: expands latents for prefill
  // kv_b_proj as the checkpoint stores it, when the weights come from one (empty otherwise):
  // codes [H*(P+V), L], scales [ceil(H*(P+V)/128), L/128], L a multiple of 128. Present, prefill
  // up-projects with it as engines run this linear (W8A8 block FP8: the latents quantized per
  // token in groups of 128, SPEC 4 "Expanded prefill") and kv_b_proj above is not read (it may
  // be left undefined; the executor does not upload it then); decode's w_uk_t / w_uv are copies
  // of its dequantized value either way.
  BlockFp8Weight kv_b_proj_fp8;
};

struct WeightStore {
  MlaConfig config;
  std::vector<MlaLayerWeights> layers;
  // Graph `weight` values by name (e.g. "layers.0.o_proj.weight"), bound by the executor.
  std::map<std::string, Tensor> tensors;
  const MlaLayerWeights& layer(int64_t i) const {
    MLAFUSE_CHECK(i >= 0 && i < static_cast<int64_t>(layers.size()), "layer ", i,
                  " has no weights (the store holds ", layers.size(), " layers)");
    return layers[static_cast<size_t>(i)];
  }
};

}  // namespace mlafuse
