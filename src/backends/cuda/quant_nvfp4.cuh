// NVFP4 quantization (SPEC 3.3), device code. One thread per entry of the swizzled block-scale
// buffer over rows [0, round_up(n, 128)): a real entry (row < n, column < d/16) quantizes its 16
// values (two or four 16-byte loads, 8 bytes of codes out); a padding entry writes a zero scale.
// Consecutive threads take consecutive blocks of one row, so loads and code stores coalesce.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "backends/cuda/device_util.cuh"
#include "backends/cuda/quant_epilogue.cuh"
#include "mlafuse/quant/scale_layout.h"

namespace mlafuse::cuda {

struct Nvfp4Params {
  const void* x;              // [t_pad, d] activations, row-major
  const float* global_scale;  // [1] f32
  uint8_t* q;                 // [t_pad, d/2] packed e2m1
  uint8_t* sf;                // swizzled e4m3 [round_up(t_pad,128), round_up(d/16,4)]
  Nvfp4ScaleLayout layout;
  int32_t t_pad;
  int32_t d;
  int32_t padded_cols;  // round_up(d/16, 4)
  int32_t num_tokens;
  const int32_t* num_tokens_device;
};

template <class In>
__global__ void __launch_bounds__(256) quant_nvfp4_kernel(const Nvfp4Params p) {
  constexpr int kLoads = 16 / In::kPer16B;  // 16-byte loads per 16-value block
  const int32_t n = real_tokens(p.num_tokens_device, p.num_tokens, p.t_pad);
  const int64_t rows = round_up(n, 128);
  const int64_t entries = rows * p.padded_cols;
  const int32_t blocks_per_row = p.d / 16;
  const float gs = __ldg(p.global_scale);
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t e = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; e < entries;
       e += stride) {
    const int64_t m = e / p.padded_cols;
    const int32_t k = static_cast<int32_t>(e - m * p.padded_cols);
    uint8_t code = 0;
    if (m < n && k < blocks_per_row) {
      const char* src = static_cast<const char*>(p.x) + (m * p.d + k * 16) * In::kBytes;
      uint4 raw[kLoads];
#pragma unroll
      for (int l = 0; l < kLoads; ++l) raw[l] = ldg_stream(src + 16 * l);
      float v[16];
#pragma unroll
      for (int l = 0; l < kLoads; ++l) In::unpack(raw[l], v + l * In::kPer16B);
      float amax = 0.0f;
#pragma unroll
      for (int i = 0; i < 16; ++i) amax = qe::abs_max(amax, v[i]);
      const qe::Nvfp4BlockScale bs = qe::nvfp4_block_scale(amax, gs);
      const float(&lo)[8] = *reinterpret_cast<const float(*)[8]>(v);
      const float(&hi)[8] = *reinterpret_cast<const float(*)[8]>(v + 8);
      *reinterpret_cast<uint2*>(p.q + m * (p.d / 2) + k * 8) =
          make_uint2(qe::quant_nvfp4x8(lo, bs.out_scale), qe::quant_nvfp4x8(hi, bs.out_scale));
      code = bs.sf;
    }
    qe::store_nvfp4_scale(p.sf, p.layout, m, k, code);
  }
}

}  // namespace mlafuse::cuda
