// libFuzzer target for the IR text parser. Properties checked on every input:
// - parsing never crashes and fails only with ParseError (any other exception escapes and is a
//   finding);
// - whatever parses (verified or not) prints, re-parses and prints identically, and draws.
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "mlafuse/ir/text.h"

namespace {

void round_trip(std::string_view text, bool verify) {
  mlafuse::ir::ParseOptions opts;
  opts.verify = verify;
  mlafuse::ir::Graph g;
  try {
    g = mlafuse::ir::parse_graph(text, opts);
  } catch (const mlafuse::ir::ParseError&) {
    return;
  }
  const std::string printed = mlafuse::ir::print_graph(g);
  const std::string again = mlafuse::ir::print_graph(mlafuse::ir::parse_graph(printed, opts));
  if (again != printed) std::abort();
  (void)mlafuse::ir::to_dot(g);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  round_trip(text, true);
  round_trip(text, false);
  return 0;
}
