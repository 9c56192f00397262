// The CPU reference for every op: deliberately naive and literal (SPEC sections 3-7). It is the
// oracle every CUDA kernel is tested against. All tensors are host tensors. Every function
// validates its arguments and throws mlafuse::Error naming the tensor, its shape and what was
// expected.
//
// Padded batches (SPEC 6): buffers hold T_pad rows; `n` <= T_pad is the real token count and
// nothing belonging to tokens >= n is written.
//
// Non-finite inputs (every backend must do the same):
// - FP8 (static and group): amax ignores NaN (fmaxf). A NaN input element gives a NaN code with its
//   sign (0x7f / 0xff). +-Inf in a static quant saturates to +-448. +-Inf in a group makes amax and
//   the scale inf: the Inf element becomes inf/inf, a NaN made by the arithmetic, which is coded
//   0xff on every platform (not left to the platform's NaN sign); the group's finite elements
//   give 0 (+-0 codes 0x00/0x80).
// - NVFP4: amax ignores NaN; a NaN element encodes as +6 (0x7, e2m1 has no NaN); an Inf element
//   makes the block scale saturate to e4m3 448 and itself encodes as +-6.
//
// Weights (SPEC 4, DeepSeek-V3 / vLLM layout): kv_b_proj [H*(P+V), L] holds, per head h, P "nope"
// rows then V value rows, i.e. kv_b_proj viewed as [H, P+V, L]:
//   k_nope[j, h, p] = sum_l kv_b_proj[h*(P+V) + p, l]     * c_j[l]
//   v[j, h, v]      = sum_l kv_b_proj[h*(P+V) + P + v, l] * c_j[l]
// and the absorbed weights are exact copies of those bf16 values:
//   W_UK_T[h, p, l] = kv_b_proj[h*(P+V) + p, l]          (no transpose)
//   W_UV[h, l, v]   = kv_b_proj[h*(P+V) + P + v, l]      (transposed per head)
// so q_nope . k_nope = (q_nope @ W_UK_T[h]) . c and p @ v = (p @ c) @ W_UV[h].
// (models/weights.h mla_layer_weights_from_kv_b_proj builds them this way.)
#pragma once

#include <cstdint>

#include "mlafuse/backends/backend.h"
#include "mlafuse/core/tensor.h"
#include "mlafuse/mla/block_fp8_weight.h"
#include "mlafuse/quant/output_quant.h"
#include "mlafuse/quant/quant_key.h"

