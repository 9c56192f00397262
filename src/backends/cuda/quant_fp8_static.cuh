// Static per-tensor FP8 quantization (SPEC 3.1), device code: an elementwise stream. Each thread
// converts kUnroll 16-byte input vectors, all loaded before the first is used; the f32 scale is
// read on the device (a graph replays with whatever scale the buffer holds).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "backends/cuda/device_util.cuh"
#include "backends/cuda/quant_epilogue.cuh"

namespace mlafuse::cuda {

struct Fp8StaticParams {
  const void* x;       // [t_pad, d] activations, row-major
  const float* scale;  // [1] f32
  uint8_t* q;          // [t_pad, d] e4m3
  int32_t t_pad;
  int32_t d;
  int32_t num_tokens;
  const int32_t* num_tokens_device;
};

// d * sizeof(In) is a multiple of 16: whole vectors never straddle the real/padded boundary.
template <class In, int kUnroll>
__global__ void __launch_bounds__(256) quant_fp8_static_vec_kernel(const Fp8StaticParams p) {
  constexpr int kVec = In::kPer16B;
  const int32_t n = real_tokens(p.num_tokens_device, p.num_tokens, p.t_pad);
  const int64_t vecs = static_cast<int64_t>(n) * p.d / kVec;
  const float inv = qe::fp8_static_inv(__ldg(p.scale));
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  const char* x = static_cast<const char*>(p.x);
  for (int64_t base = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; base < vecs;
       base += stride * kUnroll) {
    uint4 raw[kUnroll];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int64_t i = base + u * stride;
      raw[u] = i < vecs ? ldg_stream(x + i * 16) : make_uint4(0, 0, 0, 0);
    }
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int64_t i = base + u * stride;
      if (i >= vecs) break;
      float v[kVec];
      In::unpack(raw[u], v);
      uint32_t codes[kVec / 4];
#pragma unroll
      for (int c = 0; c < kVec / 4; ++c) {
        codes[c] = qe::quant_fp8_static_x4(v[4 * c], v[4 * c + 1], v[4 * c + 2], v[4 * c + 3], inv);
      }
      uint8_t* dst = p.q + i * kVec;
      if constexpr (kVec == 8) {
        *reinterpret_cast<uint2*>(dst) = make_uint2(codes[0], codes[1]);
      } else {
        *reinterpret_cast<uint32_t*>(dst) = codes[0];
      }
    }
  }
}

// Any d: one element per thread.
template <class In>
__global__ void __launch_bounds__(256) quant_fp8_static_any_kernel(const Fp8StaticParams p) {
  const int32_t n = real_tokens(p.num_tokens_device, p.num_tokens, p.t_pad);
  const int64_t total = static_cast<int64_t>(n) * p.d;
  const float inv = qe::fp8_static_inv(__ldg(p.scale));
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total;
       i += stride) {
    const float x = In::load1(p.x, i);
    p.q[i] = qe::encode_e4m3(__fmul_rn(x, inv), x);
  }
}

}  // namespace mlafuse::cuda
