#include "mlafuse/passes/rewrite.h"

#include <algorithm>
#include <set>
#include <unordered_set>

#include "mlafuse/core/error.h"
#include "mlafuse/ir/op_registry.h"

namespace mlafuse::passes {

RewriteResult RewriteResult::replace(Replacement r) {
  RewriteResult res;
  res.kind_ = Kind::kReplace;
  res.replacement_ = std::move(r);
  return res;
}

RewriteResult RewriteResult::reject(std::string reason) {
  RewriteResult res;
  res.kind_ = Kind::kReject;
  res.reason_ = std::move(reason);
  return res;
}

RewriteResult RewriteResult::no_match() { return RewriteResult(); }

void RuleSet::add(Rule rule) {
  MLAFUSE_CHECK(!rule.name.empty() && rule.rewrite, "a rule needs a name and a callback");
  std::string op = rule.pattern.op();
  by_root_op_[op].push_back(std::move(rule));
  ++size_;
}

const std::vector<Rule>* RuleSet::rules_for(std::string_view op) const {
  auto it = by_root_op_.find(std::string(op));
  return it == by_root_op_.end() ? nullptr : &it->second;
}

namespace {

// Checks a replacement against the match and the graph without changing anything. Returns the
// reason it cannot be applied, or "" when it can.
std::string check_replacement(const ir::Graph& g, const Match& m, Replacement& r,
                              std::vector<std::optional<ir::ValueType>>& types) {
  const ir::OpSchema* schema = ir::OpRegistry::global().find(r.op);
  if (schema == nullptr) return "the replacement op '" + r.op + "' is not registered";
  if (r.inputs.size() > schema->inputs.size() || r.outputs.size() > schema->outputs.size()) {
    return "the replacement " + r.op + " has too many operands";
  }
  r.inputs.resize(schema->inputs.size(), nullptr);
  r.outputs.resize(schema->outputs.size());
  const auto& matched = m.nodes();
  auto in_match = [&matched](const ir::Node* n) {
    return n != nullptr && std::find(matched.begin(), matched.end(), n) != matched.end();
  };

  // Values that survive the matched nodes.
  std::unordered_set<const ir::Value*> kept;
  for (const NewOutput& o : r.outputs) {
    if (o.reuse == nullptr) continue;
    if (!in_match(o.reuse->producer())) {
      return "internal: the replacement re-parents %" + o.reuse->name() +
             ", which no matched node produces";
    }
    if (!kept.insert(o.reuse).second) return "internal: %" + o.reuse->name() + " re-parented twice";
  }
  for (const auto& [v, slot] : r.replace_uses) {
    if (v == nullptr || !in_match(v->producer()) || slot >= r.outputs.size()) {
      return "internal: bad replace_uses entry in the replacement";
    }
    if (!kept.insert(v).second) return "internal: %" + v->name() + " replaced twice";
  }
  // Inputs come from outside the match: matched nodes are all removed.
  std::vector<const ir::ValueType*> in_types(r.inputs.size(), nullptr);
  for (size_t i = 0; i < r.inputs.size(); ++i) {
    const ir::Value* v = r.inputs[i];
    if (v == nullptr) continue;
    if (in_match(v->producer())) {
      return "internal: the replacement reads %" + v->name() + ", produced inside the match";
    }
    if (!g.owns(v)) return "internal: the replacement reads a foreign value";
    in_types[i] = &v->type();
  }
  // ggml's fusion legality: what disappears must have no other user and not be a graph output.
  for (const ir::Node* n : matched) {
    for (const ir::Value* v : n->outputs()) {
      if (v == nullptr || kept.count(v) != 0) continue;
      if (v->is_graph_output()) return "%" + v->name() + " is a graph output";
      for (const ir::Use& u : v->uses()) {
        if (!in_match(u.node)) {
          return "%" + v->name() + " has another user (" + u.node->label() + ")";
        }
      }
    }
  }
  // The new node must type-check, and every re-parented value must keep its exact type (dtype,
  // shape and layout): the caller's buffer is the one the new node writes.
  try {
    types = schema->infer_outputs(in_types, r.attrs);
  } catch (const Error& e) {
    return std::string("the replacement does not type-check: ") + e.what();
  }
  for (size_t i = 0; i < r.outputs.size(); ++i) {
    const NewOutput& o = r.outputs[i];
    const bool present = o.reuse != nullptr || !o.name.empty();
    if (present != types[i].has_value()) {
      return "the replacement's output " + schema->outputs[i].name +
             (present ? " is given but the op infers it absent"
                      : " is absent but the op infers " + types[i]->str());
    }
    if (o.reuse != nullptr && o.reuse->type() != *types[i]) {
      return "re-parenting %" + o.reuse->name() + " (" + o.reuse->type().str() + ") to " + r.op +
             " output " + schema->outputs[i].name + ", which infers " + types[i]->str();
    }
    if (o.reuse == nullptr && !o.name.empty() && g.find_value(o.name) != nullptr) {
      return "the replacement's output name %" + o.name + " is taken";
    }
  }
  for (const auto& [v, slot] : r.replace_uses) {
    if (!types[slot] || v->type() != *types[slot]) {
      return "replacing %" + v->name() + " by a value of another type";
    }
  }
  return "";
}

void commit(ir::Graph& g, const Match& m, Replacement& r,
            std::vector<std::optional<ir::ValueType>>& types) {
  std::vector<ir::OutputDecl> decls(r.outputs.size());
  for (size_t i = 0; i < r.outputs.size(); ++i) {
    if (r.outputs[i].reuse == nullptr && !r.outputs[i].name.empty()) {
      decls[i] = ir::OutputDecl{r.outputs[i].name, std::move(types[i])};
    }
  }
  ir::Node* fresh = g.add_node_typed(r.op, r.inputs, std::move(r.attrs), std::move(decls));
  for (size_t i = 0; i < r.outputs.size(); ++i) {
    if (r.outputs[i].reuse != nullptr) g.move_output(r.outputs[i].reuse, fresh, i);
  }
  for (const auto& [v, slot] : r.replace_uses) g.replace_all_uses(v, fresh->output(slot));
  // Place the new node where the root was: its inputs come from outside the match, so they are
  // defined before the root. Its outputs' users may not all follow the root; sort only then.
  ir::Node* root = m.root();
  g.place_before(fresh, root);
  // Remove consumers before producers.
  std::vector<ir::Node*> doomed = m.nodes();
  std::vector<size_t> pos;
  const auto& order = g.nodes();
  for (ir::Node* n : doomed) {
    pos.push_back(static_cast<size_t>(std::find(order.begin(), order.end(), n) - order.begin()));
  }
  std::vector<size_t> idx(doomed.size());
  for (size_t i = 0; i < idx.size(); ++i) idx[i] = i;
  std::sort(idx.begin(), idx.end(), [&pos](size_t a, size_t b) { return pos[a] > pos[b]; });
  for (size_t i : idx) g.remove_node(doomed[i]);
  if (!g.users_follow(fresh)) g.sort();
}

}  // namespace

bool apply_rules(ir::Graph& graph, const RuleSet& rules, PassStats& stats, int max_sweeps) {
  bool changed = false;
  // (rule, root node id) pairs already rejected: each rejection is recorded once.
  std::set<std::pair<const Rule*, int64_t>> rejected;
  Match match;
  for (int sweep = 0;; ++sweep) {
    if (sweep == max_sweeps) {
      MLAFUSE_FAIL("rewrite rules still apply after ", max_sweeps,
                   " sweeps over the graph: the rules form a cycle");
    }
    bool sweep_changed = false;
    // Nodes created by a rewrite are visited in the next sweep; removed ones are skipped.
    const std::vector<ir::Node*> snapshot = graph.nodes();
    std::unordered_set<const ir::Node*> removed;  // never dereferenced: some are freed
    for (ir::Node* node : snapshot) {
      if (removed.count(node) != 0) continue;
      const std::vector<Rule>* candidates = rules.rules_for(node->op());
      if (candidates == nullptr) continue;
      for (const Rule& rule : *candidates) {
        if (!match_pattern(rule.pattern, node, match)) continue;
        RewriteResult res = rule.rewrite(match);
        std::string reason;
        std::vector<std::optional<ir::ValueType>> types;
        Replacement repl;
        if (res.is_reject()) {
          reason = res.reason();
        } else if (res.is_replace()) {
          repl = std::move(res).take_replacement();
          reason = check_replacement(graph, match, repl, types);
        } else {
          continue;
        }
        const std::string& label = res.label().empty() ? rule.name : res.label();
        if (!reason.empty()) {
          if (rejected.emplace(&rule, node->id()).second) {
            stats.rejections.push_back(Rejection{label, node->label(), std::move(reason)});
          }
          continue;
        }
        for (const ir::Node* n : match.nodes()) removed.insert(n);
        commit(graph, match, repl, types);
        ++stats.matches;
        ++stats.pattern_matches[label];
        sweep_changed = true;
        break;  // `node` is gone
      }
    }
    changed |= sweep_changed;
    if (!sweep_changed) break;
  }
  return changed;
}

}  // namespace mlafuse::passes
