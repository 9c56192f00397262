// The CPU Backend: op dispatch per docs/ops.md, capability answers, host allocate/copy, and the
// central property of SPEC 5: the fused mla_attention (quant attributes) returns the same bytes
// as the unfused graph mla_attention -> quant op, for every key and layout flag, on a padded
// mixed batch with poisoned outputs.
#include "mlafuse/backends/cpu/cpu_backend.h"

#include <gtest/gtest.h>

#include <cstring>
#include <vector>

#include "cpu/mla_test_util.h"
#include "cpu/ref_test_util.h"
#include "mlafuse/backends/cpu/reference.h"
#include "mlafuse/quant/scale_layout.h"

namespace mlafuse {
namespace {

using testing::expect_error;
using testing::MixedBatch;
using testing::poison;
using testing::scalar_f32;

MlaConfig test_config() {
  MlaConfig c;
  c.num_heads = 4;
  c.qk_nope_dim = 32;
  c.qk_rope_dim = 16;
  c.v_head_dim = 64;  // H*V = 256: 2 groups of 128, 4 of 64, 16 NVFP4 blocks
  c.kv_lora_rank = 64;
  c.hidden = 256;
  c.page_size = 16;
  return c;
}

AttrMap attention_attrs(const MlaConfig& c) {
  AttrMap a;
  a.set("layer", int64_t{0});
  a.set("num_heads", c.num_heads);
  a.set("qk_nope_dim", c.qk_nope_dim);
  a.set("qk_rope_dim", c.qk_rope_dim);
  a.set("v_head_dim", c.v_head_dim);
  a.set("kv_lora_rank", c.kv_lora_rank);
  a.set("softmax_scale", 0.0);
  return a;
}

struct Fixture {
  MixedBatch mb;
  WeightStore store;
  std::unique_ptr<Backend> be = make_cpu_backend();

