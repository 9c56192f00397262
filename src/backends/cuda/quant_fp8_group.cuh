// Per-token-group dynamic FP8 quantization (SPEC 3.2), device code.
//
// Design: the op is a pure stream (read 2*T*D bytes of bf16, write T*D codes + 4*T*D/G scale
// bytes), so the kernel's job is to keep enough 16-byte loads in flight and to do the math in
// registers. A group of G values is held by kLanes consecutive lanes, one 16-byte vector each
// (G = 128 bf16: 16 lanes x 8 values), so the amax is a 4-step butterfly within a half warp and
// every load and store is a full, coalesced vector. Each thread keeps kUnroll groups' loads in
// flight before it computes; the grid is sized for the padded count and groups past the real
// count n (read on the device) are skipped. Roofline: at D = 16384, T = 8192, 402 MB move; at the
// H100's ~3.0 TB/s copy rate that is ~134 us.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "backends/cuda/device_util.cuh"
#include "backends/cuda/quant_epilogue.cuh"

namespace mlafuse::cuda {

struct Fp8GroupParams {
  const void* x;           // [t_pad, d] activations, row-major
  uint8_t* q;              // [t_pad, d] e4m3
  float* s;                // scale storage (row-major or column-major, see group_stride)
  int32_t t_pad;
  int32_t d;
  int32_t groups;          // d / G
  bool col_major;          // scale (t, g) at g * group_stride + t; else at t * groups + g
  int64_t group_stride;    // t_pad or round_up(t_pad, 4) for column-major scales
  int32_t num_tokens;
  const int32_t* num_tokens_device;
  float eps;
  bool ue8m0;
};

__device__ __forceinline__ int64_t group_scale_offset(const Fp8GroupParams& p, uint32_t unit) {
  if (!p.col_major) return unit;  // t * groups + g == the unit index
  const uint32_t t = unit / static_cast<uint32_t>(p.groups);
  const uint32_t g = unit - t * static_cast<uint32_t>(p.groups);
  return static_cast<int64_t>(g) * p.group_stride + t;
}

// Fast path: G / (16-byte vector) is a power of two. Units are groups in token-major order.
template <class In, int G, int kUnroll>
__global__ void __launch_bounds__(256) quant_fp8_group_vec_kernel(const Fp8GroupParams p) {
  constexpr int kVec = In::kPer16B;  // values per 16-byte vector
  constexpr int kVecsPerGroup = G / kVec;
  static_assert(G % kVec == 0 && (kVecsPerGroup & (kVecsPerGroup - 1)) == 0,
                "group must be a power-of-two number of 16-byte vectors");
  constexpr int kLanes = kVecsPerGroup < 32 ? kVecsPerGroup : 32;  // lanes per group
  constexpr int kVecsPerLane = kVecsPerGroup / kLanes;
  constexpr int kUnitsPerWarp = 32 / kLanes;

  const int32_t n = real_tokens(p.num_tokens_device, p.num_tokens, p.t_pad);
  const uint32_t units = static_cast<uint32_t>(n) * static_cast<uint32_t>(p.groups);
  const int lane = threadIdx.x & 31;
  const int sub = lane & (kLanes - 1);
  const uint32_t warp = (blockIdx.x * blockDim.x + threadIdx.x) >> 5;
  const uint32_t unit_stride = ((gridDim.x * blockDim.x) >> 5) * kUnitsPerWarp;
  const char* x = static_cast<const char*>(p.x);

  // `base` is warp-uniform, so every lane runs the same iterations and shuffles.
  for (uint32_t base = warp * kUnitsPerWarp; base < units; base += unit_stride * kUnroll) {
    const uint32_t mine = base + lane / kLanes;
    uint4 raw[kUnroll][kVecsPerLane];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const uint32_t unit = mine + u * unit_stride;
#pragma unroll
      for (int v = 0; v < kVecsPerLane; ++v) {
        raw[u][v] = unit < units ? ldg_stream(x + (static_cast<int64_t>(unit) * G +
                                                   (v * kLanes + sub) * kVec) *
                                                      In::kBytes)
                                 : make_uint4(0, 0, 0, 0);
      }
    }
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      if (base + u * unit_stride >= units) break;  // warp-uniform
      const uint32_t unit = mine + u * unit_stride;
      float vals[kVecsPerLane][kVec];  // [vector][value] of this lane's share of the group
      float amax = 0.0f;
#pragma unroll
      for (int v = 0; v < kVecsPerLane; ++v) {
        In::unpack(raw[u][v], vals[v]);
#pragma unroll
        for (int i = 0; i < kVec; ++i) amax = qe::abs_max(amax, vals[v][i]);
      }
      amax = qe::group_amax<kLanes - 1>(amax);
      const qe::Fp8GroupScale sc = qe::fp8_group_scale(amax, p.eps, p.ue8m0);
      if (unit >= units) continue;
#pragma unroll
      for (int v = 0; v < kVecsPerLane; ++v) {
        uint32_t codes[kVec / 4];
#pragma unroll
        for (int c = 0; c < kVec / 4; ++c) {
          codes[c] = qe::quant_fp8x4(vals[v][4 * c], vals[v][4 * c + 1], vals[v][4 * c + 2],
                                     vals[v][4 * c + 3], sc);
        }
        uint8_t* dst = p.q + static_cast<int64_t>(unit) * G + (v * kLanes + sub) * kVec;
        if constexpr (kVec == 8) {
          *reinterpret_cast<uint2*>(dst) = make_uint2(codes[0], codes[1]);
        } else {
          *reinterpret_cast<uint32_t*>(dst) = codes[0];
        }
      }
      if (sub == 0) p.s[group_scale_offset(p, unit)] = sc.s;
    }
  }
}

// Any G that is a multiple of 16: one warp per group, two passes over the group (the second from
// L1/L2). Correct for every size the op accepts; the fast path covers the common ones.
template <class In>
__global__ void __launch_bounds__(256) quant_fp8_group_any_kernel(const Fp8GroupParams p,
                                                                  int32_t group) {
  const int32_t n = real_tokens(p.num_tokens_device, p.num_tokens, p.t_pad);
  const uint32_t units = static_cast<uint32_t>(n) * static_cast<uint32_t>(p.groups);
  const int lane = threadIdx.x & 31;
  const uint32_t warp = (blockIdx.x * blockDim.x + threadIdx.x) >> 5;
  const uint32_t num_warps = (gridDim.x * blockDim.x) >> 5;
  for (uint32_t unit = warp; unit < units; unit += num_warps) {
    const int64_t first = static_cast<int64_t>(unit) * group;
    float amax = 0.0f;
    for (int32_t i = lane * 4; i < group; i += 128) {
#pragma unroll
      for (int j = 0; j < 4; ++j) amax = qe::abs_max(amax, In::load1(p.x, first + i + j));
    }
    amax = qe::group_amax<31>(amax);
    const qe::Fp8GroupScale sc = qe::fp8_group_scale(amax, p.eps, p.ue8m0);
    for (int32_t i = lane * 4; i < group; i += 128) {
      float v[4];
#pragma unroll
      for (int j = 0; j < 4; ++j) v[j] = In::load1(p.x, first + i + j);
      *reinterpret_cast<uint32_t*>(p.q + first + i) = qe::quant_fp8x4(v[0], v[1], v[2], v[3], sc);
    }
    if (lane == 0) p.s[group_scale_offset(p, unit)] = sc.s;
  }
}

}  // namespace mlafuse::cuda
