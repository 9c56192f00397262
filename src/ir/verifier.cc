#include "mlafuse/ir/verifier.h"

#include <algorithm>

#include "mlafuse/core/error.h"
#include "mlafuse/ir/op_registry.h"

namespace mlafuse::ir {

namespace {

std::string opt_type_str(const std::optional<ValueType>& t) { return t ? t->str() : "absent"; }

// Value ids defined so far (graph inputs, weights, outputs of the nodes already checked).
class DefinedSet {
 public:
  explicit DefinedSet(int64_t bound) : bits_(static_cast<size_t>(bound), false) {}
  bool count(const Value* v) const {
    return v->id() >= 0 && v->id() < static_cast<int64_t>(bits_.size()) &&
           bits_[static_cast<size_t>(v->id())];
  }
  void insert(const Value* v) {
    MLAFUSE_CHECK(v->id() >= 0 && v->id() < static_cast<int64_t>(bits_.size()) &&
                      !bits_[static_cast<size_t>(v->id())],
                  "internal: value %", v->name(), " has a bad or repeated id");
    bits_[static_cast<size_t>(v->id())] = true;
    ++size_;
  }
  size_t size() const { return size_; }

 private:
  std::vector<bool> bits_;
  size_t size_ = 0;
};

void verify_node(const Node& n, const DefinedSet& defined, bool infer) {
  const OpSchema& schema = n.schema();
  MLAFUSE_CHECK(OpRegistry::global().find(n.op()) == &schema, "node ", n.label(),
                ": op is not registered");
  MLAFUSE_CHECK(n.num_inputs() == schema.inputs.size() && n.num_outputs() == schema.outputs.size(),
                "node ", n.label(), ": operand slots do not match the schema");
  std::vector<const ValueType*> in_types(n.num_inputs(), nullptr);
  for (size_t i = 0; i < n.num_inputs(); ++i) {
    const Value* v = n.input(i);
    if (v == nullptr) continue;
    MLAFUSE_CHECK(defined.count(v) != 0, "node ", n.label(), ": input ", schema.inputs[i].name,
                  " %", v->name(), " is used before it is defined");
    const auto& uses = v->uses();
    MLAFUSE_CHECK(std::find(uses.begin(), uses.end(),
                            Use{const_cast<Node*>(&n), static_cast<int>(i)}) != uses.end(),
                  "internal: node ", n.label(), " reads %", v->name(), " without a use record");
    in_types[i] = &v->type();
  }
  std::vector<std::optional<ValueType>> expected;
  if (infer) {
    try {
      expected = schema.infer_outputs(in_types, n.attrs());
    } catch (const Error& e) {
      MLAFUSE_FAIL("node ", n.label(), ": ", e.what());
    }
  }
  for (size_t i = 0; i < n.num_outputs(); ++i) {
    const Value* v = n.output(i);
    if (infer) {
      const std::optional<ValueType> actual =
          v ? std::optional<ValueType>(v->type()) : std::nullopt;
      MLAFUSE_CHECK(actual == expected[i], "node ", n.label(), ": output ", schema.outputs[i].name,
                    (v ? " %" + v->name() : std::string()), " is ", opt_type_str(actual),
                    ", the op infers ", opt_type_str(expected[i]));
    }
    if (v) {
      MLAFUSE_CHECK(v->producer() == &n && v->output_index() == static_cast<int>(i), "internal: %",
                    v->name(), " does not link back to ", n.label());
      for (const Use& u : v->uses()) {
        MLAFUSE_CHECK(u.node->input(static_cast<size_t>(u.input_index)) == v,
                      "internal: stale use of %", v->name());
      }
    }
  }
}

}  // namespace

void verify(const Graph& g) { verify_since(g, 0); }

void verify_since(const Graph& g, uint64_t epoch) {
  // Names are immutable and checked unique when a value is created; the name index is
  // re-checked on full verification only.
  const bool full = epoch == 0;
  DefinedSet defined(g.id_bound());
  for (const auto* list : {&g.inputs(), &g.weights()}) {
    for (const Value* v : *list) {
      MLAFUSE_CHECK(v->producer() == nullptr, "internal: input %", v->name(), " has a producer");
      MLAFUSE_CHECK(!full || g.find_value(v->name()) == v, "value name '", v->name(),
                    "' is not unique");
      defined.insert(v);
    }
  }
  for (const Node* n : g.nodes()) {
    verify_node(*n, defined, full || n->modified_epoch() > epoch);
    for (const Value* v : n->outputs()) {
      if (v == nullptr) continue;
      MLAFUSE_CHECK(!full || g.find_value(v->name()) == v, "value name '", v->name(),
                    "' is not unique");
      defined.insert(v);
    }
  }
  MLAFUSE_CHECK(defined.size() == g.num_values(), "internal: the graph holds ", g.num_values(),
                " values but only ", defined.size(), " are inputs, weights or node outputs");
  for (const Value* v : g.outputs()) {
    MLAFUSE_CHECK(v != nullptr && defined.count(v) != 0 && v->is_graph_output(), "graph output %",
                  v ? v->name() : std::string("?"), " is not defined");
  }
}

}  // namespace mlafuse::ir
