// Seeded random batches for MLA blocks: activations, a paged latent cache pre-filled with earlier
// context at randomly permuted pages, and the attention metadata of one engine step (decode
// sequences first, then prefill sequences; padded to T_pad tokens for CUDA-graph buckets).
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "mlafuse/core/mla_config.h"
#include "mlafuse/core/tensor.h"
#include "mlafuse/mla/attention_metadata.h"

namespace mlafuse::models {

struct PrefillSpec {
  int64_t query_len = 1;  // new tokens of this sequence in this step (>= 1)
  int64_t context = 0;    // tokens already in the cache before this step (>= 0)
};

struct BatchSpec {
  // One entry per decode sequence: its length after this step, counting its new tokens
  // (>= decode_query_len); the positions before them are earlier context already in the cache.
  std::vector<int64_t> decode_lens;
  // Query tokens of every decode: 1, or more with multi-token prediction (MTP) / speculative
  // decoding, where they are the last decode_query_len positions, causal among themselves.
  int64_t decode_query_len = 1;
  std::vector<PrefillSpec> prefills;
  int64_t t_pad = 0;  // token rows of every buffer; 0 means n (no padding); else >= n
  uint64_t seed = 0;
  // Poison what no op may read or write: NaN in cache rows past each sequence's end and in the
  // rows the step is about to write, NaN in padded token rows, and out-of-range page ids in unused
  // block-table slots. A correct backend's results do not change.
  bool poison = false;
};

// Inputs of one layer (host tensors; token-dim tensors hold T_pad rows, rows >= n are padding).
struct LayerBatch {
  Tensor q;            // [T_pad, H, P+R] bf16, ~N(0, 1)
  Tensor kv_c_normed;  // [T_pad, L] bf16, ~N(0, 1) (an RMSNorm output)
  Tensor k_pe;         // [T_pad, 1, R] bf16, ~N(0, 1)
  Tensor kv_cache;     // [num_pages, page_size, L+R] bf16, earlier context ~N(0, 1)
};

struct Batch {
  int64_t num_tokens = 0;  // n: real tokens (decodes, then prefill tokens)
  int64_t t_pad = 0;       // rows of every token-dim buffer
  int64_t num_pages = 0;
  AttentionMetadata meta;  // host tensors, shared by all layers (slot_mapping has T_pad entries)
  std::vector<LayerBatch> layers;

  // Graph inputs by name: "layers.{i}.q", ".kv_c_normed", ".k_pe", ".kv_cache".
  std::map<std::string, Tensor> graph_inputs() const;
};

// Throws mlafuse::Error naming the bad field (lengths shorter than their query tokens, negative
// context, t_pad < n, no sequences).
Batch make_batch(const MlaConfig& cfg, int64_t num_layers, const BatchSpec& spec);

// Graph input names of layer i (as models/mla_block.h names them).
std::string layer_input_name(int64_t layer, const char* what);  // "layers.{i}.{what}"

}  // namespace mlafuse::models
