// Replays the parser fuzzer's minimized corpus (tests/data/ir/fuzz_corpus.b64) in every test run:
// each input either fails with a ParseError carrying a line and column inside the input, or
// parses and round-trips through the printer. The same properties fuzz/ir_parse_fuzzer checks.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "cpu/fuzz_corpus.h"
#include "mlafuse/ir/text.h"

namespace mlafuse::ir {
namespace {

int count_lines(const std::string& s) {
  int n = 1;
  for (char c : s) n += c == '\n';
  return n;
}

TEST(FuzzCorpus, EveryInputFailsCleanlyOrRoundTrips) {
  const auto inputs = testing::load_fuzz_corpus("ir");
  ASSERT_GE(inputs.size(), 100u);
  int parsed = 0, failed = 0;
  for (size_t i = 0; i < inputs.size(); ++i) {
    SCOPED_TRACE("corpus entry " + std::to_string(i));
    for (bool verify : {true, false}) {
      ParseOptions opts;
      opts.verify = verify;
      try {
        Graph g = parse_graph(inputs[i], opts);
        const std::string printed = print_graph(g);
        EXPECT_EQ(print_graph(parse_graph(printed, opts)), printed);
        to_dot(g);
        ++parsed;
      } catch (const ParseError& e) {
        ++failed;
        EXPECT_GE(e.line(), 1);
        EXPECT_LE(e.line(), count_lines(inputs[i]));
        EXPECT_GE(e.column(), 1);
        EXPECT_FALSE(e.message().empty());
      }
    }
  }
  // The corpus exercises both outcomes.
  EXPECT_GT(parsed, 10);
  EXPECT_GT(failed, 10);
}

}  // namespace
}  // namespace mlafuse::ir
