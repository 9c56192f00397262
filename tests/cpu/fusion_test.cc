// mla-attn-quant-fusion: every key and flag combination on built DeepSeek-V3 graphs, XLA-style
// text-in/text-out cases, and a negative twin for each positive case.
#include <gtest/gtest.h>

#include <set>

#include "fake_backend.h"
#include "mlafuse/ir/op_registry.h"
#include "mlafuse/ir/text.h"
#include "mlafuse/ir/verifier.h"
#include "mlafuse/models/mla_block.h"
#include "mlafuse/passes/dce.h"
#include "mlafuse/passes/mla_attn_quant_fusion.h"
#include "mlafuse/passes/pass_manager.h"

namespace mlafuse::passes {
namespace {

using ir::Graph;
using mlafuse::testing::FakeBackend;
using mlafuse::testing::no_backend;
using mlafuse::testing::yes_backend;

std::vector<PassStats> run_pipeline(Graph& g, const Backend& backend) {
  PassManager pm;
  pm.emplace<MlaAttnQuantFusion>(backend);
  pm.emplace<DeadCodeElimination>();
  return pm.run(g);
}

int64_t quant_nodes(const Graph& g) {
  auto c = g.op_counts();
  return c["quant_fp8_static"] + c["quant_fp8_group"] + c["quant_nvfp4"];
}

// The quantizations the pass folds: every quantized OutputQuant of the format table.
std::vector<OutputQuant> fusable() {
  std::vector<OutputQuant> v;
  for (const OutputQuant& q : all_output_quants()) {
    if (q.quantized()) v.push_back(q);
  }
  return v;
}

std::string rejections_str(const PassStats& s) {
  std::string out;
  for (const auto& r : s.rejections) out += r.pattern + ": " + r.reason + "\n";
  return out;
}

TEST(MlaFusionLabels, OneDistinctLabelPerQuantization) {
  const std::vector<OutputQuant> v = fusable();
  ASSERT_EQ(v.size(), 14u);  // static, NVFP4, 2 group sizes x 3 scale layouts x ue8m0
  std::set<std::string> names;
  for (const OutputQuant& q : v) names.insert(fusion_label(q));
  EXPECT_EQ(names.size(), v.size());
  EXPECT_EQ(fusion_label(v.front()), "fp8-static");
  EXPECT_EQ(fusion_label(v.back()), "nvfp4");
  EXPECT_TRUE(names.count("fp8-group64-col-major-tma-aligned-ue8m0"));
}

// Every key and flag combination on a 3-layer DeepSeek-V3 graph.
class FuseEveryVariant : public ::testing::TestWithParam<size_t> {};

TEST_P(FuseEveryVariant, FusesEveryLayerAndKeepsTheCallersBuffers) {
  const OutputQuant v = fusable()[GetParam()];
  const std::string_view quant_op = ir::quant_op_of(v);
  constexpr int64_t kLayers = 3;
  models::MlaGraphOptions o;
  o.num_layers = kLayers;
  o.num_pages = 16;
  o.quant = v;
  Graph g = models::build_mla_graph(o);
  const int64_t attn_before = g.op_counts()["mla_attention"];
  ASSERT_GT(quant_nodes(g), 0);
  // The values the fused node must write: the quant node's outputs, as the consumer reads them.
  std::vector<const ir::Value*> xq, xs;
  std::vector<ir::ValueType> xs_types;
  for (int64_t i = 0; i < kLayers; ++i) {
    xq.push_back(g.value(models::layer_value_name(i, "xq")));
    const ir::Value* s = g.find_value(models::layer_value_name(i, "xs"));
    xs.push_back(s);
    if (s) xs_types.push_back(s->type());
  }

  FakeBackend backend = yes_backend();
  auto stats = run_pipeline(g, backend);
  ASSERT_EQ(stats.size(), 2u);
  const PassStats& fusion = stats[0];
  EXPECT_EQ(fusion.pass, "mla-attn-quant-fusion");
  EXPECT_TRUE(fusion.changed);
  EXPECT_EQ(fusion.matches, kLayers) << rejections_str(fusion);
  EXPECT_EQ(fusion.pattern_matches.at(fusion_label(v)), kLayers);
  EXPECT_EQ(fusion.pattern_matches.size(), 1u);
  EXPECT_TRUE(fusion.rejections.empty()) << rejections_str(fusion);
  // Asked once per layer, about the quantization the layer has.
  ASSERT_EQ(backend.requests.size(), static_cast<size_t>(kLayers));
  for (const FusedQuantRequest& r : backend.requests) EXPECT_EQ(r.quant, v);

  EXPECT_EQ(quant_nodes(g), 0);
  EXPECT_EQ(g.op_counts()["mla_attention"], attn_before);
  const bool static_scale = quant_op != ir::ops::kQuantFp8Group;
  const bool per_group = quant_op != ir::ops::kQuantFp8Static;
  for (int64_t i = 0; i < kLayers; ++i) {
    const ir::Node* attn = g.output(models::layer_value_name(i, "kv_cache_out"))->producer();
    ASSERT_EQ(attn->op(), "mla_attention");
    EXPECT_EQ(attn->attrs().get<int64_t>("layer"), i);
    EXPECT_EQ(attn->input("output_scale") != nullptr, static_scale);
    EXPECT_EQ(attn->output("output_block_scale") != nullptr, per_group);
    // The very Values the consumer reads (name, shape, layout) are the fused node's outputs.
    EXPECT_EQ(attn->output(0), xq[static_cast<size_t>(i)]);
    if (per_group) {
      const ir::Value* s = attn->output("output_block_scale");
      EXPECT_EQ(s, xs[static_cast<size_t>(i)]);
      EXPECT_EQ(s->name(), models::layer_value_name(i, "xs"));
      EXPECT_EQ(s->type(), xs_types[static_cast<size_t>(i)]);
      ASSERT_EQ(s->num_uses(), 1u);
      EXPECT_EQ(s->uses()[0].node->op(),
                quant_op == ir::ops::kQuantNvfp4 ? "linear_nvfp4" : "linear_fp8_block");
    }
    if (static_scale) {
      const char* scale_name =
          quant_op == ir::ops::kQuantNvfp4 ? "o_proj.input_global_scale" : "o_proj.input_scale";
      EXPECT_EQ(attn->input("output_scale"), g.input(models::layer_value_name(i, scale_name)));
    }
    // The fused node carries the key: the backend reads it back as SPEC 3.4 says.
    const int64_t hv = o.config.output_dim();
    const ir::Value* bs = attn->output("output_block_scale");
    auto key = detect_output_quant_key(
        attn->output(0)->dtype(), static_scale,
        bs ? std::optional<int64_t>(bs->shape()[1].value) : std::nullopt, hv);
    ASSERT_TRUE(key.has_value());
    EXPECT_EQ(key, v.key());
    if (quant_op == ir::ops::kQuantFp8Group) {
      EXPECT_EQ(attn->attrs().get<bool>("quant_col_major"), v.col_major());
      EXPECT_EQ(attn->attrs().get<bool>("quant_scale_ue8m0"), v.ue8m0);
      EXPECT_EQ(attn->attrs().get<bool>("quant_tma_aligned"), v.tma_aligned());
      EXPECT_EQ(attn->attrs().get<int64_t>("quant_group_size"), v.group_size());
    }
  }
  ir::verify(g);
  // The fused graph survives the text round trip.
  EXPECT_EQ(ir::print_graph(ir::parse_graph(ir::print_graph(g))), ir::print_graph(g));
}

// Negative twin: the same graphs with a backend that says no: unchanged, one reason per layer.
TEST_P(FuseEveryVariant, UnsupportedBackendLeavesTheGraphUnchanged) {
  const OutputQuant v = fusable()[GetParam()];
  models::MlaGraphOptions o;
  o.num_layers = 2;
  o.num_pages = 16;
  o.quant = v;
  Graph g = models::build_mla_graph(o);
  const std::string before = ir::print_graph(g);
  FakeBackend backend = no_backend();
  auto stats = run_pipeline(g, backend);
  EXPECT_FALSE(stats[0].changed);
  EXPECT_EQ(stats[0].matches, 0);
  EXPECT_EQ(ir::print_graph(g), before);
  ASSERT_EQ(stats[0].rejections.size(), 2u);
  for (const auto& r : stats[0].rejections) {
    EXPECT_EQ(r.pattern, fusion_label(v));
    EXPECT_NE(r.reason.find("backend 'no' does not support " + v.key()->str()), std::string::npos)
        << r.reason;
  }
}

INSTANTIATE_TEST_SUITE_P(AllVariants, FuseEveryVariant, ::testing::Range<size_t>(0, 14),
                         [](const ::testing::TestParamInfo<size_t>& info) {
                           std::string n = fusion_label(fusable()[info.param]);
                           for (char& c : n) c = (c == '-') ? '_' : c;
                           return n;
                         });

TEST(MlaFusion, BackendAnswersPerLayer) {
  models::MlaGraphOptions o;
  o.num_layers = 4;
  o.num_pages = 16;
  o.quant = parse_output_quant("fp8-group128");
  Graph g = models::build_mla_graph(o);
  FakeBackend odd_only([](const FusedQuantRequest& r) { return r.layer % 2 == 1; }, "odd");
  auto stats = run_pipeline(g, odd_only);
  EXPECT_EQ(stats[0].matches, 2);
  ASSERT_EQ(stats[0].rejections.size(), 2u);
  EXPECT_NE(stats[0].rejections[0].reason.find("for layer 0"), std::string::npos);
  EXPECT_NE(stats[0].rejections[1].reason.find("for layer 2"), std::string::npos);
  EXPECT_EQ(g.op_counts()["quant_fp8_group"], 2);
  EXPECT_EQ(g.value("layers.0.xq")->producer()->op(), "quant_fp8_group");
  EXPECT_EQ(g.value("layers.1.xq")->producer()->op(), "mla_attention");
  // The request carries the layer's shape and flags.
  for (const auto& r : odd_only.requests) {
    EXPECT_EQ(r.num_heads, 128);
    EXPECT_EQ(r.v_head_dim, 128);
  }
}

// ---- XLA-style cases: IR text in, IR text (or "unchanged") out -----------------------------

const char* kHeader = R"(
graph {
  input %q : bf16[T, 1, 192]
  input %kv_c : bf16[T, 512]
  input %k_pe : bf16[T, 1, 64]
  input %cache : bf16[4, 64, 576]
  input %scale : f32[1]
  weight %w : fp8e4m3[256, 128]
  weight %ws : f32[2, 1]
  %out, %cache_out, _ = mla_attention(%q, %kv_c, %k_pe, %cache, _) {kv_lora_rank = 512,
      layer = 0, num_heads = 1, qk_nope_dim = 128, qk_rope_dim = 64, v_head_dim = 128}
      : bf16[T, 128], bf16[4, 64, 576], _
)";

struct TextResult {
  std::string text;
  PassStats stats;
};

TextResult fuse_text(const std::string& body, const Backend& backend, bool verify = true) {
  ir::ParseOptions po;
  po.verify = verify;
  Graph g = ir::parse_graph(std::string(kHeader) + body, po);
  TextResult r;
  MlaAttnQuantFusion pass(backend);
  pass.run(g, r.stats);
  if (verify) ir::verify(g);
  r.text = ir::print_graph(g);
  return r;
}

std::string canonical(const std::string& body) {
  return ir::print_graph(ir::parse_graph(std::string(kHeader) + body));
}

std::string canonical_fused(const std::string& fused_node, const std::string& rest) {
  std::string header = kHeader;
  header = header.substr(0, header.find("  %out, %cache_out"));
  return ir::print_graph(ir::parse_graph(header + fused_node + rest));
}

const char* kGroupBody = R"(
  %xq, %xs = quant_fp8_group(%out) {col_major = true, group_size = 64, tma_aligned = true,
      ue8m0 = true} : fp8e4m3[T, 128], f32[T, 2]{col_major_tma}
  %y = linear_fp8_block(%xq, %xs, %w, %ws) : bf16[T, 256]
  output %y, %cache_out
}
)";

