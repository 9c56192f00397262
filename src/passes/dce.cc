#include "mlafuse/passes/dce.h"

namespace mlafuse::passes {

namespace {
bool is_dead(const ir::Node* n) {
  for (const ir::Value* v : n->outputs()) {
    if (v != nullptr && (v->has_uses() || v->is_graph_output())) return false;
  }
  return true;
}
}  // namespace

bool DeadCodeElimination::run(ir::Graph& graph, PassStats& stats) {
  // One backward sweep suffices: removing a consumer can only kill producers, which come
  // earlier in the topological order.
  const std::vector<ir::Node*> order = graph.nodes();
  int64_t removed = 0;
  for (auto it = order.rbegin(); it != order.rend(); ++it) {
    if (!is_dead(*it)) continue;
    graph.remove_node(*it);
    ++removed;
  }
  stats.matches += removed;
  if (removed > 0) stats.pattern_matches["dead-node"] += removed;
  return removed > 0;
}

}  // namespace mlafuse::passes
