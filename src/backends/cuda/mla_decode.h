// MLA decode on the GPU: the host API of the decode kernels (launchers in mla_*.cu, device code in
// mla_*.cuh). Kernels see only these plain structs; the op runner (mla_attention_op.cc) fills them
// from an OpCall. Dimensions are DeepSeek's (SPEC 4): latent L = 512, RoPE R = 64, V = 128,
// page 64.
//
// The chain for one batch of queries (decode tokens, and prefill tokens run through the same
// absorbed path with their own causal lengths):
//   launch_mla_decode_splitkv     the split-KV schedule (per-query KV length / block-table row,
//                                 cost prefix, each part's first segment), computed on the device
//                                 (CUDA-graph capturable) by the attention's CTAs or, for large
//                                 calls, by launch_mla_plan first; then the tensor-core attention
//                                 of H heads over the paged latent cache; bf16 latent output for
//                                 queries done by one CTA, f32 partials and log-sum-exp for split
//                                 queries
//   launch_mla_combine_up_quant   merge splits, o_lat (bf16) @ W_UV[h] on tensor cores, bf16 round,
//                                 then the output epilogue (bf16, FP8 static / group, NVFP4)
// The unfused baseline replaces the last step by launch_mla_combine_latent + a cuBLAS batched GEMM
// (launch_mla_up_proj_cublas) + the standalone quant kernel.
#pragma once

#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "mlafuse/core/mla_config.h"
#include "mlafuse/quant/output_quant.h"

