// Helpers shared by the CPU reference sources: argument checks, activation loads, the e4m3 decode
// table and a fixed-order dot product. Private to src/backends/cpu.
#pragma once

#include <cmath>
#include <cstdint>
#include <vector>

#include "mlafuse/core/error.h"
#include "mlafuse/core/shape.h"
#include "mlafuse/core/tensor.h"
#include "mlafuse/quant/codecs.h"

namespace mlafuse::ref::detail {

// A defined host tensor, or an Error naming it.
inline void check_host(const Tensor& t, const char* name) {
  MLAFUSE_CHECK(t.defined(), "tensor ", name, " is missing");
  MLAFUSE_CHECK(t.device() == Device::kCpu, "tensor ", name, " ", t.str(), " is on ",
                device_name(t.device()), "; the CPU reference needs host tensors");
}

inline void check_contiguous(const Tensor& t, const char* name) {
  MLAFUSE_CHECK(t.is_contiguous(), "tensor ", name, " ", t.str(), " with strides ",
                shape_str(t.strides()), " must be contiguous (row-major)");
}

// Activations: bf16, f16 or f32, rank `rank`, contiguous, on the host.
inline void check_activation(const Tensor& t, const char* name, size_t rank) {
  check_host(t, name);
  check_rank(t, name, rank);
  MLAFUSE_CHECK(is_float_activation(t.dtype()), "tensor ", name, " ", t.str(),
                ": expected dtype bf16, f16 or f32");
  check_contiguous(t, name);
}

// A byte-coded tensor (fp8e4m3, fp4e2m1x2, ...) may also arrive as u8 (docs/ops.md).
inline void check_bytes(const Tensor& t, const char* name, DType coded) {
  check_host(t, name);
  MLAFUSE_CHECK(t.dtype() == coded || t.dtype() == DType::kU8, "tensor ", name, " ", t.str(),
                ": expected dtype ", dtype_name(coded), " (or u8)");
}

// An f32 tensor with exactly one element, finite and positive (a static scale).
inline float scalar_scale(const Tensor& t, const char* name) {
  check_host(t, name);
  check_dtype(t, name, DType::kF32);
  MLAFUSE_CHECK(t.numel() == 1, "tensor ", name, " ", t.str(), ": expected one f32 element");
  const float v = t.data<float>()[0];
  MLAFUSE_CHECK(std::isfinite(v) && v > 0.0f, "tensor ", name, " holds ", v,
                "; expected a finite positive scale");
  return v;
}

inline void check_token_count(int64_t n, int64_t t_pad, const char* name) {
  MLAFUSE_CHECK(n >= 0 && n <= t_pad, "real token count n = ", n, " is outside [0, ", t_pad,
                "] (the ", name, " buffer holds ", t_pad, " token rows)");
}

// Elements [begin, begin + count) of a contiguous bf16/f16/f32 tensor as f32.
inline void load_span_f32(const Tensor& t, int64_t begin, int64_t count, float* out) {
  switch (t.dtype()) {
    case DType::kBF16: {
      const uint16_t* p = t.data<uint16_t>() + begin;
      for (int64_t i = 0; i < count; ++i) out[i] = bf16_bits_to_f32(p[i]);
      return;
    }
    case DType::kF16: {
      const uint16_t* p = t.data<uint16_t>() + begin;
      for (int64_t i = 0; i < count; ++i) out[i] = f16_bits_to_f32(p[i]);
      return;
    }
    case DType::kF32: {
      const float* p = t.data<float>() + begin;
      for (int64_t i = 0; i < count; ++i) out[i] = p[i];
      return;
    }
    default:
      MLAFUSE_FAIL("tensor ", t.str(), ": expected dtype bf16, f16 or f32");
  }
}

// A whole contiguous activation tensor as f32.
inline std::vector<float> to_f32(const Tensor& t) {
  std::vector<float> v(static_cast<size_t>(t.numel()));
  load_span_f32(t, 0, t.numel(), v.data());
  return v;
}

// sum_i a[i] * b[i] in f32 with a fixed order: 16 interleaved partial sums (element i goes to
// lane i % 16), then the lanes added in order. Independent lanes let the compiler vectorise
// without -ffast-math, and the result does not depend on the compiler.
inline float dot(const float* a, const float* b, int64_t n) {
  constexpr int64_t kLanes = 16;
  float acc[kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    for (int64_t k = 0; k < kLanes; ++k) acc[k] += a[i + k] * b[i + k];
  }
  for (int64_t k = 0; i + k < n; ++k) acc[k] += a[i + k] * b[i + k];
  float s = 0.0f;
  for (int64_t k = 0; k < kLanes; ++k) s += acc[k];
  return s;
}

// y[i] += a * x[i]
inline void axpy(float a, const float* x, float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] += a * x[i];
}

}  // namespace mlafuse::ref::detail
