// mla_decode_combine_up_quant: one CTA = kTM query tokens x one head h. (Where that grid would
// leave most SMs idle, mla_combine_latent_kernel merges the splits first and step 2 only copies.)
//   1. W_UV[h] ([512, 128] bf16, 128 KB) streams into shared memory with cp.async, and so do the
//      bf16 latent rows of tokens done by one split-KV part (already final: copied as they are),
//      while
//   2. the warps merge the split-KV results of the other tokens in f32 (log-sum-exp weights) and
//      round the latent output to bf16 (the A tile [kTM, 512] in shared memory);
//   3. out[kTM, 128] = o_lat @ W_UV[h] on the tensor cores with wgmma (m64n128k16, f32
//      accumulate): warpgroup g owns rows 64g .. 64g + 63, both operands read from shared memory
//      once per warpgroup;
//   4. the f32 result is rounded to bf16 (the value the unfused graph's quant op would read) and
//      each warp hands its 16 rows, straight from the accumulator registers, to the epilogue
//      functor (`quad_rows`): bf16 store, static FP8, group FP8 (one head's 128 outputs are one
//      group of 128 or two of 64), or NVFP4 (eight 16-element blocks).
// Every functor quantizes with the shared quant_epilogue.cuh, so the codes and scales equal the
// standalone quant kernels' on this kernel's own bf16 output, bit for bit. Tokens t >= n are not
// written (NVFP4 zeroes its scale padding rows up to round_up(n, 128), SPEC 6).
#pragma once

#include <cuda_bf16.h>

#include <cstdint>

#include "backends/cuda/device_util.cuh"
#include "backends/cuda/launch_pdl.h"
#include "backends/cuda/mla_decode.h"
#include "backends/cuda/mla_decode_plan.cuh"
#include "backends/cuda/mla_mma.cuh"
#include "backends/cuda/mla_wgmma.cuh"
#include "backends/cuda/quant_epilogue.cuh"
#include "mlafuse/backends/cuda/cuda_check.h"
#include "mlafuse/core/error.h"
#include "mlafuse/quant/scale_layout.h"

