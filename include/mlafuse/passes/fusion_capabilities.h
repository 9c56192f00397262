// What the fusion pass asks of the target it compiles for. Owned by passes/ so that the pass
// knows no backend (dependencies point down): every Backend implements it from its kernels'
// can_implement checks, and tests can answer with a table.
#pragma once

#include <string>

#include "mlafuse/mla/fused_quant_request.h"

namespace mlafuse::passes {

class FusionCapabilities {
 public:
  virtual ~FusionCapabilities() = default;
  // Names the target in rejection reasons ("backend 'cpu' does not support ...").
  virtual std::string name() const = 0;
  // May quantization `req.quant` be folded into this layer's attention?
  virtual bool fused_output_quant_supported(const FusedQuantRequest& req) const = 0;
};

}  // namespace mlafuse::passes
