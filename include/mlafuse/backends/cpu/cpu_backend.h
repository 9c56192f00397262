// The CPU reference backend: runs every op with the reference in reference.h.
#pragma once

#include <memory>

#include "mlafuse/backends/backend.h"

namespace mlafuse {

std::unique_ptr<Backend> make_cpu_backend();

}  // namespace mlafuse