namespace mlafuse::cuda::mla {

inline constexpr int kCombineThreads = 256;
// The split-KV parts holding one query's tiles: parts first .. first + count - 1 (count 0: no KV).
struct SplitRow {
  int first;
  int count;
  int cum;  // the query's q_cum, which gives each split's partial slot (partial_slot)
};

__device__ __forceinline__ SplitRow split_row(const MlaWorkspace& ws, int per_part, int t) {
  const QuerySplits sp = query_splits(ws, per_part, t);
  return SplitRow{sp.first, sp.tiles > 0 ? sp.last - sp.first + 1 : 0, ws.q_cum[t]};
}


// W_UV[h] moves in chunks of 64 latent rows (16 KB), which are also the A tile's SW128 blocks:
// chunk k multiplies latent columns 64k .. 64k + 63.
inline constexpr int kWChunkRows = 64;
inline constexpr int kWChunks = kMlaLatent / kWChunkRows;
inline constexpr uint32_t kWChunkBytes = kWChunkRows * kMlaVDim * 2;

// The shape of one combine CTA of kTM tokens. wgmma's M is 64 rows a warpgroup, so the A tile has
// at least 64 rows (rows past the tile's real tokens are never stored, whatever they hold);
// warpgroup g multiplies rows 64g .. 64g + 63. W_UV[h] is whole in shared memory (all its chunks
// in flight from the start) except beside a 128-row A tile, where a ring of four chunks keeps
// the CTA within one SM's shared memory.
template <int kTM>
struct CombineShape {
  static_assert(kTM == 16 || kTM == 32 || kTM == 64 || kTM == 128, "combine tiles: 16 to 128 rows");
  static constexpr int kARows = kTM < 64 ? 64 : kTM;
  static constexpr int kMathWarpgroups = kARows / 64;
  static constexpr int kStages = kTM == 128 ? 4 : kWChunks;
  static constexpr int kListWarps = kARows / 32;  // warps that list the rows that merge
  // Split entries of one tile: at most kTM + num_parts (each part boundary splits one token once
  // more); the host keeps num_parts <= kMlaMaxParts.
  static constexpr int kMaxMergeEntries = kTM + kMlaMaxParts;
};
// Epilogue staging of one warp (16 rows of up to 256 bytes, quad_stage_at), carved from the W_UV
// buffers once the MMA is done.
inline constexpr uint32_t kWarpStageBytes = 4096;

template <int kTM>
struct CombineUpSmem {
  using Shape = CombineShape<kTM>;
  // Merged o_lat [kARows, 512] bf16 as 8 SW128 blocks [kARows, 64] (sw128_offset): wgmma's
  // K-major A operand. 1024-byte aligned (the kernel aligns the base), as is every block.
  __nv_bfloat16 a[Shape::kARows * kMlaLatent];
  // W_UV[h] chunks: chunk [64 latent rows, 128] as two SW128 blocks [64, 64] (columns 0-63,
  // 64-127): the MN-major B operand. After the MMA, the warps' epilogue staging.
  __nv_bfloat16 w[Shape::kStages * kWChunkRows * kMlaVDim];
  SplitRow rows[kTM];       // each row's split-KV parts
  int merge_rows[kTM];      // real rows with 0 or >= 2 splits (merged or zeroed by the warps)
  int merge_off[kTM + 1];   // merge_rows[i]'s split entries: [merge_off[i], merge_off[i + 1])
  uint32_t ballot[Shape::kListWarps];    // rows 32w .. 32w + 31 that merge
  int split_total[Shape::kListWarps];    // their splits
  int ent_slot[Shape::kMaxMergeEntries];  // an entry's partial slot, and its log-sum-exp, then
  float ent_w[Shape::kMaxMergeEntries];   // weight
};
static_assert(8 * kWarpStageBytes <= CombineShape<128>::kStages * kWChunkBytes,
              "the epilogue staging fits in the W_UV buffers");

// ---- epilogue functors: `quad_rows` gets a warp's 16 rows of head h, bf16-rounded, in the wgmma
// accumulator layout: lane l holds local rows l/4 and l/4 + 8 (r = 0, 1), columns 8j + 2(l%4) + e
// at x[r][2j + e] (j < 16). A group then lives in one quad (4 lanes), so the 16 rows reduce side
// by side instead of one after another. Rows lr < valid (tokens t0 + lr) are written. The output
// passes through `stage`, the warp's 16 rows of shared memory (16-byte units XOR-swizzled by row:
// no bank conflicts either way; bytes 128-255 of a row in a second half kStageHalf further on),
// so the global stores are whole rows of 16-byte units. The bf16 functor also takes one row at a
// time (`row`, the prefill kernel's bf16 path): lane i holds elements 4i .. 4i+3.
inline constexpr uint32_t kStageHalf = 16 * 128;
__device__ __forceinline__ uint32_t quad_stage_at(uint32_t stage, int lr, int byte) {
  return stage + (byte >> 7) * kStageHalf + lr * 128 +
         (((((byte >> 4) & 7) ^ (lr & 7)) << 4) | (byte & 15));
}
__device__ __forceinline__ void st_shared_u32(uint32_t addr, uint32_t v) {
  asm volatile("st.shared.u32 [%0], %1;\n" ::"r"(addr), "r"(v) : "memory");
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
  static_assert(kRowBytes % 16 == 0 && kRowBytes <= 256, "a staged row is at most 256 bytes");
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
                 : "r"(quad_stage_at(stage, lr, 16 * c)));
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
  // 256 bytes a row: the stage needs both halves (2 * kStageHalf bytes).
  __device__ __forceinline__ void quad_rows(const float (&x)[2][32], int64_t t0, int valid, int h,
                                            int lane, uint32_t stage) const {
    const int q = lane % 4;
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      const int lr = lane / 4 + 8 * r;
#pragma unroll
      for (int j = 0; j < 16; ++j) {  // columns 8j + 2q, +1: bytes 16j + 4q .. + 3
        st_shared_u32(quad_stage_at(stage, lr, 16 * j + 4 * q),
                      pack_bf16x2(x[r][2 * j], x[r][2 * j + 1]));
      }
    }
    quad_stage_flush<kMlaVDim * 2>(stage, valid, lane, [&](int lr) {
      return reinterpret_cast<uint8_t*>(out + (t0 + lr) * dim + h * kMlaVDim);
    });
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
          quad_stage_fp8x4(stage, lr, j, q,
                           qe::quant_fp8x4(x[r][2 * j], x[r][2 * j + 1], x[r][2 * j + 2],
                                           x[r][2 * j + 3], sc));
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

__device__ __forceinline__ float2 load_partial(const MlaDecodeProblem& p, const MlaWorkspace& ws,
                                               int slot, int h, int d0) {
  return *reinterpret_cast<const float2*>(
      ws.o_part + (static_cast<int64_t>(slot) * p.num_heads + h) * kMlaLatent + d0);
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
                                                 int per_part, const SplitRow (&rows)[kRows],
                                                 int h, int d0, int lane, float2 (&res)[kRows]) {
  static_assert(kPre >= 1 && kPre <= 32, "prefetch within the first 32 splits");
  auto slot_of = [&](const SplitRow& r, int k) { return partial_slot(r.first + k, per_part, r.cum); };
  auto lse_of = [&](const SplitRow& r, int k) {
    return ws.lse_part[static_cast<int64_t>(slot_of(r, k)) * p.num_heads + h];
  };
  float lse0[kRows];
  float2 x0[kRows][kPre];
#pragma unroll
  for (int i = 0; i < kRows; ++i) {
    lse0[i] = lane < rows[i].count ? lse_of(rows[i], lane) : -INFINITY;
#pragma unroll
    for (int j = 0; j < kPre; ++j) {
      x0[i][j] = j < rows[i].count ? load_partial(p, ws, slot_of(rows[i], j), h, d0)
                                   : make_float2(0.0f, 0.0f);
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
          v[j] = e < nk ? load_partial(p, ws, slot_of(r, base + e), h, d0) : make_float2(0.0f, 0.0f);
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

// Waits until at most `pending` (warp-uniform, 0..7) cp.async groups of the thread are in flight.
__device__ __forceinline__ void cp_async_wait_dyn(int pending) {
  switch (pending) {
    case 0:
      cp_async_wait<0>();
      break;
    case 1:
      cp_async_wait<1>();
      break;
    case 2:
      cp_async_wait<2>();
      break;
    case 3:
      cp_async_wait<3>();
      break;
    case 4:
      cp_async_wait<4>();
      break;
    case 5:
      cp_async_wait<5>();
      break;
    case 6:
      cp_async_wait<6>();
      break;
    default:
      cp_async_wait<7>();
      break;
  }
}

// Chunk k of W_UV[h] ([64, 128] bf16, rows 64k .. 64k+63) into the chunk buffer at `dst`: the
// two column halves as SW128 blocks [64, 64].
__device__ __forceinline__ void load_w_chunk(uint32_t dst, const __nv_bfloat16* gw, int k) {
  const __nv_bfloat16* src = gw + static_cast<int64_t>(k) * kWChunkRows * kMlaVDim;
  for (int i = threadIdx.x; i < kWChunkRows * kMlaVDim / 8; i += kCombineThreads) {
    const int r = i / 16;
    const int c = i % 16;
    cp_async16(dst + sw128_offset(kWChunkRows, r, c), src + r * kMlaVDim + c * 8);
  }
}

template <class Epi, int kTM>
__global__ void __launch_bounds__(kCombineThreads, 1)
    mla_combine_up_quant_kernel(MlaDecodeProblem p, MlaWorkspace ws, MlaOutputParams op,
                                bool premerged) {
  using Shape = CombineShape<kTM>;
  using Smem = CombineUpSmem<kTM>;
  constexpr int kStages = Shape::kStages;
  extern __shared__ __align__(16) uint8_t smem_raw[];
  const uint32_t raw_addr = smem_addr(smem_raw);
  Smem& sm =
      *reinterpret_cast<Smem*>(smem_raw + (((raw_addr + 1023u) & ~1023u) - raw_addr));
  const int t0 = blockIdx.x * kTM;
  const int h = blockIdx.y;
  const int warp = threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  const int n = real_tokens(p);

  Epi epi;
  epi.init(op, p.num_heads, p.num_queries);
  epi.pad(t0, kTM, n, h);
  if (t0 >= n) {  // uniform over the CTA: nothing real in this tile
    pdl_wait();
    return;
  }

  // 1. The first kStages chunks of W_UV[h] -> shared memory (all of it but beside 128 rows).
  const __nv_bfloat16* gw = p.w_uv + static_cast<int64_t>(h) * kMlaLatent * kMlaVDim;
  const uint32_t sw = smem_addr(sm.w);
#pragma unroll
  for (int k = 0; k < kStages; ++k) load_w_chunk(sw + k * kWChunkBytes, gw, k);
  cp_async_commit();
  // The W_UV loads above overlap the attention's tail (programmatic launch); its results from here.
  pdl_wait();

  // 2. Merge the splits of each token in f32 and round to bf16. Every row's splits follow from
  //    its q_cum in closed form (partial_slot), so one round of loads gives them all.
  const int per_part = ws.sched[0];
  const int rows = min(kTM, n - t0);
  // Warps 0 .. kListWarps - 1 list the rows that merge. Every thread passes both barriers (a
  // named barrier of the listing warps alone left racecheck reporting hazards across the later
  // __syncthreads(): docs/kernels/mla_decode.md, "Sanitizers").
  constexpr int kListWarps = Shape::kListWarps;
  const int r = threadIdx.x;
  SplitRow sr{0, 0, 0};
  bool merge = false;
  int splits = 0;
  uint32_t bal = 0;
  if (r < 32 * kListWarps) {
    if (r < rows) sr = split_row(ws, per_part, t0 + r);
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
  __syncthreads();  // every listing warp's ballot and total is in
  if (r < 32 * kListWarps) {
    int pos = __popc(bal & ((1u << lane) - 1u));
    int end = splits;
    for (int w = 0; w < warp; ++w) {
      pos += __popc(sm.ballot[w]);
      end += sm.split_total[w];
    }
    if (merge) {
      sm.merge_rows[pos] = r;
      sm.merge_off[pos + 1] = end;
    }
    if (r == 0) sm.merge_off[0] = 0;
  }
  __syncthreads();
  int num_merge = 0;
#pragma unroll
  for (int w = 0; w < kListWarps; ++w) num_merge += __popc(sm.ballot[w]);
  // Single-split rows: the attention already wrote their bf16 latent output; copy it into the
  // swizzled A tile with cp.async (whole tile in flight at once, overlapping the W_UV load and
  // the merge below). Row r, 16-byte chunk c of 64.
  {
    const uint32_t sa = smem_addr(sm.a);
    for (int i = threadIdx.x; i < kTM * (kMlaLatent / 8); i += kCombineThreads) {
      const int r = i / (kMlaLatent / 8);
      const int c = i % (kMlaLatent / 8);
      if (!(premerged ? r < rows : sm.rows[r].count == 1)) continue;
      cp_async16(sa + sw128_offset(Shape::kARows, r, c),
                 ws.o_lat + (static_cast<int64_t>(t0 + r) * p.num_heads + h) * kMlaLatent + c * 8);
    }
    cp_async_commit();
  }
  // The other rows: warp w owns latent dims 64w .. 64w+63 of every row (lane l: 64w + 2l, +1), so
  // even a single token keeps all eight warps loading.
  const int d0 = 64 * warp + 2 * lane;
  auto store_row = [&](int r, float2 v) {
    st_shared_u32(smem_addr(sm.a) + sw128_offset(Shape::kARows, r, d0 / 8) + (d0 % 8) * 2,
                  pack_bf16x2(v.x, v.y));
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
      const int slot = partial_slot(sr.first + (e - sm.merge_off[lo]), per_part, sr.cum);
      sm.ent_slot[e] = slot;
      sm.ent_w[e] = ws.lse_part[static_cast<int64_t>(slot) * p.num_heads + h];
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
    int row = 0;  // the merge row of the next entry to add
    float2 v = make_float2(0.0f, 0.0f);
    for (int e0 = 0; e0 < entries; e0 += 16) {
      float2 y[16];
      float wy[16];
#pragma unroll
      for (int j = 0; j < 16; ++j) {
        const int e = e0 + j;
        wy[j] = e < entries ? sm.ent_w[e] : 0.0f;
        y[j] = e < entries ? load_partial(p, ws, sm.ent_slot[e], h, d0) : make_float2(0.0f, 0.0f);
      }
#pragma unroll
      for (int j = 0; j < 16; ++j) {
        const int e = e0 + j;
        if (e >= entries) break;  // uniform over the CTA
        while (e >= sm.merge_off[row + 1]) {  // rows before e's are complete (or empty: zero)
          store_row(sm.merge_rows[row], v);
          v = make_float2(0.0f, 0.0f);
          ++row;
        }
        v.x += wy[j] * y[j].x;
        v.y += wy[j] * y[j].y;
      }
    }
    for (; row < num_merge; ++row) {  // the last row, and empty rows after it
      store_row(sm.merge_rows[row], v);
      v = make_float2(0.0f, 0.0f);
    }
  }
  cp_async_wait<0>();
  fence_proxy_async();  // the A tile and W_UV chunks (cp.async, st.shared) reach wgmma's proxy
  __syncthreads();

  // 3. [kARows, 512] x [512, 128] on wgmma: warpgroup g multiplies A rows 64g .. 64g + 63 by each
  //    W_UV chunk as it lands (4 k-steps a chunk, one commit group). With a ring of four, chunk
  //    k + 3 refills chunk k - 1's buffer once both warpgroups' MMAs on it are done (wait<1>
  //    keeps chunk k's in flight), and chunk k is waited for at the top of step k.
  const int wg = threadIdx.x / 128;
  const bool math = Shape::kMathWarpgroups == 2 || wg == 0;  // uniform over each warpgroup
  constexpr uint32_t kABlockBytes = Shape::kARows * 128;
  const uint32_t sa_wg = smem_addr(sm.a) + wg * 64 * 128;
  float acc[64];
#pragma unroll
  for (int k = 0; k < kWChunks; ++k) {
    if (k >= kStages) {
      cp_async_wait_dyn(min(k + kStages - 2, kWChunks - 1) - k);
      fence_proxy_async();
      __syncthreads();
    }
    if (math) {
      const uint32_t swk = sw + (k % kStages) * kWChunkBytes;
      wgmma_fence();
#pragma unroll
      for (int kl = 0; kl < kWChunkRows / 16; ++kl) {
        wgmma_m64n128k16_ss<1>(acc, desc_kmajor(sa_wg + k * kABlockBytes + kl * 32),
                               desc_mnmajor(swk + kl * 16 * 128, kWChunkBytes / 2),
                               k > 0 || kl > 0);
      }
      wgmma_commit();
    }
    if constexpr (kStages < kWChunks) {
      if (k >= 1 && k - 1 + kStages < kWChunks) {
        if (math) wgmma_wait<1>();
        __syncthreads();  // chunk k - 1's buffer is free
        load_w_chunk(sw + ((k - 1) % kStages) * kWChunkBytes, gw, k - 1 + kStages);
        cp_async_commit();
      }
    }
  }
  if (math) {
    wgmma_wait<0>();
    fence_regs(acc);
  }
  __syncthreads();  // no MMA reads W_UV any more: its buffers become the epilogue staging

  // 4. Each warp rounds its 16 rows to bf16 in registers and hands them to the epilogue.
  if (math) {
    const int lr0 = 64 * wg + 16 * (warp % 4);  // the warp's first row in the tile
    const int valid = min(16, min(kTM, n - t0) - lr0);
    if (valid > 0) {
      float x[2][32];
#pragma unroll
      for (int j = 0; j < 16; ++j) {
#pragma unroll
        for (int r = 0; r < 2; ++r) {
          const uint32_t v = pack_bf16x2(acc[4 * j + 2 * r], acc[4 * j + 2 * r + 1]);
          x[r][2 * j] = bf16_lo(v);
          x[r][2 * j + 1] = bf16_hi(v);
        }
      }
      epi.quad_rows(x, static_cast<int64_t>(t0) + lr0, valid, h, lane,
                    sw + warp * kWarpStageBytes);
    }
  }
}

// Unfused baseline: the merged latent output of every real token as bf16 in ws.o_lat (tokens done
// by one part already wrote theirs). One CTA per (token, head); warp w owns dims 64w .. 64w+63.
template <int kThreads>
__global__ void __launch_bounds__(kThreads)
    mla_combine_latent_kernel(MlaDecodeProblem p, MlaWorkspace ws) {
  const int warp = threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  const int t = blockIdx.x;
  const int h = blockIdx.y;
  pdl_wait();
  pdl_launch_dependents();  // the combine after this kernel may start its W_UV loads
  if (t >= real_tokens(p)) return;
  const int per_part = ws.sched[0];
  const SplitRow row[1] = {split_row(ws, per_part, t)};
  if (row[0].count == 1) return;  // the attention wrote it
  float2 v[1];
  merge_split_rows<1, 16>(p, ws, per_part, row, h, 64 * warp + 2 * lane, lane, v);
  *reinterpret_cast<uint32_t*>(ws.o_lat + (static_cast<int64_t>(t) * p.num_heads + h) * kMlaLatent +
                               64 * warp + 2 * lane) = pack_bf16x2(v[0].x, v[0].y);
}

// Host side: launches one CTA per (token tile, head). NVFP4's grid reaches round_up(T_pad, 128)
// rows for its scale padding.
template <class Epi, int kTM>
void launch_combine_up_quant_tile(const MlaDecodeProblem& p, const MlaWorkspace& ws,
                                  const MlaOutputParams& op, cudaStream_t stream, int num_sms) {
  const int64_t rows =
      Epi::kKind == MlaEpilogue::kNvfp4 ? round_up(p.num_queries, 128) : p.num_queries;
  const dim3 grid(static_cast<unsigned>(ceil_div(rows, kTM)), static_cast<unsigned>(p.num_heads));
  MLAFUSE_CHECK(ws.num_parts >= 1 && ws.num_parts <= kMlaMaxParts, "mla_combine_up_quant: ",
                ws.num_parts, " split-KV parts; the merge plan holds 1 to ", kMlaMaxParts);
  const size_t smem = sizeof(CombineUpSmem<kTM>) + 1024;  // + the 1024-byte alignment
  auto kernel = mla_combine_up_quant_kernel<Epi, kTM>;
  MLAFUSE_CUDA_CHECK(
      cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
  // A grid of at most half the SMs (few tokens, few heads: B = 16, H = 16 is 16 CTAs) would merge
  // every split on those few SMs: the latent merge then runs first as its own kernel, a CTA a
  // (token, head), and the combine only copies. Not for one token, whose merge is one CTA a
  // head either way.
  const bool premerge =
      p.num_queries >= 4 && ceil_div(p.num_queries, kTM) * p.num_heads * 2 <= num_sms;
  if (premerge) {
    const dim3 latent_grid(static_cast<unsigned>(p.num_queries), static_cast<unsigned>(p.num_heads));
    launch_pdl("mla_combine_latent_kernel", mla_combine_latent_kernel<kCombineThreads>,
               latent_grid, dim3(kCombineThreads), 0, stream, p, ws);
  }
  launch_pdl("mla_combine_up_quant_kernel", kernel, grid, dim3(kCombineThreads), smem, stream, p,
             ws, op, premerge);
}

// The launch shape: the smallest token tile of 16/32/64 rows whose grid (tiles x heads) fits in
// one wave of one CTA per SM, so a small grid (H = 16, or few tokens) spreads over more SMs; when
// even 64-row tiles take more than one wave, 128 rows (W_UV[h] read the fewest times, streamed
// through a ring of four chunks).
inline int combine_launch_shape(int64_t rows, int num_heads, int num_sms) {
  for (const int tm : {16, 32, 64}) {
    if (ceil_div(rows, tm) * num_heads <= num_sms) return tm;
  }
  return 128;
}

template <class Epi>
void launch_combine_up_quant(const MlaDecodeProblem& p, const MlaWorkspace& ws,
                             const MlaOutputParams& op, cudaStream_t stream) {
  int device = 0;
  int num_sms = 0;
  MLAFUSE_CUDA_CHECK(cudaGetDevice(&device));
  MLAFUSE_CUDA_CHECK(cudaDeviceGetAttribute(&num_sms, cudaDevAttrMultiProcessorCount, device));
  switch (combine_launch_shape(p.num_queries, p.num_heads, num_sms)) {
    case 16:
      launch_combine_up_quant_tile<Epi, 16>(p, ws, op, stream, num_sms);
      break;
    case 32:
      launch_combine_up_quant_tile<Epi, 32>(p, ws, op, stream, num_sms);
      break;
    case 64:
      launch_combine_up_quant_tile<Epi, 64>(p, ws, op, stream, num_sms);
      break;
    default:
      launch_combine_up_quant_tile<Epi, 128>(p, ws, op, stream, num_sms);
      break;
  }
}

}  // namespace mlafuse::cuda::mla