TEST(MlaFusionText, GroupFp8) {
  FakeBackend yes = yes_backend();
  TextResult r = fuse_text(kGroupBody, yes);
  EXPECT_EQ(r.text, canonical_fused(R"(
  %xq, %cache_out, %xs = mla_attention(%q, %kv_c, %k_pe, %cache, _) {kv_lora_rank = 512,
      layer = 0, num_heads = 1, qk_nope_dim = 128, qk_rope_dim = 64, quant_col_major = true,
      quant_group_size = 64, quant_scale_ue8m0 = true, quant_tma_aligned = true,
      v_head_dim = 128} : fp8e4m3[T, 128], bf16[4, 64, 576], f32[T, 2]{col_major_tma}
)",
                                    R"(
  %y = linear_fp8_block(%xq, %xs, %w, %ws) : bf16[T, 256]
  output %y, %cache_out
}
)"));
  EXPECT_EQ(r.stats.pattern_matches.at("fp8-group64-col-major-tma-aligned-ue8m0"), 1);
}

TEST(MlaFusionText, GroupFp8SecondUserUnchanged) {
  const std::string body = R"(
  %xq, %xs = quant_fp8_group(%out) {col_major = true, group_size = 64, tma_aligned = true,
      ue8m0 = true} : fp8e4m3[T, 128], f32[T, 2]{col_major_tma}
  %xq2 = quant_fp8_static(%out, %scale) : fp8e4m3[T, 128]
  %y = linear_fp8_block(%xq, %xs, %w, %ws) : bf16[T, 256]
  output %y, %cache_out, %xq2
}
)";
  FakeBackend yes = yes_backend();
  TextResult r = fuse_text(body, yes);
  EXPECT_EQ(r.text, canonical(body));
  EXPECT_EQ(r.stats.matches, 0);
  ASSERT_EQ(r.stats.rejections.size(), 2u) << rejections_str(r.stats);  // both quant nodes
  for (const auto& rej : r.stats.rejections) {
    EXPECT_NE(rej.reason.find("%out has another user"), std::string::npos) << rej.reason;
  }
}

