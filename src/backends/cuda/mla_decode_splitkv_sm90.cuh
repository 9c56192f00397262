// mla_decode_splitkv, Hopper version (wgmma, sm_90a): one CTA = one split-KV part x 64 heads, two
// warpgroups. Same schedule, segment walk and outputs as the mma.sync kernel
// (mla_decode_splitkv.cuh); the math per 64-token KV tile is:
//   S_w = Q K[32w .. 32w+31]^T   warpgroup w: wgmma m64n32k16 x 36, Q and K from shared memory
//   row max exchanged through shared memory, P = exp2(S - m) written to shared memory (bf16)
//   O_w += P V[:, 256w .. 256w+255]   wgmma m64n256k16 x 4, V = the K tile read MN-major
// Q, the KV tiles and P live in 128-byte-swizzled layouts (mla_wgmma.cuh) that the wgmma
// descriptors read directly; the tiles arrive by cp.async in a two-stage pipeline.
#pragma once

#include <cuda_bf16.h>

#include <cstdint>

#include "backends/cuda/mla_decode.h"
#include "backends/cuda/mla_decode_plan.cuh"
#include "backends/cuda/mla_decode_splitkv.cuh"
#include "backends/cuda/mla_mma.cuh"
#include "backends/cuda/mla_wgmma.cuh"

