// launch_mla_prefill (mla_prefill.h): the expanded-form prefill chain of one batch's prefill
// sequences, from the paged latent cache to the (quantized) output. Host code only.
#include <cstdint>

#include "backends/cuda/linear_ops.h"
#include "backends/cuda/mla_prefill.h"
#include "mlafuse/backends/cuda/cuda_check.h"
#include "mlafuse/core/error.h"

namespace mlafuse::cuda {
namespace {

constexpr size_t kAlign = 256;
size_t aligned(size_t bytes) { return (bytes + kAlign - 1) / kAlign * kAlign; }

struct PrefillWorkspace {
  int32_t* kv_start = nullptr;      // [num_seqs + 1]
  __nv_bfloat16* latent = nullptr;  // [kv_rows, 512]
  __nv_bfloat16* k_pe = nullptr;    // [total_kv, 64]
  __nv_bfloat16* kv = nullptr;      // [kv_rows, H, 256]
  // The block-FP8 up-projection's: the quantized latent, its column-major group scales, and
  // cuBLASLt's scratch (its own: the backend's workspace is the one this is carved from).
  uint8_t* latent_q = nullptr;  // [kv_rows, 512] e4m3
  float* latent_s = nullptr;    // [4, kv_rows]
  void* gemm_scratch = nullptr;
  int64_t kv_rows = 0;  // total_kv, rounded up to 4 for the block-FP8 GEMM's scale layout
  size_t bytes = 0;
};

PrefillWorkspace carve(char* base, int64_t total_kv, int num_seqs, int num_heads, bool fp8) {
  PrefillWorkspace w;
  size_t off = 0;
  auto take = [&](size_t bytes) {
    char* p = base == nullptr ? nullptr : base + off;
    off += aligned(bytes);
    return p;
  };
  w.kv_rows = fp8 ? (total_kv + 3) / 4 * 4 : total_kv;
  const size_t rows = static_cast<size_t>(w.kv_rows);
  w.kv_start = reinterpret_cast<int32_t*>(take((static_cast<size_t>(num_seqs) + 1) * 4));
  w.latent = reinterpret_cast<__nv_bfloat16*>(take(rows * kMlaLatent * 2));
  w.k_pe = reinterpret_cast<__nv_bfloat16*>(take(static_cast<size_t>(total_kv) * kMlaRope * 2));
  w.kv = reinterpret_cast<__nv_bfloat16*>(
      take(rows * static_cast<size_t>(num_heads) * kMlaPrefillKvDim * 2));
  if (fp8) {
    w.latent_q = reinterpret_cast<uint8_t*>(take(rows * kMlaLatent));
    w.latent_s = reinterpret_cast<float*>(take(rows * (kMlaLatent / 128) * 4));
    w.gemm_scratch = take(kLinearFp8CublasltWorkspaceBytes);
  }
  w.bytes = off;
  return w;
}

}  // namespace

size_t mla_prefill_workspace_bytes(int64_t total_kv, int num_seqs, int num_heads,
                                   bool fp8_up_proj) {
  return carve(nullptr, total_kv, num_seqs, num_heads, fp8_up_proj).bytes;
}

void launch_mla_prefill(const MlaPrefillBatch& b, void* workspace, DeviceContext& dc,
                        const MlaOutputParams& out, cudaStream_t stream) {
  MLAFUSE_CHECK(b.num_seqs >= 0 && b.total_kv >= 0 && b.max_seq_len >= 0 && b.max_q_len >= 0,
                "mla_prefill: negative sizes (num_seqs ", b.num_seqs, ", total_kv ", b.total_kv,
                ", max_seq_len ", b.max_seq_len, ", max_q_len ", b.max_q_len, ")");
  if (b.num_seqs == 0 || b.max_q_len == 0) return;
  // Everything the attention launcher would refuse is refused before anything is launched.
  MLAFUSE_CHECK(b.num_heads == 16 || b.num_heads == 32 || b.num_heads == 64 || b.num_heads == 128,
                "mla_prefill: num_heads ", b.num_heads,
                " is not supported; expected 16, 32, 64 or 128");
  check_mla_prefill_output(out);
  MLAFUSE_CHECK(b.total_kv >= b.max_seq_len && b.max_seq_len >= b.max_q_len &&
                    b.total_kv < (int64_t{1} << 31),
                "mla_prefill: total_kv ", b.total_kv, " must hold the longest context ",
                b.max_seq_len, " (>= the longest prompt ", b.max_q_len, ") and fit in int32");
  MLAFUSE_CHECK(workspace != nullptr && reinterpret_cast<uintptr_t>(workspace) % kAlign == 0,
                "mla_prefill: the workspace must be a 256-byte aligned device buffer");
  const bool fp8 = b.kv_b_proj_fp8 != nullptr || b.kv_b_proj_scale != nullptr;
  if (fp8) {
    MLAFUSE_CHECK(b.kv_b_proj_fp8 != nullptr && b.kv_b_proj_scale != nullptr,
                  "mla_prefill: the block-FP8 kv_b_proj needs both its codes and its scales");
  } else {
    MLAFUSE_CHECK(b.kv_b_proj != nullptr, "mla_prefill: no kv_b_proj weight");
  }
  const PrefillWorkspace w =
      carve(static_cast<char*>(workspace), b.total_kv, b.num_seqs, b.num_heads, fp8);

  launch_mla_prefill_kv_plan(b.seq_lens, b.num_seqs, w.kv_start, stream);
  MlaPrefillGather g;
  g.num_seqs = b.num_seqs;
  g.max_seq_len = b.max_seq_len;
  g.seq_lens = b.seq_lens;
  g.kv_start = w.kv_start;
  g.block_table = b.block_table;
  g.block_table_stride = b.block_table_stride;
  g.page_size = b.page_size;
  g.num_pages = b.num_pages;
  g.kv_cache = b.kv_cache;
  g.latent = w.latent;
  g.k_pe = w.k_pe;
  g.rows = b.total_kv;
  launch_mla_prefill_gather(g, stream);
  if (fp8) {
    // The GEMM runs over kv_rows (a multiple of 4): the padding rows are zeroed so they quantize
    // to zero codes instead of reading stale scratch; their kv rows are never read.
    if (w.kv_rows > b.total_kv) {
      MLAFUSE_CUDA_CHECK(cudaMemsetAsync(
          w.latent + b.total_kv * kMlaLatent, 0,
          static_cast<size_t>(w.kv_rows - b.total_kv) * kMlaLatent * sizeof(__nv_bfloat16),
          stream));
    }
    const bool ran = launch_mla_prefill_up_proj_fp8(
        dc, w.latent, w.latent_q, w.latent_s, b.kv_b_proj_fp8, b.kv_b_proj_scale, w.kv,
        static_cast<int>(w.kv_rows), b.num_heads, stream, w.gemm_scratch);
    MLAFUSE_CHECK(ran, "mla_prefill: cuBLASLt offers no block-scaled FP8 GEMM for the kv_b_proj ",
                  "up-projection (", w.kv_rows, " x ", b.num_heads * kMlaPrefillKvDim, " x ",
                  kMlaLatent, ") on this device; a weight store without kv_b_proj_fp8 runs the ",
                  "bf16 up-projection");
  } else {
    launch_mla_prefill_up_proj_bf16(dc.cublas, w.latent, b.kv_b_proj, w.kv,
                                    static_cast<int>(b.total_kv), b.num_heads, stream);
  }

  MlaPrefillProblem p;
  p.num_heads = b.num_heads;
  p.num_seqs = b.num_seqs;
  p.max_q_len = b.max_q_len;
  p.q_rows = b.q_rows;
  p.out_rows = b.out_rows;
  p.kv_rows = static_cast<int>(b.total_kv);
  p.softmax_scale = b.softmax_scale;
  p.q_start = b.q_start;
  p.kv_start = w.kv_start;
  p.q = b.q;
  p.kv = w.kv;
  p.k_pe = w.k_pe;
  p.pingpong = b.pingpong;
  launch_mla_prefill_attention(p, out, stream);
}

}  // namespace mlafuse::cuda
