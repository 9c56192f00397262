// The o_proj reference (SPEC 7): linear_fp8_block with group-128, group-64 (every scale layout)
// and per-tensor activation scales, and linear_nvfp4, against a double-precision sum; padded rows;
// bad arguments.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "cpu/oracle.h"
#include "cpu/ref_test_util.h"
#include "mlafuse/backends/cpu/reference.h"
#include "mlafuse/quant/codecs.h"
#include "mlafuse/quant/scale_layout.h"

namespace mlafuse {
namespace {

using testing::expect_error;
using testing::scalar_f32;

// Random finite e4m3 codes (NaN codes 0x7f / 0xff excluded).
Tensor random_codes(std::vector<int64_t> shape, uint32_t seed) {
  Tensor t = Tensor::empty(DType::kFp8E4M3, std::move(shape));
  std::mt19937 rng(seed);
  for (int64_t i = 0; i < t.numel(); ++i) {
    uint8_t c;
    do {
      c = static_cast<uint8_t>(rng());
    } while ((c & 0x7f) == 0x7f);
    t.data<uint8_t>()[i] = c;
  }
  return t;
}

Tensor random_scales(std::vector<int64_t> shape, std::vector<int64_t> strides, int64_t numel,
                     uint32_t seed) {
  Tensor t = Tensor::empty_strided(DType::kF32, std::move(shape), std::move(strides), numel);
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(-12.0f, -4.0f);
  for (int64_t i = 0; i < numel; ++i) t.data<float>()[i] = std::exp2(u(rng));
  return t;
}

// y within bf16 rounding of the double sum: |y - ref| <= 2^-8 |ref| + 1e-6 sum |terms| (the f32
// accumulation error is far below the second term).
void expect_close(const Tensor& y, int64_t t, int64_t o, double ref, double abs_sum) {
  const double got = bf16_bits_to_f32(y.data<uint16_t>()[t * y.dim(1) + o]);
  ASSERT_LE(std::fabs(got - ref), std::ldexp(std::fabs(ref), -8) + 1e-6 * abs_sum)
      << "t " << t << " o " << o;
}

TEST(LinearFp8Block, HandComputed) {
  // K = 128 (one block), N = 1: x = [1, 2, 0, ...] * xs 0.5, w = [3, 0.5, ...] * ws 2.
  Tensor xq = Tensor::empty(DType::kFp8E4M3, {1, 128});
  Tensor wq = Tensor::empty(DType::kFp8E4M3, {1, 128});
  xq.data<uint8_t>()[0] = f32_to_e4m3(1.0f);
  xq.data<uint8_t>()[1] = f32_to_e4m3(2.0f);
  wq.data<uint8_t>()[0] = f32_to_e4m3(3.0f);
  wq.data<uint8_t>()[1] = f32_to_e4m3(0.5f);
  wq.data<uint8_t>()[2] = f32_to_e4m3(448.0f);  // x[2] = 0: contributes nothing
  Tensor xs = Tensor::empty(DType::kF32, {1, 1});
  xs.data<float>()[0] = 0.5f;
  Tensor ws = Tensor::empty(DType::kF32, {1, 1});
  ws.data<float>()[0] = 2.0f;
  const Tensor y = ref::linear_fp8_block(xq, xs, wq, ws, 1);
  // (1*0.5)*(3*2) + (2*0.5)*(0.5*2) = 3 + 1 = 4
  EXPECT_EQ(bf16_bits_to_f32(y.data<uint16_t>()[0]), 4.0f);
  const Tensor y_static = ref::linear_fp8_block(xq, scalar_f32(0.25f), wq, ws, 1);
  EXPECT_EQ(bf16_bits_to_f32(y_static.data<uint16_t>()[0]), 2.0f);
}

TEST(LinearFp8Block, MatchesDoubleSumEveryScaleLayoutPadded) {
  struct Case {
    int64_t t_pad, n, k, nn, g;
  };
  const Case cases[] = {{5, 3, 256, 130, 128},
                        {4, 4, 384, 64, 64},
                        {9, 7, 192, 129, 64},
                        {1, 1, 128, 200, 128},
                        {6, 0, 128, 16, 128}};
  for (const Case& c : cases) {
    const Tensor xq = random_codes({c.t_pad, c.k}, 1);
    const Tensor wq = random_codes({c.nn, c.k}, 2);
    const Tensor ws =
        random_scales({ceil_div(c.nn, 128), ceil_div(c.k, 128)}, {ceil_div(c.k, 128), 1},
                      ceil_div(c.nn, 128) * ceil_div(c.k, 128), 3);
    for (int layout = 0; layout < 4; ++layout) {  // row, col, col+tma, per-tensor
      const int64_t groups = c.k / c.g;
      Tensor xs;
      if (layout == 3) {
        xs = scalar_f32(0.0123f);
      } else {
        const GroupScaleLayout l{c.t_pad, groups, layout >= 1, layout == 2};
        xs = random_scales({c.t_pad, groups}, {l.token_stride(), l.group_stride()},
                           l.storage_numel(), 4);
      }
      const Tensor y = ref::linear_fp8_block(xq, xs, wq, ws, c.n);
      ASSERT_EQ(y.shape(), (std::vector<int64_t>{c.t_pad, c.nn}));
      for (int64_t t = 0; t < c.t_pad; ++t) {
        for (int64_t o = 0; o < c.nn; ++o) {
          if (t >= c.n) {
            ASSERT_EQ(y.data<uint16_t>()[t * c.nn + o], 0) << "padded row " << t;
            continue;
          }
          double ref = 0, abs_sum = 0;
          for (int64_t k = 0; k < c.k; ++k) {
            const double sx =
                layout == 3 ? xs.data<float>()[0]
                            : xs.data<float>()[t * xs.strides()[0] + (k / c.g) * xs.strides()[1]];
            const double term = oracle::e4m3_value(xq.data<uint8_t>()[t * c.k + k]) * sx *
                                oracle::e4m3_value(wq.data<uint8_t>()[o * c.k + k]) *
                                ws.data<float>()[(o / 128) * ceil_div(c.k, 128) + k / 128];
            ref += term;
            abs_sum += std::fabs(term);
          }
          expect_close(y, t, o, ref, abs_sum);
        }
      }
    }
  }
}

TEST(LinearNvfp4, MatchesDoubleSumOfSpecDequant) {
  const int64_t t_pad = 130, n = 129, k = 96, nn = 40;
  Tensor xq = Tensor::empty(DType::kU8, {t_pad, k / 2});
  std::mt19937 rng(5);
  for (int64_t i = 0; i < xq.numel(); ++i) xq.data<uint8_t>()[i] = static_cast<uint8_t>(rng());
  const Nvfp4ScaleLayout l{t_pad, k};
  Tensor sf = Tensor::empty(DType::kFp8E4M3, {l.padded_rows(), l.padded_cols()});
  for (int64_t i = 0; i < sf.numel(); ++i) {
    sf.data<uint8_t>()[i] = static_cast<uint8_t>(0x20 + rng() % 0x40);  // positive, finite
  }
  const float gs = 448.0f * 6.0f / 3.7f;
  const Tensor wq = random_codes({nn, k}, 6);
  const Tensor ws = random_scales({1, 1}, {1, 1}, 1, 7);
  const Tensor y = ref::linear_nvfp4(xq, sf, scalar_f32(gs), wq, ws, n);
  for (int64_t t = 0; t < t_pad; ++t) {
    for (int64_t o = 0; o < nn; ++o) {
      if (t >= n) {
        ASSERT_EQ(y.data<uint16_t>()[t * nn + o], 0);
        continue;
      }
      double ref = 0, abs_sum = 0;
      for (int64_t kk = 0; kk < k; ++kk) {
        const uint8_t byte = xq.data<uint8_t>()[t * k / 2 + kk / 2];
        const uint8_t code = kk % 2 ? byte >> 4 : byte & 0xf;
        const float sfv =
            static_cast<float>(oracle::e4m3_value(sf.data<uint8_t>()[l.offset(t, kk / 16)]));
        const float x = oracle::div_f32(oracle::mul_f32(e2m1_to_f32(code), sfv), gs);
        const double term = static_cast<double>(x) *
                            oracle::e4m3_value(wq.data<uint8_t>()[o * k + kk]) *
                            ws.data<float>()[0];
        ref += term;
        abs_sum += std::fabs(term);
      }
      expect_close(y, t, o, ref, abs_sum);
    }
  }
}

TEST(LinearFp8Block, BadArguments) {
  const Tensor xq = random_codes({4, 256}, 1);
  const Tensor wq = random_codes({130, 256}, 2);
  const Tensor ws = Tensor::empty(DType::kF32, {2, 2});
  const Tensor xs = Tensor::empty(DType::kF32, {4, 2});
  EXPECT_NO_THROW(ref::linear_fp8_block(xq, xs, wq, ws, 4));
  const Tensor xs32 = Tensor::empty(DType::kF32, {4, 8});
  expect_error([&] { ref::linear_fp8_block(xq, xs32, wq, ws, 4); }, {"xs", "32", "128 or 64"});
  const Tensor xs_rows = Tensor::empty(DType::kF32, {3, 2});
  expect_error([&] { ref::linear_fp8_block(xq, xs_rows, wq, ws, 4); }, {"xs", "[4, K/G]"});
  const Tensor wq_k = random_codes({130, 128}, 3);
  expect_error([&] { ref::linear_fp8_block(xq, xs, wq_k, ws, 4); }, {"wq", "K = 256"});
  const Tensor ws_bad = Tensor::empty(DType::kF32, {1, 2});
  expect_error([&] { ref::linear_fp8_block(xq, xs, wq, ws_bad, 4); }, {"ws", "[2, 2]"});
  expect_error([&] { ref::linear_fp8_block(xq, xs, wq, ws, 5); }, {"n = 5"});
  const Tensor xq_bf16 = Tensor::empty(DType::kBF16, {4, 256});
  expect_error([&] { ref::linear_fp8_block(xq_bf16, xs, wq, ws, 4); }, {"xq", "fp8e4m3"});
  const Tensor x_nv = Tensor::empty(DType::kU8, {4, 128});
  const Tensor sf_bad = Tensor::empty(DType::kU8, {4, 16});
  expect_error([&] { ref::linear_nvfp4(x_nv, sf_bad, scalar_f32(1), wq, ws, 4); },
               {"sf", "[128, 16]"});
  const Tensor sf = Tensor::empty(DType::kU8, {128, 16});
  expect_error([&] { ref::linear_nvfp4(x_nv, sf, scalar_f32(0), wq, ws, 4); }, {"global_scale"});
}

}  // namespace
}  // namespace mlafuse
