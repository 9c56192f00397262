// The absorbed query for small batches, device code: q_cat[t, h] = [bf16(q_nope[t, h] @
// W_UK_T[h]) | q_pe[t, h]]. With few tokens the product's cost is reading W_UK_T (16 MB at H =
// 128); cuBLAS's GEMM took ~12 us for it at T = 1 (PERF.md run 32), the read alone ~3.7 us at the
// H200's bandwidth. Both kernels give a CTA 128 of head h's 512 columns and load its 32 KB slice
// of W_UK_T[h] before they wait on the kernel before (W is a weight: no kernel of the step writes
// it), so the read is in flight while that kernel drains; at H = 128 the 512 CTAs are one wave.
//  - mla_absorb_q_gemv_kernel (1 or 2 tokens): the slice in registers, 8 rows by 8 columns a
//    thread, sums across threads in a fixed order. Faster than the MMA kernel at 1-2 tokens and
//    slower from 4 on, where its sums across threads dominate (run 32).
//  - mla_absorb_q_mma_kernel (3-16 tokens): the slice in shared memory (cp.async), each warp 16
//    columns over all 128 rows on mma.sync m16n8k16 with the tokens as M (rows past the batch are
//    zeros), no sums across threads. Against cuBLAS: faster to 16 tokens at H = 128; a grid.z of
//    16-token blocks rereading the slice from L2 was slower at 32 (run 32).
// On each kernel a token's result does not depend on the batch around it (the tests check it); the
// two kernels and cuBLAS round differently, so a token's bits can change with the batch size.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "backends/cuda/device_util.cuh"
#include "backends/cuda/mla_decode.h"
#include "backends/cuda/mla_mma.cuh"

