// PassManager (ordering, verification around passes, dumps, disabling, statistics) and DCE.
#include "mlafuse/passes/pass_manager.h"

#include <gtest/gtest.h>

#include "mlafuse/ir/op_registry.h"
#include "mlafuse/ir/text.h"
#include "mlafuse/passes/dce.h"

namespace mlafuse::passes {
namespace {

using ir::Graph;

const char* kGraph = R"(
graph {
  input %x : bf16[T, 256]
  input %s : f32[1]
  %a = quant_fp8_static(%x, %s) : fp8e4m3[T, 256]
  %dead = quant_fp8_static(%x, %s) : fp8e4m3[T, 256]
  %q, %qs = quant_fp8_group(%x) {col_major = false, group_size = 128, tma_aligned = false,
      ue8m0 = false} : fp8e4m3[T, 256], f32[T, 2]
  output %a
}
)";

// Records what it saw; optionally does something to the graph.
class ProbePass : public Pass {
 public:
  ProbePass(std::string name, std::vector<std::string>* log,
            std::function<bool(Graph&)> body = nullptr)
      : name_(std::move(name)), log_(log), body_(std::move(body)) {}
  std::string_view name() const override { return name_; }
  bool run(Graph& g, PassStats& stats) override {
    log_->push_back("run " + name_);
    if (!body_) return false;
    stats.matches = 7;
    return body_(g);
  }

 private:
  std::string name_;
  std::vector<std::string>* log_;
  std::function<bool(Graph&)> body_;
};

TEST(PassManager, RunsInOrderDumpsAndRecordsStats) {
  Graph g = ir::parse_graph(kGraph);
  std::vector<std::string> log;
  PassManager pm;
  pm.emplace<ProbePass>("first", &log);
  pm.emplace<DeadCodeElimination>();
  pm.emplace<ProbePass>("last", &log, [](Graph&) { return false; });
  EXPECT_EQ(pm.pass_names(), (std::vector<std::string>{"first", "dce", "last"}));
  pm.set_dump([&log](std::string_view pass, std::string_view when, const Graph& graph) {
    log.push_back(std::string(when) + " " + std::string(pass) + " " +
                  std::to_string(graph.num_nodes()));
  });
  auto stats = pm.run(g);
  EXPECT_EQ(
      log, (std::vector<std::string>{"before first 3", "run first", "after first 3", "before dce 3",
                                     "after dce 1", "before last 1", "run last", "after last 1"}));
  ASSERT_EQ(stats.size(), 3u);
  EXPECT_EQ(stats[1].pass, "dce");
  EXPECT_TRUE(stats[1].ran);
  EXPECT_TRUE(stats[1].changed);
  EXPECT_EQ(stats[1].matches, 2);
  EXPECT_EQ(stats[1].nodes_before, 3);
  EXPECT_EQ(stats[1].nodes_after, 1);
  EXPECT_GE(stats[1].time_us, 0.0);
  EXPECT_FALSE(stats[2].changed);
  EXPECT_EQ(stats[2].matches, 7);
}

TEST(PassManager, DisabledPassesAreSkipped) {
  Graph g = ir::parse_graph(kGraph);
  PassManager pm;
  pm.emplace<DeadCodeElimination>();
  pm.disable("dce");
  auto stats = pm.run(g);
  EXPECT_FALSE(stats[0].ran);
  EXPECT_EQ(g.num_nodes(), 3u);
  pm.disable("no-such-pass");
  try {
    pm.run(g);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("'no-such-pass'"), std::string::npos) << e.what();
  }
}

TEST(PassManager, DuplicatePassNamesAreErrors) {
  PassManager pm;
  pm.emplace<DeadCodeElimination>();
  EXPECT_THROW(pm.emplace<DeadCodeElimination>(), Error);
}

TEST(PassManager, VerifiesTheInputGraph) {
  ir::ParseOptions po;
  po.verify = false;
  // The group scale declared row-major while the flags ask for col-major.
  Graph g = ir::parse_graph(R"(
graph {
  input %x : bf16[T, 256]
  %q, %qs = quant_fp8_group(%x) {col_major = true, group_size = 128, tma_aligned = false,
      ue8m0 = false} : fp8e4m3[T, 256], f32[T, 2]
  output %q, %qs
}
)",
                            po);
  std::vector<std::string> log;
  PassManager pm;
  pm.emplace<ProbePass>("probe", &log);
  try {
    pm.run(g);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("on the input graph"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("f32[T, 2]{col_major}"), std::string::npos) << e.what();
  }
  EXPECT_TRUE(log.empty());
  pm.set_verify(false);
  pm.run(g);
  EXPECT_EQ(log.size(), 1u);
}

TEST(PassManager, NamesThePassThatBrokeTheGraph) {
  Graph g = ir::parse_graph(kGraph);
  std::vector<std::string> log;
  PassManager pm;
  // Re-points the group quant at %a (fp8): no longer a valid quant_fp8_group input.
  pm.emplace<ProbePass>("breaker", &log, [](Graph& graph) {
    graph.set_input(graph.value("q")->producer(), 0, graph.value("a"));
    return true;
  });
  pm.emplace<ProbePass>("never", &log);
  try {
    pm.run(g);
    FAIL() << "no error";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("after pass 'breaker'"), std::string::npos) << msg;
    EXPECT_NE(msg.find("quant_fp8_group input x: expected dtype bf16 or f16 or f32, got "
                       "fp8e4m3[T, 256]"),
              std::string::npos)
        << msg;
  }
  EXPECT_EQ(log, (std::vector<std::string>{"run breaker"}));
}

// ---- DCE, text in / text out ------------------------------------------------------------------

std::string dce(const std::string& text, bool* changed) {
  Graph g = ir::parse_graph(text);
  *changed = DeadCodeElimination().run(g);
  return ir::print_graph(g);
}

TEST(Dce, RemovesUnusedChains) {
  bool changed = false;
  const std::string out = dce(R"(
graph {
  input %x : bf16[T, 256]
  input %s : f32[1]
  input %unused : f32[1]
  weight %w : fp8e4m3[64, 256]
  weight %ws : f32[1, 2]
  %a = quant_fp8_static(%x, %s) : fp8e4m3[T, 256]
  %b = quant_fp8_static(%x, %s) : fp8e4m3[T, 256]
  %y = linear_fp8_block(%b, %s, %w, %ws) : bf16[T, 64]
  output %a
}
)",
                              &changed);
  EXPECT_TRUE(changed);
  // Inputs and weights stay: they are the binding interface.
  EXPECT_EQ(out, ir::print_graph(ir::parse_graph(R"(
graph {
  input %x : bf16[T, 256]
  input %s : f32[1]
  input %unused : f32[1]
  weight %w : fp8e4m3[64, 256]
  weight %ws : f32[1, 2]
  %a = quant_fp8_static(%x, %s) : fp8e4m3[T, 256]
  output %a
}
)")));
}

TEST(Dce, KeepsNodesWithAnyLiveOutput) {
  // Negative twin: %qs is dead but %q is an output, so the node stays.
  const std::string text = R"(
graph {
  input %x : bf16[T, 256]
  %q, %qs = quant_fp8_group(%x) {col_major = false, group_size = 128, tma_aligned = false,
      ue8m0 = false} : fp8e4m3[T, 256], f32[T, 2]
  output %q
}
)";
  bool changed = true;
  EXPECT_EQ(dce(text, &changed), ir::print_graph(ir::parse_graph(text)));
  EXPECT_FALSE(changed);
}

}  // namespace
}  // namespace mlafuse::passes
