#include "mlafuse/models/weights.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>

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
  c.kv_lora_rank = 160;  // not a multiple of 128: partial scale blocks
  c.hidden = 200;
  return c;
}

bool same_bytes(const Tensor& a, const Tensor& b) {
  if (a.dtype() != b.dtype() || a.shape() != b.shape()) return false;
  return std::memcmp(a.raw(), b.raw(), a.numel() * dtype_size(a.dtype())) == 0;
}

TEST(BlockFp8, RoundTripIsWithinHalfAnE4m3StepPerBlock) {
  // 300 x 260: partial blocks in both dims; blocks of very different magnitudes.
  Tensor w = Tensor::empty(DType::kF32, {300, 260});
  float* p = w.data<float>();
  for (int64_t r = 0; r < 300; ++r) {
    for (int64_t c = 0; c < 260; ++c) {
      const float mag = (r / 128 == 1) ? 1e-3f : (c / 128 == 2 ? 50.0f : 1.0f);
      p[r * 260 + c] = mag * std::sin(0.37f * r + 1.3f * c);
    }
  }
  p[5] = 0.0f;
  const BlockFp8Weight q = quantize_block_fp8(w);
  ASSERT_EQ(q.weight.shape(), (std::vector<int64_t>{300, 260}));
  ASSERT_EQ(q.weight_scale_inv.shape(), (std::vector<int64_t>{3, 3}));
  const Tensor back = dequantize_block_fp8(q);
  const float* s = q.weight_scale_inv.data<float>();
  for (int64_t br = 0; br < 3; ++br) {
    for (int64_t bc = 0; bc < 3; ++bc) {
      // scale = amax / 448 exactly: the block's largest element maps to code 448 (0x7e).
      float amax = 0.0f;
      for (int64_t r = br * 128; r < std::min<int64_t>(300, br * 128 + 128); ++r) {
        for (int64_t c = bc * 128; c < std::min<int64_t>(260, bc * 128 + 128); ++c) {
          amax = std::max(amax, std::fabs(p[r * 260 + c]));
        }
      }
      EXPECT_EQ(s[br * 3 + bc], amax / 448.0f) << br << "," << bc;
    }
  }
  const uint8_t* codes = q.weight.data<uint8_t>();
  for (int64_t r = 0; r < 300; ++r) {
    for (int64_t c = 0; c < 260; ++c) {
      const float scale = s[(r / 128) * 3 + c / 128];
      const float x = p[r * 260 + c], y = back.data<float>()[r * 260 + c];
      EXPECT_EQ(y, e4m3_to_f32(codes[r * 260 + c]) * scale);
      // e4m3 has 3 mantissa bits: relative error <= 2^-4 for normals; absolute <= 2^-10 * scale
      // in the subnormal range.
      EXPECT_LE(std::fabs(x - y), std::max(std::fabs(x) * 0.0625f, scale * 0.0009765625f))
          << r << "," << c << " x=" << x << " y=" << y;
    }
  }
  EXPECT_EQ(back.data<float>()[5], 0.0f);
}

TEST(BlockFp8, ExactValuesSurviveUnchanged) {
  // Values already on the e4m3 grid of their block's scale come back bit for bit.
  Tensor w = Tensor::empty(DType::kF32, {128, 128});
  for (int64_t i = 0; i < w.numel(); ++i) {
    w.data<float>()[i] = e4m3_to_f32(static_cast<uint8_t>(i % 126));  // codes 0..125 (<= 416)
  }
  w.data<float>()[0] = 448.0f;  // amax: scale exactly 1
  const BlockFp8Weight q = quantize_block_fp8(w);
  EXPECT_EQ(q.weight_scale_inv.data<float>()[0], 1.0f);
  const Tensor back = dequantize_block_fp8(q);
  EXPECT_TRUE(same_bytes(back, w));
}

TEST(BlockFp8, ZeroBlockGetsUnitScale) {
  Tensor w = Tensor::empty(DType::kF32, {4, 4});
  const BlockFp8Weight q = quantize_block_fp8(w);
  EXPECT_EQ(q.weight_scale_inv.data<float>()[0], 1.0f);
}

