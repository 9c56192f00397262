// Launchers of the MLA decode plan, the workspace carve-up, and the cuBLAS steps around the decode
// kernels (the unfused baseline's W_UV GEMM).
#include "backends/cuda/mla_decode.h"
#include "backends/cuda/mla_decode_plan.cuh"
#include "mlafuse/backends/cuda/cuda_check.h"
#include "mlafuse/core/error.h"

namespace mlafuse::cuda {
namespace {

// Threads of the plan's one CTA: 1024 for large batches (a scan step covers 1024 queries), 128
// for up to 128 queries, where the kernel is latency-bound and each of its block-wide scans and
// reductions waits on 4 warps instead of 32.
constexpr int kPlanThreads = 1024;
constexpr int kPlanThreadsSmall = 128;

size_t align_up(size_t x) { return (x + 255) / 256 * 256; }

}  // namespace

int mla_num_parts(int num_sms, int num_heads) {
  const int head_blocks = num_heads > 64 ? num_heads / 64 : 1;
  return num_sms / head_blocks > 1 ? num_sms / head_blocks : 1;
}

size_t mla_workspace_bytes(int num_queries, int num_heads, int num_parts) {
  const size_t t = static_cast<size_t>(num_queries);
  const size_t h = static_cast<size_t>(num_heads);
  const size_t sh = static_cast<size_t>(num_heads * mla_max_unit_tokens(num_heads));
  const size_t parts = static_cast<size_t>(num_parts);
  return align_up(t * 4) * 3 + align_up((t + 1) * 4) + align_up(2 * 4) +
         align_up(parts * sizeof(MlaPartStart)) + align_up(t * h * kMlaLatent * 2) +
         align_up(2 * parts * sh * kMlaLatent * 4) + align_up(2 * parts * sh * 4);
}

MlaWorkspace mla_workspace_carve(void* base, int num_queries, int num_heads, int num_parts) {
  const size_t t = static_cast<size_t>(num_queries);
  const size_t h = static_cast<size_t>(num_heads);
  const size_t sh = static_cast<size_t>(num_heads * mla_max_unit_tokens(num_heads));
  const size_t parts = static_cast<size_t>(num_parts);
  char* p = static_cast<char*>(base);
  auto take = [&p](size_t bytes) {
    char* r = p;
    p += align_up(bytes);
    return r;
  };
  MlaWorkspace ws;
  ws.num_parts = num_parts;
  ws.q_len = reinterpret_cast<int32_t*>(take(t * 4));
  ws.q_row = reinterpret_cast<int32_t*>(take(t * 4));
  ws.q_unit = reinterpret_cast<int32_t*>(take(t * 4));
  ws.q_cum = reinterpret_cast<int32_t*>(take((t + 1) * 4));
  ws.sched = reinterpret_cast<int32_t*>(take(2 * 4));
  ws.part_start = reinterpret_cast<MlaPartStart*>(take(parts * sizeof(MlaPartStart)));
  ws.o_lat = reinterpret_cast<__nv_bfloat16*>(take(t * h * kMlaLatent * 2));
  ws.o_part = reinterpret_cast<float*>(take(2 * parts * sh * kMlaLatent * 4));
  ws.lse_part = reinterpret_cast<float*>(take(2 * parts * sh * 4));
  return ws;
}

void launch_mla_plan(const MlaDecodeProblem& p, const MlaWorkspace& ws, cudaStream_t stream) {
  if (p.num_queries <= kPlanThreadsSmall) {
    mla::mla_plan_kernel<kPlanThreadsSmall><<<1, kPlanThreadsSmall, 0, stream>>>(p, ws);
  } else {
    mla::mla_plan_kernel<kPlanThreads><<<1, kPlanThreads, 0, stream>>>(p, ws);
  }
  MLAFUSE_CUDA_CHECK_LAUNCH("mla_plan_kernel");
}

void launch_mla_up_proj_cublas(cublasHandle_t handle, const __nv_bfloat16* o_lat,
                               const __nv_bfloat16* w_uv, __nv_bfloat16* out, int rows,
                               int num_heads, cudaStream_t stream) {
  if (rows == 0) return;
  MLAFUSE_CUBLAS_CHECK(cublasSetStream(handle, stream));
  MLAFUSE_CUBLAS_CHECK(cublasSetPointerMode(handle, CUBLAS_POINTER_MODE_HOST));
  const float alpha = 1.0f;
  const float beta = 0.0f;
  // Column-major view per head: out[:, h*128 : h*128+128]^T (128 x T, ld H*128) =
  // W_UV[h]^T (128 x 512, ld 128) * o_lat[:, h, :]^T (512 x T, ld H*512).
  MLAFUSE_CUBLAS_CHECK(cublasGemmStridedBatchedEx(
      handle, CUBLAS_OP_N, CUBLAS_OP_N, kMlaVDim, rows, kMlaLatent, &alpha, w_uv, CUDA_R_16BF,
      kMlaVDim, static_cast<long long>(kMlaLatent) * kMlaVDim, o_lat, CUDA_R_16BF,
      num_heads * kMlaLatent, kMlaLatent, &beta, out, CUDA_R_16BF, num_heads * kMlaVDim, kMlaVDim,
      num_heads, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
}

}  // namespace mlafuse::cuda
