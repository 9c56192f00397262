// `mlafuse compile` end to end: the pipeline on built and read graphs with the CPU backend, its
// JSON and text reports, the files it writes, and one clear error (never a crash) on bad input.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <sstream>

#include "mlafuse/backends/backend.h"
#include "mlafuse/ir/text.h"

namespace mlafuse {
namespace {

struct CliResult {
  int rc = -1;
  std::string out;
  std::string err;
};

std::string slurp(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

// Per process: ctest runs the tests of this file in parallel processes.
std::string tmp_path(const std::string& name) {
  return ::testing::TempDir() + "mlafuse_compile_" + std::to_string(getpid()) + "_" + name;
}

CliResult run_cli(const std::string& args) {
  const std::string out = tmp_path("cli_stdout.txt"), err = tmp_path("cli_stderr.txt");
  const std::string cmd =
      std::string(MLAFUSE_CLI_PATH) + " compile " + args + " >" + out + " 2>" + err;
  const int status = std::system(cmd.c_str());
  CliResult r;
  r.rc = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  r.out = slurp(out);
  r.err = slurp(err);
  return r;
}

std::string data(const std::string& name) {
  return std::string(MLAFUSE_TEST_DATA_DIR) + "/ir/" + name;
}

// The integer after "key": in the object that follows `anchor` (the writer's layout is fixed).
int64_t json_int(const std::string& json, const std::string& anchor, const std::string& key) {
  size_t at = json.find(anchor);
  EXPECT_NE(at, std::string::npos) << anchor << " in " << json;
  at = json.find("\"" + key + "\": ", at);
  EXPECT_NE(at, std::string::npos) << key << " in " << json;
  if (at == std::string::npos) return -1;  // npos + offset would wrap to the file's start
  return std::stoll(json.substr(at + key.size() + 4));
}

TEST(CompileCli, DeepSeekV3With61LayersFusesEveryLayer) {
  CliResult r = run_cli("--layers 61 --quant fp8-group128 --col-major --tma-aligned --json");
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_TRUE(r.err.empty()) << r.err;
  const std::string& j = r.out;
  EXPECT_EQ(json_int(j, "\"name\": \"mla-attn-quant-fusion\"", "matches"), 61) << j;
  EXPECT_NE(j.find("\"patterns\": {\"fp8-group128-col-major-tma-aligned\": 61}"), std::string::npos)
      << j;
  EXPECT_NE(j.find("\"rejections\": []"), std::string::npos);
  EXPECT_NE(j.find("\"ops_before\": {\"linear_fp8_block\": 61, \"mla_attention\": 61, "
                   "\"quant_fp8_group\": 61}"),
            std::string::npos)
      << j;
  EXPECT_NE(j.find("\"ops_after\": {\"linear_fp8_block\": 61, \"mla_attention\": 61}"),
            std::string::npos)
      << j;
  EXPECT_NE(j.find("\"compile_us\": "), std::string::npos);
  EXPECT_EQ(j.back(), '\n');
  EXPECT_EQ(std::count(j.begin(), j.end(), '\n'), 1);  // one JSON object, one line
}

TEST(CompileCli, EveryQuantizationFusesWithTheCpuBackend) {
  for (const char* q : {"fp8-static", "fp8-group128 --ue8m0", "fp8-group64 --col-major", "nvfp4"}) {
    CliResult r = run_cli(std::string("--layers 2 --heads 16 --backend cpu --json --quant ") + q);
    ASSERT_EQ(r.rc, 0) << q << ": " << r.err;
    EXPECT_EQ(json_int(r.out, "mla-attn-quant-fusion", "matches"), 2) << q << ": " << r.out;
    EXPECT_EQ(r.out.find("quant_", r.out.find("\"ops_after\"")), std::string::npos) << r.out;
  }
}

TEST(CompileCli, NoQuantizationHasNothingToFuse) {
  CliResult r = run_cli("--json");
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_EQ(json_int(r.out, "mla-attn-quant-fusion", "matches"), 0);
  EXPECT_NE(r.out.find("\"ops_after\": {\"mla_attention\": 1}"), std::string::npos) << r.out;
}

TEST(CompileCli, TextReportShowsBeforePassesAndAfter) {
  CliResult r = run_cli("--quant nvfp4 --heads 16");
  ASSERT_EQ(r.rc, 0) << r.err;
  const std::string& o = r.out;
  const size_t before = o.find("// ---- before\ngraph {");
  const size_t pass = o.find("pass mla-attn-quant-fusion: changed, 1 match(es), nodes 3 -> 2");
  const size_t after = o.find("// ---- after\ngraph {");
  ASSERT_NE(before, std::string::npos) << o;
  ASSERT_NE(pass, std::string::npos) << o;
  ASSERT_NE(after, std::string::npos) << o;
  EXPECT_LT(before, pass);
  EXPECT_LT(pass, after);
  EXPECT_NE(o.find("quant_nvfp4"), std::string::npos);
  EXPECT_EQ(o.find("quant_nvfp4", after), std::string::npos);
  EXPECT_NE(o.find("quant_group_size = 16", after), std::string::npos);
  EXPECT_NE(o.find("pass dce: unchanged"), std::string::npos);
}

TEST(CompileCli, WritesTextAndDotThatReadBack) {
  const std::string out = tmp_path("fused.ir"), dot = tmp_path("fused.dot");
  CliResult r =
      run_cli("--layers 3 --quant fp8-group64 --col-major --json --out " + out + " --dot " + dot);
  ASSERT_EQ(r.rc, 0) << r.err;
  const std::string text = slurp(out);
  ir::Graph g = ir::parse_graph(text);
  EXPECT_EQ(ir::print_graph(g), text);
  EXPECT_EQ(g.op_counts()["quant_fp8_group"], 0);
  EXPECT_EQ(g.value("layers.2.xs")->type().str(), "f32[T, 256]{col_major}");
  EXPECT_EQ(slurp(dot).rfind("digraph mlafuse {", 0), 0u);

  // Compiling the compiled graph again finds nothing left to fuse and changes nothing.
  const std::string again = tmp_path("fused_again.ir");
  CliResult r2 = run_cli("--in " + out + " --out " + again + " --json");
  ASSERT_EQ(r2.rc, 0) << r2.err;
  EXPECT_EQ(json_int(r2.out, "mla-attn-quant-fusion", "matches"), 0);
  EXPECT_NE(r2.out.find("\"changed\": false"), std::string::npos);
  EXPECT_EQ(slurp(again), text);
}

TEST(CompileCli, ReadsATextGraph) {
  CliResult r = run_cli("--in " + data("good_deepseek_layer.ir") + " --json");
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_EQ(json_int(r.out, "mla-attn-quant-fusion", "matches"), 1) << r.out;
  EXPECT_NE(r.out.find("\"fp8-group128-col-major-tma-aligned\": 1"), std::string::npos) << r.out;
}

TEST(CompileCli, DisabledFusionLeavesTheQuantNodes) {
  CliResult r = run_cli("--quant fp8-static --disable mla-attn-quant-fusion --json");
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_NE(r.out.find("\"name\": \"mla-attn-quant-fusion\", \"ran\": false"), std::string::npos)
      << r.out;
  EXPECT_NE(r.out.find("\"quant_fp8_static\": 1}", r.out.find("\"ops_after\"")), std::string::npos)
      << r.out;
}

TEST(CompileCli, HelpListsTheOptions) {
  CliResult r = run_cli("--help");
  EXPECT_EQ(r.rc, 0);
  for (const char* opt :
       {"--layers N", "--heads H", "--quant none|fp8-static", "--col-major", "--ue8m0",
        "--tma-aligned", "--backend NAME", "--in FILE", "--out FILE", "--dot FILE", "--json"}) {
    EXPECT_NE(r.out.find(opt), std::string::npos) << opt << "\n" << r.out;
  }
}

// Bad input: exit status 2, exactly one line on stderr naming the problem, nothing on stdout.
struct BadCase {
  std::string args;
  std::string message;
};

TEST(CompileCli, BadInputGivesOneClearError) {
  const std::vector<BadCase> cases = {
      {"--bogus", "unknown option '--bogus'"},
      {"--layers", "option --layers needs a value (N)"},
      {"--layers x", "option --layers expects an integer N, got 'x'"},
      {"--layers 0", "option --layers must be in [1, 4096], got 0"},
      {"--layers 2 --layers 3", "option --layers is given twice"},
      {"--quant int8",
       "option --quant must be one of none|fp8-static|fp8-group128|fp8-group64|"
       "nvfp4, got 'int8'"},
      {"--col-major", "--col-major applies to --quant fp8-group128 or fp8-group64, not none"},
      {"--quant nvfp4 --ue8m0", "--ue8m0 applies to --quant fp8-group128 or fp8-group64"},
      {"--quant fp8-group128 --tma-aligned",
       "--tma-aligned pads column-major scales and needs --col-major"},
      {"--in x.ir --layers 2", "--layers builds a graph, --in reads one"},
      {"stray", "unexpected argument 'stray'"},
      {"--json --dump", "--dump prints graphs as text"},
      {"--backend tpu", "unknown backend 'tpu'"},
      {"--disable nope", "cannot disable pass 'nope'"},
      {"--in /nonexistent/graph.ir", "/nonexistent/graph.ir: cannot open for reading"},
      {"--in " + std::string(MLAFUSE_TEST_DATA_DIR), "it is a directory"},
      {"--in " + data("bad_unknown_dtype.ir"), "bad_unknown_dtype.ir:3:14: unknown dtype 'bf17'"},
      {"--in " + data("bad_attention_heads.ir"),
       "bad_attention_heads.ir:7:25: mla_attention input q: expected dim 1 == 128, got "
       "bf16[T, 64, 192]"},
      {"--in " + data("bad_inferred_layout.ir"), "the op infers f32[T, 2]{col_major_tma}"},
      {"--in " + data("bad_control_byte.ir"), "unexpected byte 0x01"},
  };
  for (const BadCase& c : cases) {
    SCOPED_TRACE(c.args);
    CliResult r = run_cli(c.args);
    EXPECT_EQ(r.rc, 2);
    EXPECT_TRUE(r.out.empty()) << r.out;
    EXPECT_EQ(r.err.rfind("mlafuse compile: error: ", 0), 0u) << r.err;
    EXPECT_NE(r.err.find(c.message), std::string::npos) << r.err;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  }
}

// The CUDA backend answers the fusion question without a GPU (CUDA builds only).
TEST(CompileCli, CudaBackendAnswersWithoutAGpu) {
  const auto names = available_backends();
  if (std::find(names.begin(), names.end(), "cuda") == names.end()) {
    GTEST_SKIP() << "this build has no CUDA backend";
  }
  CliResult r = run_cli(
      "--backend cuda --layers 61 --quant fp8-group128 --col-major "
      "--tma-aligned --json");
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_EQ(json_int(r.out, "mla-attn-quant-fusion", "matches"), 61) << r.out;
  // Its kernels take 16, 32, 64 or 128 heads: 8 heads stay unfused, with the reason.
  CliResult n = run_cli("--backend cuda --heads 8 --quant fp8-static --json");
  ASSERT_EQ(n.rc, 0) << n.err;
  EXPECT_EQ(json_int(n.out, "mla-attn-quant-fusion", "matches"), 0) << n.out;
  EXPECT_NE(n.out.find("backend 'cuda' does not support"), std::string::npos) << n.out;
}

TEST(CompileCli, UnwritableOutputIsAnError) {
  CliResult r = run_cli("--out /nonexistent/dir/out.ir");
  EXPECT_EQ(r.rc, 2);
  EXPECT_NE(r.err.find("cannot write '/nonexistent/dir/out.ir'"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace mlafuse
