// The MLA reference (SPEC 4): absorbed decode == expanded form at f32 precision, split-KV merging
// == unsplit, lengths 0/1/63/64/65, heads 16 and 128, batches 1/7/256, the mixed decode+prefill
// op against a double-precision oracle over a poisoned paged cache, and bad inputs.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "cpu/mla_test_util.h"
#include "cpu/ref_test_util.h"
#include "mlafuse/backends/cpu/reference.h"
#include "mlafuse/quant/codecs.h"
#include "mlafuse/quant/scale_layout.h"

namespace mlafuse {
namespace {

using testing::ErrStats;
using testing::expect_error;
using testing::make_mixed;
using testing::make_paged;
using testing::MixedBatch;
using testing::PagedCache;
using testing::random_bf16;
using testing::random_weights;

MlaConfig small_config(int64_t heads, int64_t page_size) {
  MlaConfig c;
  c.num_heads = heads;
  c.qk_nope_dim = 32;
  c.qk_rope_dim = 16;
  c.v_head_dim = 32;
  c.kv_lora_rank = 64;
  c.hidden = 256;
  c.page_size = page_size;
  return c;
}

MlaConfig tiny_config(int64_t heads, int64_t page_size) {
  MlaConfig c;
  c.num_heads = heads;
  c.qk_nope_dim = 16;
  c.qk_rope_dim = 8;
  c.v_head_dim = 16;
  c.kv_lora_rank = 32;
  c.hidden = 128;
  c.page_size = page_size;
  return c;
}

MlaConfig deepseek_config(int64_t heads) {
  MlaConfig c;
  c.num_heads = heads;
  return c;
}

std::vector<double> values_of(const Tensor& t, int64_t begin, int64_t count) {
  std::vector<double> v(static_cast<size_t>(count));
  for (int64_t i = 0; i < count; ++i) v[static_cast<size_t>(i)] = testing::act_at(t, begin + i);
  return v;
}

// Rows [b, b+1) of q as a [1, H, P+R] tensor.
Tensor one_token(const Tensor& q, int64_t b) {
  return q.view(q.dtype(), {1, q.dim(1), q.dim(2)}, {q.dim(1) * q.dim(2), q.dim(2), 1},
                b * q.dim(1) * q.dim(2));
}

// ---- absorbed == expanded ----------------------------------------------------------------------
void check_absorbed_equals_expanded(const MlaConfig& cfg, const std::vector<int64_t>& lens,
                                    uint32_t seed, double tol) {
  const MlaLayerWeights w = random_weights(cfg, seed);
  const PagedCache pc = make_paged(lens, cfg.page_size, cfg.cache_row(), seed + 1);
  const int64_t b = static_cast<int64_t>(lens.size());
  const Tensor q = random_bf16({b, cfg.num_heads, cfg.qk_head_dim()}, seed + 2, 1.0f);
  // Absorbed, no bf16 rounding anywhere: f32 throughout.
  const Tensor q_cat = ref::mla_absorb_q_f32(q, w.w_uk_t);
  const Tensor o_lat = ref::mla_decode_latent(q_cat, pc.kv_cache, pc.block_table, pc.seq_lens,
                                              cfg.kv_lora_rank, cfg.scale());
  const Tensor absorbed = ref::mla_up_proj(o_lat, w.w_uv, false);  // [B, H*V]
  const int64_t hv = cfg.output_dim();
  const std::vector<double> kvb = testing::to_double(w.kv_b_proj);
  ErrStats abs_vs_exp, abs_vs_oracle, exp_vs_oracle;
  for (int64_t i = 0; i < b; ++i) {
    const int64_t len = lens[static_cast<size_t>(i)];
    if (len == 0) {
      for (int64_t k = 0; k < hv; ++k) EXPECT_EQ(absorbed.data<float>()[i * hv + k], 0.0f);
      continue;
    }
    const Tensor expanded = ref::mla_prefill_expanded(one_token(q, i), pc.kv_cache, pc.block_table,
                                                      i, len, w.kv_b_proj, cfg, false);
    for (int64_t h = 0; h < cfg.num_heads; ++h) {
      const auto qv = values_of(q, (i * cfg.num_heads + h) * cfg.qk_head_dim(), cfg.qk_head_dim());
      const auto want =
          testing::oracle_expanded(qv, pc.rows[static_cast<size_t>(i)], len - 1, kvb, h, cfg);
      for (int64_t k = 0; k < cfg.v_head_dim; ++k) {
        const double a = absorbed.data<float>()[i * hv + h * cfg.v_head_dim + k];
        const double e = expanded.data<float>()[h * cfg.v_head_dim + k];
        abs_vs_exp.add(a, e);
        abs_vs_oracle.add(a, want[static_cast<size_t>(k)]);
        exp_vs_oracle.add(e, want[static_cast<size_t>(k)]);
      }
    }
  }
  EXPECT_LE(abs_vs_exp.normalized(), tol)
      << "absorbed vs expanded, max err " << abs_vs_exp.max_abs_err;
  EXPECT_LE(abs_vs_oracle.normalized(), tol) << "absorbed vs double oracle";
  EXPECT_LE(exp_vs_oracle.normalized(), tol) << "expanded vs double oracle";
  EXPECT_GT(abs_vs_oracle.max_abs_ref, 1e-3) << "degenerate outputs prove nothing";
}

TEST(MlaReference, AbsorbedDecodeEqualsExpandedAtF32Precision) {
  for (int64_t page : {64, 7, 1}) {
    check_absorbed_equals_expanded(small_config(16, page), {0, 1, 63, 64, 65, 130, 2}, 10 + page,
                                   2e-6);
  }
}

TEST(MlaReference, AbsorbedEqualsExpandedAtDeepSeekDims) {
  check_absorbed_equals_expanded(deepseek_config(16), {65, 1}, 21, 2e-6);
}

// ---- split-KV --------------------------------------------------------------------------------
TEST(MlaReference, SplitKvMergeEqualsUnsplit) {
  const MlaConfig cfg = small_config(16, 64);
  const std::vector<int64_t> lens = {0, 1, 63, 64, 65, 200, 5};
  const MlaLayerWeights w = random_weights(cfg, 30);
  const PagedCache pc = make_paged(lens, cfg.page_size, cfg.cache_row(), 31);
  const int64_t b = static_cast<int64_t>(lens.size());
  const Tensor q_cat =
      ref::mla_absorb_q(random_bf16({b, cfg.num_heads, cfg.qk_head_dim()}, 32, 1.0f), w.w_uk_t);
  Tensor lse1;
  const Tensor o1 = ref::mla_decode_latent(q_cat, pc.kv_cache, pc.block_table, pc.seq_lens,
                                           cfg.kv_lora_rank, cfg.scale(), &lse1, 1);
  for (int64_t splits : {2, 3, 4, 7, 64, 300}) {
    Tensor lse;
    const Tensor o = ref::mla_decode_latent(q_cat, pc.kv_cache, pc.block_table, pc.seq_lens,
                                            cfg.kv_lora_rank, cfg.scale(), &lse, splits);
    ErrStats e;
    for (int64_t i = 0; i < o.numel(); ++i) e.add(o.data<float>()[i], o1.data<float>()[i]);
    EXPECT_LE(e.normalized(), 2e-6) << splits << " splits";
    for (int64_t i = 0; i < b * cfg.num_heads; ++i) {
      const float a = lse.data<float>()[i], want = lse1.data<float>()[i];
      if (std::isinf(want)) {
        EXPECT_EQ(a, want) << "empty sequence: lse stays -inf";
      } else {
        EXPECT_NEAR(a, want, 2e-6 * std::max(1.0f, std::fabs(want))) << splits << " splits";
      }
    }
  }
}

// ---- latent attention and lse against the oracle; heads 128 x batch 256
// --------------------------
void check_latent_against_oracle(const MlaConfig& cfg, const std::vector<int64_t>& lens,
                                 uint32_t seed, int64_t splits) {
  const MlaLayerWeights w = random_weights(cfg, seed);
  const PagedCache pc = make_paged(lens, cfg.page_size, cfg.cache_row(), seed + 1);
  const int64_t b = static_cast<int64_t>(lens.size()), h = cfg.num_heads;
  const int64_t row = cfg.cache_row(), l = cfg.kv_lora_rank;
  const Tensor q_cat =
      ref::mla_absorb_q(random_bf16({b, h, cfg.qk_head_dim()}, seed + 2, 1.0f), w.w_uk_t);
  Tensor lse;
  const Tensor o_lat = ref::mla_decode_latent(q_cat, pc.kv_cache, pc.block_table, pc.seq_lens, l,
                                              cfg.scale(), &lse, splits);
  const Tensor out = ref::mla_up_proj(o_lat, w.w_uv, false);
  ErrStats e_lat, e_lse, e_out;
  for (int64_t i = 0; i < b; ++i) {
    for (int64_t hh = 0; hh < h; ++hh) {
      double want_lse;
      const auto want = testing::oracle_latent(
          values_of(q_cat, (i * h + hh) * row, row), pc.rows[static_cast<size_t>(i)],
          lens[static_cast<size_t>(i)], l, row, cfg.scale(), &want_lse);
      for (int64_t k = 0; k < l; ++k) {
        e_lat.add(o_lat.data<float>()[(i * h + hh) * l + k], want[static_cast<size_t>(k)]);
      }
      const float got_lse = lse.data<float>()[i * h + hh];
      if (std::isinf(want_lse)) {
        EXPECT_EQ(got_lse, -std::numeric_limits<float>::infinity());
      } else {
        e_lse.add(got_lse, want_lse);
      }
      // Up-projection of the f32 latent output, in double.
      for (int64_t v = 0; v < cfg.v_head_dim; ++v) {
        double acc = 0;
        for (int64_t k = 0; k < l; ++k) {
          acc += o_lat.data<float>()[(i * h + hh) * l + k] *
                 testing::bf(w.w_uv, (hh * l + k) * cfg.v_head_dim + v);
        }
        e_out.add(out.data<float>()[i * h * cfg.v_head_dim + hh * cfg.v_head_dim + v], acc);
      }
    }
  }
  EXPECT_LE(e_lat.normalized(), 2e-6);
  EXPECT_LE(e_lse.max_abs_err, 2e-6 * std::max(1.0, e_lse.max_abs_ref));
  EXPECT_LE(e_out.normalized(), 2e-6);
}

TEST(MlaReference, LatentAttentionMatchesOracleBatch1And7) {
  check_latent_against_oracle(small_config(16, 64), {65}, 40, 1);
  check_latent_against_oracle(small_config(16, 64), {0, 1, 63, 64, 65, 17, 128}, 41, 1);
  check_latent_against_oracle(small_config(16, 16), {0, 1, 63, 64, 65, 17, 128}, 42, 5);
}

TEST(MlaReference, Heads128Batch256) {
  std::vector<int64_t> lens;
  for (int64_t i = 0; i < 256; ++i) lens.push_back((i * 37) % 70);  // 0..69: 0, 1, 63, 64, 65 too
  check_latent_against_oracle(tiny_config(128, 16), lens, 50, 3);
}

TEST(MlaReference, AbsorbQIsBf16RoundedF32Product) {
  const MlaConfig cfg = small_config(3, 64);
  const MlaLayerWeights w = random_weights(cfg, 60);
  const Tensor q = random_bf16({5, 3, cfg.qk_head_dim()}, 61, 1.0f);
  const Tensor qc = ref::mla_absorb_q(q, w.w_uk_t);
  const Tensor qf = ref::mla_absorb_q_f32(q, w.w_uk_t);
  ASSERT_EQ(qc.dtype(), DType::kBF16);
  ASSERT_EQ(qc.shape(), (std::vector<int64_t>{5, 3, cfg.cache_row()}));
  const int64_t p = cfg.qk_nope_dim, l = cfg.kv_lora_rank, row = cfg.cache_row();
  for (int64_t t = 0; t < 5; ++t) {
    for (int64_t h = 0; h < 3; ++h) {
      for (int64_t i = 0; i < row; ++i) {
        const float f = qf.data<float>()[(t * 3 + h) * row + i];
        EXPECT_EQ(qc.data<uint16_t>()[(t * 3 + h) * row + i], f32_to_bf16_bits(f));
        if (i >= l) {  // q_pe copied
          EXPECT_EQ(f, testing::bf(q, (t * 3 + h) * cfg.qk_head_dim() + p + (i - l)));
        } else {
          double acc = 0;
          for (int64_t k = 0; k < p; ++k) {
            acc += testing::bf(q, (t * 3 + h) * cfg.qk_head_dim() + k) *
                   testing::bf(w.w_uk_t, (h * p + k) * l + i);
          }
          EXPECT_NEAR(f, acc, 1e-5 * (1 + std::fabs(acc)));
        }
      }
    }
  }
}

// ---- the mixed-batch op ----------------------------------------------------------------------
void check_mixed(const MixedBatch& mb_in, double tol) {
  MixedBatch mb = mb_in;
  mb.pc.kv_cache = mb_in.pc.kv_cache.clone();
  const MlaConfig& cfg = mb.cfg;
  const Tensor out = ref::mla_attention_f32(mb.q, mb.kv_c_normed, mb.k_pe, mb.pc.kv_cache, mb.meta,
                                            mb.w, cfg, mb.n);
  ASSERT_EQ(out.shape(), (std::vector<int64_t>{mb.t_pad, cfg.output_dim()}));
  // The cache now holds every sequence's full rows.
  const int64_t row = cfg.cache_row(), ps = cfg.page_size, mp = mb.pc.block_table.dim(1);
  for (size_t s = 0; s < mb.pc.rows.size(); ++s) {
    const int64_t len = mb.pc.seq_lens.data<int32_t>()[s];
    for (int64_t j = 0; j < len; ++j) {
      const int64_t page = mb.pc.block_table.data<int32_t>()[static_cast<int64_t>(s) * mp + j / ps];
      const uint16_t* got = mb.pc.kv_cache.data<uint16_t>() + (page * ps + j % ps) * row;
      for (int64_t i = 0; i < row; ++i) {
        ASSERT_EQ(got[i], mb.pc.rows[s][static_cast<size_t>(j * row + i)]) << "seq " << s;
      }
    }
  }
  ErrStats e;
  for (int64_t t = 0; t < mb.n; ++t) {
    const auto want = testing::oracle_token(mb, t);
    for (int64_t k = 0; k < cfg.output_dim(); ++k) {
      e.add(out.data<float>()[t * cfg.output_dim() + k], want[static_cast<size_t>(k)]);
    }
  }
  EXPECT_LE(e.normalized(), tol) << "max abs err " << e.max_abs_err << " ref " << e.max_abs_ref;
  EXPECT_GT(e.max_abs_ref, 1e-2);
  for (int64_t k = mb.n * cfg.output_dim(); k < out.numel(); ++k) {
    ASSERT_EQ(out.data<float>()[k], 0.0f) << "padded row not zero";
  }
  // The decode rows are exactly the absorbed chain of the public pieces, each token over its
  // sequence's first pos + 1 positions.
  const int64_t nd = mb.meta.num_decode_tokens;
  if (nd > 0) {
    const Tensor qd = mb.q.view(DType::kBF16, {nd, cfg.num_heads, cfg.qk_head_dim()},
                                Tensor::contiguous_strides({nd, cfg.num_heads, cfg.qk_head_dim()}));
    Tensor bt = Tensor::empty(DType::kI32, {nd, mp});
    Tensor sl = Tensor::empty(DType::kI32, {nd});
    for (int64_t t = 0; t < nd; ++t) {
      const int64_t seq = mb.token_seq[static_cast<size_t>(t)];
      std::copy_n(mb.pc.block_table.data<int32_t>() + seq * mp, mp, bt.data<int32_t>() + t * mp);
      sl.data<int32_t>()[t] = static_cast<int32_t>(mb.token_pos[static_cast<size_t>(t)] + 1);
    }
    const Tensor chain =
        ref::mla_up_proj(ref::mla_decode_latent(ref::mla_absorb_q(qd, mb.w.w_uk_t), mb.pc.kv_cache,
                                                bt, sl, cfg.kv_lora_rank, cfg.scale()),
                         mb.w.w_uv, true);
    for (int64_t k = 0; k < chain.numel(); ++k) {
      ASSERT_EQ(f32_bits(chain.data<float>()[k]), f32_bits(out.data<float>()[k]));
    }
  }
}

// Tolerance: the op rounds q_cat, o_lat and the prefill's k_nope / v to bf16 (2^-9 relative each)
// like the kernels; 1e-2 of the largest output bounds that with margin.
TEST(MlaReference, MixedBatchAgainstOracle) {
  check_mixed(
      make_mixed(small_config(16, 16), {1, 17, 64, 65, 0}, {{5, 0}, {3, 20}, {1, 63}}, 3, 70),
      1e-2);
  check_mixed(make_mixed(small_config(16, 64), {63, 64, 65}, {{9, 57}}, 0, 71), 1e-2);
  check_mixed(make_mixed(small_config(16, 5), {}, {{4, 0}, {6, 1}}, 2, 72), 1e-2);
  check_mixed(make_mixed(small_config(16, 3), {2, 1}, {}, 1, 73), 1e-2);
}

// Multi-token decodes (MTP, speculative decoding): each decode's tokens are its last positions,
// causal among themselves, on the absorbed path; padded decodes keep one token.
TEST(MlaReference, MultiTokenDecodesAgainstOracle) {
  check_mixed(make_mixed(small_config(16, 16), {2, 17, 64, 65, 0}, {{5, 0}, {3, 20}}, 3, 74, 2),
              1e-2);
  check_mixed(make_mixed(small_config(16, 64), {3, 63, 64, 129}, {}, 0, 75, 3), 1e-2);
  check_mixed(make_mixed(small_config(16, 5), {4, 0, 9}, {}, 2, 76, 4), 1e-2);
}

TEST(MlaReference, MixedBatchDeepSeekDims) {
  check_mixed(make_mixed(deepseek_config(16), {3, 65}, {{4, 4}}, 1, 80), 1e-2);
}

// ---- the block-FP8 up-projection (kv_b_proj as the checkpoint stores it) ---------------------
MlaConfig fp8_config(int64_t heads) {
  MlaConfig c = small_config(heads, 16);
  c.kv_lora_rank = 256;  // two latent groups of 128
  return c;
}

// Random e4m3 codes (never NaN) with a power-of-two scale per 128x128 block, different across
// blocks: the dequantized weight is exact in bf16, so the bf16 path can run the same numbers.
BlockFp8Weight pow2_block_fp8(int64_t n, int64_t k, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  BlockFp8Weight w{Tensor::empty(DType::kFp8E4M3, {n, k}),
                   Tensor::empty(DType::kF32, {ceil_div(n, 128), ceil_div(k, 128)})};
  for (int64_t i = 0; i < w.weight_scale_inv.numel(); ++i) {
    w.weight_scale_inv.data<float>()[i] = std::ldexp(1.0f, -12 - static_cast<int>(i % 3));
  }
  for (int64_t i = 0; i < w.weight.numel(); ++i) {
    w.weight.data<uint8_t>()[i] = f32_to_e4m3(u(rng) * 440.0f);
  }
  return w;
}

// The dequantized weight rounded to bf16, checked to be exact.
Tensor exact_bf16(const BlockFp8Weight& w) {
  const Tensor f = dequantize_block_fp8(w);
  Tensor b = Tensor::empty(DType::kBF16, f.shape());
  for (int64_t i = 0; i < f.numel(); ++i) {
    b.data<uint16_t>()[i] = f32_to_bf16_bits(f.data<float>()[i]);
    EXPECT_EQ(bf16_bits_to_f32(b.data<uint16_t>()[i]), f.data<float>()[i]);
  }
  return b;
}

// Calls fn(seq, pos, row) on every cached row of pc (its first L bf16 values are the latent).
template <typename Fn>
void for_each_latent(PagedCache& pc, Fn fn) {
  const int64_t ps = pc.page_size, mp = pc.block_table.dim(1);
  for (int64_t s = 0; s < pc.block_table.dim(0); ++s) {
    for (int64_t j = 0; j < pc.seq_lens.data<int32_t>()[s]; ++j) {
      const int64_t page = pc.block_table.data<int32_t>()[s * mp + j / ps];
      fn(s, j, pc.kv_cache.data<uint16_t>() + (page * ps + j % ps) * pc.row);
    }
  }
}

bool same_bits(const Tensor& a, const Tensor& b) {
  return a.shape() == b.shape() && std::memcmp(a.raw(), b.raw(), a.storage()->bytes) == 0;
}

// Latents whose every group of 128 has amax 1.75 (one element +-1.75, the rest inside), so the
// group scale is 1.75 / 448 = 2^-8 exactly and the dequantized latents are exact in bf16: a cache
// holding those, up-projected by the bf16 path, must give the FP8 path's result bit for bit.
TEST(MlaReferenceFp8, UpProjectionIsTheQuantizedLinearBitForBit) {
  const MlaConfig cfg = fp8_config(3);  // N = 3 * 64 = 192: a partial 128-row weight block
  const int64_t h = cfg.num_heads, l = cfg.kv_lora_rank, n = h * (cfg.qk_nope_dim + cfg.v_head_dim);
  PagedCache pc = make_paged({40, 7, 130}, cfg.page_size, cfg.cache_row(), 200);
  std::mt19937 rng(201);
  std::uniform_real_distribution<float> u(-1.75f, 1.75f);
  for_each_latent(pc, [&](int64_t, int64_t j, uint16_t* lat) {
    for (int64_t i = 0; i < l; ++i) lat[i] = f32_to_bf16_bits(u(rng));
    for (int64_t g = 0; g < l / 128; ++g) {
      lat[g * 128 + (j * 7 + g * 13) % 128] = f32_to_bf16_bits((j + g) % 2 ? 1.75f : -1.75f);
    }
  });
  // The same cache with every latent row replaced by its quantize-dequantize image.
  PagedCache pc_dq = pc;
  pc_dq.kv_cache = pc.kv_cache.clone();
  for_each_latent(pc_dq, [&](int64_t, int64_t, uint16_t* lat) {
    Tensor x = Tensor::empty(DType::kBF16, {1, l});
    std::copy_n(lat, l, x.data<uint16_t>());
    Tensor codes = Tensor::empty(DType::kFp8E4M3, {1, l});
    Tensor scales = Tensor::empty(DType::kF32, {1, l / 128});
    ref::quant_fp8_group(x, 1, ref::Fp8GroupParams{}, codes, scales);
    for (int64_t i = 0; i < l; ++i) {
      ASSERT_EQ(scales.data<float>()[i / 128], 1.0f / 256.0f);
      const float v = e4m3_to_f32(codes.data<uint8_t>()[i]) * scales.data<float>()[i / 128];
      lat[i] = f32_to_bf16_bits(v);
      ASSERT_EQ(bf16_bits_to_f32(lat[i]), v);
    }
  });
  const BlockFp8Weight wq = pow2_block_fp8(n, l, 202);
  const Tensor w_bf16 = exact_bf16(wq);
  for (int64_t s = 0; s < 3; ++s) {
    const int64_t len = pc.seq_lens.data<int32_t>()[s], tq = std::min<int64_t>(len, 5);
    const Tensor q = random_bf16({tq, h, cfg.qk_head_dim()}, 203 + static_cast<uint32_t>(s), 1.0f);
    for (bool round_kv : {true, false}) {
      SCOPED_TRACE("seq " + std::to_string(s) + (round_kv ? " bf16 kv" : " f32 kv"));
      // kv_b_proj (bf16) is not read when the block-FP8 weight is present.
      const Tensor got = ref::mla_prefill_expanded(q, pc.kv_cache, pc.block_table, s, len,
                                                   Tensor(), cfg, round_kv, wq);
      const Tensor want = ref::mla_prefill_expanded(q, pc_dq.kv_cache, pc_dq.block_table, s, len,
                                                    w_bf16, cfg, round_kv);
      EXPECT_TRUE(same_bits(got, want)) << "FP8 path != bf16 path on the dequantized operands";
      // The latents' quantization is not the identity here: without it the result differs.
      const Tensor plain = ref::mla_prefill_expanded(q, pc.kv_cache, pc.block_table, s, len,
                                                     w_bf16, cfg, round_kv);
      EXPECT_FALSE(same_bits(got, plain)) << "the latents were not quantized";
    }
  }
}

// mla_attention_f32 takes the block-FP8 weight from the layer's weights for its prefill rows; the
// decode rows (absorbed form, w_uk_t / w_uv) are unchanged by it.
TEST(MlaReferenceFp8, MixedBatchPrefillUsesTheLayersFp8Weight) {
  const MlaConfig cfg = fp8_config(4);
  const int64_t n_rows = cfg.num_heads * (cfg.qk_nope_dim + cfg.v_head_dim);
  MixedBatch mb = make_mixed(cfg, {3, 20}, {{5, 0}, {3, 17}}, 2, 210);
  const BlockFp8Weight wq = pow2_block_fp8(n_rows, cfg.kv_lora_rank, 211);
  mb.w = testing::split_kv_b_proj(exact_bf16(wq), cfg);
  MlaLayerWeights w_fp8 = mb.w;
  w_fp8.kv_b_proj_fp8 = wq;
  w_fp8.kv_b_proj = Tensor();  // not read for prefill when the FP8 form is present
  auto run = [&](const MlaLayerWeights& w, Tensor* cache_after) {
    Tensor cache = mb.pc.kv_cache.clone();
    Tensor out = ref::mla_attention_f32(mb.q, mb.kv_c_normed, mb.k_pe, cache, mb.meta, w, cfg, mb.n);
    if (cache_after) *cache_after = cache;
    return out;
  };
  Tensor cache;
  const Tensor got = run(w_fp8, &cache);
  const Tensor bf16_out = run(mb.w, nullptr);
  const int64_t dim = cfg.output_dim(), nd = mb.meta.num_decode_tokens;
  const int32_t* qsl = mb.meta.query_start_loc.data<int32_t>();
  EXPECT_EQ(std::memcmp(got.raw(), bf16_out.raw(), static_cast<size_t>(nd * dim) * 4), 0)
      << "decode rows changed";
  for (int64_t s = mb.meta.num_decodes; s < mb.meta.num_seqs(); ++s) {
    const int64_t tq = qsl[s + 1] - qsl[s];
    const Tensor q = mb.q.view(DType::kBF16, {tq, cfg.num_heads, cfg.qk_head_dim()},
                               Tensor::contiguous_strides({tq, cfg.num_heads, cfg.qk_head_dim()}),
                               qsl[s] * cfg.num_heads * cfg.qk_head_dim());
    const Tensor want =
        ref::mla_prefill_expanded(q, cache, mb.meta.block_table, s,
                                  mb.meta.seq_lens.data<int32_t>()[s], Tensor(), cfg, true, wq);
    EXPECT_EQ(std::memcmp(got.data<float>() + qsl[s] * dim, want.raw(),
                          static_cast<size_t>(tq * dim) * 4),
              0)
        << "prefill sequence " << s;
    EXPECT_NE(std::memcmp(got.data<float>() + qsl[s] * dim, bf16_out.data<float>() + qsl[s] * dim,
                          static_cast<size_t>(tq * dim) * 4),
              0)
        << "prefill sequence " << s << " did not use the FP8 weight";
  }
}

TEST(MlaReferenceFp8, BadWeightsNameTheTensor) {
  const MlaConfig cfg = fp8_config(3);
  const int64_t l = cfg.kv_lora_rank, n = cfg.num_heads * (cfg.qk_nope_dim + cfg.v_head_dim);
  PagedCache pc = make_paged({9}, cfg.page_size, cfg.cache_row(), 220);
  const Tensor q = random_bf16({2, cfg.num_heads, cfg.qk_head_dim()}, 221, 1.0f);
  const BlockFp8Weight good = pow2_block_fp8(n, l, 222);
  auto run = [&](const BlockFp8Weight& w, const MlaConfig& c) {
    ref::mla_prefill_expanded(q, pc.kv_cache, pc.block_table, 0, 9, Tensor(), c, true, w);
  };
  EXPECT_NO_THROW(run(good, cfg));
  BlockFp8Weight w = good;
  w.weight_scale_inv = Tensor::empty(DType::kF32, {1, 2});
  expect_error([&] { run(w, cfg); }, {"kv_b_proj_fp8.weight_scale_inv", "[1, 2]", "[2, 2]"});
  w.weight_scale_inv = Tensor();
  expect_error([&] { run(w, cfg); }, {"kv_b_proj_fp8", "no weight_scale_inv"});
  w = good;
  w.weight_scale_inv = Tensor::empty(DType::kBF16, {2, 2});
  expect_error([&] { run(w, cfg); }, {"kv_b_proj_fp8.weight_scale_inv", "f32"});
  w = pow2_block_fp8(n, l + 128, 223);
  expect_error([&] { run(w, cfg); }, {"kv_b_proj_fp8.weight", "[192, 256]"});
  w = good;
  w.weight = Tensor::empty(DType::kBF16, {n, l});
  expect_error([&] { run(w, cfg); }, {"kv_b_proj_fp8.weight", "fp8e4m3"});
  // Latents of 64 are no whole group of 128.
  MlaConfig c64 = cfg;
  c64.kv_lora_rank = 64;
  PagedCache pc64 = make_paged({9}, c64.page_size, c64.cache_row(), 224);
  expect_error(
      [&] {
        ref::mla_prefill_expanded(q, pc64.kv_cache, pc64.block_table, 0, 9, Tensor(), c64, true,
                                  pow2_block_fp8(n, 64, 225));
      },
      {"kv_lora_rank", "multiple of 128"});
  // Through the op: the layer's weights are validated the same way.
  MixedBatch mb = make_mixed(cfg, {3}, {{4, 2}}, 1, 226);
  mb.w.kv_b_proj_fp8 = good;
  mb.w.kv_b_proj_fp8.weight_scale_inv = Tensor::empty(DType::kF32, {2, 1});
  expect_error(
      [&] {
        ref::mla_attention_f32(mb.q, mb.kv_c_normed, mb.k_pe, mb.pc.kv_cache, mb.meta, mb.w, cfg,
                               mb.n);
      },
      {"kv_b_proj_fp8.weight_scale_inv", "[2, 2]"});
}

// ---- bad inputs ------------------------------------------------------------------------------
TEST(MlaReference, DecodeBadInputsNameTheTensor) {
  const MlaConfig cfg = small_config(4, 16);
  const MlaLayerWeights w = random_weights(cfg, 90);
  PagedCache pc = make_paged({20, 5}, cfg.page_size, cfg.cache_row(), 91);
  const Tensor q_cat =
      ref::mla_absorb_q(random_bf16({2, 4, cfg.qk_head_dim()}, 92, 1.0f), w.w_uk_t);
  const int64_t l = cfg.kv_lora_rank;
  EXPECT_NO_THROW(ref::mla_decode_latent(q_cat, pc.kv_cache, pc.block_table, pc.seq_lens, l, 1));
  // A page id past the cache.
  Tensor bt = pc.block_table.clone();
  bt.data<int32_t>()[1] = static_cast<int32_t>(pc.kv_cache.dim(0));
  expect_error([&] { ref::mla_decode_latent(q_cat, pc.kv_cache, bt, pc.seq_lens, l, 1); },
               {"block_table[0, 1]", "kv_cache"});
  bt.data<int32_t>()[1] = -3;
  expect_error([&] { ref::mla_decode_latent(q_cat, pc.kv_cache, bt, pc.seq_lens, l, 1); },
               {"block_table[0, 1] = -3"});
  // A length beyond the block table's capacity.
  Tensor sl = pc.seq_lens.clone();
  sl.data<int32_t>()[1] = static_cast<int32_t>(pc.block_table.dim(1) * cfg.page_size + 1);
  expect_error([&] { ref::mla_decode_latent(q_cat, pc.kv_cache, pc.block_table, sl, l, 1); },
               {"seq_lens[1]", "block_table"});
  sl.data<int32_t>()[1] = -1;
  expect_error([&] { ref::mla_decode_latent(q_cat, pc.kv_cache, pc.block_table, sl, l, 1); },
               {"seq_lens[1] = -1"});
  Tensor sl3 = Tensor::empty(DType::kI32, {3});
  expect_error([&] { ref::mla_decode_latent(q_cat, pc.kv_cache, pc.block_table, sl3, l, 1); },
               {"seq_lens", "[2]"});
  Tensor cache_wrong = Tensor::empty(DType::kBF16, {4, 16, 100});
  expect_error(
      [&] { ref::mla_decode_latent(q_cat, cache_wrong, pc.block_table, pc.seq_lens, l, 1); },
      {"kv_cache", "q_cat"});
  expect_error(
      [&] { ref::mla_decode_latent(q_cat, pc.kv_cache, pc.block_table, pc.seq_lens, 0, 1); },
      {"latent_dim"});
  expect_error(
      [&] {
        ref::mla_decode_latent(q_cat, pc.kv_cache, pc.block_table, pc.seq_lens, l, 1, nullptr, 0);
      },
      {"kv_splits"});
  Tensor bt_f32 = Tensor::empty(DType::kF32, {2, 4});
  expect_error([&] { ref::mla_decode_latent(q_cat, pc.kv_cache, bt_f32, pc.seq_lens, l, 1); },
               {"block_table", "i32"});
  // absorb / up-proj shape mismatches.
  const Tensor q5 = random_bf16({2, 5, cfg.qk_head_dim()}, 93, 1.0f);
  expect_error([&] { ref::mla_absorb_q(q5, w.w_uk_t); }, {"w_uk_t", "heads"});
  const Tensor o_lat = Tensor::empty(DType::kF32, {2, 4, l + 1});
  expect_error([&] { ref::mla_up_proj(o_lat, w.w_uv, true); }, {"w_uv", "o_lat"});
}

TEST(MlaReference, AttentionBadInputsNameTheTensor) {
  const MixedBatch good = make_mixed(small_config(4, 16), {3, 20}, {{4, 2}}, 2, 100);
  auto run = [](MixedBatch mb) {
    mb.pc.kv_cache = mb.pc.kv_cache.clone();
    ref::mla_attention_f32(mb.q, mb.kv_c_normed, mb.k_pe, mb.pc.kv_cache, mb.meta, mb.w, mb.cfg,
                           mb.n);
  };
  EXPECT_NO_THROW(run(good));
  {
    MixedBatch mb = good;
    expect_error(
        [&] {
          ref::mla_attention_f32(mb.q, mb.kv_c_normed, mb.k_pe, mb.pc.kv_cache, mb.meta, mb.w,
                                 mb.cfg, mb.n - 1);
        },
        {"metadata", "tokens"});
  }
  {
    MixedBatch mb = good;
    mb.q = random_bf16({mb.t_pad, 4, 40}, 1, 1.0f);
    expect_error([&] { run(mb); }, {"tensor q", "[8, 4, 48]"});
  }
  {
    MixedBatch mb = good;
    mb.meta.slot_mapping = mb.meta.slot_mapping.clone();
    mb.meta.slot_mapping.data<int32_t>()[2] = 1 << 20;
    Tensor before = mb.pc.kv_cache.clone();
    expect_error(
        [&] {
          ref::mla_attention_f32(mb.q, mb.kv_c_normed, mb.k_pe, mb.pc.kv_cache, mb.meta, mb.w,
                                 mb.cfg, mb.n);
        },
        {"slot_mapping[2]", "kv_cache"});
    EXPECT_EQ(std::memcmp(before.raw(), mb.pc.kv_cache.raw(), before.storage()->bytes), 0)
        << "a rejected slot mapping must leave the cache untouched";
  }
  {
    MixedBatch mb = good;
    mb.meta.page_size = 64;
    expect_error([&] { run(mb); }, {"page_size", "kv_cache"});
  }
  {
    MixedBatch mb = good;
    mb.meta.seq_lens = mb.meta.seq_lens.clone();
    mb.meta.seq_lens.data<int32_t>()[2] = 3;  // prefill of 4 query tokens
    expect_error([&] { run(mb); }, {"seq_lens[2] = 3", "4 query tokens"});
  }
  {
    MixedBatch mb = good;
    mb.meta.query_start_loc = mb.meta.query_start_loc.clone();
    mb.meta.query_start_loc.data<int32_t>()[1] = 2;  // decode 0 takes decode 1's token
    expect_error([&] { run(mb); }, {"decode sequence 1 has 0 query tokens"});
  }
  {
    // query_start_loc out of order by more than int32 spans: its differences must not wrap into
    // plausible query counts (they did, and the decode loop then wrote past its buffers).
    MixedBatch mb = make_mixed(small_config(4, 16), {3, 20, 5}, {}, 0, 102);
    mb.meta.query_start_loc = mb.meta.query_start_loc.clone();
    mb.meta.seq_lens = mb.meta.seq_lens.clone();
    int32_t* qsl = mb.meta.query_start_loc.data<int32_t>();
    qsl[1] = std::numeric_limits<int32_t>::max();
    qsl[2] = -2;
    mb.meta.seq_lens.data<int32_t>()[0] = std::numeric_limits<int32_t>::max();
    mb.meta.seq_lens.data<int32_t>()[1] = std::numeric_limits<int32_t>::max();
    expect_error([&] { run(mb); }, {"decode sequence 1 has -2147483649 query tokens"});
  }
  {
    MixedBatch mb = good;  // the counts and query_start_loc disagree on the decode tokens
    mb.meta.num_decode_tokens += 1;
    mb.meta.num_prefill_tokens -= 1;
    expect_error([&] { run(mb); }, {"query_start_loc[2] = 2", "num_decode_tokens 3"});
  }
  {
    MixedBatch mb = make_mixed(small_config(4, 16), {3, 20}, {}, 0, 101, 3);
    mb.meta.seq_lens = mb.meta.seq_lens.clone();
    mb.meta.seq_lens.data<int32_t>()[0] = 2;  // a decode of 3 tokens
    expect_error([&] { run(mb); }, {"seq_lens[0] = 2", "3 query tokens"});
  }
  {
    MixedBatch mb = good;
    mb.w.kv_b_proj = Tensor();
    expect_error([&] { run(mb); }, {"kv_b_proj", "missing"});
  }
  {
    MixedBatch mb = good;
    mb.meta.block_table = mb.meta.block_table.clone();
    mb.meta.block_table.data<int32_t>()[mb.meta.block_table.dim(1)] = 99999;  // seq 1, page 0
    expect_error([&] { run(mb); }, {"block_table[1, 0] = 99999"});
  }
  {
    MixedBatch mb = good;
    mb.w.w_uv = Tensor::empty(DType::kBF16, {4, 64, 16});
    expect_error([&] { run(mb); }, {"w_uv", "[4, 64, 32]"});
  }
}

}  // namespace
}  // namespace mlafuse
