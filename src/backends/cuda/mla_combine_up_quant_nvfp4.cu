// Instantiation of mla_decode_combine_up_quant with the EpiNvfp4 epilogue.
#include "backends/cuda/mla_combine_up_quant.cuh"

namespace mlafuse::cuda::mla {

template void launch_combine_up_quant<EpiNvfp4>(const MlaDecodeProblem&, const MlaWorkspace&,
                                                const MlaOutputParams&, cudaStream_t);

}  // namespace mlafuse::cuda::mla
