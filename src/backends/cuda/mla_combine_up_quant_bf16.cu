// Instantiation of mla_decode_combine_up_quant with the EpiBf16 epilogue.
#include "backends/cuda/mla_combine_up_quant.cuh"

namespace mlafuse::cuda::mla {

template void launch_combine_up_quant<EpiBf16>(const MlaDecodeProblem&, const MlaWorkspace&,
                                               const MlaOutputParams&, cudaStream_t);

}  // namespace mlafuse::cuda::mla
