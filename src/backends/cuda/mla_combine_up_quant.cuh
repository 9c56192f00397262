// mla_decode_combine_up_quant: one CTA = kTM query tokens x one head h. (Where that grid would
// leave most SMs idle, mla_combine_latent_kernel merges the splits first and step 2 only copies.)
//   1. W_UV[h] ([512, 128] bf16, 128 KB) streams into shared memory by TMA, and the bf16 latent
//      rows of tokens done by one split-KV part (already final: copied as they are) by cp.async
//      (a 64-row tile without a merging row: by TMA, eight boxes), while
//   2. the warps merge the split-KV results of the other tokens in f32 (log-sum-exp weights) and
//      round the latent output to bf16 ([kTM, 512] tile in shared memory);
//   3. out[kTM, 128] = o_lat @ W_UV[h] on tensor cores (f32 accumulate): for 64-row tiles with
//      W_UV whole on wgmma, as W_UV[h]^T @ o_lat^T (M = 64 output columns a warpgroup, N = the
//      64 tokens, both operands in shared memory); for the other shapes on mma.sync (warp w:
//      output columns 16w .. 16w+15);
//   4. the f32 result is rounded to bf16 (the value the unfused graph's quant op would read) and
//      handed, row by row, to the epilogue functor: bf16 store, static FP8, group FP8 (one head's
//      128 outputs are one group of 128 or two of 64), or NVFP4 (eight 16-element blocks).
// Every functor quantizes with the shared quant_epilogue.cuh, so the codes and scales equal the
// standalone quant kernels' on this kernel's own bf16 output, bit for bit. Tokens t >= n are not
// written (NVFP4 zeroes its scale padding rows up to round_up(n, 128), SPEC 6).
#pragma once

#include <cuda_bf16.h>

#include <algorithm>
#include <cstdint>

#include "backends/cuda/device_util.cuh"
#include "backends/cuda/launch_pdl.h"
#include "backends/cuda/mla_decode.h"
#include "backends/cuda/mla_decode_plan.cuh"
#include "backends/cuda/mla_mma.cuh"
#include "backends/cuda/mla_wgmma.cuh"
#include "backends/cuda/quant_epilogue.cuh"
#include "backends/cuda/tma_map.h"
#include "backends/cuda/tma_sm90.cuh"
#ifdef MLAFUSE_SEESAW_STAMPS
#include "backends/cuda/stamps_file.h"
#endif
#include "mlafuse/backends/cuda/cuda_check.h"
#include "mlafuse/core/error.h"
#include "mlafuse/quant/scale_layout.h"

