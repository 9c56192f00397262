#include "mlafuse/passes/pattern.h"

#include <algorithm>

#include "mlafuse/core/error.h"

namespace mlafuse::passes {

namespace {
std::string attr_text(const AttrValue& v) {
  switch (v.index()) {
    case 0:
      return std::to_string(std::get<int64_t>(v));
    case 1:
      return std::to_string(std::get<double>(v));
    case 2:
      return std::get<bool>(v) ? "true" : "false";
    case 3:
      return "\"" + std::get<std::string>(v) + "\"";
    default: {
      std::string s = "[";
      for (int64_t x : std::get<std::vector<int64_t>>(v)) {
        if (s.size() > 1) s += ", ";
        s += std::to_string(x);
      }
      return s + "]";
    }
  }
}
}  // namespace

// ---- AttrPred ----------------------------------------------------------------------------------

AttrPred AttrPred::eq(std::string_view name, AttrValue v) {
  std::string desc = std::string(name) + " == " + attr_text(v);
  return {std::string(name), [v](const AttrValue* a) { return a != nullptr && *a == v; },
          std::move(desc)};
}

AttrPred AttrPred::eq_or(std::string_view name, AttrValue v, AttrValue if_absent) {
  std::string desc = std::string(name) + " == " + attr_text(v) + " (absent: " + attr_text(if_absent) + ")";
  return {std::string(name), [v, if_absent](const AttrValue* a) { return (a ? *a : if_absent) == v; },
          std::move(desc)};
}

AttrPred AttrPred::absent(std::string_view name) {
  std::string desc = "no " + std::string(name);
  return {std::string(name), [](const AttrValue* a) { return a == nullptr; }, std::move(desc)};
}

AttrPred AttrPred::present(std::string_view name) {
  std::string desc = "has " + std::string(name);
  return {std::string(name), [](const AttrValue* a) { return a != nullptr; }, std::move(desc)};
}

AttrPred AttrPred::custom(std::string_view name, std::function<bool(const AttrValue*)> test,
                          std::string description) {
  return {std::string(name), std::move(test), std::move(description)};
}

// ---- ValuePat / NodePat ------------------------------------------------------------------------

ValuePat ValuePat::any() { return ValuePat(); }

ValuePat ValuePat::absent() {
  ValuePat p;
  p.kind_ = Kind::kAbsent;
  return p;
}

ValuePat ValuePat::any_or_absent() {
  ValuePat p;
  p.kind_ = Kind::kAnyOrAbsent;
  return p;
}

ValuePat ValuePat::output_of(const NodePat& producer, size_t index) {
  ValuePat p;
  p.kind_ = Kind::kOutputOf;
  p.producer_ = std::make_shared<const NodePat>(producer);
  p.index_ = index;
  return p;
}

ValuePat& ValuePat::as(std::string capture) {
  capture_ = std::move(capture);
  return *this;
}

ValuePat& ValuePat::dtype(DType d) {
  dtype_ = d;
  return *this;
}

NodePat::NodePat(std::string op) : op_(std::move(op)) {}

NodePat& NodePat::as(std::string capture) {
  capture_ = std::move(capture);
  return *this;
}

NodePat& NodePat::attr(AttrPred pred) {
  attrs_.push_back(std::move(pred));
  return *this;
}

NodePat& NodePat::input(size_t slot, ValuePat v) {
  inputs_.emplace_back(slot, std::move(v));
  return *this;
}

NodePat& NodePat::output(size_t slot, std::string capture) {
  outputs_.emplace_back(slot, std::move(capture));
  return *this;
}

// ---- Match -------------------------------------------------------------------------------------

void Match::clear() {
  matched_.clear();
  node_captures_.clear();
  value_captures_.clear();
}

ir::Node* Match::node(std::string_view capture) const {
  for (const auto& [name, n] : node_captures_) {
    if (name == capture) return n;
  }
  MLAFUSE_FAIL("the pattern captures no node named '", capture, "'");
}

ir::Value* Match::value(std::string_view capture) const {
  for (const auto& [name, v] : value_captures_) {
    if (name == capture) return v;
  }
  MLAFUSE_FAIL("the pattern captures no value named '", capture, "'");
}

bool Match::has_value(std::string_view capture) const {
  for (const auto& [name, v] : value_captures_) {
    if (name == capture) return true;
  }
  return false;
}

// ---- the matcher -------------------------------------------------------------------------------

class Matcher {
 public:
  static bool run(const NodePat& pattern, ir::Node* root, Match& match) {
    match.clear();
    Matcher m(match);
    if (!m.node(pattern, root)) {
      match.clear();
      return false;
    }
    // Producers are recorded before their consumers, so the root comes last; put it first.
    auto& nodes = match.matched_;
    std::rotate(nodes.begin(), nodes.end() - 1, nodes.end());
    return true;
  }

 private:
  explicit Matcher(Match& m) : m_(m) {}

  bool node(const NodePat& p, ir::Node* n) {
    if (n->op() != p.op_) return false;
    for (const AttrPred& a : p.attrs_) {
      if (!a.test(n->attrs().find(a.name))) return false;
    }
    for (const auto& [slot, vp] : p.inputs_) {
      if (slot >= n->num_inputs()) return false;
      if (!value(vp, n->input(slot))) return false;
    }
    for (const auto& [slot, capture] : p.outputs_) {
      if (slot >= n->num_outputs()) return false;
      if (!bind_value(capture, n->output(slot))) return false;
    }
    if (!p.capture_.empty() && !bind_node(p.capture_, n)) return false;
    if (std::find(m_.matched_.begin(), m_.matched_.end(), n) == m_.matched_.end()) {
      m_.matched_.push_back(n);
    }
    return true;
  }

  bool value(const ValuePat& p, ir::Value* v) {
    switch (p.kind_) {
      case ValuePat::Kind::kAbsent:
        if (v != nullptr) return false;
        break;
      case ValuePat::Kind::kAny:
        if (v == nullptr) return false;
        break;
      case ValuePat::Kind::kAnyOrAbsent:
        break;
      case ValuePat::Kind::kOutputOf:
        if (v == nullptr || v->producer() == nullptr ||
            v->output_index() != static_cast<int>(p.index_)) {
          return false;
        }
        if (p.dtype_ && v->dtype() != *p.dtype_) return false;
        if (!node(*p.producer_, v->producer())) return false;
        break;
    }
    if (p.dtype_ && v != nullptr && v->dtype() != *p.dtype_) return false;
    return p.capture_.empty() || bind_value(p.capture_, v);
  }

  bool bind_value(std::string_view name, ir::Value* v) {
    for (const auto& [n, bound] : m_.value_captures_) {
      if (n == name) return bound == v;  // one name, one value (DAG patterns)
    }
    m_.value_captures_.emplace_back(std::string(name), v);
    return true;
  }

  bool bind_node(std::string_view name, ir::Node* node) {
    for (const auto& [n, bound] : m_.node_captures_) {
      if (n == name) return bound == node;
    }
    m_.node_captures_.emplace_back(std::string(name), node);
    return true;
  }

  Match& m_;
};

bool match_pattern(const NodePat& pattern, ir::Node* node, Match& match) {
  return Matcher::run(pattern, node, match);
}

}  // namespace mlafuse::passes
