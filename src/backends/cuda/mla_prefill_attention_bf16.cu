// Instantiation of mla_prefill_attention with the EpiBf16 epilogue (one file per epilogue, so the
// five heavy kernels compile in parallel).
#include "backends/cuda/mla_prefill_attention_sm90.cuh"

namespace mlafuse::cuda::mla {

template void launch_prefill_attention<EpiBf16>(const MlaPrefillProblem&, const PrefillMaps&,
                                                const MlaOutputParams&, cudaStream_t);

}  // namespace mlafuse::cuda::mla
