#include "mlafuse/runtime/executor.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "mlafuse/backends/cpu/cpu_backend.h"
#include "mlafuse/core/error.h"
#include "mlafuse/ir/op_registry.h"
#include "mlafuse/ir/text.h"
#include "mlafuse/mla/attention_metadata.h"
#include "mlafuse/models/batch.h"
#include "mlafuse/models/mla_block.h"
#include "mlafuse/models/weights.h"
#include "mlafuse/quant/scale_layout.h"
#include "wrapped_cpu_backend.h"

namespace mlafuse::runtime {
namespace {

MlaConfig small_config() {
  MlaConfig c;
  c.num_heads = 4;
  c.qk_nope_dim = 32;
  c.qk_rope_dim = 16;
  c.v_head_dim = 32;  // H*V = 128: one group of 128, two of 64
  c.kv_lora_rank = 64;
  c.hidden = 96;
  c.page_size = 64;
  return c;
}

OutputQuant group_quant(int64_t g, bool col_major, bool tma) {
  return OutputQuant::make(g == 128 ? OutputFormat::kFp8Group128 : OutputFormat::kFp8Group64,
                           col_major, tma);
}

ir::Graph make_graph(const models::Batch& b, int64_t layers, OutputQuant quant) {
  models::MlaGraphOptions o;
  o.config = small_config();
  o.num_layers = layers;
  o.num_pages = b.num_pages;
  o.quant = quant;
  return models::build_mla_graph(o);
}

models::Batch make_batch(std::vector<int64_t> decode_lens, std::vector<models::PrefillSpec> pf,
                         int64_t layers = 1, uint64_t seed = 1, bool poison = false) {
  models::BatchSpec s;
  s.decode_lens = std::move(decode_lens);
  s.prefills = std::move(pf);
  s.seed = seed;
  s.poison = poison;
  return models::make_batch(small_config(), layers, s);
}

// Rows [0, n) of a row-major tensor's bytes.
std::vector<uint8_t> rows_bytes(const Tensor& t, int64_t n) {
  const int64_t row = t.numel() / t.dim(0) * static_cast<int64_t>(dtype_size(t.dtype()));
  const auto* p = static_cast<const uint8_t*>(t.raw());
  return std::vector<uint8_t>(p, p + n * row);
}

const BufferInfo& find(const std::vector<BufferInfo>& plan, const std::string& name) {
  for (const BufferInfo& b : plan) {
    if (b.value == name) return b;
  }
  throw Error("no buffer " + name);
}

TEST(Executor, PlansLayoutsAndAliasesInPlaceOutputs) {
  const models::Batch b = make_batch({5, 70}, {{3, 0}});
  const ir::Graph g = make_graph(b, 1, group_quant(64, true, true));
  const WeightStore w = models::make_mla_weights(small_config(), 1, 1);
  auto be = make_cpu_backend();
  Executor ex(g, *be, w);
  EXPECT_EQ(ex.padded_tokens(5), 8);
  EXPECT_EQ(ex.padded_tokens(1), 1);
  EXPECT_EQ(ex.padded_tokens(513), 513);  // past the largest bucket: unpadded
  const std::vector<BufferInfo> plan = ex.plan(8);
  const BufferInfo& xs = find(plan, "layers.0.xs");
  EXPECT_EQ(xs.layout, Layout::kColMajorTma);
  EXPECT_EQ(xs.logical_shape, (std::vector<int64_t>{8, 2}));
  EXPECT_EQ(xs.plan.strides, (std::vector<int64_t>{1, 8}));
  EXPECT_EQ(xs.bytes, 2 * 8 * 4);
  const BufferInfo xs5 = find(ex.plan(5), "layers.0.xs");
  EXPECT_EQ(xs5.plan.strides, (std::vector<int64_t>{1, 8}));  // round_up(5, 4)
  const BufferInfo& cache_out = find(plan, "layers.0.kv_cache_out");
  EXPECT_EQ(cache_out.kind, BufferKind::kAlias);
  EXPECT_EQ(cache_out.alias_of, "layers.0.kv_cache");
  EXPECT_EQ(cache_out.bytes, 0);
  EXPECT_EQ(find(plan, "layers.0.o_proj.weight").kind, BufferKind::kWeight);
  EXPECT_EQ(find(plan, "layers.0.q").logical_shape, (std::vector<int64_t>{8, 4, 48}));
  EXPECT_EQ(find(plan, "layers.0.y").logical_shape, (std::vector<int64_t>{8, 96}));

  // NVFP4 block scales get the swizzled, 128-row padded buffer.
  const OutputQuant nv{OutputFormat::kNvfp4};
  const ir::Graph g4 = make_graph(b, 1, nv);
  Executor ex4(g4, *be, w);
  const BufferInfo sf = find(ex4.plan(8), "layers.0.xs");
  EXPECT_EQ(sf.layout, Layout::kNvfp4Swizzled);
  EXPECT_EQ(sf.plan.shape, (std::vector<int64_t>{128, 8}));
  EXPECT_EQ(sf.bytes, 128 * 8);
}

// An in-place output shares its operand's buffer: a second reader, a graph output or a weight
// there would see the update, against the IR's value semantics, so the executor refuses them.
TEST(Executor, RejectsInPlaceOperandsSeenElsewhere) {
  auto be = make_cpu_backend();
  const WeightStore w;
  auto expect_rejected = [&](const std::string& body, const std::vector<std::string>& parts) {
    const std::string text =
        "graph {\n  input %a : bf16[T, 4]\n  input %pa : bf16[T, 1, 4]\n" + body + "}\n";
    const ir::Graph g = ir::parse_graph(text);
    try {
      Executor ex(g, *be, w);
      ADD_FAILURE() << "accepted:\n" << text;
    } catch (const Error& e) {
      for (const std::string& p : parts) {
        EXPECT_NE(std::string(e.what()).find(p), std::string::npos) << e.what() << "\n" << p;
      }
    }
  };
  expect_rejected(
      "  input %cache : bf16[1, 2, 8]\n"
      "  %c1 = cache_write(%a, %pa, %cache) : bf16[1, 2, 8]\n"
      "  %c2 = cache_write(%a, %pa, %cache) : bf16[1, 2, 8]\n"
      "  output %c1, %c2\n",
      {"updates kv_cache cache in place", "also read by another operand"});
  expect_rejected(
      "  input %cache : bf16[1, 2, 8]\n"
      "  %c1 = cache_write(%a, %pa, %cache) : bf16[1, 2, 8]\n"
      "  output %c1, %cache\n",
      {"updates kv_cache cache in place", "is also a graph output"});
  expect_rejected(
      "  weight %cache : bf16[1, 2, 8]\n"
      "  %c1 = cache_write(%a, %pa, %cache) : bf16[1, 2, 8]\n"
      "  output %c1\n",
      {"updates kv_cache cache in place", "is a weight"});
  // The chain itself is fine: each value of the cache has one reader.
  const ir::Graph chain = ir::parse_graph(
      "graph {\n  input %a : bf16[T, 4]\n  input %pa : bf16[T, 1, 4]\n"
      "  input %cache : bf16[1, 2, 8]\n"
      "  %c1 = cache_write(%a, %pa, %cache) : bf16[1, 2, 8]\n"
      "  %c2 = cache_write(%a, %pa, %c1) : bf16[1, 2, 8]\n"
      "  output %c2\n}\n");
  EXPECT_NO_THROW(Executor(chain, *be, w));
}

// Unpadded batches (above every listed bucket) do not pile up buffers: only the latest is kept.
TEST(Executor, KeepsOnlyTheLatestUnpaddedBucket) {
  class CountingBackend : public testing::WrappedCpuBackend {
   public:
    CountingBackend() : WrappedCpuBackend("counting") {}
    Tensor allocate(DType d, std::vector<int64_t> s, std::vector<int64_t> st, int64_t n) override {
      Tensor t = WrappedCpuBackend::allocate(d, std::move(s), std::move(st), n);
      storages.push_back(t.storage());
      return t;
    }
    std::vector<std::weak_ptr<Storage>> storages;  // every allocation, in order
  };
  // Three batches of four pages each, so one graph (its cache) serves them all.
  const models::Batch a = make_batch({5, 70, 1}, {});  // n = 3: unpadded
  const models::Batch b = make_batch({70, 70}, {});    // n = 2: unpadded
  const models::Batch c = make_batch({200}, {});       // n = 1: the listed bucket
  ASSERT_EQ(a.num_pages, b.num_pages);
  ASSERT_EQ(a.num_pages, c.num_pages);
  const ir::Graph g = make_graph(a, 1, group_quant(128, false, false));
  const WeightStore w = models::make_mla_weights(small_config(), 1, 5);
  CountingBackend be;
  ExecutorOptions o;
  o.buckets = {1};
  Executor ex(g, be, w, o);
  auto run = [&](const models::Batch& batch) {
    const size_t first = be.storages.size();
    ex.run(batch.graph_inputs(), batch.meta);
    return std::pair<size_t, size_t>{first, be.storages.size()};
  };
  auto live = [&](std::pair<size_t, size_t> r) {
    size_t k = 0;
    for (size_t i = r.first; i < r.second; ++i) k += be.storages[i].expired() ? 0 : 1;
    return k;
  };
  const auto ra = run(a);
  ASSERT_GT(ra.second, ra.first);
  EXPECT_EQ(live(ra), ra.second - ra.first);
  const auto rc = run(c);
  const auto rb = run(b);
  EXPECT_EQ(live(ra), 0u) << "the first unpadded bucket's buffers outlived the second's";
  EXPECT_EQ(live(rc), rc.second - rc.first) << "a listed bucket was dropped";
  EXPECT_EQ(live(rb), rb.second - rb.first);
  const Tensor y_b = ex.read("layers.0.y");
  EXPECT_EQ(y_b.dim(0), 2);
  run(a);
  EXPECT_EQ(live(rb), 0u);
  EXPECT_EQ(ex.read("layers.0.y").dim(0), 3);
}

TEST(Executor, RunsAndTimesEveryNode) {
  const models::Batch b = make_batch({5, 70, 1}, {{9, 20}}, 2);
  const ir::Graph g = make_graph(b, 2, group_quant(128, false, false));
  const WeightStore w = models::make_mla_weights(small_config(), 2, 3);
  auto be = make_cpu_backend();
  Executor ex(g, *be, w);
  const RunStats st = ex.run(b.graph_inputs(), b.meta);
  EXPECT_EQ(st.num_tokens, 12);
  EXPECT_EQ(st.t_pad, 16);
  ASSERT_EQ(st.nodes.size(), g.num_nodes());
  double sum = 0;
  for (size_t i = 0; i < st.nodes.size(); ++i) {
    EXPECT_EQ(st.nodes[i].op, g.nodes()[i]->op());
    EXPECT_EQ(st.nodes[i].label, g.nodes()[i]->label());
    EXPECT_GT(st.nodes[i].us, 0.0);
    sum += st.nodes[i].us;
  }
  EXPECT_DOUBLE_EQ(st.total_us, sum);
  EXPECT_FALSE(st.graph_replayed);
  const auto outs = ex.read_outputs();
  ASSERT_EQ(outs.size(), 4u);
  const Tensor& y = outs.at("layers.1.y");
  EXPECT_EQ(y.shape(), (std::vector<int64_t>{16, 96}));
  // The cache written in place: this step's tokens are now in their slots; the caller's host
  // cache is untouched.
  const Tensor cache = outs.at("layers.0.kv_cache_out");
  const int32_t slot = b.meta.slot_mapping.data<int32_t>()[0];
  const uint16_t* row = cache.data<uint16_t>() + slot * small_config().cache_row();
  EXPECT_EQ(std::memcmp(row, b.layers[0].kv_c_normed.data<uint16_t>(), 64 * 2), 0);
  const uint16_t* host_row = b.layers[0].kv_cache.data<uint16_t>() + slot * 80;
  EXPECT_NE(std::memcmp(host_row, b.layers[0].kv_c_normed.data<uint16_t>(), 64 * 2), 0);
}

TEST(Executor, PaddedBatchWritesOnlyRealRowsAndMatchesUnpadded) {
  const models::Batch b = make_batch({5, 70, 1, 33, 64}, {}, 1, 4);  // n = 5 -> T_pad 8
  const ir::Graph g = make_graph(b, 1, group_quant(64, true, true));
  const WeightStore w = models::make_mla_weights(small_config(), 1, 4);
  auto be = make_cpu_backend();
  ExecutorOptions padded;
  padded.fill_byte = 0xab;
  Executor ex(g, *be, w, padded);
  ExecutorOptions exact;
  exact.buckets.clear();
  Executor ex_exact(g, *be, w, exact);
  ex.run(b.graph_inputs(), b.meta);
  ex_exact.run(b.graph_inputs(), b.meta);
  const Tensor y = ex.read("layers.0.y"), y1 = ex_exact.read("layers.0.y");
  const Tensor xq = ex.read("layers.0.xq"), xq1 = ex_exact.read("layers.0.xq");
  const Tensor xs = ex.read("layers.0.xs"), xs1 = ex_exact.read("layers.0.xs");
  ASSERT_EQ(y.dim(0), 8);
  ASSERT_EQ(y1.dim(0), 5);
  EXPECT_EQ(rows_bytes(y, 5), rows_bytes(y1, 5));
  EXPECT_EQ(rows_bytes(xq, 5), rows_bytes(xq1, 5));
  const auto* yb = static_cast<const uint8_t*>(y.raw());
  const auto* qb = static_cast<const uint8_t*>(xq.raw());
  for (int64_t i = 5 * 96 * 2; i < 8 * 96 * 2; ++i) ASSERT_EQ(yb[i], 0xab) << i;
  for (int64_t i = 5 * 128; i < 8 * 128; ++i) ASSERT_EQ(qb[i], 0xab) << i;
  // Column-major TMA scales: column stride round_up(8, 4) = 8 in the padded buffer, 8 for n = 5
  // as well; entries of tokens >= 5 keep the fill.
  const GroupScaleLayout lp{8, 2, true, true}, l1{5, 2, true, true};
  const float* s = xs.data<float>();
  const float* s1 = xs1.data<float>();
  for (int64_t gi = 0; gi < 2; ++gi) {
    for (int64_t t = 0; t < 8; ++t) {
      const float v = s[lp.offset(t, gi)];
      if (t < 5) {
        EXPECT_EQ(std::memcmp(&v, &s1[l1.offset(t, gi)], 4), 0) << t << "," << gi;
        EXPECT_GT(v, 0.0f);
      } else {
        uint32_t bits;
        std::memcpy(&bits, &v, 4);
        EXPECT_EQ(bits, 0xababababu) << t << "," << gi;
      }
    }
  }
}

TEST(Executor, PoisonedPaddingAndCacheDoNotChangeResults) {
  const models::Batch clean = make_batch({5, 70, 1}, {{7, 30}}, 1, 8, false);
  const models::Batch poisoned = make_batch({5, 70, 1}, {{7, 30}}, 1, 8, true);
  const ir::Graph g = make_graph(clean, 1, group_quant(128, true, false));
  const WeightStore w = models::make_mla_weights(small_config(), 1, 8);
  auto be = make_cpu_backend();
  Executor a(g, *be, w), p(g, *be, w);
  a.run(clean.graph_inputs(), clean.meta);
  p.run(poisoned.graph_inputs(), poisoned.meta);
  EXPECT_EQ(rows_bytes(a.read("layers.0.y"), 10), rows_bytes(p.read("layers.0.y"), 10));
  EXPECT_EQ(rows_bytes(a.read("layers.0.xq"), 10), rows_bytes(p.read("layers.0.xq"), 10));
}

// A layer that carries the block-FP8 kv_b_proj needs no bf16 copy of it: prefill up-projects with
// the FP8 weight, and the executor neither checks nor uploads the bf16 one. Without either, the
// error names kv_b_proj.
TEST(Executor, Fp8KvBProjLayersNeedNoBf16Copy) {
  MlaConfig cfg = small_config();
  cfg.kv_lora_rank = 128;  // whole groups of 128: the store attaches the FP8 form
  models::BatchSpec spec;
  spec.decode_lens = {5, 70};
  spec.prefills = {{7, 30}, {3, 0}};
  spec.seed = 11;
  const models::Batch b = models::make_batch(cfg, 1, spec);
  models::MlaGraphOptions o;
  o.config = cfg;
  o.num_pages = b.num_pages;
  o.quant = group_quant(128, true, true);
  const ir::Graph g = models::build_mla_graph(o);
  const WeightStore w = models::make_mla_weights(cfg, 1, 11);
  ASSERT_FALSE(w.layer(0).kv_b_proj_fp8.empty());
  WeightStore no_bf16 = w;
  no_bf16.layers[0].kv_b_proj = Tensor();
  auto be = make_cpu_backend();
  Executor full(g, *be, w), lean(g, *be, no_bf16);
  full.run(b.graph_inputs(), b.meta);
  lean.run(b.graph_inputs(), b.meta);
  const int64_t n = b.meta.num_tokens();
  EXPECT_EQ(rows_bytes(full.read("layers.0.y"), n), rows_bytes(lean.read("layers.0.y"), n));
  EXPECT_EQ(rows_bytes(full.read("layers.0.xq"), n), rows_bytes(lean.read("layers.0.xq"), n));
  WeightStore neither = no_bf16;
  neither.layers[0].kv_b_proj_fp8 = BlockFp8Weight{};
  try {
    Executor bad(g, *be, neither);
    FAIL() << "no throw";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("kv_b_proj"), std::string::npos) << e.what();
  }
}

TEST(Executor, RejectsMissingUnknownAndMisshapedInputs) {
  const models::Batch b = make_batch({5, 70}, {});
  const ir::Graph g = make_graph(b, 1, group_quant(128, false, false));
  const WeightStore w = models::make_mla_weights(small_config(), 1, 1);
  auto be = make_cpu_backend();
  Executor ex(g, *be, w);
  auto expect_error = [&](std::map<std::string, Tensor> in, const AttentionMetadata& m,
                          std::vector<std::string> words) {
    try {
      ex.run(in, m);
      FAIL() << "no throw; expected an error mentioning " << words[0];
    } catch (const Error& e) {
      for (const auto& word : words) {
        EXPECT_NE(std::string(e.what()).find(word), std::string::npos)
            << "'" << word << "' not in: " << e.what();
      }
    }
  };
  auto in = b.graph_inputs();
  in.erase("layers.0.k_pe");
  expect_error(in, b.meta, {"layers.0.k_pe", "missing", "bf16[T, 1, 16]"});
  in = b.graph_inputs();
  in["layers.0.q"] = Tensor::empty(DType::kBF16, {2, 4, 40});
  expect_error(in, b.meta, {"layers.0.q", "bf16[T, 4, 48]", "bf16[2, 4, 40]"});
  in["layers.0.q"] = Tensor::empty(DType::kF32, {2, 4, 48});
  expect_error(in, b.meta, {"layers.0.q", "f32[2, 4, 48]"});
  in["layers.0.q"] = Tensor::empty(DType::kBF16, {1, 4, 48});
  expect_error(in, b.meta, {"layers.0.q", "1 token rows", "2 tokens"});
  in = b.graph_inputs();
  in["layers.0.kv_cache"] = Tensor::empty(DType::kBF16, {b.num_pages + 1, 64, 80});
  expect_error(in, b.meta, {"layers.0.kv_cache"});
  in = b.graph_inputs();
  in["layers.0.qq"] = Tensor::empty(DType::kBF16, {2, 4, 48});
  expect_error(in, b.meta, {"layers.0.qq", "not an input"});
  // Metadata: a slot outside the cache, a block table too short for a sequence.
  AttentionMetadata m = b.meta;
  m.slot_mapping = b.meta.slot_mapping.clone();
  m.slot_mapping.data<int32_t>()[1] = 1 << 20;
  expect_error(b.graph_inputs(), m, {"slot_mapping[1]", "outside"});
  m = b.meta;
  m.seq_lens = b.meta.seq_lens.clone();
  m.seq_lens.data<int32_t>()[0] = 1000;
  expect_error(b.graph_inputs(), m, {"seq_lens 1000", "block_table"});
  m = b.meta;
  m.num_decodes = 3;
  expect_error(b.graph_inputs(), m, {"3 decodes", "num_decode_tokens 2"});
  m.num_decode_tokens = 3;
  expect_error(b.graph_inputs(), m, {"seq_lens"});
  // A read before any successful run.
  EXPECT_THROW(ex.read("layers.0.y"), Error);
  // Weights: missing or mis-shaped.
  WeightStore w2 = w;
  w2.tensors.erase(models::o_proj_scale_name(0));
  EXPECT_THROW(Executor(g, *be, w2), Error);
  w2 = w;
  w2.tensors[models::o_proj_weight_name(0)] = Tensor::empty(DType::kFp8E4M3, {96, 64});
  try {
    Executor bad(g, *be, w2);
    FAIL() << "no throw";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("layers.0.o_proj.weight"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("fp8e4m3[96, 128]"), std::string::npos) << e.what();
  }
  MlaConfig big = small_config();
  big.num_heads = 8;
  EXPECT_THROW(Executor(g, *be, models::make_mla_weights(big, 1, 1)), Error);
}

// Inputs of a one-layer batch with the cache widened to `pages` pages, so one graph (and its
// captured buckets) serves batches of different page counts.
std::map<std::string, Tensor> inputs_with_pages(const models::Batch& b, int64_t pages) {
  auto in = b.graph_inputs();
  Tensor c = Tensor::empty(DType::kBF16, {pages, 64, 80});
  std::memcpy(c.raw(), b.layers[0].kv_cache.raw(), b.layers[0].kv_cache.numel() * 2);
  in["layers.0.kv_cache"] = c;
  return in;
}

ir::Graph one_layer_graph(int64_t pages, const OutputQuant& quant) {
  models::MlaGraphOptions o;
  o.config = small_config();
  o.num_pages = pages;
  o.quant = quant;
  return models::build_mla_graph(o);
}

// A backend that "captures" like a CUDA graph: capture records the body without running it and
// replay runs it again, with the real n read from RunContext::num_tokens_device and the
// metadata read from the device copies, as a replayed kernel would. Every replayed call first
// validates those device copies as they stand, padding included (MetadataForm::kPadded, against
// the call's kv_cache when it has one), as the CUDA attention op checks its host copy: the
// padded tail fill_graph_meta writes (padding decodes, query_start_loc up to T_pad) is what the
// replayed kernels read, and the trimming below would hide a broken one.
class CapturingCpuBackend : public testing::WrappedCpuBackend {
 public:
  CapturingCpuBackend() : WrappedCpuBackend("capturing-cpu") {}

