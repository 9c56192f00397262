// The CUDA backend (sm_90a kernels). Declared without CUDA headers so the registry can name it.
#pragma once

#include <memory>

#include "mlafuse/backends/backend.h"

namespace mlafuse {

// Throws mlafuse::Error with the reason when no usable Hopper GPU is present.
std::unique_ptr<Backend> make_cuda_backend();

}  // namespace mlafuse