TEST(BlockFp8, BadShapesAreNamed) {
  BlockFp8Weight w{Tensor::empty(DType::kFp8E4M3, {256, 128}), Tensor::empty(DType::kF32, {1, 1})};
  try {
    check_block_fp8(w, "layers.0.o_proj");
    FAIL() << "no throw";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("layers.0.o_proj.weight_scale_inv"), std::string::npos)
        << e.what();
    EXPECT_NE(std::string(e.what()).find("[2, 1]"), std::string::npos) << e.what();
  }
  EXPECT_THROW(quantize_block_fp8(Tensor::empty(DType::kBF16, {4, 4})), Error);
  EXPECT_THROW(linear_block_fp8_f32(Tensor::empty(DType::kF32, {2, 100}),
                                    BlockFp8Weight{Tensor::empty(DType::kFp8E4M3, {8, 128}),
                                                   Tensor::empty(DType::kF32, {1, 1})}),
               Error);
}

TEST(BlockFp8, LinearF32MatchesADoubleDotProduct) {
  Tensor w = Tensor::empty(DType::kF32, {130, 300});
  for (int64_t i = 0; i < w.numel(); ++i) w.data<float>()[i] = std::cos(0.11f * i) * 0.05f;
  const BlockFp8Weight q = quantize_block_fp8(w);
  const Tensor wd = dequantize_block_fp8(q);
  Tensor x = Tensor::empty(DType::kF32, {3, 300});
  for (int64_t i = 0; i < x.numel(); ++i) x.data<float>()[i] = std::sin(0.7f * i);
  const Tensor y = linear_block_fp8_f32(x, q);
  ASSERT_EQ(y.shape(), (std::vector<int64_t>{3, 130}));
  for (int64_t t = 0; t < 3; ++t) {
    for (int64_t o = 0; o < 130; ++o) {
      double ref = 0, mag = 0;
      for (int64_t k = 0; k < 300; ++k) {
        const double term = double(x.data<float>()[t * 300 + k]) * wd.data<float>()[o * 300 + k];
        ref += term;
        mag += std::fabs(term);
      }
      EXPECT_NEAR(y.data<float>()[t * 130 + o], ref, 1e-6 * mag + 1e-12) << t << "," << o;
    }
  }
}

TEST(MlaWeights, AbsorbedWeightsAreSlicesOfKvBProj) {
  const MlaConfig cfg = small_config();
  const WeightStore ws = make_mla_weights(cfg, 2, 7);
  ASSERT_EQ(ws.layers.size(), 2u);
  const int64_t h = cfg.num_heads, p = cfg.qk_nope_dim, v = cfg.v_head_dim, l = cfg.kv_lora_rank;
  for (int64_t i = 0; i < 2; ++i) {
    const MlaLayerWeights& w = ws.layer(i);
    EXPECT_EQ(w.w_uk_t.shape(), (std::vector<int64_t>{h, p, l}));
    EXPECT_EQ(w.w_uv.shape(), (std::vector<int64_t>{h, l, v}));
    EXPECT_EQ(w.kv_b_proj.shape(), (std::vector<int64_t>{h * (p + v), l}));
    EXPECT_EQ(w.w_uk_t.dtype(), DType::kBF16);
    // kv_b_proj (bf16) is the dequantized checkpoint weight rounded to bf16.
    const BlockFp8Weight kvb = kv_b_proj_of(ws, i);
    EXPECT_TRUE(same_bytes(w.kv_b_proj, dequantize_block_fp8_bf16(kvb)));
    const uint16_t* kb = w.kv_b_proj.data<uint16_t>();
    for (int64_t hh = 0; hh < h; ++hh) {
      for (int64_t ll = 0; ll < l; ++ll) {
        for (int64_t pp = 0; pp < p; ++pp) {
          ASSERT_EQ(w.w_uk_t.data<uint16_t>()[(hh * p + pp) * l + ll],
                    kb[(hh * (p + v) + pp) * l + ll]);
        }
        for (int64_t vv = 0; vv < v; ++vv) {
          ASSERT_EQ(w.w_uv.data<uint16_t>()[(hh * l + ll) * v + vv],
                    kb[(hh * (p + v) + p + vv) * l + ll]);
        }
      }
    }
    const BlockFp8Weight o = o_proj_of(ws, i);
    EXPECT_EQ(o.weight.shape(), (std::vector<int64_t>{cfg.hidden, h * v}));
    EXPECT_EQ(o.weight.dtype(), DType::kFp8E4M3);
    EXPECT_EQ(o.weight_scale_inv.shape(), (std::vector<int64_t>{2, 1}));
  }
}

