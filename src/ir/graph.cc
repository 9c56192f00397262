#include "mlafuse/ir/graph.h"

#include <algorithm>
#include <queue>

#include "mlafuse/core/error.h"
#include "mlafuse/ir/op_registry.h"

namespace mlafuse::ir {

std::string ValueType::str() const {
  // Formatted by hand: printing a large graph formats thousands of types.
  std::string s(dtype_name(dtype));
  s += '[';
  for (size_t i = 0; i < shape.dims.size(); ++i) {
    if (i) s += ", ";
    if (shape.dims[i].is_tokens()) {
      s += 'T';
    } else {
      s += std::to_string(shape.dims[i].value);
    }
  }
  s += ']';
  if (layout != Layout::kRowMajor) {
    s += '{';
    s += layout_name(layout);
    s += '}';
  }
  return s;
}

// ---- Node ------------------------------------------------------------------------------------

Node::Node(int64_t id, const OpSchema* schema, AttrMap attrs)
    : id_(id), op_(schema->name), schema_(schema), attrs_(std::move(attrs)) {}

Value* Node::input(std::string_view name) const {
  const int i = schema_->input_index(name);
  MLAFUSE_CHECK(i >= 0, "op ", op_, " has no input named '", name, "'");
  return inputs_[static_cast<size_t>(i)];
}

Value* Node::output(std::string_view name) const {
  const int i = schema_->output_index(name);
  MLAFUSE_CHECK(i >= 0, "op ", op_, " has no output named '", name, "'");
  return outputs_[static_cast<size_t>(i)];
}

std::string Node::label() const {
  std::string s;
  for (const Value* v : outputs_) {
    if (!s.empty()) s += ", ";
    s += v ? "%" + v->name() : "_";
  }
  return s + " = " + op_;
}

// ---- Graph: building ---------------------------------------------------------------------------

Graph::Graph() = default;
Graph::~Graph() = default;
Graph::Graph(Graph&&) noexcept = default;
Graph& Graph::operator=(Graph&&) noexcept = default;

namespace {
bool valid_name_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
         c == '.' || c == '-';
}
}  // namespace

void Graph::check_name(const std::string& name) const {
  MLAFUSE_CHECK(!name.empty(), "a value needs a name");
  for (char c : name) {
    MLAFUSE_CHECK(valid_name_char(c), "value name '", name, "' has the character '", c,
                  "'; names use letters, digits, '_', '.' and '-'");
  }
  MLAFUSE_CHECK(by_name_.count(name) == 0, "value name '", name, "' is already defined");
}

Value* Graph::new_value(std::string name, ValueKind kind, ValueType type) {
  check_name(name);
  for (const Dim& d : type.shape.dims) {
    MLAFUSE_CHECK(d.is_tokens() || d.value >= 0, "value ", name, ": negative extent in ",
                  type.shape.str());
  }
  MLAFUSE_CHECK(fixed_bytes_fit(type.shape, dtype_size(type.dtype)), "value ", name, ": ",
                type.str(), " is more than 2^63 bytes");
  auto owned = std::unique_ptr<Value>(new Value(next_id_++, name, kind, std::move(type)));
  Value* v = owned.get();
  values_.emplace(v, std::move(owned));
  by_name_.emplace(std::move(name), v);
  return v;
}

Value* Graph::add_input(std::string name, ValueType type) {
  Value* v = new_value(std::move(name), ValueKind::kInput, std::move(type));
  inputs_.push_back(v);
  return v;
}

Value* Graph::add_weight(std::string name, ValueType type) {
  Value* v = new_value(std::move(name), ValueKind::kWeight, std::move(type));
  weights_.push_back(v);
  return v;
}

