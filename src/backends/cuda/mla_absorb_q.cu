// The absorbed query (docs/kernels/mla_decode.md): q_cat = [q_nope @ W_UK_T | q_pe]. Up to
// kMlaAbsorbSmallMax tokens one kernel that streams W_UK_T at bandwidth (mla_absorb_q.cuh); more,
// a cuBLAS strided-batched GEMM and a copy of the RoPE part.
#include "backends/cuda/launch_pdl.h"
#include "backends/cuda/mla_absorb_q.cuh"
#include "backends/cuda/mla_decode.h"
#include "mlafuse/backends/cuda/cuda_check.h"

namespace mlafuse::cuda {
namespace {

// Copies q_pe (the last 64 of each head's 192) behind the absorbed 512: one 16-byte chunk a thread.
__global__ void mla_copy_q_pe_kernel(const __nv_bfloat16* __restrict__ q,  // [T, H, 192]
                                     __nv_bfloat16* __restrict__ q_cat,    // [T, H, 576]
                                     int64_t rows) {                       // T * H
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= rows * 8) return;
  const int64_t r = i / 8;
  const int c = static_cast<int>(i % 8);
  const uint4 v = *reinterpret_cast<const uint4*>(q + r * kMlaQDim + kMlaNope + c * 8);
  *reinterpret_cast<uint4*>(q_cat + r * kMlaRow + kMlaLatent + c * 8) = v;
}

}  // namespace

void launch_mla_absorb_q(cublasHandle_t handle, const __nv_bfloat16* q, const __nv_bfloat16* w_uk_t,
                         __nv_bfloat16* q_cat, int num_queries, int num_heads,
                         cudaStream_t stream) {
  if (num_queries == 0) return;
  // The path depends on the token count only, never on H: a tensor-parallel shard (fewer heads)
  // then computes its heads' q_cat bit for bit as the whole model does.
  if (num_queries <= kMlaAbsorbSmallMax) {
    const dim3 grid(mla::kAbsorbSlices, static_cast<unsigned>(num_heads));
    const dim3 block(mla::kAbsorbThreads);
    if (num_queries <= kMlaAbsorbGemvMax) {
      auto kernel =
          num_queries == 1 ? mla::mla_absorb_q_gemv_kernel<1> : mla::mla_absorb_q_gemv_kernel<2>;
      launch_pdl("mla_absorb_q_gemv_kernel", kernel, grid, block, 0, stream, q, w_uk_t, q_cat,
                 num_queries, num_heads);
    } else {
      launch_pdl("mla_absorb_q_mma_kernel", mla::mla_absorb_q_mma_kernel, grid, block, 0, stream, q,
                 w_uk_t, q_cat, num_queries, num_heads);
    }
    return;
  }
  // Larger batches: a GEMM on tensor cores.
  MLAFUSE_CUBLAS_CHECK(cublasSetStream(handle, stream));
  MLAFUSE_CUBLAS_CHECK(cublasSetPointerMode(handle, CUBLAS_POINTER_MODE_HOST));
  const float alpha = 1.0f;
  const float beta = 0.0f;
  // Column-major view, one GEMM per head h: q_cat[:, h, :512]^T (512 x T) =
  // W_UK_T[h]^T (512 x 128, ld 512) * q[:, h, :128]^T (128 x T, ld H*192).
  MLAFUSE_CUBLAS_CHECK(cublasGemmStridedBatchedEx(
      handle, CUBLAS_OP_N, CUBLAS_OP_N, kMlaLatent, num_queries, kMlaNope, &alpha, w_uk_t,
      CUDA_R_16BF, kMlaLatent, static_cast<long long>(kMlaNope) * kMlaLatent, q, CUDA_R_16BF,
      num_heads * kMlaQDim, kMlaQDim, &beta, q_cat, CUDA_R_16BF, num_heads * kMlaRow, kMlaRow,
      num_heads, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
  const int64_t rows = static_cast<int64_t>(num_queries) * num_heads;
  const int threads = 256;
  const int64_t blocks = (rows * 8 + threads - 1) / threads;
  mla_copy_q_pe_kernel<<<static_cast<unsigned>(blocks), threads, 0, stream>>>(q, q_cat, rows);
  MLAFUSE_CUDA_CHECK_LAUNCH("mla_copy_q_pe_kernel");
}

}  // namespace mlafuse::cuda
