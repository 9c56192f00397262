// What a layer's fused attention would be asked to produce: the question the fusion pass asks a
// backend, and what a backend's kernels check a fused call against (one can_implement for both).
#pragma once

#include <cstdint>

#include "mlafuse/quant/output_quant.h"

namespace mlafuse {

struct FusedQuantRequest {
  OutputQuant quant;
  int64_t layer = 0;
  int64_t num_heads = 0;
  int64_t v_head_dim = 0;
};

}  // namespace mlafuse