Node* Graph::new_node(std::string_view op, std::vector<Value*> inputs, AttrMap attrs) {
  const OpSchema& schema = OpRegistry::global().get(op);
  MLAFUSE_CHECK(inputs.size() <= schema.inputs.size(), "op ", op, " takes ", schema.inputs.size(),
                " inputs, got ", inputs.size());
  inputs.resize(schema.inputs.size(), nullptr);
  for (size_t i = 0; i < inputs.size(); ++i) {
    MLAFUSE_CHECK(inputs[i] == nullptr || owns(inputs[i]), "op ", op, " input ",
                  schema.inputs[i].name, " is not a value of this graph");
  }
  auto owned = std::unique_ptr<Node>(new Node(next_id_++, &schema, std::move(attrs)));
  Node* n = owned.get();
  nodes_.emplace(n, std::move(owned));
  n->inputs_ = std::move(inputs);
  n->outputs_.assign(schema.outputs.size(), nullptr);
  touch(n);
  for (size_t i = 0; i < n->inputs_.size(); ++i) {
    if (n->inputs_[i]) n->inputs_[i]->uses_.push_back(Use{n, static_cast<int>(i)});
  }
  order_.push_back(n);
  return n;
}

Node* Graph::add_node(std::string_view op, std::vector<Value*> inputs, AttrMap attrs,
                      std::vector<std::string> output_names) {
  const OpSchema& schema = OpRegistry::global().get(op);
  MLAFUSE_CHECK(inputs.size() <= schema.inputs.size(), "op ", op, " takes ", schema.inputs.size(),
                " inputs, got ", inputs.size());
  MLAFUSE_CHECK(output_names.size() <= schema.outputs.size(), "op ", op, " has ",
                schema.outputs.size(), " outputs, got ", output_names.size(), " names");
  inputs.resize(schema.inputs.size(), nullptr);
  output_names.resize(schema.outputs.size());
  std::vector<const ValueType*> in_types(inputs.size(), nullptr);
  for (size_t i = 0; i < inputs.size(); ++i) in_types[i] = inputs[i] ? &inputs[i]->type() : nullptr;
  std::vector<std::optional<ValueType>> types = schema.infer_outputs(in_types, attrs);
  std::vector<OutputDecl> decls(types.size());
  for (size_t i = 0; i < types.size(); ++i) {
    const std::string& out = schema.outputs[i].name;
    if (types[i]) {
      MLAFUSE_CHECK(!output_names[i].empty(), "op ", op, ": output ", out, " (", types[i]->str(),
                    ") needs a name");
    } else {
      MLAFUSE_CHECK(output_names[i].empty(), "op ", op, ": output ", out,
                    " is absent with these inputs and attributes, but was named '", output_names[i],
                    "'");
    }
    decls[i] = OutputDecl{output_names[i], types[i]};
  }
  return add_node_typed(op, std::move(inputs), std::move(attrs), std::move(decls));
}

Node* Graph::add_node_typed(std::string_view op, std::vector<Value*> inputs, AttrMap attrs,
                            std::vector<OutputDecl> outputs) {
  const OpSchema& schema = OpRegistry::global().get(op);
  MLAFUSE_CHECK(outputs.size() <= schema.outputs.size(), "op ", op, " has ", schema.outputs.size(),
                " outputs, got ", outputs.size());
  outputs.resize(schema.outputs.size());
  // Check every name before creating anything, so a failure leaves the graph untouched.
  for (size_t i = 0; i < outputs.size(); ++i) {
    const OutputDecl& d = outputs[i];
    if (d.name.empty()) continue;
    check_name(d.name);
    MLAFUSE_CHECK(d.type.has_value(), "op ", op, ": output ", schema.outputs[i].name, " (%", d.name,
                  ") has no type");
    for (size_t j = 0; j < i; ++j) {
      MLAFUSE_CHECK(outputs[j].name != d.name, "op ", op, ": output name '", d.name,
                    "' is used twice");
    }
  }
  Node* n = new_node(op, std::move(inputs), std::move(attrs));
  for (size_t i = 0; i < outputs.size(); ++i) {
    if (outputs[i].name.empty()) continue;
    Value* v =
        new_value(std::move(outputs[i].name), ValueKind::kNodeOutput, std::move(*outputs[i].type));
    v->producer_ = n;
    v->output_index_ = static_cast<int>(i);
    n->outputs_[i] = v;
  }
  return n;
}

