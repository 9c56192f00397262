#include "mlafuse/models/batch.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <set>

#include "mlafuse/core/error.h"
#include "mlafuse/quant/codecs.h"

namespace mlafuse::models {
namespace {

MlaConfig small_config() {
  MlaConfig c;
  c.num_heads = 4;
  c.qk_nope_dim = 32;
  c.qk_rope_dim = 16;
  c.v_head_dim = 32;
  c.kv_lora_rank = 64;
  c.hidden = 128;
  c.page_size = 16;
  return c;
}

std::vector<int32_t> ints(const Tensor& t) {
  return std::vector<int32_t>(t.data<int32_t>(), t.data<int32_t>() + t.numel());
}

bool bf16_is_nan(uint16_t b) { return std::isnan(bf16_bits_to_f32(b)); }

TEST(Batch, MetadataOfAMixedBatch) {
  const MlaConfig cfg = small_config();
  BatchSpec spec;
  spec.decode_lens = {1, 17, 40};
  spec.prefills = {{5, 0}, {3, 30}};
  spec.t_pad = 16;
  spec.seed = 5;
  const Batch b = make_batch(cfg, 2, spec);
  EXPECT_EQ(b.num_tokens, 3 + 5 + 3);
  EXPECT_EQ(b.t_pad, 16);
  EXPECT_EQ(b.meta.num_decodes, 3);
  EXPECT_EQ(b.meta.num_prefills, 2);
  EXPECT_EQ(b.meta.num_prefill_tokens, 8);
  EXPECT_EQ(b.meta.num_tokens(), 11);
  EXPECT_EQ(ints(b.meta.seq_lens), (std::vector<int32_t>{1, 17, 40, 5, 33}));
  EXPECT_EQ(ints(b.meta.query_start_loc), (std::vector<int32_t>{0, 1, 2, 3, 8, 11}));
  // Pages: 1 + 2 + 3 + 1 + 3 = 10, each used once, a permutation of 0..9.
  EXPECT_EQ(b.num_pages, 10);
  ASSERT_EQ(b.meta.block_table.shape(), (std::vector<int64_t>{5, 3}));
  const std::vector<int32_t> bt = ints(b.meta.block_table);
  const int64_t pages_of[5] = {1, 2, 3, 1, 3};
  std::set<int32_t> used;
  for (int64_t s = 0; s < 5; ++s) {
    for (int64_t j = 0; j < pages_of[s]; ++j) used.insert(bt[s * 3 + j]);
  }
  EXPECT_EQ(used.size(), 10u);
  EXPECT_EQ(*used.begin(), 0);
  EXPECT_EQ(*used.rbegin(), 9);
  bool identity = true;
  for (int64_t j = 0; j < 3; ++j) identity &= bt[2 * 3 + j] == 3 + j;
  EXPECT_FALSE(identity && bt[0] == 0) << "pages should be permuted";
  // Slots: each new token sits at the last positions of its sequence; padding is -1.
  const std::vector<int32_t> slots = ints(b.meta.slot_mapping);
  ASSERT_EQ(slots.size(), 16u);
  auto slot = [&](int64_t s, int64_t pos) { return bt[s * 3 + pos / 16] * 16 + pos % 16; };
  EXPECT_EQ(slots[0], slot(0, 0));
  EXPECT_EQ(slots[1], slot(1, 16));
  EXPECT_EQ(slots[2], slot(2, 39));
  for (int64_t j = 0; j < 5; ++j) EXPECT_EQ(slots[3 + j], slot(3, j));
  for (int64_t j = 0; j < 3; ++j) EXPECT_EQ(slots[8 + j], slot(4, 30 + j));
  for (int64_t t = 11; t < 16; ++t) EXPECT_EQ(slots[t], -1);
  // Shapes and dtypes of the layer inputs.
  ASSERT_EQ(b.layers.size(), 2u);
  EXPECT_EQ(b.layers[0].q.shape(), (std::vector<int64_t>{16, 4, 48}));
  EXPECT_EQ(b.layers[0].kv_c_normed.shape(), (std::vector<int64_t>{16, 64}));
  EXPECT_EQ(b.layers[0].k_pe.shape(), (std::vector<int64_t>{16, 1, 16}));
  EXPECT_EQ(b.layers[0].kv_cache.shape(), (std::vector<int64_t>{10, 16, 80}));
  EXPECT_EQ(b.layers[1].q.dtype(), DType::kBF16);
  const auto inputs = b.graph_inputs();
  EXPECT_EQ(inputs.size(), 8u);
  EXPECT_TRUE(inputs.count("layers.1.kv_cache"));
  EXPECT_TRUE(inputs.count("layers.0.k_pe"));
}

TEST(Batch, CacheHoldsEarlierContextOnly) {
  const MlaConfig cfg = small_config();
  BatchSpec spec;
  spec.decode_lens = {20};
  spec.prefills = {{4, 10}};
  const Batch b = make_batch(cfg, 1, spec);
  const uint16_t* cache = b.layers[0].kv_cache.data<uint16_t>();
  const std::vector<int32_t> bt = ints(b.meta.block_table);
  const int64_t row = cfg.cache_row(), mp = b.meta.block_table.dim(1);
  auto row_at = [&](int64_t s, int64_t pos) {
    return cache + (bt[s * mp + pos / 16] * 16 + pos % 16) * row;
  };
  auto nonzero = [&](const uint16_t* r) {
    for (int64_t e = 0; e < row; ++e) {
      if (r[e] != 0) return true;
    }
    return false;
  };
  for (int64_t pos = 0; pos < 19; ++pos) EXPECT_TRUE(nonzero(row_at(0, pos))) << pos;
  EXPECT_FALSE(nonzero(row_at(0, 19)));  // the new token: written by the op
  for (int64_t pos = 0; pos < 10; ++pos) EXPECT_TRUE(nonzero(row_at(1, pos))) << pos;
  for (int64_t pos = 10; pos < 16; ++pos) EXPECT_FALSE(nonzero(row_at(1, pos))) << pos;
  // Activations are O(1): standard deviation near 1.
  const Tensor& q = b.layers[0].q;
  double sq = 0;
  for (int64_t i = 0; i < q.numel(); ++i) {
    const double v = bf16_bits_to_f32(q.data<uint16_t>()[i]);
    sq += v * v;
  }
  EXPECT_NEAR(std::sqrt(sq / q.numel()), 1.0, 0.05);
}

TEST(Batch, PoisonMarksWhatNoOpMayTouch) {
  const MlaConfig cfg = small_config();
  BatchSpec spec;
  spec.decode_lens = {3, 40};
  spec.t_pad = 4;
  spec.poison = true;
  const Batch b = make_batch(cfg, 1, spec);
  const LayerBatch& l = b.layers[0];
  for (int64_t t = 2; t < 4; ++t) {
    EXPECT_TRUE(bf16_is_nan(l.q.data<uint16_t>()[t * 4 * 48]));
    EXPECT_TRUE(bf16_is_nan(l.kv_c_normed.data<uint16_t>()[t * 64 + 63]));
  }
  EXPECT_FALSE(bf16_is_nan(l.q.data<uint16_t>()[1 * 4 * 48 + 5]));
  const std::vector<int32_t> bt = ints(b.meta.block_table);
  EXPECT_GT(bt[1], 1000000);  // sequence 0 uses one page of the three columns
  EXPECT_GT(bt[2], 1000000);
  const uint16_t* cache = l.kv_cache.data<uint16_t>();
  const int64_t row = cfg.cache_row();
  EXPECT_FALSE(bf16_is_nan(cache[(bt[0] * 16 + 1) * row]));  // earlier context
  EXPECT_TRUE(bf16_is_nan(cache[(bt[0] * 16 + 2) * row]));   // the new token's slot
  EXPECT_TRUE(bf16_is_nan(cache[(bt[0] * 16 + 3) * row]));   // past the end
}

TEST(Batch, DeterministicBySeed) {
  const MlaConfig cfg = small_config();
  BatchSpec spec;
  spec.decode_lens = {7, 70};
  spec.prefills = {{6, 3}};
  spec.seed = 9;
  const Batch a = make_batch(cfg, 1, spec), b = make_batch(cfg, 1, spec);
  spec.seed = 10;
  const Batch c = make_batch(cfg, 1, spec);
  auto same = [](const Tensor& x, const Tensor& y) {
    return x.shape() == y.shape() &&
           std::memcmp(x.raw(), y.raw(), x.numel() * dtype_size(x.dtype())) == 0;
  };
  EXPECT_TRUE(same(a.layers[0].q, b.layers[0].q));
  EXPECT_TRUE(same(a.layers[0].kv_cache, b.layers[0].kv_cache));
  EXPECT_TRUE(same(a.meta.block_table, b.meta.block_table));
  EXPECT_FALSE(same(a.layers[0].q, c.layers[0].q));
  EXPECT_FALSE(same(a.layers[0].kv_cache, c.layers[0].kv_cache));
}

TEST(Batch, BadSpecsAreNamed) {
  const MlaConfig cfg = small_config();
  BatchSpec spec;
  EXPECT_THROW(make_batch(cfg, 1, spec), Error);  // no sequences
  spec.decode_lens = {0};
  try {
    make_batch(cfg, 1, spec);
    FAIL() << "no throw";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("decode sequence 0"), std::string::npos) << e.what();
  }
  spec.decode_lens = {4, 4};
  spec.t_pad = 1;
  EXPECT_THROW(make_batch(cfg, 1, spec), Error);
  spec.t_pad = 0;
  spec.prefills = {{0, 3}};
  EXPECT_THROW(make_batch(cfg, 1, spec), Error);
  spec.prefills = {{2, -1}};
  EXPECT_THROW(make_batch(cfg, 1, spec), Error);
  // Lengths past the int32 metadata are named, not wrapped.
  spec.prefills = {{2, int64_t{1} << 31}};
  EXPECT_THROW(make_batch(cfg, 1, spec), Error);
  spec.prefills.clear();
  spec.decode_lens = {int64_t{1} << 31};
  EXPECT_THROW(make_batch(cfg, 1, spec), Error);
  spec.decode_lens = {int64_t{1} << 30, int64_t{1} << 30, int64_t{1} << 30};  // 3 * 2^30 slots
  EXPECT_THROW(make_batch(cfg, 1, spec), Error);
  // Multi-token decodes: each must hold its query tokens; the count must be >= 1.
  spec.decode_lens = {3, 1};
  spec.decode_query_len = 2;
  try {
    make_batch(cfg, 1, spec);
    FAIL() << "no throw";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("decode sequence 1"), std::string::npos) << e.what();
  }
  spec.decode_query_len = 0;
  EXPECT_THROW(make_batch(cfg, 1, spec), Error);
}