namespace mlafuse::cuda::mla {

inline constexpr int kWgThreads = 256;                     // two warpgroups
inline constexpr int kWgHeads = 64;                        // heads per CTA (the wgmma M)
inline constexpr int kTileBytes = kMlaPage * kMlaRow * 2;  // one [64, 576] bf16 tile

struct SplitKvWgmmaSmem {
  uint8_t q[kWgHeads * kMlaRow * 2];   // SW128 [64 heads, 576]
  uint8_t kv[2][kTileBytes];           // SW128 [64 tokens, 576], two stages
  uint8_t p[kWgHeads * kMlaPage * 2];  // SW128 [64 heads, 64 tokens] bf16
  float red_max[2][kWgHeads];          // per warpgroup row max of the tile's scores
  float l_part[2][kWgHeads];           // per warpgroup row sum at the segment's end
};
// The swizzle pattern repeats every 1024 bytes: tiles start on such a boundary.
inline constexpr size_t kWgmmaSmemBytes = sizeof(SplitKvWgmmaSmem) + 1024;

// One 64-token page -> SW128 tile by cp.async; rows at or past `valid` are zeroed.
__device__ __forceinline__ void load_kv_tile_sw128(uint32_t dst, const __nv_bfloat16* page,
                                                   int valid) {
  for (int i = threadIdx.x; i < kMlaPage * kRowChunks; i += kWgThreads) {
    const int r = i / kRowChunks;
    const int c = i - r * kRowChunks;
    const uint32_t d = dst + sw128_offset(kMlaPage, r, c);
    if (r < valid) {
      cp_async16(d, page + r * kMlaRow + c * 8);
    } else {
      st_shared_zero16(d);
    }
  }
}

__global__ void __launch_bounds__(kWgThreads, 1)
    mla_decode_splitkv_wgmma_kernel(MlaDecodeProblem p, MlaWorkspace ws) {
  constexpr float kLog2e = 1.4426950408889634f;
  constexpr float kLn2 = 0.6931471805599453f;
  extern __shared__ __align__(16) uint8_t smem_wg[];
  const uint32_t raw_addr = smem_addr(smem_wg);
  const uint32_t pad = ((raw_addr + 1023u) & ~1023u) - raw_addr;
  SplitKvWgmmaSmem& sm = *reinterpret_cast<SplitKvWgmmaSmem*>(smem_wg + pad);
  const uint32_t sq = smem_addr(sm.q);
  const uint32_t skv0 = smem_addr(sm.kv[0]);
  const uint32_t sp = smem_addr(sm.p);

  const int part = blockIdx.x;
  const int head0 = blockIdx.y * kWgHeads;
  const int wg = threadIdx.x / 128;
  const int warp = (threadIdx.x % 128) / 32;  // warp within the warpgroup: rows 16*warp ..
  const int lane = threadIdx.x % 32;
  const int row0 = 16 * warp + lane / 4;  // this thread's rows: row0 and row0 + 8
  const int per_part = ws.sched[0];
  const int part_begin = part * per_part;
  const int part_end = part_begin + per_part;
  const float scale_log2 = p.softmax_scale * kLog2e;

  for (int t = ws.part_qbegin[part]; t < p.num_queries; ++t) {
    const int cum = ws.q_cum[t];
    if (cum >= part_end) break;
    const int len = ws.q_len[t];
    const int tiles = ceil_tiles(len);
    const int tile0 = max(part_begin - cum, 0);
    const int tile1 = min(part_end - cum, tiles);
    if (tile0 >= tile1) continue;

    __syncthreads();  // the previous segment's readers of q / kv / l_part are done
    const int32_t* bt_row =
        p.block_table + static_cast<int64_t>(ws.q_row[t]) * p.block_table_stride;
    {
      const __nv_bfloat16* gq = p.q_cat + (static_cast<int64_t>(t) * p.num_heads + head0) * kMlaRow;
      for (int i = threadIdx.x; i < kWgHeads * kRowChunks; i += kWgThreads) {
        const int r = i / kRowChunks;
        const int c = i - r * kRowChunks;
        cp_async16(sq + sw128_offset(kWgHeads, r, c), gq + r * kMlaRow + c * 8);
      }
      load_kv_tile_sw128(skv0, kv_page(p, bt_row, tile0), len - tile0 * kMlaPage);
      cp_async_commit();
    }

    float
        o[128];  // O[rows, 256w + 8j + 2(lane%4) + {0,1}] at o[4j + {0,1}] (row0), + {2,3} (row0+8)
#pragma unroll
    for (int i = 0; i < 128; ++i) o[i] = 0.0f;
    float m_run[2] = {-INFINITY, -INFINITY};
    float l_run[2] = {0.0f, 0.0f};  // this thread's columns only; reduced at the end

    for (int tile = tile0; tile < tile1; ++tile) {
      const int buf = (tile - tile0) & 1;
      const uint32_t skv = skv0 + buf * kTileBytes;
      cp_async_wait<0>();
      fence_proxy_async();  // cp.async / zero-fill writes -> visible to the tensor cores
      __syncthreads();
      if (tile + 1 < tile1) {
        load_kv_tile_sw128(skv0 + (buf ^ 1) * kTileBytes, kv_page(p, bt_row, tile + 1),
                           len - (tile + 1) * kMlaPage);
      }
      cp_async_commit();

      // ---- S = Q K^T for this warpgroup's 32 tokens ----
      float s[16];
#pragma unroll
      for (int i = 0; i < 16; ++i) s[i] = 0.0f;
      wgmma_fence();
#pragma unroll
      for (int kk = 0; kk < kMlaRow / 16; ++kk) {
        const uint32_t koff = (kk / 4) * (kMlaPage * 128) + (kk % 4) * 32;
        wgmma_m64n32k16_ss<0>(s, desc_kmajor(sq + koff), desc_kmajor(skv + koff + wg * 32 * 128),
                              kk > 0 ? 1 : 0);
      }
      wgmma_commit();
      wgmma_wait<0>();
      fence_regs(s);

      const int tok0 = tile * kMlaPage + 32 * wg + 2 * (lane % 4);
      float mx[2] = {-INFINITY, -INFINITY};
#pragma unroll
      for (int j = 0; j < 4; ++j)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int tok = tok0 + 8 * j + (e & 1);
          s[4 * j + e] = tok < len ? s[4 * j + e] * scale_log2 : -INFINITY;
          mx[e / 2] = fmaxf(mx[e / 2], s[4 * j + e]);
        }
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 1));
        mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 2));
      }
      if (lane % 4 == 0) {
        sm.red_max[wg][row0] = mx[0];
        sm.red_max[wg][row0 + 8] = mx[1];
      }
      __syncthreads();

      // ---- online softmax: P to shared memory, rescale O ----
      float alpha[2];
      float m_new[2];
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        const int row = row0 + 8 * r;
        const float tmax = fmaxf(sm.red_max[0][row], sm.red_max[1][row]);
        m_new[r] = fmaxf(m_run[r], tmax);  // finite: the tile holds at least one valid token
        alpha[r] = exp2f(m_run[r] - m_new[r]);
        m_run[r] = m_new[r];
        l_run[r] *= alpha[r];
      }
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        float pv[4];
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          pv[e] = exp2f(s[4 * j + e] - m_new[e / 2]);
          l_run[e / 2] += pv[e];
        }
        const int chunk = 4 * wg + j;  // token columns 8 * chunk ..
