// The fuzzers' corpora as the tests read them: tests/data/<name>/fuzz_corpus.b64, one input per
// line in base64, '#' lines are comments (scripts/fuzz.sh writes and reads the same files).
#pragma once

#include <fstream>
#include <string>
#include <vector>

namespace mlafuse::testing {

inline std::string base64_decode(const std::string& in) {
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
    acc = ((acc << 6) | v) & 0xffffff;
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out += static_cast<char>((acc >> bits) & 0xff);
    }
  }
  return out;
}

// `name` is "ir", "npy" or "metadata".
inline std::vector<std::string> load_fuzz_corpus(const std::string& name) {
  std::ifstream f(std::string(MLAFUSE_TEST_DATA_DIR) + "/" + name + "/fuzz_corpus.b64");
  std::vector<std::string> inputs;
  std::string line;
  while (std::getline(f, line)) {
    if (line.empty() || line[0] == '#') continue;
    inputs.push_back(base64_decode(line));
  }
  return inputs;
}

}  // namespace mlafuse::testing