void Graph::mark_output(Value* v) {
  MLAFUSE_CHECK(v != nullptr, "mark_output: no value");
  MLAFUSE_CHECK(owns(v), "mark_output: %", v->name(), " is not a value of this graph");
  MLAFUSE_CHECK(!v->is_output_, "%", v->name(), " is already a graph output");
  v->is_output_ = true;
  outputs_.push_back(v);
}

// ---- Graph: reading ----------------------------------------------------------------------------

Value* Graph::find_value(std::string_view name) const {
  auto it = by_name_.find(name);
  return it == by_name_.end() ? nullptr : it->second;
}

Value* Graph::value(std::string_view name) const {
  Value* v = find_value(name);
  MLAFUSE_CHECK(v != nullptr, "the graph has no value named '", name, "'");
  return v;
}

Value* Graph::input(std::string_view name) const {
  Value* v = value(name);
  MLAFUSE_CHECK(v->is_graph_input(), "value '", name, "' is not a graph input");
  return v;
}

Value* Graph::weight(std::string_view name) const {
  Value* v = value(name);
  MLAFUSE_CHECK(v->is_weight(), "value '", name, "' is not a weight");
  return v;
}

Value* Graph::output(std::string_view name) const {
  Value* v = value(name);
  MLAFUSE_CHECK(v->is_graph_output(), "value '", name, "' is not a graph output");
  return v;
}

std::map<std::string, int64_t> Graph::op_counts() const {
  std::map<std::string, int64_t> counts;
  for (const Node* n : order_) ++counts[n->op()];
  return counts;
}

// ---- Graph: rewriting --------------------------------------------------------------------------

void Graph::unlink_use(Value* v, Node* node, int index) {
  auto& uses = v->uses_;
  auto it = std::find(uses.begin(), uses.end(), Use{node, index});
  MLAFUSE_CHECK(it != uses.end(), "internal: use of %", v->name(), " by ", node->op(),
                " is not recorded");
  uses.erase(it);
}

void Graph::set_input(Node* node, size_t index, Value* v) {
  MLAFUSE_CHECK(index < node->inputs_.size(), "op ", node->op(), " has no input ", index);
  if (Value* old = node->inputs_[index]) unlink_use(old, node, static_cast<int>(index));
  node->inputs_[index] = v;
  if (v) v->uses_.push_back(Use{node, static_cast<int>(index)});
  touch(node);
}

void Graph::replace_all_uses(Value* from, Value* to) {
  MLAFUSE_CHECK(from != nullptr && to != nullptr, "replace_all_uses: null value");
  if (from == to) return;
  std::vector<Use> uses = from->uses_;
  for (const Use& u : uses) set_input(u.node, static_cast<size_t>(u.input_index), to);
  if (from->is_output_) {
    MLAFUSE_CHECK(!to->is_output_, "replace_all_uses: %", to->name(), " is already a graph output");
    from->is_output_ = false;
    to->is_output_ = true;
    std::replace(outputs_.begin(), outputs_.end(), from, to);
  }
}

void Graph::move_output(Value* v, Node* new_producer, size_t index) {
  MLAFUSE_CHECK(v != nullptr && v->producer_ != nullptr, "move_output: %",
                v ? v->name() : std::string("?"), " is not a node output");
  MLAFUSE_CHECK(index < new_producer->outputs_.size(), "move_output: op ", new_producer->op(),
                " has no output ", index);
  MLAFUSE_CHECK(new_producer->outputs_[index] == nullptr || new_producer->outputs_[index] == v,
                "move_output: output ", index, " of ", new_producer->op(), " is already %",
                new_producer->outputs_[index]->name());
  v->producer_->outputs_[static_cast<size_t>(v->output_index_)] = nullptr;
  touch(v->producer_);
  touch(new_producer);
  v->producer_ = new_producer;
  v->output_index_ = static_cast<int>(index);
  new_producer->outputs_[index] = v;
}

