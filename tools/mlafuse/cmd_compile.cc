// mlafuse compile: build (or read) an MLA block graph, run the compiler pipeline, show what
// each pass did and the graph before and after.
#include <chrono>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "cli_args.h"
#include "cli_job.h"
#include "command.h"
#include "compile_report.h"
#include "mlafuse/app/pipeline.h"
#include "mlafuse/backends/backend.h"
#include "mlafuse/core/error.h"
#include "mlafuse/core/file.h"
#include "mlafuse/ir/text.h"
#include "mlafuse/models/mla_block.h"
#include "mlafuse/passes/pass_manager.h"

namespace mlafuse::cli {
namespace {

struct CompileOptions {
  int64_t layers = 1;
  int64_t heads = 128;
  int64_t pages = 1024;
  QuantFlags quant{"none", /*with_none=*/true};
  std::string backend = "cpu";
  std::string in;
  std::string out;
  std::string dot;
  std::string disable;
  bool json = false;
  bool dump = false;
};

void print_stats(const std::vector<passes::PassStats>& stats) {
  for (const auto& s : stats) {
    if (!s.ran) {
      std::printf("pass %s: disabled\n", s.pass.c_str());
      continue;
    }
    std::printf("pass %s: %s, %lld match(es), nodes %lld -> %lld, %.1f us\n", s.pass.c_str(),
                s.changed ? "changed" : "unchanged", static_cast<long long>(s.matches),
                static_cast<long long>(s.nodes_before), static_cast<long long>(s.nodes_after),
                s.time_us);
    for (const auto& [pattern, n] : s.pattern_matches) {
      std::printf("  %-44s %lld\n", pattern.c_str(), static_cast<long long>(n));
    }
    for (const auto& r : s.rejections) {
      std::printf("  refused %s at %s: %s\n", r.pattern.c_str(), r.node.c_str(), r.reason.c_str());
    }
  }
}

int run_compile(const std::vector<std::string>& args) {
  CompileOptions o;
  ArgParser p("compile",
              "Builds the graph of DeepSeek-V3 MLA blocks (or reads one with --in), runs the "
              "compiler pipeline\n(mla-attn-quant-fusion, dce) and prints the graph before and "
              "after and what each pass did.");
  p.add_int("--layers", &o.layers, "N", "MLA layers to build (default 1)", 1, 4096);
  p.add_int("--heads", &o.heads, "H", "attention heads per layer (default 128)", 1, 1024);
  p.add_int("--pages", &o.pages, "N", "paged KV-cache pages (default 1024)", 1, int64_t{1} << 30);
  o.quant.add_to(&p, "quantization before o_proj (default none)");
  p.add_string("--backend", &o.backend, "NAME", "backend asked what it can fuse (default cpu)");
  p.add_string("--in", &o.in, "FILE", "read the graph from FILE (text IR) instead of building it");
  p.add_string("--out", &o.out, "FILE", "write the compiled graph to FILE (text IR)");
  p.add_string("--dot", &o.dot, "FILE", "write the compiled graph to FILE (Graphviz)");
  p.add_string("--disable", &o.disable, "PASS", "skip a pass (mla-attn-quant-fusion or dce)");
  p.add_flag("--dump", &o.dump, "print the graph before and after every pass");
  p.add_flag("--json", &o.json, "print one JSON object instead of text");
  if (!p.parse(args)) return 0;

  if (!o.in.empty()) {
    for (const char* f :
         {"--layers", "--heads", "--pages", "--quant", "--col-major", "--ue8m0", "--tma-aligned"}) {
      MLAFUSE_CHECK(!p.given(f), f, " builds a graph, --in reads one: give one or the other");
    }
  }
  const OutputQuant quant = o.quant.get();
  MLAFUSE_CHECK(!(o.json && o.dump), "--dump prints graphs as text: it does not go with --json");
  MLAFUSE_CHECK(o.out.empty() || o.out != o.dot, "--out and --dot name the same file ", o.out,
                "; give each its own");

  // compile_us: reading or building the graph, creating the backend, and the pass pipeline with
  // its verification around every pass. Printing and writing files come after the clock stops.
  const auto t0 = std::chrono::steady_clock::now();
  ir::Graph graph;
  std::string source;
  if (!o.in.empty()) {
    graph = ir::parse_graph(read_file(o.in), ir::ParseOptions{o.in, true});
    source = o.in;
  } else {
    models::MlaGraphOptions mo;
    mo.config.num_heads = o.heads;
    mo.num_layers = o.layers;
    mo.num_pages = o.pages;
    mo.quant = quant;
    graph = models::build_mla_graph(mo);
    source = "deepseek-v3 mla x" + std::to_string(o.layers) + " H=" + std::to_string(o.heads) +
             " quant=" + quant.str();
  }
  // The text of the input graph is kept for the report; its cost is measured and taken off.
  const std::map<std::string, int64_t> ops_before = graph.op_counts();
  std::string before_text;
  double print_us = 0;
  if (!o.json) {
    const auto p0 = std::chrono::steady_clock::now();
    before_text = ir::print_graph(graph);
    print_us =
        std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - p0).count();
  }
  std::unique_ptr<Backend> backend = make_backend(o.backend);

  passes::PassManager pm = app::default_pipeline(*backend);
  if (!o.disable.empty()) pm.disable(o.disable);
  if (o.dump) {  // its printing is timed and taken off compile_us, as the input's text is
    pm.set_dump([&print_us](std::string_view pass, std::string_view when, const ir::Graph& g) {
      const auto d0 = std::chrono::steady_clock::now();
      std::printf("// ---- %.*s pass %.*s\n%s", static_cast<int>(when.size()), when.data(),
                  static_cast<int>(pass.size()), pass.data(), ir::print_graph(g).c_str());
      print_us +=
          std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - d0).count();
    });
  }
  const std::vector<passes::PassStats> stats = pm.run(graph);
  const auto t1 = std::chrono::steady_clock::now();
  const double compile_us = std::chrono::duration<double, std::micro>(t1 - t0).count() - print_us;

  std::string after_text;
  if (!o.out.empty() || !o.json) after_text = ir::print_graph(graph);
  if (!o.out.empty()) write_text_file(o.out, after_text);
  if (!o.dot.empty()) write_text_file(o.dot, ir::to_dot(graph));

  if (o.json) {
    std::printf(
        "%s\n",
        compile_report_json(stats, ops_before, graph, source, backend->name(), compile_us).c_str());
    return 0;
  }
  std::printf("// source: %s\n// backend: %s\n// ---- before\n%s", source.c_str(),
              backend->name().c_str(), before_text.c_str());
  print_stats(stats);
  std::printf("// ---- after\n%s", after_text.c_str());
  std::printf("// compile: %.0f us\n", compile_us);
  return 0;
}

const bool kRegistered = register_command(
    {"compile", "build or read an MLA graph and run the fusion pipeline", run_compile});

}  // namespace
}  // namespace mlafuse::cli
