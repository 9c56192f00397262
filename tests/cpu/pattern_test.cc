// The generic matcher and rewrite driver, on toy ops registered by the test (no MLA anywhere).
#include "mlafuse/passes/pattern.h"

#include <gtest/gtest.h>

#include "mlafuse/ir/op_registry.h"
#include "mlafuse/ir/text.h"
#include "mlafuse/ir/verifier.h"
#include "mlafuse/passes/rewrite.h"

namespace mlafuse::passes {
namespace {

using ir::Graph;
using ir::ValueType;

// Toy ops: t_neg(x), t_add(a, b), t_sub(a, b) keep the type; t_split(x) {both?} -> lo, hi?;
// t_scale(x, s?) {k?} -> y.
void register_toy_ops() {
  static bool done = [] {
    auto& reg = ir::OpRegistry::global();
    auto same = [](std::span<const ValueType* const> in, const AttrMap&) {
      for (const ValueType* t : in) {
        MLAFUSE_CHECK(t == nullptr || *t == *in[0], "toy op: operand types differ");
      }
      return std::vector<std::optional<ValueType>>{*in[0]};
    };
    reg.add(ir::OpSchema{"t_neg", {{"x"}}, {{"y"}}, {}, same});
    reg.add(ir::OpSchema{"t_add", {{"a"}, {"b"}}, {{"y"}}, {}, same});
    reg.add(ir::OpSchema{"t_sub", {{"a"}, {"b"}}, {{"y"}}, {}, same});
    reg.add(ir::OpSchema{"t_split",
                         {{"x"}},
                         {{"lo"}, {"hi", true}},
                         {{"both", ir::AttrKind::kBool, false}},
                         [](std::span<const ValueType* const> in, const AttrMap& a) {
                           std::vector<std::optional<ValueType>> out(2);
                           out[0] = *in[0];
                           if (a.get_or<bool>("both", false)) out[1] = *in[0];
                           return out;
                         }});
    reg.add(ir::OpSchema{"t_scale",
                         {{"x"}, {"s", true}},
                         {{"y"}},
                         {{"k", ir::AttrKind::kInt, false}},
                         [](std::span<const ValueType* const> in, const AttrMap& a) {
                           ValueType t = *in[0];
                           // k = 2 halves the last dim: lets a rewrite produce a wrong type.
                           if (a.get_or<int64_t>("k", 1) == 2) t.shape.dims.back().value /= 2;
                           return std::vector<std::optional<ValueType>>{t};
                         }});
    return true;
  }();
  (void)done;
}

class PatternTest : public ::testing::Test {
 protected:
  void SetUp() override { register_toy_ops(); }
  Graph parse(const std::string& body) {
    return ir::parse_graph("graph {\n  input %a : f32[T, 8]\n  input %b : f32[T, 8]\n" + body +
                           "}\n");
  }
  std::string canon(const std::string& body) { return ir::print_graph(parse(body)); }
};

// ---- the matcher -------------------------------------------------------------------------------

TEST_F(PatternTest, CapturesNodesAndValuesThroughMultiOutputOps) {
  Graph g = parse(R"(
  %lo, %hi = t_split(%a) {both = true} : f32[T, 8], f32[T, 8]
  %y = t_add(%hi, %b) : f32[T, 8]
  output %y, %lo
)");
  NodePat split = NodePat("t_split").as("split").attr(AttrPred::eq("both", true)).output(0, "lo");
  NodePat add = NodePat("t_add")
                    .as("add")
                    .input(0, ValuePat::output_of(split, 1).as("hi"))
                    .input(1, ValuePat::any().as("rhs"));
  Match m;
  ir::Node* add_node = g.value("y")->producer();
  ASSERT_TRUE(match_pattern(add, add_node, m));
  EXPECT_EQ(m.root(), add_node);
  EXPECT_EQ(m.nodes().size(), 2u);
  EXPECT_EQ(m.node("split"), g.value("lo")->producer());
  EXPECT_EQ(m.value("hi"), g.value("hi"));
  EXPECT_EQ(m.value("lo"), g.value("lo"));
  EXPECT_EQ(m.value("rhs"), g.input("b"));
  EXPECT_THROW(m.value("nope"), Error);
  EXPECT_THROW(m.node("nope"), Error);
  // Output index matters: %hi is output 1, not 0.
  NodePat wrong_index = NodePat("t_add").input(0, ValuePat::output_of(split, 0));
  EXPECT_FALSE(match_pattern(wrong_index, add_node, m));
  EXPECT_TRUE(m.nodes().empty());
  // The root op must match.
  EXPECT_FALSE(match_pattern(NodePat("t_sub"), add_node, m));
}

TEST_F(PatternTest, AttributePredicates) {
  Graph g = parse(R"(
  %y = t_scale(%a, _) {k = 3} : f32[T, 8]
  %z = t_scale(%a, %b) : f32[T, 8]
  output %y, %z
)");
  ir::Node* y = g.value("y")->producer();
  ir::Node* z = g.value("z")->producer();
  Match m;
  EXPECT_TRUE(match_pattern(NodePat("t_scale").attr(AttrPred::eq("k", int64_t{3})), y, m));
  EXPECT_FALSE(match_pattern(NodePat("t_scale").attr(AttrPred::eq("k", int64_t{3})), z, m));
  EXPECT_FALSE(match_pattern(NodePat("t_scale").attr(AttrPred::eq("k", true)), y, m));  // type
  EXPECT_TRUE(
      match_pattern(NodePat("t_scale").attr(AttrPred::eq_or("k", int64_t{1}, int64_t{1})), z, m));
  EXPECT_FALSE(
      match_pattern(NodePat("t_scale").attr(AttrPred::eq_or("k", int64_t{1}, int64_t{1})), y, m));
  EXPECT_TRUE(match_pattern(NodePat("t_scale").attr(AttrPred::absent("k")), z, m));
  EXPECT_FALSE(match_pattern(NodePat("t_scale").attr(AttrPred::absent("k")), y, m));
  EXPECT_TRUE(match_pattern(NodePat("t_scale").attr(AttrPred::present("k")), y, m));
  auto odd = AttrPred::custom(
      "k", [](const AttrValue* v) { return v && std::get<int64_t>(*v) % 2 == 1; }, "k is odd");
  EXPECT_EQ(odd.description, "k is odd");
  EXPECT_TRUE(match_pattern(NodePat("t_scale").attr(odd), y, m));
  EXPECT_FALSE(match_pattern(NodePat("t_scale").attr(odd), z, m));
  EXPECT_EQ(AttrPred::eq("k", int64_t{3}).description, "k == 3");
}

TEST_F(PatternTest, OptionalOperandsAndDtypes) {
  Graph g = parse(R"(
  %y = t_scale(%a, _) : f32[T, 8]
  %z = t_scale(%a, %b) : f32[T, 8]
  output %y, %z
)");
  ir::Node* y = g.value("y")->producer();
  ir::Node* z = g.value("z")->producer();
  Match m;
  EXPECT_TRUE(match_pattern(NodePat("t_scale").input(1, ValuePat::absent()), y, m));
  EXPECT_FALSE(match_pattern(NodePat("t_scale").input(1, ValuePat::absent()), z, m));
  EXPECT_FALSE(match_pattern(NodePat("t_scale").input(1, ValuePat::any()), y, m));
  ASSERT_TRUE(match_pattern(NodePat("t_scale").input(1, ValuePat::any_or_absent().as("s")), y, m));
  EXPECT_TRUE(m.has_value("s"));
  EXPECT_EQ(m.value("s"), nullptr);
  EXPECT_TRUE(match_pattern(NodePat("t_scale").input(0, ValuePat::any().dtype(DType::kF32)), z, m));
  EXPECT_FALSE(
      match_pattern(NodePat("t_scale").input(0, ValuePat::any().dtype(DType::kBF16)), z, m));
  EXPECT_FALSE(match_pattern(NodePat("t_scale").input(7, ValuePat::any()), z, m));
}

TEST_F(PatternTest, OneCaptureNameBindsOneValue) {
  Graph g = parse(R"(
  %s = t_add(%a, %a) : f32[T, 8]
  %t = t_add(%a, %b) : f32[T, 8]
  output %s, %t
)");
  NodePat same =
      NodePat("t_add").input(0, ValuePat::any().as("x")).input(1, ValuePat::any().as("x"));
  Match m;
  EXPECT_TRUE(match_pattern(same, g.value("s")->producer(), m));
  EXPECT_FALSE(match_pattern(same, g.value("t")->producer(), m));
}

// ---- the driver --------------------------------------------------------------------------------

// t_add(t_neg(x), y) -> t_sub(y, x): a fresh output that takes over the add's users.
Rule add_neg_rule() {
  NodePat neg = NodePat("t_neg").as("neg");
  NodePat add = NodePat("t_add")
                    .as("add")
                    .input(0, ValuePat::output_of(neg, 0))
                    .input(1, ValuePat::any().as("y"));
  return Rule{"add-neg-to-sub", add, [](const Match& m) {
                Replacement r;
                r.op = "t_sub";
                r.inputs = {m.value("y"), m.node("neg")->input(0)};
                r.outputs = {NewOutput{nullptr, m.node("add")->output(0)->name() + ".sub"}};
                r.replace_uses = {{m.node("add")->output(0), 0}};
                return RewriteResult::replace(std::move(r));
              }};
}

TEST_F(PatternTest, DriverReplacesAndRemovesTheMatch) {
  Graph g = parse(R"(
  %n = t_neg(%a) : f32[T, 8]
  %s = t_add(%n, %b) : f32[T, 8]
  %u = t_neg(%s) : f32[T, 8]
  output %u
)");
  RuleSet rules;
  rules.add(add_neg_rule());
  PassStats stats;
  EXPECT_TRUE(apply_rules(g, rules, stats));
  EXPECT_EQ(stats.matches, 1);
  EXPECT_EQ(stats.pattern_matches.at("add-neg-to-sub"), 1);
  ir::verify(g);
  EXPECT_EQ(ir::print_graph(g), canon(R"(
  %s.sub = t_sub(%b, %a) : f32[T, 8]
  %u = t_neg(%s.sub) : f32[T, 8]
  output %u
)"));
}

TEST_F(PatternTest, DriverRefusesWhenAnIntermediateHasAnotherUser) {
  const std::string body = R"(
  %n = t_neg(%a) : f32[T, 8]
  %s = t_add(%n, %b) : f32[T, 8]
  %v = t_neg(%n) : f32[T, 8]
  output %s, %v
)";
  Graph g = parse(body);
  RuleSet rules;
  rules.add(add_neg_rule());
  PassStats stats;
  EXPECT_FALSE(apply_rules(g, rules, stats));
  EXPECT_EQ(ir::print_graph(g), canon(body));
  ASSERT_EQ(stats.rejections.size(), 1u);
  EXPECT_EQ(stats.rejections[0].pattern, "add-neg-to-sub");
  EXPECT_EQ(stats.rejections[0].node, "%s = t_add");
  EXPECT_EQ(stats.rejections[0].reason, "%n has another user (%v = t_neg)");
}

TEST_F(PatternTest, DriverRefusesWhenAnIntermediateIsAGraphOutput) {
  const std::string body = R"(
  %n = t_neg(%a) : f32[T, 8]
  %s = t_add(%n, %b) : f32[T, 8]
  output %s, %n
)";
  Graph g = parse(body);
  RuleSet rules;
  rules.add(add_neg_rule());
  PassStats stats;
  EXPECT_FALSE(apply_rules(g, rules, stats));
  EXPECT_EQ(ir::print_graph(g), canon(body));
  ASSERT_EQ(stats.rejections.size(), 1u);
  EXPECT_EQ(stats.rejections[0].reason, "%n is a graph output");
}

TEST_F(PatternTest, RejectionsAndNoMatchLeaveTheGraphAlone) {
  const std::string body = R"(
  %n = t_neg(%a) : f32[T, 8]
  %m = t_neg(%b) : f32[T, 8]
  output %n, %m
)";
  Graph g = parse(body);
  RuleSet rules;
  // First rule: silently not applicable; second: rejects %b's negation only.
  rules.add(Rule{"skip", NodePat("t_neg"), [](const Match&) { return RewriteResult::no_match(); }});
  rules.add(
      Rule{"refuse-b", NodePat("t_neg").input(0, ValuePat::any().as("x")), [](const Match& m) {
             if (m.value("x")->name() != "b") return RewriteResult::no_match();
             return RewriteResult::reject("b is special");
           }});
  EXPECT_EQ(rules.size(), 2u);
  ASSERT_NE(rules.rules_for("t_neg"), nullptr);
  EXPECT_EQ(rules.rules_for("t_add"), nullptr);
  PassStats stats;
  EXPECT_FALSE(apply_rules(g, rules, stats));
  EXPECT_EQ(ir::print_graph(g), canon(body));
  ASSERT_EQ(stats.rejections.size(), 1u);
  EXPECT_EQ(stats.rejections[0].pattern, "refuse-b");
  EXPECT_EQ(stats.rejections[0].reason, "b is special");
}

