// Per-token-group dynamic FP8 quantization (SPEC 3.2), device code.
//
// Design: the op is a pure stream (read 2*T*D bytes of bf16, write T*D codes + 4*T*D/G scale
// bytes), so the kernel's job is to keep enough 16-byte loads in flight and to do the math in
// registers. A group of G values is held by kLanes consecutive lanes, one 16-byte vector each
// (G = 128 bf16: 16 lanes x 8 values), so the amax is a 4-step butterfly within a half warp and
// every load and store is a full, coalesced vector. Each thread keeps kUnroll groups' loads in
// flight before it computes (GroupMap says which groups); the grid is sized for the padded count
// and groups past the real count n (read on the device) are skipped. Roofline: at D = 16384, T =
// 8192, 402 MB move; at the H100's ~3.0 TB/s copy rate that is ~134 us.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "backends/cuda/device_util.cuh"
#include "backends/cuda/quant_epilogue.cuh"

namespace mlafuse::cuda {

struct Fp8GroupParams {
  const void* x;  // [t_pad, d] activations, row-major
  uint8_t* q;     // [t_pad, d] e4m3
  float* s;       // scale storage (row-major or column-major, see group_stride)
  int32_t t_pad;
  int32_t d;
  int32_t groups;        // d / G
  bool col_major;        // scale (t, g) at g * group_stride + t; else at t * groups + g
  int64_t group_stride;  // t_pad or round_up(t_pad, 4) for column-major scales
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

// How the fast kernel walks the (token, group) units; each thread holds kUnroll units at a time.
enum class GroupMap : int {
  kStrided = 0,     // unit u of a thread is kUnroll grid-strides apart (token-major order)
  kContiguous = 1,  // a warp owns kUnroll * (units per warp) consecutive units (token-major)
  kTiled = 2,       // a block owns a tile of (threads / lanes) tokens x kUnroll groups, so the
                    // column-major scales of one group are written as one run of tokens
};

// Fast path: G / (16-byte vector) is a power of two. With kPrefetch a thread issues the loads of
// its next round before it computes the current one, so its loads stay in flight through the
// amax / scale / encode work (which otherwise leaves the memory system idle for that thread).
template <class In, int G, int kUnroll, GroupMap kMap, bool kPrefetch>
__global__ void __launch_bounds__(256) quant_fp8_group_vec_kernel(const Fp8GroupParams p) {
  constexpr int kVec = In::kPer16B;  // values per 16-byte vector
  constexpr int kVecsPerGroup = G / kVec;
  static_assert(G % kVec == 0 && (kVecsPerGroup & (kVecsPerGroup - 1)) == 0,
                "group must be a power-of-two number of 16-byte vectors");
  constexpr int kLanes = kVecsPerGroup < 32 ? kVecsPerGroup : 32;  // lanes per group
  constexpr int kVecsPerLane = kVecsPerGroup / kLanes;
  constexpr int kUnitsPerWarp = 32 / kLanes;

  // n may live in device memory: its load is issued here and first used after the first round of
  // data loads (bounded by the padded count, which is always readable), so the two latencies
  // overlap instead of adding up.
  const int32_t n = real_tokens(p.num_tokens_device, p.num_tokens, p.t_pad);
  const uint32_t groups = static_cast<uint32_t>(p.groups);
  const uint32_t t_pad = static_cast<uint32_t>(p.t_pad);
  const int lane = threadIdx.x & 31;
  const int sub = lane & (kLanes - 1);
  const uint32_t warp = (blockIdx.x * blockDim.x + threadIdx.x) >> 5;
  const uint32_t num_warps = (gridDim.x * blockDim.x) >> 5;
  const uint32_t block_units = blockDim.x / kLanes;  // tokens per tile in kTiled
  const uint32_t tiles_g = (groups + kUnroll - 1) / kUnroll;
  const char* x = static_cast<const char*>(p.x);

  // One round: this thread's kUnroll units. `first` (warp-uniform) is the round's lowest token in
  // kTiled and its lowest unit otherwise, for the termination checks; `live` says the round starts
  // inside the padded buffer.
  struct Round {
    uint32_t unit[kUnroll];
    bool in_pad[kUnroll];  // inside the padded buffer (safe to load)
    uint32_t first;
    bool live;
  };
  auto make_round = [&](uint32_t k) {
    Round r;
    if constexpr (kMap == GroupMap::kTiled) {
      const uint32_t tile = blockIdx.x + k * gridDim.x;
      const uint32_t tt = tile / tiles_g, tg = tile - tt * tiles_g;
      r.first = tt * block_units;
      r.live = r.first < t_pad;
      const uint32_t tok = r.first + threadIdx.x / kLanes;
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        const uint32_t grp = tg * kUnroll + u;
        r.in_pad[u] = r.live && tok < t_pad && grp < groups;
        r.unit[u] = tok * groups + grp;
      }
    } else {
      const uint32_t units_pad = t_pad * groups;
      if constexpr (kMap == GroupMap::kStrided) {
        r.first = (warp + k * num_warps * kUnroll) * kUnitsPerWarp;
      } else {
        r.first = (warp + k * num_warps) * kUnitsPerWarp * kUnroll;
      }
      r.live = r.first < units_pad;
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        r.unit[u] = kMap == GroupMap::kStrided
                        ? r.first + lane / kLanes + u * num_warps * kUnitsPerWarp
                        : r.first + u * kUnitsPerWarp + lane / kLanes;
        r.in_pad[u] = r.live && r.unit[u] < units_pad;
      }
    }
    return r;
  };
  using Raw = uint4[kUnroll][kVecsPerLane];
  auto load_round = [&](const Round& r, Raw& raw) {
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
#pragma unroll
      for (int v = 0; v < kVecsPerLane; ++v) {
        raw[u][v] =
            r.in_pad[u]
                ? ldg_stream(x + (static_cast<int64_t>(r.unit[u]) * G + (v * kLanes + sub) * kVec) *
                                     In::kBytes)
                : make_uint4(0, 0, 0, 0);
      }
    }
  };

  Round cur = make_round(0);
  if (!cur.live) return;
  Raw raw;
  load_round(cur, raw);
  for (uint32_t k = 0;; ++k) {
    const Round next = make_round(k + 1);
    Raw raw_next;
    if constexpr (kPrefetch) load_round(next, raw_next);
    // From here on only real tokens count: tokens < n are units < n * groups (token-major).
    const uint32_t limit =
        kMap == GroupMap::kTiled ? static_cast<uint32_t>(n) : static_cast<uint32_t>(n) * groups;
    if (cur.first >= limit) break;
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const uint32_t key =
          kMap == GroupMap::kTiled ? cur.first + threadIdx.x / kLanes : cur.unit[u];
      const bool valid = cur.in_pad[u] && key < limit;
      float vals[kVecsPerLane][kVec];  // [vector][value] of this lane's share of the group
      float amax = 0.0f;
#pragma unroll
      for (int v = 0; v < kVecsPerLane; ++v) {
        In::unpack(raw[u][v], vals[v]);
#pragma unroll
        for (int i = 0; i < kVec; ++i) amax = qe::abs_max(amax, vals[v][i]);
      }
      amax = qe::group_amax<kLanes - 1>(amax);  // every lane takes part, valid or not
      const qe::Fp8GroupScale sc = qe::fp8_group_scale(amax, p.eps, p.ue8m0);
      if (!valid) continue;
#pragma unroll
      for (int v = 0; v < kVecsPerLane; ++v) {
        uint32_t codes[kVec / 4];
#pragma unroll
        for (int c = 0; c < kVec / 4; ++c) {
          codes[c] = qe::quant_fp8x4(vals[v][4 * c], vals[v][4 * c + 1], vals[v][4 * c + 2],
                                     vals[v][4 * c + 3], sc);
        }
        uint8_t* dst = p.q + static_cast<int64_t>(cur.unit[u]) * G + (v * kLanes + sub) * kVec;
        if constexpr (kVec == 8) {
          *reinterpret_cast<uint2*>(dst) = make_uint2(codes[0], codes[1]);
        } else {
          *reinterpret_cast<uint32_t*>(dst) = codes[0];
        }
      }
      if (sub == 0) p.s[group_scale_offset(p, cur.unit[u])] = sc.s;
    }
    if (!next.live) break;
    cur = next;
    if constexpr (kPrefetch) {
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
#pragma unroll
        for (int v = 0; v < kVecsPerLane; ++v) raw[u][v] = raw_next[u][v];
      }
    } else {
      load_round(cur, raw);
    }
  }
}

// Any G that is a multiple of 16: one warp per group, two passes over the group (the second from
// L1/L2). Correct for every size the op accepts; the fast path covers the common ones.
template <class In>
__global__ void __launch_bounds__(256)
    quant_fp8_group_any_kernel(const Fp8GroupParams p, int32_t group) {
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