namespace mlafuse::cuda::mla {

inline constexpr int kCombineThreads = 256;
inline constexpr int kOutStride = kMlaVDim + 8;  // padded bf16 row of the staged output tile
// The split-KV parts holding one query's tiles: parts first .. first + count - 1 (count 0: no KV).
struct SplitRow {
  int first;
  int count;
  int cum;  // q_cum of the query's unit, which gives each split's partial slot (partial_slot)
  int sub;  // j * H for token j of its unit: the query's first row in a partial slot
};

// The splits of query t: those of its unit (mla_unit_tokens), led by token t - j. t's own
// entries load beside q_unit[t]; only a unit's later tokens wait for a second round.
__device__ __forceinline__ SplitRow split_row(const MlaDecodeProblem& p, const MlaWorkspace& ws,
                                              int per_part, int t) {
  const int j = mla_unit_tokens(p) > 1 ? ws.q_unit[t] >> 3 : 0;
  QuerySplits sp = query_splits(ws, per_part, t);
  int cum = ws.q_cum[t];
  if (j > 0) {
    sp = query_splits(ws, per_part, t - j);
    cum = ws.q_cum[t - j];
  }
  return SplitRow{sp.first, sp.tiles > 0 ? sp.last - sp.first + 1 : 0, cum, j * p.num_heads};
}

// W_UV[h] moves in chunks of 64 latent rows (16 KB), each as two TMA boxes of [64 rows, 64
// columns] in the SW128 layout, completing on the chunk buffer's mbarrier; a ring of kStages
// chunk buffers. kStages = kWChunks holds W_UV[h] whole (every chunk in flight from the start);
// kStages = 2 streams it so that two CTAs fit on an SM, for grids of more than one wave. One
// thread issues the copies (cp.async by every thread took ~2 us of the CTA's issue slots before
// it could start the merge, docs/PERF.md run 33).
inline constexpr int kWChunkRows = 64;
inline constexpr int kWChunks = kMlaLatent / kWChunkRows;
inline constexpr uint32_t kWChunkBytes = kWChunkRows * kMlaVDim * 2;

// Split entries of one token tile: at most kTM + U * num_parts, U = mla_unit_tokens (each part
// boundary splits one unit once more, and each of its U tokens takes that split). One-token units
// always fit (kMlaMaxParts); a launch whose bound exceeds it (multi-token units with many parts)
// merges in mla_combine_latent_kernel first, row by row (merge_plan_fits).
inline constexpr int kMaxMergeEntries = 1024;
static_assert(64 + kMlaMaxParts <= kMaxMergeEntries, "kMlaMaxParts must fit the merge plan");
inline bool merge_plan_fits(int tile_rows, const MlaDecodeProblem& p, int num_parts) {
  return tile_rows + static_cast<int64_t>(mla_unit_tokens(p)) * num_parts <= kMaxMergeEntries;
}

#ifdef MLAFUSE_SEESAW_STAMPS
// Diagnostic build only (CMake MLAFUSE_SEESAW_STAMPS): %globaltimer stamps of each combine CTA by
// thread 0, from the program's last combine launch, written at exit to
// $MLAFUSE_COMBINE_STAMPS_FILE (default combine_stamps.bin) and read by bench/combine_stamps.py.
// A CTA's row: 0 its SM, 1 entry, 2 after pdl_wait, 3 merge rows listed, 4 split weights ready,
// 5 merge done (thread 0's last add), 6 A tile ready, 7 W_UV product done, 8 exit, 9 merging rows
// | split entries << 16 | kTM << 32 | a_by_tma << 40 | kStages << 48, 10 + k: the end of thread
// 0's merge round k (16 split entries a round; the first six rounds).
inline constexpr int kCombineStampSlots = 16;
inline constexpr int kCombineStampRounds = 6;
inline constexpr int kCombineStampMaxCtas = 8192;
// Internal linkage: each epilogue's translation unit stamps and dumps its own copy, and the one
// that launched last writes the file.
static __device__ uint64_t g_combine_stamps[kCombineStampMaxCtas * kCombineStampSlots];
inline int g_combine_launches = 0;  // combine launches of the program, over every epilogue
static int s_combine_last_launch = -1;
static dim3 s_combine_stamp_grid;
[[maybe_unused]] static void dump_combine_stamps() {
  if (s_combine_last_launch != g_combine_launches) return;  // a later launch was another unit's
  write_stamps_file(g_combine_stamps, s_combine_stamp_grid, kCombineStampSlots,
                    kCombineStampMaxCtas, "MLAFUSE_COMBINE_STAMPS_FILE", "combine_stamps.bin");
}
// Host, before each launch: this unit's grid is now the program's last.
[[maybe_unused]] static void note_combine_launch(dim3 grid) {
  static bool registered = false;
  if (!registered) {
    std::atexit(dump_combine_stamps);
    registered = true;
  }
  s_combine_stamp_grid = grid;
  s_combine_last_launch = ++g_combine_launches;
}
#define COMBINE_STAMP(slot)                                \
  do {                                                     \
    if (threadIdx.x == 0) stamp_row[(slot)] = global_ns(); \
  } while (0)
#define COMBINE_STAMP_VALUE(slot, v)               \
  do {                                             \
    if (threadIdx.x == 0) stamp_row[(slot)] = (v); \
  } while (0)
#else
#define COMBINE_STAMP(slot) ((void)0)
#define COMBINE_STAMP_VALUE(slot, v) ((void)0)
#endif

template <int kTM, int kStages>
struct CombineUpSmem {
  __nv_bfloat16 w[kStages * kWChunkRows * kMlaVDim];  // W_UV[h] chunks [64, 128]
                                                      // (w_chunk_offset); 1024-byte aligned
  __nv_bfloat16 a[kTM * kMlaLatent];  // merged o_lat [kTM, 512] (a_tile_offset); reused as the
                                      // bf16 output tile [kTM, kOutStride]
  SplitRow rows[kTM];                 // each row's split-KV parts
  int merge_rows[kTM];     // real rows with 0 or >= 2 splits (merged or zeroed by the warps)
  int merge_off[kTM + 1];  // merge_rows[i]'s split entries: [merge_off[i], merge_off[i + 1])
  uint32_t ballot[2];      // rows 0..31, 32..63 that merge
  int split_total[2];      // their splits
  int ent_prow[kMaxMergeEntries];  // an entry's partial row, and its log-sum-exp, then weight
  float ent_w[kMaxMergeEntries];
  uint64_t w_full[kStages];  // chunk buffer i holds its chunk (TMA transaction barrier)
  uint64_t a_full[kMlaLatent / 64];  // block c (dims 64c ..) of an o_lat tile copied by TMA
};

// Tensor maps of one combine launch: W_UV as [H * 512, 128] in boxes of [64, 64]; the attention's
// bf16 latent output o_lat as [T_pad, H * 512] in boxes of [64 tokens, 64 dims], so one box is one
// SW128 block of a 64-row o_lat tile (the wgmma layout).
struct CombineMaps {
  CUtensorMap w;
  CUtensorMap o_lat;
};

// ---- epilogue functors: `row` gets one token's 128 bf16-rounded outputs of head h -------------
// Called by a whole warp (shuffles inside); lane i holds elements 4i .. 4i+3 (x).
//
// The quantizing functors also take a warp's 16 rows at once in the wgmma accumulator layout
// (`quad_rows`, for the prefill attention): lane l holds local rows l/4 and l/4 + 8 (r = 0, 1),
// columns 8j + 2(l%4) + e at x[r][2j + e] (j < 16), bf16-rounded. A group then lives in one quad
// (4 lanes), so the 16 rows reduce side by side instead of one after another. Rows lr < valid
// (tokens t0 + lr) are written. Codes pass through `stage`, this warp's 16 rows x 128 B of shared
// memory (16-byte units XOR-swizzled by row: no bank conflicts either way), so the global stores
// are whole rows of 16-byte units. Same per-element arithmetic as `row`: same codes and scales.
__device__ __forceinline__ uint32_t quad_stage_at(uint32_t stage, int lr, int byte) {
  return stage + lr * 128 + ((((byte >> 4) ^ (lr & 7)) << 4) | (byte & 15));
}
__device__ __forceinline__ void st_shared_u16(uint32_t addr, uint32_t v) {
  asm volatile("st.shared.u16 [%0], %1;\n" ::"r"(addr), "h"(static_cast<uint16_t>(v)) : "memory");
}
__device__ __forceinline__ void st_shared_u8(uint32_t addr, uint32_t v) {
  asm volatile("st.shared.u8 [%0], %1;\n" ::"r"(addr), "h"(static_cast<uint16_t>(v)) : "memory");
}
// Four e4m3 codes of row lr from quant_fp8*_x4 on a lane's columns of blocks j and j + 1:
// the low two at columns 8j + 2q, +1, the high two at 8(j + 1) + 2q, +1.
__device__ __forceinline__ void quad_stage_fp8x4(uint32_t stage, int lr, int j, int q,
                                                 uint32_t codes) {
  st_shared_u16(quad_stage_at(stage, lr, 8 * j + 2 * q), codes & 0xffffu);
  st_shared_u16(quad_stage_at(stage, lr, 8 * j + 8 + 2 * q), codes >> 16);
}
// The staged rows to global memory: row lr's kRowBytes bytes to row_ptr(lr) (16-byte aligned).
template <int kRowBytes, class RowPtr>
__device__ __forceinline__ void quad_stage_flush(uint32_t stage, int valid, int lane,
                                                 RowPtr row_ptr) {
  static_assert(kRowBytes % 16 == 0 && kRowBytes <= 128, "a staged row is at most 128 bytes");
  constexpr int kUnits = kRowBytes / 16;
  __syncwarp();
#pragma unroll
  for (int u = lane; u < 16 * kUnits; u += 32) {
    const int lr = u / kUnits;
    const int c = u % kUnits;
    if (lr >= valid) continue;
    uint4 v;
    asm volatile("ld.shared.v4.u32 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
                 : "r"(stage + lr * 128 + ((c ^ (lr & 7)) << 4)));
    *reinterpret_cast<uint4*>(row_ptr(lr) + 16 * c) = v;
  }
}

struct EpiBf16 {
  static constexpr MlaEpilogue kKind = MlaEpilogue::kBf16;
  __nv_bfloat16* out;  // [T_pad, H*128]
  int64_t dim;         // H*128
  __device__ __forceinline__ void init(const MlaOutputParams& o, int num_heads, int num_queries) {
    out = static_cast<__nv_bfloat16*>(o.out);
    dim = static_cast<int64_t>(num_heads) * kMlaVDim;
  }
  __device__ __forceinline__ void pad(int, int, int, int) const {}
  __device__ __forceinline__ void row(const float (&x)[4], int64_t t, int h, int lane,
                                      bool valid) const {
    if (!valid) return;
    uint2 v;
    v.x = pack_bf16x2(x[0], x[1]);
    v.y = pack_bf16x2(x[2], x[3]);
    *reinterpret_cast<uint2*>(out + t * dim + h * kMlaVDim + 4 * lane) = v;
  }
};

struct EpiFp8Static {
  static constexpr MlaEpilogue kKind = MlaEpilogue::kFp8Static;
  uint8_t* out;  // [T_pad, H*128] e4m3
  int64_t dim;
  float inv;
  __device__ __forceinline__ void init(const MlaOutputParams& o, int num_heads, int num_queries) {
    out = static_cast<uint8_t*>(o.out);
    dim = static_cast<int64_t>(num_heads) * kMlaVDim;
    inv = qe::fp8_static_inv(*o.scale);
  }
  __device__ __forceinline__ void pad(int, int, int, int) const {}
  __device__ __forceinline__ void row(const float (&x)[4], int64_t t, int h, int lane,
                                      bool valid) const {
    if (!valid) return;
    *reinterpret_cast<uint32_t*>(out + t * dim + h * kMlaVDim + 4 * lane) =
        qe::quant_fp8_static_x4(x[0], x[1], x[2], x[3], inv);
  }
  __device__ __forceinline__ void quad_rows(const float (&x)[2][32], int64_t t0, int valid, int h,
                                            int lane, uint32_t stage) const {
    const int q = lane % 4;
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      const int lr = lane / 4 + 8 * r;
#pragma unroll
      for (int j = 0; j < 16; j += 2) {  // columns 8j + 2q + {0, 1} and 8(j + 1) + 2q + {0, 1}
        quad_stage_fp8x4(stage, lr, j, q,
                         qe::quant_fp8_static_x4(x[r][2 * j], x[r][2 * j + 1], x[r][2 * j + 2],
                                                 x[r][2 * j + 3], inv));
      }
    }
    quad_stage_flush<kMlaVDim>(stage, valid, lane,
                               [&](int lr) { return out + (t0 + lr) * dim + h * kMlaVDim; });
  }
};

