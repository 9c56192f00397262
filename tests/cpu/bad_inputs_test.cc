// Runs the CLI over every row of tests/data/bad_inputs.tsv (bad flags, IR files, .npy files and
// paths for every command) and checks the exit code and the first line of stderr exactly, and
// that nothing went to stdout: each bad input gets one clear error, never a crash, a hang, an
// internal error or silent acceptance. $BACKENDS in a message stands for the backends this build
// has ("cpu" or "cpu, cuda").
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "mlafuse/backends/backend.h"

namespace mlafuse {
namespace {

namespace fs = std::filesystem;

struct Row {
  int line = 0;
  std::string args;
  int exit_code = 0;
  std::string first_line;
};

std::vector<Row> load_rows() {
  std::ifstream f(std::string(MLAFUSE_TEST_DATA_DIR) + "/bad_inputs.tsv");
  std::vector<Row> rows;
  std::string line;
  for (int n = 1; std::getline(f, line); ++n) {
    if (line.empty() || line[0] == '#') continue;
    const size_t a = line.find('\t'), b = line.find('\t', a + 1);
    EXPECT_TRUE(a != std::string::npos && b != std::string::npos) << "line " << n << ": " << line;
    if (b == std::string::npos) continue;
    rows.push_back({n, line.substr(0, a), std::stoi(line.substr(a + 1, b - a - 1)),
                    line.substr(b + 1)});
  }
  return rows;
}

std::string replace_all(std::string s, const std::string& from, const std::string& to) {
  for (size_t i = s.find(from); i != std::string::npos; i = s.find(from, i + to.size())) {
    s.replace(i, from.size(), to);
  }
  return s;
}

std::string slurp(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

TEST(BadInputs, EveryRowExitsWithItsCodeAndFirstLine) {
  const std::vector<Row> rows = load_rows();
  ASSERT_GE(rows.size(), 159u);
  const fs::path tmp = fs::temp_directory_path() / ("mlafuse_bad_" + std::to_string(::getpid()));
  const fs::path out = tmp.string() + ".out", err = tmp.string() + ".err";
  std::string backends;  // what this build has: "cpu" or "cpu, cuda"
  for (const std::string& b : available_backends()) backends += (backends.empty() ? "" : ", ") + b;
  for (const Row& r : rows) {
    SCOPED_TRACE("bad_inputs.tsv:" + std::to_string(r.line) + ": " + r.args);
    fs::remove_all(tmp);
    fs::create_directories(tmp);  // $TMP: fresh and empty for every row
    auto expand = [&](const std::string& s) {
      return replace_all(
          replace_all(replace_all(s, "$DATA", MLAFUSE_TEST_DATA_DIR), "$TMP", tmp.string()),
          "$BACKENDS", backends);
    };
    // `timeout`: a hang is a failure too (exit 124).
    const std::string cmd = "timeout 120 " + std::string(MLAFUSE_CLI_PATH) + " " + expand(r.args) +
                            " >" + out.string() + " 2>" + err.string();
    const int status = std::system(cmd.c_str());
    const int rc = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    const std::string stderr_text = slurp(err);
    EXPECT_EQ(rc, r.exit_code) << stderr_text;
    EXPECT_EQ(stderr_text.substr(0, stderr_text.find('\n')), expand(r.first_line));
    EXPECT_EQ(stderr_text.find("internal error"), std::string::npos) << stderr_text;
    EXPECT_EQ(slurp(out), "");
  }
  fs::remove_all(tmp);
  fs::remove(out);
  fs::remove(err);
}

}  // namespace
}  // namespace mlafuse
