// The graph IR: an SSA graph of named Values produced by Nodes (ops of docs/ops.md).
//
// A Value is a graph input (bound by the runtime), a weight (bound by name from the
// WeightStore), or output `i` of a Node. Every Value has a unique name, a dtype, a Shape whose
// leading dim may be the symbolic token count T, and a memory Layout. Graph outputs are Values
// marked as outputs; they are found by the Value's name. Nodes keep one input slot per schema
// input (nullptr = absent optional input) and one output slot per schema output (nullptr = absent
// optional output), so `node->input(4)` means the same operand on every `mla_attention`.
//
// Nodes are kept in a topological order: `nodes()` is a valid execution order.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "mlafuse/core/attributes.h"
#include "mlafuse/core/dtype.h"
#include "mlafuse/core/shape.h"
#include "mlafuse/quant/layout.h"

namespace mlafuse::ir {

struct OpSchema;
class Graph;
class Node;

// What a Value holds: element type, logical shape, and the memory layout its buffer must have.
struct ValueType {
  DType dtype = DType::kBF16;
  Shape shape;
  Layout layout = Layout::kRowMajor;

  bool operator==(const ValueType&) const = default;
  // Text form: "bf16[T, 128, 192]", "f32[T, 128]{col_major_tma}" (the layout only when not
  // row-major). The same form the text IR uses.
  std::string str() const;
};

enum class ValueKind { kInput, kWeight, kNodeOutput };

// One use of a Value: input slot `input_index` of `node`.
struct Use {
  Node* node = nullptr;
  int input_index = 0;
  bool operator==(const Use&) const = default;
};

class Value {
 public:
  int64_t id() const { return id_; }  // unique in its graph, never reused
  const std::string& name() const { return name_; }
  ValueKind kind() const { return kind_; }
  bool is_graph_input() const { return kind_ == ValueKind::kInput; }
  bool is_weight() const { return kind_ == ValueKind::kWeight; }
  bool is_graph_output() const { return is_output_; }

  const ValueType& type() const { return type_; }
  DType dtype() const { return type_.dtype; }
  const Shape& shape() const { return type_.shape; }
  Layout layout() const { return type_.layout; }

  // The node computing this value and which of its outputs it is (nullptr / -1 for inputs and
  // weights).
  Node* producer() const { return producer_; }
  int output_index() const { return output_index_; }

  // Input slots reading this value, in the order they were connected.
  const std::vector<Use>& uses() const { return uses_; }
  size_t num_uses() const { return uses_.size(); }
  bool has_uses() const { return !uses_.empty(); }

 private:
  friend class Graph;
  Value(int64_t id, std::string name, ValueKind kind, ValueType type)
      : id_(id), name_(std::move(name)), kind_(kind), type_(std::move(type)) {}

  int64_t id_;
  std::string name_;
  ValueKind kind_;
  ValueType type_;
  Node* producer_ = nullptr;
  int output_index_ = -1;
  std::vector<Use> uses_;
  bool is_output_ = false;
};

class Node {
 public:
  int64_t id() const { return id_; }  // unique in its graph, never reused
  const std::string& op() const { return op_; }
  const OpSchema& schema() const { return *schema_; }
  const AttrMap& attrs() const { return attrs_; }

  size_t num_inputs() const { return inputs_.size(); }
  Value* input(size_t i) const { return inputs_.at(i); }  // nullptr: absent optional input
  const std::vector<Value*>& inputs() const { return inputs_; }
  size_t num_outputs() const { return outputs_.size(); }
  Value* output(size_t i) const { return outputs_.at(i); }  // nullptr: absent optional output
  const std::vector<Value*>& outputs() const { return outputs_; }

  // By the schema's operand names ("output_scale", "output_block_scale"); nullptr when absent.
  // Throws naming the op when the schema has no such operand.
  Value* input(std::string_view name) const;
  Value* output(std::string_view name) const;

  // "%layers.0.attn_out, %layers.0.kv_cache_out = mla_attention" : for messages.
  std::string label() const;
  // The graph's mutation counter when this node was created or last had an operand slot changed
  // (see Graph::mutation_epoch). Types and attributes never change after creation, so a node not
  // touched since a verification still infers the same outputs.
  uint64_t modified_epoch() const { return modified_; }

 private:
  friend class Graph;
  Node(int64_t id, const OpSchema* schema, AttrMap attrs);

  int64_t id_;
  std::string op_;
  const OpSchema* schema_;
  AttrMap attrs_;
  std::vector<Value*> inputs_;
  std::vector<Value*> outputs_;
  uint64_t modified_ = 0;
};

// An output slot of a node being created: a name and, for `add_node_typed`, its type.
// An empty name means "absent optional output".
struct OutputDecl {
  std::string name;
  std::optional<ValueType> type;  // nullopt with add_node: inferred by the op registry
};

class Graph {
 public:
  Graph();
  ~Graph();
  Graph(Graph&&) noexcept;
  Graph& operator=(Graph&&) noexcept;
  Graph(const Graph&) = delete;
  Graph& operator=(const Graph&) = delete;