TEST(MlaFusionText, GroupFp8GraphOutputUnchanged) {
  const std::string body = R"(
  %xq, %xs = quant_fp8_group(%out) {col_major = true, group_size = 64, tma_aligned = true,
      ue8m0 = true} : fp8e4m3[T, 128], f32[T, 2]{col_major_tma}
  %y = linear_fp8_block(%xq, %xs, %w, %ws) : bf16[T, 256]
  output %y, %cache_out, %out
}
)";
  FakeBackend yes = yes_backend();
  TextResult r = fuse_text(body, yes);
  EXPECT_EQ(r.text, canonical(body));
  ASSERT_EQ(r.stats.rejections.size(), 1u);
  EXPECT_EQ(r.stats.rejections[0].pattern, "fp8-group64-col-major-tma-aligned-ue8m0");
  EXPECT_EQ(r.stats.rejections[0].reason, "%out is a graph output");
}

TEST(MlaFusionText, GroupFp8BackendSaysNoUnchanged) {
  // Refuses only col-major TMA-aligned scales (as a backend without that epilogue would).
  FakeBackend no_tma([](const FusedQuantRequest& r) { return !r.quant.tma_aligned(); }, "no-tma");
  TextResult r = fuse_text(kGroupBody, no_tma);
  EXPECT_EQ(r.text, canonical(kGroupBody));
  ASSERT_EQ(r.stats.rejections.size(), 1u);
  EXPECT_EQ(r.stats.rejections[0].reason,
            "backend 'no-tma' does not support QuantKey(fp8e4m3, scale(f32, dynamic, group "
            "1x64), symmetric) [col_major, tma_aligned, ue8m0] for layer 0 (H = 1, V = 128)");
}

