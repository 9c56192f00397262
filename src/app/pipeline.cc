#include "mlafuse/app/pipeline.h"

#include "mlafuse/passes/dce.h"
#include "mlafuse/passes/mla_attn_quant_fusion.h"

namespace mlafuse::app {

passes::PassManager default_pipeline(const passes::FusionCapabilities& backend) {
  passes::PassManager pm;
  pm.emplace<passes::MlaAttnQuantFusion>(backend);
  pm.emplace<passes::DeadCodeElimination>();
  return pm;
}

}  // namespace mlafuse::app
