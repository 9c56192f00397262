#include "mlafuse/mla/attention_metadata.h"

#include "mlafuse/core/error.h"

namespace mlafuse {
namespace {

const int32_t* i32(const Tensor& t) { return t.data<int32_t>(); }

void check_meta_tensor(const Tensor& t, const char* name, Device device) {
  MLAFUSE_CHECK(t.defined(), "attention metadata: ", name, " is absent");
  check_dtype(t, name, DType::kI32);
  check_device(t, name, device);
  MLAFUSE_CHECK(t.is_contiguous() && t.offset() == 0, "attention metadata: ", name,
                " must be a contiguous ", device == Device::kCpu ? "host" : device_name(device),
                " tensor, got ", t.str());
}

// Page ids and slots must address the cache.
void check_against_cache(const AttentionMetadata& m, int64_t n, const PagedCacheExtent& cache) {
  MLAFUSE_CHECK(cache.page_size == m.page_size, "attention metadata page_size ", m.page_size,
                " differs from the page size ", cache.page_size, " of ", cache.name);
  const int32_t* lens = i32(m.seq_lens);
  const int32_t* bt = i32(m.block_table);
  const int32_t* slots = i32(m.slot_mapping);
  const int64_t cols = m.block_table.dim(1);
  for (int64_t i = 0; i < m.num_seqs(); ++i) {
    for (int64_t j = 0; j * cache.page_size < lens[i]; ++j) {
      const int32_t p = bt[i * cols + j];
      MLAFUSE_CHECK(p >= 0 && p < cache.num_pages, "block_table[", i, ", ", j, "] = ", p,
                    " is outside the ", cache.num_pages, " pages of ", cache.name);
    }
  }
  const int64_t num_slots = cache.num_pages * cache.page_size;
  for (int64_t t = 0; t < n; ++t) {
    MLAFUSE_CHECK(slots[t] >= -1 && slots[t] < num_slots, "slot_mapping[", t, "] = ", slots[t],
                  " is outside the ", num_slots, " slots of ", cache.name);
  }
}

}  // namespace

void check_attention_metadata_tensors(const AttentionMetadata& m, Device device) {
  const int64_t s = m.num_seqs(), n = m.num_tokens();
  check_meta_tensor(m.seq_lens, "seq_lens", device);
  check_meta_tensor(m.query_start_loc, "query_start_loc", device);
  check_meta_tensor(m.block_table, "block_table", device);
  check_meta_tensor(m.slot_mapping, "slot_mapping", device);
  check_shape(m.seq_lens, "seq_lens", {s});
  check_shape(m.query_start_loc, "query_start_loc", {s + 1});
  check_rank(m.block_table, "block_table", 2);
  MLAFUSE_CHECK(m.block_table.dim(0) == s && m.block_table.dim(1) >= 1,
                "tensor block_table: expected [", s, ", max_pages >= 1], got ",
                m.block_table.str());
  check_rank(m.slot_mapping, "slot_mapping", 1);
  MLAFUSE_CHECK(m.slot_mapping.dim(0) >= n, "tensor slot_mapping: expected at least ", n,
                " entries (one per token), got ", m.slot_mapping.str());
}

int64_t validate_attention_metadata(const AttentionMetadata& m, MetadataForm form,
                                    const PagedCacheExtent* cache) {
  const bool padded = form == MetadataForm::kPadded;
  MLAFUSE_CHECK(m.num_decodes >= 0 && m.num_decode_tokens >= 0 && m.num_prefills >= 0 &&
                    m.num_prefill_tokens >= 0,
                "attention metadata: negative counts (num_decodes ", m.num_decodes,
                ", num_decode_tokens ", m.num_decode_tokens, ", num_prefills ", m.num_prefills,
                ", num_prefill_tokens ", m.num_prefill_tokens, ")");
  MLAFUSE_CHECK(m.max_decode_query_len >= 0, "attention metadata: max_decode_query_len ",
                m.max_decode_query_len, " is negative (0: not given)");
  MLAFUSE_CHECK(
      padded || m.num_decode_tokens >= m.num_decodes, "attention metadata: ", m.num_decodes,
      " decodes need at least as many tokens, got num_decode_tokens ", m.num_decode_tokens);
  const int64_t s = m.num_seqs(), n = m.num_tokens();
  MLAFUSE_CHECK(padded || (s >= 1 && n >= 1),
                "attention metadata: the batch has no sequences or no tokens");
  MLAFUSE_CHECK(m.num_prefills == 0 || m.num_prefill_tokens >= m.num_prefills,
                "attention metadata: ", m.num_prefills,
                " prefills need at least as many tokens, got ", m.num_prefill_tokens);
  MLAFUSE_CHECK(m.page_size >= 1, "attention metadata: page_size must be >= 1, got ", m.page_size);
  check_attention_metadata_tensors(m, Device::kCpu);
  const int32_t* qsl = i32(m.query_start_loc);
  const int32_t* lens = i32(m.seq_lens);
  MLAFUSE_CHECK(qsl[0] == 0, "query_start_loc[0] must be 0, got ", qsl[0]);
  for (int64_t i = 0; i < s; ++i) {
    const int64_t q = static_cast<int64_t>(qsl[i + 1]) - qsl[i];
    const bool decode = i < m.num_decodes;
    // A padding decode has length 0 and one query token or none; every other sequence has query
    // tokens, and they are part of its length.
    if (padded && decode && lens[i] == 0) {
      MLAFUSE_CHECK(q == 0 || q == 1, "padding decode ", i, " (seq_lens 0) has ", q,
                    " query tokens in query_start_loc; expected 0 or 1");
    } else {
      MLAFUSE_CHECK(q >= 1, decode ? "decode" : "prefill", " sequence ", i, " has ", q,
                    " query tokens in query_start_loc");
      MLAFUSE_CHECK(lens[i] >= q, "sequence ", i, ": seq_lens ", lens[i], " is shorter than its ",
                    q, " query tokens");
    }
    const bool within = !decode || m.max_decode_query_len == 0 || q <= m.max_decode_query_len;
    MLAFUSE_CHECK(within, "decode ", i, " has ", q,
                  " query tokens in query_start_loc, more than max_decode_query_len ",
                  m.max_decode_query_len);
    MLAFUSE_CHECK(lens[i] <= m.block_table.dim(1) * m.page_size, "sequence ", i, ": seq_lens ",
                  lens[i], " needs more than the ", m.block_table.dim(1), " pages of block_table ",
                  m.block_table.str());
  }
  MLAFUSE_CHECK(qsl[m.num_decodes] == m.num_decode_tokens, "query_start_loc[", m.num_decodes,
                "] is ", qsl[m.num_decodes], " but the metadata counts ", m.num_decode_tokens,
                " decode tokens (num_decode_tokens)");
  MLAFUSE_CHECK(qsl[s] == n, "query_start_loc[", s, "] is ", qsl[s], " but the metadata counts ", n,
                " tokens (num_decode_tokens + num_prefill_tokens)");
  if (cache != nullptr) check_against_cache(m, n, *cache);
  return n;
}

}  // namespace mlafuse
