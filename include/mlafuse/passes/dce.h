// Dead-code elimination: removes nodes none of whose outputs is used or is a graph output.
// Graph inputs and weights stay: they are the graph's binding interface.
#pragma once

#include "mlafuse/passes/pass_manager.h"

namespace mlafuse::passes {

class DeadCodeElimination : public Pass {
 public:
  std::string_view name() const override { return "dce"; }
  bool run(ir::Graph& graph, PassStats& stats) override;
  using Pass::run;
};

}  // namespace mlafuse::passes
