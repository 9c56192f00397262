// mla_decode_splitkv, mma.sync version: one CTA = one split-KV part x one block of kHpb heads.
// It walks the query segments of its part (mla_decode_plan.cuh); for each, it streams the query's
// KV pages (one 64-token page = one tile, [64, 576] bf16) through a two-stage cp.async pipeline and
// runs flash-decoding on tensor cores (mma.sync m16n8k16, bf16 in, f32 accumulate):
//   S = Q K^T   [kHpb, 64]   warp w: rows 16*(w % kMT), tokens kTN*(w / kMT) .. + kTN
//   online softmax (row max / sum exchanged through shared memory)
//   O += P V    [kHpb, 512]  warp w: all rows, latent dims 64*w .. + 64 (V = the tile's first 512)
// A query done by one part writes its normalized latent output as bf16 (ws.o_lat); a split one
// writes an f32 partial and its log-sum-exp (ws.o_part / ws.lse_part) for the combine.
// KV rows past a sequence's end are never loaded: the last tile's tail is zero-filled in shared
// memory and masked to -inf in S, so NaN poison past the end cannot reach the output.
#pragma once

#include <cuda_bf16.h>

#include <cstdint>

#include "backends/cuda/mla_decode.h"
#include "backends/cuda/mla_decode_plan.cuh"
#include "backends/cuda/mla_mma.cuh"

