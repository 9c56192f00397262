// mla_decode_splitkv, Hopper version (sm_90a): TMA-fed, two math warpgroups in a "seesaw".
//
// One CTA = one split-KV part x one block of 64 query rows: 64 heads of a token (H = 64 / 128), or
// at H = 16 / 32 the heads of a unit of up to 64 / H consecutive tokens of one sequence
// (mla_unit_tokens: the tokens of a multi-token decode or a prefill chunk share each KV read; row
// j*H + h is token j, head h, each with its own causal length). It walks the query segments of
// its part (mla_decode_plan.cuh).
// Shared memory: Q [64, 576], two KV tiles [64, 576] (one 64-token page each), P0 [64, 64], all in
// 64-column SW128 chunks of 8 KB; each KV chunk has its own transaction mbarrier, so a warpgroup
// starts Q K^T on chunk 0 while chunks 1..8 are still landing.
//
// The 64x512 f32 output O is split by columns: warpgroup 0 holds O_L = O[:, 0:256], warpgroup 1
// O_R = O[:, 256:512] (128 registers a thread each). KV tiles go in pairs (K0 in buffer 0, K1 in
// buffer 1); warpgroup w computes S_w = Q K_w^T for its own tile and shares P_w with the other:
//   wg0: m' = max(m, rowmax S0), O_L *= e^(m-m'), P0 = e^(S0-m'), O_L += P0 V0_L   (P0 in regs)
//   wg1: m'' = max(m', rowmax S1), O_R *= e^(m-m''), P1 = e^(S1-m''), O_R += P1 V1_R (P1 in regs)
//   wg0: P0 *= e^(m'-m'') -> smem;  wg1: O_R += P0 V0_R                            (P0 from smem)
//   wg0: O_L *= e^(m'-m''), O_L += P1 V1_L                                          (P1 from smem)
// with one running max m per row in shared memory. The two warpgroups' softmax phases fall in
// each other's MMA phases, so the tensor cores stay busy; each buffer's chunks are re-filled by
// TMA as soon as their last reader is done (V_L halves by wg0, V_R halves and the RoPE chunk by
// wg1), and each warpgroup starts its next Q K^T right after. P1 lives in buffer 1's RoPE chunk
// (dead once S1 is computed), which is what lets Q, two tiles and P fit in 227 KB.
//
// Pages of 16, 32, 64 or 128 tokens: a tile is one box of 64 rows (pages of 64 or more), or one
// box per page (16 or 32; pages past the sequence's end are not loaded). KV rows past a
// sequence's end: scores are masked to -inf and the V rows are zeroed in shared memory before
// P V reads them (a page's tail may hold anything, NaN included; rows of pages not loaded hold
// the previous tile's). Block-table entries past a query's last page are never read.
#pragma once

#include <cuda.h>
#include <cuda_bf16.h>

#include <cstdint>

#include "backends/cuda/device_util.cuh"
#include "backends/cuda/mla_decode.h"
#include "backends/cuda/mla_decode_plan.cuh"
#include "backends/cuda/mla_mma.cuh"
#include "backends/cuda/mla_wgmma.cuh"
#include "backends/cuda/tma_sm90.cuh"

