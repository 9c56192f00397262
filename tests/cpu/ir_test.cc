// Graph IR: building, inference, the verifier, rewriting primitives, the MLA graph builder.
#include <gtest/gtest.h>

#include "mlafuse/core/error.h"
#include "mlafuse/ir/graph.h"
#include "mlafuse/ir/op_registry.h"
#include "mlafuse/ir/text.h"
#include "mlafuse/ir/verifier.h"
#include "mlafuse/models/mla_block.h"

namespace mlafuse::ir {
namespace {

ValueType vt(DType d, std::vector<Dim> dims, Layout l = Layout::kRowMajor) {
  return ValueType{d, Shape(std::move(dims)), l};
}
const Dim T = Dim::tokens();
Dim F(int64_t v) { return Dim::fixed(v); }

void expect_error(const std::function<void()>& fn, const std::vector<std::string>& needles) {
  try {
    fn();
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    for (const auto& n : needles) {
      EXPECT_NE(std::string(e.what()).find(n), std::string::npos)
          << "message lacks '" << n << "': " << e.what();
    }
  }
}

AttrMap attn_attrs(int64_t layer, int64_t h = 4) {
  AttrMap a;
  a.set("layer", layer);
  a.set("num_heads", h);
  a.set("qk_nope_dim", int64_t{128});
  a.set("qk_rope_dim", int64_t{64});
  a.set("v_head_dim", int64_t{128});
  a.set("kv_lora_rank", int64_t{512});
  return a;
}

struct AttnInputs {
  Value* q;
  Value* kvc;
  Value* kpe;
  Value* cache;
};
AttnInputs add_attn_inputs(Graph& g, int64_t h = 4) {
  return {g.add_input("q", vt(DType::kBF16, {T, F(h), F(192)})),
          g.add_input("kvc", vt(DType::kBF16, {T, F(512)})),
          g.add_input("kpe", vt(DType::kBF16, {T, F(1), F(64)})),
          g.add_input("cache", vt(DType::kBF16, {F(16), F(64), F(576)}))};
}

TEST(ValueType, PrintsLayoutOnlyWhenNotRowMajor) {
  EXPECT_EQ(vt(DType::kBF16, {T, F(128), F(192)}).str(), "bf16[T, 128, 192]");
  EXPECT_EQ(vt(DType::kF32, {T, F(4)}, Layout::kColMajorTma).str(), "f32[T, 4]{col_major_tma}");
}

TEST(OpRegistry, HoldsTheOpsOfTheContract) {
  const auto names = OpRegistry::global().names();
  for (const char* op : {"mla_attention", "quant_fp8_static", "quant_fp8_group", "quant_nvfp4",
                         "linear_fp8_block", "linear_nvfp4", "cache_write"}) {
    EXPECT_NE(OpRegistry::global().find(op), nullptr) << op;
  }
  const OpSchema& attn = OpRegistry::global().get("mla_attention");
  EXPECT_EQ(attn.input_index("output_scale"), 4);
  EXPECT_TRUE(attn.inputs[4].optional);
  EXPECT_EQ(attn.output_index("output_block_scale"), 2);
  EXPECT_TRUE(attn.outputs[2].optional);
  expect_error([] { OpRegistry::global().get("softmax"); },
               {"unknown op 'softmax'", "mla_attention"});
}

TEST(Inference, UnfusedAttentionIsBf16) {
  Graph g;
  auto in = add_attn_inputs(g);
  Node* n = g.add_node("mla_attention", {in.q, in.kvc, in.kpe, in.cache}, attn_attrs(0),
                       {"out", "cache_out"});
  EXPECT_EQ(n->output(0)->type(), vt(DType::kBF16, {T, F(512)}));
  EXPECT_EQ(n->output(1)->type(), in.cache->type());
  EXPECT_EQ(n->output(2), nullptr);
  EXPECT_EQ(n->output("output_block_scale"), nullptr);
  EXPECT_EQ(n->input("output_scale"), nullptr);
  verify(g);
}

TEST(Inference, FusedAttentionOutputsFollowTheQuantAttributes) {
  Graph g;
  auto in = add_attn_inputs(g);
  Value* s = g.add_input("s", vt(DType::kF32, {F(1)}));
  // static FP8
  Node* st =
      g.add_node("mla_attention", {in.q, in.kvc, in.kpe, in.cache, s}, attn_attrs(0), {"o1", "c1"});
  EXPECT_EQ(st->output(0)->type(), vt(DType::kFp8E4M3, {T, F(512)}));
  // group FP8, col-major TMA-aligned scales
  AttrMap a = attn_attrs(1);
  a.set("quant_group_size", int64_t{64});
  a.set("quant_col_major", true);
  a.set("quant_tma_aligned", true);
  a.set("quant_scale_ue8m0", false);
  Node* gr = g.add_node("mla_attention", {in.q, in.kvc, in.kpe, in.cache}, a, {"o2", "c2", "s2"});
  EXPECT_EQ(gr->output(0)->type(), vt(DType::kFp8E4M3, {T, F(512)}));
  EXPECT_EQ(gr->output(2)->type(), vt(DType::kF32, {T, F(8)}, Layout::kColMajorTma));
  // NVFP4
  AttrMap n = attn_attrs(2);
  n.set("quant_group_size", int64_t{16});
  Node* fp4 =
      g.add_node("mla_attention", {in.q, in.kvc, in.kpe, in.cache, s}, n, {"o3", "c3", "s3"});
  EXPECT_EQ(fp4->output(0)->type(), vt(DType::kFp4E2M1x2, {T, F(256)}));
  EXPECT_EQ(fp4->output(2)->type(), vt(DType::kFp8E4M3, {T, F(32)}, Layout::kNvfp4Swizzled));
  verify(g);
}

TEST(Inference, ErrorsNameTheOperandAndTheExpectation) {
  Graph g;
  auto in = add_attn_inputs(g);
  Value* s = g.add_input("s", vt(DType::kF32, {F(1)}));
  Value* bad_q = g.add_input("bad_q", vt(DType::kBF16, {T, F(8), F(192)}));
  expect_error(
      [&] {
        g.add_node("mla_attention", {bad_q, in.kvc, in.kpe, in.cache}, attn_attrs(0), {"x", "y"});
      },
      {"mla_attention input q", "dim 1 == 4", "bf16[T, 8, 192]"});
  AttrMap a = attn_attrs(0);
  a.set("quant_group_size", int64_t{128});
  expect_error(
      [&] {
        g.add_node("mla_attention", {in.q, in.kvc, in.kpe, in.cache, s}, a, {"x", "y", "z"});
      },
      {"takes no output_scale"});
  a.set("quant_group_size", int64_t{96});
  expect_error(
      [&] {
        g.add_node("mla_attention", {in.q, in.kvc, in.kpe, in.cache}, a, {"x", "y", "z"});
      },
      {"quant_group_size must be 128 (fp8-group128), 64 (fp8-group64)", "96"});
  a.set("quant_group_size", int64_t{0});  // not a second spelling of static FP8
  expect_error(
      [&] {
        g.add_node("mla_attention", {in.q, in.kvc, in.kpe, in.cache, s}, a, {"x", "y", "z"});
      },
      {"quant_group_size must be 128 (fp8-group128), 64 (fp8-group64)", "got 0"});
  AttrMap b = attn_attrs(0);
  b.set("quant_col_major", true);
  expect_error(
      [&] {
        g.add_node("mla_attention", {in.q, in.kvc, in.kpe, in.cache}, b, {"x", "y"});
      },
      {"quant_col_major", "only meaningful"});
  AttrMap c = attn_attrs(0);
  c.set("layer", std::string("zero"));
  expect_error(
      [&] {
        g.add_node("mla_attention", {in.q, in.kvc, in.kpe, in.cache}, c, {"x", "y"});
      },
      {"attribute 'layer' must be i64, got string"});
  AttrMap d = attn_attrs(0);
  d.set("heads", int64_t{4});
  expect_error(
      [&] {
        g.add_node("mla_attention", {in.q, in.kvc, in.kpe, in.cache}, d, {"x", "y"});
      },
      {"no attribute 'heads'"});
  expect_error(
      [&] {
        g.add_node("mla_attention", {in.q, in.kvc, in.kpe}, attn_attrs(0), {"x", "y"});
      },
      {"required input kv_cache is absent"});
  // A failed add leaves the graph as it was.
  EXPECT_EQ(g.num_nodes(), 0u);
  EXPECT_EQ(g.find_value("x"), nullptr);
}

TEST(Inference, QuantOps) {
  Graph g;
  Value* x = g.add_input("x", vt(DType::kBF16, {T, F(256)}));
  Value* s = g.add_input("s", vt(DType::kF32, {F(1)}));
  AttrMap a;
  a.set("group_size", int64_t{128});
  a.set("ue8m0", true);
  a.set("col_major", true);
  a.set("tma_aligned", false);
  Node* n = g.add_node("quant_fp8_group", {x}, a, {"q", "qs"});
  EXPECT_EQ(n->output(1)->type(), vt(DType::kF32, {T, F(2)}, Layout::kColMajor));
  a.set("group_size", int64_t{40});
  expect_error(
      [&] {
        g.add_node("quant_fp8_group", {x}, a, {"q2", "qs2"});
      },
      {"multiple of 16", "40"});
  a.set("group_size", int64_t{48});
  expect_error(
      [&] {
        g.add_node("quant_fp8_group", {x}, a, {"q2", "qs2"});
      },
      {"does not divide", "256"});
  Node* fp4 = g.add_node("quant_nvfp4", {x, s}, {}, {"q4", "sf4"});
  EXPECT_EQ(fp4->output(0)->type(), vt(DType::kFp4E2M1x2, {T, F(128)}));
  expect_error(
      [&] {
        g.add_node("quant_fp8_static", {x, x}, {}, {"q5"});
      },
      {"quant_fp8_static input scale", "f32[1]", "bf16[T, 256]"});
  verify(g);
}

TEST(Graph, NamesAreUniqueAndWellFormed) {
  Graph g;
  g.add_input("a", vt(DType::kF32, {F(1)}));
  expect_error([&] { g.add_input("a", vt(DType::kF32, {F(1)})); }, {"'a' is already defined"});
  expect_error([&] { g.add_weight("a b", vt(DType::kF32, {F(1)})); }, {"character ' '"});
  expect_error([&] { g.add_input("", vt(DType::kF32, {F(1)})); }, {"needs a name"});
  EXPECT_EQ(g.input("a")->name(), "a");
  expect_error([&] { g.weight("a"); }, {"not a weight"});
  expect_error([&] { g.value("zz"); }, {"no value named 'zz'"});
}

TEST(Graph, RewritingPrimitivesKeepUseListsConsistent) {
  Graph g;
  Value* x = g.add_input("x", vt(DType::kBF16, {T, F(256)}));
  Value* s = g.add_input("s", vt(DType::kF32, {F(1)}));
  Value* s2 = g.add_input("s2", vt(DType::kF32, {F(1)}));
  Node* q1 = g.add_node("quant_fp8_static", {x, s}, {}, {"q1"});
  Node* q2 = g.add_node("quant_fp8_static", {x, s}, {}, {"q2"});
  g.mark_output(q1->output(0));
  EXPECT_EQ(s->num_uses(), 2u);
  g.set_input(q2, 1, s2);
  EXPECT_EQ(s->num_uses(), 1u);
  EXPECT_EQ(s2->num_uses(), 1u);
  verify(g);
  // Re-parent q1's output to q2's slot? Only into an empty slot.
  expect_error([&] { g.move_output(q1->output(0), q2, 0); }, {"already %q2"});
  expect_error([&] { g.remove_node(q1); }, {"graph output"});
  g.remove_node(q2);
  EXPECT_EQ(g.num_nodes(), 1u);
  EXPECT_EQ(g.find_value("q2"), nullptr);
  EXPECT_EQ(s2->num_uses(), 0u);
  g.remove_value(s2);
  EXPECT_EQ(g.find_value("s2"), nullptr);
  verify(g);
}

TEST(Graph, SortRestoresTopologicalOrderStably) {
  Graph g;
  Value* x = g.add_input("x", vt(DType::kBF16, {T, F(256)}));
  Value* s = g.add_input("s", vt(DType::kF32, {F(1)}));
  Value* w = g.add_weight("w", vt(DType::kFp8E4M3, {F(256), F(256)}));
  Value* ws = g.add_weight("ws", vt(DType::kF32, {F(2), F(2)}));
  Node* a1 = g.add_node("quant_fp8_static", {x, s}, {}, {"a1"});
  Node* lin = g.add_node("linear_fp8_block", {a1->output(0), s, w, ws}, {}, {"y"});
  AttrMap a;
  a.set("group_size", int64_t{128});
  a.set("ue8m0", false);
  a.set("col_major", false);
  a.set("tma_aligned", false);
  Node* b1 = g.add_node("quant_fp8_group", {x}, a, {"b1", "b1s"});
  // A rewrite points `lin` at values defined after it.
  g.set_input(lin, 0, b1->output(0));
  g.set_input(lin, 1, b1->output(1));
  expect_error([&] { verify(g); }, {"%b1 is used before it is defined"});
  g.sort();
  verify(g);
  std::vector<std::string> order;
  for (const Node* n : g.nodes()) order.push_back(n->label());
  EXPECT_EQ(order,
            (std::vector<std::string>{"%a1 = quant_fp8_static", "%b1, %b1s = quant_fp8_group",
                                      "%y = linear_fp8_block"}));
}

TEST(MlaGraph, BuildsEveryQuantization) {
  for (const char* q : {"none", "fp8-static", "fp8-group128", "fp8-group64", "nvfp4"}) {
    models::MlaGraphOptions o;
    o.num_layers = 2;
    o.num_pages = 8;
    o.quant = parse_output_quant(q);
    Graph g = models::build_mla_graph(o);
    verify(g);
    auto counts = g.op_counts();
    EXPECT_EQ(counts["mla_attention"], 2) << q;
    EXPECT_EQ(g.input("layers.1.q")->type(), vt(DType::kBF16, {T, F(128), F(192)}));
    EXPECT_EQ(g.input("layers.1.kv_c_normed")->type(), vt(DType::kBF16, {T, F(512)}));
    EXPECT_EQ(g.input("layers.1.k_pe")->type(), vt(DType::kBF16, {T, F(1), F(64)}));
    EXPECT_EQ(g.input("layers.1.kv_cache")->type(), vt(DType::kBF16, {F(8), F(64), F(576)}));
    EXPECT_TRUE(g.output("layers.1.kv_cache_out")->producer()->op() == "mla_attention");
    if (std::string(q) == "none") {
      EXPECT_EQ(g.output("layers.0.attn_out")->type(), vt(DType::kBF16, {T, F(16384)}));
      EXPECT_EQ(g.outputs().size(), 4u);
      continue;
    }
    EXPECT_EQ(g.output("layers.0.y")->type(), vt(DType::kBF16, {T, F(7168)}));
    EXPECT_EQ(g.weight("layers.0.o_proj.weight")->type(), vt(DType::kFp8E4M3, {F(7168), F(16384)}));
    EXPECT_EQ(g.weight("layers.0.o_proj.weight_scale_inv")->type(),
              vt(DType::kF32, {F(56), F(128)}));
  }
}

TEST(MlaGraph, StaticAndNvfp4ScalesAreGraphInputs) {
  models::MlaGraphOptions o;
  o.quant = parse_output_quant("fp8-static");
  Graph g = models::build_mla_graph(o);
  Value* scale = g.input("layers.0.o_proj.input_scale");
  EXPECT_EQ(scale->type(), vt(DType::kF32, {F(1)}));
  EXPECT_EQ(scale->num_uses(), 2u);  // the quant node and o_proj's per-tensor xs
  o.quant = parse_output_quant("nvfp4");
  Graph n = models::build_mla_graph(o);
  EXPECT_EQ(n.input("layers.0.o_proj.input_global_scale")->num_uses(), 2u);
  EXPECT_EQ(n.op_counts()["linear_nvfp4"], 1);
}

TEST(MlaGraph, FlagsSetTheScaleLayout) {
  models::MlaGraphOptions o;
  o.config.num_heads = 16;
  o.quant = parse_output_quant("fp8-group64 col_major tma_aligned");
  Graph g = models::build_mla_graph(o);
  EXPECT_EQ(g.value("layers.0.xs")->type(), vt(DType::kF32, {T, F(32)}, Layout::kColMajorTma));
}

TEST(MlaGraph, RejectsBadOptions) {
  models::MlaGraphOptions o;
  o.num_layers = 0;
  expect_error([&] { models::build_mla_graph(o); }, {"num_layers"});
  o.num_layers = 1;
  o.config.num_heads = 0;
  expect_error([&] { models::build_mla_graph(o); }, {"num_heads"});
  expect_error([] { parse_output_quant("int8"); }, {"'int8'", "fp8-group128"});
}

}  // namespace
}  // namespace mlafuse::ir