namespace mlafuse::cuda {

// The kernels' int aliases of DeepSeek's MLA dimensions (core/mla_config.h).
inline constexpr int kMlaLatent = static_cast<int>(deepseek_mla::kKvLoraRank);  // L
inline constexpr int kMlaRope = static_cast<int>(deepseek_mla::kQkRopeDim);     // R
// L + R: one cached token, and one absorbed query head
inline constexpr int kMlaRow = static_cast<int>(deepseek_mla::kCacheRow);
inline constexpr int kMlaNope = static_cast<int>(deepseek_mla::kQkNopeDim);  // P
inline constexpr int kMlaQDim = static_cast<int>(deepseek_mla::kQkHeadDim);  // P + R
inline constexpr int kMlaVDim = static_cast<int>(deepseek_mla::kVHeadDim);   // V
// Tokens per KV tile of the kernels (the default page).
inline constexpr int kMlaPage = static_cast<int>(deepseek_mla::kPageSize);
// Split-KV cost of one query beyond its KV tiles (Q load, output write, combine), in tiles.
inline constexpr int kMlaQueryOverheadTiles = 4;
// Batches of at most kMlaFewQueries queries with KV run on about half the split-KV parts, with
// at most kMlaSmallPartCost cost units a part (mla_decode_plan.cuh).
inline constexpr int kMlaFewQueries = 4;
inline constexpr int kMlaSmallPartCost = 8;
// Most query tokens of one attention unit: at H = 16 and 32 a CTA's 64 query rows can hold the
// heads of 64 / H consecutive tokens of one sequence (q_cat rows t*H + h are adjacent), which then
// read their sequence's KV once (multi-token decodes, prefill chunks); H = 64 and 128: one token.
__host__ __device__ constexpr int mla_max_unit_tokens(int num_heads) {
  return num_heads < 64 ? 64 / num_heads : 1;
}
// Most split-KV parts of one call (a caller's num_kv_splits): the combine's per-tile merge plan
// holds 64 rows + one entry a part (mla_combine_up_quant.cuh, kMaxMergeEntries).
inline constexpr int kMlaMaxParts = 960;

struct MlaDecodeProblem {
  int num_heads = 0;                           // H in {16, 32, 64, 128}
  int num_queries = 0;                         // T_pad: rows of q_cat and of the outputs
  int num_tokens = 0;                          // n, used when num_tokens_device is null
  const int32_t* num_tokens_device = nullptr;  // [1] real token count n <= T_pad, or null
  float softmax_scale = 0.0f;
  // Attention metadata (device). Query t < n belongs to the sequence s with
  // query_start_loc[s] <= t < query_start_loc[s+1] and sees the first
  // seq_lens[s] - (query_start_loc[s+1] - 1 - t) cached tokens (decode: all of them).
  int num_seqs = 0;
  const int32_t* seq_lens = nullptr;         // [num_seqs]
  const int32_t* query_start_loc = nullptr;  // [num_seqs + 1]
  const int32_t* block_table = nullptr;      // [num_seqs, block_table_stride]
  int block_table_stride = 0;
  int64_t num_pages = 0;
  int page_size = kMlaPage;                 // tokens a cache page: 16, 32, 64 or 128
  const __nv_bfloat16* q_cat = nullptr;     // [T_pad, H, 576]: absorbed q_nope | q_pe
  const __nv_bfloat16* kv_cache = nullptr;  // [num_pages, page_size, 576]
  const __nv_bfloat16* w_uv = nullptr;      // [H, 512, 128]
  // The caller's promise, fixed for every replay of a CUDA graph, that each sequence holds at most
  // one of this call's query tokens: the H = 16 / 32 kernels then run without token units, whose
  // 64-row plan costs a one-token batch ~5 us (PERF.md runs 39-40). Any batch still gets correct
  // results either way; only the schedule, hence the rounding of split-KV merges, differs.
  bool one_token_per_seq = false;
};

// Query tokens of one attention unit in this call. It depends on H and the caller's static
// one-token promise, never on the batch's device metadata: a CUDA-graph replay of a padded batch
// and an eager run of the same tokens must give the same schedule, hence the same bits (gating it
// on T_pad > num_seqs broke that, PERF.md run 38).
__host__ __device__ inline int mla_unit_tokens(const MlaDecodeProblem& p) {
  return p.one_token_per_seq ? 1 : mla_max_unit_tokens(p.num_heads);
}

// Scratch of one call, carved from one device buffer by mla_workspace_carve.
// The first segment of a split-KV part (the query tiles [tile0, tile1) of query t that fall in
// it), written by the plan so the attention's first copies wait on one load instead of a chain
// of dependent ones (docs/PERF.md, run 31). t < 0: the part has no work.
struct alignas(16) MlaPartStart {
  int32_t t;
  int32_t tile0;
  int32_t tile1;
  int32_t tiles;     // all tiles of query t
  int32_t cum;       // q_cum[t]
  int32_t row;       // q_row[t]
  int32_t per_part;  // sched[0]
  int32_t n;         // real queries of the call
  int32_t group;     // tokens of the unit led by t (mla_unit_tokens)
};

struct MlaWorkspace {
  int num_parts = 0;  // split-KV parts per head block (grid.x of the attention)
  // The schedule's unit is a query group (mla_unit_tokens): its first token t carries the
  // group's KV length (that of its last token), row and cost; the other tokens cost nothing.
  int32_t* q_len = nullptr;   // [T_pad] KV length of the unit led by t (0: t leads none)
  int32_t* q_row = nullptr;   // [T_pad] block-table row of each query
  int32_t* q_unit = nullptr;  // [T_pad] 8 * (t - its unit's first token) + the unit's tokens
  int32_t* q_cum = nullptr;  // [T_pad + 1] exclusive prefix of the split-KV cost
  int32_t* sched = nullptr;  // [2] tiles per part, total cost
  MlaPartStart* part_start = nullptr;  // [num_parts]
  __nv_bfloat16* o_lat =
      nullptr;                // [T_pad, H, 512] normalized latent output (single-split queries)
  // [2 * num_parts, U * H, 512] normalized partial outputs, U = mla_unit_tokens (row j*H + h:
  // token j of the unit, head h); room for U = mla_max_unit_tokens.
  float* o_part = nullptr;
  float* lse_part = nullptr;  // [2 * num_parts, U * H] natural-log sum-exp of each partial
};

int mla_num_parts(int num_sms, int num_heads);
size_t mla_workspace_bytes(int num_queries, int num_heads, int num_parts);
MlaWorkspace mla_workspace_carve(void* base, int num_queries, int num_heads, int num_parts);

// The epilogue of the combine kernel: one per row of the format table (quant/output_quant.h);
// mla_combine.cu holds the functor of each and checks at compile time that none is missing.
using MlaEpilogue = OutputFormat;

struct MlaOutputParams {
  MlaEpilogue kind = MlaEpilogue::kBf16;
  // kBf16: [T_pad, H*128] bf16; FP8: [T_pad, H*128] e4m3; NVFP4: [T_pad, H*64] packed e2m1x2.
  void* out = nullptr;
  const float* scale = nullptr;  // [1] f32: the static FP8 scale, or the NVFP4 global scale
  // Group FP8: storage of the [T_pad, H*128/G] f32 scales, laid out per GroupScaleLayout.
  float* group_scales = nullptr;
  // NVFP4: swizzled e4m3 block scales [round_up(T_pad, 128), H*8] (SPEC 3.3).
  uint8_t* nvfp4_scales = nullptr;
  bool ue8m0 = false;
  bool col_major = false;
  bool tma_aligned = false;
  float eps = static_cast<float>(kDefaultQuantEps);
};

// The epilogue a (validated) output quantization asks for, with its buffers: out, the [1] f32
// scale (static FP8, NVFP4's global scale) or null, and the block-scale buffer (group FP8 f32
// scales, NVFP4 swizzled e4m3) or null. One place maps formats to epilogue parameters (op runner
// and Python binding).
inline MlaOutputParams mla_output_params(const OutputQuant& quant, void* out, const float* scale,
                                         void* block_scale) {
  MlaOutputParams o;
  o.kind = quant.format;
  o.out = out;
  o.scale = scale;
  o.col_major = quant.col_major();
  o.tma_aligned = quant.tma_aligned();
  o.ue8m0 = quant.ue8m0;
  if (quant.block_scale_layout() == Layout::kNvfp4Swizzled) {
    o.nvfp4_scales = static_cast<uint8_t*>(block_scale);
  } else if (quant.group_size() > 0) {
    o.group_scales = static_cast<float*>(block_scale);
  }
  return o;
}

void launch_mla_plan(const MlaDecodeProblem& p, const MlaWorkspace& ws, cudaStream_t stream);
// Where the attention's split-KV schedule (mla_decode_plan.cuh) comes from.
enum class MlaSchedule {
  // Computed for this call and stored in the workspace: up to kMlaOwnPlanQueries queries by the
  // attention's CTAs themselves (no plan kernel to wait for), else by launch_mla_plan first.
  kCompute,
  // The workspace holds the schedule of an earlier kCompute call with the same metadata (the
  // layers of one decode step).
  kReuse,
};
inline constexpr int kMlaOwnPlanQueries = 512;

void launch_mla_decode_splitkv(const MlaDecodeProblem& p, const MlaWorkspace& ws,
                               MlaSchedule schedule, cudaStream_t stream);
void launch_mla_combine_up_quant(const MlaDecodeProblem& p, const MlaWorkspace& ws,
                                 const MlaOutputParams& out, cudaStream_t stream);

// Absorbed query: q_cat[t, h] = [bf16(q_nope[t, h] @ W_UK_T[h]) | q_pe[t, h]] for all T_pad rows.
// Up to kMlaAbsorbGemvMax tokens one kernel, up to kMlaAbsorbSmallMax another (both launched
// programmatically: they read W_UK_T before the kernel ahead of them ends, so that kernel must not
// write W_UK_T); more tokens a cuBLAS strided-batched GEMM, then a copy of the RoPE part. q and
// q_cat 16-byte aligned.
inline constexpr int kMlaAbsorbGemvMax = 2;
inline constexpr int kMlaAbsorbSmallMax = 16;
void launch_mla_absorb_q(cublasHandle_t handle, const __nv_bfloat16* q,  // [T_pad, H, 192]
                         const __nv_bfloat16* w_uk_t,                    // [H, 128, 512]
                         __nv_bfloat16* q_cat,                           // [T_pad, H, 576]
                         int num_queries, int num_heads, cudaStream_t stream);

// Unfused baseline, step 1: every query's normalized latent output in ws.o_lat (bf16), zeros for
// queries with no KV; rows t >= n are not written.
void launch_mla_combine_latent(const MlaDecodeProblem& p, const MlaWorkspace& ws,
                               cudaStream_t stream);
// Unfused baseline, step 2: out[t, h*128 + v] = bf16(sum_l o_lat[t, h, l] * W_UV[h, l, v]) for the
// first `rows` rows (cuBLAS strided-batched GEMM, f32 accumulation).
void launch_mla_up_proj_cublas(cublasHandle_t handle, const __nv_bfloat16* o_lat,  // [T, H, 512]
                               const __nv_bfloat16* w_uv,                          // [H, 512, 128]
                               __nv_bfloat16* out,                                 // [T, H*128]
                               int rows, int num_heads, cudaStream_t stream);

}  // namespace mlafuse::cuda
