// Replays the parser fuzzer's minimized corpus (tests/data/ir/fuzz_corpus.b64) in every test run:
// each input either fails with a ParseError carrying a line and column inside the input, or
// parses and round-trips through the printer. The same properties fuzz/ir_parse_fuzzer checks.
#include <gtest/gtest.h>

#include <fstream>
#include <string>
#include <vector>

#include "mlafuse/ir/text.h"

namespace mlafuse::ir {
namespace {

std::string base64_decode(const std::string& in) {
  auto value = [](char c) -> int {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
  };
  std::string out;
  int bits = 0, acc = 0;
  for (char c : in) {
    const int v = value(c);
    if (v < 0) continue;  // '=' padding
    acc = (acc << 6) | v;
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out += static_cast<char>((acc >> bits) & 0xff);
    }
  }
  return out;
}

std::vector<std::string> load_corpus() {
  std::ifstream f(std::string(MLAFUSE_TEST_DATA_DIR) + "/ir/fuzz_corpus.b64");
  std::vector<std::string> inputs;
  std::string line;
  while (std::getline(f, line)) {
    if (line.empty() || line[0] == '#') continue;
    inputs.push_back(base64_decode(line));
  }
  return inputs;
}

int count_lines(const std::string& s) {
  int n = 1;
  for (char c : s) n += c == '\n';
  return n;
}

TEST(FuzzCorpus, EveryInputFailsCleanlyOrRoundTrips) {
  const auto inputs = load_corpus();
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