TEST(MlaFusionText, GroupFp8NonDefaultEpsUnchanged) {
  const std::string body = R"(
  %xq, %xs = quant_fp8_group(%out) {col_major = false, eps = 1e-06, group_size = 128,
      tma_aligned = false, ue8m0 = false} : fp8e4m3[T, 128], f32[T, 1]
  %y = linear_fp8_block(%xq, %xs, %w, %ws) : bf16[T, 256]
  output %y, %cache_out
}
)";
  FakeBackend yes = yes_backend();
  TextResult r = fuse_text(body, yes);
  EXPECT_EQ(r.text, canonical(body));
  ASSERT_EQ(r.stats.rejections.size(), 1u);
  EXPECT_NE(r.stats.rejections[0].reason.find("eps"), std::string::npos);
}

TEST(MlaFusionText, GroupFp8GroupNotDividingUnchanged) {
  // A graph from a frontend that did not verify it: H*V = 128 but a group of 64 with one
  // scale column on a 96-wide quant. The pass refuses instead of writing a wrong node.
  const std::string header_bad = R"(
graph {
  input %q : bf16[T, 3, 192]
  input %kv_c : bf16[T, 512]
  input %k_pe : bf16[T, 1, 64]
  input %cache : bf16[4, 64, 576]
  %out, %cache_out, _ = mla_attention(%q, %kv_c, %k_pe, %cache, _) {kv_lora_rank = 512,
      layer = 0, num_heads = 3, qk_nope_dim = 128, qk_rope_dim = 64, v_head_dim = 32}
      : bf16[T, 96], bf16[4, 64, 576], _
  %xq, %xs = quant_fp8_group(%out) {col_major = false, group_size = 64, tma_aligned = false,
      ue8m0 = false} : fp8e4m3[T, 96], f32[T, 1]
  output %xq, %xs, %cache_out
}
)";
  ir::ParseOptions po;
  po.verify = false;
  Graph g = ir::parse_graph(header_bad, po);
  EXPECT_THROW(ir::verify(g), Error);  // the standalone quant op is already invalid
  const std::string before = ir::print_graph(g);
  FakeBackend yes = yes_backend();
  PassStats stats;
  EXPECT_FALSE(MlaAttnQuantFusion(yes).run(g, stats));
  EXPECT_EQ(ir::print_graph(g), before);
  ASSERT_EQ(stats.rejections.size(), 1u);
  EXPECT_EQ(stats.rejections[0].reason, "group size 64 does not divide H*V = 96");
}

