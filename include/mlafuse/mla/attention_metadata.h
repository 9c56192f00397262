// Per-step attention metadata and its one validator. Every consumer (the executor on the caller's
// batch, each backend on what it is handed) checks metadata here, so a rule about block tables,
// lengths or slots is written once.
#pragma once

#include <cstdint>
#include <string_view>

#include "mlafuse/core/tensor.h"

namespace mlafuse {

// Per-step attention metadata (vLLM's "forward context"). Sequences are ordered decode first,
// then prefill. A decode has one query token, or a few with multi-token prediction (MTP) and
// speculative decoding; its tokens take the absorbed latent path, causal among themselves. Tensors
// live on the device of the backend that reads them.
struct AttentionMetadata {
  int64_t num_decodes = 0;          // decode sequences, which come first
  int64_t num_decode_tokens = 0;    // their query tokens (== num_decodes when each has one)
  // Most query tokens of one decode (vLLM's decode query length; 1 without MTP), or 0: not given,
  // then counted as one when num_decode_tokens == num_decodes, else more (one_token_decodes).
  // Fixed over the steps one CUDA graph replays; it picks the decode kernels' schedule.
  int64_t max_decode_query_len = 0;
  int64_t num_prefills = 0;         // prefill sequences
  int64_t num_prefill_tokens = 0;
  int64_t page_size = 64;
  Tensor seq_lens;         // [num_seqs] i32: cached length after this step's cache write
  Tensor query_start_loc;  // [num_seqs + 1] i32: token range of each sequence in the batch
  Tensor block_table;      // [num_seqs, max_pages_per_seq] i32: page ids; unused slots arbitrary
  Tensor slot_mapping;     // [T_pad] i32: cache slot of each token (page * page_size + offset); -1 skips

  int64_t num_seqs() const { return num_decodes + num_prefills; }
  // Every decode holds at most one query token (the decode kernels' schedule without token units).
  bool one_token_decodes() const {
    return max_decode_query_len > 0 ? max_decode_query_len == 1 : num_decode_tokens == num_decodes;
  }
  int64_t num_tokens() const { return num_decode_tokens + num_prefill_tokens; }
};

// Which metadata is being checked. A caller's step has at least one sequence and every sequence
// holds its query tokens; a bucket's padded copy (decodes padded to T_pad for a CUDA graph, as a
// backend receives it) also has padding decodes of length 0 with one query token or none.
enum class MetadataForm { kStep, kPadded };

// The paged cache the metadata addresses; `name` names it in messages.
struct PagedCacheExtent {
  int64_t num_pages = 0;
  int64_t page_size = 0;
  std::string_view name;
};

// Checks host metadata and returns n, its token count: counts, i32 contiguous host tensors of
// consistent shapes, query ranges, lengths that fit block_table and, given `cache`, the page size,
// page ids and slots inside the cache (a replayed graph runs without a backend's checks, and a
// kernel must never read a page outside the cache). Throws mlafuse::Error naming the problem.
int64_t validate_attention_metadata(const AttentionMetadata& m, MetadataForm form,
                                    const PagedCacheExtent* cache = nullptr);

// The tensors alone: present, i32, on `device`, contiguous, shapes consistent with the counts.
// Reads no values, so it also checks a backend's device copy.
void check_attention_metadata_tensors(const AttentionMetadata& m, Device device);

}  // namespace mlafuse
