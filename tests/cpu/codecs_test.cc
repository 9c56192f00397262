// The bit-exact codecs of quant/codecs.h against slow independent oracles: nearest-value search
// over every code with the ties-to-even rule, in double precision. Exhaustive over every bf16 bit
// pattern (and every f16/e4m3/e8m0 code), plus every rounding boundary +-1 ulp and random f32.
#include "mlafuse/quant/codecs.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <vector>

#include "cpu/oracle.h"

namespace mlafuse {
namespace {

using oracle::e4m3_mag;
using oracle::oracle_e2m1;
using oracle::oracle_e4m3;

float from_bits(uint32_t u) { return bits_f32(u); }

// ---- oracles ---------------------------------------------------------------------------------
// f32 -> bf16 bits by comparing the two bf16 neighbours in double; ties to the even pattern.
uint16_t oracle_bf16(float f) {
  const uint32_t u = f32_bits(f);
  const uint16_t sign = static_cast<uint16_t>((u >> 16) & 0x8000u);
  const uint32_t a = u & 0x7fffffffu;
  const uint16_t lo = static_cast<uint16_t>(a >> 16);
  if (lo == 0x7f80) return sign | 0x7f80;  // inf
  const uint16_t hi = lo + 1;
  const double vlo = bf16_bits_to_f32(lo);
  // Rounding past the largest finite value gives inf; weigh it as 2^128 (unbounded exponent).
  const double vhi = hi == 0x7f80 ? std::ldexp(1.0, 128) : bf16_bits_to_f32(hi);
  const double v = bits_f32(a);
  const double dlo = v - vlo;
  const double dhi = vhi - v;
  uint16_t r;
  if (dlo < dhi) {
    r = lo;
  } else if (dhi < dlo) {
    r = hi;
  } else {
    r = (lo % 2 == 0) ? lo : hi;
  }
  return sign | r;
}

// f16: sorted magnitudes of codes 0..0x7bff, nearest by binary search, ties to the even code.
const std::vector<double>& f16_mags() {
  static const std::vector<double> mags = [] {
    std::vector<double> m;
    for (int c = 0; c <= 0x7bff; ++c) {
      const int e = c >> 10;
      const int mant = c & 0x3ff;
      m.push_back(e == 0 ? std::ldexp(mant, -24) : std::ldexp(1024 + mant, e - 25));
    }
    return m;
  }();
  return mags;
}

uint16_t oracle_f16(float f) {
  const uint16_t sign = std::signbit(f) ? 0x8000 : 0;
  if (std::isnan(f)) return sign | 0x7e00;
  const double a = std::fabs(static_cast<double>(f));
  if (a >= 65520.0) return sign | 0x7c00;  // halfway between 65504 and 2^16 rounds to even: inf
  const auto& mags = f16_mags();
  const auto it = std::upper_bound(mags.begin(), mags.end(), a);
  const int hi = static_cast<int>(it - mags.begin());
  if (hi == static_cast<int>(mags.size())) return sign | 0x7bff;
  const int lo = hi - 1;
  const double dlo = a - mags[static_cast<size_t>(lo)];
  const double dhi = mags[static_cast<size_t>(hi)] - a;
  int r;
  if (dlo < dhi) {
    r = lo;
  } else if (dhi < dlo) {
    r = hi;
  } else {
    r = (lo % 2 == 0) ? lo : hi;
  }
  return sign | static_cast<uint16_t>(r);
}

// The f32 values worth testing around a boundary b: b itself and one ulp either side.
std::vector<float> around(float b) {
  return {b, std::nextafter(b, 0.0f), std::nextafter(b, std::numeric_limits<float>::infinity())};
}

std::vector<float> special_values() {
  const float inf = std::numeric_limits<float>::infinity();
  return {0.0f,
          -0.0f,
          inf,
          -inf,
          std::numeric_limits<float>::quiet_NaN(),
          -std::numeric_limits<float>::quiet_NaN(),
          from_bits(0x7f800001u),  // signalling NaN, payload only in the low bits
          from_bits(0xff800001u),
          from_bits(0x7fffffffu),
          std::numeric_limits<float>::max(),
          -std::numeric_limits<float>::max(),
          std::numeric_limits<float>::min(),
          std::numeric_limits<float>::denorm_min(),
          -std::numeric_limits<float>::denorm_min()};
}

uint32_t rng_bits(std::mt19937& rng) { return static_cast<uint32_t>(rng()); }

bool is_e4m3_nan(uint8_t c) { return (c & 0x7f) == 0x7f; }

// ---- e4m3 ------------------------------------------------------------------------------------
TEST(E4m3, EveryBf16PatternMatchesTheOracle) {
  int64_t checked = 0;
  for (uint32_t h = 0; h < 65536; ++h) {
    const float f = bf16_bits_to_f32(static_cast<uint16_t>(h));
    ASSERT_EQ(f32_to_e4m3(f), oracle_e4m3(f)) << "bf16 0x" << std::hex << h << " = " << f;
    ++checked;
  }
  EXPECT_EQ(checked, 65536);
}

TEST(E4m3, EveryRoundingBoundaryPlusMinusOneUlp) {
  std::vector<float> values;
  for (int c = 0; c < 126; ++c) {
    const double mid = 0.5 * (e4m3_mag(c) + e4m3_mag(c + 1));  // exact in f32 (<= 5 bits)
    ASSERT_EQ(static_cast<double>(static_cast<float>(mid)), mid);
    for (float v : around(static_cast<float>(mid))) values.push_back(v);
    for (float v : around(static_cast<float>(e4m3_mag(c)))) values.push_back(v);
  }
  // Saturation: 448 is the largest finite; 464 is where round-to-nearest would leave the range;
  // satfinite keeps everything above at 448.
  for (float b : {448.0f, 464.0f, 480.0f, 512.0f, 1e30f}) {
    for (float v : around(b)) values.push_back(v);
  }
  for (float v : special_values()) values.push_back(v);
  int64_t checked = 0;
  for (float v : values) {
    for (float s : {v, -v}) {
      ASSERT_EQ(f32_to_e4m3(s), oracle_e4m3(s)) << s;
      ++checked;
    }
  }
  EXPECT_GT(checked, 1500);
  // Spot values a reader can verify by hand.
  EXPECT_EQ(f32_to_e4m3(1.0f), 0x38);
  EXPECT_EQ(f32_to_e4m3(448.0f), 0x7e);
  EXPECT_EQ(f32_to_e4m3(1e9f), 0x7e);
  EXPECT_EQ(f32_to_e4m3(-std::numeric_limits<float>::infinity()), 0xfe);
  EXPECT_EQ(f32_to_e4m3(1.0625f), 0x38);      // halfway 1 and 1.125: even code (0x38)
  EXPECT_EQ(f32_to_e4m3(1.1875f), 0x3a);      // halfway 1.125 and 1.25: even code (0x3a)
  EXPECT_EQ(f32_to_e4m3(1.0f / 1024), 0x00);  // half the smallest subnormal: ties to 0
  EXPECT_EQ(f32_to_e4m3(3.0f / 1024), 0x02);  // halfway 1/512 and 2/512: even code 2
  EXPECT_EQ(f32_to_e4m3(-0.0f), 0x80);
  EXPECT_EQ(f32_to_e4m3(std::numeric_limits<float>::quiet_NaN()), 0x7f);
  EXPECT_EQ(f32_to_e4m3(-std::numeric_limits<float>::quiet_NaN()), 0xff);
}

TEST(E4m3, RandomF32MatchesTheOracle) {
  std::mt19937 rng(7);
  for (int i = 0; i < 300000; ++i) {
    // Half raw bit patterns (all exponents), half in the interesting range 2^-12 .. 2^10.
    uint32_t u = rng_bits(rng);
    if (i % 2) u = (u & 0x807fffffu) | ((115u + (u >> 23) % 22u) << 23);
    const float f = from_bits(u);
    ASSERT_EQ(f32_to_e4m3(f), oracle_e4m3(f)) << "bits 0x" << std::hex << u;
  }
}

TEST(E4m3, EveryCodeDecodesAndRoundTrips) {
  for (int c = 0; c < 256; ++c) {
    const uint8_t code = static_cast<uint8_t>(c);
    const float v = e4m3_to_f32(code);
    if (is_e4m3_nan(code)) {
      EXPECT_TRUE(std::isnan(v)) << c;
      EXPECT_EQ(std::signbit(v), (c & 0x80) != 0) << c;
      continue;
    }
    const double want = (c & 0x80 ? -1.0 : 1.0) * e4m3_mag(c & 0x7f);
    EXPECT_EQ(static_cast<double>(v), want) << c;
    EXPECT_EQ(std::signbit(v), (c & 0x80) != 0) << c;  // 0x80 is -0
    EXPECT_EQ(f32_to_e4m3(v), code) << c;
  }
  EXPECT_EQ(e4m3_to_f32(0x7e), 448.0f);
  EXPECT_EQ(e4m3_to_f32(0x01), 1.0f / 512);
}

// ---- bf16 ------------------------------------------------------------------------------------
TEST(Bf16, EveryPatternBoundaryAndRandomLowBits) {
  std::mt19937 rng(11);
  int64_t checked = 0;
  for (uint32_t h = 0; h < 65536; ++h) {
    const uint32_t base = h << 16;
    std::vector<uint32_t> lows = {0x0000, 0x0001, 0x7fff, 0x8000, 0x8001, 0xffff};
    for (int r = 0; r < 8; ++r) lows.push_back(rng_bits(rng) & 0xffffu);
    for (uint32_t low : lows) {
      const float f = from_bits(base | low);
      if (std::isnan(f)) {
        const uint16_t b = f32_to_bf16_bits(f);
        ASSERT_TRUE(std::isnan(bf16_bits_to_f32(b))) << std::hex << (base | low);
        ASSERT_EQ(b & 0x8000, (base >> 16) & 0x8000) << "NaN keeps its sign";
      } else {
        ASSERT_EQ(f32_to_bf16_bits(f), oracle_bf16(f)) << std::hex << (base | low);
      }
      ++checked;
    }
    // Decoding is exact: the pattern is the top half of the f32.
    ASSERT_EQ(f32_bits(bf16_bits_to_f32(static_cast<uint16_t>(h))), base);
  }
  EXPECT_EQ(checked, 65536 * 14);
  EXPECT_EQ(f32_to_bf16_bits(from_bits(0x7f800001u)), 0x7fc0) << "sNaN must not become inf";
  EXPECT_EQ(f32_to_bf16_bits(std::numeric_limits<float>::max()), 0x7f80) << "rounds up to inf";
  EXPECT_EQ(round_to_bf16(1.00390625f), 1.0f);       // 1 + 2^-8: halfway, ties to even (1.0)
  EXPECT_EQ(round_to_bf16(1.01171875f), 1.015625f);  // 1 + 3*2^-8: halfway, ties to even
}

// ---- f16 -------------------------------------------------------------------------------------
TEST(F16, EveryCodeDecodes) {
  for (uint32_t c = 0; c < 65536; ++c) {
    const uint16_t h = static_cast<uint16_t>(c);
    const float v = f16_bits_to_f32(h);
    const int e = (c >> 10) & 0x1f;
    const int m = c & 0x3ff;
    const bool neg = (c & 0x8000) != 0;
    if (e == 31) {
      if (m == 0) {
        EXPECT_TRUE(std::isinf(v)) << c;
      } else {
        EXPECT_TRUE(std::isnan(v)) << c;
      }
      EXPECT_EQ(std::signbit(v), neg);
      continue;
    }
    const double mag = e == 0 ? std::ldexp(m, -24) : std::ldexp(1024 + m, e - 25);
    ASSERT_EQ(static_cast<double>(v), neg ? -mag : mag) << c;
    ASSERT_EQ(std::signbit(v), neg) << c;
    ASSERT_EQ(f32_to_f16_bits(v), h) << "round trip of code " << c;
  }
}

TEST(F16, EveryRoundingBoundaryBf16PatternsAndRandomF32) {
  std::vector<float> values;
  const auto& mags = f16_mags();
  for (size_t c = 0; c + 1 < mags.size(); ++c) {
    const double mid = 0.5 * (mags[c] + mags[c + 1]);  // <= 12 significant bits: exact in f32
    for (float v : around(static_cast<float>(mid))) values.push_back(v);
  }
  for (float b : {65504.0f, 65519.0f, 65520.0f, 65536.0f, 6.1035156e-05f /* 2^-14 */,
                  5.9604645e-08f /* 2^-24 */, 2.9802322e-08f /* 2^-25 */}) {
    for (float v : around(b)) values.push_back(v);
  }
  for (float v : special_values()) values.push_back(v);
  for (uint32_t h = 0; h < 65536; ++h) values.push_back(bf16_bits_to_f32(static_cast<uint16_t>(h)));
  std::mt19937 rng(13);
  for (int i = 0; i < 200000; ++i) values.push_back(from_bits(rng_bits(rng)));
  int64_t checked = 0;
  for (float v : values) {
    for (float s : {v, -v}) {
      const uint16_t got = f32_to_f16_bits(s);
      if (std::isnan(s)) {
        ASSERT_TRUE(std::isnan(f16_bits_to_f32(got)));
        ASSERT_EQ(std::signbit(f16_bits_to_f32(got)), std::signbit(s));
      } else {
        ASSERT_EQ(got, oracle_f16(s)) << s << " bits 0x" << std::hex << f32_bits(s);
      }
      ++checked;
    }
  }
  EXPECT_GT(checked, 500000);
}

// ---- e2m1 ------------------------------------------------------------------------------------
TEST(E2m1, EveryBf16PatternBoundariesAndPacking) {
  for (uint32_t h = 0; h < 65536; ++h) {
    const float f = bf16_bits_to_f32(static_cast<uint16_t>(h));
    ASSERT_EQ(f32_to_e2m1(f), oracle_e2m1(f)) << f;
  }
  for (float b : {0.25f, 0.5f, 0.75f, 1.0f, 1.25f, 1.5f, 1.75f, 2.0f, 2.5f, 3.0f, 3.5f, 4.0f, 5.0f,
                  6.0f, 7.0f}) {
    for (float v : around(b)) {
      ASSERT_EQ(f32_to_e2m1(v), oracle_e2m1(v)) << v;
      ASSERT_EQ(f32_to_e2m1(-v), oracle_e2m1(-v)) << -v;
    }
  }
  for (float v : special_values()) ASSERT_EQ(f32_to_e2m1(v), oracle_e2m1(v)) << v;
  // Ties go to the even code: 0.25 -> 0, 0.75 -> 1.0, 2.5 -> 2, 5 -> 4.
  EXPECT_EQ(f32_to_e2m1(0.25f), 0x0);
  EXPECT_EQ(f32_to_e2m1(0.75f), 0x2);
  EXPECT_EQ(f32_to_e2m1(2.5f), 0x4);
  EXPECT_EQ(f32_to_e2m1(5.0f), 0x6);
  EXPECT_EQ(f32_to_e2m1(-1e9f), 0xf);
  EXPECT_EQ(f32_to_e2m1(std::numeric_limits<float>::infinity()), 0x7);
  for (int c = 0; c < 16; ++c) {
    const float v = e2m1_to_f32(static_cast<uint8_t>(c));
    EXPECT_EQ(f32_to_e2m1(v), c == 8 ? 0x8 : c) << c;  // -0 keeps its sign bit
  }
  // Element 2i in the low nibble, 2i+1 in the high nibble.
  EXPECT_EQ(pack_e2m1x2(1.0f, -6.0f), 0xf2);
  EXPECT_EQ(pack_e2m1x2(-0.5f, 3.0f), 0x59);
}

// ---- e8m0 ------------------------------------------------------------------------------------
TEST(E8m0, EveryCodeAndPowersOfTwo) {
  for (int e = 0; e < 255; ++e) {
    const float v = e8m0_to_f32(static_cast<uint8_t>(e));
    ASSERT_EQ(static_cast<double>(v), std::ldexp(1.0, e - 127)) << e;
    ASSERT_EQ(f32_to_e8m0(v), e) << e;
  }
  EXPECT_TRUE(std::isnan(e8m0_to_f32(0xff)));
  EXPECT_EQ(f32_to_e8m0(std::numeric_limits<float>::quiet_NaN()), 0xff);
}

float oracle_round_up_pow2(float s) {
  int e;
  const double m = std::frexp(static_cast<double>(s), &e);  // s = m * 2^e, m in [0.5, 1)
  return static_cast<float>(m == 0.5 ? s : std::ldexp(1.0, e));
}

TEST(E8m0, RoundUpPow2OnPowersJustAboveAndEveryBf16) {
  for (int e = -126; e <= 127; ++e) {
    const float p = std::ldexp(1.0f, e);
    ASSERT_EQ(round_up_pow2(p), p) << "2^" << e << " is already a power of two";
    const float above = std::nextafter(p, std::numeric_limits<float>::infinity());
    const float want = e == 127 ? std::numeric_limits<float>::infinity() : 2.0f * p;
    ASSERT_EQ(round_up_pow2(above), want) << "just above 2^" << e;
    if (e > -126) {
      ASSERT_EQ(round_up_pow2(std::nextafter(p, 0.0f)), p) << "just below 2^" << e;
    }
  }
  for (uint32_t h = 0x0080; h < 0x7f80; ++h) {  // every positive normal bf16
    const float f = bf16_bits_to_f32(static_cast<uint16_t>(h));
    ASSERT_EQ(round_up_pow2(f), oracle_round_up_pow2(f)) << f;
  }
  EXPECT_EQ(round_up_pow2(448.0f / 448.0f), 1.0f);
  EXPECT_EQ(round_up_pow2(3.0f), 4.0f);
}

}  // namespace
}  // namespace mlafuse
