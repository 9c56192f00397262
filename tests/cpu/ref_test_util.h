// Small helpers for the CPU reference tests: typed host tensors from f32 values, poison, random
// activations, and "the message names X" checks.
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "mlafuse/core/error.h"
#include "mlafuse/core/tensor.h"
#include "mlafuse/quant/codecs.h"

namespace mlafuse::testing {

// Rounds v to dtype (bf16/f16/f32) as the stored value would be.
inline float round_to(DType dt, float v) {
  if (dt == DType::kBF16) return round_to_bf16(v);
  if (dt == DType::kF16) return f16_bits_to_f32(f32_to_f16_bits(v));
  return v;
}

// A contiguous host tensor of dtype bf16/f16/f32 holding `values` (rounded to the dtype).
inline Tensor make_act(DType dt, std::vector<int64_t> shape, const std::vector<float>& values) {
  Tensor t = Tensor::empty(dt, std::move(shape));
  EXPECT_EQ(static_cast<size_t>(t.numel()), values.size());
  for (size_t i = 0; i < values.size(); ++i) {
    if (dt == DType::kBF16) {
      t.data<uint16_t>()[i] = f32_to_bf16_bits(values[i]);
    } else if (dt == DType::kF16) {
      t.data<uint16_t>()[i] = f32_to_f16_bits(values[i]);
    } else {
      t.data<float>()[i] = values[i];
    }
  }
  return t;
}

inline float act_at(const Tensor& t, int64_t i) {
  if (t.dtype() == DType::kBF16) return bf16_bits_to_f32(t.data<uint16_t>()[i]);
  if (t.dtype() == DType::kF16) return f16_bits_to_f32(t.data<uint16_t>()[i]);
  return t.data<float>()[i];
}

// Fills the whole storage with one byte (0xab: a NaN-free, recognisable pattern for f32 and u8).
inline void poison(Tensor& t, uint8_t byte = 0xab) {
  std::memset(t.storage()->data, byte, t.storage()->bytes);
}
inline bool byte_is(const Tensor& t, int64_t byte_offset, uint8_t byte = 0xab) {
  return static_cast<const uint8_t*>(t.storage()->data)[byte_offset] == byte;
}

// Random activations: normal values with a per-row magnitude spread over 10^-3 .. 10^3 and a few
// outliers, rounded to dtype.
inline std::vector<float> random_acts(DType dt, int64_t rows, int64_t cols, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::uniform_int_distribution<int> exp10(-3, 3);
  std::vector<float> v(static_cast<size_t>(rows * cols));
  for (int64_t r = 0; r < rows; ++r) {
    const float mag = std::pow(10.0f, static_cast<float>(exp10(rng)));
    for (int64_t c = 0; c < cols; ++c) {
      float x = normal(rng) * mag;
      if (rng() % 97 == 0) x *= 50.0f;  // outlier
      v[static_cast<size_t>(r * cols + c)] = round_to(dt, x);
    }
  }
  return v;
}

// Runs fn, expects an mlafuse::Error whose message contains every string in `needles`.
inline void expect_error(const std::function<void()>& fn, const std::vector<std::string>& needles) {
  try {
    fn();
    ADD_FAILURE() << "no mlafuse::Error thrown (expected one naming '"
                  << (needles.empty() ? "" : needles[0]) << "')";
  } catch (const Error& e) {
    const std::string msg = e.what();
    for (const auto& n : needles) {
      EXPECT_NE(msg.find(n), std::string::npos) << "message lacks '" << n << "': " << msg;
    }
  }
}

inline Tensor scalar_f32(float v) {
  Tensor t = Tensor::empty(DType::kF32, {1});
  t.data<float>()[0] = v;
  return t;
}

}  // namespace mlafuse::testing