template <int kGroup>
struct EpiFp8Group {
  static_assert(kGroup == 128 || kGroup == 64, "fused group FP8 supports groups of 128 and 64");
  static constexpr MlaEpilogue kKind =
      kGroup == 128 ? MlaEpilogue::kFp8Group128 : MlaEpilogue::kFp8Group64;
  static constexpr int kLanesPerGroup = kGroup / 4;
  uint8_t* out;  // [T_pad, H*128] e4m3
  float* scales;
  GroupScaleLayout layout;
  int64_t dim;
  float eps;
  bool ue8m0;
  __device__ __forceinline__ void init(const MlaOutputParams& o, int num_heads, int num_queries) {
    out = static_cast<uint8_t*>(o.out);
    scales = o.group_scales;
    dim = static_cast<int64_t>(num_heads) * kMlaVDim;
    layout = GroupScaleLayout{num_queries, dim / kGroup, o.col_major, o.tma_aligned};
    eps = o.eps;
    ue8m0 = o.ue8m0;
  }
  __device__ __forceinline__ void pad(int, int, int, int) const {}
  __device__ __forceinline__ void row(const float (&x)[4], int64_t t, int h, int lane,
                                      bool valid) const {
    float amax = 0.0f;
#pragma unroll
    for (int i = 0; i < 4; ++i) amax = qe::abs_max(amax, x[i]);
    amax = qe::group_amax<kLanesPerGroup - 1>(amax);
    const qe::Fp8GroupScale sc = qe::fp8_group_scale(amax, eps, ue8m0);
    if (!valid) return;
    const int64_t col = static_cast<int64_t>(h) * kMlaVDim + 4 * lane;
    *reinterpret_cast<uint32_t*>(out + t * dim + col) = qe::quant_fp8x4(x[0], x[1], x[2], x[3], sc);
    if (lane % kLanesPerGroup == 0) qe::store_group_scale(scales, layout, t, col / kGroup, sc.s);
  }
  __device__ __forceinline__ void quad_rows(const float (&x)[2][32], int64_t t0, int valid, int h,
                                            int lane, uint32_t stage) const {
    constexpr int kGroups = kMlaVDim / kGroup;  // groups in a row: 1 or 2
    constexpr int kPer = 32 / kGroups;          // values of one group a lane holds
    const int q = lane % 4;
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      const int lr = lane / 4 + 8 * r;
#pragma unroll
      for (int g = 0; g < kGroups; ++g) {  // group g: columns kGroup*g .., j in [kPer/2 g, ..)
        float amax = 0.0f;
#pragma unroll
        for (int i = 0; i < kPer; ++i) amax = qe::abs_max(amax, x[r][kPer * g + i]);
        amax = qe::group_amax<3>(amax);
        const qe::Fp8GroupScale sc = qe::fp8_group_scale(amax, eps, ue8m0);
#pragma unroll
        for (int jj = 0; jj < kPer / 4; ++jj) {
          const int j = (kPer / 2) * g + 2 * jj;  // columns of j and j + 1
          quad_stage_fp8x4(
              stage, lr, j, q,
              qe::quant_fp8x4(x[r][2 * j], x[r][2 * j + 1], x[r][2 * j + 2], x[r][2 * j + 3], sc));
        }
        if (q == 0 && lr < valid) {
          qe::store_group_scale(scales, layout, t0 + lr, (int64_t{h} * kMlaVDim) / kGroup + g,
                                sc.s);
        }
      }
    }
    quad_stage_flush<kMlaVDim>(stage, valid, lane,
                               [&](int lr) { return out + (t0 + lr) * dim + h * kMlaVDim; });
  }
};

// NVFP4 needs eight elements a lane (a 16-element block is two lanes): `row` regroups them.
struct EpiNvfp4 {
  static constexpr MlaEpilogue kKind = MlaEpilogue::kNvfp4;
  uint8_t* out;  // [T_pad, H*64] packed e2m1x2
  uint8_t* sf;   // swizzled e4m3 [round_up(T_pad, 128), H*8]
  Nvfp4ScaleLayout layout;
  int64_t dim;
  float gs;
  __device__ __forceinline__ void init(const MlaOutputParams& o, int num_heads, int num_queries) {
    out = static_cast<uint8_t*>(o.out);
    sf = o.nvfp4_scales;
    dim = static_cast<int64_t>(num_heads) * kMlaVDim;
    layout = Nvfp4ScaleLayout{num_queries, dim};
    gs = *o.scale;
  }
  // Zeroes head h's scale columns of padding rows [n, round_up(n, 128)) inside rows [t0, t0+rows).
  __device__ __forceinline__ void pad(int t0, int rows, int n, int h) const {
    const int pad_end = static_cast<int>(round_up(n, 128));
    for (int i = threadIdx.x; i < rows * 8; i += kCombineThreads) {
      const int t = t0 + i / 8;
      if (t >= n && t < pad_end) layout_store_zero(t, h * 8 + i % 8);
    }
  }
  __device__ __forceinline__ void layout_store_zero(int64_t t, int64_t k) const {
    qe::store_nvfp4_scale(sf, layout, t, k, 0);
  }
  __device__ __forceinline__ void row(const float (&x)[4], int64_t t, int h, int lane,
                                      bool valid) const {
    // Lane l holds elements 4l..4l+3, so 16-element block b spans lanes 4b..4b+3. Lane 4b
    // gathers elements 16b..16b+7 (lanes 4b, 4b+1) and lane 4b+1 elements 16b+8..16b+15 (lanes
    // 4b+2, 4b+3); lanes 4b+2 and 4b+3 compute duplicates and store nothing.
    float y[8];
    const int base = lane & ~3;
    const int src0 = base + 2 * (lane & 1);
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      y[i] = __shfl_sync(0xffffffffu, x[i], src0);
      y[4 + i] = __shfl_sync(0xffffffffu, x[i], src0 + 1);
    }
    float amax = 0.0f;
#pragma unroll
    for (int i = 0; i < 4; ++i) amax = qe::abs_max(amax, x[i]);
    amax = qe::group_amax<3>(amax);  // the 4 lanes of one 16-element block
    const qe::Nvfp4BlockScale bs = qe::nvfp4_block_scale(amax, gs);
    const uint32_t packed = qe::quant_nvfp4x8(y, bs.out_scale);
    if (!valid || (lane & 2) != 0) return;
    const int64_t col = static_cast<int64_t>(h) * kMlaVDim + 4 * base + 8 * (lane & 1);
    *reinterpret_cast<uint32_t*>(out + (t * dim + col) / 2) = packed;
    if ((lane & 3) == 0) qe::store_nvfp4_scale(sf, layout, t, col / 16, bs.sf);
  }
  // Block b (columns 16b .. 16b + 15) is j = 2b, 2b + 1: four values a lane, one quad.
  __device__ __forceinline__ void quad_rows(const float (&x)[2][32], int64_t t0, int valid, int h,
                                            int lane, uint32_t stage) const {
    const int q = lane % 4;
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      const int lr = lane / 4 + 8 * r;
#pragma unroll
      for (int b = 0; b < kMlaVDim / 16; ++b) {
        const float* v = &x[r][4 * b];
        float amax = 0.0f;
#pragma unroll
        for (int i = 0; i < 4; ++i) amax = qe::abs_max(amax, v[i]);
        amax = qe::group_amax<3>(amax);
        const qe::Nvfp4BlockScale bs = qe::nvfp4_block_scale(amax, gs);
        // Columns 16b + 2q + {0, 1} -> byte 8b + q; 16b + 8 + 2q + {0, 1} -> byte 8b + 4 + q.
        st_shared_u8(quad_stage_at(stage, lr, 8 * b + q),
                     qe::quant_nvfp4x2(v[0], v[1], bs.out_scale));
        st_shared_u8(quad_stage_at(stage, lr, 8 * b + 4 + q),
                     qe::quant_nvfp4x2(v[2], v[3], bs.out_scale));
        if (q == 0 && lr < valid) {
          qe::store_nvfp4_scale(sf, layout, t0 + lr, int64_t{h} * (kMlaVDim / 16) + b, bs.sf);
        }
      }
    }
    quad_stage_flush<kMlaVDim / 2>(stage, valid, lane, [&](int lr) {
      return out + ((t0 + lr) * dim + int64_t{h} * kMlaVDim) / 2;
    });
  }
};