  Fixture() : mb(testing::make_mixed(test_config(), {1, 17, 0}, {{5, 3}, {2, 0}}, 4, 7)) {
    store.config = mb.cfg;
    store.layers.push_back(mb.w);
  }
  RunContext ctx() const {
    RunContext r;
    r.host_meta = &mb.meta;
    r.device_meta = &mb.meta;
    r.weights = &store;
    r.num_tokens = mb.n;
    return r;
  }
  // Runs mla_attention on a fresh copy of the cache with the given extra input/outputs.
  void attention(const AttrMap& attrs, const Tensor& output_scale, Tensor out, Tensor block_scale,
                 Tensor* cache_after = nullptr) {
    Tensor cache = mb.pc.kv_cache.clone();
    std::vector<Tensor> in = {mb.q, mb.kv_c_normed, mb.k_pe, cache};
    if (output_scale.defined()) in.push_back(output_scale);
    std::vector<Tensor> outs = {out, cache};
    if (block_scale.defined()) outs.push_back(block_scale);
    be->run(OpCall{"mla_attention", attrs, in, outs}, ctx());
    if (cache_after != nullptr) *cache_after = cache;
  }
};

bool same_bytes(const Tensor& a, const Tensor& b) {
  return a.storage()->bytes == b.storage()->bytes &&
         std::memcmp(a.storage()->data, b.storage()->data, a.storage()->bytes) == 0;
}

Tensor group_scales(int64_t t_pad, int64_t groups, bool col_major, bool tma) {
  const GroupScaleLayout l{t_pad, groups, col_major, tma};
  return Tensor::empty_strided(DType::kF32, {t_pad, groups}, {l.token_stride(), l.group_stride()},
                               l.storage_numel());
}

TEST(CpuBackend, IdentityAndSupportedOps) {
  auto be = make_cpu_backend();
  EXPECT_EQ(be->name(), "cpu");
  EXPECT_EQ(be->device(), Device::kCpu);
  for (const char* op : {"mla_attention", "quant_fp8_static", "quant_fp8_group", "quant_nvfp4",
                         "linear_fp8_block", "linear_nvfp4", "cache_write"}) {
    EXPECT_TRUE(be->supports_op(op)) << op;
  }
  EXPECT_FALSE(be->supports_op("matmul"));
  EXPECT_EQ(make_backend("cpu")->name(), "cpu");
  AttrMap none;
  RunContext ctx;
  expect_error([&] { be->run(OpCall{"matmul", none, {}, {}}, ctx); }, {"matmul"});
}

TEST(CpuBackend, FusedQuantCapability) {
  auto be = make_cpu_backend();
  for (const OutputQuant& q : all_output_quants()) {
    FusedQuantRequest r{q, 0, 128, 128};
    // Every quantized format with any scale layout; "none" is nothing to fuse.
    EXPECT_EQ(be->fused_output_quant_supported(r), q.quantized()) << q.str();
    r.num_heads = 16;
    EXPECT_EQ(be->fused_output_quant_supported(r), q.quantized()) << q.str();
  }
  // Groups must tile H*V: 1 head of 96 cannot hold a 128 or 64 group... 96 % 64 != 0 either.
  EXPECT_FALSE(
      be->fused_output_quant_supported({OutputQuant{OutputFormat::kFp8Group128}, 0, 1, 96}));
  EXPECT_FALSE(
      be->fused_output_quant_supported({OutputQuant{OutputFormat::kFp8Group64}, 0, 1, 96}));
  EXPECT_TRUE(be->fused_output_quant_supported({OutputQuant{OutputFormat::kNvfp4}, 0, 1, 96}));
}

TEST(CpuBackend, AllocateAndCopyHost) {
  auto be = make_cpu_backend();
  Tensor a = be->allocate(DType::kF32, {3, 2}, {1, 4}, 8);
  EXPECT_EQ(a.device(), Device::kCpu);
  EXPECT_EQ(a.strides(), (std::vector<int64_t>{1, 4}));
  for (int i = 0; i < 8; ++i) static_cast<float*>(a.storage()->data)[i] = static_cast<float>(i);
  Tensor b = be->allocate(DType::kF32, {3, 2}, {1, 4}, 8);
  be->copy(a, b);
  EXPECT_TRUE(same_bytes(a, b));
  Tensor c = be->allocate(DType::kF32, {3, 2}, {2, 1}, 6);
  expect_error([&] { be->copy(a, c); }, {"copy", "32 bytes", "24"});
}

// SPEC 5: fused == unfused, bit for bit, for every key and flag; only the first n tokens written.
TEST(CpuBackend, FusedAttentionEqualsUnfusedGraphBitForBit) {
  Fixture f;
  const MlaConfig& cfg = f.mb.cfg;
  const int64_t t_pad = f.mb.t_pad, hv = cfg.output_dim(), n = f.mb.n;
  ASSERT_LT(n, t_pad);
  const AttrMap base = attention_attrs(cfg);
  // Unfused: attention -> bf16 out.
  Tensor attn = Tensor::empty(DType::kBF16, {t_pad, hv});
  poison(attn);
  Tensor cache_after;
  f.attention(base, Tensor(), attn, Tensor(), &cache_after);
  for (int64_t b = n * hv * 2; b < t_pad * hv * 2; ++b) {
    ASSERT_TRUE(testing::byte_is(attn, b)) << "bf16 out past n written";
  }
  // Equals bf16(mla_attention_f32).
  {
    Tensor cache = f.mb.pc.kv_cache.clone();
    const Tensor o32 = ref::mla_attention_f32(f.mb.q, f.mb.kv_c_normed, f.mb.k_pe, cache, f.mb.meta,
                                              f.mb.w, cfg, n);
    for (int64_t i = 0; i < n * hv; ++i) {
      ASSERT_EQ(attn.data<uint16_t>()[i], f32_to_bf16_bits(o32.data<float>()[i]));
    }
    EXPECT_TRUE(same_bytes(cache, cache_after)) << "the op updates the cache in place";
  }
  const RunContext ctx = f.ctx();
  int checked = 0;

  // Static FP8.
  {
    const Tensor scale = scalar_f32(0.0173f);
    Tensor q_unfused = Tensor::empty(DType::kFp8E4M3, {t_pad, hv});
    Tensor q_fused = Tensor::empty(DType::kFp8E4M3, {t_pad, hv});
    poison(q_unfused);
    poison(q_fused);
    AttrMap none;
    std::vector<Tensor> in = {attn, scale}, out = {q_unfused};
    f.be->run(OpCall{"quant_fp8_static", none, in, out}, ctx);
    f.attention(base, scale, q_fused, Tensor());
    EXPECT_TRUE(same_bytes(q_unfused, q_fused)) << "static FP8";
    ++checked;
  }
  // Group FP8: G in {128, 64} x ue8m0 x col_major x tma_aligned.
  for (int64_t g : {128, 64}) {
    for (int flags = 0; flags < 8; ++flags) {
      const bool ue8m0 = flags & 1, col = flags & 2, tma = flags & 4;
      AttrMap qa;
      qa.set("group_size", g);
      qa.set("ue8m0", ue8m0);
      qa.set("col_major", col);
      qa.set("tma_aligned", tma);
      AttrMap fa = base;
      fa.set("quant_group_size", g);
      fa.set("quant_scale_ue8m0", ue8m0);
      fa.set("quant_col_major", col);
      fa.set("quant_tma_aligned", tma);
      Tensor qu = Tensor::empty(DType::kFp8E4M3, {t_pad, hv});
      Tensor qf = Tensor::empty(DType::kFp8E4M3, {t_pad, hv});
      Tensor su = group_scales(t_pad, hv / g, col, tma);
      Tensor sf = group_scales(t_pad, hv / g, col, tma);
      for (Tensor* t : {&qu, &qf, &su, &sf}) poison(*t);
      std::vector<Tensor> in = {attn}, out = {qu, su};
      f.be->run(OpCall{"quant_fp8_group", qa, in, out}, ctx);
      f.attention(fa, Tensor(), qf, sf);
      EXPECT_TRUE(same_bytes(qu, qf)) << "codes, G " << g << " flags " << flags;
      EXPECT_TRUE(same_bytes(su, sf)) << "scales, G " << g << " flags " << flags;
      // Padded tokens untouched: q rows >= n keep their poison.
      for (int64_t b = n * hv; b < t_pad * hv; ++b) ASSERT_TRUE(testing::byte_is(qf, b));
      ++checked;
    }
  }
  // NVFP4.
  {
    const Tensor gs = scalar_f32(448.0f * 6.0f / 5.0f);
    const Nvfp4ScaleLayout l{t_pad, hv};
    Tensor qu = Tensor::empty(DType::kFp4E2M1x2, {t_pad, hv / 2});
    Tensor qf = Tensor::empty(DType::kFp4E2M1x2, {t_pad, hv / 2});
    Tensor su = Tensor::empty(DType::kFp8E4M3, {l.padded_rows(), l.padded_cols()});
    Tensor sf = Tensor::empty(DType::kFp8E4M3, {l.padded_rows(), l.padded_cols()});
    for (Tensor* t : {&qu, &qf, &su, &sf}) poison(*t);
    AttrMap none;
    std::vector<Tensor> in = {attn, gs}, out = {qu, su};
    f.be->run(OpCall{"quant_nvfp4", none, in, out}, ctx);
    AttrMap fa = base;
    fa.set("quant_group_size", int64_t{16});
    f.attention(fa, gs, qf, sf);
    EXPECT_TRUE(same_bytes(qu, qf)) << "NVFP4 codes";
    EXPECT_TRUE(same_bytes(su, sf)) << "NVFP4 scales";
    ++checked;
  }
  EXPECT_EQ(checked, 18);
}

TEST(CpuBackend, AttentionArgumentErrors) {
  Fixture f;
  const MlaConfig& cfg = f.mb.cfg;
  const int64_t t_pad = f.mb.t_pad, hv = cfg.output_dim();
  const AttrMap base = attention_attrs(cfg);
  // Quant attributes without scale outputs.
  AttrMap fa = base;
  fa.set("quant_group_size", int64_t{128});
  expect_error(
      [&] {
        f.attention(fa, Tensor(), Tensor::empty(DType::kBF16, {t_pad, hv}), Tensor());
      },
      {"quant_group_size 128", "output_block_scale"});
  // Attribute says 64, the scale buffer has 2 groups (128).
  fa.set("quant_group_size", int64_t{64});
  expect_error(
      [&] {
        f.attention(fa, Tensor(), Tensor::empty(DType::kFp8E4M3, {t_pad, hv}),
                    group_scales(t_pad, 2, false, false));
      },
      {"quant_group_size 64", "group 1x128"});
  // A group size the fused op does not have.
  expect_error(
      [&] {
        f.attention(base, Tensor(), Tensor::empty(DType::kFp8E4M3, {t_pad, hv}),
                    group_scales(t_pad, 8, false, false));
      },
      {"group size 32"});
  // Scale layout flags that disagree with the buffer's strides.
  fa.set("quant_group_size", int64_t{128});
  fa.set("quant_col_major", true);
  expect_error(
      [&] {
        f.attention(fa, Tensor(), Tensor::empty(DType::kFp8E4M3, {t_pad, hv}),
                    group_scales(t_pad, 2, false, false));
      },
      {"tensor s", "col_major"});
  // A scale buffer of the wrong rank is named (its last dim gives the group count).
  expect_error(
      [&] {
        f.attention(base, Tensor(), Tensor::empty(DType::kFp8E4M3, {t_pad, hv}),
                    Tensor::empty(DType::kF32, {}));
      },
      {"tensor output_block_scale", "expected rank 2"});
  // Wrong out shape with no quantization.
  expect_error(
      [&] {
        f.attention(base, Tensor(), Tensor::empty(DType::kBF16, {t_pad, hv + 1}), Tensor());
      },
      {"tensor out", "256]"});
  // No metadata, no weights, a layer without weights.
  {
    AttrMap a = base;
    Tensor cache = f.mb.pc.kv_cache.clone();
    std::vector<Tensor> in = {f.mb.q, f.mb.kv_c_normed, f.mb.k_pe, cache};
    std::vector<Tensor> out = {Tensor::empty(DType::kBF16, {t_pad, hv}), cache};
    RunContext c = f.ctx();
    c.host_meta = nullptr;
    c.device_meta = nullptr;
    expect_error([&] { f.be->run(OpCall{"mla_attention", a, in, out}, c); }, {"metadata"});
    c = f.ctx();
    c.weights = nullptr;
    expect_error([&] { f.be->run(OpCall{"mla_attention", a, in, out}, c); }, {"weights"});
    a.set("layer", int64_t{3});
    expect_error([&] { f.be->run(OpCall{"mla_attention", a, in, out}, f.ctx()); }, {"layer 3"});
    std::vector<Tensor> in2 = {f.mb.q, f.mb.kv_c_normed};
    expect_error(
        [&] {
          f.be->run(OpCall{"mla_attention", base, in2, out}, f.ctx());
        },
        {"mla_attention", "4 to 5 inputs", "got 2"});
  }
}

TEST(CpuBackend, CacheWriteOpWithSeparateOutputBuffer) {
  Fixture f;
  const Tensor cache_in = f.mb.pc.kv_cache.clone();
  Tensor cache_out = Tensor::empty(DType::kBF16, cache_in.shape());
  AttrMap none;
  std::vector<Tensor> in = {f.mb.kv_c_normed, f.mb.k_pe, cache_in}, out = {cache_out};
  f.be->run(OpCall{"cache_write", none, in, out}, f.ctx());
  EXPECT_TRUE(same_bytes(cache_in, f.mb.pc.kv_cache)) << "the input buffer is left as it was";
  Tensor expect = f.mb.pc.kv_cache.clone();
  ref::cache_write(f.mb.kv_c_normed, f.mb.k_pe, f.mb.meta.slot_mapping, f.mb.n, expect);
  EXPECT_TRUE(same_bytes(expect, cache_out));
  // In place: the output is the input buffer.
  Tensor inplace = f.mb.pc.kv_cache.clone();
  std::vector<Tensor> in2 = {f.mb.kv_c_normed, f.mb.k_pe, inplace}, out2 = {inplace};
  f.be->run(OpCall{"cache_write", none, in2, out2}, f.ctx());
  EXPECT_TRUE(same_bytes(expect, inplace));
}

TEST(CpuBackend, LinearOpsWriteOnlyRealRows) {
  Fixture f;
  const int64_t t_pad = 6, n = 4, k = 256, nn = 40;
  Tensor xq = Tensor::empty(DType::kFp8E4M3, {t_pad, k});
  for (int64_t i = 0; i < xq.numel(); ++i) xq.data<uint8_t>()[i] = static_cast<uint8_t>(i % 0x7e);
  Tensor xs = group_scales(t_pad, 2, true, true);
  for (size_t i = 0; i < xs.storage()->bytes / 4; ++i) {
    static_cast<float*>(xs.storage()->data)[i] = 0.01f;
  }
  Tensor wq = Tensor::empty(DType::kFp8E4M3, {nn, k});
  for (int64_t i = 0; i < wq.numel(); ++i)
    wq.data<uint8_t>()[i] = static_cast<uint8_t>((i * 7) % 0x7e);
  Tensor ws = Tensor::empty(DType::kF32, {1, 2});
  ws.data<float>()[0] = 0.5f;
  ws.data<float>()[1] = 0.25f;
  Tensor y = Tensor::empty(DType::kBF16, {t_pad, nn});
  poison(y);
  AttrMap none;
  RunContext ctx = f.ctx();
  ctx.num_tokens = n;
  std::vector<Tensor> in = {xq, xs, wq, ws}, out = {y};
  f.be->run(OpCall{"linear_fp8_block", none, in, out}, ctx);
  const Tensor want = ref::linear_fp8_block(xq, xs, wq, ws, n);
  EXPECT_EQ(std::memcmp(y.raw(), want.raw(), n * nn * 2), 0);
  for (int64_t b = n * nn * 2; b < t_pad * nn * 2; ++b) ASSERT_TRUE(testing::byte_is(y, b));
  std::vector<Tensor> bad_out = {Tensor::empty(DType::kBF16, {t_pad, nn + 1})};
  expect_error(
      [&] {
        f.be->run(OpCall{"linear_fp8_block", none, in, bad_out}, ctx);
      },
      {"tensor y", "[6, 40]"});
}

}  // namespace
}  // namespace mlafuse
