// mla_prefill_attention, Hopper (sm_90a): causal flash attention of the expanded MLA form,
// d_qk = 192 (128 nope + 64 RoPE), d_v = 128, with the quantized-output epilogue of the decode
// combine.
//
// One CTA = 128 query rows of one sequence x one head; three warpgroups:
//   warpgroup 0 (producer, 24 registers): one thread issues every TMA copy. Q [128, 192] once;
//     then KV tiles of 128 context tokens into a ring of two stages, each stage K [128, 192]
//     (K_nope from kv, k_pe from the shared RoPE rows: no per-head copy) and V [128, 128], with
//     separate "K landed" and "V landed" barriers so Q K^T starts while V is still arriving;
//   warpgroups 1 and 2 (math, 240 registers): 64 query rows each. Per tile S = Q K^T (wgmma,
//     both operands from shared memory), the online softmax in registers, O += P V (wgmma with P
//     as a register operand: the S accumulator converted to bf16 in place), then both hand the
//     stage back ("empty" barrier, one arrival per math thread).
// The two math warpgroups work on the same stage but are otherwise independent, so one's softmax
// overlaps the other's MMAs. (FlashAttention-3 additionally orders them with named barriers
// ("ping-pong") and overlaps a warpgroup's own softmax with its next Q K^T; not done here yet.)
//
// Tiles are [rows, 64]-column SW128 chunks (mla_wgmma.cuh) of 16 KB (128 rows). Context tokens a
// query may not see (causal limit, tokens past the sequence) are masked to -inf; every query
// sees context token 0, so the running max is finite after the first tile and no row is empty.
// A math warpgroup whose 64 rows see nothing of a tile skips its MMAs but still takes part in
// the stage hand-off.
//
// Epilogue: O / l rounded to bf16 (the value an unfused graph's quant op would read) goes to the
// decode combine's epilogue functors (mla_combine_up_quant.cuh). Quantized formats take a warp's
// 16 rows straight from the accumulator layout (`quad_rows`: one head's group of 128, or 64, or a
// 16-element NVFP4 block lies in one quad of lanes, so all 16 rows reduce at once), the codes
// staged in the warp's dead Q rows for whole-row stores; bf16 is staged in the warpgroup's dead Q
// rows and stored row by row. The codes and scales are those of the standalone quant kernels on
// this kernel's bf16 output, bit for bit (quant_epilogue.cuh). Rows past a sequence's queries are
// not written.
#pragma once

#include <cuda.h>
#include <cuda_bf16.h>

#include <cstdint>

#include "backends/cuda/mla_combine_up_quant.cuh"
#include "backends/cuda/mla_mma.cuh"
#include "backends/cuda/mla_prefill.h"
#include "backends/cuda/mla_wgmma.cuh"
#include "backends/cuda/tma_sm90.cuh"