// Dims d0, d0 + 1 of row `prow` of the partials (partial_row).
__device__ __forceinline__ float2 load_partial(const MlaWorkspace& ws, int64_t prow, int d0) {
  return *reinterpret_cast<const float2*>(ws.o_part + prow * kMlaLatent + d0);
}

// Merged latent output at dims d0, d0 + 1 of the calling lane, for kRows queries of head h whose
// KV was split (count >= 2) or is empty (count 0: zeros), with log-sum-exp weights in f32. All 32
// lanes call it together (shuffles inside); rows[] is uniform over the warp. The log-sum-exps
// and the first kPre partials of every row are loaded before anything waits on them, so a merge
// costs a round trip or two, not one per row or per split. Sum order: split order, from 0; the
// weights are summed in split order and normalized first, exactly as the fused kernel's
// many-row path does, so all three merges (one row, many rows, the unfused latent) agree.
template <int kRows, int kPre>
__device__ __forceinline__ void merge_split_rows(const MlaDecodeProblem& p, const MlaWorkspace& ws,
                                                 int per_part, const SplitRow (&rows)[kRows], int h,
                                                 int d0, int lane, float2 (&res)[kRows]) {
  static_assert(kPre >= 1 && kPre <= 32, "prefetch within the first 32 splits");
  auto prow_of = [&](const SplitRow& r, int k) {
    return partial_row(partial_slot(r.first + k, per_part, r.cum), mla_unit_tokens(p), p.num_heads,
                       r.sub + h);
  };
  auto lse_of = [&](const SplitRow& r, int k) { return ws.lse_part[prow_of(r, k)]; };
  float lse0[kRows];
  float2 x0[kRows][kPre];
#pragma unroll
  for (int i = 0; i < kRows; ++i) {
    lse0[i] = lane < rows[i].count ? lse_of(rows[i], lane) : -INFINITY;
#pragma unroll
    for (int j = 0; j < kPre; ++j) {
      x0[i][j] =
          j < rows[i].count ? load_partial(ws, prow_of(rows[i], j), d0) : make_float2(0.0f, 0.0f);
    }
  }
#pragma unroll
  for (int i = 0; i < kRows; ++i) {
    const SplitRow& r = rows[i];
    if (r.count == 0) {
      res[i] = make_float2(0.0f, 0.0f);
      continue;
    }
    float m = lse0[i];
    for (int k = 32 + lane; k < r.count; k += 32) m = fmaxf(m, lse_of(r, k));
#pragma unroll
    for (int o = 16; o >= 1; o >>= 1) m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, o));
    // The weights as the fused kernel's many-row merge forms them: summed in split order, then
    // normalized before the weighted sum, so every path rounds alike (tensor-parallel shards,
    // whose tiles differ, depend on it).
    float wsum = 0.0f;
    for (int base = 0; base < r.count; base += 32) {
      const int k = base + lane;
      const float lse = base == 0 ? lse0[i] : (k < r.count ? lse_of(r, k) : -INFINITY);
      const float w = k < r.count ? __expf(lse - m) : 0.0f;
      const int nk = min(32, r.count - base);
      for (int j = 0; j < nk; ++j) wsum += __shfl_sync(0xffffffffu, w, j);
    }
    const float inv = 1.0f / wsum;
    float2 acc = make_float2(0.0f, 0.0f);
    for (int base = 0; base < r.count; base += 32) {
      const int k = base + lane;
      const float lse = base == 0 ? lse0[i] : (k < r.count ? lse_of(r, k) : -INFINITY);
      const float w = k < r.count ? __expf(lse - m) * inv : 0.0f;
      const int nk = min(32, r.count - base);
      int j0 = 0;
      if (base == 0) {
#pragma unroll
        for (int j = 0; j < kPre; ++j) {  // splits past the count: x = 0 and w = 0
          const float wj = __shfl_sync(0xffffffffu, w, j);
          acc.x += wj * x0[i][j].x;
          acc.y += wj * x0[i][j].y;
        }
        j0 = kPre;
      }
      for (; j0 < nk; j0 += 16) {  // sixteen independent loads in flight
        float2 v[16];
        float wj[16];
#pragma unroll
        for (int j = 0; j < 16; ++j) {
          const int e = j0 + j;
          wj[j] = __shfl_sync(0xffffffffu, w, e & 31);
          v[j] = e < nk ? load_partial(ws, prow_of(r, base + e), d0) : make_float2(0.0f, 0.0f);
        }
#pragma unroll
        for (int j = 0; j < 16; ++j) {
          if (j0 + j < nk) {
            acc.x += wj[j] * v[j].x;
            acc.y += wj[j] * v[j].y;
          }
        }
      }
    }
    res[i] = acc;
  }
}

// 64-row tiles (W_UV whole, one wave: B = 33..64 at H = 128; or its ring of two, B > 64) run the
// W_UV product on wgmma, with both operands as SW128 tiles (mla_wgmma.cuh); 16- and 32-row tiles
// on mma.sync, with the A tile in rows of XOR-swizzled 16-byte chunks for ldmatrix (wgmma with
// N = 16 was slower in the chain, docs/PERF.md run 29). The ring went to wgmma once W_UV came by
// TMA (run 33: combine -3.4 us at B = 128; in run 29, with cp.async, the op was slower).
template <int kTM, int kStages>
inline constexpr bool kCombineWgmma = kTM == 64;

// Byte offset of 16-byte chunk c of o_lat row r in the A tile.
template <bool kWgmma, int kTM>
__device__ __forceinline__ uint32_t a_tile_offset(int r, int c) {
  if constexpr (kWgmma) {
    return sw128_offset(kTM, r, c);
  } else {
    return swz_chunk_offset(kMlaLatent * 2, r, c);
  }
}
// Byte offset of 16-byte chunk c (output columns 8c ..) of latent row r in a W_UV chunk: two
// SW128 blocks of [64, 64] (output columns 0..63, then 64..127), as the TMA boxes land. wgmma
// reads them as its MN-major operand; ldmatrix rows of one column chunk fall in distinct banks.
__device__ __forceinline__ uint32_t w_chunk_offset(int r, int c) {
  return sw128_offset(kWChunkRows, r, c);
}

