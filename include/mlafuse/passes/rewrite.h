// The rewrite engine (tinygrad style): a rule is a pattern plus a callback that returns a
// replacement, a rejection with its reason, or nothing; rules are indexed by their root op; one
// generic driver applies them until none applies. It knows nothing about any particular op.
//
// A replacement is one new node. Its outputs either re-parent values of the matched nodes (their
// names, types, layouts and users survive: `NewOutput::reuse`) or are fresh values whose types
// the op registry infers. Every matched node is removed, so the driver enforces the fusion
// legality rule of ggml before touching the graph: a value of a matched node that is neither
// re-parented nor replaced must have no user outside the match and must not be a graph output.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "mlafuse/core/attributes.h"
#include "mlafuse/ir/graph.h"
#include "mlafuse/passes/pass_manager.h"
#include "mlafuse/passes/pattern.h"

namespace mlafuse::passes {

// One output slot of the replacement node: re-parent `reuse`, or create a fresh value named
// `name`, or (both empty) leave the slot absent.
struct NewOutput {
  ir::Value* reuse = nullptr;
  std::string name;
};

struct Replacement {
  std::string op;
  std::vector<ir::Value*> inputs;  // one per schema input; nullptr = absent
  AttrMap attrs;
  std::vector<NewOutput> outputs;  // one per schema output (trailing absent ones may be left out)
  // Values of the matched nodes whose users move to output slot `second` of the new node.
  std::vector<std::pair<ir::Value*, size_t>> replace_uses;
};

class RewriteResult {
 public:
  static RewriteResult replace(Replacement r);
  static RewriteResult reject(std::string reason);  // recorded in PassStats::rejections
  static RewriteResult no_match();                  // silently not applicable
  // Counts or records this result under `label` instead of the rule's name: a rule that fuses
  // several formats names the one it saw.
  RewriteResult labelled(std::string label) && {
    label_ = std::move(label);
    return std::move(*this);
  }

  bool is_replace() const { return kind_ == Kind::kReplace; }
  bool is_reject() const { return kind_ == Kind::kReject; }
  const Replacement& replacement() const { return replacement_; }
  Replacement take_replacement() && { return std::move(replacement_); }
  const std::string& reason() const { return reason_; }
  const std::string& label() const { return label_; }

 private:
  enum class Kind { kReplace, kReject, kNoMatch };
  Kind kind_ = Kind::kNoMatch;
  Replacement replacement_;
  std::string reason_;
  std::string label_;
};

using RewriteFn = std::function<RewriteResult(const Match& match)>;

struct Rule {
  std::string name;  // counts and rejections are reported under this name (or the result's label)
  NodePat pattern;
  RewriteFn rewrite;
};

class RuleSet {
 public:
  void add(Rule rule);
  // Rules whose root op is `op`, in the order they were added (nullptr when none).
  const std::vector<Rule>* rules_for(std::string_view op) const;
  size_t size() const { return size_; }

 private:
  std::unordered_map<std::string, std::vector<Rule>> by_root_op_;
  size_t size_ = 0;
};

// Applies `rules` over `graph` until no rule applies (at most `max_sweeps` sweeps over the
// nodes; more throws, naming the rules, as a rewrite cycle). Counts applied rewrites per rule
// name in `stats.pattern_matches` and `stats.matches`, and records each rejected match once.
// Returns whether the graph changed.
bool apply_rules(ir::Graph& graph, const RuleSet& rules, PassStats& stats, int max_sweeps = 16);

}  // namespace mlafuse::passes
