// The text form of a graph (print -> parse -> print is the identity) and Graphviz export.
//
//   graph {
//     input %layers.0.q : bf16[T, 128, 192]
//     weight %layers.0.o_proj.weight : fp8e4m3[7168, 16384]
//     %layers.0.attn_out, %layers.0.kv_cache_out, _ = mla_attention(%layers.0.q, ..., _)
//         {kv_lora_rank = 512, layer = 0, ...} : bf16[T, 16384], bf16[1024, 64, 576], _
//     %layers.0.xq, %layers.0.xs = quant_fp8_group(%layers.0.attn_out) {col_major = true, ...}
//         : fp8e4m3[T, 16384], f32[T, 128]{col_major_tma}
//     output %layers.0.y, %layers.0.kv_cache_out
//   }
//
// `_` is an absent optional operand. Attribute values: 12 (i64), 0.5 / 1e-10 (f64, always with a
// '.' or an exponent), true/false, "text", [1, 2] (i64 list). `//` starts a comment. Whitespace
// and line breaks between tokens are free.
#pragma once

#include <string>
#include <string_view>

#include "mlafuse/core/error.h"
#include "mlafuse/ir/graph.h"

namespace mlafuse::ir {

std::string print_graph(const Graph& graph);

// A parse error; what() reads "<source>:<line>:<col>: <message>".
class ParseError : public Error {
 public:
  ParseError(const std::string& source, int line, int column, const std::string& message);
  int line() const { return line_; }
  int column() const { return column_; }
  const std::string& message() const { return message_; }

 private:
  int line_;
  int column_;
  std::string message_;
};

struct ParseOptions {
  std::string source_name = "<input>";  // used in error messages
  bool verify = true;  // run verify() on the result (its errors become ParseErrors at line 1)
};

// Throws ParseError (with line and column) on malformed text, unknown ops/dtypes/layouts,
// undefined or duplicate names, or (with verify) a graph that does not verify.
Graph parse_graph(std::string_view text, const ParseOptions& options = {});

// Graphviz "dot" text: one box per node, one ellipse per graph input/weight, edges labelled with
// the value's name and type, graph outputs marked.
std::string to_dot(const Graph& graph);

}  // namespace mlafuse::ir
