// The compiler pipeline every job runs: mla-attn-quant-fusion asked of `backend`, then dce. One
// place builds the pass list (mlafuse compile, run and bench, and the Python compile call).
#pragma once

#include "mlafuse/passes/fusion_capabilities.h"
#include "mlafuse/passes/pass_manager.h"

namespace mlafuse::app {

// `backend` must outlive the returned pipeline.
passes::PassManager default_pipeline(const passes::FusionCapabilities& backend);

}  // namespace mlafuse::app