  void run(const OpCall& call, const RunContext& ctx) override {
    if (capturing_) {
      ++recorded_;
      return;  // recorded, not executed
    }
    if (ctx.num_tokens_device == nullptr) {
      WrappedCpuBackend::run(call, ctx);
      return;
    }
    // A replay: launches cover ctx.num_tokens rows; the real n and metadata come from "device".
    const int64_t n = *ctx.num_tokens_device;
    const AttentionMetadata& d = *ctx.device_meta;
    validate_padded(call, d, ctx.num_tokens);
    AttentionMetadata m = d;
    if (d.num_prefills == 0) {
      // Decode-only capture at T_pad decodes: the real ones are those whose tokens are the first
      // n (each has one at least, so they end where query_start_loc first reaches n).
      const int32_t* dq = d.query_start_loc.data<int32_t>();
      const int64_t s = std::lower_bound(dq, dq + d.num_seqs() + 1, static_cast<int32_t>(n)) - dq;
      m.num_decodes = s;
      m.num_decode_tokens = n;
      m.seq_lens = Tensor::empty(DType::kI32, {s});
      m.query_start_loc = Tensor::empty(DType::kI32, {s + 1});
      m.block_table = Tensor::empty(DType::kI32, {s, d.block_table.dim(1)});
      std::memcpy(m.seq_lens.raw(), d.seq_lens.raw(), s * 4);
      std::memcpy(m.query_start_loc.raw(), dq, (s + 1) * 4);
      std::memcpy(m.block_table.raw(), d.block_table.raw(), s * d.block_table.dim(1) * 4);
    }
    RunContext c = ctx;
    c.host_meta = &m;
    c.device_meta = &m;
    c.num_tokens = n;
    c.num_tokens_device = nullptr;
    ++replayed_ops_;
    WrappedCpuBackend::run(call, c);
  }

