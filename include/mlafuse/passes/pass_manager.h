// Passes and the pipeline that runs them (XLA style): a pass has a kebab-case name() and
// run(graph) -> changed; the PassManager runs passes in order, verifies the graph before the
// first pass and after each one, records per-pass statistics, and can dump before/after or skip
// a disabled pass.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "mlafuse/ir/graph.h"

namespace mlafuse::passes {

// Why a rule that matched did not rewrite.
struct Rejection {
  std::string pattern;  // the rule's name
  std::string node;     // the root node, as Node::label()
  std::string reason;
};

struct PassStats {
  std::string pass;
  bool ran = false;  // false when disabled
  bool changed = false;
  int64_t matches = 0;                             // rewrites applied, all patterns
  std::map<std::string, int64_t> pattern_matches;  // rewrites applied per pattern
  std::vector<Rejection> rejections;
  int64_t nodes_before = 0;
  int64_t nodes_after = 0;
  double time_us = 0;  // the pass itself, without verification
};

class Pass {
 public:
  virtual ~Pass() = default;
  virtual std::string_view name() const = 0;
  // Rewrites `graph` in place; returns whether it changed. Records matches and rejections in
  // `stats`.
  virtual bool run(ir::Graph& graph, PassStats& stats) = 0;
  // For callers that do not want statistics.
  bool run(ir::Graph& graph) {
    PassStats stats;
    return run(graph, stats);
  }
};

// Called with the pass name, "before" or "after", and the graph.
using DumpFn =
    std::function<void(std::string_view pass, std::string_view when, const ir::Graph& graph)>;

class PassManager {
 public:
  PassManager();
  ~PassManager();
  PassManager(PassManager&&) noexcept;
  PassManager& operator=(PassManager&&) noexcept;

  Pass& add(std::unique_ptr<Pass> pass);
  template <typename P, typename... Args>
  P& emplace(Args&&... args) {
    auto p = std::make_unique<P>(std::forward<Args>(args)...);
    P& ref = *p;
    add(std::move(p));
    return ref;
  }

  // A disabled pass is skipped (its stats say ran = false). Unknown names are errors at run().
  void disable(std::string pass_name);
  void set_verify(bool on) { verify_ = on; }  // on by default
  void set_dump(DumpFn dump) { dump_ = std::move(dump); }
  std::vector<std::string> pass_names() const;

  // Runs the pipeline. Throws mlafuse::Error naming the pass when the graph fails verification
  // after it (or naming "input" before the first pass).
  std::vector<PassStats> run(ir::Graph& graph);

 private:
  std::vector<std::unique_ptr<Pass>> passes_;
  std::set<std::string> disabled_;
  bool verify_ = true;
  DumpFn dump_;
};

}  // namespace mlafuse::passes