namespace mlafuse::cuda::mla {

inline constexpr int kPrefillThreads = 384;  // producer warpgroup + two math warpgroups
inline constexpr int kPrefillStages = 2;
inline constexpr int kPrefillChunkBytes = kMlaPrefillTileN * 128;  // [128 rows, 64 cols] bf16
static_assert(kMlaPrefillTileM == kMlaPrefillTileN, "one chunk size serves Q and KV tiles");
inline constexpr int kPrefillQChunks = kMlaQDim / 64;  // 3: nope 0..63, nope 64..127, RoPE
inline constexpr int kPrefillVChunks = kMlaVDim / 64;  // 2
inline constexpr uint32_t kPrefillQBytes = kPrefillQChunks * kPrefillChunkBytes;
inline constexpr uint32_t kPrefillKBytes = kPrefillQChunks * kPrefillChunkBytes;
inline constexpr uint32_t kPrefillVBytes = kPrefillVChunks * kPrefillChunkBytes;

struct PrefillSmem {
  uint8_t q[kPrefillQBytes];                  // Q [128, 192]; later the bf16 output tile
  uint8_t k[kPrefillStages][kPrefillKBytes];  // K [128 tokens, 192]
  uint8_t v[kPrefillStages][kPrefillVBytes];  // V [128 tokens, 128]
  uint64_t bar_q;
  uint64_t bar_k[kPrefillStages];
  uint64_t bar_v[kPrefillStages];
  uint64_t bar_empty[kPrefillStages];
};
// SW128 tiles start on 1024-byte boundaries.
inline constexpr size_t kPrefillSmemBytes = sizeof(PrefillSmem) + 1024;
static_assert(kPrefillSmemBytes <= 227 * 1024, "the prefill tiles must fit in shared memory");

// Tensor maps of one call: Q as [q_rows, H*192], kv as [kv_rows, H*256], k_pe as [kv_rows, 64],
// all in boxes of [128 rows, 64 columns] with the 128-byte swizzle.
struct PrefillMaps {
  CUtensorMap q;
  CUtensorMap kv;
  CUtensorMap k_pe;
};

template <int kCount>
__device__ __forceinline__ void setmaxnreg_dec() {
  asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;\n" ::"n"(kCount));
}
template <int kCount>
__device__ __forceinline__ void setmaxnreg_inc() {
  asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;\n" ::"n"(kCount));
}
// Keeps the register operand of an asynchronous MMA alive (and unmoved) until its wait.
template <int kN>
__device__ __forceinline__ void fence_regs_u32(uint32_t (&r)[kN]) {
#pragma unroll
  for (int i = 0; i < kN; ++i) asm volatile("" : "+r"(r[i])::"memory");
}

// The last context position query row `i` (0-based in its sequence) may see.
__device__ __forceinline__ int prefill_last_key(int i, int q_len, int kv_len) {
  return min(kv_len - 1, kv_len - q_len + i);
}

// 2^x (MUFU; -inf gives +0). The scores never need the denormal range.
__device__ __forceinline__ float fast_exp2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}

// S [64, 128] = Q K^T of one warpgroup over one K stage (12 k-steps of 16), committed as one group.
__device__ __forceinline__ void prefill_issue_qk(float (&s)[64], uint32_t sq, uint32_t sk) {
  wgmma_fence();
#pragma unroll
  for (int c = 0; c < kPrefillQChunks; ++c) {
#pragma unroll
    for (int ks = 0; ks < 4; ++ks) {
      const uint32_t off = c * kPrefillChunkBytes + ks * 32;
      wgmma_m64n128k16_ss(s, desc_kmajor(sq + off), desc_kmajor(sk + off), c > 0 || ks > 0);
    }
  }
  wgmma_commit();
}

// O [64, 128] += P V over one V stage: P from registers (the S accumulator layout in bf16), V
// [128 tokens, 128] as two 64-column chunks kPrefillChunkBytes apart (the MN-major leading byte
// offset); 16 tokens = 16 rows of 128 bytes a k-step.
__device__ __forceinline__ void prefill_issue_pv(float (&o)[64], const uint32_t (&pa)[32],
                                                 uint32_t sv) {
  wgmma_fence();
#pragma unroll
  for (int kk = 0; kk < kMlaPrefillTileN / 16; ++kk) {
    const uint32_t a[4] = {pa[4 * kk], pa[4 * kk + 1], pa[4 * kk + 2], pa[4 * kk + 3]};
    wgmma_m64n128k16_rs(o, a, desc_mnmajor(sv + kk * 16 * 128, kPrefillChunkBytes));
  }
  wgmma_commit();
}

// Online softmax of one tile of raw scores s (thread layout of the m64n128 accumulator: s[4j + e]
// is row (e < 2 ? a : b), column 8j + 2*quad + (e & 1)). Masks columns past each row's last
// visible key when `masked`, updates the running max (log2 domain) and row sums, turns s into
// P = 2^(s*scale_log2 - m) and returns the factor O must be rescaled by.
struct SoftmaxRows {
  float m[2];  // running max of the scaled scores
  float l[2];  // this thread's part of the row sums
};
__device__ __forceinline__ void prefill_softmax(float (&s)[64], SoftmaxRows& st, float (&alpha)[2],
                                                float scale_log2, bool masked, int key0, int last_a,
                                                int last_b, int quad) {
  if (true) {
#pragma unroll
    for (int j = 0; j < 16; ++j) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        if (key0 + 8 * j + 2 * quad + (e & 1) > (e < 2 ? last_a : last_b)) s[4 * j + e] = -INFINITY;
      }
    }
  }
  float mx[2] = {-INFINITY, -INFINITY};
