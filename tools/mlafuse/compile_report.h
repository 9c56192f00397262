// The JSON report of one compile (`mlafuse compile --json`), shared with the Python package's
// mlafuse.compile() so both print the same document.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "mlafuse/ir/graph.h"
#include "mlafuse/passes/pass_manager.h"

namespace mlafuse::cli {

std::string compile_report_json(const std::vector<passes::PassStats>& stats,
                                const std::map<std::string, int64_t>& ops_before,
                                const ir::Graph& after, const std::string& source,
                                const std::string& backend, double compile_us);

}  // namespace mlafuse::cli