namespace mlafuse::cuda::mla {

inline constexpr int kSeesawThreads = 256;  // two math warpgroups
inline constexpr int kSeesawRows = 64;      // query rows of a CTA (the wgmma M)
inline constexpr int kChunkBytes = 64 * 128;  // one [64 rows, 64 cols] bf16 SW128 chunk
inline constexpr int kChunks = kMlaRow / 64;  // 9 chunks in a 576-wide row (8 latent + RoPE)
inline constexpr int kTileBytes = kChunks * kChunkBytes;
// Calls of at most this many real queries let the combine launch early (the kernel's
// launch_dependents).
inline constexpr int kSeesawEarlyDependentsQueries = 16;

struct SeesawSmem {
  uint8_t q[kTileBytes];      // Q [64, 576]
  uint8_t kv[2][kTileBytes];  // K0, K1 [64 tokens, 576]; V = the first 512 columns
  uint8_t p0[kChunkBytes];    // P0 [64, 64] bf16 (P1 lives in kv[1]'s RoPE chunk)
  float m[kSeesawRows];       // running row max (log2 domain, scaled)
  float scale0[kSeesawRows];  // e^(m - m') of wg0's tile, for wg1
  float scale1[kSeesawRows];  // e^(m' - m'') of wg1's tile, for wg0
  float l[2][kSeesawRows];    // per warpgroup row sums at the segment's end
  uint64_t bar_q;
  uint64_t bar_kv[2][kChunks];
};
// SW128 tiles start on 1024-byte boundaries.
inline constexpr size_t kSeesawSmemBytes = sizeof(SeesawSmem) + 1024;
static_assert(sizeof(PlanShared<kSeesawThreads>) <= kTileBytes, "the own plan fits in a KV buffer");

#ifdef MLAFUSE_SEESAW_STAMPS
// Diagnostic build only (CMake MLAFUSE_SEESAW_STAMPS): %globaltimer stamps of a CTA's phases by
// thread 0, dumped by the launcher and read by bench/seesaw_stamps.py. A CTA's row: 0 its SM,
// 1 entry, 2 after pdl_wait, 3 first segment known, 4 segment count, 5 exit; segment k at
// 8 + 7k: top, Q landed, first S, last pair's end, next segment's loads issued, output written,
// then tiles | whole << 16 | query << 20. Slots 80 + 8w: warpgroup w's leader's clock64 cycles
// in the pair loops: in S issue and chunk waits, in named-barrier waits, in wgmma waits, in the
// loops themselves, then its entry and exit clocks and its pair count.
inline constexpr int kStampSegmentSlots = 80;
inline constexpr int kStampSlots = 96;
inline constexpr int kStampMaxCtas = 4096;
__device__ uint64_t g_seesaw_stamps[kStampMaxCtas * kStampSlots];
#define SEESAW_STAMP(slot)                                                                \
  do {                                                                                    \
    if (threadIdx.x == 0 && (slot) < kStampSegmentSlots) stamp_row[(slot)] = global_ns(); \
  } while (0)
#define SEESAW_STAMP_VALUE(slot, v)                                               \
  do {                                                                            \
    if (threadIdx.x == 0 && (slot) < kStampSegmentSlots) stamp_row[(slot)] = (v); \
  } while (0)
// Adds the statement's clock64 cycles to a counter of this thread.
#define SEESAW_CYCLES(counter, ...)  \
  do {                               \
    const long long c0_ = clock64(); \
    __VA_ARGS__;                     \
    (counter) += clock64() - c0_;    \
  } while (0)
#else
#define SEESAW_STAMP(slot) ((void)0)
#define SEESAW_STAMP_VALUE(slot, v) ((void)0)
#define SEESAW_CYCLES(counter, ...) __VA_ARGS__
#endif

enum SeesawBarrier : int { kScale0Ready = 1, kScale1Ready = 2, kP0Ready = 3, kP1Issued = 4 };

// Tensor maps of one call: Q as [T_pad * H, 576] in boxes of [seesaw_q_rows, 64], the cache as
// [num_pages * page_size, 576] in boxes of [min(page_size, 64), 64].
struct SeesawMaps {
  CUtensorMap q;
  CUtensorMap kv;
};

// Rows of the Q box: those of a unit of mla_unit_tokens(p) tokens, at most 64 (at H = 16 / 32
// with units: 64 rows, those past a shorter unit's tokens being other tokens' or zeros, and
// unused), fewer where the whole q_cat has fewer rows. Without units (U = 1): min(H, 64).
__host__ __device__ inline int seesaw_q_rows(const MlaDecodeProblem& p) {
  const int unit = mla_unit_tokens(p);
  const int rows = (unit < p.num_queries ? unit : p.num_queries) * p.num_heads;
  return rows < kSeesawRows ? rows : kSeesawRows;
}

// Initial running max: finite, so e^(m - m') never computes inf - inf, and below any real score.
inline constexpr float kSeesawMaxInit = -1e30f;

// ---------------------------------------------------------------------------------------------
// MMA pieces (one warpgroup).

// S[64, 64] over chunks [c0, c1) of Q and a KV tile: each chunk waits for its own barrier (this
// warpgroup's first thread adds the chunk's `chunk_bytes` to the barrier's expectation), then
// issues its four k-steps as one commit group.
// kFirst: chunk c0 starts the accumulation (S = ... rather than S += ...).
template <bool kFirst>
__device__ __forceinline__ void qk_chunks(float (&s)[32], uint32_t sq, uint32_t skv,
                                          uint32_t bars, uint32_t phase, int c0, int c1,
                                          bool leader, uint32_t chunk_bytes) {
  const uint64_t dq = desc_kmajor(sq);
  const uint64_t dkv = desc_kmajor(skv);
#pragma unroll
  for (int c = c0; c < c1; ++c) {
    const uint32_t bar = bars + c * 8;
    if (leader) tma::mbar_arrive_expect_tx(bar, chunk_bytes);
    tma::mbar_wait(bar, phase);
    wgmma_fence();
#pragma unroll
    for (int ks = 0; ks < 4; ++ks) {
      const uint32_t off = c * kChunkBytes + ks * 32;
      wgmma_m64n64k16_ss(s, desc_advance(dq, off), desc_advance(dkv, off),
                         !kFirst || c > c0 || ks > 0);
    }
    wgmma_commit();
  }
}

// O_half += P (bf16 fragments in registers) * V[:, half] of a tile.
__device__ __forceinline__ void pv_local(float (&o)[128], const uint32_t (&pa)[16], uint32_t sv) {
  const uint64_t dv = desc_mnmajor(sv, kChunkBytes);
  wgmma_fence();
#pragma unroll
  for (int kk = 0; kk < 4; ++kk) {
    const uint32_t a[4] = {pa[4 * kk], pa[4 * kk + 1], pa[4 * kk + 2], pa[4 * kk + 3]};
    wgmma_m64n256k16_rs(o, a, desc_advance(dv, kk * 16 * 128));
  }
  wgmma_commit();
}

// O_half += P (shared, [64, 64] SW128) * V[:, half] of a tile.
__device__ __forceinline__ void pv_shared(float (&o)[128], uint32_t sp, uint32_t sv) {
  const uint64_t dp = desc_kmajor(sp);
  const uint64_t dv = desc_mnmajor(sv, kChunkBytes);
  wgmma_fence();
#pragma unroll
  for (int kk = 0; kk < 4; ++kk) {
    wgmma_m64n256k16_ss<1>(o, desc_advance(dp, kk * 32), desc_advance(dv, kk * 16 * 128), 1);
  }
  wgmma_commit();
}

// ---------------------------------------------------------------------------------------------
// Softmax pieces. A thread holds S[row0 + 8r][8j + 2(lane%4) + {0,1}] at s[4j + 2r + {0,1}].

// 2^x on the SFU, denormal results flushed to zero (exp2f adds a range fix-up of three
// instructions around every MUFU.EX2; a weight below 2^-126 is zero for every output anyway).
__device__ __forceinline__ float exp2_ftz(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}

// The row maxima of this thread's two rows of S (reduced over the quad), in the log2 domain.
// kMask: the tile may hold tokens past the end of this thread's query (its unit's last tile or
// the one before): scores of tokens >= len become -inf.
// The scale is applied to the maxima only (scale > 0 keeps the order); exp_rows folds it in.
template <bool kMask>
__device__ __forceinline__ void row_max_log2(float (&s)[32], float scale_log2, int tok0, int len,
                                             float (&mx)[2]) {
  const int lane = threadIdx.x % 32;
  mx[0] = mx[1] = -INFINITY;
#pragma unroll
  for (int j = 0; j < 8; ++j) {
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      if constexpr (kMask) {
        if (tok0 + 8 * j + 2 * (lane % 4) + (e & 1) >= len) s[4 * j + e] = -INFINITY;
      }
      mx[e / 2] = fmaxf(mx[e / 2], s[4 * j + e]);
    }
  }
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 1));
    mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 2));
    mx[r] *= scale_log2;
  }
}