// Chunk k of W_UV[h] ([64, 128] bf16, rows 64k .. 64k+63 of head h) into the ring buffer at
// `dst`, completing on `bar` (one thread). `w_map`: W_UV as [H * 512, 128], boxes of [64, 64].
__device__ __forceinline__ void load_w_chunk(uint32_t dst, const CUtensorMap* w_map, uint32_t bar,
                                             int h, int k) {
  constexpr uint32_t kBlockBytes = kWChunkRows * 128;
  tma::mbar_arrive_expect_tx(bar, kWChunkBytes);
  const int y = h * kMlaLatent + k * kWChunkRows;
  tma::load_2d(dst, w_map, bar, 0, y, tma::kEvictNormal);  // tiles of a head share it in L2
  tma::load_2d(dst + kBlockBytes, w_map, bar, 64, y, tma::kEvictNormal);
}

// Step 3 on wgmma, for 64-row tiles: out^T [128, 64] =
// W_UV[h]^T [128, 512] x o_lat^T [512, 64]. Warpgroup g computes output columns 64g .. 64g+63
// (M) of the 64 tokens (N); A = W_UV read MN-major, B = the o_lat tile K-major, both in shared
// memory, so each is read once a warpgroup (mma.sync reads the A tile once a warp). With W_UV[h]
// whole all 32 k-steps go out before the one wait; with the ring of two, each chunk's 4 k-steps
// complete before its buffer is refilled with the chunk two on, and each waits for its own
// block of the o_lat tile when the tile comes by TMA (`a_bars`, 0: the tile is in already). The
// rounded result goes to `so` ([kTM, kOutStride] bf16, over the o_lat tile once both warpgroups
// are done with it).
template <int kTM, int kStages>
__device__ __forceinline__ void w_uv_product_wgmma(uint32_t sa, uint32_t a_bars, uint32_t sw,
                                                   uint32_t w_full, const CUtensorMap* w_map, int h,
                                                   __nv_bfloat16* so, int warp, int lane) {
  static_assert(kTM == 64, "wgmma's N is the tile's 64 tokens");
  constexpr uint32_t kBlockBytes = kWChunkRows * 128;  // one [64, 64] SW128 block of a chunk
  const int wg = warp / 4;
  float c[kTM / 2];
#pragma unroll
  for (int i = 0; i < kTM / 2; ++i) c[i] = 0.0f;
  // W_UV whole: every chunk is in before the MMAs go out back to back (a wait between them has
  // ptxas fence the accumulators at each).
  if constexpr (kStages == kWChunks) {
    for (int k = 0; k < kWChunks; ++k) tma::mbar_wait(w_full + 8 * k, 0);
  }
  wgmma_fence();
#pragma unroll
  for (int k = 0; k < kWChunks; ++k) {
    if constexpr (kStages < kWChunks) {  // the ring: chunk k is in, and o_lat block k
      tma::mbar_wait(w_full + 8 * (k % kStages), (k / kStages) & 1);
      if (a_bars != 0) tma::mbar_wait(a_bars + 8 * k, 0);
    }
    const uint32_t swk = sw + (k % kStages) * kWChunkBytes;
    const uint64_t dw = desc_mnmajor(swk + wg * kBlockBytes, kBlockBytes);
    const uint64_t da = desc_kmajor(sa + k * (kTM * 128));  // latent dims 64k .. 64k+63
#pragma unroll
    for (int kl = 0; kl < kWChunkRows / 16; ++kl) {
      wgmma_m64n64k16_ss<1>(c, desc_advance(dw, kl * 16 * 128), desc_advance(da, kl * 32), 1);
    }
    if constexpr (kStages < kWChunks) {
      if (k + kStages < kWChunks) {  // the ring: chunk k + kStages into the buffer once read
        wgmma_commit();
        wgmma_wait<0>();
        __syncthreads();  // both warpgroups' MMAs on buffer k % kStages are done
        if (threadIdx.x == 0) load_w_chunk(swk, w_map, w_full + 8 * (k % kStages), h, k + kStages);
        wgmma_fence();  // the accumulators go back to the next MMAs
      }
    }
  }
  wgmma_commit();
  wgmma_wait<0>();
  fence_regs(c);
  __syncthreads();  // the o_lat tile becomes the output tile
  // Accumulator element 4j + 2r + e: output column 64g + 16(warp % 4) + lane/4 + 8r of token
  // 8j + 2(lane % 4) + e.
#pragma unroll
  for (int j = 0; j < kTM / 8; ++j)
#pragma unroll
    for (int r = 0; r < 2; ++r)
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        const int col = 64 * wg + 16 * (warp % 4) + lane / 4 + 8 * r;
        const int tok = 8 * j + 2 * (lane % 4) + e;
        so[tok * kOutStride + col] = __float2bfloat16_rn(c[4 * j + 2 * r + e]);
      }
}

// Step 3 on mma.sync, for the other shapes: warp w computes output columns 16w .. 16w+15 of every
// row. Chunk k (latent rows 64k ..) of W_UV[h] sits in ring buffer k % kStages; it is waited for
// at the top of step k, and with a ring of two, chunk k + 2 is issued into the buffer just read
// once every warp is done with it.
template <int kTM, int kStages>
__device__ __forceinline__ void w_uv_product_mma_sync(uint32_t sa, uint32_t sw, uint32_t w_full,
                                                      const CUtensorMap* w_map, int h,
                                                      __nv_bfloat16* so, int warp, int lane) {
  constexpr int kMT = kTM / 16;
  float c[kMT][2][4];
#pragma unroll
  for (int mi = 0; mi < kMT; ++mi)
#pragma unroll
    for (int j = 0; j < 2; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) c[mi][j][e] = 0.0f;
#pragma unroll 1
  for (int k = 0; k < kWChunks; ++k) {
    tma::mbar_wait(w_full + 8 * (k % kStages), (k / kStages) & 1);
    const uint32_t swk = sw + (k % kStages) * kWChunkBytes;
#pragma unroll
    for (int kl = 0; kl < kWChunkRows / 16; ++kl) {
      const int kk = k * (kWChunkRows / 16) + kl;  // 16-wide step of the latent dim
      uint32_t b[4];
      ldmatrix_x4_trans(b, swk + w_chunk_offset(kl * 16 + (lane % 8) + ((lane / 8) % 2) * 8,
                                                2 * warp + lane / 16));
#pragma unroll
      for (int mi = 0; mi < kMT; ++mi) {
        uint32_t a[4];
        ldmatrix_x4(a, sa + a_tile_offset<false, kTM>(mi * 16 + (lane % 16), 2 * kk + lane / 16));
        mma_bf16_16816(c[mi][0], a, b[0], b[1]);
        mma_bf16_16816(c[mi][1], a, b[2], b[3]);
      }
    }
    if (k + kStages < kWChunks) {
      __syncthreads();  // every warp has read buffer k % kStages
      if (threadIdx.x == 0) load_w_chunk(swk, w_map, w_full + 8 * (k % kStages), h, k + kStages);
    }
  }
  __syncthreads();  // the o_lat tile becomes the output tile
#pragma unroll
  for (int mi = 0; mi < kMT; ++mi)
#pragma unroll
    for (int j = 0; j < 2; ++j)
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        const int row = mi * 16 + lane / 4 + 8 * r;
        const int col = 16 * warp + 8 * j + 2 * (lane % 4);
        *reinterpret_cast<uint32_t*>(so + row * kOutStride + col) =
            pack_bf16x2(c[mi][j][2 * r], c[mi][j][2 * r + 1]);
      }
}

