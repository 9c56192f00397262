// Slow independent oracles for the codecs (nearest-value search over every code in double
// precision, ties to the even code), shared by the CPU reference tests.
#pragma once

#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

namespace mlafuse::oracle {

// Magnitude of e4m3 code c in 0..126 (0x7f is NaN).
inline double e4m3_mag(int c) {
  const int e = c >> 3;
  const int m = c & 7;
  return e == 0 ? std::ldexp(m, -9) : std::ldexp(8 + m, e - 10);
}

// Nearest e4m3 code, ties to the even code; satfinite; NaN keeps its sign.
inline uint8_t oracle_e4m3(float f) {
  const uint8_t sign = std::signbit(f) ? 0x80 : 0x00;
  if (std::isnan(f)) return sign | 0x7f;
  const double a = std::fabs(static_cast<double>(f));
  if (a >= 448.0) return sign | 0x7e;
  int best = 0;
  double best_d = std::numeric_limits<double>::infinity();
  for (int c = 0; c <= 126; ++c) {
    const double dist = std::fabs(a - e4m3_mag(c));
    if (dist < best_d || (dist == best_d && c % 2 == 0)) {
      best = c;
      best_d = dist;
    }
  }
  return sign | static_cast<uint8_t>(best);
}

// e2m1: nearest of the 8 magnitudes, ties to the even code, saturate to 6; NaN -> +6 (0x7).
inline uint8_t oracle_e2m1(float f) {
  static const double mags[8] = {0, 0.5, 1, 1.5, 2, 3, 4, 6};
  if (std::isnan(f)) return 0x7;
  const uint8_t sign = std::signbit(f) ? 0x8 : 0;
  const double a = std::fabs(static_cast<double>(f));
  if (a >= 6.0) return sign | 0x7;  // saturate (and keep huge distances from tying)
  int best = 0;
  double best_d = std::numeric_limits<double>::infinity();
  for (int c = 0; c < 8; ++c) {
    const double dist = std::fabs(a - mags[c]);
    if (dist < best_d || (dist == best_d && c % 2 == 0)) {
      best = c;
      best_d = dist;
    }
  }
  return sign | static_cast<uint8_t>(best);
}

inline double e4m3_value(uint8_t c) {
  if ((c & 0x7f) == 0x7f) return std::numeric_limits<double>::quiet_NaN();
  return (c & 0x80 ? -1.0 : 1.0) * e4m3_mag(c & 0x7f);
}

// ---- quantizers, from SPEC 3 in double precision ------------------------------------------
// One f32 operation a op b, correctly rounded, computed in double: for +, *, / of two floats the
// double result rounded to float is the correctly rounded f32 result (53 >= 2 * 24 + 2 bits).
inline float mul_f32(float a, float b) {
  return static_cast<float>(static_cast<double>(a) * static_cast<double>(b));
}
inline float div_f32(float a, float b) {
  return static_cast<float>(static_cast<double>(a) / static_cast<double>(b));
}

// Largest |x| ignoring NaN.
inline float amax_ignoring_nan(const float* x, int64_t n) {
  float m = 0.0f;
  for (int64_t i = 0; i < n; ++i) {
    const float a = std::fabs(x[i]);
    if (!std::isnan(a) && a > m) m = a;
  }
  return m;
}

inline float pow2_ceil(float s) {
  int e;
  const double m = std::frexp(static_cast<double>(s), &e);
  if (std::isinf(s) || m == 0.5) return s;
  return static_cast<float>(std::ldexp(1.0, e));
}

// The quantizers' e4m3 code of quotient v from input x: satfinite; a NaN input keeps its sign,
// a NaN made by the arithmetic (inf / inf) is 0xff.
inline uint8_t quant_code(float v, float x) {
  if (std::isnan(v)) return std::isnan(x) ? (std::signbit(x) ? 0xff : 0x7f) : 0xff;
  return oracle_e4m3(v);
}

inline std::vector<uint8_t> quant_static_row(const float* x, int64_t d, float scale) {
  const float inv = div_f32(1.0f, scale);
  std::vector<uint8_t> q(static_cast<size_t>(d));
  for (int64_t i = 0; i < d; ++i) q[static_cast<size_t>(i)] = quant_code(mul_f32(x[i], inv), x[i]);
  return q;
}

// Codes of one row and its D/G scales.
inline void quant_group_row(const float* x, int64_t d, int64_t g, bool ue8m0, float eps,
                            std::vector<uint8_t>* q, std::vector<float>* s) {
  q->assign(static_cast<size_t>(d), 0);
  s->assign(static_cast<size_t>(d / g), 0.0f);
  for (int64_t j = 0; j < d / g; ++j) {
    float amax = amax_ignoring_nan(x + j * g, g);
    if (amax < eps) amax = eps;
    float sc = div_f32(amax, 448.0f);
    if (ue8m0) sc = pow2_ceil(sc);
    (*s)[static_cast<size_t>(j)] = sc;
    for (int64_t i = j * g; i < (j + 1) * g; ++i) {
      (*q)[static_cast<size_t>(i)] = quant_code(div_f32(x[i], sc), x[i]);
    }
  }
}

// NVFP4: packed codes [D/2] and the D/16 e4m3 block-scale codes (unswizzled).
inline void quant_nvfp4_row(const float* x, int64_t d, float gs, std::vector<uint8_t>* q,
                            std::vector<uint8_t>* sf) {
  q->assign(static_cast<size_t>(d / 2), 0);
  sf->assign(static_cast<size_t>(d / 16), 0);
  for (int64_t b = 0; b < d / 16; ++b) {
    const float amax = amax_ignoring_nan(x + b * 16, 16);
    const uint8_t code = oracle_e4m3(div_f32(mul_f32(gs, amax), 6.0f));
    const float sfv = static_cast<float>(e4m3_value(code));
    const float os = sfv == 0.0f ? 0.0f : div_f32(gs, sfv);
    (*sf)[static_cast<size_t>(b)] = code;
    for (int64_t i = b * 16; i < b * 16 + 16; i += 2) {
      const uint8_t lo = oracle_e2m1(mul_f32(x[i], os));
      const uint8_t hi = oracle_e2m1(mul_f32(x[i + 1], os));
      (*q)[static_cast<size_t>(i / 2)] = static_cast<uint8_t>(lo | (hi << 4));
    }
  }
}

// SPEC 3.3 swizzle, inverted independently: byte offset -> (row m, scale column k).
inline void nvfp4_inverse_offset(int64_t off, int64_t dim, int64_t* m, int64_t* k) {
  const int64_t kt = (dim + 63) / 64;
  const int64_t tile = off / 512;
  const int64_t in = off % 512;
  *m = (tile / kt) * 128 + ((in % 16) / 4) * 32 + in / 16;
  *k = (tile % kt) * 4 + in % 4;
}

}  // namespace mlafuse::oracle