namespace mlafuse::cuda::mla {

inline constexpr int kAbsorbThreads = 256;
inline constexpr int kAbsorbTokens = kMlaAbsorbSmallMax;  // M of the MMA
inline constexpr int kAbsorbCols = 128;   // columns of a CTA
inline constexpr int kAbsorbSlices = kMlaLatent / kAbsorbCols;
inline constexpr int kAbsorbChunks = kAbsorbCols / 8;  // 16-byte chunks of a W row
inline constexpr int kAbsorbQChunks = kMlaNope / 8;    // 16-byte chunks of a q_nope row

// Byte offset of 16-byte chunk c of row r in the W and q tiles (16-chunk rows).
__device__ __forceinline__ uint32_t absorb_chunk_offset(int r, int c) {
  return swz_chunk_offset(kAbsorbChunks * 16, r, c);
}

// The RoPE part is a copy, done by the slice-0 CTA of each head.
__device__ __forceinline__ void absorb_copy_q_pe(const __nv_bfloat16* __restrict__ q,
                                                 __nv_bfloat16* __restrict__ q_cat, int tokens,
                                                 int num_queries, int num_heads) {
  constexpr int kChunks = (kMlaQDim - kMlaNope) / 8;
  if (blockIdx.x != 0 || static_cast<int>(threadIdx.x) >= tokens * kChunks) return;
  const int t = static_cast<int>(threadIdx.x) / kChunks;
  const int c = static_cast<int>(threadIdx.x) % kChunks;
  if (t >= num_queries) return;
  const int64_t row = static_cast<int64_t>(t) * num_heads + blockIdx.y;
  const uint4 v = ldg_stream(q + row * kMlaQDim + kMlaNope + c * 8);
  *reinterpret_cast<uint4*>(q_cat + row * kMlaRow + kMlaLatent + c * 8) = v;
}

// kT: the tokens (1 or 2).
template <int kT>
__global__ void __launch_bounds__(kAbsorbThreads, 4)
    mla_absorb_q_gemv_kernel(const __nv_bfloat16* __restrict__ q,       // [T, H, 192]
                             const __nv_bfloat16* __restrict__ w_uk_t,  // [H, 128, 512]
                             __nv_bfloat16* __restrict__ q_cat,         // [T, H, 576]
                             int num_queries, int num_heads) {
  constexpr int kRowsPerThread = kMlaNope / (kAbsorbThreads / kAbsorbChunks);  // 8
  constexpr int kWarps = kAbsorbThreads / 32;
  static_assert(kRowsPerThread == 8 && kT <= 2);
  __shared__ float q_nope[kT][kMlaNope];
  __shared__ float warp_sums[kWarps][kT][kAbsorbCols];

  const int slice = blockIdx.x;
  const int h = blockIdx.y;
  const int tid = threadIdx.x;
  const int col_group = tid % kAbsorbChunks;
  const int k0 = (tid / kAbsorbChunks) * kRowsPerThread;

  uint4 w[kRowsPerThread];
  const __nv_bfloat16* wp = w_uk_t + (static_cast<int64_t>(h) * kMlaNope + k0) * kMlaLatent +
                            slice * kAbsorbCols + col_group * 8;
#pragma unroll
  for (int i = 0; i < kRowsPerThread; ++i) w[i] = ldg_stream(wp + i * kMlaLatent);

  pdl_launch_dependents();
  pdl_wait();  // q may come from the kernel before

  if (tid < kT * kAbsorbQChunks) {
    const int t = tid / kAbsorbQChunks;
    const int c = tid % kAbsorbQChunks;
    float v[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    if (t < num_queries) {
      Bf16In::unpack(ldg_stream(q + (static_cast<int64_t>(t) * num_heads + h) * kMlaQDim + c * 8),
                     v);
    }
#pragma unroll
    for (int j = 0; j < 8; ++j) q_nope[t][c * 8 + j] = v[j];
  }
  absorb_copy_q_pe(q, q_cat, kT, num_queries, num_heads);
  __syncthreads();

  float acc[kT][8];
#pragma unroll
  for (int t = 0; t < kT; ++t)
#pragma unroll
    for (int j = 0; j < 8; ++j) acc[t][j] = 0.0f;
#pragma unroll
  for (int i = 0; i < kRowsPerThread; ++i) {
    float wf[8];
    Bf16In::unpack(w[i], wf);
#pragma unroll
    for (int t = 0; t < kT; ++t) {
      const float qv = q_nope[t][k0 + i];
#pragma unroll
      for (int j = 0; j < 8; ++j) acc[t][j] = fmaf(qv, wf[j], acc[t][j]);
    }
  }
  // The warp's two row blocks (lanes l and l + 16; an f32 sum of two is order-free), then the
  // 8 warps in order.
  const int lane = tid % 32;
#pragma unroll
  for (int t = 0; t < kT; ++t)
#pragma unroll
    for (int j = 0; j < 8; ++j) acc[t][j] += __shfl_xor_sync(0xffffffffu, acc[t][j], 16);
  if (lane < 16) {
#pragma unroll
    for (int t = 0; t < kT; ++t) {
      float4* dst = reinterpret_cast<float4*>(&warp_sums[tid / 32][t][col_group * 8]);
      dst[0] = make_float4(acc[t][0], acc[t][1], acc[t][2], acc[t][3]);
      dst[1] = make_float4(acc[t][4], acc[t][5], acc[t][6], acc[t][7]);
    }
  }
  __syncthreads();
  if (tid < kT * (kAbsorbCols / 2)) {  // two adjacent columns a thread
    const int t = tid / (kAbsorbCols / 2);
    const int c = 2 * (tid % (kAbsorbCols / 2));
    if (t < num_queries) {
      float s0 = 0.0f, s1 = 0.0f;
#pragma unroll
      for (int wi = 0; wi < kWarps; ++wi) {
        s0 += warp_sums[wi][t][c];
        s1 += warp_sums[wi][t][c + 1];
      }
      const int64_t row = static_cast<int64_t>(t) * num_heads + h;
      *reinterpret_cast<uint32_t*>(q_cat + row * kMlaRow + slice * kAbsorbCols + c) =
          pack_bf16x2(s0, s1);
    }
  }
}

// num_queries <= kAbsorbTokens (the launcher's rule).
__global__ void __launch_bounds__(kAbsorbThreads)
    mla_absorb_q_mma_kernel(const __nv_bfloat16* __restrict__ q,       // [T, H, 192]
                            const __nv_bfloat16* __restrict__ w_uk_t,  // [H, 128, 512]
                            __nv_bfloat16* __restrict__ q_cat,         // [T, H, 576]
                            int num_queries, int num_heads) {
  static_assert(kAbsorbChunks == 16 && kAbsorbQChunks == 16 &&
                kAbsorbSlices * kAbsorbCols == kMlaLatent && kAbsorbTokens == 16);
  __shared__ __align__(128) uint8_t w_tile[kMlaNope * kAbsorbCols * 2];    // [k][col], 32 KB
  __shared__ __align__(128) uint8_t q_tile[kAbsorbTokens * kMlaNope * 2];  // [t][k], 4 KB

  const int slice = blockIdx.x;
  const int h = blockIdx.y;
  const int tid = threadIdx.x;
  const int warp = tid / 32;
  const int lane = tid % 32;
  const uint32_t sw = smem_addr(w_tile);
  const uint32_t sq = smem_addr(q_tile);

  const __nv_bfloat16* w_slice =
      w_uk_t + static_cast<int64_t>(h) * kMlaNope * kMlaLatent + slice * kAbsorbCols;
#pragma unroll
  for (int i = 0; i < kMlaNope * kAbsorbChunks / kAbsorbThreads; ++i) {
    const int e = i * kAbsorbThreads + tid;
    const int r = e / kAbsorbChunks;
    const int c = e % kAbsorbChunks;
    cp_async16(sw + absorb_chunk_offset(r, c), w_slice + r * kMlaLatent + c * 8);
  }
  cp_async_commit();

  pdl_launch_dependents();
  pdl_wait();  // q may come from the kernel before

  {  // one chunk of q_nope a thread; rows past the batch are zeros (their results are dropped)
    const int t = tid / kAbsorbQChunks;
    const int c = tid % kAbsorbQChunks;
    const uint32_t dst = sq + absorb_chunk_offset(t, c);
    if (t < num_queries) {
      cp_async16(dst, q + (static_cast<int64_t>(t) * num_heads + h) * kMlaQDim + c * 8);
    } else {
      st_shared_zero16(dst);
    }
    cp_async_commit();
  }
  absorb_copy_q_pe(q, q_cat, kAbsorbTokens, num_queries, num_heads);
  cp_async_wait<0>();
  __syncthreads();

  // Warp w: columns 16w .. 16w + 15 of the slice (two n8 tiles), k in 16-wide steps in order.
  float c[2][4] = {{0, 0, 0, 0}, {0, 0, 0, 0}};
#pragma unroll
  for (int kk = 0; kk < kMlaNope / 16; ++kk) {
    uint32_t a[4];
    ldmatrix_x4(a, sq + absorb_chunk_offset(lane % 16, 2 * kk + lane / 16));
    uint32_t b[4];
    ldmatrix_x4_trans(b, sw + absorb_chunk_offset(kk * 16 + (lane % 8) + ((lane / 8) % 2) * 8,
                                                  2 * warp + lane / 16));
    mma_bf16_16816(c[0], a, b[0], b[1]);
    mma_bf16_16816(c[1], a, b[2], b[3]);
  }
  // Accumulator rows lane / 4 and lane / 4 + 8, columns 2 (lane % 4) and the next.
#pragma unroll
  for (int j = 0; j < 2; ++j) {
    const int col = slice * kAbsorbCols + warp * 16 + j * 8 + 2 * (lane % 4);
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      const int t = lane / 4 + 8 * half;
      if (t >= num_queries) continue;
      const int64_t row = static_cast<int64_t>(t) * num_heads + h;
      *reinterpret_cast<uint32_t*>(q_cat + row * kMlaRow + col) =
          pack_bf16x2(c[j][2 * half], c[j][2 * half + 1]);
    }
  }
}

}  // namespace mlafuse::cuda::mla
