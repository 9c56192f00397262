// A straightforward f32 GEMM for the o_proj layouts cuBLASLt's block scaling does not take
// (per-tensor or row-major activation scales, group 64, NVFP4 activations): y[t, o] =
// sum_k a(t, k) * w(o, k), where a dequantizes one activation element and w(o, k) =
// e4m3(wq[o, k]) * ws[o / 128, k / 128]. Dequantized 64x32 tiles of both operands go through
// shared memory; each thread accumulates a 4x4 block of outputs in f32. Correct for every shape;
// speed is cuBLASLt's job (linear_fp8_block.cu).
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "backends/cuda/device_util.cuh"
#include "mlafuse/quant/codecs.h"
#include "mlafuse/quant/scale_layout.h"

namespace mlafuse::cuda {

struct LinearSimtParams {
  const uint8_t* wq;  // [n_out, k] e4m3
  const float* ws;    // [ceil(n_out/128), ceil(k/128)] f32, row-major
  __nv_bfloat16* y;   // [t_pad, n_out] bf16
  int32_t t_pad;
  int32_t n_out;
  int32_t k;
  int32_t num_tokens;
  const int32_t* num_tokens_device;
};

// FP8 activations with f32 scales at xs[t * token_stride + (k / group) * group_stride]
// (token_stride = group_stride = 0 for a per-tensor scale).
struct Fp8ActLoader {
  const uint8_t* xq;  // [t_pad, k] e4m3
  const float* xs;
  int64_t token_stride;
  int64_t group_stride;
  int32_t group;
  __device__ __forceinline__ float operator()(int64_t t, int32_t k, int32_t k_dim) const {
    return e4m3_to_f32(xq[t * k_dim + k]) * xs[t * token_stride + (k / group) * group_stride];
  }
};

// NVFP4 activations (SPEC 3.3): x = e2m1(q) * float(sf) / global_scale.
struct Nvfp4ActLoader {
  const uint8_t* xq;  // [t_pad, k/2] packed e2m1, element 2i in the low nibble
  const uint8_t* sf;  // swizzled e4m3 block scales
  Nvfp4ScaleLayout layout;
  const float* global_scale;  // [1] f32
  __device__ __forceinline__ float operator()(int64_t t, int32_t k, int32_t k_dim) const {
    const uint8_t byte = xq[t * (k_dim / 2) + k / 2];
    const float q = e2m1_to_f32((k & 1) ? (byte >> 4) : (byte & 0xf));
    const float s = e4m3_to_f32(sf[layout.offset(t, k / 16)]);
    return __fdiv_rn(__fmul_rn(q, s), __ldg(global_scale));
  }
};

template <class ALoader>
__global__ void __launch_bounds__(256)
    linear_simt_kernel(const LinearSimtParams p, const ALoader load_a) {
  constexpr int kTile = 64;
  constexpr int kStep = 32;
  __shared__ float s_a[kStep][kTile + 1];  // [k][token row], padded against bank conflicts
  __shared__ float s_w[kStep][kTile + 1];  // [k][output column]
  const int32_t n = real_tokens(p.num_tokens_device, p.num_tokens, p.t_pad);
  const int32_t row0 = blockIdx.y * kTile;
  const int32_t col0 = blockIdx.x * kTile;
  if (row0 >= n) return;
  const int tid = threadIdx.x;
  const int ty = tid / 16;
  const int tx = tid % 16;
  const int64_t ws_cols = (p.k + 127) / 128;
  float acc[4][4] = {};
  for (int32_t k0 = 0; k0 < p.k; k0 += kStep) {
#pragma unroll
    for (int i = 0; i < kTile * kStep / 256; ++i) {
      const int idx = tid + i * 256;
      const int r = idx / kStep;
      const int kk = idx % kStep;
      const int32_t k = k0 + kk;
      const int32_t t = row0 + r;
      const int32_t o = col0 + r;
      s_a[kk][r] = (t < n && k < p.k) ? load_a(t, k, p.k) : 0.0f;
      s_w[kk][r] = (o < p.n_out && k < p.k) ? e4m3_to_f32(p.wq[static_cast<int64_t>(o) * p.k + k]) *
                                                  p.ws[(o / 128) * ws_cols + k / 128]
                                            : 0.0f;
    }
    __syncthreads();
#pragma unroll 8
    for (int kk = 0; kk < kStep; ++kk) {
      float a[4], w[4];
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        a[i] = s_a[kk][ty * 4 + i];
        w[i] = s_w[kk][tx * 4 + i];
      }
#pragma unroll
      for (int i = 0; i < 4; ++i) {
#pragma unroll
        for (int j = 0; j < 4; ++j) acc[i][j] = fmaf(a[i], w[j], acc[i][j]);
      }
    }
    __syncthreads();
  }
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const int32_t t = row0 + ty * 4 + i;
    if (t >= n) continue;
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int32_t o = col0 + tx * 4 + j;
      if (o < p.n_out) p.y[static_cast<int64_t>(t) * p.n_out + o] = __float2bfloat16_rn(acc[i][j]);
    }
  }
}

}  // namespace mlafuse::cuda
