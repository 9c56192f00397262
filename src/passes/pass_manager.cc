#include "mlafuse/passes/pass_manager.h"

#include <chrono>

#include "mlafuse/core/error.h"
#include "mlafuse/ir/verifier.h"

namespace mlafuse::passes {

PassManager::PassManager() = default;
PassManager::~PassManager() = default;
PassManager::PassManager(PassManager&&) noexcept = default;
PassManager& PassManager::operator=(PassManager&&) noexcept = default;

Pass& PassManager::add(std::unique_ptr<Pass> pass) {
  MLAFUSE_CHECK(pass != nullptr, "PassManager::add: no pass");
  for (const auto& p : passes_) {
    MLAFUSE_CHECK(p->name() != pass->name(), "pass '", pass->name(),
                  "' is already in the pipeline");
  }
  passes_.push_back(std::move(pass));
  return *passes_.back();
}

void PassManager::disable(std::string pass_name) { disabled_.insert(std::move(pass_name)); }

std::vector<std::string> PassManager::pass_names() const {
  std::vector<std::string> names;
  for (const auto& p : passes_) names.emplace_back(p->name());
  return names;
}

namespace {
void verify_after(const ir::Graph& graph, uint64_t epoch, std::string_view when) {
  try {
    ir::verify_since(graph, epoch);
  } catch (const Error& e) {
    MLAFUSE_FAIL("graph verification failed ", when, ": ", e.what());
  }
}
}  // namespace

std::vector<PassStats> PassManager::run(ir::Graph& graph) {
  for (const std::string& d : disabled_) {
    bool known = false;
    for (const auto& p : passes_) known |= p->name() == d;
    MLAFUSE_CHECK(known, "cannot disable pass '", d, "': it is not in the pipeline");
  }
  if (verify_) verify_after(graph, 0, "on the input graph");
  // Nodes untouched since the last verification keep their inferred types (verify_since).
  uint64_t verified_epoch = graph.mutation_epoch();
  std::vector<PassStats> all;
  all.reserve(passes_.size());
  for (const auto& pass : passes_) {
    PassStats stats;
    stats.pass = std::string(pass->name());
    stats.nodes_before = static_cast<int64_t>(graph.num_nodes());
    if (disabled_.count(stats.pass) != 0) {
      stats.nodes_after = stats.nodes_before;
      all.push_back(std::move(stats));
      continue;
    }
    if (dump_) dump_(stats.pass, "before", graph);
    const auto t0 = std::chrono::steady_clock::now();
    stats.changed = pass->run(graph, stats);
    const auto t1 = std::chrono::steady_clock::now();
    stats.ran = true;
    stats.time_us = std::chrono::duration<double, std::micro>(t1 - t0).count();
    stats.nodes_after = static_cast<int64_t>(graph.num_nodes());
    if (verify_) {
      verify_after(graph, verified_epoch, "after pass '" + stats.pass + "'");
      verified_epoch = graph.mutation_epoch();
    }
    if (dump_) dump_(stats.pass, "after", graph);
    all.push_back(std::move(stats));
  }
  return all;
}

}  // namespace mlafuse::passes
