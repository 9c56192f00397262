// The text form: print -> parse -> print is the identity over many random graphs; the corpus in
// tests/data/ir parses (good_*) or fails with the expected line:col message (bad_*); Graphviz.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>

#include "mlafuse/ir/op_registry.h"
#include "mlafuse/ir/text.h"
#include "mlafuse/ir/verifier.h"
#include "mlafuse/models/mla_block.h"

namespace mlafuse::ir {
namespace {

namespace fs = std::filesystem;

std::string read_file(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

// ---- random graphs -----------------------------------------------------------------------------

class RandomGraph {
 public:
  explicit RandomGraph(uint64_t seed) : rng_(seed) {}

  Graph build() {
    const int blocks = pick(1, 6);
    for (int b = 0; b < blocks; ++b) {
      switch (pick(0, 3)) {
        case 0:
          mla_block();
          break;
        case 1:
          quant_chain();
          break;
        case 2:
          cache_write();
          break;
        default:
          mla_block();
          break;
      }
    }
    // A random subset of the unused node outputs becomes graph outputs.
    for (const Node* n : g_.nodes()) {
      for (Value* v : n->outputs()) {
        if (v && !v->is_graph_output() && pick(0, 2) != 0) g_.mark_output(v);
      }
    }
    return std::move(g_);
  }

 private:
  int pick(int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng_); }
  bool coin() { return pick(0, 1) == 1; }

  // Names with every character the text form allows in them.
  std::string name(const std::string& hint) {
    static const char* kParts[] = {"layers", "q", "x.y", "a-b", "_t", "o_proj", "9"};
    std::string n = kParts[pick(0, 6)];
    n += "." + hint + "." + std::to_string(counter_++);
    return n;
  }

  Dim tokens() { return token_dim_; }

  double random_double() {
    switch (pick(0, 5)) {
      case 0:
        return 0.0;
      case 1:
        return std::uniform_real_distribution<double>(0, 1)(rng_);
      case 2:
        return std::ldexp(std::uniform_real_distribution<double>(1, 2)(rng_), pick(-1070, 1000));
      case 3:
        return 5e-324;  // the smallest denormal
      case 4:
        return 1.7976931348623157e308;
      default:
        return 1.0 / 3.0;
    }
  }

  void mla_block() {
    token_dim_ = coin() ? Dim::tokens() : Dim::fixed(pick(1, 9));
    const int64_t h = std::vector<int64_t>{1, 2, 3, 16}[pick(0, 3)];
    const int64_t v = std::vector<int64_t>{32, 64, 128}[pick(0, 2)];
    const int64_t p = std::vector<int64_t>{16, 128}[pick(0, 1)];
    const int64_t r = std::vector<int64_t>{16, 64}[pick(0, 1)];
    const int64_t l = std::vector<int64_t>{32, 512}[pick(0, 1)];
    const Dim t = tokens();
    auto bf16 = [](std::vector<Dim> d) { return ValueType{DType::kBF16, Shape(std::move(d))}; };
    Value* q = g_.add_input(name("q"), bf16({t, Dim::fixed(h), Dim::fixed(p + r)}));
    Value* kvc = g_.add_input(name("kvc"), bf16({t, Dim::fixed(l)}));
    Value* kpe = g_.add_input(name("kpe"), bf16({t, Dim::fixed(1), Dim::fixed(r)}));
    Value* cache = g_.add_input(
        name("cache"), bf16({Dim::fixed(pick(1, 9)), Dim::fixed(pick(1, 64)), Dim::fixed(l + r)}));
    AttrMap a;
    a.set("layer", int64_t{pick(0, 60)});
    a.set("num_heads", h);
    a.set("qk_nope_dim", p);
    a.set("qk_rope_dim", r);
    a.set("v_head_dim", v);
    a.set("kv_lora_rank", l);
    if (coin()) a.set("softmax_scale", random_double());
    const int64_t hv = h * v;
    Value* scale = nullptr;
    const int quant = pick(0, 3);  // none, static, group, nvfp4 (fused in the node)
    if (quant == 1 || quant == 3) {
      scale = g_.add_input(name("scale"), ValueType{DType::kF32, Shape{Dim::fixed(1)}});
    }
    std::vector<std::string> outs = {name("out"), name("cache_out")};
    if (quant == 2) {
      const int64_t gs = hv % 128 == 0 && coin() ? 128 : 64;
      if (hv % gs != 0) return mla_block();  // (h * v is always a multiple of 32)
      a.set("quant_group_size", gs);
      a.set("quant_col_major", coin());
      a.set("quant_tma_aligned", coin());
      a.set("quant_scale_ue8m0", coin());
      outs.push_back(name("block_scale"));
    } else if (quant == 3) {
      a.set("quant_group_size", int64_t{16});
      outs.push_back(name("block_scale"));
    }
    Node* n = g_.add_node(ops::kMlaAttention, {q, kvc, kpe, cache, scale}, a, outs);
    if (quant == 0 && coin()) quant_of(n->output(0));
  }

  void quant_chain() {
    token_dim_ = coin() ? Dim::tokens() : Dim::fixed(pick(1, 9));
    const DType dt = std::vector<DType>{DType::kBF16, DType::kF16, DType::kF32}[pick(0, 2)];
    const int64_t d = 128 * pick(1, 4);
    Value* x = g_.add_input(name("x"), ValueType{dt, Shape{tokens(), Dim::fixed(d)}});
    quant_of(x);
  }

  // Follows x [T, D] with a random quant op and, sometimes, its o_proj consumer.
  void quant_of(Value* x) {
    const int64_t d = x->shape()[1].value;
    Value* scale = g_.add_input(name("s"), ValueType{DType::kF32, Shape{Dim::fixed(1)}});
    const int64_t n = 16 * pick(1, 20);
    Value* wq =
        g_.add_weight(name("w"), ValueType{DType::kFp8E4M3, Shape{Dim::fixed(n), Dim::fixed(d)}});
    Value* ws = g_.add_weight(
        name("ws"),
        ValueType{DType::kF32, Shape{Dim::fixed((n + 127) / 128), Dim::fixed((d + 127) / 128)}});
    switch (pick(0, 2)) {
      case 0: {
        Node* q = g_.add_node(ops::kQuantFp8Static, {x, scale}, {}, {name("xq")});
        if (coin())
          g_.add_node(ops::kLinearFp8Block, {q->output(0), scale, wq, ws}, {}, {name("y")});
        break;
      }
      case 1: {
        AttrMap a;
        int64_t gs = 128;  // the largest of 128, 64, 32, 16 dividing D, sometimes halved
        while (d % gs != 0) gs /= 2;
        if (gs > 16 && coin()) gs /= 2;
        a.set("group_size", gs);
        a.set("col_major", coin());
        a.set("tma_aligned", coin());
        a.set("ue8m0", coin());
        if (coin()) a.set("eps", random_double() + 1e-12);
        Node* q = g_.add_node(ops::kQuantFp8Group, {x}, a, {name("xq"), name("xs")});
        if ((gs == 128 || gs == 64) && coin()) {
          g_.add_node(ops::kLinearFp8Block, {q->output(0), q->output(1), wq, ws}, {}, {name("y")});
        }
        break;
      }
      default: {
        Node* q = g_.add_node(ops::kQuantNvfp4, {x, scale}, {}, {name("xq"), name("xs")});
        if (coin()) {
          g_.add_node(ops::kLinearNvfp4, {q->output(0), q->output(1), scale, wq, ws}, {},
                      {name("y")});
        }
        break;
      }
    }
  }

  void cache_write() {
    const Dim t = coin() ? Dim::tokens() : Dim::fixed(pick(1, 9));
    const int64_t l = 16 * pick(1, 4), r = 16 * pick(1, 2);
    Value* kvc = g_.add_input(name("kvc"), ValueType{DType::kBF16, Shape{t, Dim::fixed(l)}});
    Value* kpe =
        g_.add_input(name("kpe"), ValueType{DType::kBF16, Shape{t, Dim::fixed(1), Dim::fixed(r)}});
    Value* cache = g_.add_input(
        name("cache"),
        ValueType{DType::kBF16, Shape{Dim::fixed(3), Dim::fixed(4), Dim::fixed(l + r)}});
    Node* w = g_.add_node(ops::kCacheWrite, {kvc, kpe, cache}, {}, {name("cache_out")});
    if (coin()) g_.add_node(ops::kCacheWrite, {kvc, kpe, w->output(0)}, {}, {name("cache_out")});
  }

  std::mt19937_64 rng_;
  Graph g_;
  Dim token_dim_ = Dim::tokens();
  int counter_ = 0;
};

TEST(TextRoundTrip, RandomGraphs) {
  constexpr int kGraphs = 300;
  std::map<std::string, int64_t> ops_seen;
  for (uint64_t seed = 1; seed <= kGraphs; ++seed) {
    Graph g = RandomGraph(seed).build();
    verify(g);
    for (const auto& [op, n] : g.op_counts()) ops_seen[op] += n;
    const std::string text = print_graph(g);
    Graph back = parse_graph(text);
    ASSERT_EQ(print_graph(back), text) << "seed " << seed;
    EXPECT_EQ(back.num_nodes(), g.num_nodes());
    EXPECT_EQ(back.num_values(), g.num_values());
    // Attributes come back bit-exact (doubles included), not only their printed form.
    for (size_t i = 0; i < g.num_nodes(); ++i) {
      EXPECT_EQ(back.nodes()[i]->attrs(), g.nodes()[i]->attrs()) << "seed " << seed;
    }
  }
  // The generator covers every op of the contract.
  for (const std::string& op : OpRegistry::global().names()) {
    EXPECT_GT(ops_seen[op], 0) << op;
  }
}

TEST(TextRoundTrip, BuiltMlaGraphs) {
  for (const char* q : {"none", "fp8-static", "fp8-group128", "fp8-group64", "nvfp4"}) {
    models::MlaGraphOptions o;
    o.num_layers = 3;
    o.quant = parse_output_quant(q);
    if (o.quant.info().group_fp8()) o.quant.scale_layout = Layout::kColMajor;
    const Graph g = models::build_mla_graph(o);
    const std::string text = print_graph(g);
    EXPECT_EQ(print_graph(parse_graph(text)), text) << q;
  }
}

TEST(TextRoundTrip, AttributeValues) {
  const std::string text = R"(graph {
  input %x : f32[T, 64]
  %q, %s = quant_fp8_group(%x) {col_major = false, eps = 1e-10, group_size = 64, tma_aligned = false, ue8m0 = true} : fp8e4m3[T, 64], f32[T, 1]
  output %q, %s
}
)";
  EXPECT_EQ(print_graph(parse_graph(text)), text);
  // Floats always print with '.' or an exponent, so they read back as floats.
  Graph g = parse_graph(
      "graph { input %x : f32[T, 64]\n %q, %s = quant_fp8_group(%x) {col_major = false, eps = "
      "2.0, group_size = 64, tma_aligned = false, ue8m0 = true} : fp8e4m3[T, 64], f32[T, 1] }");
  EXPECT_NE(print_graph(g).find("eps = 2.0,"), std::string::npos) << print_graph(g);
}

