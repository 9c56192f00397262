// mlafuse bench: times the unfused and the fused MLA block per decode batch size on a backend.
// On the GPU each graph is captured per padded token bucket and its replay is timed (CUDA events,
// median of --iters after warm-up), next to each node's eager time.
#include <algorithm>
#include <cstdio>
#include <string>
#include <vector>

#include "cli_args.h"
#include "cli_job.h"
#include "cli_json.h"
#include "command.h"
#include "mlafuse/app/mla_job.h"
#include "mlafuse/backends/backend.h"
#include "mlafuse/core/error.h"
#include "mlafuse/models/batch.h"
#include "mlafuse/models/mla_block.h"
#include "mlafuse/models/weights.h"
#include "mlafuse/runtime/executor.h"

namespace mlafuse::cli {
namespace {

constexpr const char* kSummary =
    "Times the MLA block unfused (attention -> quantize -> o_proj) and fused (attention with the\n"
    "quantization in its epilogue -> o_proj) for decode batches of each size, every sequence with\n"
    "--context cached tokens. On cuda each graph is captured as a CUDA graph per padded token\n"
    "bucket and its replay timed (median of --iters after warm-up); per-node times are eager.\n"
    "Each row also checks that the fused codes and scales equal the unfused ones, bit for bit;\n"
    "exit status 1 when any row's differ (2: bad input, 3: internal error).";

std::vector<int64_t> parse_list(const std::string& flag, const std::string& text) {
  std::vector<int64_t> out;
  size_t start = 0;
  while (start <= text.size()) {
    const size_t pos = text.find(',', start);
    const std::string item = text.substr(start, pos == std::string::npos ? pos : pos - start);
    char* end = nullptr;
    const long long v = std::strtoll(item.c_str(), &end, 10);
    MLAFUSE_CHECK(!item.empty() && *end == '\0' && v >= 1 && v <= 65536, flag,
                  " expects positive integers up to 65536 separated by commas, got '", item, "'");
    out.push_back(v);
    if (pos == std::string::npos) break;
    start = pos + 1;
  }
  return out;
}

struct Row {
  int64_t batch = 0, t_pad = 0;
  runtime::RunStats unfused, fused;
  bool codes_equal = false;
  bool scales_equal = false;
};

bool all_equal(const std::vector<Row>& rows) {
  return std::all_of(rows.begin(), rows.end(),
                     [](const Row& r) { return r.codes_equal && r.scales_equal; });
}

double node_us(const runtime::RunStats& s, const char* op) {
  double us = 0;
  for (const runtime::NodeTiming& t : s.nodes) {
    if (t.op == op) us += t.us;
  }
  return us;
}

int bench_main(const std::vector<std::string>& args) {
  int64_t heads = 128, layers = 1, context = 1024, iters = 0, seed = 0;
  std::string batches = "1,8,32,128", backend_name;
  QuantFlags quant;
  bool no_graphs = false, json = false;
  ArgParser p("bench", kSummary);
  p.add_choice("--backend", &backend_name, {"cpu", "cuda"},
               "default cuda when a GPU is present, else cpu");
  p.add_int("--heads", &heads, "H", "attention heads (default 128)", 1, 4096);
  p.add_int("--layers", &layers, "N", "independent MLA blocks (default 1)", 1, 1024);
  p.add_string("--batch", &batches, "B,..", "decode batch sizes (default 1,8,32,128)");
  p.add_int("--context", &context, "LEN", "each sequence's length (default 1024)", 1, 1 << 20);
  quant.add_to(&p);
  p.add_flag("--no-graphs", &no_graphs, "cuda: time eager node launches only");
  p.add_int("--iters", &iters, "N", "timed runs, median (default 100 cuda, 1 cpu)", 1, 100000);
  p.add_int("--seed", &seed, "S", "seed of weights and batches (default 0)", 0, 1 << 30);
  p.add_flag("--json", &json, "print one JSON object instead of a table");
  if (!p.parse(args)) return 0;

  const OutputQuant q = quant.resolve(p, app::default_job_quant());
  MLAFUSE_CHECK(!q.info().takes_scale(),
                "bench times dynamic group FP8 (static scales need calibration: use mlafuse run "
                "--quant ",
                quant.quant, ")");
  const std::vector<int64_t> sizes = parse_list("--batch", batches);

  std::string why;  // bench reports the backend by name only
  const std::unique_ptr<Backend> backend = pick_backend(backend_name, &why);
  const bool gpu = backend->device() == Device::kCuda;
  MLAFUSE_CHECK(!no_graphs || gpu, "--no-graphs needs the cuda backend (the ", backend->name(),
                " backend has no graphs to leave out)");

  MlaConfig cfg;
  cfg.num_heads = heads;
  cfg.softmax_scale = deepseek_mla::softmax_scale();  // V3's, YaRN's mscale included
  const WeightStore weights = models::make_mla_weights(cfg, layers, static_cast<uint64_t>(seed));
  runtime::ExecutorOptions eo;
  eo.cuda_graphs = gpu && !no_graphs;
  eo.timing_iters = static_cast<int>(iters > 0 ? iters : (gpu ? 100 : 1));
  // One warm-up run on the CPU too: the first timed node otherwise carries one-time setup (the
  // first row's unfused attention ran 3-4x slower than the same row timed again).
  eo.timing_warmup = gpu ? 10 : 1;

  std::vector<Row> rows;
  for (int64_t b : sizes) {
    models::BatchSpec spec;
    spec.decode_lens.assign(static_cast<size_t>(b), context);
    spec.seed = static_cast<uint64_t>(seed);
    const models::Batch batch = models::make_batch(cfg, layers, spec);
    models::MlaGraphOptions go;
    go.config = cfg;
    go.num_layers = layers;
    go.num_pages = batch.num_pages;
    go.quant = q;
    const app::MlaGraphPair graphs = app::build_fused_pair(*backend, go);
    runtime::Executor eu(graphs.unfused, *backend, weights, eo);
    runtime::Executor ef(graphs.fused, *backend, weights, eo);
    Row r;
    r.batch = b;
    r.unfused = eu.run(batch.graph_inputs(), batch.meta);
    r.fused = ef.run(batch.graph_inputs(), batch.meta);
    r.t_pad = r.fused.t_pad;
    r.codes_equal = true;
    r.scales_equal = true;
    for (int64_t i = 0; i < layers; ++i) {
      const app::QuantMatch m =
          app::compare_quant_outputs(eu, ef, q, i, cfg.output_dim(), r.t_pad, b);
      r.codes_equal = r.codes_equal && m.codes_equal;
      r.scales_equal = r.scales_equal && m.scales_equal;
    }
    rows.push_back(std::move(r));
  }

  const char* how = eo.cuda_graphs ? "CUDA graph replay" : "sum of eager node times";
  if (json) {
    JsonWriter j;
    j.begin_object().key("backend").value(backend->name());
    j.key("quant").value(q.str()).key("heads").value(heads);
    j.key("layers").value(layers).key("context").value(context);
    j.key("timing").value(how).key("iters").value(eo.timing_iters);
    j.key("rows").begin_array();
    for (const Row& r : rows) {
      j.begin_object().key("batch").value(r.batch).key("t_pad").value(r.t_pad);
      j.key("unfused_us").value(r.unfused.total_us).key("fused_us").value(r.fused.total_us);
      j.key("codes_equal").value(r.codes_equal).key("scales_equal").value(r.scales_equal);
      j.key("nodes").begin_array();
      for (const auto& [graph, st] :
           {std::pair{"unfused", &r.unfused}, std::pair{"fused", &r.fused}}) {
        for (const runtime::NodeTiming& t : st->nodes) {
          j.begin_object().key("graph").value(graph).key("op").value(t.op);
          j.key("us").value(t.us).end_object();
        }
      }
      j.end_array().end_object();
    }
    j.end_array().end_object();
    std::printf("%s\n", j.str().c_str());
    return all_equal(rows) ? 0 : 1;
  }
  std::printf(
      "backend %s; %s; H=%lld, %lld layer(s), context %lld per sequence; %s, median of "
      "%d\n\n",
      backend->name().c_str(), q.str().c_str(), static_cast<long long>(heads),
      static_cast<long long>(layers), static_cast<long long>(context), how, eo.timing_iters);
  const std::string note = timing_note(backend->name(), eo.timing_iters);
  if (!note.empty()) std::printf("%s\n\n", note.c_str());
  std::printf("%6s %6s %12s %12s %8s | %12s %10s %12s | %12s %12s | %s\n", "batch", "T_pad",
              "unfused us", "fused us", "speedup", "attn us", "quant us", "o_proj us", "f.attn us",
              "f.o_proj us", "codes, scales");
  for (const Row& r : rows) {
    std::printf(
        "%6lld %6lld %12.1f %12.1f %7.2fx | %12.1f %10.1f %12.1f | %12.1f %12.1f | %s, %s\n",
        static_cast<long long>(r.batch), static_cast<long long>(r.t_pad), r.unfused.total_us,
        r.fused.total_us, r.unfused.total_us / r.fused.total_us,
        node_us(r.unfused, "mla_attention"), node_us(r.unfused, "quant_fp8_group"),
        node_us(r.unfused, "linear_fp8_block"), node_us(r.fused, "mla_attention"),
        node_us(r.fused, "linear_fp8_block"), r.codes_equal ? "equal" : "DIFFER",
        r.scales_equal ? "equal" : "DIFFER");
  }
  if (!all_equal(rows)) {
    std::fprintf(stderr, "mlafuse bench: the fused codes or scales differ from the unfused\n");
    return 1;
  }
  return 0;
}

const bool kRegistered = register_command(
    {"bench", "time the unfused and the fused block per decode batch size", bench_main});

}  // namespace
}  // namespace mlafuse::cli
