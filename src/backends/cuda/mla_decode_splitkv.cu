// Launcher of mla_decode_splitkv: picks the attention kernel for the head count and sets up its
// grid (split-KV parts x head blocks).
#include "backends/cuda/mla_decode.h"
#include "backends/cuda/mla_decode_splitkv.cuh"
#include "backends/cuda/mla_decode_splitkv_sm90.cuh"
#include "mlafuse/backends/cuda/cuda_check.h"
#include "mlafuse/core/error.h"

namespace mlafuse::cuda {
namespace {

template <int kHpb>
void launch_mma(const MlaDecodeProblem& p, const MlaWorkspace& ws, cudaStream_t stream) {
  const size_t smem = sizeof(mla::SplitKvMmaSmem<kHpb>);
  auto kernel = mla::mla_decode_splitkv_mma_kernel<kHpb>;
  MLAFUSE_CUDA_CHECK(
      cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
  const dim3 grid(static_cast<unsigned>(ws.num_parts), static_cast<unsigned>(p.num_heads / kHpb));
  kernel<<<grid, mla::kSplitThreads, smem, stream>>>(p, ws);
  MLAFUSE_CUDA_CHECK_LAUNCH("mla_decode_splitkv_mma_kernel");
}

void launch_wgmma(const MlaDecodeProblem& p, const MlaWorkspace& ws, cudaStream_t stream) {
  auto kernel = mla::mla_decode_splitkv_wgmma_kernel;
  MLAFUSE_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                          mla::kWgmmaSmemBytes));
  const dim3 grid(static_cast<unsigned>(ws.num_parts),
                  static_cast<unsigned>(p.num_heads / mla::kWgHeads));
  kernel<<<grid, mla::kWgThreads, mla::kWgmmaSmemBytes, stream>>>(p, ws);
  MLAFUSE_CUDA_CHECK_LAUNCH("mla_decode_splitkv_wgmma_kernel");
}

}  // namespace

void launch_mla_decode_splitkv(const MlaDecodeProblem& p, const MlaWorkspace& ws,
                               cudaStream_t stream) {
  if (p.num_queries == 0) return;
  // wgmma needs 64 query rows: it runs H = 64 and 128 (sm_90a); smaller H use mma.sync.
  const bool wgmma_ok = p.num_heads == 64 || p.num_heads == 128;
  MLAFUSE_CHECK(p.kernel != MlaAttnKernel::kWgmma || wgmma_ok,
                "mla_decode_splitkv: the wgmma kernel needs 64 or 128 heads, got ", p.num_heads);
  if (wgmma_ok && p.kernel != MlaAttnKernel::kMma) {
    launch_wgmma(p, ws, stream);
    return;
  }
  switch (p.num_heads) {
    case 16:
      launch_mma<16>(p, ws, stream);
      break;
    case 32:
      launch_mma<32>(p, ws, stream);
      break;
    case 64:
    case 128:
      launch_mma<64>(p, ws, stream);
      break;
    default:
      MLAFUSE_FAIL("mla_decode_splitkv: num_heads ", p.num_heads,
                   " is not supported; expected 16, 32, 64 or 128");
  }
}

}  // namespace mlafuse::cuda
