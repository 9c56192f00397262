// The executor on the CUDA backend: CUDA-graph capture per padded token bucket. A bucket is
// captured once and replayed for batches of other sizes and metadata; each replay must give the
// same bytes as an eager run of the same batch on the same backend, and the o_proj output must
// stay close to the CPU reference backend's.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <string>

#include "gpu/common/gpu_harness.h"
#include "mlafuse/backends/backend.h"
#include "mlafuse/backends/cuda/cuda_check.h"
#include "mlafuse/models/batch.h"
#include "mlafuse/models/mla_block.h"
#include "mlafuse/models/weights.h"
#include "mlafuse/quant/codecs.h"
#include "mlafuse/runtime/executor.h"

namespace mlafuse::runtime {
namespace {

MlaConfig gpu_config() {
  MlaConfig c;  // DeepSeek-V3 head dims (what the kernels implement), a TP-8 head shard
  c.num_heads = 16;
  c.hidden = 1024;
  return c;
}

std::vector<uint8_t> rows_bytes(const Tensor& t, int64_t n) {
  const int64_t row = t.numel() / t.dim(0) * static_cast<int64_t>(dtype_size(t.dtype()));
  const auto* p = static_cast<const uint8_t*>(t.raw());
  return std::vector<uint8_t>(p, p + n * row);
}

// Inputs of `b` with the cache widened to `pages` pages (one graph serves every batch).
std::map<std::string, Tensor> inputs_with_pages(const models::Batch& b, int64_t pages) {
  auto in = b.graph_inputs();
  const MlaConfig c = gpu_config();
  Tensor cache = Tensor::empty(DType::kBF16, {pages, c.page_size, c.cache_row()});
  std::memcpy(cache.raw(), b.layers[0].kv_cache.raw(), b.layers[0].kv_cache.numel() * 2);
  in["layers.0.kv_cache"] = cache;
  return in;
}

double rel_err(const Tensor& y, const Tensor& ref, int64_t n) {
  double m = 0, e = 0;
  for (int64_t i = 0; i < n * y.dim(1); ++i) {
    const double a = bf16_bits_to_f32(y.data<uint16_t>()[i]);
    const double r = bf16_bits_to_f32(ref.data<uint16_t>()[i]);
    m = std::max(m, std::fabs(r));
    e = std::max(e, std::fabs(a - r));
  }
  return e / m;
}

TEST(RuntimeGraphs, ReplaysMatchEagerRunsForEveryBatchOfTheBucket) {
  MLAFUSE_SKIP_WITHOUT_GPU();
  const MlaConfig cfg = gpu_config();
  enum Expect { kReplay, kCapture, kEither };
  struct Case {
    std::vector<int64_t> decodes;
    std::vector<models::PrefillSpec> prefills;
    Expect expect;
    int64_t decode_query_len = 1;
  };
  // Bucket 4: captured at 3 decodes, replayed at 4 and 3 others; a prefill batch of 4 tokens is
  // another composition (captured anew), and so is decode-only after it. Bucket 8: captured at 7
  // decodes, replayed at 5; multi-token decodes (MTP) of 8 tokens are another kind (their
  // schedule has token units, AttentionMetadata::one_token_decodes) captured anew, replayed at 6;
  // those beside a prefill are another composition again. Bucket 4 captures MTP decodes of 2
  // tokens each, then runs one-token decodes again: their graph of case 4 replays unless a later
  // batch grew the backend's workspace (then it is stale and captured anew: either is right).
  // A prefill's workspace adds to the decodes', so case 4 cannot replay case 0's graph.
  const std::vector<Case> cases = {
      {{5, 700, 1}, {}, kCapture},      {{130, 2, 64, 65}, {}, kReplay},
      {{999, 5, 6}, {}, kReplay},       {{3}, {{3, 40}}, kCapture},
      {{10, 20, 30}, {}, kCapture},     {{17, 18, 19, 20, 21, 22, 23}, {}, kCapture},
      {{300, 1, 2, 3, 4}, {}, kReplay}, {{300, 2, 9, 64}, {}, kCapture, 2},
      {{70, 5}, {}, kReplay, 3},        {{40, 3}, {{2, 10}}, kCapture, 2},
      {{700, 65}, {}, kCapture, 2},     {{66, 67, 68}, {}, kEither},
      {{9, 8, 7, 6}, {}, kReplay},      {{33, 44}, {}, kReplay, 2},
  };
  std::vector<models::Batch> batches;
  int64_t pages = 0;
  for (size_t i = 0; i < cases.size(); ++i) {
    models::BatchSpec s;
    s.decode_lens = cases[i].decodes;
    s.prefills = cases[i].prefills;
    s.decode_query_len = cases[i].decode_query_len;
    s.seed = 100 + i;
    batches.push_back(models::make_batch(cfg, 1, s));
    pages = std::max(pages, batches.back().num_pages);
  }
  models::MlaGraphOptions go;
  go.config = cfg;
  go.num_pages = pages;
  go.quant = OutputQuant::make(OutputFormat::kFp8Group128, /*col_major=*/true,
                               /*tma_aligned=*/true);
  const ir::Graph g = models::build_mla_graph(go);
  const WeightStore w = models::make_mla_weights(cfg, 1, 7);

  auto cuda_backend = make_backend("cuda");
  auto cpu_backend = make_backend("cpu");
  ExecutorOptions graphs;
  graphs.cuda_graphs = true;
  Executor replayed(g, *cuda_backend, w, graphs);
  Executor eager(g, *cuda_backend, w);
  Executor cpu(g, *cpu_backend, w);
  for (size_t i = 0; i < cases.size(); ++i) {
    SCOPED_TRACE("case " + std::to_string(i));
    const models::Batch& b = batches[i];
    const auto in = inputs_with_pages(b, pages);
    const RunStats st = replayed.run(in, b.meta);
    if (cases[i].expect != kEither) EXPECT_EQ(st.graph_captured, cases[i].expect == kCapture);
    EXPECT_TRUE(st.graph_replayed);
    EXPECT_GT(st.replay_us, 0.0);
    eager.run(in, b.meta);
    cpu.run(in, b.meta);
    const int64_t n = b.num_tokens;
    for (const char* v : {"layers.0.xq", "layers.0.y"}) {
      EXPECT_EQ(rows_bytes(replayed.read(v), n), rows_bytes(eager.read(v), n)) << v;
    }
    EXPECT_EQ(rows_bytes(replayed.read("layers.0.kv_cache_out"), pages),
              rows_bytes(eager.read("layers.0.kv_cache_out"), pages));
    // Column-major TMA-aligned scales of tokens < n at their strided places.
    const Tensor s_r = replayed.read("layers.0.xs"), s_e = eager.read("layers.0.xs");
    for (int64_t t = 0; t < n; ++t) {
      for (int64_t gi = 0; gi < s_r.dim(1); ++gi) {
        const int64_t off = t * s_r.strides()[0] + gi * s_r.strides()[1];
        ASSERT_EQ(std::memcmp(s_r.data<float>() + off, s_e.data<float>() + off, 4), 0)
            << "token " << t << " group " << gi;
      }
    }
    EXPECT_LT(rel_err(replayed.read("layers.0.y"), cpu.read("layers.0.y"), n), 0.02);
  }
}

// A captured graph's kernels hold the backend workspace's address. A larger bucket's run grows
// (reallocates) the workspace, so a smaller bucket's graphs captured before must never replay:
// they are captured anew, and a bucket keeps its graph per kind (one-token and MTP decodes)
// otherwise. Every run must equal an eager run.
TEST(RuntimeGraphs, GraphsCapturedBeforeTheWorkspaceGrewAreCapturedAnew) {
  MLAFUSE_SKIP_WITHOUT_GPU();
  const MlaConfig cfg = gpu_config();
  models::BatchSpec one, mtp, big;
  one.decode_lens = {5, 700, 1};  // bucket 4
  one.seed = 201;
  mtp.decode_lens = {70, 9};  // 2 tokens each: bucket 4
  mtp.decode_query_len = 2;
  mtp.seed = 202;
  for (int i = 0; i < 40; ++i) big.decode_lens.push_back(1 + (37 * i) % 300);  // bucket 64
  big.seed = 203;
  const std::vector<models::Batch> batches = {models::make_batch(cfg, 1, one),
                                              models::make_batch(cfg, 1, mtp),
                                              models::make_batch(cfg, 1, big)};
  int64_t pages = 0;
  for (const auto& b : batches) pages = std::max(pages, b.num_pages);
  models::MlaGraphOptions go;
  go.config = cfg;
  go.num_pages = pages;
  go.quant = OutputQuant::make(OutputFormat::kFp8Group128, /*col_major=*/true,
                               /*tma_aligned=*/true);
  const ir::Graph g = models::build_mla_graph(go);
  const WeightStore w = models::make_mla_weights(cfg, 1, 11);
  auto cuda_backend = make_backend("cuda");
  ExecutorOptions graphs;
  graphs.cuda_graphs = true;
  Executor replayed(g, *cuda_backend, w, graphs);
  auto eager_backend = make_backend("cuda");  // its own workspace
  Executor eager(g, *eager_backend, w);
  struct Step {
    int batch;
    bool capture;
  };
  const std::vector<Step> steps = {{0, true}, {1, true}, {0, false}, {1, false},
                                   {2, true}, {0, true}, {1, true},  {0, false}};
  for (size_t i = 0; i < steps.size(); ++i) {
    SCOPED_TRACE("step " + std::to_string(i));
    const models::Batch& b = batches[static_cast<size_t>(steps[i].batch)];
    const auto in = inputs_with_pages(b, pages);
    const RunStats st = replayed.run(in, b.meta);
    EXPECT_EQ(st.graph_captured, steps[i].capture);
    EXPECT_TRUE(st.graph_replayed);
    eager.run(in, b.meta);
    const int64_t n = b.num_tokens;
    for (const char* v : {"layers.0.xq", "layers.0.y"}) {
      EXPECT_EQ(rows_bytes(replayed.read(v), n), rows_bytes(eager.read(v), n)) << v;
    }
  }
}

// Cache pages of 16, 32 and 128 tokens through the whole block on the CUDA backend (cache write,
// absorbed q, the decode kernels, fused group quant, o_proj), against the CPU reference backend.
TEST(RuntimeGraphs, PageSizesMatchTheCpuReference) {
  MLAFUSE_SKIP_WITHOUT_GPU();
  for (int64_t page_size : {16, 32, 128}) {
    SCOPED_TRACE("page_size " + std::to_string(page_size));
    MlaConfig cfg = gpu_config();
    cfg.page_size = page_size;
    models::BatchSpec s;
    s.decode_lens = {1, 15, 17, 100, 129};
    s.prefills = {{3, 40}};
    s.t_pad = 10;
    s.seed = 7;
    s.poison = true;
    const models::Batch b = models::make_batch(cfg, 1, s);
    models::MlaGraphOptions go;
    go.config = cfg;
    go.num_pages = b.num_pages;
    go.quant = OutputQuant{OutputFormat::kFp8Group128};
    const ir::Graph g = models::build_mla_graph(go);
    const WeightStore w = models::make_mla_weights(cfg, 1, 7);
    auto cuda_backend = make_backend("cuda");
    auto cpu_backend = make_backend("cpu");
    Executor gpu(g, *cuda_backend, w);
    Executor cpu(g, *cpu_backend, w);
    const auto in = b.graph_inputs();
    gpu.run(in, b.meta);
    cpu.run(in, b.meta);
    EXPECT_LT(rel_err(gpu.read("layers.0.y"), cpu.read("layers.0.y"), b.num_tokens), 0.02);
    EXPECT_EQ(rows_bytes(gpu.read("layers.0.kv_cache_out"), b.num_pages),
              rows_bytes(cpu.read("layers.0.kv_cache_out"), b.num_pages));
  }
}

}  // namespace
}  // namespace mlafuse::runtime