TEST(MlaFusionText, GroupFp8WrongDtypeUnchanged) {
  // An attention output declared f16 (an unverified frontend graph): not what the fused op
  // quantizes.
  const std::string text = R"(
graph {
  input %q : bf16[T, 1, 192]
  input %kv_c : bf16[T, 512]
  input %k_pe : bf16[T, 1, 64]
  input %cache : bf16[4, 64, 576]
  %out, %cache_out, _ = mla_attention(%q, %kv_c, %k_pe, %cache, _) {kv_lora_rank = 512,
      layer = 0, num_heads = 1, qk_nope_dim = 128, qk_rope_dim = 64, v_head_dim = 128}
      : f16[T, 128], bf16[4, 64, 576], _
  %xq, %xs = quant_fp8_group(%out) {col_major = false, group_size = 128, tma_aligned = false,
      ue8m0 = false} : fp8e4m3[T, 128], f32[T, 1]
  output %xq, %xs, %cache_out
}
)";
  ir::ParseOptions po;
  po.verify = false;
  Graph g = ir::parse_graph(text, po);
  const std::string before = ir::print_graph(g);
  FakeBackend yes = yes_backend();
  PassStats stats;
  EXPECT_FALSE(MlaAttnQuantFusion(yes).run(g, stats));
  EXPECT_EQ(ir::print_graph(g), before);
  ASSERT_EQ(stats.rejections.size(), 1u);
  EXPECT_NE(stats.rejections[0].reason.find("wrong dtype: the attention output %out is f16"),
            std::string::npos)
      << stats.rejections[0].reason;
}

const char* kStaticBody = R"(
  %xq = quant_fp8_static(%out, %scale) : fp8e4m3[T, 128]
  %y = linear_fp8_block(%xq, %scale, %w, %ws) : bf16[T, 256]
  output %y, %cache_out
}
)";