  std::unique_ptr<CapturedWork> capture(const std::function<void()>& body) override {
    struct Work : CapturedWork {
      std::function<void()> body;
      const uint64_t* generation = nullptr;
      uint64_t captured_at = 0;
      void replay() override {
        ASSERT_FALSE(stale()) << "a stale capture replayed";
        body();
      }
      bool stale() const override { return *generation != captured_at; }
    };
    capturing_ = true;
    body();
    capturing_ = false;
    ++captures_;
    auto w = std::make_unique<Work>();
    w->body = body;
    w->generation = &scratch_generation_;
    w->captured_at = scratch_generation_;
    return w;
  }

  // What the CUDA backend bumps when its workspace is reallocated: earlier captures go stale.
  uint64_t scratch_generation_ = 0;
  int captures_ = 0;
  int recorded_ = 0;
  int replayed_ops_ = 0;
  int validated_ = 0;  // replayed calls whose padded device metadata passed validation

 private:
  // The untrimmed device metadata of a replay: valid in padded form, covering exactly the
  // launches' t_pad tokens (decode-only: T_pad; with prefills: n), and inside the cache.
  void validate_padded(const OpCall& call, const AttentionMetadata& d, int64_t t_pad) {
    const int ci = ir::OpRegistry::global().get(call.op).input_index("kv_cache");
    std::optional<PagedCacheExtent> cache;
    if (ci >= 0 && static_cast<size_t>(ci) < call.inputs.size() &&
        call.inputs[static_cast<size_t>(ci)].defined()) {
      const Tensor& kv = call.inputs[static_cast<size_t>(ci)];
      cache = PagedCacheExtent{kv.dim(0), kv.dim(1), "kv_cache"};
    }
    const int64_t tokens =
        validate_attention_metadata(d, MetadataForm::kPadded, cache ? &*cache : nullptr);
    ASSERT_EQ(tokens, t_pad) << "the padded metadata's tokens differ from the launches' rows";
    ++validated_;
  }

