// One fuzz input for the attention-metadata validator: bytes decoded into a step's metadata, and
// the properties checked on it. Shared by fuzz/metadata_fuzzer.cc and the corpus replay in
// tests/cpu/metadata_fuzz_corpus_test.cc, so both check the same thing.
//
// Properties: validate_attention_metadata fails only with mlafuse::Error; metadata it accepts
// addresses only pages and slots inside the cache for every token (checked here independently of
// the validator); and metadata it accepts as a caller's step runs through the CPU reference op
// (cache write, absorbed decode, expanded prefill) without an error, where ASan sees every read.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <string_view>

#include "mlafuse/backends/cpu/reference.h"
#include "mlafuse/core/error.h"
#include "mlafuse/core/mla_config.h"
#include "mlafuse/mla/attention_metadata.h"

namespace mlafuse::fuzzing {

struct MetadataInput {
  AttentionMetadata meta;
  MetadataForm form = MetadataForm::kStep;
  int64_t num_pages = 1;
  int64_t t_pad = 0;
};

// Layout: 8 header bytes, then one i32 per byte pair (int16 little endian; 0x7fff and 0x8000 stand
// for the int32 extremes), missing bytes reading as 0. Header: decodes, their tokens, prefills,
// their tokens, page size and block-table width, pages, padding rows and form, and a byte that
// bends one tensor's shape (so the shape checks are fuzzed too).
inline MetadataInput decode_metadata_input(std::string_view bytes) {
  size_t pos = 0;
  auto byte = [&]() -> uint8_t {
    return pos < bytes.size() ? static_cast<uint8_t>(bytes[pos++]) : uint8_t{0};
  };
  auto value = [&]() -> int32_t {
    const uint8_t lo = byte(), hi = byte();
    const auto v = static_cast<int16_t>(static_cast<uint16_t>(lo | (hi << 8)));
    if (v == std::numeric_limits<int16_t>::max()) return std::numeric_limits<int32_t>::max();
    if (v == std::numeric_limits<int16_t>::min()) return std::numeric_limits<int32_t>::min();
    return v;
  };
  MetadataInput in;
  AttentionMetadata& m = in.meta;
  m.num_decodes = byte() % 9;
  m.num_decode_tokens = byte() % 33;
  m.num_prefills = byte() % 5;
  m.num_prefill_tokens = byte() % 33;
  const uint8_t page = byte();
  constexpr int64_t kPages[4] = {1, 2, 4, 16};
  m.page_size = kPages[page % 4];
  const int64_t cols = 1 + (page >> 2) % 8;
  in.num_pages = 1 + byte() % 16;
  const uint8_t pad = byte();
  in.form = pad & 0x80 ? MetadataForm::kPadded : MetadataForm::kStep;
  in.t_pad = m.num_tokens() + pad % 8;
  const uint8_t bend = byte();
  const int64_t s = m.num_seqs();
  auto i32s = [&](int64_t count, int which) {  // `which`: the tensor `bend` may shorten
    const int64_t n = std::max<int64_t>(0, count - (bend % 5 == which + 1 ? 1 : 0));
    Tensor t = Tensor::empty(DType::kI32, {n});
    for (int64_t i = 0; i < n; ++i) t.data<int32_t>()[i] = value();
    return t;
  };
  m.seq_lens = i32s(s, 0);
  m.query_start_loc = i32s(s + 1, 1);
  const Tensor bt = i32s(s * cols, 2);
  m.block_table = bt.numel() == s * cols ? bt.view(DType::kI32, {s, cols}, {cols, 1})
                                         : bt.view(DType::kI32, {1, bt.numel()}, {bt.numel(), 1});
  m.slot_mapping = i32s(in.t_pad, 3);
  return in;
}

[[noreturn]] inline void finding(const char* what) {
  std::fprintf(stderr, "metadata fuzz finding: %s\n", what);
  std::abort();
}

// Runs the properties above; returns whether the validator accepted the metadata.
inline bool check_metadata_input(const MetadataInput& in) {
  const AttentionMetadata& m = in.meta;
  const PagedCacheExtent extent{in.num_pages, m.page_size, "kv_cache"};
  int64_t n = 0;
  try {
    n = validate_attention_metadata(m, in.form, &extent);
  } catch (const Error&) {
    return false;
  }
  // Every token's sequence, causal length and pages, as a kernel reads them.
  const int32_t* qsl = m.query_start_loc.data<int32_t>();
  const int32_t* lens = m.seq_lens.data<int32_t>();
  const int32_t* bt = m.block_table.data<int32_t>();
  const int64_t cols = m.block_table.dim(1);
  if (n != m.num_tokens() || qsl[m.num_seqs()] != n) finding("token count");
  if (qsl[m.num_decodes] != m.num_decode_tokens) finding("decode tokens");
  for (int64_t s = 0; s < m.num_seqs(); ++s) {
    if (qsl[s + 1] < qsl[s]) finding("query_start_loc decreases");
    for (int64_t t = qsl[s]; t < qsl[s + 1]; ++t) {
      const int64_t len = std::max<int64_t>(0, lens[s] - (qsl[s + 1] - 1 - t));
      if (len > cols * m.page_size) finding("length past the block table");
      for (int64_t j = 0; j * m.page_size < len; ++j) {
        if (bt[s * cols + j] < 0 || bt[s * cols + j] >= in.num_pages) finding("page outside");
      }
    }
  }
  const int32_t* slots = m.slot_mapping.data<int32_t>();
  for (int64_t t = 0; t < n; ++t) {
    if (slots[t] < -1 || slots[t] >= in.num_pages * m.page_size) finding("slot outside");
  }
  if (in.form != MetadataForm::kStep) return true;
  // A tiny MLA layer over the cache; every value 0 except the query, so scores are finite.
  MlaConfig cfg;
  cfg.num_heads = 1;
  cfg.qk_nope_dim = 2;
  cfg.qk_rope_dim = 2;
  cfg.v_head_dim = 2;
  cfg.kv_lora_rank = 4;
  cfg.page_size = m.page_size;
  auto zeros = [](DType d, std::vector<int64_t> shape) {
    Tensor t = Tensor::empty(d, std::move(shape));
    std::memset(t.raw(), 0, static_cast<size_t>(t.numel()) * dtype_size(d));
    return t;
  };
  const int64_t l = cfg.kv_lora_rank, r = cfg.qk_rope_dim;
  MlaLayerWeights w;
  w.w_uk_t = zeros(DType::kBF16, {1, cfg.qk_nope_dim, l});
  w.w_uv = zeros(DType::kBF16, {1, l, cfg.v_head_dim});
  w.kv_b_proj = zeros(DType::kBF16, {cfg.qk_nope_dim + cfg.v_head_dim, l});
  const Tensor q = zeros(DType::kBF16, {in.t_pad, 1, cfg.qk_nope_dim + r});
  const Tensor kv_c = zeros(DType::kBF16, {in.t_pad, l});
  const Tensor k_pe = zeros(DType::kBF16, {in.t_pad, 1, r});
  Tensor cache = zeros(DType::kBF16, {in.num_pages, m.page_size, l + r});
  try {
    ref::mla_attention_f32(q, kv_c, k_pe, cache, m, w, cfg, n);
  } catch (const Error& e) {
    std::fprintf(stderr, "%s\n", e.what());
    finding("the reference refused metadata the validator accepted");
  }
  return true;
}

}  // namespace mlafuse::fuzzing
