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

}  // namespace mlafuse::ir