TEST_F(PatternTest, ReplacementsThatDoNotTypeCheckAreRefused) {
  const std::string body = R"(
  %y = t_scale(%a, _) : f32[T, 8]
  output %y
)";
  Graph g = parse(body);
  RuleSet rules;
  // Re-parents %y onto a node that would infer f32[T, 4]: the caller's buffer would change.
  rules.add(
      Rule{"halve", NodePat("t_scale").attr(AttrPred::absent("k")).as("s"), [](const Match& m) {
             Replacement r;
             r.op = "t_scale";
             r.inputs = {m.node("s")->input(0)};
             r.attrs.set("k", int64_t{2});
             r.outputs = {NewOutput{m.node("s")->output(0), ""}};
             return RewriteResult::replace(std::move(r));
           }});
  // Names an op that does not exist.
  rules.add(Rule{"ghost", NodePat("t_scale"), [](const Match& m) {
                   Replacement r;
                   r.op = "t_ghost";
                   return RewriteResult::replace(std::move(r));
                 }});
  PassStats stats;
  EXPECT_FALSE(apply_rules(g, rules, stats));
  EXPECT_EQ(ir::print_graph(g), canon(body));
  ASSERT_EQ(stats.rejections.size(), 2u);
  EXPECT_EQ(stats.rejections[0].reason,
            "re-parenting %y (f32[T, 8]) to t_scale output y, which infers f32[T, 4]");
  EXPECT_EQ(stats.rejections[1].reason, "the replacement op 't_ghost' is not registered");
}