namespace mlafuse::ref {

// ---- quantization (SPEC 3) ----------------------------------------------------------------
// Code tensors may be typed fp8e4m3 / fp4e2m1x2 or u8; static scales must be finite and > 0.
// x: [T_pad, D] bf16|f16|f32, row-major. scale: [1] f32. q: [T_pad, D] fp8e4m3.
void quant_fp8_static(const Tensor& x, int64_t n, const Tensor& scale, Tensor& q);

struct Fp8GroupParams {
  int64_t group_size = 128;  // any multiple of 16 dividing D for the standalone op
  bool ue8m0 = false;
  bool col_major = false;
  bool tma_aligned = false;
  float eps = static_cast<float>(kDefaultQuantEps);  // must be finite and > 0
};
// q: [T_pad, D] fp8e4m3. s: f32 view of logical shape [T_pad, D/G] whose strides follow
// GroupScaleLayout{T_pad, D/G, col_major, tma_aligned} (checked: a view with other strides is an
// error, except along a dim of extent 1). Only s entries of tokens [0, n) are written, at their
// strided places; TMA padding rows are never touched.
void quant_fp8_group(const Tensor& x, int64_t n, const Fp8GroupParams& p, Tensor& q, Tensor& s);

// global_scale: [1] f32. q: [T_pad, D/2] u8 (fp4e2m1x2). sf: [round_up(T_pad,128),
// round_up(D/16,4)] u8 (e4m3 codes, swizzled); rows [0, round_up(n,128)) are written, padding zero.
void quant_nvfp4(const Tensor& x, int64_t n, const Tensor& global_scale, Tensor& q, Tensor& sf);

// The reference quantizer of each output format (quant/output_quant.h): the CPU dispatch over the
// table, for the fused attention and `mlafuse quant`. `scale` is the [1] f32 input of the formats
// that take one (static FP8, NVFP4's global scale), else undefined; `block_scale` the block-scale
// output of those that write one (laid out per quant.block_scale_layout()), else undefined.
// quant must be quantized.
void quantize_output(const OutputQuant& quant, const Tensor& x, int64_t n, const Tensor& scale,
                     Tensor& q, Tensor& block_scale);

// ---- paged latent cache (SPEC 4) ----------------------------------------------------------
// kv_c_normed: [T_pad, L] bf16; k_pe: [T_pad, 1, R] bf16; slot_mapping: [T_pad] i32 (-1 skips);
// kv_cache: [num_pages, page_size, L+R] bf16, updated in place for tokens [0, n). Slot s is page
// s / page_size, row s % page_size. slot_mapping needs at least n entries; every slot of tokens
// [0, n) is validated (-1, or inside the cache) before anything is written.
void cache_write(const Tensor& kv_c_normed, const Tensor& k_pe, const Tensor& slot_mapping,
                 int64_t n, Tensor& kv_cache);

// ---- MLA attention (SPEC 4) ---------------------------------------------------------------
// Absorbed decode query: q_cat[t, h] = [q_nope[t,h] @ W_UK_T[h] | q_pe[t,h]], rounded to bf16
// (the kernels' input). q: [T, H, P+R] bf16; w_uk_t: [H, P, L] bf16 -> [T, H, L+R] bf16.
// f32 accumulation, p ascending.
Tensor mla_absorb_q(const Tensor& q, const Tensor& w_uk_t);
// The same without the bf16 rounding: -> [T, H, L+R] f32 (q may be bf16 or f32). For checking
// the absorbed form against the expanded one at f32 precision.
Tensor mla_absorb_q_f32(const Tensor& q, const Tensor& w_uk_t);

// Latent attention of decode queries over the paged cache, in f32.
// q_cat: [B, H, L+R] bf16 (or f32); kv_cache: [pages, page_size, L+R] bf16; block_table: [B,
// max_pages] i32; seq_lens: [B] i32 (0 allowed: output zeros, lse -inf). Returns o_lat [B, H, L]
// f32 and, when lse != nullptr, fills *lse with [B, H] f32 natural-log sum-exp of the scaled
// scores. kv_splits > 1 computes each of that many contiguous KV chunks separately and merges them
// by log-sum-exp (the split-KV path the kernels use). Chunk c covers positions [c*len/S,
// (c+1)*len/S) (empty chunks have lse -inf and weight 0). Only block-table slots of positions <
// seq_lens[b] are read; each must name a page inside the cache.
Tensor mla_decode_latent(const Tensor& q_cat, const Tensor& kv_cache, const Tensor& block_table,
                         const Tensor& seq_lens, int64_t latent_dim, float softmax_scale,
                         Tensor* lse = nullptr, int64_t kv_splits = 1);

// Per-head up-projection: out[b, h*V + v] = sum_l o_lat[b,h,l] * w_uv[h,l,v].
// o_lat: [B, H, L] f32 (rounded to bf16 first when round_input_bf16, as the tensor-core kernel
// does); w_uv: [H, L, V] bf16. Returns [B, H*V] f32.
Tensor mla_up_proj(const Tensor& o_lat, const Tensor& w_uv, bool round_input_bf16);

// Expanded (prefill) attention of one sequence's Tq query tokens, which are its last Tq cached
// positions: query i attends causally over positions [0, seq_len - Tq + i]. Keys are
// [k_nope | k_pe] with k_nope, v up-projected from the cached latents by kv_b_proj (rounded to
// bf16 when round_kv_bf16, as an engine's GEMM would leave them) and k_pe the cached rope part
// shared by all heads. QK dim P+R, V dim V, scale cfg.scale().
// q: [Tq, H, P+R] bf16 (or f32); kv_cache: [pages, page_size, L+R] bf16; block_table: [B,
// max_pages] i32 (row `seq` is read); kv_b_proj: [H*(P+V), L] bf16. Returns [Tq, H*V] f32.
// With kv_b_proj_fp8 present (codes [H*(P+V), L], scales [ceil(H*(P+V)/128), L/128], L a
// multiple of 128) the up-projection is the W8A8 block-FP8 linear instead and kv_b_proj is not
// read: each latent row quantized as quant_fp8_group does (groups of 128, f32 scales, no ue8m0),
// dequantized, and dotted with the dequantized weight in f32, the arithmetic of linear_fp8_block.
Tensor mla_prefill_expanded(const Tensor& q, const Tensor& kv_cache, const Tensor& block_table,
                            int64_t seq, int64_t seq_len, const Tensor& kv_b_proj,
                            const MlaConfig& cfg, bool round_kv_bf16,
                            const BlockFp8Weight& kv_b_proj_fp8 = {});

// The whole op on a mixed batch (decode tokens first, then prefill tokens): cache write, then
// absorbed decode for decode tokens and expanded causal prefill (with earlier cached context) for
// prefill tokens. Returns out [T_pad, H*V] f32 (rows >= n zero); the caller rounds/quantizes.
// Intermediate roundings follow the kernels: q_cat and the latent output o_lat are rounded to
// bf16 (tensor-core operands), as are the prefill's up-projected k_nope and v; everything else
// is f32. The prefill up-projection uses w.kv_b_proj_fp8 when the weights carry it. meta must
// describe exactly n tokens (decodes first, each with one or more query tokens, causal among
// themselves; a padding decode of length 0 may have none; every sequence's seq_len >= its query
// length); rows >= n of q / kv_c_normed / k_pe are never read.
Tensor mla_attention_f32(const Tensor& q, const Tensor& kv_c_normed, const Tensor& k_pe,
                         Tensor& kv_cache, const AttentionMetadata& meta, const MlaLayerWeights& w,
                         const MlaConfig& cfg, int64_t n);

// ---- o_proj consumer (SPEC 7) -------------------------------------------------------------
// xq: [T_pad, K] fp8e4m3; xs: f32 [T_pad, K/G] (any GroupScaleLayout strides), G = 128 or 64, or
// f32 [1] (per-tensor static scale); wq: [N, K] fp8e4m3; ws: [ceil(N/128), ceil(K/128)] f32.
// Returns y [T_pad, N] bf16 (rows < n computed, rows >= n zero).
// y[t, o] = bf16(sum_k (xq[t,k] * xs[t, k/G]) * (wq[o,k] * ws[o/128, k/128])): both products in
// f32, the sum in f32 over k in a fixed order (16 interleaved partial sums, then added in order).
Tensor linear_fp8_block(const Tensor& xq, const Tensor& xs, const Tensor& wq, const Tensor& ws,
                        int64_t n);

// NVFP4 activations: xq [T_pad, K/2] fp4e2m1x2 (or u8); sf: the swizzled e4m3 block scales
// [round_up(T_pad,128), round_up(K/16,4)] (fp8e4m3 or u8); global_scale: [1] f32. Each element is
// dequantized per SPEC 3.3, x = e2m1(q) * float(sf) / GS (in that order, f32), then as
// linear_fp8_block. Returns y [T_pad, N] bf16 (rows >= n zero).
Tensor linear_nvfp4(const Tensor& xq, const Tensor& sf, const Tensor& global_scale,
                    const Tensor& wq, const Tensor& ws, int64_t n);

}  // namespace mlafuse::ref