// ---- the corpus ---------------------------------------------------------------------------------

std::vector<fs::path> corpus(const std::string& prefix) {
  std::vector<fs::path> files;
  for (const auto& e : fs::directory_iterator(fs::path(MLAFUSE_TEST_DATA_DIR) / "ir")) {
    const std::string name = e.path().filename().string();
    if (name.rfind(prefix, 0) == 0 && e.path().extension() == ".ir") files.push_back(e.path());
  }
  std::sort(files.begin(), files.end());
  return files;
}

TEST(TextCorpus, GoodFilesParseAndRoundTrip) {
  const auto files = corpus("good_");
  ASSERT_GE(files.size(), 3u);
  for (const auto& f : files) {
    SCOPED_TRACE(f.filename().string());
    Graph g = parse_graph(read_file(f), ParseOptions{f.filename().string(), true});
    const std::string text = print_graph(g);
    EXPECT_EQ(print_graph(parse_graph(text)), text);
  }
}

TEST(TextCorpus, MalformedFilesFailAtTheRightLineAndColumn) {
  const auto files = corpus("bad_");
  ASSERT_GE(files.size(), 25u);
  for (const auto& f : files) {
    SCOPED_TRACE(f.filename().string());
    const std::string text = read_file(f);
    // First line: "// error: LINE:COL: message"
    const std::string tag = "// error: ";
    ASSERT_EQ(text.rfind(tag, 0), 0u) << "missing the expected-error line";
    const std::string expected = text.substr(tag.size(), text.find('\n') - tag.size());
    const std::string source = f.filename().string();
    try {
      parse_graph(text, ParseOptions{source, true});
      ADD_FAILURE() << "parsed without error";
    } catch (const ParseError& e) {
      EXPECT_EQ(std::string(e.what()).rfind(source + ":", 0), 0u) << e.what();
      EXPECT_NE(std::string(e.what()).find(source + ":" + expected), std::string::npos)
          << "got:      " << e.what() << "\nexpected: " << expected;
      const std::string loc = std::to_string(e.line()) + ":" + std::to_string(e.column()) + ":";
      EXPECT_EQ(expected.rfind(loc, 0), 0u) << loc;
    }
  }
}