#pragma unroll
  for (int j = 0; j < 16; ++j) {
#pragma unroll
    for (int e = 0; e < 4; ++e) mx[e / 2] = fmaxf(mx[e / 2], s[4 * j + e]);
  }
  float neg_m[2];
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 1));
    mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 2));
    // Finite: context token 0 is visible to every row, and tile 0 comes first.
    const float m_new = fmaxf(st.m[r], mx[r] * scale_log2);
    alpha[r] = fast_exp2(st.m[r] - m_new);  // 0 on the first tile (m = -inf)
    st.m[r] = m_new;
    st.l[r] *= alpha[r];
    neg_m[r] = -m_new;
  }
#pragma unroll
  for (int j = 0; j < 16; ++j) {
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const float pv = fast_exp2(__fmaf_rn(s[4 * j + e], scale_log2, neg_m[e / 2]));
      s[4 * j + e] = pv;
      st.l[e / 2] += pv;
    }
  }
}

// P (f32, in s) -> the bf16 A fragments of P V: k-step kk covers columns 16kk .. 16kk+15, i.e.
// s[8kk .. 8kk+7].
__device__ __forceinline__ void prefill_pack_p(const float (&s)[64], uint32_t (&pa)[32]) {
#pragma unroll
  for (int j = 0; j < 16; ++j) {
    pa[2 * j] = pack_bf16x2(s[4 * j], s[4 * j + 1]);
    pa[2 * j + 1] = pack_bf16x2(s[4 * j + 2], s[4 * j + 3]);
  }
}

// Named barriers of the two math warpgroups' ping-pong (0 is __syncthreads): warpgroup cw waits
// on barrier kPingPongBarrier + cw for its turn to issue MMAs; the other one arrives on it once
// it has issued its own.
inline constexpr int kPingPongBarrier = 1;

