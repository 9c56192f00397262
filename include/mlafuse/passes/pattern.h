// Patterns as data: a tree of node patterns (op, attribute predicates, operand patterns) with
// named captures of nodes and values. Multi-output ops are matched through `output_of(producer,
// index)`. The matcher knows nothing about any particular op.
//
//   NodePat attn = NodePat("mla_attention").as("attn").attr(AttrPred::absent("quant_group_size"));
//   NodePat quant = NodePat("quant_fp8_group").as("quant")
//                       .attr(AttrPred::eq("group_size", int64_t{128}))
//                       .input(0, ValuePat::output_of(attn, 0).as("attn_out"))
//                       .output(1, "scale");
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "mlafuse/core/attributes.h"
#include "mlafuse/ir/graph.h"

namespace mlafuse::passes {

// A predicate on one attribute; `value` is nullptr when the attribute is absent.
struct AttrPred {
  std::string name;
  std::function<bool(const AttrValue* value)> test;
  std::string description;  // "group_size == 128", for messages and debugging

  static AttrPred eq(std::string_view name, AttrValue v);  // present and equal
  static AttrPred eq_or(std::string_view name, AttrValue v, AttrValue if_absent);
  static AttrPred absent(std::string_view name);
  static AttrPred present(std::string_view name);
  static AttrPred custom(std::string_view name, std::function<bool(const AttrValue*)> test,
                         std::string description);
};

class NodePat;

// What an operand slot holds.
class ValuePat {
 public:
  static ValuePat any();            // a present value, from anywhere
  static ValuePat absent();         // an absent optional operand
  static ValuePat any_or_absent();  // anything, present or not
  // Output `index` of a node matching `producer`.
  static ValuePat output_of(const NodePat& producer, size_t index);

  ValuePat& as(std::string capture);  // names the value in the Match (nullptr when absent)
  ValuePat& dtype(DType d);           // requires this dtype

 private:
  friend class Matcher;
  enum class Kind { kAny, kAbsent, kAnyOrAbsent, kOutputOf };
  Kind kind_ = Kind::kAny;
  std::shared_ptr<const NodePat> producer_;
  size_t index_ = 0;
  std::string capture_;
  std::optional<DType> dtype_;
};

class NodePat {
 public:
  explicit NodePat(std::string op);

  NodePat& as(std::string capture);                   // names the node in the Match
  NodePat& attr(AttrPred pred);                       // all predicates must hold
  NodePat& input(size_t slot, ValuePat v);            // unconstrained slots match anything
  NodePat& output(size_t slot, std::string capture);  // names an output value (may be absent)

  const std::string& op() const { return op_; }

 private:
  friend class Matcher;
  std::string op_;
  std::string capture_;
  std::vector<AttrPred> attrs_;
  std::vector<std::pair<size_t, ValuePat>> inputs_;
  std::vector<std::pair<size_t, std::string>> outputs_;
};

// The result of a successful match. It owns its capture names, so it may outlive the pattern (a
// temporary NodePat is the common case).
class Match {
 public:
  ir::Node* root() const { return matched_.empty() ? nullptr : matched_.front(); }
  // Every node the pattern bound, root first (each node once).
  const std::vector<ir::Node*>& nodes() const { return matched_; }
  // Throws naming the capture when the pattern has none of that name.
  ir::Node* node(std::string_view capture) const;
  ir::Value* value(std::string_view capture) const;  // nullptr for a captured absent operand
  bool has_value(std::string_view capture) const;

 private:
  friend class Matcher;
  void clear();
  std::vector<ir::Node*> matched_;
  std::vector<std::pair<std::string, ir::Node*>> node_captures_;
  std::vector<std::pair<std::string, ir::Value*>> value_captures_;
};

// Matches `pattern` rooted at `node`; fills `match` on success (cleared first).
bool match_pattern(const NodePat& pattern, ir::Node* node, Match& match);

}  // namespace mlafuse::passes