void Graph::remove_node(Node* node) {
  for (const Value* v : node->outputs_) {
    if (v == nullptr) continue;
    MLAFUSE_CHECK(!v->has_uses(), "cannot remove ", node->label(), ": %", v->name(), " has ",
                  v->num_uses(), " use(s)");
    MLAFUSE_CHECK(!v->is_output_, "cannot remove ", node->label(), ": %", v->name(),
                  " is a graph output");
  }
  for (size_t i = 0; i < node->inputs_.size(); ++i) {
    if (Value* in = node->inputs_[i]) unlink_use(in, node, static_cast<int>(i));
  }
  for (Value* v : node->outputs_) {
    if (v == nullptr) continue;
    by_name_.erase(v->name());
    values_.erase(v);
  }
  order_.erase(std::find(order_.begin(), order_.end(), node));
  nodes_.erase(node);
}

void Graph::remove_value(Value* v) {
  MLAFUSE_CHECK(v->kind_ != ValueKind::kNodeOutput, "remove_value: %", v->name(),
                " is a node output; remove its node");
  MLAFUSE_CHECK(!v->has_uses() && !v->is_output_, "remove_value: %", v->name(), " is still used");
  auto& list = v->kind_ == ValueKind::kInput ? inputs_ : weights_;
  list.erase(std::find(list.begin(), list.end(), v));
  by_name_.erase(v->name());
  values_.erase(v);
}

void Graph::place_before(Node* node, Node* anchor) {
  auto from = std::find(order_.begin(), order_.end(), node);
  MLAFUSE_CHECK(
      from != order_.end() && std::find(order_.begin(), order_.end(), anchor) != order_.end(),
      "place_before: node not in this graph");
  order_.erase(from);
  order_.insert(std::find(order_.begin(), order_.end(), anchor), node);
}

bool Graph::users_follow(const Node* node) const {
  auto at = std::find(order_.begin(), order_.end(), node);
  MLAFUSE_CHECK(at != order_.end(), "users_follow: node not in this graph");
  for (const Value* v : node->outputs_) {
    if (v == nullptr) continue;
    for (const Use& u : v->uses_) {
      if (std::find(at + 1, order_.end(), u.node) == order_.end()) return false;
    }
  }
  return true;
}

void Graph::sort() {
  // Kahn's algorithm, always taking the earliest ready node in the current order, so a valid
  // order is kept as it is.
  std::unordered_map<const Node*, size_t> pos;
  pos.reserve(order_.size());
  for (size_t i = 0; i < order_.size(); ++i) pos[order_[i]] = i;
  std::vector<int> pending(order_.size(), 0);
  for (size_t i = 0; i < order_.size(); ++i) {
    for (const Value* in : order_[i]->inputs_) {
      if (in && in->producer_) ++pending[i];
    }
  }
  std::priority_queue<size_t, std::vector<size_t>, std::greater<size_t>> ready;
  for (size_t i = 0; i < order_.size(); ++i) {
    if (pending[i] == 0) ready.push(i);
  }
  std::vector<Node*> sorted;
  sorted.reserve(order_.size());
  while (!ready.empty()) {
    Node* n = order_[ready.top()];
    ready.pop();
    sorted.push_back(n);
    for (const Value* out : n->outputs_) {
      if (out == nullptr) continue;
      for (const Use& u : out->uses_) {
        const size_t j = pos.at(u.node);
        if (--pending[j] == 0) ready.push(j);
      }
    }
  }
  if (sorted.size() != order_.size()) {
    for (size_t i = 0; i < order_.size(); ++i) {
      MLAFUSE_CHECK(pending[i] == 0, "the graph has a cycle through ", order_[i]->label());
    }
  }
  order_ = std::move(sorted);
}

}  // namespace mlafuse::ir