// One math warpgroup's tile loop and epilogue. cw: 0 or 1 (rows 64*cw .. of the CTA's 128).
// Per tile n (P_n in registers): issue O += P_n V_n and S_{n+1} = Q K_{n+1}^T back to back, wait,
// hand stage n back, then the softmax of S_{n+1}, rescale O and pack P_{n+1}. The two warpgroups
// take turns issuing their MMAs (FlashAttention-3's inter-warpgroup ping-pong), so one's softmax
// runs while the other's MMAs keep the tensor cores busy; nothing of a warpgroup's own softmax
// overlaps its own MMAs (the compiler would wait for them anyway: see the report of issue 10).
// Tiles past the warpgroup's last visible key (a suffix) are only waited for and handed back.
template <class Epi>
__device__ __forceinline__ void prefill_consume(const MlaPrefillProblem& p, const Epi& epi,
                                                PrefillSmem& sm, int cw, int h, int m0, int q0,
                                                int q_len, int kv_len, int num_tiles) {
  const int tid = threadIdx.x % 128;
  const int warp = tid / 32;
  const int lane = tid % 32;
  const int quad = lane % 4;
  const float scale_log2 = p.softmax_scale * 1.4426950408889634f;
  const uint32_t sq = smem_addr(sm.q) + cw * 64 * 128;  // this warpgroup's 64 rows of each chunk
  // Rows of this thread (0-based in the sequence) and the last position each may see.
  const int row_a = m0 + 64 * cw + 16 * warp + lane / 4;
  const int last_a = prefill_last_key(row_a, q_len, kv_len);
  const int last_b = prefill_last_key(row_a + 8, q_len, kv_len);
  // The warpgroup's first row sees least: tiles ending at or before its last key need no mask.
  const int wg_first = prefill_last_key(m0 + 64 * cw, q_len, kv_len);
  auto tiles_of = [&](int w) {  // tiles warpgroup w computes: >= 1, warpgroup 0's <= 1's
    return min(num_tiles, prefill_last_key(m0 + 64 * w + 63, q_len, kv_len) / kMlaPrefillTileN + 1);
  };
  const int wg_tiles = tiles_of(cw);
  const int tiles0 = tiles_of(0);  // <= warpgroup 1's: its rows are the earlier ones
  auto masked = [&](int n) { return (n + 1) * kMlaPrefillTileN - 1 > wg_first; };
  const int my_turn = kPingPongBarrier + cw;
  const int their_turn = kPingPongBarrier + 1 - cw;

  float o[64];
#pragma unroll
  for (int i = 0; i < 64; ++i) o[i] = 0.0f;
  SoftmaxRows st{{-INFINITY, -INFINITY}, {0.0f, 0.0f}};
  float alpha[2];
  float s[64];
  uint32_t pa[32];

  tma::mbar_wait(smem_addr(&sm.bar_q), 0);
  tma::mbar_wait(smem_addr(&sm.bar_k[0]), 0);
  prefill_issue_qk(s, sq, smem_addr(sm.k[0]));
  wgmma_wait<0>();
  fence_regs(s);
  prefill_softmax(s, st, alpha, scale_log2, masked(0), 0, last_a, last_b, quad);
  prefill_pack_p(s, pa);
  // Warpgroup 0 takes the first turn. The turns alternate over the first tiles0 tiles (warpgroup
  // 0 has no more: its rows are the earlier ones); warpgroup 1's remaining diagonal tiles run
  // free. Each barrier gets exactly one arrival per wait, and never a second before the first is
  // consumed: warpgroup 0 waits tiles0 times on its barrier and gets this arrival plus one from
  // each of warpgroup 1's tiles n < tiles0 - 1; warpgroup 1 waits on tiles n < tiles0 and gets
  // one arrival from each of warpgroup 0's tiles. (Arrivals paced by nothing, e.g. from a
  // finished warpgroup, could land twice in one barrier phase.)
  const bool pingpong = p.pingpong;
  if (pingpong && cw == 1) tma::bar_arrive(their_turn, 256);

  for (int n = 0; n < wg_tiles; ++n) {
    const int stage = n % kPrefillStages;
    const bool more = n + 1 < wg_tiles;
    tma::mbar_wait(smem_addr(&sm.bar_v[stage]), (n / kPrefillStages) & 1);
    if (more) {
      tma::mbar_wait(smem_addr(&sm.bar_k[(n + 1) % kPrefillStages]),
                     ((n + 1) / kPrefillStages) & 1);
    }
    if (pingpong && (cw == 0 || n < tiles0)) tma::bar_sync(my_turn, 256);
    prefill_issue_pv(o, pa, smem_addr(sm.v[stage]));
    if (more) prefill_issue_qk(s, sq, smem_addr(sm.k[(n + 1) % kPrefillStages]));
    if (pingpong && (cw == 0 || n + 1 < tiles0)) tma::bar_arrive(their_turn, 256);
    wgmma_wait<0>();
    fence_regs(o);
    fence_regs(s);
    fence_regs_u32(pa);
    tma::mbar_arrive(smem_addr(&sm.bar_empty[stage]));
    if (more) {
      prefill_softmax(s, st, alpha, scale_log2, masked(n + 1), (n + 1) * kMlaPrefillTileN, last_a,
                      last_b, quad);
#pragma unroll
      for (int j = 0; j < 16; ++j) {
        o[4 * j] *= alpha[0];
        o[4 * j + 1] *= alpha[0];
        o[4 * j + 2] *= alpha[1];
        o[4 * j + 3] *= alpha[1];
      }
      prefill_pack_p(s, pa);
    }
  }
  for (int n = wg_tiles; n < num_tiles; ++n) {  // invisible to all of this warpgroup's rows
    const int stage = n % kPrefillStages;
    const uint32_t phase = (n / kPrefillStages) & 1;
    tma::mbar_wait(smem_addr(&sm.bar_k[stage]), phase);
    tma::mbar_wait(smem_addr(&sm.bar_v[stage]), phase);
    tma::mbar_arrive(smem_addr(&sm.bar_empty[stage]));
  }

  // Normalize and round to bf16. Each warp stages only its own 16 rows (of the warpgroup's dead
  // Q rows) and reads back only those, so a warp barrier orders the two.
  float inv[2];
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    float l = st.l[r];
    l += __shfl_xor_sync(0xffffffffu, l, 1);
    l += __shfl_xor_sync(0xffffffffu, l, 2);
    inv[r] = 1.0f / l;
  }
  const int lrow_a = 16 * warp + lane / 4;  // local rows lrow_a, lrow_a + 8
  if constexpr (Epi::kKind != MlaEpilogue::kBf16) {
    // Quantized: the functor takes the warp's 16 rows straight from the accumulator layout (a
    // group is one quad's values), staged through the warp's own 16 dead Q rows of chunk 0.
    float x[2][32];
#pragma unroll
    for (int j = 0; j < 16; ++j) {
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        const uint32_t v = pack_bf16x2(o[4 * j + 2 * r] * inv[r], o[4 * j + 2 * r + 1] * inv[r]);
        x[r][2 * j] = bf16_lo(v);
        x[r][2 * j + 1] = bf16_hi(v);
      }
    }
    const int i0 = m0 + 64 * cw + 16 * warp;  // the warp's first row in the sequence
    epi.quad_rows(x, static_cast<int64_t>(q0) + i0, min(max(q_len - i0, 0), 16), h, lane,
                  sq + 16 * warp * 128);
  } else {
#pragma unroll
    for (int j = 0; j < 16; ++j) {
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        const int lr = lrow_a + 8 * r;
        const int col = 8 * j + 2 * quad;
        const uint32_t addr = sq + (col / 64) * kPrefillChunkBytes + lr * 128 +
                              ((((col % 64) / 8) ^ (lr % 8)) * 16) + (col % 8) * 2;
        const uint32_t v = pack_bf16x2(o[4 * j + 2 * r] * inv[r], o[4 * j + 2 * r + 1] * inv[r]);
        asm volatile("st.shared.b32 [%0], %1;\n" ::"r"(addr), "r"(v) : "memory");
      }
    }
    __syncwarp();
    // bf16, staged in chunks 0 and 1 (SW128: no bank conflicts either way): each row is one
    // 256-byte store of the warp (lane owns columns 4*lane .. 4*lane + 3: chunk lane/16, 16-byte
    // unit (lane%16)/2, half lane%2), the reads of all 16 rows issued first.
    uint32_t w[16][2];