template <class Epi, int kTM, int kStages>
__global__ void __launch_bounds__(kCombineThreads, kStages == kWChunks ? 1 : 2)
    mla_combine_up_quant_kernel(MlaDecodeProblem p, MlaWorkspace ws, MlaOutputParams op,
                                const __grid_constant__ CombineMaps maps, bool premerged) {
  static_assert(kStages == kWChunks || kStages == 2, "W_UV: whole, or a ring of two chunks");
  using Smem = CombineUpSmem<kTM, kStages>;
  constexpr bool kWgmma = kCombineWgmma<kTM, kStages>;
  extern __shared__ __align__(128) uint8_t smem_raw[];
  const uint32_t raw_addr = smem_addr(smem_raw);  // SW128 tiles start on 1024-byte boundaries
  Smem& sm = *reinterpret_cast<Smem*>(smem_raw + (((raw_addr + 1023u) & ~1023u) - raw_addr));
  const int t0 = blockIdx.x * kTM;
  const int h = blockIdx.y;
  const int warp = threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  const int n = real_tokens(p);
#ifdef MLAFUSE_SEESAW_STAMPS
  uint64_t* const stamp_row =
      g_combine_stamps +
      (static_cast<int>(blockIdx.y * gridDim.x + blockIdx.x) % kCombineStampMaxCtas) *
          kCombineStampSlots;
  {
    uint32_t smid;
    asm volatile("mov.u32 %0, %%smid;" : "=r"(smid));
    COMBINE_STAMP_VALUE(0, smid);
  }
  COMBINE_STAMP(1);
#endif

  Epi epi;
  epi.init(op, p.num_heads, p.num_queries);
  epi.pad(t0, kTM, n, h);
  if (t0 >= n) {  // uniform over the CTA: nothing real in this tile
    pdl_wait();
    COMBINE_STAMP(2);
    COMBINE_STAMP_VALUE(9, 0);
    COMBINE_STAMP(8);
    return;
  }

  // 1. The first kStages chunks of W_UV[h] -> shared memory (all of it when kStages = 8). The
  //    merge plan's __syncthreads() below make the barriers' initialization visible to the
  //    threads that wait on them.
  const uint32_t sw = smem_addr(sm.w);
  const uint32_t w_full = smem_addr(sm.w_full);
  const uint32_t a_full = smem_addr(&sm.a_full[0]);
  if (threadIdx.x == 0) {
    tma::prefetch_map(&maps.w);
    if constexpr (kWgmma) tma::prefetch_map(&maps.o_lat);
    for (int k = 0; k < kStages; ++k) tma::mbar_init(w_full + 8 * k, 1);
    for (int c = 0; c < kMlaLatent / 64; ++c) tma::mbar_init(a_full + 8 * c, 1);
    tma::mbar_fence_init();
    for (int k = 0; k < kStages; ++k)
      load_w_chunk(sw + k * kWChunkBytes, &maps.w, w_full + 8 * k, h, k);
  }
  // The W_UV loads above overlap the attention's tail (programmatic launch); its results from here.
  pdl_wait();
  COMBINE_STAMP(2);

  // 2. Merge the splits of each token in f32 and round to bf16. Every row's splits follow from
  //    its q_cum in closed form (partial_slot), so one round of loads gives them all.
  const int per_part = ws.sched[0];
  const int rows = min(kTM, n - t0);
  // Warps 0 and 1 list the rows that merge (kTM <= 64). Every thread passes both barriers (a
  // named barrier of warps 0-1 alone left racecheck reporting hazards across the later
  // __syncthreads(): docs/kernels/mla_decode.md, "Sanitizers").
  const int r = threadIdx.x;
  SplitRow sr{0, 0, 0, 0};
  bool merge = false;
  int splits = 0;
  uint32_t bal = 0;
  if (r < 64) {
    if (r < rows) sr = split_row(p, ws, per_part, t0 + r);
    if (r < kTM) sm.rows[r] = sr;
    // Padding rows are never stored; premerged: every real row's latent is in ws.o_lat already.
    merge = r < rows && sr.count != 1 && !premerged;
    bal = __ballot_sync(0xffffffffu, merge);
    splits = merge ? sr.count : 0;  // inclusive scan over the warp
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
      const int v = __shfl_up_sync(0xffffffffu, splits, o);
      if (lane >= o) splits += v;
    }
    if (lane == 31) {
      sm.ballot[warp] = bal;
      sm.split_total[warp] = splits;
    }
  }
  __syncthreads();  // both warps' ballots and totals are in
  if (r < 64) {
    const int pos = __popc(bal & ((1u << lane) - 1u)) + (warp == 1 ? __popc(sm.ballot[0]) : 0);
    const int end = splits + (warp == 1 ? sm.split_total[0] : 0);
    if (merge) {
      sm.merge_rows[pos] = r;
      sm.merge_off[pos + 1] = end;
    }
    if (r == 0) sm.merge_off[0] = 0;
  }
  __syncthreads();
  const int num_merge = __popc(sm.ballot[0]) + __popc(sm.ballot[1]);
  COMBINE_STAMP(3);
  // Single-split rows: the attention already wrote their bf16 latent output; copy it into the
  // swizzled A tile. A 64-row tile with no merging row comes as eight TMA boxes, issued by one
  // thread (B >= 33 at H = 128; cp.async by every thread, 16 a thread, held the CTA ~2-3 us at
  // B = 128, PERF.md run 34); rows past the real tokens then hold whatever o_lat holds, as they
  // do otherwise: a token's outputs depend only on its own row, and padding rows are never stored.
  // Otherwise cp.async (whole tile in flight at once, overlapping the W_UV load and the merge
  // below), row r, 16-byte chunk c of 64.
  const bool a_by_tma = kWgmma && num_merge == 0;
  if (a_by_tma) {
    if (threadIdx.x == 0) {
      for (int c = 0; c < kMlaLatent / 64; ++c) {
        tma::mbar_arrive_expect_tx(a_full + 8 * c, kTM * 128);
        tma::load_2d(smem_addr(sm.a) + c * kTM * 128, &maps.o_lat, a_full + 8 * c,
                     h * kMlaLatent + 64 * c, t0);
      }
    }
  } else {
    const uint32_t sa = smem_addr(sm.a);
    for (int i = threadIdx.x; i < kTM * (kMlaLatent / 8); i += kCombineThreads) {
      const int r = i / (kMlaLatent / 8);
      const int c = i % (kMlaLatent / 8);
      if (!(premerged ? r < rows : sm.rows[r].count == 1)) continue;
      cp_async16(sa + a_tile_offset<kWgmma, kTM>(r, c),
                 ws.o_lat + (static_cast<int64_t>(t0 + r) * p.num_heads + h) * kMlaLatent + c * 8);
    }
    cp_async_commit();
  }
  // The other rows: warp w owns latent dims 64w .. 64w+63 of every row (lane l: 64w + 2l, +1), so
  // even a single token keeps all eight warps loading.
  const int d0 = 64 * warp + 2 * lane;
  auto store_row = [&](int r, float2 v) {
    *reinterpret_cast<uint32_t*>(reinterpret_cast<uint8_t*>(sm.a) +
                                 a_tile_offset<kWgmma, kTM>(r, d0 / 8) + (d0 % 8) * 2) =
        pack_bf16x2(v.x, v.y);
  };
  // Several merging rows: every split entry of the tile (merge row i owns entries merge_off[i] ..
  // merge_off[i + 1] - 1, in split order) gets its partial slot and log-sum-exp, all in one round
  // by all threads; warp w turns row w's (w + 8, ...) into normalized weights; then the entries are
  // summed as one flat list, 16 partials in flight a lane, each row's sum closed when its last
  // entry is in. The loads of different rows overlap (a row-by-row loop waited on each row's own
  // splits in turn: B = 16, H = 128 made 16 dependent rounds). Arithmetic, exactly as
  // merge_split_rows (the unfused latent merge): weights e^(lse - max) summed in split order and
  // normalized, then sum_k w_k x_k in split order from 0.
  // One merging row (B = 1, or a single split query among whole ones) keeps merge_split_rows,
  // whose log-sum-exps and first 16 partials go out in one round (measured ~1 us faster there).
  COMBINE_STAMP(4);  // the many-row path below stamps it again once its weights are ready
  if (num_merge == 1) {
    const int r = sm.merge_rows[0];
    const SplitRow one[1] = {sm.rows[r]};
    float2 v[1];
    merge_split_rows<1, 16>(p, ws, per_part, one, h, d0, lane, v);
    store_row(r, v[0]);
  } else if (num_merge > 1) {
    const int entries = sm.merge_off[num_merge];
    for (int e = threadIdx.x; e < entries; e += kCombineThreads) {
      int lo = 0;
      int hi = num_merge;  // the merge row i with merge_off[i] <= e < merge_off[i + 1]
      while (hi - lo > 1) {
        const int mid = (lo + hi) / 2;
        if (sm.merge_off[mid] <= e) {
          lo = mid;
        } else {
          hi = mid;
        }
      }
      const SplitRow& sr = sm.rows[sm.merge_rows[lo]];
      const int64_t prow =
          partial_row(partial_slot(sr.first + (e - sm.merge_off[lo]), per_part, sr.cum),
                      mla_unit_tokens(p), p.num_heads, sr.sub + h);
      sm.ent_prow[e] = static_cast<int32_t>(prow);
      sm.ent_w[e] = ws.lse_part[prow];
    }
    __syncthreads();
    for (int i = warp; i < num_merge; i += kCombineThreads / 32) {
      const int b = sm.merge_off[i];
      const int end = sm.merge_off[i + 1];
      float m = -INFINITY;
      for (int k = b + lane; k < end; k += 32) m = fmaxf(m, sm.ent_w[k]);
#pragma unroll
      for (int o = 16; o >= 1; o >>= 1) m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, o));
      float sum = 0.0f;
      for (int base = b; base < end; base += 32) {
        const int k = base + lane;
        const float w = k < end ? __expf(sm.ent_w[k] - m) : 0.0f;
        const int nk = min(32, end - base);
        for (int j = 0; j < nk; ++j) sum += __shfl_sync(0xffffffffu, w, j);
        if (k < end) sm.ent_w[k] = w;
      }
      const float inv = 1.0f / sum;
      for (int k = b + lane; k < end; k += 32) sm.ent_w[k] *= inv;
    }
    __syncthreads();
    COMBINE_STAMP(4);
    int row = 0;  // the merge row of the next entry to add
    float2 v = make_float2(0.0f, 0.0f);
    for (int e0 = 0; e0 < entries; e0 += 16) {
      float2 y[16];
      float wy[16];
#pragma unroll
      for (int j = 0; j < 16; ++j) {
        const int e = e0 + j;
        wy[j] = e < entries ? sm.ent_w[e] : 0.0f;
        y[j] = e < entries ? load_partial(ws, sm.ent_prow[e], d0) : make_float2(0.0f, 0.0f);
      }
#pragma unroll
      for (int j = 0; j < 16; ++j) {
        const int e = e0 + j;
        if (e >= entries) break;              // uniform over the CTA
        while (e >= sm.merge_off[row + 1]) {  // rows before e's are complete (or empty: zero)
          store_row(sm.merge_rows[row], v);
          v = make_float2(0.0f, 0.0f);
          ++row;
        }
        v.x += wy[j] * y[j].x;
        v.y += wy[j] * y[j].y;
      }
#ifdef MLAFUSE_SEESAW_STAMPS
      if (e0 / 16 < kCombineStampRounds) COMBINE_STAMP(10 + e0 / 16);
#endif
    }
    for (; row < num_merge; ++row) {  // the last row, and empty rows after it
      store_row(sm.merge_rows[row], v);
      v = make_float2(0.0f, 0.0f);
    }
  }
  COMBINE_STAMP(5);
  cp_async_wait<0>();
  // The ring waits for each o_lat block beside its W_UV chunk; W_UV whole needs all before its
  // back-to-back MMAs.
  if (a_by_tma && kStages == kWChunks) {
    for (int c = 0; c < kMlaLatent / 64; ++c) tma::mbar_wait(a_full + 8 * c, 0);
  }
  if constexpr (kWgmma) fence_proxy_async();  // the A tile (generic writes) -> wgmma (async)
  __syncthreads();
  COMBINE_STAMP(6);
  COMBINE_STAMP_VALUE(
      9, static_cast<uint64_t>(num_merge) |
             (static_cast<uint64_t>(num_merge > 1 ? sm.merge_off[num_merge] : 0) << 16) |
             (static_cast<uint64_t>(kTM) << 32) | (static_cast<uint64_t>(a_by_tma) << 40) |
             (static_cast<uint64_t>(kStages) << 48));

  // 3. o_lat @ W_UV[h], bf16-rounded into the output tile (sm.a, free again afterwards).
  __nv_bfloat16* so = sm.a;  // [kTM, kOutStride]
  if constexpr (kWgmma) {
    w_uv_product_wgmma<kTM, kStages>(smem_addr(sm.a), a_by_tma ? a_full : 0u, sw, w_full, &maps.w,
                                     h, so, warp, lane);
  } else {
    w_uv_product_mma_sync<kTM, kStages>(smem_addr(sm.a), sw, w_full, &maps.w, h, so, warp, lane);
  }
  __syncthreads();
  COMBINE_STAMP(7);
  // 4. The epilogue, row by row.
  for (int r = warp; r < kTM; r += kCombineThreads / 32) {
    const int t = t0 + r;
    const uint2 v = *reinterpret_cast<const uint2*>(so + r * kOutStride + 4 * lane);
    const float x[4] = {bf16_lo(v.x), bf16_hi(v.x), bf16_lo(v.y), bf16_hi(v.y)};
    epi.row(x, t, h, lane, t < n);
  }
  COMBINE_STAMP(8);
}

