// The reference quantizers (SPEC 3.1-3.3, 6): hand-computed cases, an independent double-precision
// oracle (tests/cpu/oracle.h) over random inputs in every dtype and scale layout, NaN/Inf
// semantics, padded batches over poisoned buffers, and bad arguments.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "cpu/oracle.h"
#include "cpu/ref_test_util.h"
#include "mlafuse/backends/cpu/reference.h"
#include "mlafuse/quant/codecs.h"
#include "mlafuse/quant/scale_layout.h"

namespace mlafuse {
namespace {

using testing::expect_error;
using testing::make_act;
using testing::poison;
using testing::random_acts;
using testing::scalar_f32;

constexpr float kInf = std::numeric_limits<float>::infinity();
const float kNaN = std::numeric_limits<float>::quiet_NaN();

Tensor group_scales(int64_t t_pad, int64_t groups, bool col_major, bool tma) {
  const GroupScaleLayout l{t_pad, groups, col_major, tma};
  return Tensor::empty_strided(DType::kF32, {t_pad, groups}, {l.token_stride(), l.group_stride()},
                               l.storage_numel());
}

Tensor nvfp4_scales(int64_t t_pad, int64_t d) {
  const Nvfp4ScaleLayout l{t_pad, d};
  return Tensor::empty(DType::kU8, {l.padded_rows(), l.padded_cols()});
}

// ---- static FP8 (SPEC 3.1) -------------------------------------------------------------------
TEST(QuantFp8Static, HandComputed) {
  // scale 2 -> inv 0.5: 1 -> 0.5, -2 -> -1, 448 -> 224, 1000 -> 500 saturates to 448,
  // 896 -> exactly 448, NaN keeps its sign (0x7f, 0xff), -inf saturates,
  // 0.3 -> 0.15 -> nearest e4m3 0.15625.
  const std::vector<float> x = {1, -2, 448, 1000, 896, kNaN, -kInf, 0.3f, -kNaN};
  Tensor xt = make_act(DType::kF32, {1, 9}, x);
  Tensor q = Tensor::empty(DType::kFp8E4M3, {1, 9});
  ref::quant_fp8_static(xt, 1, scalar_f32(2.0f), q);
  const std::vector<uint8_t> want = {0x30, 0xb8, 0x76, 0x7e, 0x7e, 0x7f, 0xfe, 0x22, 0xff};
  for (size_t i = 0; i < want.size(); ++i) {
    EXPECT_EQ(q.data<uint8_t>()[i], want[i]) << "element " << i;
  }
  EXPECT_EQ(e4m3_to_f32(0x22), 0.15625f);
}

TEST(QuantFp8Static, MatchesOracleEveryDtypePadded) {
  for (DType dt : {DType::kBF16, DType::kF16, DType::kF32}) {
    const int64_t t_pad = 9, n = 6, d = 80;
    const auto x = random_acts(dt, t_pad, d, 3);
    Tensor xt = make_act(dt, {t_pad, d}, x);
    Tensor q = Tensor::empty(DType::kFp8E4M3, {t_pad, d});
    poison(q);
    const float scale = 0.37f;
    ref::quant_fp8_static(xt, n, scalar_f32(scale), q);
    for (int64_t t = 0; t < t_pad; ++t) {
      const auto want = oracle::quant_static_row(x.data() + t * d, d, scale);
      for (int64_t i = 0; i < d; ++i) {
        const uint8_t got = q.data<uint8_t>()[t * d + i];
        if (t < n) {
          ASSERT_EQ(got, want[static_cast<size_t>(i)]) << dtype_name(dt) << " t=" << t;
        } else {
          ASSERT_EQ(got, 0xab) << "row " << t << " >= n was written";
        }
      }
    }
  }
}

TEST(QuantFp8Static, BadArguments) {
  Tensor x = Tensor::empty(DType::kBF16, {4, 32});
  Tensor q = Tensor::empty(DType::kFp8E4M3, {4, 32});
  expect_error([&] { ref::quant_fp8_static(x, 5, scalar_f32(1), q); }, {"n = 5", "4"});
  expect_error([&] { ref::quant_fp8_static(x, 4, scalar_f32(0), q); }, {"scale", "positive"});
  expect_error([&] { ref::quant_fp8_static(x, 4, scalar_f32(kNaN), q); }, {"scale"});
  Tensor two = Tensor::empty(DType::kF32, {2});
  expect_error([&] { ref::quant_fp8_static(x, 4, two, q); }, {"scale", "f32[2]"});
  Tensor q_bad = Tensor::empty(DType::kFp8E4M3, {4, 16});
  expect_error([&] { ref::quant_fp8_static(x, 4, scalar_f32(1), q_bad); }, {"q", "[4, 32]"});
  Tensor q_f32 = Tensor::empty(DType::kF32, {4, 32});
  expect_error([&] { ref::quant_fp8_static(x, 4, scalar_f32(1), q_f32); }, {"q", "fp8e4m3"});
  Tensor x_i32 = Tensor::empty(DType::kI32, {4, 32});
  expect_error([&] { ref::quant_fp8_static(x_i32, 4, scalar_f32(1), q); }, {"x", "i32[4, 32]"});
  Tensor x3 = Tensor::empty(DType::kBF16, {4, 32, 1});
  expect_error([&] { ref::quant_fp8_static(x3, 4, scalar_f32(1), q); }, {"x", "rank 2"});
  // u8 is accepted for the codes (docs/ops.md).
  Tensor q_u8 = Tensor::empty(DType::kU8, {4, 32});
  EXPECT_NO_THROW(ref::quant_fp8_static(x, 4, scalar_f32(1), q_u8));
}

// ---- group FP8 (SPEC 3.2) --------------------------------------------------------------------
TEST(QuantFp8Group, HandComputed) {
  // G = 16, 3 groups: amax 448 (s = 1), all zeros (s = eps/448), amax 7 (s = 1/64).
  std::vector<float> x(48, 0.0f);
  for (int i = 0; i < 16; ++i) x[i] = (i % 2 ? -1.0f : 1.0f) * static_cast<float>(i * 28 + 28);
  x[20] = 0.0f;
  x[32] = 7.0f;
  x[33] = -3.5f;
  x[34] = 0.01f;
  Tensor xt = make_act(DType::kF32, {1, 48}, x);
  Tensor q = Tensor::empty(DType::kFp8E4M3, {1, 48});
  Tensor s = group_scales(1, 3, false, false);
  ref::Fp8GroupParams p;
  p.group_size = 16;
  ref::quant_fp8_group(xt, 1, p, q, s);
  const float* sd = s.data<float>();
  EXPECT_EQ(sd[0], 448.0f / 448.0f);
  EXPECT_EQ(sd[1], 1e-10f / 448.0f);
  EXPECT_EQ(sd[2], 7.0f / 448.0f);
  const uint8_t* qd = q.data<uint8_t>();
  for (int i = 0; i < 16; ++i) EXPECT_EQ(qd[i], f32_to_e4m3(x[i])) << i;  // s = 1: codes of x
  EXPECT_EQ(qd[15], 0xfe) << "-448";
  EXPECT_EQ(qd[2], 0x6a) << "84 ties between 80 and 88: even code (80)";
  for (int i = 16; i < 32; ++i) EXPECT_EQ(qd[i], 0x00) << "all-zero group codes are 0";
  EXPECT_EQ(qd[32], 0x7e) << "the group max maps to 448";
  EXPECT_EQ(qd[33], 0xf6) << "-3.5 / (7/448) = -224";
  EXPECT_EQ(e4m3_to_f32(qd[34]), 0.625f) << "0.01 / 2^-6 = 0.64 -> 0.625";
}

TEST(QuantFp8Group, Ue8m0OnExactPowersOfTwoAndJustAbove) {
  // amax 448 -> s = 1 exactly (stays 1); amax just above 448 -> s just above 1 -> 2;
  // amax 224 -> 0.5; amax 300 -> 0.6696 -> 1; amax 448 * 2^-20 -> 2^-20.
  const float above = std::nextafter(448.0f, kInf);
  const std::vector<float> amaxes = {448.0f, above, 224.0f, 300.0f, std::ldexp(448.0f, -20)};
  const std::vector<float> want = {1.0f, 2.0f, 0.5f, 1.0f, std::ldexp(1.0f, -20)};
  std::vector<float> x(16 * amaxes.size(), 0.0f);
  for (size_t j = 0; j < amaxes.size(); ++j) x[j * 16 + 3] = -amaxes[j];
  Tensor xt = make_act(DType::kF32, {1, static_cast<int64_t>(x.size())}, x);
  Tensor q = Tensor::empty(DType::kFp8E4M3, xt.shape());
  Tensor s = group_scales(1, static_cast<int64_t>(amaxes.size()), true, true);
  ref::Fp8GroupParams p;
  p.group_size = 16;
  p.ue8m0 = true;
  p.col_major = true;
  p.tma_aligned = true;
  ref::quant_fp8_group(xt, 1, p, q, s);
  for (size_t j = 0; j < amaxes.size(); ++j) {
    const float sc = s.data<float>()[s.strides()[1] * static_cast<int64_t>(j)];
    EXPECT_EQ(sc, want[j]) << "group " << j;
    // In ue8m0 mode x / s is exact: the code is e4m3(-amax / s).
    EXPECT_EQ(q.data<uint8_t>()[j * 16 + 3], f32_to_e4m3(-amaxes[j] / want[j])) << j;
  }
  EXPECT_EQ(q.data<uint8_t>()[16 + 3], 0xf6) << "-448.00003 / 2 = -224.00002 -> -224";
}

TEST(QuantFp8Group, NanAndInfSemantics) {
  // NaN is ignored by amax and gives a NaN code with its sign. +-Inf makes amax inf, so the scale
  // is inf: the Inf element gives inf / inf, a NaN made by the arithmetic, coded 0xff whatever
  // the platform's NaN sign; its finite neighbours give 0.
  std::vector<float> x(32, 1.0f);
  x[0] = kNaN;
  x[1] = 2.0f;
  x[2] = -kNaN;
  x[16] = -kInf;
  x[17] = 5.0f;
  x[18] = kInf;
  for (bool ue8m0 : {false, true}) {
    Tensor xt = make_act(DType::kBF16, {1, 32}, x);
    Tensor q = Tensor::empty(DType::kFp8E4M3, {1, 32});
    Tensor s = group_scales(1, 2, false, false);
    ref::Fp8GroupParams p;
    p.group_size = 16;
    p.ue8m0 = ue8m0;
    ref::quant_fp8_group(xt, 1, p, q, s);
    const uint8_t* qd = q.data<uint8_t>();
    EXPECT_EQ(s.data<float>()[0], ue8m0 ? 0.0078125f : 2.0f / 448.0f) << "NaN ignored by amax";
    EXPECT_EQ(qd[0], 0x7f);
    EXPECT_EQ(qd[2], 0xff);
    EXPECT_EQ(qd[1], ue8m0 ? 0x78 : 0x7e);  // 2 / 2^-7 = 256; 2 / (2/448) = 448
    EXPECT_TRUE(std::isinf(s.data<float>()[1]));
    EXPECT_EQ(qd[16], 0xff) << "-inf / inf: NaN made by the arithmetic";
    EXPECT_EQ(qd[17], 0x00) << "finite / inf is +0";
    EXPECT_EQ(qd[18], 0xff) << "+inf / inf: NaN made by the arithmetic";
  }
}

// A signalling NaN is ignored by amax like any NaN (std::fmax on glibc returned NaN for it, which
// restarted the fold: the group's scale became eps / 448). Same codes and scales as with a quiet
// NaN in its place, for group FP8 and NVFP4.
TEST(QuantFp8Group, SignallingNanIsIgnoredLikeAQuietOne) {
  for (const float nan : {std::numeric_limits<float>::signaling_NaN(), kNaN}) {
    std::vector<float> x(32, 1.0f);
    x[0] = 2.0f;
    x[15] = nan;  // the group's last element: nothing after it restarts the fold
    x[16] = 0.5f;
    x[31] = nan;
    Tensor xt = make_act(DType::kF32, {1, 32}, x);
    Tensor q = Tensor::empty(DType::kFp8E4M3, {1, 32});
    Tensor s = group_scales(1, 2, false, false);
    ref::Fp8GroupParams p;
    p.group_size = 16;
    ref::quant_fp8_group(xt, 1, p, q, s);
    EXPECT_EQ(s.data<float>()[0], 2.0f / 448.0f);
    EXPECT_EQ(s.data<float>()[1], 1.0f / 448.0f);
    EXPECT_EQ(q.data<uint8_t>()[1], 0x76) << "1 / (2/448) = 224";
    Tensor q4 = Tensor::empty(DType::kU8, {1, 16});
    Tensor sf = nvfp4_scales(1, 32);
    ref::quant_nvfp4(xt, 1, scalar_f32(2.625f), q4, sf);
    const Nvfp4ScaleLayout l{1, 32};
    EXPECT_EQ(sf.data<uint8_t>()[l.offset(0, 0)], f32_to_e4m3(2.625f * 2.0f / 6.0f));
    EXPECT_EQ(sf.data<uint8_t>()[l.offset(0, 1)], f32_to_e4m3(2.625f * 1.0f / 6.0f));
  }
}

TEST(QuantFp8Group, EveryLayoutMatchesOracleAndPaddedBatchWritesNothingPastN) {
  struct Case {
    DType dt;
    int64_t t_pad, n, d, g;
  };
  const Case cases[] = {{DType::kBF16, 7, 5, 256, 128}, {DType::kF16, 7, 7, 256, 64},
                        {DType::kF32, 10, 3, 96, 32},   {DType::kBF16, 1, 1, 128, 128},
                        {DType::kBF16, 13, 0, 64, 64},  {DType::kF32, 5, 4, 48, 16}};
  for (const Case& c : cases) {
    const auto x = random_acts(c.dt, c.t_pad, c.d, static_cast<uint32_t>(c.t_pad * c.d));
    Tensor xt = make_act(c.dt, {c.t_pad, c.d}, x);
    const int64_t groups = c.d / c.g;
    for (int flags = 0; flags < 8; ++flags) {
      ref::Fp8GroupParams p;
      p.group_size = c.g;
      p.ue8m0 = flags & 1;
      p.col_major = flags & 2;
      p.tma_aligned = flags & 4;
      Tensor q = Tensor::empty(DType::kFp8E4M3, {c.t_pad, c.d});
      Tensor s = group_scales(c.t_pad, groups, p.col_major, p.tma_aligned);
      poison(q);
      poison(s);
      ref::quant_fp8_group(xt, c.n, p, q, s);
      const GroupScaleLayout l{c.t_pad, groups, p.col_major, p.tma_aligned};
      std::vector<bool> written(static_cast<size_t>(l.storage_numel()), false);
      std::vector<uint8_t> wq;
      std::vector<float> ws;
      for (int64_t t = 0; t < c.n; ++t) {
        oracle::quant_group_row(x.data() + t * c.d, c.d, c.g, p.ue8m0, 1e-10f, &wq, &ws);
        for (int64_t i = 0; i < c.d; ++i) {
          ASSERT_EQ(q.data<uint8_t>()[t * c.d + i], wq[static_cast<size_t>(i)])
              << dtype_name(c.dt) << " flags " << flags << " t " << t << " i " << i;
        }
        for (int64_t j = 0; j < groups; ++j) {
          const int64_t off = l.offset(t, j);
          ASSERT_EQ(static_cast<const float*>(s.storage()->data)[off], ws[static_cast<size_t>(j)])
              << "flags " << flags << " t " << t << " g " << j;
          written[static_cast<size_t>(off)] = true;
        }
      }
      for (int64_t b = c.n * c.d; b < c.t_pad * c.d; ++b) {
        ASSERT_TRUE(testing::byte_is(q, b)) << "q byte " << b << " past n written";
      }
      for (int64_t e = 0; e < l.storage_numel(); ++e) {
        if (written[static_cast<size_t>(e)]) continue;
        for (int64_t b = 0; b < 4; ++b) {
          ASSERT_TRUE(testing::byte_is(s, e * 4 + b))
              << "scale slot " << e << " written, flags " << flags;
        }
      }
    }
  }
}

TEST(QuantFp8Group, NanAndInfSprinkledMatchOracle) {
  const int64_t t = 6, d = 128;
  auto x = random_acts(DType::kF32, t, d, 99);
  for (size_t i = 0; i < x.size(); i += 37) x[i] = (i % 3 == 0) ? kNaN : -kNaN;
  x[200] = kInf;
  x[500] = -kInf;
  Tensor xt = make_act(DType::kF32, {t, d}, x);
  for (int64_t g : {16, 64}) {
    for (bool ue8m0 : {false, true}) {
      ref::Fp8GroupParams p;
      p.group_size = g;
      p.ue8m0 = ue8m0;
      Tensor q = Tensor::empty(DType::kFp8E4M3, {t, d});
      Tensor s = group_scales(t, d / g, false, false);
      ref::quant_fp8_group(xt, t, p, q, s);
      std::vector<uint8_t> wq;
      std::vector<float> ws;
      for (int64_t r = 0; r < t; ++r) {
        oracle::quant_group_row(x.data() + r * d, d, g, ue8m0, 1e-10f, &wq, &ws);
        for (int64_t i = 0; i < d; ++i) {
          ASSERT_EQ(q.data<uint8_t>()[r * d + i], wq[static_cast<size_t>(i)]) << r << " " << i;
        }
        for (int64_t j = 0; j < d / g; ++j) {
          ASSERT_EQ(f32_bits(s.data<float>()[r * (d / g) + j]),
                    f32_bits(ws[static_cast<size_t>(j)]));
        }
      }
    }
  }
  Tensor q = Tensor::empty(DType::kFp8E4M3, {t, d});
  ref::quant_fp8_static(xt, t, scalar_f32(0.25f), q);
  for (int64_t r = 0; r < t; ++r) {
    const auto want = oracle::quant_static_row(x.data() + r * d, d, 0.25f);
    for (int64_t i = 0; i < d; ++i) ASSERT_EQ(q.data<uint8_t>()[r * d + i], want[i]);
  }
}

TEST(QuantFp8Group, ValuesAtAndBeyond448) {
  // Huge values set the scale, so the group max maps to +-448 exactly and nothing saturates.
  std::vector<float> x(16);
  for (int i = 0; i < 16; ++i) x[i] = (i % 2 ? -1.0f : 1.0f) * (448.0f + 1000.0f * i);
  Tensor xt = make_act(DType::kF32, {1, 16}, x);
  Tensor q = Tensor::empty(DType::kFp8E4M3, {1, 16});
  Tensor s = group_scales(1, 1, false, false);
  ref::Fp8GroupParams p;
  p.group_size = 16;
  ref::quant_fp8_group(xt, 1, p, q, s);
  EXPECT_EQ(q.data<uint8_t>()[15], 0xfe);
  EXPECT_EQ(s.data<float>()[0], 15448.0f / 448.0f);
  std::vector<uint8_t> wq;
  std::vector<float> ws;
  oracle::quant_group_row(x.data(), 16, 16, false, 1e-10f, &wq, &ws);
  for (int i = 0; i < 16; ++i) EXPECT_EQ(q.data<uint8_t>()[i], wq[static_cast<size_t>(i)]);
}

TEST(QuantFp8Group, BadArguments) {
  Tensor x = Tensor::empty(DType::kBF16, {4, 256});
  Tensor q = Tensor::empty(DType::kFp8E4M3, {4, 256});
  ref::Fp8GroupParams p;
  Tensor s = group_scales(4, 2, false, false);
  EXPECT_NO_THROW(ref::quant_fp8_group(x, 4, p, q, s));
  p.group_size = 96;
  expect_error([&] { ref::quant_fp8_group(x, 4, p, q, s); }, {"group_size 96", "bf16[4, 256]"});
  p.group_size = 24;
  expect_error([&] { ref::quant_fp8_group(x, 4, p, q, s); }, {"group_size 24"});
  p.group_size = 128;
  p.eps = 0.0f;
  expect_error([&] { ref::quant_fp8_group(x, 4, p, q, s); }, {"eps"});
  // Positive, but eps / 448 is no normal f32: an all-zero group would code 0 / 0 as NaN.
  p.eps = 1e-44f;
  expect_error([&] { ref::quant_fp8_group(x, 4, p, q, s); }, {"eps", "448 * FLT_MIN"});
  p.eps = 6e-36f;  // the smallest accepted range: all-zero groups code 0
  std::memset(x.raw(), 0, x.storage()->bytes);
  ASSERT_NO_THROW(ref::quant_fp8_group(x, 4, p, q, s));
  for (int64_t i = 0; i < 4 * 256; ++i) ASSERT_EQ(q.data<uint8_t>()[i], 0) << i;
  p.eps = 1e-10f;
  // Scales in the wrong layout for the flags.
  p.col_major = true;
  expect_error([&] { ref::quant_fp8_group(x, 4, p, q, s); }, {"tensor s", "strides", "col_major"});
  Tensor s_cm = group_scales(4, 2, true, false);
  p.tma_aligned = true;
  Tensor s_tma5 = group_scales(5, 2, true, true);
  expect_error([&] { ref::quant_fp8_group(x, 4, p, q, s_tma5); }, {"tensor s", "[4, 2]"});
  Tensor x6 = Tensor::empty(DType::kBF16, {6, 256});
  Tensor q6 = Tensor::empty(DType::kFp8E4M3, {6, 256});
  Tensor s6 = group_scales(6, 2, true, false);  // stride 6, the TMA layout needs 8
  expect_error([&] { ref::quant_fp8_group(x6, 6, p, q6, s6); }, {"tensor s", "[1, 8]"});
  p.tma_aligned = false;
  EXPECT_NO_THROW(ref::quant_fp8_group(x, 4, p, q, s_cm));
  Tensor s_wrong = group_scales(4, 4, true, false);
  expect_error([&] { ref::quant_fp8_group(x, 4, p, q, s_wrong); }, {"tensor s", "[4, 2]"});
  expect_error([&] { ref::quant_fp8_group(x, -1, p, q, s_cm); }, {"n = -1"});
}

// ---- NVFP4 (SPEC 3.3) ------------------------------------------------------------------------
TEST(QuantNvfp4, HandComputed) {
  // Block 0: amax 6 and GS 1 -> sf = e4m3(1) -> out_scale 1, codes are e2m1(x).
  // Block 1: zeros -> sf 0 -> out_scale 0 -> codes 0.
  // Block 2: amax 3, GS 448*6/3 = 896: sf = e4m3(896*3/6 = 448) -> out_scale 2: x*2.
  std::vector<float> x(48, 0.0f);
  const float b0[16] = {6, -6, 0.5f,  0.75f, 1,    1.25f, 2.5f, -3,
                        4, 5,  0.25f, -0.3f, 1.5f, 1.75f, 3.5f, 0};
  for (int i = 0; i < 16; ++i) x[i] = b0[i];
  x[32] = 3.0f;
  x[33] = -0.75f;
  Tensor xt = make_act(DType::kF32, {1, 48}, x);
  Tensor q = Tensor::empty(DType::kU8, {1, 24});
  Tensor sf = nvfp4_scales(1, 48);
  ref::quant_nvfp4(xt, 1, scalar_f32(1.0f), q, sf);
  const Nvfp4ScaleLayout l{1, 48};
  EXPECT_EQ(sf.data<uint8_t>()[l.offset(0, 0)], 0x38);
  EXPECT_EQ(sf.data<uint8_t>()[l.offset(0, 1)], 0x00);
  EXPECT_EQ(sf.data<uint8_t>()[l.offset(0, 2)], f32_to_e4m3(0.5f));
  EXPECT_EQ(sf.data<uint8_t>()[l.offset(0, 3)], 0x00) << "padding column";
  const uint8_t* qd = q.data<uint8_t>();
  for (int i = 0; i < 8; ++i) EXPECT_EQ(qd[i], pack_e2m1x2(b0[2 * i], b0[2 * i + 1])) << i;
  EXPECT_EQ(qd[0], 0xf7);
  for (int i = 8; i < 16; ++i) EXPECT_EQ(qd[i], 0x00);

  Tensor q2 = Tensor::empty(DType::kFp4E2M1x2, {1, 24});
  ref::quant_nvfp4(xt, 1, scalar_f32(896.0f), q2, sf);
  EXPECT_EQ(sf.data<uint8_t>()[l.offset(0, 2)], 0x7e);
  EXPECT_EQ(q2.data<uint8_t>()[16], 0xb7) << "3*2 = 6 (0x7), -0.75*2 = -1.5 (0xb)";
}

TEST(QuantNvfp4, MatchesOracleAndZeroesPaddingOnly) {
  struct Case {
    DType dt;
    int64_t t_pad, n, d;
  };
  const Case cases[] = {{DType::kBF16, 200, 5, 256},
                        {DType::kF16, 130, 129, 80},
                        {DType::kF32, 3, 3, 16},
                        {DType::kBF16, 256, 128, 2048},
                        {DType::kBF16, 64, 0, 64}};
  for (const Case& c : cases) {
    const auto x = random_acts(c.dt, c.t_pad, c.d, static_cast<uint32_t>(c.n + c.d));
    Tensor xt = make_act(c.dt, {c.t_pad, c.d}, x);
    const Nvfp4ScaleLayout l{c.t_pad, c.d};
    Tensor q = Tensor::empty(DType::kU8, {c.t_pad, c.d / 2});
    Tensor sf = nvfp4_scales(c.t_pad, c.d);
    for (const float gs : {448.0f * 6.0f / 37.0f, 1.0f, 3.1e4f, 0.013f}) {
      poison(q);
      poison(sf);
      ref::quant_nvfp4(xt, c.n, scalar_f32(gs), q, sf);
      std::vector<uint8_t> wq, wsf;
      for (int64_t t = 0; t < c.n; ++t) {
        oracle::quant_nvfp4_row(x.data() + t * c.d, c.d, gs, &wq, &wsf);
        for (int64_t i = 0; i < c.d / 2; ++i) {
          ASSERT_EQ(q.data<uint8_t>()[t * c.d / 2 + i], wq[static_cast<size_t>(i)])
              << t << " " << i;
        }
      }
      for (int64_t b = c.n * c.d / 2; b < c.t_pad * c.d / 2; ++b) {
        ASSERT_TRUE(testing::byte_is(q, b)) << "q byte past n written";
      }
      // Every scale byte: real rows hold the oracle's codes, padding inside round_up(n, 128) rows
      // is zero, everything beyond is untouched.
      const int64_t rows_written = round_up(c.n, 128);
      for (int64_t m = 0; m < l.padded_rows(); ++m) {
        if (m < c.n) oracle::quant_nvfp4_row(x.data() + m * c.d, c.d, gs, &wq, &wsf);
        for (int64_t k = 0; k < l.padded_cols(); ++k) {
          const uint8_t got = sf.data<uint8_t>()[l.offset(m, k)];
          if (m < c.n && k < c.d / 16) {
            ASSERT_EQ(got, wsf[static_cast<size_t>(k)]) << "m " << m << " k " << k;
          } else if (m < rows_written) {
            ASSERT_EQ(got, 0) << "padding at m " << m << " k " << k << " not zeroed";
          } else {
            ASSERT_EQ(got, 0xab) << "byte at m " << m << " k " << k << " beyond round_up(n,128)";
          }
        }
      }
    }
  }
}

TEST(QuantNvfp4, NanAndInfSemantics) {
  // NaN is ignored by the block amax and encodes as +6 (e2m1 has no NaN; the hardware's satfinite
  // conversion does the same). Inf makes the block scale saturate to 448 (e4m3 satfinite) and the
  // Inf element saturates to +-6.
  std::vector<float> x(32, 0.5f);
  x[0] = kNaN;
  x[1] = 3.0f;
  x[16] = -kInf;
  x[17] = 1.0f;
  Tensor xt = make_act(DType::kF32, {1, 32}, x);
  Tensor q = Tensor::empty(DType::kU8, {1, 16});
  Tensor sf = nvfp4_scales(1, 32);
  ref::quant_nvfp4(xt, 1, scalar_f32(2.0f), q, sf);
  const Nvfp4ScaleLayout l{1, 32};
  EXPECT_EQ(sf.data<uint8_t>()[l.offset(0, 0)], f32_to_e4m3(1.0f)) << "2*3/6: NaN ignored";
  EXPECT_EQ(q.data<uint8_t>()[0], 0x77) << "NaN -> 6 (0x7), 3*2/1 = 6 (0x7)";
  EXPECT_EQ(sf.data<uint8_t>()[l.offset(0, 1)], 0x7e);
  EXPECT_EQ(q.data<uint8_t>()[8] & 0xf, 0xf) << "-inf -> -6";
  EXPECT_EQ(q.data<uint8_t>()[8] >> 4, 0x0) << "1 * 2/448 rounds to 0";
}

TEST(QuantNvfp4, BadArguments) {
  Tensor x = Tensor::empty(DType::kBF16, {4, 64});
  Tensor q = Tensor::empty(DType::kU8, {4, 32});
  Tensor sf = nvfp4_scales(4, 64);
  EXPECT_NO_THROW(ref::quant_nvfp4(x, 4, scalar_f32(1), q, sf));
  Tensor x40 = Tensor::empty(DType::kBF16, {4, 40});
  Tensor q40 = Tensor::empty(DType::kU8, {4, 20});
  expect_error([&] { ref::quant_nvfp4(x40, 4, scalar_f32(1), q40, sf); }, {"multiple of 16"});
  Tensor sf_small = Tensor::empty(DType::kU8, {4, 4});
  expect_error([&] { ref::quant_nvfp4(x, 4, scalar_f32(1), q, sf_small); }, {"sf", "[128, 4]"});
  Tensor q_bad = Tensor::empty(DType::kU8, {4, 64});
  expect_error([&] { ref::quant_nvfp4(x, 4, scalar_f32(1), q_bad, sf); }, {"q", "[4, 32]"});
  expect_error([&] { ref::quant_nvfp4(x, 4, scalar_f32(-1), q, sf); }, {"global_scale"});
  Tensor sf_f32 = Tensor::empty(DType::kF32, {128, 4});
  expect_error([&] { ref::quant_nvfp4(x, 4, scalar_f32(1), q, sf_f32); }, {"sf", "fp8e4m3"});
}

}  // namespace
}  // namespace mlafuse