namespace mlafuse::ir {
namespace {

TEST(Graph, ValuesOfMoreThan2To63BytesAreRefusedWhereDeclared) {
  Graph g;
  const int64_t big = INT64_MAX;
  expect_error([&] { g.add_input("cache", vt(DType::kBF16, {F(big), F(big), F(576)})); },
                        {"value cache", "is more than 2^63 bytes"});
  // T is counted once: [T, 2^61] bf16 is 2^62 bytes per token, which is representable.
  g.add_input("wide", vt(DType::kBF16, {T, F(int64_t{1} << 61)}));
}

TEST(Inference, OverflowingAttributeArithmeticIsANamedError) {
  // num_heads * v_head_dim = 2^55 * 2^9 wraps to 0, which an output typed [T, 0] would match.
  Graph g;
  const int64_t h = int64_t{1} << 55;
  Value* q = g.add_input("q", vt(DType::kBF16, {T, F(h), F(2)}));
  Value* kvc = g.add_input("kvc", vt(DType::kBF16, {T, F(511)}));
  Value* kpe = g.add_input("kpe", vt(DType::kBF16, {T, F(1), F(1)}));
  Value* cache = g.add_input("cache", vt(DType::kBF16, {F(4), F(64), F(512)}));
  AttrMap a;
  a.set("layer", int64_t{0});
  a.set("num_heads", h);
  a.set("qk_nope_dim", int64_t{1});
  a.set("qk_rope_dim", int64_t{1});
  a.set("v_head_dim", int64_t{512});
  a.set("kv_lora_rank", int64_t{511});
  expect_error([&] { g.add_node("mla_attention", {q, kvc, kpe, cache}, a, {"o", "c"}); },
                        {"num_heads * v_head_dim", "does not fit in int64"});
}

}  // namespace
}  // namespace mlafuse::ir