// Unfused baseline (and the premerge): the merged latent output of every real token as bf16 in
// ws.o_lat (tokens done by one part already wrote theirs). CTA (x, h) takes head h of tokens x,
// x + gridDim.x, ... (up to kLatentTokensPerCta of them): it finds which are split in one round
// of loads by all its threads, then merges only those; warp w owns dims 64w .. 64w+63.
inline constexpr int kLatentTokensPerCta = 64;
template <int kThreads>
__global__ void __launch_bounds__(kThreads)
    mla_combine_latent_kernel(MlaDecodeProblem p, MlaWorkspace ws) {
  static_assert(kThreads >= kLatentTokensPerCta, "one thread a token for the split check");
  __shared__ SplitRow s_rows[kLatentTokensPerCta];
  __shared__ int s_split[kLatentTokensPerCta];
  __shared__ int s_count;
  const int warp = threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  const int h = blockIdx.y;
  pdl_wait();
  pdl_launch_dependents();  // the combine after this kernel may start its W_UV loads
  const int n = real_tokens(p);
  const int per_part = ws.sched[0];
  if (threadIdx.x == 0) s_count = 0;
  __syncthreads();
  const int t_mine = blockIdx.x + static_cast<int>(threadIdx.x) * gridDim.x;
  if (threadIdx.x < kLatentTokensPerCta && t_mine < n) {
    const SplitRow sr = split_row(p, ws, per_part, t_mine);
    if (sr.count != 1) {  // count 1: the attention wrote it
      const int k = atomicAdd(&s_count, 1);
      s_rows[k] = sr;
      s_split[k] = t_mine;
    }
  }
  __syncthreads();
  const int d0 = 64 * warp + 2 * lane;
  for (int k = 0; k < s_count; ++k) {
    const SplitRow row[1] = {s_rows[k]};
    float2 v[1];
    merge_split_rows<1, 16>(p, ws, per_part, row, h, d0, lane, v);
    *reinterpret_cast<uint32_t*>(
        ws.o_lat + (static_cast<int64_t>(s_split[k]) * p.num_heads + h) * kMlaLatent + d0) =
        pack_bf16x2(v[0].x, v[0].y);
  }
}

