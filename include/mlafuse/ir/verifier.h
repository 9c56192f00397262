// The graph verifier: every invariant a pass may rely on.
#pragma once

#include "mlafuse/ir/graph.h"

namespace mlafuse::ir {

// Throws mlafuse::Error naming the node or value and what was expected when:
// - a node's op is unknown, its attributes do not fit the schema, a required input is absent,
//   or its output types (dtype, shape, layout) and presence differ from the op's inference;
// - an input is used before the node producing it (the node order is not topological);
// - use lists and producer links disagree (internal consistency);
// - a graph output is absent, or a value name is duplicated or malformed.
void verify(const Graph& graph);

// The same checks, except that output types are re-inferred only for nodes modified after
// `epoch` (Graph::mutation_epoch() when the graph last verified): an untouched node has the same
// input Values (whose types never change) and attributes, so it infers the same outputs. Order,
// use lists, names and graph outputs are checked everywhere.
void verify_since(const Graph& graph, uint64_t epoch);

}  // namespace mlafuse::ir
