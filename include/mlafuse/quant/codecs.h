// Bit-exact element codecs (SPEC section 1), usable on the host and in CUDA device code.
// No CUDA headers: device kernels may use hardware conversions instead, and the GPU tests prove
// they agree with these bit for bit.
#pragma once

#include <cstdint>
#include <cstring>

#include "mlafuse/core/hd.h"

#if !defined(__CUDA_ARCH__)
#include <array>
#include <cmath>
#endif

namespace mlafuse {

MLAFUSE_HD uint32_t f32_bits(float f) {
  uint32_t u;
  memcpy(&u, &f, sizeof(u));
  return u;
}
MLAFUSE_HD float bits_f32(uint32_t u) {
  float f;
  memcpy(&f, &u, sizeof(f));
  return f;
}
// Round to the nearest integer, ties to even (the default FP rounding mode on host and device).
MLAFUSE_HD float round_half_even(float x) {
#if defined(__CUDA_ARCH__)
  return rintf(x);
#else
  return std::nearbyint(x);
#endif
}

// ---- bf16 / f16 --------------------------------------------------------------------------
MLAFUSE_HD uint16_t f32_to_bf16_bits(float f) {
  uint32_t u = f32_bits(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x40u);  // qNaN
  u += 0x7fffu + ((u >> 16) & 1u);  // round to nearest even
  return static_cast<uint16_t>(u >> 16);
}
MLAFUSE_HD float bf16_bits_to_f32(uint16_t h) { return bits_f32(static_cast<uint32_t>(h) << 16); }
MLAFUSE_HD float round_to_bf16(float f) { return bf16_bits_to_f32(f32_to_bf16_bits(f)); }

MLAFUSE_HD uint16_t f32_to_f16_bits(float f) {
  const uint32_t u = f32_bits(f);
  const uint16_t sign = static_cast<uint16_t>((u >> 16) & 0x8000u);
  const uint32_t a = u & 0x7fffffffu;
  if (a > 0x7f800000u) return sign | 0x7e00u;  // NaN
  if (a >= 0x477ff000u) return sign | 0x7c00u;  // rounds to >= 65520: infinity
  if (a < 0x38800000u) {
    // f16 subnormal (or zero): value = m * 2^-24, m = round_half_even(|f| * 2^24).
    const float m = round_half_even(bits_f32(a) * 16777216.0f);
    return sign | static_cast<uint16_t>(m);
  }
  // Normal: rebias the exponent (127 -> 15) and round 23 -> 10 mantissa bits, ties to even.
  uint32_t r = a + 0xfffu + ((a >> 13) & 1u);
  return sign | static_cast<uint16_t>((r >> 13) - ((127u - 15u) << 10));
}
MLAFUSE_HD float f16_bits_to_f32(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t e = (h >> 10) & 0x1fu;
  const uint32_t m = h & 0x3ffu;
  if (e == 0) {
    const float v = static_cast<float>(m) * (1.0f / 16777216.0f);  // m * 2^-24, exact
    return bits_f32(f32_bits(v) | sign);
  }
  if (e == 31) return bits_f32(sign | 0x7f800000u | (m << 13));
  return bits_f32(sign | ((e + 112u) << 23) | (m << 13));
}

// ---- fp8 e4m3 (fn) -----------------------------------------------------------------------
inline constexpr float kFp8E4M3Max = 448.0f;

// Round to nearest even; finite overflow and +-inf saturate to +-448; NaN -> 0x7f | sign.
MLAFUSE_HD uint8_t f32_to_e4m3(float f) {
  const uint32_t u = f32_bits(f);
  const uint8_t sign = static_cast<uint8_t>((u >> 24) & 0x80u);
  const uint32_t a = u & 0x7fffffffu;
  if (a > 0x7f800000u) return sign | 0x7fu;
  if (a < 0x3c800000u) {
    // Below 2^-6, the smallest normal: subnormal steps of 2^-9. Code m in 0..8 (8 is 2^-6).
    const float m = round_half_even(bits_f32(a) * 512.0f);
    return sign | static_cast<uint8_t>(m);
  }
  // Normal: round 23 -> 3 mantissa bits, ties to even, then check the range.
  const uint32_t r = a + 0x7ffffu + ((a >> 20) & 1u);
  const int32_t e = static_cast<int32_t>(r >> 23) - 127;  // -6 .. 8 is representable
  const uint32_t m = (r >> 20) & 7u;
  if (e > 8 || (e == 8 && m == 7)) return sign | 0x7eu;  // > 448 after rounding: saturate
  return sign | static_cast<uint8_t>(((e + 7) << 3) | m);
}

MLAFUSE_HD float e4m3_to_f32(uint8_t c) {
  const uint32_t sign = static_cast<uint32_t>(c & 0x80u) << 24;
  const uint32_t e = (c >> 3) & 0xfu;
  const uint32_t m = c & 7u;
  if (e == 15 && m == 7) return bits_f32(sign | 0x7fc00000u);
  if (e == 0) {
    const float v = static_cast<float>(m) * (1.0f / 512.0f);
    return bits_f32(f32_bits(v) | sign);
  }
  return bits_f32(sign | ((e + 120u) << 23) | (m << 20));
}

#if !defined(__CUDA_ARCH__)
// f32 value of every e4m3 code (host): decoding through a table keeps the reference GEMMs and the
// dequantizing loops over 117M-code weights branch-free.
inline const std::array<float, 256>& e4m3_decode_table() {
  static const std::array<float, 256> table = [] {
    std::array<float, 256> t{};
    for (int c = 0; c < 256; ++c) t[static_cast<size_t>(c)] = e4m3_to_f32(static_cast<uint8_t>(c));
    return t;
  }();
  return table;
}
#endif

// ---- e8m0 --------------------------------------------------------------------------------
// Round a positive normal f32 up to a power of two: any mantissa bit set -> next exponent.
MLAFUSE_HD float round_up_pow2(float s) {
  uint32_t u = f32_bits(s);
  if (u & 0x7fffffu) u = (u & 0xff800000u) + 0x800000u;
  return bits_f32(u);
}
// Exponent byte of a power-of-two f32 (the e8m0 code of 2^(e-127)); NaN -> 0xff.
MLAFUSE_HD uint8_t f32_to_e8m0(float pow2) {
  const uint32_t u = f32_bits(pow2);
  if ((u & 0x7fffffffu) > 0x7f800000u) return 0xffu;
  return static_cast<uint8_t>((u >> 23) & 0xffu);
}
MLAFUSE_HD float e8m0_to_f32(uint8_t e) {
  if (e == 0xffu) return bits_f32(0x7fc00000u);
  if (e == 0) return bits_f32(0x00400000u);  // 2^-127 is an f32 subnormal
  return bits_f32(static_cast<uint32_t>(e) << 23);
}

// ---- fp4 e2m1 ----------------------------------------------------------------------------
inline constexpr float kFp4E2M1Max = 6.0f;

// Magnitudes 0, .5, 1, 1.5, 2, 3, 4, 6 (codes 0..7), bit 3 the sign. Round to nearest, ties to the
// even code; saturate to 6. NaN encodes as +6 (0x7): e2m1 has no NaN and the hardware
// cvt.rn.satfinite.e2m1x2 saturates it to the maximum as well.
MLAFUSE_HD uint8_t f32_to_e2m1(float f) {
  const uint32_t u = f32_bits(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return 0x7u;
  const uint8_t sign = static_cast<uint8_t>((u >> 28) & 0x8u);
  const float a = bits_f32(u & 0x7fffffffu);
  uint8_t code;
  if (a <= 0.25f) {
    code = 0;
  } else if (a < 0.75f) {
    code = 1;
  } else if (a <= 1.25f) {
    code = 2;
  } else if (a < 1.75f) {
    code = 3;
  } else if (a <= 2.5f) {
    code = 4;
  } else if (a < 3.5f) {
    code = 5;
  } else if (a <= 5.0f) {
    code = 6;
  } else {
    code = 7;
  }
  return sign | code;
}
MLAFUSE_HD float e2m1_to_f32(uint8_t c) {
  const float mags[8] = {0.0f, 0.5f, 1.0f, 1.5f, 2.0f, 3.0f, 4.0f, 6.0f};
  const float v = mags[c & 7u];
  return (c & 8u) ? -v : v;
}
// Element 2i in the low nibble, 2i+1 in the high nibble.
MLAFUSE_HD uint8_t pack_e2m1x2(float even, float odd) {
  return static_cast<uint8_t>(f32_to_e2m1(even) | (f32_to_e2m1(odd) << 4));
}

}  // namespace mlafuse
