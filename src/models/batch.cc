#include "mlafuse/models/batch.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <numeric>

#include "mlafuse/core/error.h"
#include "mlafuse/quant/codecs.h"
#include "mlafuse/quant/scale_layout.h"
#include "random.h"

namespace mlafuse::models {
namespace {

// Random streams (weights use purposes < 2^8 per layer shifted by 8; batches use a high tag).
constexpr uint64_t kBatchTag = 0xba7c000000000000ull;
enum : uint64_t { kPages = 1, kQ = 2, kKvC = 3, kKPe = 4, kCache = 5 };
uint64_t purpose(int64_t layer, uint64_t what) {
  return kBatchTag | (static_cast<uint64_t>(layer) << 8) | what;
}

const uint16_t kBf16NaN = f32_to_bf16_bits(std::numeric_limits<float>::quiet_NaN());

// Fills rows [0, n) of a bf16 tensor of `row` elements per token with N(0, 1); padding rows get
// NaN when poisoned (they were zero-initialised otherwise).
void fill_token_rows(Tensor& t, int64_t n, int64_t row, bool poison, detail::Rng rng) {
  uint16_t* p = t.data<uint16_t>();
  for (int64_t i = 0; i < n * row; ++i) p[i] = f32_to_bf16_bits(rng.normal());
  if (poison) std::fill(p + n * row, p + t.numel(), kBf16NaN);
}

}  // namespace

std::string layer_input_name(int64_t layer, const char* what) {
  return "layers." + std::to_string(layer) + "." + what;
}

std::map<std::string, Tensor> Batch::graph_inputs() const {
  std::map<std::string, Tensor> m;
  for (size_t i = 0; i < layers.size(); ++i) {
    const int64_t li = static_cast<int64_t>(i);
    m[layer_input_name(li, "q")] = layers[i].q;
    m[layer_input_name(li, "kv_c_normed")] = layers[i].kv_c_normed;
    m[layer_input_name(li, "k_pe")] = layers[i].k_pe;
    m[layer_input_name(li, "kv_cache")] = layers[i].kv_cache;
  }
  return m;
}

Batch make_batch(const MlaConfig& cfg, int64_t num_layers, const BatchSpec& spec) {
  cfg.validate();
  MLAFUSE_CHECK(num_layers >= 1, "make_batch: num_layers must be >= 1, got ", num_layers);
  MLAFUSE_CHECK(!spec.decode_lens.empty() || !spec.prefills.empty(),
                "make_batch: the batch has no sequences (give decode lengths or prefills)");
  // The metadata is int32 (seq_lens, query_start_loc, block_table, slot_mapping): lengths, token
  // counts and slots past this would wrap silently.
  constexpr int64_t kMaxI32 = std::numeric_limits<int32_t>::max();
  // Per sequence: length after the step and new tokens in it.
  std::vector<int64_t> seq_len, new_tokens;
  const int64_t dq = spec.decode_query_len;
  MLAFUSE_CHECK(dq >= 1 && dq <= kMaxI32, "make_batch: decode_query_len must be in [1, ", kMaxI32,
                "], got ", dq);
  for (size_t i = 0; i < spec.decode_lens.size(); ++i) {
    MLAFUSE_CHECK(spec.decode_lens[i] >= dq && spec.decode_lens[i] <= kMaxI32, "decode sequence ",
                  i, ": length must be in [", dq, ", ", kMaxI32, "] (it counts the ", dq,
                  " new tokens), got ", spec.decode_lens[i]);
    seq_len.push_back(spec.decode_lens[i]);
    new_tokens.push_back(dq);
  }
  const int64_t decode_tokens = static_cast<int64_t>(spec.decode_lens.size()) * dq;
  MLAFUSE_CHECK(decode_tokens <= kMaxI32, "make_batch: ", spec.decode_lens.size(), " decodes of ",
                dq, " tokens exceed the int32 range of query_start_loc");
  int64_t prefill_tokens = 0;
  for (size_t i = 0; i < spec.prefills.size(); ++i) {
    const PrefillSpec& p = spec.prefills[i];
    MLAFUSE_CHECK(p.query_len >= 1, "prefill ", i, ": query length must be >= 1, got ",
                  p.query_len);
    MLAFUSE_CHECK(p.context >= 0, "prefill ", i, ": context must be >= 0, got ", p.context);
    MLAFUSE_CHECK(p.query_len <= kMaxI32 - p.context, "prefill ", i, ": context ", p.context,
                  " + query length ", p.query_len, " exceeds ", kMaxI32);
    seq_len.push_back(p.context + p.query_len);
    new_tokens.push_back(p.query_len);
    prefill_tokens += p.query_len;
  }
  const int64_t num_seqs = static_cast<int64_t>(seq_len.size());
  const int64_t n = decode_tokens + prefill_tokens;
  const int64_t t_pad = spec.t_pad == 0 ? n : spec.t_pad;
  MLAFUSE_CHECK(t_pad >= n, "make_batch: t_pad ", spec.t_pad, " is smaller than the ", n,
                " tokens of the batch");
  const int64_t page = cfg.page_size, row = cfg.cache_row();

  Batch b;
  b.num_tokens = n;
  b.t_pad = t_pad;
  AttentionMetadata& m = b.meta;
  m.num_decodes = static_cast<int64_t>(spec.decode_lens.size());
  m.num_decode_tokens = decode_tokens;
  m.max_decode_query_len = dq;
  m.num_prefills = static_cast<int64_t>(spec.prefills.size());
  m.num_prefill_tokens = prefill_tokens;
  m.page_size = page;

  // Pages: each sequence owns ceil(len / page) of them, at randomly permuted page ids.
  std::vector<int64_t> pages_of(static_cast<size_t>(num_seqs));
  int64_t max_pages = 1;
  for (int64_t s = 0; s < num_seqs; ++s) {
    pages_of[s] = ceil_div(seq_len[s], page);
    b.num_pages += pages_of[s];
    max_pages = std::max(max_pages, pages_of[s]);
  }
  // Every token has a slot, so this bounds the token count and query_start_loc too.
  MLAFUSE_CHECK(b.num_pages * page <= kMaxI32, "make_batch: ", b.num_pages, " pages of ", page,
                " tokens exceed the int32 range of slot_mapping");
  std::vector<int32_t> perm(static_cast<size_t>(b.num_pages));
  std::iota(perm.begin(), perm.end(), 0);
  detail::Rng page_rng(spec.seed, purpose(0, kPages));
  for (size_t i = perm.size(); i > 1; --i) std::swap(perm[i - 1], perm[page_rng.below(i)]);

  m.seq_lens = Tensor::empty(DType::kI32, {num_seqs});
  m.query_start_loc = Tensor::empty(DType::kI32, {num_seqs + 1});
  m.block_table = Tensor::empty(DType::kI32, {num_seqs, max_pages});
  m.slot_mapping = Tensor::empty(DType::kI32, {t_pad});
  int32_t* lens = m.seq_lens.data<int32_t>();        // [num_seqs]
  int32_t* qsl = m.query_start_loc.data<int32_t>();  // [num_seqs + 1]
  int32_t* bt = m.block_table.data<int32_t>();       // [num_seqs, max_pages]
  int32_t* slots = m.slot_mapping.data<int32_t>();   // [T_pad]
  // Unused block-table slots: page 0 normally (as engines leave them); poisoned, an id far past
  // the cache so a backend that reads one fails loudly.
  const int32_t unused = spec.poison ? std::numeric_limits<int32_t>::max() / 2 : 0;
  std::fill(bt, bt + num_seqs * max_pages, unused);
  std::fill(slots, slots + t_pad, -1);
  int64_t next_page = 0, tok = 0;
  qsl[0] = 0;
  for (int64_t s = 0; s < num_seqs; ++s) {
    lens[s] = static_cast<int32_t>(seq_len[s]);
    for (int64_t j = 0; j < pages_of[s]; ++j) bt[s * max_pages + j] = perm[next_page++];
    // New tokens occupy the last new_tokens[s] positions of the sequence.
    for (int64_t pos = seq_len[s] - new_tokens[s]; pos < seq_len[s]; ++pos) {
      slots[tok++] = static_cast<int32_t>(bt[s * max_pages + pos / page] * page + pos % page);
    }
    qsl[s + 1] = static_cast<int32_t>(tok);
  }

  const int64_t h = cfg.num_heads, l = cfg.kv_lora_rank, r = cfg.qk_rope_dim;
  for (int64_t i = 0; i < num_layers; ++i) {
    LayerBatch lb;
    lb.q = Tensor::empty(DType::kBF16, {t_pad, h, cfg.qk_head_dim()});
    lb.kv_c_normed = Tensor::empty(DType::kBF16, {t_pad, l});
    lb.k_pe = Tensor::empty(DType::kBF16, {t_pad, 1, r});
    lb.kv_cache = Tensor::empty(DType::kBF16, {b.num_pages, page, row});
    fill_token_rows(lb.q, n, h * cfg.qk_head_dim(), spec.poison, {spec.seed, purpose(i, kQ)});
    fill_token_rows(lb.kv_c_normed, n, l, spec.poison, {spec.seed, purpose(i, kKvC)});
    fill_token_rows(lb.k_pe, n, r, spec.poison, {spec.seed, purpose(i, kKPe)});
    uint16_t* cache = lb.kv_cache.data<uint16_t>();  // [num_pages, page, L+R] bf16
    if (spec.poison) std::fill(cache, cache + lb.kv_cache.numel(), kBf16NaN);
    detail::Rng rng(spec.seed, purpose(i, kCache));
    for (int64_t s = 0; s < num_seqs; ++s) {
      const int64_t earlier = seq_len[s] - new_tokens[s];
      for (int64_t pos = 0; pos < earlier; ++pos) {
        uint16_t* dst = cache + (bt[s * max_pages + pos / page] * page + pos % page) * row;
        for (int64_t e = 0; e < row; ++e) dst[e] = f32_to_bf16_bits(rng.normal());
      }
    }
    b.layers.push_back(std::move(lb));
  }
  return b;
}

}  // namespace mlafuse::models