  bool capturing_ = false;
};

TEST(Executor, CudaGraphBucketsCaptureOnceAndReplayForSmallerBatches) {
  // Two decode batches of 3 and 4 tokens share bucket 4; both must equal eager runs.
  models::BatchSpec s3, s4;
  s3.decode_lens = {5, 70, 1};
  s3.seed = 21;
  s4.decode_lens = {130, 2, 64, 65};
  s4.seed = 22;
  const models::Batch b3 = models::make_batch(small_config(), 1, s3);
  const models::Batch b4 = models::make_batch(small_config(), 1, s4);
  // The graph's cache must fit both batches: give both the larger page count.
  const int64_t pages = std::max(b3.num_pages, b4.num_pages);
  auto with_pages = [&](const models::Batch& b) { return inputs_with_pages(b, pages); };
  const ir::Graph g = one_layer_graph(pages, group_quant(128, true, true));
  const WeightStore w = models::make_mla_weights(small_config(), 1, 5);

  CapturingCpuBackend cap;
  ExecutorOptions go;
  go.cuda_graphs = true;
  Executor ex(g, cap, w, go);
  auto cpu = make_cpu_backend();
  Executor eager(g, *cpu, w);

  const RunStats r3 = ex.run(with_pages(b3), b3.meta);
  EXPECT_TRUE(r3.graph_captured);
  EXPECT_TRUE(r3.graph_replayed);
  EXPECT_EQ(r3.t_pad, 4);
  EXPECT_EQ(r3.nodes.size(), g.num_nodes());  // the eager warm-up run before capture
  EXPECT_GT(r3.replay_us, 0.0);
  EXPECT_EQ(cap.captures_, 1);
  EXPECT_EQ(cap.recorded_, static_cast<int>(g.num_nodes()));
  EXPECT_EQ(cap.replayed_ops_, static_cast<int>(g.num_nodes()));
  EXPECT_EQ(cap.validated_, cap.replayed_ops_);  // every replayed call checked its padded meta
  eager.run(with_pages(b3), b3.meta);
  EXPECT_EQ(rows_bytes(ex.read("layers.0.y"), 3), rows_bytes(eager.read("layers.0.y"), 3));
  EXPECT_EQ(rows_bytes(ex.read("layers.0.xq"), 3), rows_bytes(eager.read("layers.0.xq"), 3));

  const RunStats r4 = ex.run(with_pages(b4), b4.meta);
  EXPECT_FALSE(r4.graph_captured);
  EXPECT_TRUE(r4.graph_replayed);
  EXPECT_TRUE(r4.nodes.empty());
  EXPECT_EQ(cap.captures_, 1);
  eager.run(with_pages(b4), b4.meta);
  EXPECT_EQ(rows_bytes(ex.read("layers.0.y"), 4), rows_bytes(eager.read("layers.0.y"), 4));
  EXPECT_EQ(rows_bytes(ex.read("layers.0.xq"), 4), rows_bytes(eager.read("layers.0.xq"), 4));
  EXPECT_EQ(rows_bytes(ex.read("layers.0.kv_cache_out"), pages),
            rows_bytes(eager.read("layers.0.kv_cache_out"), pages));

  // Back to 3 tokens: still a replay of the same graph (stale rows of the 4-token run aside).
  ex.run(with_pages(b3), b3.meta);
  EXPECT_EQ(cap.captures_, 1);
  eager.run(with_pages(b3), b3.meta);
  EXPECT_EQ(rows_bytes(ex.read("layers.0.y"), 3), rows_bytes(eager.read("layers.0.y"), 3));

  // A batch with a prefill has another composition: captured anew, then correct.
  models::BatchSpec sp;
  sp.decode_lens = {3};
  sp.prefills = {{2, 5}};
  sp.seed = 23;
  const models::Batch bp = models::make_batch(small_config(), 1, sp);
  const RunStats rp = ex.run(with_pages(bp), bp.meta);
  EXPECT_TRUE(rp.graph_captured);
  EXPECT_EQ(cap.captures_, 2);
  eager.run(with_pages(bp), bp.meta);
  EXPECT_EQ(rows_bytes(ex.read("layers.0.y"), 3), rows_bytes(eager.read("layers.0.y"), 3));

  // A captured block table too narrow for a later batch (2 columns; b4 needs 3): captured anew
  // with the wider table, then correct.
  CapturingCpuBackend cap2;
  go.graph_block_table_cols = 1;
  Executor narrow(g, cap2, w, go);
  narrow.run(with_pages(b3), b3.meta);
  EXPECT_TRUE(narrow.run(with_pages(b4), b4.meta).graph_captured);
  EXPECT_FALSE(narrow.run(with_pages(b3), b3.meta).graph_captured);
  EXPECT_EQ(cap2.captures_, 2);
  eager.run(with_pages(b3), b3.meta);
  EXPECT_EQ(rows_bytes(narrow.read("layers.0.y"), 3), rows_bytes(eager.read("layers.0.y"), 3));
  EXPECT_EQ(cap.validated_, cap.replayed_ops_);
  EXPECT_EQ(cap2.validated_, cap2.replayed_ops_);
}

// A bucket keeps a graph per kind: decode-only batches replay their graph after a batch with a
// prefill captured another. Once the backend's scratch moves (a larger bucket's run grew it), the
// bucket's graphs are stale: the next run captures anew instead of replaying them.
TEST(Executor, CudaGraphBucketsKeepAGraphPerKindAndDropStaleOnes) {
  models::BatchSpec s3, sp;
  s3.decode_lens = {5, 70, 1};
  s3.seed = 41;
  sp.decode_lens = {3};
  sp.prefills = {{2, 5}};
  sp.seed = 42;
  const models::Batch b3 = models::make_batch(small_config(), 1, s3);
  const models::Batch bp = models::make_batch(small_config(), 1, sp);
  const int64_t pages = std::max(b3.num_pages, bp.num_pages);
  const ir::Graph g = one_layer_graph(pages, group_quant(128, true, true));
  const WeightStore w = models::make_mla_weights(small_config(), 1, 8);
  CapturingCpuBackend cap;
  ExecutorOptions go;
  go.cuda_graphs = true;
  Executor ex(g, cap, w, go);
  auto cpu = make_cpu_backend();
  Executor eager(g, *cpu, w);
  auto check = [&](const models::Batch& b, bool expect_capture, const char* what) {
    SCOPED_TRACE(what);
    const RunStats r = ex.run(inputs_with_pages(b, pages), b.meta);
    EXPECT_TRUE(r.graph_replayed);
    EXPECT_EQ(r.graph_captured, expect_capture);
    EXPECT_EQ(r.t_pad, 4);
    eager.run(inputs_with_pages(b, pages), b.meta);
    const int64_t n = b.num_tokens;
    EXPECT_EQ(rows_bytes(ex.read("layers.0.y"), n), rows_bytes(eager.read("layers.0.y"), n));
    EXPECT_EQ(rows_bytes(ex.read("layers.0.kv_cache_out"), pages),
              rows_bytes(eager.read("layers.0.kv_cache_out"), pages));
  };
  check(b3, true, "decodes: captured");
  check(bp, true, "with a prefill: another composition, captured");
  check(b3, false, "decodes again: their graph replays");
  check(bp, false, "the prefill composition again: its graph replays");
  EXPECT_EQ(cap.captures_, 2);
  ++cap.scratch_generation_;  // as if a larger bucket's eager run had grown the workspace
  check(b3, true, "after the scratch moved: captured anew");
  check(bp, true, "the other stale graph: captured anew");
  check(b3, false, "the fresh graph replays");
  EXPECT_EQ(cap.captures_, 4);
  EXPECT_EQ(cap.validated_, cap.replayed_ops_);
}

// At most kGraphsPerBucket graphs a bucket: the least recently replayed goes first.
TEST(Executor, CudaGraphBucketsEvictTheLeastRecentlyReplayedGraph) {
  std::vector<models::Batch> batches;  // one decode and a prefill of 1..5 tokens: 5 compositions
  for (int64_t q = 1; q <= 5; ++q) {
    models::BatchSpec sp;
    sp.decode_lens = {9};
    sp.prefills = {{q, 3}};
    sp.seed = 50 + q;
    batches.push_back(models::make_batch(small_config(), 1, sp));
  }
  int64_t pages = 0;
  for (const auto& b : batches) pages = std::max(pages, b.num_pages);
  const ir::Graph g = one_layer_graph(pages, group_quant(128, false, false));
  const WeightStore w = models::make_mla_weights(small_config(), 1, 9);
  CapturingCpuBackend cap;
  ExecutorOptions go;
  go.cuda_graphs = true;
  go.buckets = {8};
  Executor ex(g, cap, w, go);
  auto run = [&](size_t i) {
    return ex.run(inputs_with_pages(batches[i], pages), batches[i].meta).graph_captured;
  };
  for (size_t i = 0; i < 4; ++i) EXPECT_TRUE(run(i)) << i;
  EXPECT_FALSE(run(0));  // kept; now 1 is the least recently replayed
  EXPECT_TRUE(run(4));   // a fifth composition evicts 1
  EXPECT_FALSE(run(0));
  EXPECT_FALSE(run(2));
  EXPECT_FALSE(run(3));
  EXPECT_FALSE(run(4));
  EXPECT_TRUE(run(1));  // evicted, captured again
  EXPECT_EQ(cap.captures_, 6);
  EXPECT_EQ(cap.validated_, cap.replayed_ops_);
}

// Multi-token decodes (MTP) share the decode-only bucket with single-token ones: the padding
// sequences take the padding tokens, and every replay equals an eager run.
TEST(Executor, CudaGraphBucketsReplayMultiTokenDecodes) {
  models::BatchSpec s1, s2, s3;
  s1.decode_lens = {5, 70};  // 2 decodes of 2 tokens: the bucket of 4, no padding
  s1.decode_query_len = 2;
  s1.seed = 31;
  s2.decode_lens = {130};  // 1 decode of 3 tokens: 1 padding token
  s2.decode_query_len = 3;
  s2.seed = 32;
  s3.decode_lens = {9, 64, 1};  // 3 single-token decodes
  s3.seed = 33;
  const models::Batch b1 = models::make_batch(small_config(), 1, s1);
  const models::Batch b2 = models::make_batch(small_config(), 1, s2);
  const models::Batch b3 = models::make_batch(small_config(), 1, s3);
  ASSERT_EQ(b1.num_tokens, 4);
  ASSERT_EQ(b2.num_tokens, 3);
  const int64_t pages = std::max({b1.num_pages, b2.num_pages, b3.num_pages});
  const ir::Graph g = one_layer_graph(pages, group_quant(128, false, false));
  const WeightStore w = models::make_mla_weights(small_config(), 1, 6);
  CapturingCpuBackend cap;
  ExecutorOptions go;
  go.cuda_graphs = true;
  Executor ex(g, cap, w, go);
  auto cpu = make_cpu_backend();
  Executor eager(g, *cpu, w);
  // b1 captures, b2 replays; b3's one-token decodes take another schedule (token units off at
  // small H, AttentionMetadata::one_token_decodes), so they get a graph of their own, which the
  // bucket keeps beside b1's: b1 and b3 replay theirs afterwards.
  const std::vector<const models::Batch*> order = {&b1, &b2, &b3, &b1, &b3};
  const bool captured[] = {true, false, true, false, false};
  for (size_t i = 0; i < order.size(); ++i) {
    const models::Batch* b = order[i];
    const RunStats r = ex.run(inputs_with_pages(*b, pages), b->meta);
    EXPECT_TRUE(r.graph_replayed);
    EXPECT_EQ(r.graph_captured, captured[i]) << "batch " << i;
    EXPECT_EQ(r.t_pad, 4);
    eager.run(inputs_with_pages(*b, pages), b->meta);
    const int64_t n = b->num_tokens;
    EXPECT_EQ(rows_bytes(ex.read("layers.0.y"), n), rows_bytes(eager.read("layers.0.y"), n));
    EXPECT_EQ(rows_bytes(ex.read("layers.0.xq"), n), rows_bytes(eager.read("layers.0.xq"), n));
    EXPECT_EQ(rows_bytes(ex.read("layers.0.kv_cache_out"), pages),
              rows_bytes(eager.read("layers.0.kv_cache_out"), pages));
  }
  EXPECT_EQ(cap.captures_, 2);
  EXPECT_EQ(cap.replayed_ops_, 5 * static_cast<int>(g.num_nodes()));
  EXPECT_EQ(cap.validated_, cap.replayed_ops_);  // each replay's padded metadata was valid
}

TEST(Executor, GraphsOnABackendThatCannotCaptureRunEagerly) {
  const models::Batch b = make_batch({5, 70}, {});
  const ir::Graph g = make_graph(b, 1, group_quant(128, false, false));
  const WeightStore w = models::make_mla_weights(small_config(), 1, 1);
  auto be = make_cpu_backend();
  ExecutorOptions go;
  go.cuda_graphs = true;
  Executor ex(g, *be, w, go);
  for (int i = 0; i < 2; ++i) {
    const RunStats st = ex.run(b.graph_inputs(), b.meta);
    EXPECT_FALSE(st.graph_captured);
    EXPECT_FALSE(st.graph_replayed);
    EXPECT_EQ(st.nodes.size(), g.num_nodes());
  }
}

}  // namespace
}  // namespace mlafuse::runtime