#pragma unroll
    for (int rr = 0; rr < 16; ++rr) {
      const int lr = 16 * warp + rr;
      const uint32_t addr = sq + (lane / 16) * kPrefillChunkBytes + lr * 128 +
                            ((((lane % 16) / 2) ^ (lr % 8)) * 16) + (lane % 2) * 8;
      asm volatile("ld.shared.v2.b32 {%0, %1}, [%2];\n"
                   : "=r"(w[rr][0]), "=r"(w[rr][1])
                   : "r"(addr));
    }
#pragma unroll
    for (int rr = 0; rr < 16; ++rr) {
      const int i = m0 + 64 * cw + 16 * warp + rr;  // row in the sequence
      const float x[4] = {bf16_lo(w[rr][0]), bf16_hi(w[rr][0]), bf16_lo(w[rr][1]),
                          bf16_hi(w[rr][1])};
      epi.row(x, static_cast<int64_t>(q0) + i, h, lane, i < q_len);
    }
  }
}

template <class Epi>
__global__ void __launch_bounds__(kPrefillThreads, 1)
    mla_prefill_attention_kernel(MlaPrefillProblem p, MlaOutputParams out,
                                 const __grid_constant__ PrefillMaps maps) {
  const int seq = blockIdx.z;
  const int h = blockIdx.y;
  // Longest (most KV tiles) query blocks first.
  const int m_block = gridDim.x - 1 - blockIdx.x;
  const int q0 = p.q_start[seq];
  const int q_len = p.q_start[seq + 1] - q0;
  const int kv0 = p.kv_start[seq];
  const int kv_len = p.kv_start[seq + 1] - kv0;
  const int m0 = m_block * kMlaPrefillTileM;
  // Uniform over the CTA: nothing to do, or metadata that disagrees with the buffers (the host
  // validates its copy; a device copy that differs must still not make us touch other memory).
  if (m0 >= q_len || kv_len < q_len || q0 < 0 || q0 + q_len > p.q_rows || kv0 < 0 ||
      kv0 + kv_len > p.kv_rows) {
    return;
  }
  const int cta_last = prefill_last_key(min(m0 + kMlaPrefillTileM, q_len) - 1, q_len, kv_len);
  const int num_tiles = cta_last / kMlaPrefillTileN + 1;

  extern __shared__ __align__(16) uint8_t smem_raw[];
  const uint32_t raw_addr = smem_addr(smem_raw);
  PrefillSmem& sm =
      *reinterpret_cast<PrefillSmem*>(smem_raw + (((raw_addr + 1023u) & ~1023u) - raw_addr));
  const int wg = threadIdx.x / 128;

  if (threadIdx.x == 0) {
    tma::prefetch_map(&maps.q);
    tma::prefetch_map(&maps.kv);
    tma::prefetch_map(&maps.k_pe);
    tma::mbar_init(smem_addr(&sm.bar_q), 1);
    for (int s = 0; s < kPrefillStages; ++s) {
      tma::mbar_init(smem_addr(&sm.bar_k[s]), 1);
      tma::mbar_init(smem_addr(&sm.bar_v[s]), 1);
      tma::mbar_init(smem_addr(&sm.bar_empty[s]), 256);  // every math thread
    }
    tma::mbar_fence_init();
  }
  __syncthreads();

  if (wg == 0) {
    setmaxnreg_dec<24>();
    if (threadIdx.x != 0) return;
    // Producer. Rows past a sequence's end belong to the next sequence (or lie past the tensor:
    // zero-filled); the math warpgroups mask them.
    const uint32_t bar_q = smem_addr(&sm.bar_q);
    tma::mbar_arrive_expect_tx(bar_q, kPrefillQBytes);
    for (int c = 0; c < kPrefillQChunks; ++c) {
      tma::load_2d(smem_addr(sm.q) + c * kPrefillChunkBytes, &maps.q, bar_q, h * kMlaQDim + 64 * c,
                   q0 + m0);
    }
    for (int n = 0; n < num_tiles; ++n) {
      const int stage = n % kPrefillStages;
      if (n >= kPrefillStages) {
        tma::mbar_wait(smem_addr(&sm.bar_empty[stage]), ((n / kPrefillStages) - 1) & 1);
      }
      const int y = kv0 + n * kMlaPrefillTileN;
      const uint32_t bk = smem_addr(&sm.bar_k[stage]);
      const uint32_t bv = smem_addr(&sm.bar_v[stage]);
      const uint32_t sk = smem_addr(sm.k[stage]);
      const uint32_t sv = smem_addr(sm.v[stage]);
      tma::mbar_arrive_expect_tx(bk, kPrefillKBytes);
      tma::load_2d(sk, &maps.kv, bk, h * kMlaPrefillKvDim, y);
      tma::load_2d(sk + kPrefillChunkBytes, &maps.kv, bk, h * kMlaPrefillKvDim + 64, y);
      tma::load_2d(sk + 2 * kPrefillChunkBytes, &maps.k_pe, bk, 0, y);
      tma::mbar_arrive_expect_tx(bv, kPrefillVBytes);
      tma::load_2d(sv, &maps.kv, bv, h * kMlaPrefillKvDim + kMlaNope, y);
      tma::load_2d(sv + kPrefillChunkBytes, &maps.kv, bv, h * kMlaPrefillKvDim + kMlaNope + 64, y);
    }
    return;
  }

  setmaxnreg_inc<240>();
  Epi epi;
  epi.init(out, p.num_heads, p.out_rows);
  prefill_consume<Epi>(p, epi, sm, wg - 1, h, m0, q0, q_len, kv_len, num_tiles);
}

// Host side: encodes the maps and launches grid (query blocks of the longest sequence, heads,
// sequences).
template <class Epi>
void launch_prefill_attention(const MlaPrefillProblem& p, const PrefillMaps& maps,
                              const MlaOutputParams& out, cudaStream_t stream) {
  auto kernel = mla_prefill_attention_kernel<Epi>;
  MLAFUSE_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                          static_cast<int>(kPrefillSmemBytes)));
  const dim3 grid(static_cast<unsigned>((p.max_q_len + kMlaPrefillTileM - 1) / kMlaPrefillTileM),
                  static_cast<unsigned>(p.num_heads), static_cast<unsigned>(p.num_seqs));
  kernel<<<grid, kPrefillThreads, kPrefillSmemBytes, stream>>>(p, out, maps);
  MLAFUSE_CUDA_CHECK_LAUNCH("mla_prefill_attention_kernel");
}

}  // namespace mlafuse::cuda::mla