TEST(MlaFusionText, StaticFp8) {
  FakeBackend yes = yes_backend();
  TextResult r = fuse_text(kStaticBody, yes);
  EXPECT_EQ(r.text, canonical_fused(R"(
  %xq, %cache_out, _ = mla_attention(%q, %kv_c, %k_pe, %cache, %scale) {kv_lora_rank = 512,
      layer = 0, num_heads = 1, qk_nope_dim = 128, qk_rope_dim = 64, v_head_dim = 128}
      : fp8e4m3[T, 128], bf16[4, 64, 576], _
)",
                                    R"(
  %y = linear_fp8_block(%xq, %scale, %w, %ws) : bf16[T, 256]
  output %y, %cache_out
}
)"));
  EXPECT_EQ(r.stats.pattern_matches.at("fp8-static"), 1);
}

TEST(MlaFusionText, StaticFp8SecondUserUnchanged) {
  // The second user is a group-32 quantization, which no pattern fuses.
  const std::string body = R"(
  %xq = quant_fp8_static(%out, %scale) : fp8e4m3[T, 128]
  %xg, %xgs = quant_fp8_group(%out) {col_major = false, group_size = 32, tma_aligned = false,
      ue8m0 = false} : fp8e4m3[T, 128], f32[T, 4]
  %y = linear_fp8_block(%xq, %scale, %w, %ws) : bf16[T, 256]
  output %y, %cache_out, %xg, %xgs
}
)";
  FakeBackend yes = yes_backend();
  TextResult r = fuse_text(body, yes);
  EXPECT_EQ(r.text, canonical(body));
  ASSERT_EQ(r.stats.rejections.size(), 1u);
  EXPECT_EQ(r.stats.rejections[0].pattern, "fp8-static");
  EXPECT_EQ(r.stats.rejections[0].reason, "%out has another user (%xg, %xgs = quant_fp8_group)");
}

TEST(MlaFusionText, StaticFp8GraphOutputUnchanged) {
  const std::string body = R"(
  %xq = quant_fp8_static(%out, %scale) : fp8e4m3[T, 128]
  %y = linear_fp8_block(%xq, %scale, %w, %ws) : bf16[T, 256]
  output %y, %cache_out, %out
}
)";
  FakeBackend yes = yes_backend();
  TextResult r = fuse_text(body, yes);
  EXPECT_EQ(r.text, canonical(body));
  ASSERT_EQ(r.stats.rejections.size(), 1u);
  EXPECT_EQ(r.stats.rejections[0].reason, "%out is a graph output");
}

TEST(MlaFusionText, StaticFp8BackendSaysNoUnchanged) {
  FakeBackend no_static(
      [](const FusedQuantRequest& r) { return r.quant.key() != kFp8StaticTensorSym; }, "no-static");
  TextResult r = fuse_text(kStaticBody, no_static);
  EXPECT_EQ(r.text, canonical(kStaticBody));
  ASSERT_EQ(r.stats.rejections.size(), 1u);
  EXPECT_NE(r.stats.rejections[0].reason.find("does not support " + kFp8StaticTensorSym.str()),
            std::string::npos);
}

TEST(MlaFusionText, StaticFp8WrongScaleDtypeUnchanged) {
  const std::string text =
      std::string(kHeader).replace(std::string(kHeader).find("%scale : f32[1]"), 15,
                                   "%scale : bf16[1]") +
      R"(
  %xq = quant_fp8_static(%out, %scale) : fp8e4m3[T, 128]
  output %xq, %cache_out
}
)";
  ir::ParseOptions po;
  po.verify = false;
  Graph g = ir::parse_graph(text, po);
  const std::string before = ir::print_graph(g);
  FakeBackend yes = yes_backend();
  PassStats stats;
  EXPECT_FALSE(MlaAttnQuantFusion(yes).run(g, stats));
  EXPECT_EQ(ir::print_graph(g), before);
  ASSERT_EQ(stats.rejections.size(), 1u);
  EXPECT_EQ(stats.rejections[0].reason,
            "wrong dtype: the static scale %scale is bf16[1], expected f32[1]");
}