  // ---- building ------------------------------------------------------------------------------
  // Names must be unique among all values; they may contain letters, digits, '_', '.', '-'.
  Value* add_input(std::string name, ValueType type);
  Value* add_weight(std::string name, ValueType type);

  // Appends a node of a registered op. `inputs` has one entry per schema input (nullptr for an
  // absent optional input; trailing absent optional inputs may be left out). `output_names` has
  // one entry per schema output ("" where inference says the optional output is absent; trailing
  // ones may be left out). Output types come from the op's shape/dtype inference. Throws
  // mlafuse::Error naming the op and the operand on any inconsistency.
  Node* add_node(std::string_view op, std::vector<Value*> inputs, AttrMap attrs,
                 std::vector<std::string> output_names);
  // Same with explicit output types (what the parser reads). Nothing is inferred; `verify()`
  // compares these types with the op's inference.
  Node* add_node_typed(std::string_view op, std::vector<Value*> inputs, AttrMap attrs,
                       std::vector<OutputDecl> outputs);

  // Graph outputs are values, found by their names; the order is the declaration order.
  void mark_output(Value* v);

  // ---- reading -------------------------------------------------------------------------------
  const std::vector<Value*>& inputs() const { return inputs_; }    // graph inputs, in order
  const std::vector<Value*>& weights() const { return weights_; }  // weights, in order
  const std::vector<Value*>& outputs() const { return outputs_; }  // graph outputs, in order
  // Nodes in topological order (a valid execution order).
  const std::vector<Node*>& nodes() const { return order_; }
  size_t num_nodes() const { return order_.size(); }
  size_t num_values() const { return values_.size(); }
  // Every Value and Node id is below this bound (for id-indexed side tables).
  int64_t id_bound() const { return next_id_; }
  // Whether `v` is a value of this graph.
  bool owns(const Value* v) const { return v != nullptr && values_.count(v) != 0; }
  // Increases with every change to the graph's nodes (creation, operand slots).
  uint64_t mutation_epoch() const { return epoch_; }

  Value* find_value(std::string_view name) const;  // nullptr when no value has this name
  // Throws naming `name` when absent.
  Value* value(std::string_view name) const;
  Value* input(std::string_view name) const;   // a graph input; throws when not one
  Value* weight(std::string_view name) const;  // a weight; throws when not one
  Value* output(std::string_view name) const;  // a graph output; throws when not one

  // How many nodes of each op ({"mla_attention": 61, ...}).
  std::map<std::string, int64_t> op_counts() const;

  // ---- rewriting (for passes) ----------------------------------------------------------------
  // Points input slot `index` of `node` at `v` (nullptr leaves an optional input absent).
  void set_input(Node* node, size_t index, Value* v);
  // Makes every use of `from` (and its graph-output mark) refer to `to`.
  void replace_all_uses(Value* from, Value* to);
  // Re-parents `v` (a node output) to output slot `index` of `new_producer`: its name, type,
  // users and graph-output mark are kept; its old producer's slot becomes absent.
  void move_output(Value* v, Node* new_producer, size_t index);
  // Removes a node and its output values. Throws when one of them is still used or is a graph
  // output.
  void remove_node(Node* node);
  // Removes an input or weight that nothing uses and that is not a graph output.
  void remove_value(Value* v);
  // Moves `node` just before `anchor` in nodes() (the caller keeps the order topological, or
  // calls sort()).
  void place_before(Node* node, Node* anchor);
  // Whether every user of `node`'s outputs comes after it in nodes().
  bool users_follow(const Node* node) const;
  // Restores the topological order after rewrites (stable: keeps the current order where it is
  // already valid). Throws naming a node on a cycle.
  void sort();

 private:
  Value* new_value(std::string name, ValueKind kind, ValueType type);
  Node* new_node(std::string_view op, std::vector<Value*> inputs, AttrMap attrs);
  void check_name(const std::string& name) const;
  void unlink_use(Value* v, Node* node, int index);

  void touch(Node* n) { n->modified_ = ++epoch_; }

  int64_t next_id_ = 0;
  uint64_t epoch_ = 0;
  std::unordered_map<const Value*, std::unique_ptr<Value>> values_;  // owning
  std::unordered_map<const Node*, std::unique_ptr<Node>> nodes_;     // owning
  std::vector<Node*> order_;                                         // topological order
  std::vector<Value*> inputs_;
  std::vector<Value*> weights_;
  std::vector<Value*> outputs_;
  // Transparent hashing: lookups by string_view build no std::string.
  struct NameHash {
    using is_transparent = void;
    size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
  };
  std::unordered_map<std::string, Value*, NameHash, std::equal_to<>> by_name_;
};

}  // namespace mlafuse::ir