TEST_F(PatternTest, ReparentingKeepsTheValueAndSortsWhenUsersComeEarly) {
  // t_split(x){both} -> (lo, hi); t_add(hi, b) -> y. %lo is read by %early, which sits between
  // the split and the add: the fused node (placed where the add was) must move up.
  Graph g = parse(R"(
  %lo, %hi = t_split(%a) {both = true} : f32[T, 8], f32[T, 8]
  %early = t_neg(%lo) : f32[T, 8]
  %y = t_add(%hi, %b) : f32[T, 8]
  output %y, %early
)");
  ir::Value* lo = g.value("lo");
  NodePat split = NodePat("t_split").as("split").output(0, "lo");
  NodePat add = NodePat("t_add").as("add").input(0, ValuePat::output_of(split, 1));
  RuleSet rules;
  rules.add(Rule{"split-add-real", add, [](const Match& m) {
                   Replacement r;
                   r.op = "t_split";
                   r.inputs = {m.node("split")->input(0)};
                   r.attrs.set("both", true);
                   r.outputs = {NewOutput{m.value("lo"), ""}, NewOutput{nullptr, "y2"}};
                   r.replace_uses = {{m.node("add")->output(0), 1}};
                   return RewriteResult::replace(std::move(r));
                 }});
  PassStats stats;
  EXPECT_TRUE(apply_rules(g, rules, stats));
  ir::verify(g);                 // topological again
  EXPECT_EQ(g.value("lo"), lo);  // the same Value object, re-parented
  EXPECT_EQ(lo->producer()->op(), "t_split");
  EXPECT_EQ(g.nodes()[0], lo->producer());
  EXPECT_EQ(g.output("y2")->producer(), lo->producer());
  EXPECT_TRUE(stats.rejections.empty());
  EXPECT_EQ(stats.pattern_matches.at("split-add-real"), 1);
}

TEST_F(PatternTest, RuleCyclesAreDetected) {
  Graph g = parse(R"(
  %n = t_neg(%a) : f32[T, 8]
  output %n
)");
  int counter = 0;
  RuleSet rules;
  rules.add(Rule{"renew", NodePat("t_neg").as("n"), [&counter](const Match& m) {
                   Replacement r;
                   r.op = "t_neg";
                   r.inputs = {m.node("n")->input(0)};
                   r.outputs = {NewOutput{nullptr, "n" + std::to_string(++counter)}};
                   r.replace_uses = {{m.node("n")->output(0), 0}};
                   return RewriteResult::replace(std::move(r));
                 }});
  PassStats stats;
  try {
    apply_rules(g, rules, stats, 4);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("after 4 sweeps"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace mlafuse::passes