#pragma unroll
        for (int r = 0; r < 2; ++r) {
          const int row = row0 + 8 * r;
          const uint32_t addr = sp + sw128_offset(kWgHeads, row, chunk) + (lane % 4) * 4;
          asm volatile("st.shared.u32 [%0], %1;\n" ::"r"(addr),
                       "r"(pack_bf16x2(pv[2 * r], pv[2 * r + 1]))
                       : "memory");
        }
      }
#pragma unroll
      for (int j = 0; j < 32; ++j) {
        o[4 * j] *= alpha[0];
        o[4 * j + 1] *= alpha[0];
        o[4 * j + 2] *= alpha[1];
        o[4 * j + 3] *= alpha[1];
      }
      fence_proxy_async();  // P (st.shared) -> visible to the tensor cores
      __syncthreads();

      // ---- O_w += P V[:, 256w ..] ----
      fence_regs(o);
      wgmma_fence();
#pragma unroll
      for (int kk = 0; kk < kMlaPage / 16; ++kk) {
        wgmma_m64n256k16_ss<1>(
            o, desc_kmajor(sp + kk * 32),
            desc_mnmajor(skv + 4 * wg * (kMlaPage * 128) + kk * 16 * 128, kMlaPage * 128), 1);
      }
      wgmma_commit();
      wgmma_wait<0>();
      fence_regs(o);
    }

    // ---- row sums over both warpgroups, normalize, write ----
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      l_run[r] += __shfl_xor_sync(0xffffffffu, l_run[r], 1);
      l_run[r] += __shfl_xor_sync(0xffffffffu, l_run[r], 2);
    }
    if (lane % 4 == 0) {
      sm.l_part[wg][row0] = l_run[0];
      sm.l_part[wg][row0 + 8] = l_run[1];
    }
    __syncthreads();
    const bool whole = tile0 == 0 && tile1 == tiles;
    const int slot = whole ? 0 : partial_slot(ws, part, t);
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      const int row = row0 + 8 * r;
      const int head = head0 + row;
      const float l = sm.l_part[0][row] + sm.l_part[1][row];
      const float inv_l = 1.0f / l;
      if (whole) {
        __nv_bfloat16* dst =
            ws.o_lat + (static_cast<int64_t>(t) * p.num_heads + head) * kMlaLatent + 256 * wg;
#pragma unroll
        for (int j = 0; j < 32; ++j) {
          *reinterpret_cast<uint32_t*>(dst + 8 * j + 2 * (lane % 4)) =
              pack_bf16x2(o[4 * j + 2 * r] * inv_l, o[4 * j + 2 * r + 1] * inv_l);
        }
      } else {
        float* dst =
            ws.o_part + (static_cast<int64_t>(slot) * p.num_heads + head) * kMlaLatent + 256 * wg;
#pragma unroll
        for (int j = 0; j < 32; ++j) {
          *reinterpret_cast<float2*>(dst + 8 * j + 2 * (lane % 4)) =
              make_float2(o[4 * j + 2 * r] * inv_l, o[4 * j + 2 * r + 1] * inv_l);
        }
        if (wg == 0 && lane % 4 == 0) {
          ws.lse_part[static_cast<int64_t>(slot) * p.num_heads + head] =
              (m_run[r] + log2f(l)) * kLn2;
        }
      }
    }
  }
}

}  // namespace mlafuse::cuda::mla