// MTP / speculative decoding: every decode's query tokens are its last positions.
TEST(Batch, MultiTokenDecodes) {
  const MlaConfig cfg = small_config();
  BatchSpec spec;
  spec.decode_lens = {2, 17};
  spec.decode_query_len = 2;
  spec.prefills = {{3, 4}};
  spec.t_pad = 8;
  spec.seed = 6;
  const Batch b = make_batch(cfg, 1, spec);
  EXPECT_EQ(b.num_tokens, 2 * 2 + 3);
  EXPECT_EQ(b.meta.num_decodes, 2);
  EXPECT_EQ(b.meta.num_decode_tokens, 4);
  EXPECT_EQ(b.meta.num_prefill_tokens, 3);
  EXPECT_EQ(b.meta.num_tokens(), 7);
  EXPECT_EQ(ints(b.meta.query_start_loc), (std::vector<int32_t>{0, 2, 4, 7}));
  EXPECT_EQ(validate_attention_metadata(b.meta, MetadataForm::kStep), 7);
  const std::vector<int32_t> bt = ints(b.meta.block_table);
  const int64_t cols = b.meta.block_table.dim(1);
  const std::vector<int32_t> slots = ints(b.meta.slot_mapping);
  auto slot = [&](int64_t s, int64_t pos) { return bt[s * cols + pos / 16] * 16 + pos % 16; };
  EXPECT_EQ(slots[0], slot(0, 0));
  EXPECT_EQ(slots[1], slot(0, 1));
  EXPECT_EQ(slots[2], slot(1, 15));
  EXPECT_EQ(slots[3], slot(1, 16));
  for (int64_t j = 0; j < 3; ++j) EXPECT_EQ(slots[4 + j], slot(2, 4 + j));
  EXPECT_EQ(slots[7], -1);
}

}  // namespace
}  // namespace mlafuse::models