namespace mlafuse::cuda::mla {

inline constexpr int kSplitThreads = 256;
inline constexpr int kRowChunks = kMlaRow / 8;  // 72 chunks of 16 bytes in a 576-wide row

template <int kHpb>
struct SplitKvMmaSmem {
  static constexpr int kMT = kHpb / 16;     // 16-row m-tiles
  static constexpr int kTG = 8 / kMT;       // token groups of the S phase
  __nv_bfloat16 q[kHpb * kMlaRow];          // [kHpb, 576] swizzled
  __nv_bfloat16 kv[2][kMlaPage * kMlaRow];  // [2][64, 576] swizzled
  __nv_bfloat16 p[kHpb * kMlaPage];         // [kHpb, 64] swizzled: softmax numerators
  float red_max[kTG][kHpb];                 // per token group row max of the scaled scores
  float red_sum[kTG][kHpb];                 // per token group row sum of P
};

// Copies one 64-token page into a shared tile; rows at or past `valid` are zeroed instead.
__device__ __forceinline__ void load_kv_tile(__nv_bfloat16* dst,         // [64, 576] swizzled
                                             const __nv_bfloat16* page,  // [64, 576] global
                                             int valid) {
  for (int i = threadIdx.x; i < kMlaPage * kRowChunks; i += kSplitThreads) {
    const int r = i / kRowChunks;
    const int c = i - r * kRowChunks;
    const uint32_t d = smem_addr(dst + r * kMlaRow + swz(r, c) * 8);
    if (r < valid) {
      cp_async16(d, page + r * kMlaRow + c * 8);
    } else {
      st_shared_zero16(d);
    }
  }
}

__device__ __forceinline__ const __nv_bfloat16* kv_page(const MlaDecodeProblem& p,
                                                        const int32_t* bt_row, int tile) {
  const int32_t page = bt_row[tile];
  // The runner validated the table on the host; a bad id here means corrupted metadata at replay.
  if (page < 0 || page >= p.num_pages) __trap();
  return p.kv_cache + static_cast<int64_t>(page) * kMlaPage * kMlaRow;
}

template <int kHpb>
__global__ void __launch_bounds__(kSplitThreads, 1)
    mla_decode_splitkv_mma_kernel(MlaDecodeProblem p, MlaWorkspace ws) {
  using Smem = SplitKvMmaSmem<kHpb>;
  constexpr int kMT = Smem::kMT;
  constexpr int kTG = Smem::kTG;
  constexpr int kTN = kMlaPage / kTG;  // tokens per warp in the S phase
  constexpr int kNT = kTN / 8;         // n-tiles per warp in the S phase
  constexpr float kLog2e = 1.4426950408889634f;
  constexpr float kLn2 = 0.6931471805599453f;
  extern __shared__ __align__(128) uint8_t smem_raw[];
  Smem& sm = *reinterpret_cast<Smem*>(smem_raw);

  const int part = blockIdx.x;
  const int head0 = blockIdx.y * kHpb;
  const int warp = threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  const int mi_s = warp % kMT;  // S phase m-tile
  const int tg = warp / kMT;    // S phase token group
  const int per_part = ws.sched[0];
  const int part_begin = part * per_part;
  const int part_end = part_begin + per_part;
  const float scale_log2 = p.softmax_scale * kLog2e;
  const uint32_t sq = smem_addr(sm.q);
  const uint32_t sp = smem_addr(sm.p);

  for (int t = ws.part_qbegin[part]; t < p.num_queries; ++t) {
    const int cum = ws.q_cum[t];
    if (cum >= part_end) break;
    const int len = ws.q_len[t];
    const int tiles = ceil_tiles(len);
    const int tile0 = max(part_begin - cum, 0);
    const int tile1 = min(part_end - cum, tiles);
    if (tile0 >= tile1) continue;

    __syncthreads();  // the previous segment's readers of q / kv are done
    const int32_t* bt_row =
        p.block_table + static_cast<int64_t>(ws.q_row[t]) * p.block_table_stride;
    {
      const __nv_bfloat16* gq = p.q_cat + (static_cast<int64_t>(t) * p.num_heads + head0) * kMlaRow;
      for (int i = threadIdx.x; i < kHpb * kRowChunks; i += kSplitThreads) {
        const int r = i / kRowChunks;
        const int c = i - r * kRowChunks;
        cp_async16(smem_addr(sm.q + r * kMlaRow + swz(r, c) * 8), gq + r * kMlaRow + c * 8);
      }
      load_kv_tile(sm.kv[0], kv_page(p, bt_row, tile0), len - tile0 * kMlaPage);
      cp_async_commit();
    }

    float o[kMT][8][4];
#pragma unroll
    for (int mi = 0; mi < kMT; ++mi)
#pragma unroll
      for (int nt = 0; nt < 8; ++nt)
#pragma unroll
        for (int e = 0; e < 4; ++e) o[mi][nt][e] = 0.0f;
    float m_run[kMT][2];  // running row max (log2 domain) of the rows lane/4 and lane/4 + 8
    float l_run[kMT][2];  // running row sum
#pragma unroll
    for (int mi = 0; mi < kMT; ++mi) {
      m_run[mi][0] = m_run[mi][1] = -INFINITY;
      l_run[mi][0] = l_run[mi][1] = 0.0f;
    }

    for (int tile = tile0; tile < tile1; ++tile) {
      const int buf = (tile - tile0) & 1;
      cp_async_wait<0>();
      __syncthreads();  // tile `tile` is in shared memory; everyone is done with the other buffer
      if (tile + 1 < tile1) {
        load_kv_tile(sm.kv[buf ^ 1], kv_page(p, bt_row, tile + 1), len - (tile + 1) * kMlaPage);
      }
      cp_async_commit();
      const uint32_t skv = smem_addr(sm.kv[buf]);

      // ---- S = Q K^T for rows 16*mi_s.., tokens kTN*tg.. ----
      float s[kNT][4];
#pragma unroll
      for (int nt = 0; nt < kNT; ++nt)
#pragma unroll
        for (int e = 0; e < 4; ++e) s[nt][e] = 0.0f;
#pragma unroll 4
      for (int kk = 0; kk < kMlaRow / 16; ++kk) {
        uint32_t a[4];
        {
          const int r = mi_s * 16 + (lane % 16);
          ldmatrix_x4(a, sq + (r * kMlaRow + swz(r, 2 * kk + lane / 16) * 8) * 2);
        }
        if constexpr (kNT == 1) {
          uint32_t b[2];
          const int r = tg * kTN + (lane % 8);
          ldmatrix_x2(b, skv + (r * kMlaRow + swz(r, 2 * kk + (lane / 8) % 2) * 8) * 2);
          mma_bf16_16816(s[0], a, b[0], b[1]);
        } else {
#pragma unroll
          for (int j = 0; j < kNT / 2; ++j) {
            uint32_t b[4];
            const int r = tg * kTN + (2 * j + lane / 16) * 8 + (lane % 8);
            ldmatrix_x4(b, skv + (r * kMlaRow + swz(r, 2 * kk + (lane / 8) % 2) * 8) * 2);
            mma_bf16_16816(s[2 * j], a, b[0], b[1]);
            mma_bf16_16816(s[2 * j + 1], a, b[2], b[3]);
          }
        }
      }
      // Scale into the log2 domain and mask tokens at or past the sequence's end.
      const int tok0 = tile * kMlaPage + tg * kTN + 2 * (lane % 4);
      float mx[2] = {-INFINITY, -INFINITY};
#pragma unroll
      for (int nt = 0; nt < kNT; ++nt)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int tok = tok0 + nt * 8 + (e & 1);
          s[nt][e] = tok < len ? s[nt][e] * scale_log2 : -INFINITY;
          mx[e / 2] = fmaxf(mx[e / 2], s[nt][e]);
        }
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 1));
        mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 2));
      }
      if (lane % 4 == 0) {
        sm.red_max[tg][mi_s * 16 + lane / 4] = mx[0];
        sm.red_max[tg][mi_s * 16 + lane / 4 + 8] = mx[1];
      }
      __syncthreads();

      // ---- P = exp2(S - m_new) into shared memory; row sums ----
      {
        float m_new[2];
        float sum[2] = {0.0f, 0.0f};
#pragma unroll
        for (int r = 0; r < 2; ++r) {
          const int row = mi_s * 16 + lane / 4 + 8 * r;
          float m_old = m_run[0][r];
#pragma unroll
          for (int mi = 1; mi < kMT; ++mi) m_old = mi == mi_s ? m_run[mi][r] : m_old;
          float tmax = sm.red_max[0][row];
#pragma unroll
          for (int g = 1; g < kTG; ++g) tmax = fmaxf(tmax, sm.red_max[g][row]);
          m_new[r] = fmaxf(m_old, tmax);  // finite: the tile holds at least one valid token
        }
#pragma unroll
        for (int nt = 0; nt < kNT; ++nt) {
          float pv[4];
#pragma unroll
          for (int e = 0; e < 4; ++e) {
            pv[e] = exp2f(s[nt][e] - m_new[e / 2]);
            sum[e / 2] += pv[e];
          }
          const int col = tg * kTN + nt * 8 + 2 * (lane % 4);
#pragma unroll
          for (int r = 0; r < 2; ++r) {
            const int row = mi_s * 16 + lane / 4 + 8 * r;
            *reinterpret_cast<uint32_t*>(sm.p + row * kMlaPage + swz(row, col / 8) * 8 + col % 8) =
                pack_bf16x2(pv[2 * r], pv[2 * r + 1]);
          }
        }
#pragma unroll
        for (int r = 0; r < 2; ++r) {
          sum[r] += __shfl_xor_sync(0xffffffffu, sum[r], 1);
          sum[r] += __shfl_xor_sync(0xffffffffu, sum[r], 2);
        }
        if (lane % 4 == 0) {
          sm.red_sum[tg][mi_s * 16 + lane / 4] = sum[0];
          sm.red_sum[tg][mi_s * 16 + lane / 4 + 8] = sum[1];
        }
      }
      __syncthreads();

      // ---- rescale O, then O += P V for latent dims 64*warp .. + 64 ----