// s <- 2^(s * scale_log2 - m) in place (one FFMA and one MUFU an element); returns this thread's
// partial row sums.
__device__ __forceinline__ void exp_rows(float (&s)[32], float scale_log2, const float (&m)[2],
                                         float (&sum)[2]) {
  sum[0] = sum[1] = 0.0f;
#pragma unroll
  for (int j = 0; j < 8; ++j) {
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const float v = exp2_ftz(fmaf(s[4 * j + e], scale_log2, -m[e / 2]));
      s[4 * j + e] = v;
      sum[e / 2] += v;
    }
  }
}

// The bf16 A fragments of P for the four 16-token k-steps (the accumulator layout of S is the
// A-operand layout of the next MMA), optionally times a per-row factor.
__device__ __forceinline__ void pack_p(const float (&s)[32], const float (&f)[2],
                                       uint32_t (&pa)[16]) {
#pragma unroll
  for (int i = 0; i < 16; ++i) {
    const int r = i % 2;  // pa[2i'] -> row0 pairs, pa[2i'+1] -> row0 + 8
    pa[i] = pack_bf16x2(s[2 * i] * f[r], s[2 * i + 1] * f[r]);
  }
}

// P fragments -> [64, 64] SW128 tile in shared memory.
__device__ __forceinline__ void store_p(const uint32_t (&pa)[16], uint32_t sp, int row0) {
  const int lane = threadIdx.x % 32;
#pragma unroll
  for (int j = 0; j < 8; ++j) {
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      const uint32_t addr = sp + sw128_offset(kSeesawRows, row0 + 8 * r, j) + (lane % 4) * 4;
      asm volatile("st.shared.u32 [%0], %1;\n" ::"r"(addr), "r"(pa[2 * j + r]) : "memory");
    }
  }
}

template <int kN>
__device__ __forceinline__ void scale_rows(float (&o)[kN], const float (&f)[2]) {
#pragma unroll
  for (int i = 0; i < kN; ++i) o[i] *= f[(i / 2) % 2];
}

// Zeroes rows [valid, 64) of four V chunks (one warpgroup's half) of a tile, then makes the
// stores visible to the tensor cores.
__device__ __forceinline__ void zero_v_tail(uint32_t sv, int valid) {
  const int t = threadIdx.x % 128;
  const int units = (64 - valid) * 8;  // 16-byte units per chunk past `valid`
#pragma unroll
  for (int c = 0; c < 4; ++c) {
    for (int u = t; u < units; u += 128) {
      st_shared_zero16(sv + c * kChunkBytes + valid * 128 + u * 16);
    }
  }
  fence_proxy_async();
}

// ---------------------------------------------------------------------------------------------

