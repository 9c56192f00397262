// Op schemas: operands, attributes and shape/dtype inference for every op of docs/ops.md.
#pragma once

#include <functional>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "mlafuse/core/attributes.h"
#include "mlafuse/ir/graph.h"
#include "mlafuse/ir/op_contract.h"
#include "mlafuse/quant/quant_key.h"

namespace mlafuse::ir {

enum class AttrKind { kInt, kFloat, kBool, kString, kInts };
std::string_view attr_kind_name(AttrKind k);  // "i64", "f64", "bool", "string", "i64[]"

struct OperandSpec {
  std::string name;
  bool optional = false;
};

struct AttrSpec {
  std::string name;
  AttrKind kind = AttrKind::kInt;
  bool required = true;
};

// Output types from input types and attributes: one entry per schema output, nullopt where an
// optional output is absent. Input entries are nullptr for absent optional inputs. Throws
// mlafuse::Error naming the operand, its type and what was expected.
using InferFn = std::function<std::vector<std::optional<ValueType>>(
    std::span<const ValueType* const> inputs, const AttrMap& attrs)>;

struct OpSchema {
  std::string name;
  std::vector<OperandSpec> inputs;
  std::vector<OperandSpec> outputs;
  std::vector<AttrSpec> attrs;  // attributes not listed here are errors; add() sorts them by name
  InferFn infer;

  int input_index(std::string_view operand) const;   // -1 when absent
  int output_index(std::string_view operand) const;  // -1 when absent
  const AttrSpec* find_attr(std::string_view attr) const;
  // Checks attribute names, kinds and required ones; throws naming the op and the attribute.
  void check_attrs(const AttrMap& attrs) const;
  // check_attrs, operand arity and optionality, then `infer`.
  std::vector<std::optional<ValueType>> infer_outputs(std::span<const ValueType* const> inputs,
                                                      const AttrMap& attrs) const;
};

class OpRegistry {
 public:
  // The process-wide registry, holding the built-in ops of docs/ops.md: mla_attention,
  // quant_fp8_static, quant_fp8_group, quant_nvfp4, linear_fp8_block, linear_nvfp4, cache_write.
  static OpRegistry& global();

  // Adds or replaces a schema. Returned pointers stay valid for the registry's lifetime.
  const OpSchema* add(OpSchema schema);
  const OpSchema* find(std::string_view op) const;  // nullptr when unknown
  // Throws naming the op and listing the registered ones when unknown.
  const OpSchema& get(std::string_view op) const;
  std::vector<std::string> names() const;  // sorted

 private:
  OpRegistry();
  std::vector<std::unique_ptr<OpSchema>> schemas_;
};

// Op names, slots and attribute names are in op_contract.h; the default eps of the group quant.
namespace ops {
using mlafuse::kDefaultQuantEps;
}  // namespace ops

}  // namespace mlafuse::ir
