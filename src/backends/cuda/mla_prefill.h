// MLA prefill on the GPU in the expanded form (SPEC 4): the host API of the prefill kernels
// (launchers in mla_prefill_*.cu, device code in mla_prefill_*.cuh). Dimensions are DeepSeek's:
// latent L = 512, RoPE R = 64, nope P = 128, V = 128, so d_qk = 192 and d_v = 128.
//
// The chain for the prefill sequences of one batch:
//   launch_mla_prefill_kv_plan     kv_start[s]: exclusive prefix of the sequences' context lengths
//                                  (device, so the chain is CUDA-graph capturable)
//   launch_mla_prefill_gather      each sequence's whole context (cached tokens, then this step's)
//                                  out of the paged latent cache into packed rows: latent
//                                  [S_total, 512] and k_pe [S_total, 64] (shared by every head)
//   launch_mla_prefill_up_proj_*   kv [S_total, H, 256] = latent @ kv_b_proj^T: per head the 128
//                                  K_nope columns, then the 128 V columns (the GEMM's natural
//                                  output layout; the attention kernel reads both halves in place);
//                                  bf16, or block FP8 when the weights carry the checkpoint form
//   launch_mla_prefill_attention   causal flash attention (TMA + wgmma, a producer warpgroup and
//                                  two math warpgroups), bf16-rounded output handed to the same
//                                  epilogue functors as the decode combine (bf16, FP8 static,
//                                  FP8 group 128 / 64 in every scale layout, NVFP4)
#pragma once

#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "backends/cuda/device_context.h"
#include "backends/cuda/mla_decode.h"