// kSmallPages: pages of 16 or 32 tokens (one box per page); else 64 or 128 (one box per tile).
// kUnits: H = 16 / 32, a CTA's rows are a unit of tokens (mla_unit_tokens > 1); else (H = 64 /
// 128) one token's heads, compiled without the per-token lengths (their registers and masks).
template <bool kSmallPages, bool kUnits>
__global__ void __launch_bounds__(kSeesawThreads, 1)
    mla_decode_seesaw_kernel(MlaDecodeProblem p, MlaWorkspace ws,
                             const __grid_constant__ SeesawMaps maps, bool own_plan) {
  constexpr float kLn2 = 0.6931471805599453f;
  extern __shared__ __align__(16) uint8_t smem_raw[];
  const uint32_t raw_addr = smem_addr(smem_raw);
  SeesawSmem& sm =
      *reinterpret_cast<SeesawSmem*>(smem_raw + (((raw_addr + 1023u) & ~1023u) - raw_addr));
  const uint32_t sq = smem_addr(sm.q);
  const uint32_t skv[2] = {smem_addr(sm.kv[0]), smem_addr(sm.kv[0]) + kTileBytes};
  const uint32_t sp0 = smem_addr(sm.p0);
  const uint32_t sp1 = skv[1] + 8 * kChunkBytes;
  const uint32_t bar_q = smem_addr(&sm.bar_q);
  const uint32_t bars[2] = {smem_addr(&sm.bar_kv[0][0]), smem_addr(&sm.bar_kv[0][0]) + 8 * kChunks};

  const int head0 = blockIdx.x * kSeesawRows;
  const int part = blockIdx.y;
  const int wg = threadIdx.x / 128;
  const int lane = threadIdx.x % 32;
  const int row0 = 16 * ((threadIdx.x % 128) / 32) + lane / 4;  // rows row0, row0 + 8
  const bool leader = threadIdx.x % 128 == 0;                 // issues TMA and expect_tx
  const float scale_log2 = p.softmax_scale * 1.4426950408889634f;
#ifdef MLAFUSE_SEESAW_STAMPS
  uint64_t* const stamp_row =
      g_seesaw_stamps +
      (static_cast<int>(blockIdx.y * gridDim.x + blockIdx.x) % kStampMaxCtas) * kStampSlots;
  int stamp_seg = 0;
  long long cyc_s = 0, cyc_bar = 0, cyc_mma = 0, cyc_loop = 0, n_pairs = 0;
  const long long clk_entry = clock64();
  {
    uint32_t smid;
    asm volatile("mov.u32 %0, %%smid;" : "=r"(smid));
    SEESAW_STAMP_VALUE(0, smid);
  }
  SEESAW_STAMP(1);
#endif

  if (threadIdx.x == 0) {
    tma::prefetch_map(&maps.q);
    tma::prefetch_map(&maps.kv);
    tma::mbar_init(bar_q, 1);
    for (int b = 0; b < 2; ++b)
      for (int c = 0; c < kChunks; ++c) tma::mbar_init(bars[b] + 8 * c, 1);
    tma::mbar_fence_init();
  }
  const int q_rows = seesaw_q_rows(p);  // rows of the Q box
  if (q_rows < kSeesawRows) {  // rows past the box stay zero (finite scores, unused rows)
    const int units = (kSeesawRows - q_rows) * 8;
    for (int i = threadIdx.x; i < kChunks * units; i += kSeesawThreads) {
      const int c = i / units;
      st_shared_zero16(sq + c * kChunkBytes + q_rows * 128 + (i - c * units) * 16);
    }
    fence_proxy_async();
  }
  __syncthreads();
  // Everything above overlaps the kernel before (programmatic launch); its results from here on.
  pdl_wait();
  SEESAW_STAMP(2);
  // The part's first segment. own_plan (calls of at most kMlaOwnPlanQueries queries; no plan
  // kernel ran): the CTA computes the schedule itself in buffer 1, before any tile lands, and the
  // grid's last CTA also stores it in the workspace for the combine (and for later calls that
  // reuse it). Otherwise the plan kernel's descriptor of the part: one load. Either way Q is
  // requested at once and the first tiles after one block-table load (PERF.md, run 31).
  MlaPartStart start;
  if (own_plan) {
    auto& sh = *reinterpret_cast<PlanShared<kSeesawThreads>*>(sm.kv[1]);
    const bool writer = blockIdx.x == gridDim.x - 1 && blockIdx.y == gridDim.y - 1;
    const PlanTotals tot = plan_schedule<kSeesawThreads>(p, ws, sh, writer);
    const PlanLookup look = plan_lookup(p, ws, sh);
    start = plan_part_start(p, look, tot, part);
    if (writer) plan_store_part_starts(p, ws, look, tot, kSeesawThreads);
    fence_proxy_async();  // buffer 1's generic accesses before the tensor copies overwrite it
    __syncthreads();
  } else {
    start = ws.part_start[part];
  }
  const int per_part = start.per_part;
  const int part_begin = part * per_part;
  const int part_end = part_begin + per_part;
  const int n = start.n;
  SEESAW_STAMP(3);

  uint32_t phase_q = 0;
  uint32_t phase_kv = 0;  // warpgroup w waits only on buffer w's barriers: one phase bit

  // A segment: the tiles [tile0, tile1) of the unit of `group` tokens led by query t (of
  // block-table row `row`; len: its last token's KV length) in this part.
  struct Segment {
    int t, len, tiles, tile0, tile1, cum, row, group;
    const int32_t* bt_row;
  };
  const int unit_tokens = kUnits ? mla_unit_tokens(p) : 1;
  auto set_segment = [&](Segment& sg, int t, int row, int len, int cum, int group) {
    sg.t = t;
    sg.row = row;
    sg.group = kUnits ? group : 1;
    sg.len = len;
    sg.cum = cum;
    sg.tiles = ceil_tiles(len);
    sg.tile0 = max(part_begin - cum, 0);
    sg.tile1 = min(part_end - cum, sg.tiles);
    sg.bt_row = p.block_table + static_cast<int64_t>(row) * p.block_table_stride;
  };
  const int max_len = p.block_table_stride * p.page_size;
  // The segment after sg in this part, or false. With own_plan the lengths and costs of the
  // units after sg's come from the call's inputs, as the plan computes them (the workspace's
  // per-query arrays may not be written yet): one round of loads when the next unit is in
  // sequence `row` or the next one (decode, prefill chunks). Otherwise from the workspace: a
  // reused schedule's lengths and tiles then always agree, even where the inputs changed since it
  // was computed (a broken reuse contract gives the old call's output, not an illegal
  // instruction).
  auto next_segment = [&](const Segment& sg, Segment& nx) {
    if (!own_plan) {
      for (int t = sg.t + sg.group; t < n; ++t) {
        const int cum = ws.q_cum[t];
        if (cum >= part_end) break;
        const int len = ws.q_len[t];  // 0 for tokens that lead no unit
        if (len == 0) continue;
        set_segment(nx, t, ws.q_row[t], len, cum, kUnits ? ws.q_unit[t] & 7 : 1);
        if (nx.tile0 < nx.tile1) return true;
      }
      return false;
    }
    int cum = sg.cum + sg.tiles + kMlaQueryOverheadTiles;
    int row = sg.row;
    // The unit after sg's starts at t: in sg's sequence, or (t == its end) the next non-empty
    // sequence's first token; either way it leads its unit.
    for (int t = sg.t + sg.group; t < n && cum < part_end;) {
      // t < n <= query_start_loc[num_seqs], so t's sequence is row .. num_seqs - 1.
      const int q1 = p.query_start_loc[row + 1];
      const int q2 = p.query_start_loc[min(row + 2, p.num_seqs)];
      const int l0 = p.seq_lens[row];
      const int l1 = p.seq_lens[min(row + 1, p.num_seqs - 1)];
      int q_end = q1;
      int seq_len = l0;
      if (q1 <= t) {
        ++row;
        q_end = q2;
        seq_len = l1;
        while (q_end <= t) {  // empty sequences between
          ++row;
          q_end = p.query_start_loc[row + 1];
          seq_len = p.seq_lens[row];
        }
      }
      const int group = min(unit_tokens, min(q_end, n) - t);
      const int len = causal_len(seq_len, q_end, t + group - 1, max_len);
      if (len > 0) {  // else no tiles, no cost
        set_segment(nx, t, row, len, cum, group);
        if (nx.tile0 < nx.tile1) return true;
        cum += nx.tiles + kMlaQueryOverheadTiles;
      }
      t += group;
    }
    return false;
  };
  const int page_size = p.page_size;  // 16, 32, 64 or 128 (the launcher checks)
  // Pages of 64 or 128 tokens: tile i is on page i >> tile_shift, at row 64 * (i & tile_mask).
  const int tile_shift = page_size == 2 * kMlaPage ? 1 : 0;
  const int tile_mask = (1 << tile_shift) - 1;
  auto check_page = [&](int32_t page) {
    // The runner validated the table on the host; a bad id here is corrupted metadata.
    if (page < 0 || page >= p.num_pages) __trap();
  };
  // The page holding tile i's first token (pages of 64 tokens or more).
  auto tile_page = [&](const Segment& sg, int i) { return sg.bt_row[i >> tile_shift]; };
  // Bytes each chunk barrier of tile i expects: pages of 16 or 32 tokens past the sequence's end
  // are not loaded (their block-table entries may be anything).
  auto chunk_bytes = [&](const Segment& sg, int i) {
    if constexpr (!kSmallPages) {
      return static_cast<uint32_t>(kChunkBytes);
    } else {
      const int rows =
          min(kMlaPage, (sg.len - i * kMlaPage + page_size - 1) / page_size * page_size);
      return static_cast<uint32_t>(rows * 128);
    }
  };
  // Chunks [c0, c1) of tile i into buffer `buf`. `page` is tile_page(sg, i), read ahead by the
  // caller, for pages of 64 tokens or more; smaller pages are read here, one box per page.
  auto load_chunks = [&](const Segment& sg, int buf, int i, int32_t page, int c0, int c1) {
    if constexpr (!kSmallPages) {
      check_page(page);
      const int y = page * page_size + (i & tile_mask) * kMlaPage;
      for (int c = c0; c < c1; ++c) {
        tma::load_2d(skv[buf] + c * kChunkBytes, &maps.kv, bars[buf] + 8 * c, 64 * c, y);
      }
      return;
    }
    const int per_tile = kMlaPage / page_size;
    const int pages = min(per_tile, (sg.len - i * kMlaPage + page_size - 1) / page_size);
    for (int j = 0; j < pages; ++j) {
      const int32_t pg = sg.bt_row[i * per_tile + j];
      check_page(pg);
      for (int c = c0; c < c1; ++c) {
        tma::load_2d(skv[buf] + c * kChunkBytes + j * page_size * 128, &maps.kv, bars[buf] + 8 * c,
                     64 * c, pg * page_size);
      }
    }
  };
  // Q and the first two tiles of a segment (thread 0; the buffers must be free).
  auto load_segment = [&](const Segment& sg) {
    tma::mbar_arrive_expect_tx(bar_q, kChunks * q_rows * 128);
    const int qy = sg.t * p.num_heads + head0;
    for (int c = 0; c < kChunks; ++c) {
      tma::load_2d(sq + c * kChunkBytes, &maps.q, bar_q, 64 * c, qy);
    }
    load_chunks(sg, 0, sg.tile0, kSmallPages ? 0 : tile_page(sg, sg.tile0), 0, kChunks);
    if (sg.tile0 + 1 < sg.tile1) {
      load_chunks(sg, 1, sg.tile0 + 1, kSmallPages ? 0 : tile_page(sg, sg.tile0 + 1), 0, kChunks);
    }
  };

  // When the combine may launch (its CTAs then take SMs as this grid's leave), measured (PERF.md,
  // run 31): with few queries right after the first S, so its CTAs load W_UV on the idle SMs
  // during the attention (earlier, it slowed the schedule's loads); else after the first segment
  // (after the first S was up to 5 us slower at B >= 64).
  const bool early_dependents = n <= kSeesawEarlyDependentsQueries;
  bool dependents_launched = false;
  auto launch_dependents = [&](bool now) {
    if (now && !dependents_launched) {
      pdl_launch_dependents();
      dependents_launched = true;
    }
  };
  Segment seg;
  bool have = start.t >= 0;
  if (have) {
    seg.t = start.t;
    seg.row = start.row;
    seg.cum = start.cum;
    seg.tiles = start.tiles;
    seg.tile0 = start.tile0;
    seg.tile1 = start.tile1;
    seg.group = kUnits ? start.group : 1;
    seg.bt_row = p.block_table + static_cast<int64_t>(start.row) * p.block_table_stride;
    // First needed at the unit's last tiles (or by small pages): it loads beside the pages.
    seg.len = own_plan ? causal_len(p.seq_lens[seg.row], p.query_start_loc[seg.row + 1],
                                    seg.t + seg.group - 1, max_len)
                       : ws.q_len[seg.t];
    if (threadIdx.x == 0) load_segment(seg);
  }
  // This thread's rows (row0, row0 + 8) are one token's: token j of the unit (H >= 16).
  const int unit_j = kUnits ? row0 / p.num_heads : 0;
  while (have) {
    const int t = seg.t;
    const int len = seg.len;  // the unit's: its last token's
    // This thread's token's own causal length (rows past the unit's tokens: the unit's).
    const int my_len = kUnits && unit_j < seg.group ? len - (seg.group - 1 - unit_j) : len;
    const int tiles = seg.tiles;
    const int tile0 = seg.tile0;
    const int tile1 = seg.tile1;
    SEESAW_STAMP(8 + 7 * stamp_seg);
    if (wg == 0 && lane % 4 == 0) {
      sm.m[row0] = kSeesawMaxInit;
      sm.m[row0 + 8] = kSeesawMaxInit;
    }
    __syncwarp();

    float o[128];  // O[rows, 256 wg + 8j + 2(lane%4) + {0,1}] at o[4j + {0,1}] (row0), {2,3} (+8)
#pragma unroll
    for (int i = 0; i < 128; ++i) o[i] = 0.0f;
    float l_run[2] = {0.0f, 0.0f};
    float s[32];

    tma::mbar_wait(bar_q, phase_q);
    phase_q ^= 1;
    SEESAW_STAMP(8 + 7 * stamp_seg + 1);
    // The first S of each warpgroup.
    if (wg == 0 || tile0 + 1 < tile1) {
      qk_chunks<true>(s, sq, skv[0] + wg * kTileBytes, bars[0] + wg * 8 * kChunks, phase_kv, 0,
                      kChunks, leader, chunk_bytes(seg, tile0 + wg));
      phase_kv ^= 1;
      wgmma_wait<0>();
      fence_regs(s);
    }
    SEESAW_STAMP(8 + 7 * stamp_seg + 2);
    launch_dependents(early_dependents);

    // The pages of tiles b + 2, b + 3 (leaders only; pages of 64 tokens or more).
    constexpr bool ahead = !kSmallPages;
    int32_t pages_next[2] = {0, 0};
    if (leader && ahead) {
      if (tile0 + 2 < tile1) pages_next[0] = tile_page(seg, tile0 + 2);
      if (tile0 + 3 < tile1) pages_next[1] = tile_page(seg, tile0 + 3);
    }
    // One pair of tiles (b, b + 1); has1..3: tiles b + 1 .. b + 3 exist in this segment. The flags
    // are template arguments so every variant is straight-line code: ptxas then keeps the wgmma
    // pipeline open across the softmax instead of serializing it at control-flow merges.
    auto pair = [&]<bool has1, bool has2, bool has3>(int b) {
      // The next pair's pages were read a pair ago; read the one after's now. Only the leaders
      // use them, a pair after the load, so the block-table latency never stalls a warpgroup.
      const int32_t y2 = pages_next[0], y3 = pages_next[1];
      if (leader && ahead) {
        if (b + 4 < tile1) pages_next[0] = tile_page(seg, b + 4);
        if (b + 5 < tile1) pages_next[1] = tile_page(seg, b + 5);
      }
      const int valid0 = len - b * kMlaPage;  // < 64: b is the query's last, partial tile
      const int valid1 = valid0 - kMlaPage;
#ifdef MLAFUSE_SEESAW_STAMPS
      ++n_pairs;
#endif
      if (wg == 0) {
        // ---- softmax of S0 ----
        if constexpr (has2) {  // S0 was the RoPE chunk's only reader
          if (leader) load_chunks(seg, 0, b + 2, y2, 8, 9);
        }
        float mx[2];
        // Tile b is full when b + 1 exists, for every row of a unit when b + 2 does (a unit's
        // lengths differ by less than a tile).
        row_max_log2<kUnits ? !has2 : !has1>(s, scale_log2, b * kMlaPage, my_len, mx);
        float m_new[2], f0[2];
#pragma unroll
        for (int r = 0; r < 2; ++r) {
          const float m_old = sm.m[row0 + 8 * r];
          m_new[r] = fmaxf(m_old, mx[r]);
          f0[r] = exp2_ftz(m_old - m_new[r]);
        }
        __syncwarp();  // every lane of the quad read m before it changes
        if (lane % 4 == 0) {
#pragma unroll
          for (int r = 0; r < 2; ++r) {
            sm.scale0[row0 + 8 * r] = f0[r];
            sm.m[row0 + 8 * r] = m_new[r];
          }
        }
        float sum[2];
        exp_rows(s, scale_log2, m_new, sum);
        l_run[0] = l_run[0] * f0[0] + sum[0];
        l_run[1] = l_run[1] * f0[1] + sum[1];
        scale_rows(o, f0);
        uint32_t pa[16];
        const float one[2] = {1.0f, 1.0f};
        pack_p(s, one, pa);
        tma::bar_arrive(kScale0Ready, kSeesawThreads);

        // ---- O_L += P0 V0_L ----
        if constexpr (!has1) {
          if (valid0 < kMlaPage) zero_v_tail(skv[0], valid0);
        }
        fence_regs(o);
        pv_local(o, pa, skv[0]);
        SEESAW_CYCLES(cyc_mma, wgmma_wait<0>());
        fence_regs(o);
        if constexpr (has2) {
          if (leader) load_chunks(seg, 0, b + 2, y2, 0, 4);  // V0_L's last reader is done
        }

        // ---- P0 rescaled by wg1's tile -> shared, for wg1 ----
        SEESAW_CYCLES(cyc_bar, tma::bar_sync(kScale1Ready, kSeesawThreads));
        float f1[2];
#pragma unroll
        for (int r = 0; r < 2; ++r) f1[r] = sm.scale1[row0 + 8 * r];
        pack_p(s, f1, pa);
        store_p(pa, sp0, row0);
        fence_proxy_async();
        tma::bar_arrive(kP0Ready, kSeesawThreads);

        // ---- O_L += P1 V1_L ----
        if constexpr (has1) {
          if constexpr (!has2) {
            if (valid1 < kMlaPage) zero_v_tail(skv[1], valid1);
          }
          SEESAW_CYCLES(cyc_bar, tma::bar_sync(kP1Issued, kSeesawThreads));
          scale_rows(o, f1);
          l_run[0] *= f1[0];
          l_run[1] *= f1[1];
          fence_regs(o);
          pv_shared(o, sp1, skv[1]);
        } else {
          scale_rows(o, f1);
          l_run[0] *= f1[0];
          l_run[1] *= f1[1];
        }
        // ---- next S0 (tile b + 2), overlapping the tail of P1 V1_L ----
        if constexpr (has2) {
          const uint32_t bytes2 = chunk_bytes(seg, b + 2);
          SEESAW_CYCLES(cyc_s,
                        qk_chunks<true>(s, sq, skv[0], bars[0], phase_kv, 0, 4, leader, bytes2));
          if constexpr (has3) {
            // P1 V1_L is done: V1_L and P1 (buffer 1's RoPE chunk) are free.
            SEESAW_CYCLES(cyc_mma, wgmma_wait<4>());
            if (leader) {
              load_chunks(seg, 1, b + 3, y3, 0, 4);
              load_chunks(seg, 1, b + 3, y3, 8, 9);
            }
          }
          SEESAW_CYCLES(cyc_s, qk_chunks<false>(s, sq, skv[0], bars[0], phase_kv, 4, kChunks,
                                                leader, bytes2));
          phase_kv ^= 1;
        }
        SEESAW_CYCLES(cyc_mma, wgmma_wait<0>());
        fence_regs(o);
        fence_regs(s);
      } else {
        // ---- softmax of S1 (after wg0's, whose max it extends) ----
        SEESAW_CYCLES(cyc_bar, tma::bar_sync(kScale0Ready, kSeesawThreads));
        float mx[2] = {-INFINITY, -INFINITY};
        if constexpr (has1) {
          row_max_log2<kUnits ? !has3 : !has2>(s, scale_log2, (b + 1) * kMlaPage, my_len, mx);
        }
        float m_new[2], f1[2], f01[2];
#pragma unroll
        for (int r = 0; r < 2; ++r) {
          const float m_old = sm.m[row0 + 8 * r];
          m_new[r] = fmaxf(m_old, mx[r]);
          f1[r] = exp2_ftz(m_old - m_new[r]);
          f01[r] = f1[r] * sm.scale0[row0 + 8 * r];
        }
        __syncwarp();
        if (lane % 4 == 0) {
#pragma unroll
          for (int r = 0; r < 2; ++r) {
            sm.scale1[row0 + 8 * r] = f1[r];
            sm.m[row0 + 8 * r] = m_new[r];
          }
        }
        float sum[2] = {0.0f, 0.0f};
        if constexpr (has1) exp_rows(s, scale_log2, m_new, sum);
        l_run[0] = l_run[0] * f01[0] + sum[0];
        l_run[1] = l_run[1] * f01[1] + sum[1];
        scale_rows(o, f01);
        tma::bar_arrive(kScale1Ready, kSeesawThreads);

        // ---- O_R += P1 V1_R; P1 -> shared (buffer 1's RoPE chunk), for wg0 ----
        if constexpr (has1) {
          uint32_t pa[16];
          const float one[2] = {1.0f, 1.0f};
          pack_p(s, one, pa);
          store_p(pa, sp1, row0);
          if constexpr (!has2) {
            if (valid1 < kMlaPage) zero_v_tail(skv[1] + 4 * kChunkBytes, valid1);
          }
          fence_proxy_async();
          fence_regs(o);
          pv_local(o, pa, skv[1] + 4 * kChunkBytes);
        }
        // ---- O_R += P0 V0_R ----
        SEESAW_CYCLES(cyc_bar, tma::bar_sync(kP0Ready, kSeesawThreads));
        if constexpr (!has1) {
          if (valid0 < kMlaPage) zero_v_tail(skv[0] + 4 * kChunkBytes, valid0);
        }
        // No register fence here: P1 V1_R may still be in flight on o.
        pv_shared(o, sp0, skv[0] + 4 * kChunkBytes);
        if constexpr (has1) tma::bar_arrive(kP1Issued, kSeesawThreads);
        if constexpr (has3) {
          SEESAW_CYCLES(cyc_mma, wgmma_wait<1>());  // P1 V1_R is done: V1_R is free
          if (leader) load_chunks(seg, 1, b + 3, y3, 4, 8);
        }
        if constexpr (has2) {
          SEESAW_CYCLES(cyc_mma, wgmma_wait<0>());  // P0 V0_R is done: V0_R is free
          if (leader) load_chunks(seg, 0, b + 2, y2, 4, 8);
        }
        // ---- next S1 (tile b + 3) ----
        if constexpr (has3) {  // chunks 4..7 first: this warpgroup issued them before wg0 its own
          const uint32_t bytes3 = chunk_bytes(seg, b + 3);
          SEESAW_CYCLES(cyc_s,
                        qk_chunks<true>(s, sq, skv[1], bars[1], phase_kv, 4, 8, leader, bytes3));
          SEESAW_CYCLES(cyc_s,
                        qk_chunks<false>(s, sq, skv[1], bars[1], phase_kv, 0, 4, leader, bytes3));
          SEESAW_CYCLES(cyc_s,
                        qk_chunks<false>(s, sq, skv[1], bars[1], phase_kv, 8, 9, leader, bytes3));
          phase_kv ^= 1;
        }
        SEESAW_CYCLES(cyc_mma, wgmma_wait<0>());
        fence_regs(o);
        fence_regs(s);
      }
    };
    SEESAW_CYCLES(cyc_loop, {
      int b = tile0;
      for (; b + 3 < tile1; b += 2) pair.template operator()<true, true, true>(b);
      if (b + 2 < tile1) {
        pair.template operator()<true, true, false>(b);
        b += 2;
      }
      if (b + 1 < tile1) {
        pair.template operator()<true, false, false>(b);
      } else if (b < tile1) {
        pair.template operator()<false, false, false>(b);
      }
    });

    SEESAW_STAMP(8 + 7 * stamp_seg + 3);
    // ---- row sums over both warpgroups, normalize, write ----
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      l_run[r] += __shfl_xor_sync(0xffffffffu, l_run[r], 1);
      l_run[r] += __shfl_xor_sync(0xffffffffu, l_run[r], 2);
    }
    if (lane % 4 == 0) {
      sm.l[wg][row0] = l_run[0];
      sm.l[wg][row0 + 8] = l_run[1];
    }
    __syncthreads();  // both warpgroups' MMAs are done: Q and the tiles are free
    // The next segment's copies fly while this one's output is written.
    Segment next;
    const bool have_next = next_segment(seg, next);
    if (have_next && threadIdx.x == 0) load_segment(next);
    SEESAW_STAMP(8 + 7 * stamp_seg + 4);
    const bool whole = tile0 == 0 && tile1 == tiles;
    const int slot = whole ? 0 : partial_slot(part, per_part, seg.cum);
    // The rows of the unit's tokens, or of one token's heads (a multiple of 16: a warp's rows are
    // all stored or skipped).
    const int out_rows = kUnits ? seg.group * p.num_heads : q_rows;
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      const int row = row0 + 8 * r;
      if (row >= out_rows) continue;
      const int head = head0 + row;  // j * H + h at H < 64
      const float l = sm.l[0][row] + sm.l[1][row];
      // l = 0: a split of a unit whose shorter tokens have no KV in this part; the partial then
      // weighs nothing in the merge (log-sum-exp -inf, zero output).
      const float inv_l = l > 0.0f ? 1.0f / l : 0.0f;
      if (whole) {
        __nv_bfloat16* dst =
            ws.o_lat + (static_cast<int64_t>(t) * p.num_heads + head) * kMlaLatent + 256 * wg;
        // A quad holds 16 columns (32 bytes) of the row for each pair of j; two shuffles give
        // lane k columns 16jj + 4k .. + 3, so each store fills whole 32-byte sectors (4-byte
        // stores left half-filled sectors: 64 KB a CTA took ~5.5 us, PERF.md run 30).
        const int k = lane % 4;
        const bool send_own = ((k ^ (k >> 1)) & 1) != 0;
#pragma unroll
        for (int jj = 0; jj < 16; ++jj) {
          const int j = 2 * jj;
          const uint32_t a = pack_bf16x2(o[4 * j + 2 * r] * inv_l, o[4 * j + 2 * r + 1] * inv_l);
          const uint32_t b =
              pack_bf16x2(o[4 * j + 4 + 2 * r] * inv_l, o[4 * j + 4 + 2 * r + 1] * inv_l);
          // Lanes 0-1 collect the a's (columns 16jj .. +7), lanes 2-3 the b's (+8 .. +15).
          const uint32_t own = (k & 2) ? b : a;
          const uint32_t recv = __shfl_xor_sync(0xffffffffu, (k & 2) ? a : b, 2);
          const uint32_t kept = send_own ? recv : own;
          const uint32_t other = __shfl_xor_sync(0xffffffffu, send_own ? own : recv, 1);
          *reinterpret_cast<uint2*>(dst + 16 * jj + 4 * k) =
              (k & 1) ? make_uint2(other, kept) : make_uint2(kept, other);
        }
      } else {
        const int64_t prow = partial_row(slot, unit_tokens, p.num_heads, head);
        float* dst = ws.o_part + prow * kMlaLatent + 256 * wg;
#pragma unroll
        for (int j = 0; j < 32; ++j) {
          *reinterpret_cast<float2*>(dst + 8 * j + 2 * (lane % 4)) =
              make_float2(o[4 * j + 2 * r] * inv_l, o[4 * j + 2 * r + 1] * inv_l);
        }
        if (wg == 0 && lane % 4 == 0) {
          ws.lse_part[prow] = l > 0.0f ? (sm.m[row] + log2f(l)) * kLn2 : -INFINITY;
        }
      }
    }
    launch_dependents(true);
    SEESAW_STAMP(8 + 7 * stamp_seg + 5);
    SEESAW_STAMP_VALUE(8 + 7 * stamp_seg + 6, static_cast<uint64_t>(tile1 - tile0) |
                                                  (static_cast<uint64_t>(whole) << 16) |
                                                  (static_cast<uint64_t>(t) << 20));
#ifdef MLAFUSE_SEESAW_STAMPS
    ++stamp_seg;
#endif
    __syncthreads();  // m and l are reset by the next segment
    seg = next;
    have = have_next;
  }
#ifdef MLAFUSE_SEESAW_STAMPS
  SEESAW_STAMP_VALUE(4, stamp_seg);
  SEESAW_STAMP(5);
  if (leader) {
    uint64_t* acc = stamp_row + kStampSegmentSlots + 8 * wg;
    acc[0] = cyc_s;
    acc[1] = cyc_bar;
    acc[2] = cyc_mma;
    acc[3] = cyc_loop;
    acc[4] = clk_entry;
    acc[5] = clock64();
    acc[6] = n_pairs;
  }
#endif
}

}  // namespace mlafuse::cuda::mla
