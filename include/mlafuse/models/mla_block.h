// Graphs of DeepSeek-V3 MLA blocks, as an engine would hand them to the compiler.
//
// Per layer i (names are how the runtime binds tensors):
//   inputs   layers.{i}.q [T, H, P+R] bf16, layers.{i}.kv_c_normed [T, L] bf16,
//            layers.{i}.k_pe [T, 1, R] bf16, layers.{i}.kv_cache [pages, page, L+R] bf16
//   mla_attention(layer = i) -> layers.{i}.attn_out [T, H*V] bf16, layers.{i}.kv_cache_out
//   quant (by OutputQuant, quant/output_quant.h):
//     fp8-static: input layers.{i}.o_proj.input_scale [1] f32;
//                 quant_fp8_static -> layers.{i}.xq; linear_fp8_block(xq, input_scale, W, Ws)
//     fp8-group:  quant_fp8_group -> layers.{i}.xq, layers.{i}.xs; linear_fp8_block(xq, xs, W, Ws)
//     nvfp4:      input layers.{i}.o_proj.input_global_scale [1] f32;
//                 quant_nvfp4 -> layers.{i}.xq, layers.{i}.xs; linear_nvfp4(xq, xs, gs, W, Ws)
//   weights  layers.{i}.o_proj.weight [hidden, H*V] fp8e4m3,
//            layers.{i}.o_proj.weight_scale_inv [ceil(hidden/128), ceil(H*V/128)] f32
//   outputs  layers.{i}.y [T, hidden] bf16, layers.{i}.kv_cache_out
// With no quantization the attention output is the graph output layers.{i}.attn_out (no o_proj).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "mlafuse/core/mla_config.h"
#include "mlafuse/ir/graph.h"
#include "mlafuse/quant/output_quant.h"

namespace mlafuse::models {

struct MlaGraphOptions {
  MlaConfig config;
  int64_t num_layers = 1;
  int64_t num_pages = 1024;  // paged cache extent: [num_pages, config.page_size, L+R]
  OutputQuant quant;         // the quantization between the attention and o_proj
};

// N independent MLA blocks (layers 0..N-1). Throws mlafuse::Error naming the field when an
// option is invalid (non-positive counts, a group size that does not divide H*V, ...).
ir::Graph build_mla_graph(const MlaGraphOptions& options);

// Value names of layer i ("layers.{i}." + suffix).
std::string layer_value_name(int64_t layer, std::string_view suffix);

}  // namespace mlafuse::models