#pragma unroll
      for (int mi = 0; mi < kMT; ++mi)
#pragma unroll
        for (int r = 0; r < 2; ++r) {
          const int row = mi * 16 + lane / 4 + 8 * r;
          float tmax = sm.red_max[0][row];
          float tsum = sm.red_sum[0][row];
#pragma unroll
          for (int g = 1; g < kTG; ++g) {
            tmax = fmaxf(tmax, sm.red_max[g][row]);
            tsum += sm.red_sum[g][row];
          }
          const float m_new = fmaxf(m_run[mi][r], tmax);
          const float alpha = exp2f(m_run[mi][r] - m_new);  // 0 on the first tile (-inf)
          l_run[mi][r] = l_run[mi][r] * alpha + tsum;
          m_run[mi][r] = m_new;
#pragma unroll
          for (int nt = 0; nt < 8; ++nt) {
            o[mi][nt][2 * r] *= alpha;
            o[mi][nt][2 * r + 1] *= alpha;
          }
        }
#pragma unroll
      for (int kk = 0; kk < kMlaPage / 16; ++kk) {
        uint32_t bv[4][4];
#pragma unroll
        for (int j = 0; j < 4; ++j) {
          const int r = kk * 16 + (lane % 8) + ((lane / 8) % 2) * 8;
          ldmatrix_x4_trans(bv[j],
                            skv + (r * kMlaRow + swz(r, 8 * warp + 2 * j + lane / 16) * 8) * 2);
        }
#pragma unroll
        for (int mi = 0; mi < kMT; ++mi) {
          uint32_t a[4];
          const int r = mi * 16 + (lane % 16);
          ldmatrix_x4(a, sp + (r * kMlaPage + swz(r, 2 * kk + lane / 16) * 8) * 2);
#pragma unroll
          for (int j = 0; j < 4; ++j) {
            mma_bf16_16816(o[mi][2 * j], a, bv[j][0], bv[j][1]);
            mma_bf16_16816(o[mi][2 * j + 1], a, bv[j][2], bv[j][3]);
          }
        }
      }
    }

    // ---- normalize and write this segment's result ----
    const bool whole = tile0 == 0 && tile1 == tiles;
    const int slot = whole ? 0 : partial_slot(ws, part, t);
#pragma unroll
    for (int mi = 0; mi < kMT; ++mi)
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        const int row = mi * 16 + lane / 4 + 8 * r;
        const int head = head0 + row;
        const float inv_l = 1.0f / l_run[mi][r];
        if (whole) {
          __nv_bfloat16* dst =
              ws.o_lat + (static_cast<int64_t>(t) * p.num_heads + head) * kMlaLatent;
#pragma unroll
          for (int nt = 0; nt < 8; ++nt) {
            const int d = 64 * warp + nt * 8 + 2 * (lane % 4);
            *reinterpret_cast<uint32_t*>(dst + d) =
                pack_bf16x2(o[mi][nt][2 * r] * inv_l, o[mi][nt][2 * r + 1] * inv_l);
          }
        } else {
          float* dst = ws.o_part + (static_cast<int64_t>(slot) * p.num_heads + head) * kMlaLatent;
#pragma unroll
          for (int nt = 0; nt < 8; ++nt) {
            const int d = 64 * warp + nt * 8 + 2 * (lane % 4);
            *reinterpret_cast<float2*>(dst + d) =
                make_float2(o[mi][nt][2 * r] * inv_l, o[mi][nt][2 * r + 1] * inv_l);
          }
          if (warp == 0 && lane % 4 == 0) {
            ws.lse_part[static_cast<int64_t>(slot) * p.num_heads + head] =
                (m_run[mi][r] + log2f(l_run[mi][r])) * kLn2;
          }
        }
      }
  }
}

}  // namespace mlafuse::cuda::mla
