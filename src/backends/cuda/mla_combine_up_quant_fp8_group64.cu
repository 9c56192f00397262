// Instantiation of mla_decode_combine_up_quant with the EpiFp8Group<64> epilogue.
#include "backends/cuda/mla_combine_up_quant.cuh"

namespace mlafuse::cuda::mla {

template void launch_combine_up_quant<EpiFp8Group<64>>(const MlaDecodeProblem&, const MlaWorkspace&,
                                                       const MlaOutputParams&, cudaStream_t);

}  // namespace mlafuse::cuda::mla
