// The K/V side of MLA prefill (mla_prefill.h): the packed context rows of every prefill sequence
// out of the paged latent cache, and their up-projection through kv_b_proj (bf16 on cuBLAS, or
// the block-FP8 checkpoint weight on cuBLASLt after our own group quantization).
#include <cublas_v2.h>

#include "backends/cuda/linear_ops.h"
#include "backends/cuda/mla_prefill.h"
#include "backends/cuda/quant_kernels.h"
#include "mlafuse/backends/cuda/cuda_check.h"
#include "mlafuse/core/error.h"

namespace mlafuse::cuda {
namespace {

// One thread: prefill batches hold few sequences, and this keeps the chain graph-capturable.
__global__ void mla_prefill_kv_plan_kernel(const int32_t* seq_lens, int num_seqs,
                                           int32_t* kv_start) {
  if (threadIdx.x != 0 || blockIdx.x != 0) return;
  int32_t acc = 0;
  for (int s = 0; s < num_seqs; ++s) {
    kv_start[s] = acc;
    acc += max(seq_lens[s], 0);
  }
  kv_start[num_seqs] = acc;
}

// Rows of 576 bf16 = 72 units of 16 bytes (64 latent, 8 RoPE). Block (x, s): context positions
// [kRowsPerBlock * x, + kRowsPerBlock) of sequence s; a thread moves one unit of a row per step.
constexpr int kGatherRowsPerBlock = 16;
constexpr int kGatherThreads = 256;
constexpr int kUnitsPerRow = kMlaRow / 8;
constexpr int kLatentUnits = kMlaLatent / 8;

__global__ void __launch_bounds__(kGatherThreads) mla_prefill_gather_kernel(MlaPrefillGather g) {
  const int s = blockIdx.y;
  const int len = g.seq_lens[s];
  const int base = g.kv_start[s];
  const int j0 = blockIdx.x * kGatherRowsPerBlock;
  const int32_t* pages = g.block_table + static_cast<int64_t>(s) * g.block_table_stride;
  for (int i = threadIdx.x; i < kGatherRowsPerBlock * kUnitsPerRow; i += kGatherThreads) {
    const int j = j0 + i / kUnitsPerRow;
    const int u = i % kUnitsPerRow;
    if (j >= len) continue;
    const int slot = j / g.page_size;
    if (slot >= g.block_table_stride) continue;
    // The host validated the block table; a bad page id still never reads outside the cache.
    const int64_t page = pages[slot];
    if (page < 0 || page >= g.num_pages) continue;
    const uint4 v = *reinterpret_cast<const uint4*>(
        g.kv_cache + (page * g.page_size + j % g.page_size) * kMlaRow + 8 * u);
    const int64_t row = static_cast<int64_t>(base) + j;
    if (base < 0 || row >= g.rows) continue;  // device metadata that disagrees with the host's
    if (u < kLatentUnits) {
      *reinterpret_cast<uint4*>(g.latent + row * kMlaLatent + 8 * u) = v;
    } else {
      *reinterpret_cast<uint4*>(g.k_pe + row * kMlaRope + 8 * (u - kLatentUnits)) = v;
    }
  }
}

}  // namespace

void launch_mla_prefill_kv_plan(const int32_t* seq_lens, int num_seqs, int32_t* kv_start,
                                cudaStream_t stream) {
  MLAFUSE_CHECK(num_seqs >= 0, "mla_prefill_kv_plan: num_seqs ", num_seqs, " is negative");
  mla_prefill_kv_plan_kernel<<<1, 32, 0, stream>>>(seq_lens, num_seqs, kv_start);
  MLAFUSE_CUDA_CHECK_LAUNCH("mla_prefill_kv_plan_kernel");
}

void launch_mla_prefill_gather(const MlaPrefillGather& g, cudaStream_t stream) {
  MLAFUSE_CHECK(g.num_seqs >= 0 && g.num_seqs <= 65535 && g.max_seq_len >= 0,
                "mla_prefill_gather: num_seqs ", g.num_seqs, " must be in [0, 65535], max_seq_len ",
                g.max_seq_len, " >= 0");
  if (g.num_seqs == 0 || g.max_seq_len == 0) return;
  MLAFUSE_CHECK(g.page_size > 0 && g.block_table_stride > 0 && g.num_pages > 0,
                "mla_prefill_gather: page_size ", g.page_size, ", block_table_stride ",
                g.block_table_stride, ", num_pages ", g.num_pages, " must be positive");
  MLAFUSE_CHECK(g.seq_lens && g.kv_start && g.block_table && g.kv_cache && g.latent && g.k_pe,
                "mla_prefill_gather: null pointer argument");
  const dim3 grid(
      static_cast<unsigned>((g.max_seq_len + kGatherRowsPerBlock - 1) / kGatherRowsPerBlock),
      static_cast<unsigned>(g.num_seqs));
  mla_prefill_gather_kernel<<<grid, kGatherThreads, 0, stream>>>(g);
  MLAFUSE_CUDA_CHECK_LAUNCH("mla_prefill_gather_kernel");
}

void launch_mla_prefill_up_proj_bf16(cublasHandle_t handle, const __nv_bfloat16* latent,
                                     const __nv_bfloat16* kv_b_proj, __nv_bfloat16* kv, int rows,
                                     int num_heads, cudaStream_t stream) {
  MLAFUSE_CHECK(rows >= 0 && num_heads > 0, "mla_prefill_up_proj: rows ", rows, ", num_heads ",
                num_heads);
  if (rows == 0) return;
  // Column-major view: kv^T [H*256, rows] = (kv_b_proj^T [512, H*256])^T . latent^T [512, rows].
  const int m = num_heads * kMlaPrefillKvDim;
  const float one = 1.0f, zero = 0.0f;
  MLAFUSE_CUBLAS_CHECK(cublasSetStream(handle, stream));
  MLAFUSE_CUBLAS_CHECK(cublasGemmEx(handle, CUBLAS_OP_T, CUBLAS_OP_N, m, rows, kMlaLatent, &one,
                                    kv_b_proj, CUDA_R_16BF, kMlaLatent, latent, CUDA_R_16BF,
                                    kMlaLatent, &zero, kv, CUDA_R_16BF, m, CUBLAS_COMPUTE_32F,
                                    CUBLAS_GEMM_DEFAULT));
}

bool launch_mla_prefill_up_proj_fp8(DeviceContext& dc, const __nv_bfloat16* latent,
                                    uint8_t* latent_q, float* latent_s, const void* wq,
                                    const float* ws, __nv_bfloat16* kv, int rows, int num_heads,
                                    cudaStream_t stream, void* gemm_workspace) {
  MLAFUSE_CHECK(rows >= 0 && rows % 4 == 0 && num_heads > 0, "mla_prefill_up_proj_fp8: rows ", rows,
                " must be a multiple of 4 (cuBLASLt's scale layout), num_heads ", num_heads);
  if (rows == 0) return true;
  QuantFp8GroupArgs qa;
  qa.x = latent;
  qa.x_dtype = DType::kBF16;
  qa.q = latent_q;
  qa.s = latent_s;
  qa.t_pad = rows;
  qa.d = kMlaLatent;
  qa.group = 128;
  qa.col_major = true;  // token stride 1, group stride rows: what cuBLASLt's VEC128 reads
  qa.num_tokens = rows;
  launch_quant_fp8_group(qa, dc.num_sms, stream);
  return linear_fp8_block_cublaslt(dc, stream, latent_q, latent_s, wq, ws, kv, rows,
                                   static_cast<int64_t>(num_heads) * kMlaPrefillKvDim, kMlaLatent,
                                   gemm_workspace);
}

}  // namespace mlafuse::cuda
