// mlafuse run: the main job. Builds DeepSeek-V3 MLA blocks with seeded block-FP8 weights and a
// seeded batch, runs the unfused and the fused graph on a backend, and reports whether the fused
// FP8 codes and scales equal the unfused ones bit for bit, the o_proj error against an f32
// end-to-end reference, and the time of every node.
#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <limits>
#include <string>
#include <vector>

#include "cli_args.h"
#include "cli_job.h"
#include "cli_json.h"
#include "command.h"
#include "mlafuse/app/mla_job.h"
#include "mlafuse/backends/backend.h"
#include "mlafuse/core/error.h"
#include "mlafuse/core/npy.h"

namespace mlafuse::cli {
namespace {

constexpr const char* kSummary =
    "Runs N DeepSeek-V3 MLA blocks (attention -> quantize -> o_proj) unfused and fused on a\n"
    "backend and compares them: the fused FP8/NVFP4 codes and scales against the unfused ones\n"
    "(bit for bit), and each graph's o_proj output against an f32 end-to-end reference (f32\n"
    "attention times the dequantized o_proj weight, no activation quantization). Static scales\n"
    "are calibrated from the data. --dump DIR writes inputs/, unfused/, fused/ and reference/\n"
    ".npy files: codes as uint8, group scales in logical [n, groups] order, NVFP4 block scales\n"
    "as their swizzled bytes, bf16 widened to f32, token rows the n real ones. Exit status: 0\n"
    "when the fused codes and scales equal the unfused ones bit for bit, 1 when they differ, 2 on\n"
    "bad input, 3 on an internal error.";

int64_t parse_int(const std::string& what, const std::string& text, int64_t min_value) {
  int64_t v = 0;
  const char* end = text.data() + text.size();
  auto [p, ec] = std::from_chars(text.data(), end, v);
  MLAFUSE_CHECK(ec == std::errc() && p == end && !text.empty(), what, " expects an integer, got '",
                text, "'");
  MLAFUSE_CHECK(v >= min_value, what, " must be >= ", min_value, ", got ", v);
  return v;
}

std::vector<std::string> split(const std::string& s, char sep) {
  std::vector<std::string> out;
  size_t start = 0;
  while (true) {
    const size_t pos = s.find(sep, start);
    out.push_back(s.substr(start, pos == std::string::npos ? std::string::npos : pos - start));
    if (pos == std::string::npos) return out;
    start = pos + 1;
  }
}

struct RunArgs {
  app::MlaJobOptions job;
  std::string backend;  // "" = auto
  bool json = false;
  std::string dump_dir;
  int64_t iters = 0;  // 0 = backend default
};

// Returns false when --help was printed.
bool parse_args(const std::vector<std::string>& args, RunArgs* out) {
  RunArgs& a = *out;
  a.job.batch = app::default_job_batch();
  a.job.quant = app::default_job_quant();
  int64_t layers = 1, heads = a.job.config.num_heads, seed = 0, decode_tokens = 1;
  std::string decode_lens = "1,77,300,1000", prefill = "32:0";
  QuantFlags quant;
  ArgParser p("run", kSummary);
  p.add_int("--layers", &layers, "N", "independent MLA blocks (default 1)", 1, 1024);
  p.add_int("--heads", &heads, "H", "attention heads (default 128; DeepSeek-V3 sizes otherwise)", 1,
            4096);
  p.add_string("--decode-lens", &decode_lens, "A,B,..",
               "decode sequences, each's length counting its new tokens (default 1,77,300,1000, "
               "each raised to K at least; 'none': no decodes)");
  p.add_int("--decode-tokens", &decode_tokens, "K",
            "query tokens of every decode: 1, or K > 1 for multi-token prediction / speculative "
            "decoding, causal among themselves (default 1)",
            1, 1 << 20);
  p.add_string("--prefill", &prefill, "LEN[:CTX],..",
               "prefills of LEN new tokens after CTX cached ones (default 32:0; 'none')");
  quant.add_to(&p);
  p.add_int("--seed", &seed, "S", "seed of weights and batch (default 0)", 0,
            std::numeric_limits<int64_t>::max());
  p.add_choice("--backend", &a.backend, {"cpu", "cuda"},
               "default cuda when a GPU is present, else cpu");
  p.add_flag("--graphs", &a.job.cuda_graphs,
             "cuda: capture the padded token bucket as a CUDA graph and replay it");
  p.add_int("--iters", &a.iters, "N", "timed runs per node, median (default 1 cpu, 20 cuda)", 1,
            100000);
  p.add_flag("--json", &a.json, "print one JSON object instead of text");
  p.add_string("--dump", &a.dump_dir, "DIR", "write every graph input and output as .npy");
  if (!p.parse(args)) return false;

  a.job.num_layers = layers;
  a.job.config.num_heads = heads;
  a.job.config.softmax_scale = deepseek_mla::softmax_scale();  // V3's, YaRN's mscale included
  a.job.batch.seed = static_cast<uint64_t>(seed);
  a.job.batch.decode_query_len = decode_tokens;
  a.job.batch.decode_lens.clear();
  if (decode_lens != "none") {
    for (const std::string& s : split(decode_lens, ',')) {
      a.job.batch.decode_lens.push_back(parse_int("--decode-lens", s, 1));
    }
  }
  MLAFUSE_CHECK(!p.given("--decode-tokens") || !a.job.batch.decode_lens.empty(),
                "--decode-tokens sets the query tokens of each decode, but --decode-lens none "
                "gives no decodes");
  // A decode's length counts its K new tokens: the default lengths (which start at 1) are raised
  // to K, lengths the user gave are kept (make_batch names one shorter than K).
  if (!p.given("--decode-lens")) {
    for (int64_t& len : a.job.batch.decode_lens) len = std::max(len, decode_tokens);
  }
  a.job.batch.prefills.clear();
  if (prefill != "none") {
    for (const std::string& one : split(prefill, ',')) {
      const std::vector<std::string> parts = split(one, ':');
      MLAFUSE_CHECK(parts.size() <= 2, "--prefill expects LEN or LEN:CONTEXT, got '", one, "'");
      models::PrefillSpec ps;
      ps.query_len = parse_int("--prefill LEN", parts[0], 1);
      ps.context = parts.size() == 2 ? parse_int("--prefill CONTEXT", parts[1], 0) : 0;
      a.job.batch.prefills.push_back(ps);
    }
  }
  MLAFUSE_CHECK(!a.job.batch.decode_lens.empty() || !a.job.batch.prefills.empty(),
                "the batch is empty: give --decode-lens or --prefill");
  a.job.quant = quant.resolve(p, a.job.quant);
  return true;
}

// ---- output ----------------------------------------------------------------------------------

std::string join_ints(const std::vector<int64_t>& v, const char* sep) {
  std::string s;
  for (size_t i = 0; i < v.size(); ++i) s += (i ? sep : "") + std::to_string(v[i]);
  return s;
}

std::string prefill_str(const std::vector<models::PrefillSpec>& p) {
  std::string s;
  for (size_t i = 0; i < p.size(); ++i) {
    s += (i ? ", " : "") + std::to_string(p[i].query_len) + " (context " +
         std::to_string(p[i].context) + ")";
  }
  return s;
}

std::string ops_str(const std::map<std::string, int64_t>& ops) {
  std::string s;
  for (const auto& [op, c] : ops) s += (s.empty() ? "" : ", ") + op + " x" + std::to_string(c);
  return s;
}

void print_json(const RunArgs& a, const app::MlaJobReport& r, const std::string& why) {
  const MlaConfig& c = r.config;
  JsonWriter j;
  j.begin_object();
  j.key("backend").value(r.backend).key("backend_choice").value(why);
  j.key("config").begin_object();
  j.key("layers").value(r.num_layers).key("heads").value(c.num_heads);
  j.key("qk_nope_dim").value(c.qk_nope_dim).key("qk_rope_dim").value(c.qk_rope_dim);
  j.key("v_head_dim").value(c.v_head_dim).key("kv_lora_rank").value(c.kv_lora_rank);
  j.key("hidden").value(c.hidden).key("page_size").value(c.page_size);
  j.key("softmax_scale").value(static_cast<double>(c.scale()));
  j.end_object();
  j.key("batch").begin_object();
  j.key("seed").value(static_cast<int64_t>(a.job.batch.seed));
  j.key("decode_lens").begin_array();
  for (int64_t len : a.job.batch.decode_lens) j.value(len);
  j.end_array().key("decode_query_len").value(a.job.batch.decode_query_len);
  j.key("prefills").begin_array();
  for (const models::PrefillSpec& ps : a.job.batch.prefills) {
    j.begin_object().key("len").value(ps.query_len).key("context").value(ps.context).end_object();
  }
  j.end_array();
  j.key("num_tokens").value(r.num_tokens).key("t_pad").value(r.fused.t_pad);
  j.key("num_pages").value(r.num_pages);
  j.end_object();
  j.key("quant").value(r.quant).key("calibration").value(r.calibration);
  j.key("fusion").begin_array();
  for (const passes::PassStats& s : r.fusion) {
    j.begin_object().key("name").value(s.pass).key("matches").value(s.matches);
    j.key("patterns").value(s.pattern_matches).key("rejections").begin_array();
    for (const passes::Rejection& rj : s.rejections) {
      j.begin_object().key("pattern").value(rj.pattern).key("node").value(rj.node);
      j.key("reason").value(rj.reason).end_object();
    }
    j.end_array().end_object();
  }
  j.end_array();
  j.key("ops_before").value(r.ops_unfused).key("ops_after").value(r.ops_fused);
  j.key("bitwise_equal").value(r.bitwise_equal);
  j.key("o_proj_max_abs_err").value(r.o_proj_max_abs_err);
  j.key("o_proj_max_rel_err").value(r.o_proj_max_rel_err);
  j.key("o_proj_rel_err_definition").value("max |y - y_ref| / max |y_ref|");
  j.key("layers").begin_array();
  for (const app::LayerReport& l : r.layers) {
    j.begin_object().key("layer").value(l.layer);
    j.key("codes_equal").value(l.codes_equal).key("scales_equal").value(l.scales_equal);
    j.key("mismatch").value(l.mismatch).key("y_equal").value(l.y_equal);
    j.key("attn_amax").value(l.amax);
    if (l.input_scale > 0) j.key("input_scale").value(l.input_scale);
    if (l.global_scale > 0) j.key("input_global_scale").value(l.global_scale);
    j.key("y_ref_max_abs").value(l.ref_max_abs);
    j.key("max_abs_err").value(l.max_abs_err).key("max_rel_err").value(l.max_rel_err);
    j.key("unfused_max_abs_err").value(l.unfused_max_abs_err);
    j.key("unfused_max_rel_err").value(l.unfused_max_rel_err);
    j.end_object();
  }
  j.end_array();
  j.key("nodes").begin_array();
  for (const auto& [graph, st] : {std::pair{"unfused", &r.unfused}, std::pair{"fused", &r.fused}}) {
    for (const runtime::NodeTiming& t : st->nodes) {
      j.begin_object().key("graph").value(graph).key("op").value(t.op);
      j.key("node").value(t.label).key("us").value(t.us).end_object();
    }
  }
  j.end_array();
  for (const auto& [graph, st] : {std::pair{"unfused", &r.unfused}, std::pair{"fused", &r.fused}}) {
    j.key(graph).begin_object().key("total_us").value(st->total_us);
    j.key("graph_captured").value(st->graph_captured);
    j.key("graph_replayed").value(st->graph_replayed);
    j.key("replay_us").value(st->replay_us).end_object();
  }
  j.key("setup_ms").begin_object();
  j.key("weights").value(r.weights_ms).key("batch").value(r.batch_ms);
  j.key("reference").value(r.reference_ms).key("compile").value(r.compile_ms);
  j.end_object();
  if (!a.dump_dir.empty()) j.key("dump").value(a.dump_dir);
  j.end_object();
  std::printf("%s\n", j.str().c_str());
}

void print_text(const RunArgs& a, const app::MlaJobReport& r, const std::string& why) {
  std::printf("backend: %s (%s)\n", r.backend.c_str(), why.c_str());
  std::printf("model: %d x %s, seeded block-FP8 weights (seed %llu)\n",
              static_cast<int>(r.num_layers), r.config.str().c_str(),
              static_cast<unsigned long long>(a.job.batch.seed));
  const models::BatchSpec& bs = a.job.batch;
  if (bs.decode_query_len == 1) {
    std::printf("batch: %zu decode tokens (lengths %s)", bs.decode_lens.size(),
                join_ints(bs.decode_lens, ", ").c_str());
  } else {
    std::printf("batch: %zu decodes of %lld tokens (lengths %s)", bs.decode_lens.size(),
                static_cast<long long>(bs.decode_query_len),
                join_ints(bs.decode_lens, ", ").c_str());
  }
  if (!a.job.batch.prefills.empty()) {
    std::printf(" + prefill %s", prefill_str(a.job.batch.prefills).c_str());
  }
  std::printf(" = %lld tokens, padded to %lld; %lld cache pages\n",
              static_cast<long long>(r.num_tokens), static_cast<long long>(r.fused.t_pad),
              static_cast<long long>(r.num_pages));
  std::printf("quantization: %s; %s\n", r.quant.c_str(), r.calibration.c_str());
  for (const app::LayerReport& l : r.layers) {
    if (l.input_scale > 0 || l.global_scale > 0) {
      std::printf("  layer %lld: amax %.6g -> %s %.6g\n", static_cast<long long>(l.layer), l.amax,
                  l.input_scale > 0 ? "input_scale" : "input_global_scale",
                  l.input_scale > 0 ? l.input_scale : l.global_scale);
    }
  }

  std::printf("\nfusion:\n");
  for (const passes::PassStats& s : r.fusion) {
    std::printf("  %-24s %lld match%s", s.pass.c_str(), static_cast<long long>(s.matches),
                s.matches == 1 ? "" : "es");
    for (const auto& [p, m] : s.pattern_matches) {
      std::printf("  [%s: %lld]", p.c_str(), static_cast<long long>(m));
    }
    std::printf("\n");
    for (const passes::Rejection& j : s.rejections) {
      std::printf("    rejected %s at %s: %s\n", j.pattern.c_str(), j.node.c_str(),
                  j.reason.c_str());
    }
  }
  std::printf("  ops before: %s\n  ops after:  %s\n", ops_str(r.ops_unfused).c_str(),
              ops_str(r.ops_fused).c_str());

  std::printf("\nfused quantized codes and scales == unfused, bit for bit: %s\n",
              r.bitwise_equal ? "YES" : "NO");
  for (const app::LayerReport& l : r.layers) {
    std::printf("  layer %lld: codes %s, scales %s, o_proj output %s%s%s\n",
                static_cast<long long>(l.layer), l.codes_equal ? "equal" : "DIFFER",
                l.scales_equal ? "equal" : "DIFFER", l.y_equal ? "equal" : "differs",
                l.mismatch.empty() ? "" : "; first difference: ", l.mismatch.c_str());
  }
  std::printf(
      "\no_proj output vs the f32 end-to-end reference (rel = max|y - y_ref| / "
      "max|y_ref|):\n");
  for (const app::LayerReport& l : r.layers) {
    std::printf(
        "  layer %lld: max|y_ref| %.4g; fused max abs err %.4g, rel %.4g; unfused max abs "
        "err %.4g, rel %.4g\n",
        static_cast<long long>(l.layer), l.ref_max_abs, l.max_abs_err, l.max_rel_err,
        l.unfused_max_abs_err, l.unfused_max_rel_err);
  }

  std::printf("\ntime per node (%s, median of %d):\n", r.backend.c_str(), a.job.timing_iters);
  const std::string note = timing_note(r.backend, a.job.timing_iters);
  if (!note.empty()) std::printf("  (%s)\n", note.c_str());
  for (const auto& [graph, st] : {std::pair{"unfused", &r.unfused}, std::pair{"fused", &r.fused}}) {
    for (const runtime::NodeTiming& t : st->nodes) {
      std::printf("  %-8s %-18s %12.1f us   %s\n", graph, t.op.c_str(), t.us, t.label.c_str());
    }
    if (st->graph_replayed) {
      std::printf("  %-8s %-18s %12.1f us   (CUDA graph replay of the whole bucket%s)\n", graph,
                  "graph", st->replay_us, st->graph_captured ? ", captured now" : "");
    }
    std::printf("  %-8s %-18s %12.1f us\n", graph, "total", st->total_us);
  }
  std::printf("\nsetup: weights %.0f ms, batch %.0f ms, f32 reference %.0f ms, compile %.1f ms\n",
              r.weights_ms, r.batch_ms, r.reference_ms, r.compile_ms);
  if (!a.dump_dir.empty()) std::printf("dumped inputs and outputs to %s\n", a.dump_dir.c_str());
}

// Writes every tensor of the report as DIR/<group>/<name>.npy; returns the file count.
int dump(const std::string& dir, const app::MlaJobReport& r) {
  namespace fs = std::filesystem;
  int files = 0;
  auto write_group = [&](const char* group, const std::map<std::string, Tensor>& tensors) {
    const fs::path sub = fs::path(dir) / group;
    std::error_code ec;
    fs::create_directories(sub, ec);
    MLAFUSE_CHECK(!ec, "--dump: cannot create directory ", sub.string(), ": ", ec.message());
    for (const auto& [name, t] : tensors) {
      write_npy((sub / (name + ".npy")).string(), t);
      ++files;
    }
  };
  write_group("inputs", r.inputs);
  write_group("unfused", r.unfused_outputs);
  write_group("fused", r.fused_outputs);
  write_group("reference", r.reference);
  return files;
}

int run_main(const std::vector<std::string>& args) {
  RunArgs a;
  if (!parse_args(args, &a)) return 0;
  std::string why;
  std::unique_ptr<Backend> backend = pick_backend(a.backend, &why);
  MLAFUSE_CHECK(!a.job.cuda_graphs || backend->device() == Device::kCuda,
                "--graphs needs the cuda backend (the ", backend->name(), " backend runs eagerly)");
  const bool gpu = backend->device() == Device::kCuda;
  a.job.timing_iters = static_cast<int>(a.iters > 0 ? a.iters : (gpu ? 20 : 1));
  a.job.timing_warmup = gpu ? 3 : 0;
  if (!a.dump_dir.empty()) {  // fail before the job, not after it
    std::error_code ec;
    std::filesystem::create_directories(a.dump_dir, ec);
    MLAFUSE_CHECK(!ec, "--dump: cannot create directory ", a.dump_dir, ": ", ec.message());
  }
  const app::MlaJobReport r = app::run_mla_job(*backend, a.job);
  if (!a.dump_dir.empty()) dump(a.dump_dir, r);
  if (a.json) {
    print_json(a, r, why);
  } else {
    print_text(a, r, why);
  }
  if (!r.bitwise_equal) {
    std::fprintf(stderr, "mlafuse run: the fused codes or scales differ from the unfused\n");
    return 1;
  }
  return 0;
}

const bool kRegistered = register_command(
    {"run", "run the MLA block unfused and fused; compare codes bit for bit, errors, timings",
     run_main});

}  // namespace
}  // namespace mlafuse::cli
