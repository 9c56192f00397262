// `mlafuse run`, the built binary: the default job, --json, --dump, and bad flags.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <variant>
#include <vector>

#include "mlafuse/core/npy.h"

namespace mlafuse {
namespace {

namespace fs = std::filesystem;

struct Result {
  int rc = -1;
  std::string out, err;
};

std::string slurp(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

Result run_cli(const std::string& args) {
  const fs::path dir = fs::temp_directory_path();
  // Unique per process and call: ctest runs the tests of this file as parallel processes.
  static int calls = 0;
  const std::string tag = std::to_string(::getpid()) + "_" + std::to_string(calls++);
  const fs::path out = dir / ("mlafuse_run_out_" + tag), err = dir / ("mlafuse_run_err_" + tag);
  const std::string cmd =
      std::string(MLAFUSE_CLI_PATH) + " " + args + " >" + out.string() + " 2>" + err.string();
  const int status = std::system(cmd.c_str());
  Result r;
  r.rc = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  r.out = slurp(out);
  r.err = slurp(err);
  fs::remove(out);
  fs::remove(err);
  return r;
}

// A small JSON reader: enough to prove --json is one well-formed object and to read its fields.
struct Json {
  std::variant<std::nullptr_t, bool, double, std::string, std::vector<Json>,
               std::map<std::string, Json>>
      v;
  const Json& operator[](const std::string& k) const {
    const auto& m = std::get<std::map<std::string, Json>>(v);
    auto it = m.find(k);
    if (it == m.end()) throw std::runtime_error("no key " + k);
    return it->second;
  }
  bool has(const std::string& k) const {
    return std::get<std::map<std::string, Json>>(v).count(k) != 0;
  }
  const std::vector<Json>& arr() const { return std::get<std::vector<Json>>(v); }
  double num() const { return std::get<double>(v); }
  bool boolean() const { return std::get<bool>(v); }
  const std::string& str() const { return std::get<std::string>(v); }
};

class JsonParser {
 public:
  explicit JsonParser(const std::string& s) : s_(s) {}
  Json parse_document() {
    Json j = parse();
    ws();
    if (i_ != s_.size()) fail("trailing characters");
    return j;
  }

 private:
  [[noreturn]] void fail(const std::string& what) {
    throw std::runtime_error("JSON: " + what + " at offset " + std::to_string(i_));
  }
  void ws() {
    while (i_ < s_.size() && std::isspace(static_cast<unsigned char>(s_[i_]))) ++i_;
  }
  bool eat(char c) {
    ws();
    if (i_ < s_.size() && s_[i_] == c) {
      ++i_;
      return true;
    }
    return false;
  }
  void expect(char c) {
    if (!eat(c)) fail(std::string("expected '") + c + "'");
  }
  std::string string_lit() {
    expect('"');
    std::string out;
    while (i_ < s_.size() && s_[i_] != '"') {
      if (s_[i_] == '\\') {
        ++i_;
        if (i_ >= s_.size()) fail("bad escape");
        const char e = s_[i_++];
        if (e == 'u') {
          if (i_ + 4 > s_.size()) fail("bad \\u escape");
          out += static_cast<char>(std::stoi(s_.substr(i_, 4), nullptr, 16));
          i_ += 4;
        } else {
          out += e == 'n' ? '\n' : e == 't' ? '\t' : e;
        }
      } else {
        if (static_cast<unsigned char>(s_[i_]) < 0x20) fail("control character in string");
        out += s_[i_++];
      }
    }
    expect('"');
    return out;
  }
  Json parse() {
    ws();
    if (i_ >= s_.size()) fail("unexpected end");
    const char c = s_[i_];
    Json j;
    if (c == '{') {
      ++i_;
      std::map<std::string, Json> m;
      if (!eat('}')) {
        do {
          ws();
          std::string k = string_lit();
          expect(':');
          if (m.count(k)) fail("duplicate key " + k);
          m[k] = parse();
        } while (eat(','));
        expect('}');
      }
      j.v = std::move(m);
    } else if (c == '[') {
      ++i_;
      std::vector<Json> a;
      if (!eat(']')) {
        do a.push_back(parse());
        while (eat(','));
        expect(']');
      }
      j.v = std::move(a);
    } else if (c == '"') {
      j.v = string_lit();
    } else if (s_.compare(i_, 4, "true") == 0) {
      i_ += 4;
      j.v = true;
    } else if (s_.compare(i_, 5, "false") == 0) {
      i_ += 5;
      j.v = false;
    } else if (s_.compare(i_, 4, "null") == 0) {
      i_ += 4;
      j.v = nullptr;
    } else {
      size_t used = 0;
      try {
        j.v = std::stod(s_.substr(i_, 40), &used);
      } catch (...) {
        fail("bad value");
      }
      i_ += used;
    }
    return j;
  }
  const std::string& s_;
  size_t i_ = 0;
};

TEST(RunCli, NoArgumentsRunsTheDefaultJobAndFusedEqualsUnfused) {
  const Result r = run_cli("");
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_TRUE(r.err.empty()) << r.err;
  // cpu here; cuda where a GPU is present (the default follows the machine).
  EXPECT_TRUE(r.out.rfind("backend: cpu (default", 0) == 0 ||
              r.out.rfind("backend: cuda (default", 0) == 0)
      << r.out;
  EXPECT_NE(r.out.find("H=128, P=128, R=64, V=128, L=512, hidden=7168"), std::string::npos);
  EXPECT_NE(r.out.find("4 decode tokens"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("prefill 32"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("fp8-group128 col_major tma_aligned"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("mla-attn-quant-fusion    1 match"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("bit for bit: YES"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("f32 end-to-end reference"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("fused    linear_fp8_block"), std::string::npos) << r.out;
  // The backend line says in one clause why; CPU timings say what they are.
  const std::string first = r.out.substr(0, r.out.find('\n'));
  EXPECT_LE(std::count(first.begin(), first.end(), '('), 2) << first;
  if (first.rfind("backend: cpu", 0) == 0) {
    EXPECT_NE(r.out.find("CPU timings are indicative only"), std::string::npos) << r.out;
  }
}

TEST(RunCli, VersionNamesTheBuild) {
  const Result r = run_cli("--version");
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_EQ(r.out.rfind("mlafuse 0.", 0), 0u) << r.out;
  EXPECT_NE(r.out.find("(backends built: cpu"), std::string::npos) << r.out;
  EXPECT_TRUE(r.err.empty()) << r.err;
}

TEST(RunCli, JsonIsOneObjectWithTheResults) {
  const Result r = run_cli("run --json");
  ASSERT_EQ(r.rc, 0) << r.err;
  Json j;
  ASSERT_NO_THROW(j = JsonParser(r.out).parse_document()) << r.out;
  EXPECT_TRUE(j["bitwise_equal"].boolean());
  const double rel = j["o_proj_max_rel_err"].num();
  EXPECT_GT(rel, 0.0);
  EXPECT_LT(rel, 0.05);
  EXPECT_EQ(j["config"]["heads"].num(), 128);
  EXPECT_EQ(j["batch"]["num_tokens"].num(), 36);
  EXPECT_EQ(j["fusion"].arr()[0]["matches"].num(), 1);
  EXPECT_EQ(j["ops_before"]["quant_fp8_group"].num(), 1);
  EXPECT_FALSE(j["ops_after"].has("quant_fp8_group"));
  const auto& nodes = j["nodes"].arr();
  ASSERT_EQ(nodes.size(), 5u);  // 3 unfused + 2 fused
  for (const Json& n : nodes) {
    EXPECT_GT(n["us"].num(), 0.0);
    EXPECT_FALSE(n["op"].str().empty());
  }
  EXPECT_EQ(nodes[3]["graph"].str(), "fused");
  EXPECT_EQ(nodes[3]["op"].str(), "mla_attention");
}

TEST(RunCli, StaticAndNvfp4ScalesAreCalibrated) {
  for (const char* q : {"fp8-static", "nvfp4"}) {
    const Result r = run_cli(std::string("run --json --heads 16 --layers 2 --decode-lens 5,70 "
                                         "--prefill 8:3 --quant ") +
                             q);
    ASSERT_EQ(r.rc, 0) << r.err;
    const Json j = JsonParser(r.out).parse_document();
    EXPECT_TRUE(j["bitwise_equal"].boolean()) << q;
    ASSERT_EQ(j["layers"].arr().size(), 2u);
    for (const Json& l : j["layers"].arr()) {
      const double amax = l["attn_amax"].num();
      if (std::string(q) == "fp8-static") {
        EXPECT_NEAR(l["input_scale"].num(), amax / 448.0, 1e-6 * amax);
      } else {
        EXPECT_NEAR(l["input_global_scale"].num(), 448.0 * 6.0 / amax, 1e-4 * 2688.0 / amax);
      }
    }
    EXPECT_NE(j["calibration"].str().find("amax"), std::string::npos);
  }
}

// Multi-token decodes (MTP): 2 query tokens a decode, beside a prefill; fused equals unfused and
// both stay close to the expanded-form reference.
TEST(RunCli, MultiTokenDecodes) {
  const Result r =
      run_cli("run --json --heads 16 --decode-lens 5,70 --decode-tokens 2 --prefill 4:2");
  ASSERT_EQ(r.rc, 0) << r.err;
  const Json j = JsonParser(r.out).parse_document();
  EXPECT_TRUE(j["bitwise_equal"].boolean());
  EXPECT_EQ(j["batch"]["decode_query_len"].num(), 2);
  EXPECT_EQ(j["batch"]["num_tokens"].num(), 2 * 2 + 4);
  EXPECT_LT(j["o_proj_max_rel_err"].num(), 0.05);
  const Result text = run_cli("run --heads 16 --decode-lens 5,70 --decode-tokens 2 --prefill none");
  ASSERT_EQ(text.rc, 0) << text.err;
  EXPECT_NE(text.out.find("2 decodes of 2 tokens (lengths 5, 70) = 4 tokens"), std::string::npos)
      << text.out;
}

// --decode-tokens K without --decode-lens: the default lengths (1,77,300,1000) are raised to K at
// least, so the job runs; lengths given shorter than K stay an error (bad_inputs.tsv).
TEST(RunCli, MultiTokenDecodesWithTheDefaultLengths) {
  const Result r = run_cli("run --json --heads 16 --decode-tokens 2");
  ASSERT_EQ(r.rc, 0) << r.err;
  const Json j = JsonParser(r.out).parse_document();
  EXPECT_TRUE(j["bitwise_equal"].boolean());
  EXPECT_EQ(j["batch"]["decode_query_len"].num(), 2);
  const std::vector<Json>& lens = j["batch"]["decode_lens"].arr();
  ASSERT_EQ(lens.size(), 4u);
  EXPECT_EQ(lens[0].num(), 2);
  EXPECT_EQ(lens[1].num(), 77);
  EXPECT_EQ(lens[2].num(), 300);
  EXPECT_EQ(lens[3].num(), 1000);
  EXPECT_EQ(j["batch"]["num_tokens"].num(), 4 * 2 + 32);  // the default prefill: 32 tokens
  EXPECT_LT(j["o_proj_max_rel_err"].num(), 0.05);
  const Result given = run_cli("run --heads 16 --decode-tokens 2 --decode-lens 1,77");
  EXPECT_EQ(given.rc, 2);
  EXPECT_NE(given.err.find("decode sequence 0: length must be in [2, "), std::string::npos)
      << given.err;
}

TEST(RunCli, DumpWritesTheComparedTensorsAsNpy) {
  const fs::path dir = fs::temp_directory_path() / "mlafuse_run_dump_test";
  fs::remove_all(dir);
  const Result r =
      run_cli("run --heads 16 --decode-lens 3,65 --prefill 4:2 --dump " + dir.string());
  ASSERT_EQ(r.rc, 0) << r.err;
  const int64_t n = 6, hv = 16 * 128;
  const Tensor xq = read_npy((dir / "fused/layers.0.xq.npy").string(), DType::kU8, 2);
  EXPECT_EQ(xq.shape(), (std::vector<int64_t>{n, hv}));
  const Tensor xs = read_npy((dir / "fused/layers.0.xs.npy").string(), DType::kF32, 2);
  EXPECT_EQ(xs.shape(), (std::vector<int64_t>{n, hv / 128}));
  const Tensor y = read_npy((dir / "fused/layers.0.y.npy").string(), DType::kF32, 2);
  const Tensor yu = read_npy((dir / "unfused/layers.0.y.npy").string(), DType::kF32, 2);
  const Tensor yr = read_npy((dir / "reference/layers.0.y_ref.npy").string(), DType::kF32, 2);
  EXPECT_EQ(y.shape(), (std::vector<int64_t>{n, 7168}));
  EXPECT_EQ(yr.shape(), y.shape());
  // The files hold the compared tensors: fused == unfused, and y close to y_ref.
  EXPECT_EQ(slurp(dir / "fused/layers.0.xq.npy"), slurp(dir / "unfused/layers.0.xq.npy"));
  EXPECT_EQ(slurp(dir / "fused/layers.0.xs.npy"), slurp(dir / "unfused/layers.0.xs.npy"));
  EXPECT_EQ(slurp(dir / "fused/layers.0.y.npy"), slurp(dir / "unfused/layers.0.y.npy"));
  double ymax = 0, err = 0;
  for (int64_t i = 0; i < y.numel(); ++i) {
    ymax = std::max(ymax, static_cast<double>(std::fabs(yr.data<float>()[i])));
    err = std::max(err, static_cast<double>(std::fabs(y.data<float>()[i] - yr.data<float>()[i])));
  }
  EXPECT_GT(ymax, 0.1);
  EXPECT_LT(err / ymax, 0.05);
  // Inputs: activations (bf16 widened to f32), the cache, metadata, checkpoint weights.
  EXPECT_EQ(read_npy((dir / "inputs/layers.0.q.npy").string(), DType::kF32, 3).shape(),
            (std::vector<int64_t>{n, 16, 192}));
  EXPECT_EQ(read_npy((dir / "inputs/meta.slot_mapping.npy").string(), DType::kI32, 1).dim(0), n);
  EXPECT_EQ(read_npy((dir / "inputs/layers.0.o_proj.weight.npy").string(), DType::kU8, 2).shape(),
            (std::vector<int64_t>{7168, hv}));
  EXPECT_TRUE(fs::exists(dir / "inputs/layers.0.kv_cache.npy"));
  EXPECT_TRUE(fs::exists(dir / "fused/layers.0.kv_cache_out.npy"));
  fs::remove_all(dir);
}

TEST(BenchCli, TimesBothGraphsPerBatchSize) {
  const Result r = run_cli("bench --heads 16 --batch 1,3 --context 50 --json");
  ASSERT_EQ(r.rc, 0) << r.err;
  const Json j = JsonParser(r.out).parse_document();
  const auto& rows = j["rows"].arr();
  ASSERT_EQ(rows.size(), 2u);
  EXPECT_EQ(rows[1]["batch"].num(), 3);
  EXPECT_EQ(rows[1]["t_pad"].num(), 4);
  for (const Json& row : rows) {
    EXPECT_TRUE(row["codes_equal"].boolean());
    EXPECT_GT(row["unfused_us"].num(), 0.0);
    EXPECT_GT(row["fused_us"].num(), 0.0);
    EXPECT_EQ(row["nodes"].arr().size(), 5u);
  }
  const Result bad = run_cli("bench --batch 4,x");
  EXPECT_NE(bad.rc, 0);
  EXPECT_NE(bad.err.find("--batch expects positive integers"), std::string::npos) << bad.err;
}

TEST(RunCli, BadFlagsFailWithOneClearMessage) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"run --bogus", "unknown option '--bogus'"},
      {"run --layers 0", "--layers"},
      {"run --layers", "--layers needs a value"},
      {"run --heads abc", "--heads"},
      {"run --decode-lens 3,x", "--decode-lens expects an integer, got 'x'"},
      {"run --decode-lens 0", "--decode-lens must be >= 1"},
      {"run --prefill 3:4:5", "--prefill expects LEN or LEN:CONTEXT"},
      {"run --decode-lens none --prefill none", "the batch is empty"},
      {"run --quant fp8", "--quant must be one of"},
      {"run --quant nvfp4 --ue8m0", "--ue8m0 applies to --quant fp8-group128 or fp8-group64"},
      {"run --quant fp8-group64 --tma-aligned", "--tma-aligned pads column-major scales and needs --col-major"},
      {"run --backend tpu", "--backend must be one of"},
      {"run --backend cpu --graphs", "--graphs needs the cuda backend"},
      {"run --dump /proc/no_such_dir/x --heads 16 --decode-lens 2 --prefill none", "--dump"},
  };
  for (const auto& [args, want] : cases) {
    const Result r = run_cli(args);
    EXPECT_NE(r.rc, 0) << args;
    EXPECT_NE(r.rc, -1) << args << ": crashed";
    EXPECT_NE(r.err.find("error: "), std::string::npos) << args << ": " << r.err;
    EXPECT_EQ(r.err.find("internal error"), std::string::npos) << args << ": " << r.err;
    EXPECT_NE(r.err.find(want), std::string::npos) << args << ": " << r.err;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << args << ": " << r.err;
    EXPECT_TRUE(r.out.empty()) << args << ": " << r.out;
  }
}

}  // namespace
}  // namespace mlafuse