namespace mlafuse::cuda {

inline constexpr int kMlaPrefillKvDim = kMlaNope + kMlaVDim;  // 256: one head's K_nope | V row
inline constexpr int kMlaPrefillTileM = 128;                  // query rows of one attention CTA
inline constexpr int kMlaPrefillTileN = 128;                  // context tokens of one KV tile

// One call of the attention kernel: `num_seqs` prefill sequences. Sequence s owns query rows
// [q_start[s], q_start[s+1]) of q and of the outputs, and context rows [kv_start[s],
// kv_start[s+1]) of kv / k_pe, its last q_len rows being its own new tokens: query i (0-based in
// the sequence) sees context positions 0 .. kv_len - q_len + i.
struct MlaPrefillProblem {
  int num_heads = 0;  // H in {16, 32, 64, 128}
  int num_seqs = 0;   // prefill sequences
  int max_q_len = 0;  // longest q_len (host value: sizes the grid); CTAs past a sequence exit
  int q_rows = 0;     // rows of q (T_pad of the batch)
  int out_rows = 0;   // rows of the output buffers (T_pad: the scale layouts depend on it)
  int kv_rows = 0;    // rows of kv and k_pe (>= kv_start[num_seqs])
  float softmax_scale = 0.0f;
  const int32_t* q_start = nullptr;     // [num_seqs + 1] device, non-decreasing
  const int32_t* kv_start = nullptr;    // [num_seqs + 1] device, non-decreasing
  const __nv_bfloat16* q = nullptr;     // [q_rows, H, 192]: q_nope | q_pe
  const __nv_bfloat16* kv = nullptr;    // [kv_rows, H, 256]: k_nope | v
  const __nv_bfloat16* k_pe = nullptr;  // [kv_rows, 64]
  // The two math warpgroups take turns issuing MMAs (named-barrier ping-pong); false lets them
  // run free (the first schedule, kept to measure the ping-pong against and as a fallback).
  bool pingpong = true;
};

// out rows of every sequence's queries, through the epilogue `out` asks for. Rows outside
// [q_start[0], q_start[num_seqs]) are never written; nor is NVFP4's scale padding (the caller's
// business: launch_mla_prefill_nvfp4_pad). Throws mlafuse::Error on a bad problem.
void launch_mla_prefill_attention(const MlaPrefillProblem& p, const MlaOutputParams& out,
                                  cudaStream_t stream);

// Throws mlafuse::Error unless `out` has the buffers its epilogue needs.
void check_mla_prefill_output(const MlaOutputParams& out);

// NVFP4 only: zeroes the block scales of rows [n, round_up(n, 128)) (SPEC 6), for callers whose
// other kernels leave them alone.
void launch_mla_prefill_nvfp4_pad(const MlaOutputParams& out, int out_rows, int num_heads, int n,
                                  cudaStream_t stream);

// kv_start[0..num_seqs] = exclusive prefix sum of seq_lens[0..num_seqs) (one thread; sequences
// are few).
void launch_mla_prefill_kv_plan(const int32_t* seq_lens, int num_seqs, int32_t* kv_start,
                                cudaStream_t stream);

// Rows [kv_start[s], kv_start[s] + seq_lens[s]) of latent / k_pe = cached positions
// 0 .. seq_lens[s]-1 of sequence s (block_table row s). max_seq_len (host) sizes the grid.
struct MlaPrefillGather {
  int num_seqs = 0;
  int max_seq_len = 0;
  const int32_t* seq_lens = nullptr;     // [num_seqs]
  const int32_t* kv_start = nullptr;     // [num_seqs + 1]
  const int32_t* block_table = nullptr;  // [num_seqs, block_table_stride]
  int block_table_stride = 0;
  int page_size = kMlaPage;
  int64_t num_pages = 0;
  const __nv_bfloat16* kv_cache = nullptr;  // [num_pages, page_size, 576]
  __nv_bfloat16* latent = nullptr;          // [rows, 512]
  __nv_bfloat16* k_pe = nullptr;            // [rows, 64]
  int64_t rows = 0;                         // rows of latent / k_pe: rows past it are skipped
};
void launch_mla_prefill_gather(const MlaPrefillGather& g, cudaStream_t stream);

// kv [rows, H*256] (bf16) = latent [rows, 512] @ kv_b_proj [H*256, 512]^T with the dequantized
// bf16 weight (cuBLAS, f32 accumulation): what the CPU reference computes.
void launch_mla_prefill_up_proj_bf16(cublasHandle_t handle, const __nv_bfloat16* latent,
                                     const __nv_bfloat16* kv_b_proj, __nv_bfloat16* kv, int rows,
                                     int num_heads, cudaStream_t stream);

// The same with the block-FP8 checkpoint weight, as engines run it: latent quantized by our group
// kernel (FP8 e4m3, groups of 128, column-major scales) into latent_q / latent_s, then cuBLASLt's
// block-scaled FP8 GEMM. rows % 4 == 0 (cuBLASLt's scale layout); latent_s holds rows * 4 floats.
// wq [H*256, 512] e4m3, ws [H*2, 4] f32 (128x128 blocks). Returns false when cuBLASLt has no
// algorithm (the quantization launched, no GEMM). gemm_workspace: cuBLASLt's scratch
// (linear_fp8_block_cublaslt), null for dc's workspace.
bool launch_mla_prefill_up_proj_fp8(DeviceContext& dc, const __nv_bfloat16* latent,
                                    uint8_t* latent_q, float* latent_s, const void* wq,
                                    const float* ws, __nv_bfloat16* kv, int rows, int num_heads,
                                    cudaStream_t stream, void* gemm_workspace = nullptr);

// ---- the whole chain ------------------------------------------------------------------------
// The prefill sequences of one batch, as the op runner (and the tests and benchmark) hand them
// over: device metadata, host sizes.
struct MlaPrefillBatch {
  int num_heads = 0;
  int num_seqs = 0;      // prefill sequences
  int max_q_len = 0;     // host: longest prompt chunk (query tokens)
  int max_seq_len = 0;   // host: longest context (cached + new tokens)
  int64_t total_kv = 0;  // host: sum of the sequences' seq_lens (rows of the packed context)
  int q_rows = 0;        // rows of q (T_pad)
  int out_rows = 0;      // rows of the outputs (T_pad)
  float softmax_scale = 0.0f;
  const int32_t* seq_lens = nullptr;     // [num_seqs] device: context lengths (cached + new)
  const int32_t* q_start = nullptr;      // [num_seqs + 1] device: query rows of each sequence
  const int32_t* block_table = nullptr;  // [num_seqs, block_table_stride] device
  int block_table_stride = 0;
  int64_t num_pages = 0;
  int page_size = kMlaPage;
  const __nv_bfloat16* kv_cache = nullptr;   // [num_pages, page_size, 576], this step written
  const __nv_bfloat16* q = nullptr;          // [q_rows, H, 192]
  const __nv_bfloat16* kv_b_proj = nullptr;  // [H*256, 512] bf16 (dequantized)
  // The checkpoint's block-FP8 kv_b_proj: codes [H*256, 512] e4m3 and scales [H*2, 4] f32. When
  // set, the up-projection runs on it (launch_mla_prefill_up_proj_fp8) and kv_b_proj is not read.
  const void* kv_b_proj_fp8 = nullptr;
  const float* kv_b_proj_scale = nullptr;
  bool pingpong = true;  // MlaPrefillProblem::pingpong
};

// Scratch of launch_mla_prefill: kv_start, the packed latent / k_pe rows, and kv; with the
// block-FP8 up-projection (fp8_up_proj) also the quantized latent, its scales and cuBLASLt's
// scratch.
size_t mla_prefill_workspace_bytes(int64_t total_kv, int num_seqs, int num_heads,
                                   bool fp8_up_proj = false);

// kv plan -> gather -> up-projection (bf16 on cuBLAS, or block FP8 when b.kv_b_proj_fp8 is set)
// -> attention with the `out` epilogue. Writes only the query rows of the batch's prefill
// sequences (NVFP4 scale padding: see launch_mla_prefill_nvfp4_pad). `workspace` holds
// mla_prefill_workspace_bytes (fp8_up_proj as the batch), 256-byte aligned. Throws when cuBLASLt
// offers no block-scaled FP8 algorithm (there is no silent bf16 fallback: the numbers would
// change).
void launch_mla_prefill(const MlaPrefillBatch& b, void* workspace, DeviceContext& dc,
                        const MlaOutputParams& out, cudaStream_t stream);

}  // namespace mlafuse::cuda
