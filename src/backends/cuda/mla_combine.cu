// Launchers of the combine step: the fused combine + W_UV + quantization epilogue (dispatching to
// one instantiation file per epilogue), and the unfused baseline's latent-only combine.
#include "backends/cuda/mla_combine_up_quant.cuh"
#include "backends/cuda/mla_decode.h"
#include "mlafuse/backends/cuda/cuda_check.h"
#include "mlafuse/core/error.h"

namespace mlafuse::cuda {
namespace mla {
extern template void launch_combine_up_quant<EpiBf16>(const MlaDecodeProblem&, const MlaWorkspace&,
                                                      const MlaOutputParams&, cudaStream_t);
extern template void launch_combine_up_quant<EpiFp8Static>(const MlaDecodeProblem&,
                                                           const MlaWorkspace&,
                                                           const MlaOutputParams&, cudaStream_t);
extern template void launch_combine_up_quant<EpiFp8Group<128>>(const MlaDecodeProblem&,
                                                               const MlaWorkspace&,
                                                               const MlaOutputParams&,
                                                               cudaStream_t);
extern template void launch_combine_up_quant<EpiFp8Group<64>>(const MlaDecodeProblem&,
                                                              const MlaWorkspace&,
                                                              const MlaOutputParams&, cudaStream_t);
extern template void launch_combine_up_quant<EpiNvfp4>(const MlaDecodeProblem&, const MlaWorkspace&,
                                                       const MlaOutputParams&, cudaStream_t);
}  // namespace mla

void launch_mla_combine_up_quant(const MlaDecodeProblem& p, const MlaWorkspace& ws,
                                 const MlaOutputParams& out, cudaStream_t stream) {
  if (p.num_queries == 0) return;
  switch (out.kind) {
    case MlaEpilogue::kBf16:
      mla::launch_combine_up_quant<mla::EpiBf16>(p, ws, out, stream);
      break;
    case MlaEpilogue::kFp8Static:
      mla::launch_combine_up_quant<mla::EpiFp8Static>(p, ws, out, stream);
      break;
    case MlaEpilogue::kFp8Group128:
      mla::launch_combine_up_quant<mla::EpiFp8Group<128>>(p, ws, out, stream);
      break;
    case MlaEpilogue::kFp8Group64:
      mla::launch_combine_up_quant<mla::EpiFp8Group<64>>(p, ws, out, stream);
      break;
    case MlaEpilogue::kNvfp4:
      mla::launch_combine_up_quant<mla::EpiNvfp4>(p, ws, out, stream);
      break;
  }
}

void launch_mla_combine_latent(const MlaDecodeProblem& p, const MlaWorkspace& ws,
                               cudaStream_t stream) {
  if (p.num_queries == 0) return;
  const dim3 grid(static_cast<unsigned>(p.num_queries), static_cast<unsigned>(p.num_heads));
  mla::mla_combine_latent_kernel<mla::kCombineThreads>
      <<<grid, mla::kCombineThreads, 0, stream>>>(p, ws);
  MLAFUSE_CUDA_CHECK_LAUNCH("mla_combine_latent_kernel");
}

}  // namespace mlafuse::cuda
