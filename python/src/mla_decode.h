// mlafuse.mla_decode: absorbed-query MLA decode over a paged latent cache, then W_UV, then the
// output quantization the caller's buffers ask for (SPEC 3.4). The CPU runs the reference
// (ref::mla_decode_latent -> bf16 -> ref::mla_up_proj -> bf16 -> the reference quantizer, the
// chain the CPU backend's mla_attention runs); CUDA runs the decode kernels' host launchers
// (src/backends/cuda/mla_decode.h) on the caller's stream.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>

#include "mlafuse/core/tensor.h"
#include "mlafuse/quant/quant_key.h"
#include "tensors.h"

namespace mlafuse::py {

// Query row t belongs to sequence t / tokens_per_seq (B = T_pad / tokens_per_seq sequences);
// with tokens_per_seq = k > 1 (multi-token prediction, speculative decoding) a sequence's k rows
// are its last k positions, causal among themselves: row j of it sees the first
// max(0, seq_len - k + 1 + j) cached tokens.
struct MlaDecodeArgs {
  Tensor q;                   // [T_pad, H, 576] bf16: [q_nope @ W_UK_T | q_pe] per head
  Tensor kv_cache;            // [pages, page_size, 576] bf16
  Tensor block_table;         // [B, max_pages] i32
  Tensor seq_lens;            // [B] i32: cached length of each sequence, its new tokens included
  Tensor w_uv;                // [H, 512, 128] bf16
  Tensor out;                 // [T_pad, H*128] bf16 / fp8e4m3, or [T_pad, H*64] u8 (NVFP4)
  Tensor output_scale;        // [1] f32, optional: static FP8 scale or NVFP4 global scale
  Tensor output_block_scale;  // optional: group FP8 f32 [T_pad, H*128/G]; NVFP4 swizzled e4m3
  Tensor num_tokens_device;   // [1] i32, optional: the real count n, read on the device
  Tensor workspace;           // u8, CUDA only: mla_decode_workspace_bytes(T_pad, H, splits)
  int64_t num_tokens = -1;    // n when num_tokens_device is absent; -1 means T_pad
  int64_t tokens_per_seq = 1;  // query rows of each sequence; divides T_pad
  double softmax_scale = 0;   // 0: 1/sqrt(192)
  bool scale_ue8m0 = false;   // group FP8: power-of-two scales
  // Split-KV parts of the CUDA schedule; 0: one a CTA slot (SMs / head blocks). A fixed count
  // makes the split points, hence every rounding, independent of H: tensor-parallel shards then
  // reproduce the single-GPU output of their heads bit for bit (the exception: see
  // docs/kernels/mla_decode.md, "Tensor parallelism").
  int64_t num_kv_splits = 0;
  // CUDA: skip the plan and use the split-KV schedule an earlier call on the same stream wrote
  // into `workspace` (the first call of a decode step computes it, the other layers reuse it, as
  // engines reuse FlashMLA's metadata). The schedule depends on T_pad, the part count, the page
  // size and block-table width, and on the contents of seq_lens and num_tokens: run_cuda checks
  // the first four and the tensors' identity against the computing call; the caller promises the
  // contents are unchanged. The CPU computes everything each call and ignores it.
  bool reuse_schedule = false;
  // The workspace was allocated for this call alone (the Python wrapper's default): its schedule
  // is not recorded, and a record left at its address by an earlier buffer is dropped, so a later
  // buffer at that address is not taken for one that holds a schedule.
  bool workspace_temporary = false;
};

// The key the buffers ask for (SPEC 3.4) with the group-scale layout read off the strides of
// output_block_scale. Throws mlafuse::Error naming the buffer on any mismatch.
struct DecodeOutput {
  std::optional<QuantKey> key;
  bool col_major = false;
  bool tma_aligned = false;
};
DecodeOutput check_decode_output(const MlaDecodeArgs& a, int64_t t_pad, int64_t heads);

void mla_decode(const MlaDecodeArgs& a, const Place& place, void* stream);

// Scratch bytes one CUDA call needs (0 on the CPU); num_kv_splits as in MlaDecodeArgs.
size_t mla_decode_workspace_bytes(int64_t t_pad, int64_t heads, const Place& place,
                                  int64_t num_kv_splits = 0);

}  // namespace mlafuse::py
