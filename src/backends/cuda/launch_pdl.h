// Host side of programmatic dependent launch (device side: pdl_wait / pdl_launch_dependents in
// device_util.cuh). The decode chain plan -> attention -> combine launches its later kernels this
// way, so each one's launch and prologue (barrier setup, W_UV loads) overlap the tail of the one
// before. MLAFUSE_PDL=0 in the environment turns it off (ordinary launches), for A/B timing.
#pragma once

#include <cuda_runtime.h>

#include <cstdlib>
#include <cstring>
#include <utility>

#include "mlafuse/backends/cuda/cuda_check.h"

namespace mlafuse::cuda {

inline bool pdl_enabled() {
  static const bool on = [] {
    const char* e = std::getenv("MLAFUSE_PDL");
    return e == nullptr || std::strcmp(e, "0") != 0;
  }();
  return on;
}

// kernel<<<grid, block, smem, stream>>>(args...), allowed to start before the stream's previous
// kernel completes (the kernel must pdl_wait() before reading that kernel's results).
template <class... Params, class... Args>
void launch_pdl(const char* name, void (*kernel)(Params...), dim3 grid, dim3 block, size_t smem,
                cudaStream_t stream, Args&&... args) {
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = grid;
  cfg.blockDim = block;
  cfg.dynamicSmemBytes = smem;
  cfg.stream = stream;
  cudaLaunchAttribute attr[1];
  attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr[0].val.programmaticStreamSerializationAllowed = pdl_enabled() ? 1 : 0;
  cfg.attrs = attr;
  cfg.numAttrs = 1;
  const cudaError_t e = cudaLaunchKernelEx(&cfg, kernel, std::forward<Args>(args)...);
  if (e != cudaSuccess) throw_cuda_error(e, name, __FILE__, __LINE__);
}

}  // namespace mlafuse::cuda