TEST(TextCorpus, EveryPrefixOfAGoodFileFailsCleanly) {
  // Truncations hit every parser state; each must be a ParseError, never a crash.
  const std::string text =
      read_file(fs::path(MLAFUSE_TEST_DATA_DIR) / "ir" / "good_deepseek_layer.ir");
  int errors = 0;
  for (size_t n = 0; n < text.size(); ++n) {
    try {
      parse_graph(std::string_view(text).substr(0, n));
    } catch (const ParseError&) {
      ++errors;
    }
  }
  // Only prefixes that end after the closing brace parse.
  EXPECT_GE(errors, static_cast<int>(text.size()) - 2);
}

// ---- Graphviz -----------------------------------------------------------------------------------

TEST(Dot, DrawsNodesValuesAndOutputs) {
  models::MlaGraphOptions o;
  o.quant = parse_output_quant("fp8-group128");
  const Graph g = models::build_mla_graph(o);
  const std::string dot = to_dot(g);
  EXPECT_EQ(dot.rfind("digraph mlafuse {", 0), 0u);
  EXPECT_NE(dot.find("input %layers.0.q\\nbf16[T, 128, 192]"), std::string::npos) << dot;
  EXPECT_NE(dot.find("weight %layers.0.o_proj.weight\\nfp8e4m3[7168, 16384]"), std::string::npos);
  EXPECT_NE(dot.find("label=\"mla_attention\\n"), std::string::npos);
  EXPECT_NE(dot.find("%layers.0.xs\\nf32[T, 128]\\n(xs)"), std::string::npos) << dot;
  EXPECT_NE(dot.find("output %layers.0.y"), std::string::npos);
  // One box per node, one edge per present input, one marker per output.
  EXPECT_EQ(std::count(dot.begin(), dot.end(), '\n'),
            4 + 6 /*inputs+weights*/ + 3 /*nodes*/ + 9 /*edges*/ + 2 * 2 /*outputs*/ + 1);
  EXPECT_EQ(dot.back(), '\n');
}

}  // namespace
}  // namespace mlafuse::ir