// SMs of the current device (the combine launchers size their grids by it).
inline int current_device_sms() {
  int device = 0;
  int num_sms = 0;
  MLAFUSE_CUDA_CHECK(cudaGetDevice(&device));
  MLAFUSE_CUDA_CHECK(cudaDeviceGetAttribute(&num_sms, cudaDevAttrMultiProcessorCount, device));
  return num_sms;
}

// The latent merge's launch: a CTA per (token, head) up to ~4 CTAs a SM; beyond, a token stride
// that keeps that many, each checking its tokens at once. A CTA per (token, head) at B = 128,
// H = 128 is 16384 CTAs, which cost ~30 us even when no query is split; 8 heads a CTA made split
// merges 8-20 us slower (PERF.md, run 46), and ~16 CTAs a SM was up to 6 us slower (run 47).
inline void launch_combine_latent(const MlaDecodeProblem& p, const MlaWorkspace& ws,
                                  cudaStream_t stream, int num_sms) {
  const int64_t t = p.num_queries;
  const int64_t wave = int64_t{4} * num_sms;  // two CTAs of 256 threads a SM, two waves
  const int64_t x = t * p.num_heads <= wave
                        ? t
                        : std::max(ceil_div(t, kLatentTokensPerCta),
                                   std::min(t, ceil_div(wave, static_cast<int64_t>(p.num_heads))));
  const dim3 grid(static_cast<unsigned>(x), static_cast<unsigned>(p.num_heads));
  launch_pdl("mla_combine_latent_kernel", mla_combine_latent_kernel<kCombineThreads>, grid,
             dim3(kCombineThreads), 0, stream, p, ws);
}

// Host side: launches one CTA per (token tile, head). NVFP4's grid reaches round_up(T_pad, 128)
// rows for its scale padding.
template <class Epi, int kTM, int kStages>
void launch_combine_up_quant_tile(const MlaDecodeProblem& p, const MlaWorkspace& ws,
                                  const MlaOutputParams& op, cudaStream_t stream, int num_sms) {
  const int64_t rows =
      Epi::kKind == MlaEpilogue::kNvfp4 ? round_up(p.num_queries, 128) : p.num_queries;
  const dim3 grid(static_cast<unsigned>(ceil_div(rows, kTM)), static_cast<unsigned>(p.num_heads));
  MLAFUSE_CHECK(ws.num_parts >= 1 && ws.num_parts <= kMlaMaxParts,
                "mla_combine_up_quant: ", ws.num_parts,
                " split-KV parts; the merge plan holds 1 to ", kMlaMaxParts);
  // The SW128 tiles: + the 1024-byte alignment.
  const size_t smem = sizeof(CombineUpSmem<kTM, kStages>) + 1024;
  CombineMaps maps{};
  maps.w = tma::make_map_2d_bf16_sw128(p.w_uv, static_cast<uint64_t>(p.num_heads) * kMlaLatent,
                                       kMlaVDim, kMlaVDim * 2, kWChunkRows, "w_uv");
  if constexpr (kCombineWgmma<kTM, kStages>) {
    const uint64_t lat = static_cast<uint64_t>(p.num_heads) * kMlaLatent;
    maps.o_lat = tma::make_map_2d_bf16_sw128(ws.o_lat, static_cast<uint64_t>(p.num_queries), lat,
                                             lat * 2, kTM, "o_lat");
  }
  auto kernel = mla_combine_up_quant_kernel<Epi, kTM, kStages>;
  MLAFUSE_CUDA_CHECK(
      cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
  // A grid of at most half the SMs (few tokens, few heads: B = 16, H = 16 is 16 CTAs) would merge
  // every split on those few SMs: the latent merge then runs first as its own kernel, a CTA a
  // (token, head), and the combine only copies. Not for one token, whose merge is one CTA a
  // head either way.
  // The same when the tile's merge plan might not fit its shared-memory lists.
  const bool premerge =
      (p.num_queries >= 4 && ceil_div(p.num_queries, kTM) * p.num_heads * 2 <= num_sms) ||
      !merge_plan_fits(kTM, p, ws.num_parts);
  if (premerge) launch_combine_latent(p, ws, stream, num_sms);
#ifdef MLAFUSE_SEESAW_STAMPS
  note_combine_launch(grid);
#endif
  launch_pdl("mla_combine_up_quant_kernel", kernel, grid, dim3(kCombineThreads), smem, stream, p,
             ws, op, maps, premerge);
}

// The launch shape: the smallest token tile of 16/32/64 rows whose grid (tiles x heads) fits in
// one wave of one CTA per SM (W_UV[h] whole in shared memory), so a small grid (H = 16, or few
// tokens) spreads over more SMs. When even 64-row tiles take more than one wave: 64 rows (each
// W_UV[h] read the fewest times; the tiles of a head are adjacent in the grid, so they share it
// through L2) with W_UV streamed through a ring of two chunks, two CTAs per SM, so one CTA's
// merge overlaps another's loads and MMA. Returns kTM, and sets *stages.
inline int combine_launch_shape(int64_t rows, int num_heads, int num_sms, int* stages) {
  *stages = kWChunks;
  for (const int tm : {16, 32, 64}) {
    if (ceil_div(rows, tm) * num_heads <= num_sms) return tm;
  }
  *stages = 2;
  return 64;
}

template <class Epi>
void launch_combine_up_quant(const MlaDecodeProblem& p, const MlaWorkspace& ws,
                             const MlaOutputParams& op, cudaStream_t stream) {
  const int num_sms = current_device_sms();
  int stages = kWChunks;
  switch (combine_launch_shape(p.num_queries, p.num_heads, num_sms, &stages)) {
    case 16:
      launch_combine_up_quant_tile<Epi, 16, kWChunks>(p, ws, op, stream, num_sms);
      break;
    case 32:
      launch_combine_up_quant_tile<Epi, 32, kWChunks>(p, ws, op, stream, num_sms);
      break;
    default:
      if (stages == 2) {
        launch_combine_up_quant_tile<Epi, 64, 2>(p, ws, op, stream, num_sms);
      } else {
        launch_combine_up_quant_tile<Epi, 64, kWChunks>(p, ws, op, stream, num_sms);
      }
      break;
  }
}

}  // namespace mlafuse::cuda::mla