// The layers carry the checkpoint's kv_b_proj itself (prefill's block-FP8 up-projection) when the
// latent dim is whole groups of 128; otherwise only its bf16 form.
TEST(MlaWeights, LayersCarryTheBlockFp8KvBProjForWholeLatentGroups) {
  MlaConfig cfg = small_config();
  cfg.kv_lora_rank = 256;
  const WeightStore ws = make_mla_weights(cfg, 2, 9);
  for (int64_t i = 0; i < 2; ++i) {
    const MlaLayerWeights& w = ws.layer(i);
    const BlockFp8Weight kvb = kv_b_proj_of(ws, i);
    ASSERT_FALSE(w.kv_b_proj_fp8.empty());
    EXPECT_TRUE(same_bytes(w.kv_b_proj_fp8.weight, kvb.weight));
    EXPECT_TRUE(same_bytes(w.kv_b_proj_fp8.weight_scale_inv, kvb.weight_scale_inv));
    EXPECT_TRUE(same_bytes(w.kv_b_proj, dequantize_block_fp8_bf16(kvb)));
  }
  EXPECT_TRUE(make_mla_weights(small_config(), 1, 9).layer(0).kv_b_proj_fp8.empty())
      << "L = 160 is no whole number of groups of 128";
  BlockFp8Weight bad = kv_b_proj_of(ws, 0);
  bad.weight_scale_inv = Tensor::empty(DType::kF32, {1, 1});
  EXPECT_THROW(mla_layer_weights_from_block_fp8(bad, cfg), Error);
}

TEST(MlaWeights, DeterministicBySeedAndDifferentAcrossSeedsAndLayers) {
  const MlaConfig cfg = small_config();
  const WeightStore a = make_mla_weights(cfg, 2, 11);
  const WeightStore b = make_mla_weights(cfg, 2, 11);
  const WeightStore c = make_mla_weights(cfg, 2, 12);
  for (const auto& [name, t] : a.tensors) {
    EXPECT_TRUE(same_bytes(t, b.tensors.at(name))) << name;
    EXPECT_FALSE(same_bytes(t, c.tensors.at(name))) << name;
  }
  EXPECT_TRUE(same_bytes(a.layer(1).w_uv, b.layer(1).w_uv));
  EXPECT_FALSE(
      same_bytes(a.tensors.at(o_proj_weight_name(0)), a.tensors.at(o_proj_weight_name(1))));
  // Streams are per (layer, tensor, block row): adding layers leaves layer 0 unchanged.
  const WeightStore one = make_mla_weights(cfg, 1, 11);
  EXPECT_TRUE(
      same_bytes(one.tensors.at(o_proj_weight_name(0)), a.tensors.at(o_proj_weight_name(0))));
}

TEST(MlaWeights, MagnitudesLikeARealModel) {
  MlaConfig cfg = small_config();
  cfg.num_heads = 8;
  cfg.kv_lora_rank = 512;
  const WeightStore ws = make_mla_weights(cfg, 1, 3);
  const Tensor kvb = dequantize_block_fp8(kv_b_proj_of(ws, 0));
  double sq = 0;
  for (int64_t i = 0; i < kvb.numel(); ++i)
    sq += double(kvb.data<float>()[i]) * kvb.data<float>()[i];
  const double std = std::sqrt(sq / kvb.numel());
  // 2/sqrt(L) times a block factor 2^u (u uniform in [-1, 1]: E[4^u] = 1.35).
  EXPECT_GT(std, 2.0 / std::sqrt(512.0) * 0.8);
  EXPECT_LT(std, 2.0 / std::sqrt(512.0) * 1.6);
  // Block scales differ (a real checkpoint's do).
  const Tensor& s = ws.tensors.at(kv_b_proj_scale_name(0));
  float lo = 1e30f, hi = 0.0f;
  for (int64_t i = 0; i < s.numel(); ++i) {
    lo = std::min(lo, s.data<float>()[i]);
    hi = std::max(hi, s.data<float>()[i]);
  }
  EXPECT_GT(hi / lo, 1.5f);
}

TEST(MlaWeights, BadConfigsThrow) {
  MlaConfig cfg = small_config();
  EXPECT_THROW(make_mla_weights(cfg, 0, 1), Error);
  cfg.num_heads = 0;
  EXPECT_THROW(make_mla_weights(cfg, 1, 1), Error);
  EXPECT_THROW(
      mla_layer_weights_from_kv_b_proj(Tensor::empty(DType::kBF16, {3, 3}), small_config()), Error);
}

}  // namespace
}  // namespace mlafuse::models
