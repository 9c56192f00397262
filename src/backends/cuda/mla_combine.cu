// Launchers of the combine step: the fused combine + W_UV + quantization epilogue (dispatching to
// one instantiation file per epilogue), and the unfused baseline's latent-only combine.
#include "backends/cuda/launch_pdl.h"
#include "backends/cuda/mla_combine_up_quant.cuh"
#include "backends/cuda/mla_decode.h"
#include "mlafuse/backends/cuda/cuda_check.h"
#include "mlafuse/core/error.h"

namespace mlafuse::cuda {
namespace mla {

// The epilogue functor of each row of MLAFUSE_OUTPUT_FORMATS (quant/output_quant.h), named
// EpilogueOf_<id>: a row without one fails to compile here. Each is instantiated in its own
// mla_combine_up_quant_<format>.cu.
using EpilogueOf_kBf16 = EpiBf16;
using EpilogueOf_kFp8Static = EpiFp8Static;
using EpilogueOf_kFp8Group128 = EpiFp8Group<128>;
using EpilogueOf_kFp8Group64 = EpiFp8Group<64>;
using EpilogueOf_kNvfp4 = EpiNvfp4;

#define MLAFUSE_EXTERN_EPILOGUE(id, name, key)                                    \
  static_assert(EpilogueOf_##id::kKind == OutputFormat::id, "epilogue of " name); \
  extern template void launch_combine_up_quant<EpilogueOf_##id>(                  \
      const MlaDecodeProblem&, const MlaWorkspace&, const MlaOutputParams&, cudaStream_t);
MLAFUSE_OUTPUT_FORMATS(MLAFUSE_EXTERN_EPILOGUE)
#undef MLAFUSE_EXTERN_EPILOGUE

}  // namespace mla

void launch_mla_combine_up_quant(const MlaDecodeProblem& p, const MlaWorkspace& ws,
                                 const MlaOutputParams& out, cudaStream_t stream) {
  if (p.num_queries == 0) return;
  switch (out.kind) {
#define MLAFUSE_LAUNCH_EPILOGUE(id, name, key)                              \
  case OutputFormat::id:                                                    \
    mla::launch_combine_up_quant<mla::EpilogueOf_##id>(p, ws, out, stream); \
    return;
    MLAFUSE_OUTPUT_FORMATS(MLAFUSE_LAUNCH_EPILOGUE)
#undef MLAFUSE_LAUNCH_EPILOGUE
  }
  MLAFUSE_FAIL("mla_combine_up_quant: unknown output format ", static_cast<int>(out.kind));
}

void launch_mla_combine_latent(const MlaDecodeProblem& p, const MlaWorkspace& ws,
                               cudaStream_t stream) {
  if (p.num_queries == 0) return;
  mla::launch_combine_latent(p, ws, stream, mla::current_device_sms());
}

}  // namespace mlafuse::cuda