const char* kNvfp4Body = R"(
  %xq, %xs = quant_nvfp4(%out, %scale) : fp4e2m1x2[T, 64], fp8e4m3[T, 8]{nvfp4_swizzled}
  %y = linear_nvfp4(%xq, %xs, %scale, %w, %ws) : bf16[T, 256]
  output %y, %cache_out
}
)";

TEST(MlaFusionText, Nvfp4) {
  FakeBackend yes = yes_backend();
  TextResult r = fuse_text(kNvfp4Body, yes);
  EXPECT_EQ(r.text, canonical_fused(R"(
  %xq, %cache_out, %xs = mla_attention(%q, %kv_c, %k_pe, %cache, %scale) {kv_lora_rank = 512,
      layer = 0, num_heads = 1, qk_nope_dim = 128, qk_rope_dim = 64, quant_group_size = 16,
      v_head_dim = 128} : fp4e2m1x2[T, 64], bf16[4, 64, 576], fp8e4m3[T, 8]{nvfp4_swizzled}
)",
                                    R"(
  %y = linear_nvfp4(%xq, %xs, %scale, %w, %ws) : bf16[T, 256]
  output %y, %cache_out
}
)"));
  EXPECT_EQ(r.stats.pattern_matches.at("nvfp4"), 1);
}

TEST(MlaFusionText, Nvfp4SecondUserUnchanged) {
  const std::string body = R"(
  %xq, %xs = quant_nvfp4(%out, %scale) : fp4e2m1x2[T, 64], fp8e4m3[T, 8]{nvfp4_swizzled}
  %xq8 = quant_fp8_static(%out, %scale) : fp8e4m3[T, 128]
  %y = linear_nvfp4(%xq, %xs, %scale, %w, %ws) : bf16[T, 256]
  %y8 = linear_fp8_block(%xq8, %scale, %w, %ws) : bf16[T, 256]
  output %y, %y8, %cache_out
}
)";
  FakeBackend yes = yes_backend();
  TextResult r = fuse_text(body, yes);
  EXPECT_EQ(r.text, canonical(body));
  EXPECT_EQ(r.stats.rejections.size(), 2u);
}

TEST(MlaFusionText, Nvfp4BackendSaysNoUnchanged) {
  FakeBackend no_fp4([](const FusedQuantRequest& r) { return r.quant.key() != kNvfp4Dynamic; },
                     "no-fp4");
  TextResult r = fuse_text(kNvfp4Body, no_fp4);
  EXPECT_EQ(r.text, canonical(kNvfp4Body));
  ASSERT_EQ(r.stats.rejections.size(), 1u);
  EXPECT_EQ(r.stats.rejections[0].pattern, "nvfp4");
}

TEST(MlaFusionText, AlreadyFusedAttentionIsNotAMatch) {
  // A fused attention's fp8 output feeding nothing quantizable: no pattern applies, no noise.
  const std::string text = R"(
graph {
  input %q : bf16[T, 1, 192]
  input %kv_c : bf16[T, 512]
  input %k_pe : bf16[T, 1, 64]
  input %cache : bf16[4, 64, 576]
  input %scale : f32[1]
  %xq, %cache_out, _ = mla_attention(%q, %kv_c, %k_pe, %cache, %scale) {kv_lora_rank = 512,
      layer = 0, num_heads = 1, qk_nope_dim = 128, qk_rope_dim = 64, v_head_dim = 128}
      : fp8e4m3[T, 128], bf16[4, 64, 576], _
  output %xq, %cache_out
}
)";
  Graph g = ir::parse_graph(text);
  FakeBackend yes = yes_backend();
  PassStats stats;
  EXPECT_FALSE(MlaAttnQuantFusion(yes).run(g, stats));
  EXPECT_TRUE(stats.rejections.empty());
  EXPECT_TRUE(yes.requests.empty());  // no unfused attention: nothing to ask
}

}  // namespace
}  // namespace mlafuse::passes
