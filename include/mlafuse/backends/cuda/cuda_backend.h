// The CUDA backend (sm_90a kernels). Declared without CUDA headers so the registry can name it.
#pragma once

#include <memory>

#include "mlafuse/backends/backend.h"

namespace mlafuse {

// Succeeds without a GPU, so capability queries (supports_op, fused_output_quant_supported) work
// anywhere; allocate/copy/run/capture/time_us then throw mlafuse::Error("no CUDA device: ...").
std::unique_ptr<Backend> make_cuda_backend();

}  // namespace mlafuse
