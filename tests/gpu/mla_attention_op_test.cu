// GPU tests of the CUDA `mla_attention` op through the backend: a mixed batch (decodes, a prefill,
// padded rows) with the cache write and the absorbed query, against the CPU reference
// `mla_attention_f32` (normalized error <= 1e-2 per token row; bf16 operands), and the fused
// group-FP8 output bit-exact against the reference quantizer on the op's own bf16 output.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "backends/cuda/device_context.h"
#include "mlafuse/backends/backend.h"
#include "mlafuse/backends/cpu/reference.h"
#include "mlafuse/backends/cuda/cuda_check.h"
#include "mlafuse/quant/codecs.h"
#include "mlafuse/quant/scale_layout.h"

namespace mlafuse {
namespace {

constexpr int kL = 512, kR = 64, kRow = 576, kV = 128;
constexpr uint16_t kBf16NaN = 0x7fc0;
constexpr double kFloatTol = 1e-2;

#define SKIP_WITHOUT_GPU()                                        \
  do {                                                            \
    std::string reason;                                           \
    if (!cuda::device_available(&reason)) GTEST_SKIP() << reason; \
  } while (0)

uint16_t bf16(float f) { return f32_to_bf16_bits(f); }

Tensor host_tensor(DType dt, std::vector<int64_t> shape, const void* src) {
  Tensor t = Tensor::empty(dt, std::move(shape));
  std::memcpy(t.raw(), src, static_cast<size_t>(t.numel()) * dtype_size(dt));
  return t;
}

std::vector<float> bf16_to_f32(const std::vector<uint16_t>& v) {
  std::vector<float> f(v.size());
  for (size_t i = 0; i < v.size(); ++i) f[i] = bf16_bits_to_f32(v[i]);
  return f;
}

void expect_rows_close(const std::vector<float>& got, const float* want, int rows, int cols,
                       const std::string& what) {
  for (int t = 0; t < rows; ++t) {
    double num = 0.0, den = 0.0;
    bool nan = false;
    for (int c = 0; c < cols; ++c) {
      const double g = got[static_cast<size_t>(t) * cols + c];
      const double w = want[static_cast<size_t>(t) * cols + c];
      nan |= std::isnan(g);
      num += (g - w) * (g - w);
      den += w * w;
    }
    EXPECT_TRUE(!nan && std::sqrt(num / den) <= kFloatTol)
        << what << ": token " << t << " normalized error " << std::sqrt(num / den)
        << (nan ? " with NaN" : "");
  }
}

void expect_untouched(const std::vector<uint8_t>& bytes, size_t begin, const std::string& what) {
  size_t bad = 0;
  for (size_t i = begin; i < bytes.size(); ++i) bad += bytes[i] != 0xff;
  EXPECT_EQ(bad, 0u) << what << ": " << bad << " bytes written past the real tokens";
}

// ---- the op through the CUDA backend (cache write, absorbed q, fused and unfused outputs) ----

// Whole storages travel (the backend copies storages, padding included).
int64_t storage_numel(const Tensor& t) {
  return static_cast<int64_t>(t.storage()->bytes / dtype_size(t.dtype()));
}
Tensor to_device(Backend& be, const Tensor& host) {
  Tensor d = be.allocate(host.dtype(), host.shape(), host.strides(), storage_numel(host));
  be.copy(host, d);
  return d;
}
Tensor to_host(Backend& be, const Tensor& dev) {
  Tensor h = Tensor::empty_strided(dev.dtype(), dev.shape(), dev.strides(), storage_numel(dev));
  be.copy(dev, h);
  return h;
}

Tensor random_bf16(std::vector<int64_t> shape, float amp, std::mt19937& rng) {
  Tensor t = Tensor::empty(DType::kBF16, std::move(shape));
  std::uniform_real_distribution<float> u(-amp, amp);
  for (int64_t i = 0; i < t.numel(); ++i) t.data<uint16_t>()[i] = bf16(u(rng));
  return t;
}

TEST(MlaAttentionOp, MixedBatchFusedAndUnfusedAgree) {
  SKIP_WITHOUT_GPU();
  std::unique_ptr<Backend> be = make_backend("cuda");
  std::mt19937 rng(5);
  MlaConfig cfg;
  cfg.num_heads = 32;
  const int64_t h = cfg.num_heads, dim = h * kV;
  // Two decodes (contexts 70 and 0 + their new token), one prefill of 6 tokens over 60 cached.
  const std::vector<int32_t> seq_lens{71, 1, 66};
  const std::vector<int32_t> qsl{0, 1, 2, 8};
  const int64_t n = 8, t_pad = 11, pages = 6, bt_cols = 3;
  const std::vector<int32_t> bt{4, 1, 0x3ffffff0, 2, 0x3ffffff1, 0x3ffffff2, 5, 0, 0x3ffffff3};
  std::vector<int32_t> slots(t_pad, -1);
  slots[0] = 1 * 64 + 6;  // token 70 of seq 0 (page 1)
  slots[1] = 2 * 64 + 0;  // token 0 of seq 1
  for (int j = 0; j < 6; ++j) slots[2 + j] = 60 + j < 64 ? 5 * 64 + 60 + j : 0 * 64 + (60 + j - 64);

  Tensor cache = Tensor::empty(DType::kBF16, {pages, 64, kRow});
  for (int64_t i = 0; i < cache.numel(); ++i) cache.data<uint16_t>()[i] = kBf16NaN;
  auto fill_rows = [&](int page, int from, int to) {
    std::uniform_real_distribution<float> u(-1, 1);
    for (int r = from; r < to; ++r)
      for (int c = 0; c < kRow; ++c)
        cache.data<uint16_t>()[(page * 64 + r) * kRow + c] = bf16(u(rng));
  };
  fill_rows(4, 0, 64);
  fill_rows(1, 0, 6);   // seq 0 holds 70 cached tokens before this step
  fill_rows(5, 0, 60);  // seq 2 holds 60
  MlaLayerWeights w;
  w.w_uk_t = random_bf16({h, 128, kL}, 0.1f, rng);
  w.w_uv = random_bf16({h, kL, kV}, 0.08f, rng);
  // kv_b_proj holds the same weights (head h: W_UK rows, then W_UV^T rows), so the reference's
  // expanded prefill and the kernels' absorbed form compute the same function.
  w.kv_b_proj = Tensor::empty(DType::kBF16, {h * (128 + kV), kL});
  for (int64_t hh = 0; hh < h; ++hh) {
    uint16_t* dst = w.kv_b_proj.data<uint16_t>() + hh * (128 + kV) * kL;
    std::memcpy(dst, w.w_uk_t.data<uint16_t>() + hh * 128 * kL, 128 * kL * 2);
    for (int v = 0; v < kV; ++v)
      for (int l = 0; l < kL; ++l)
        dst[(128 + v) * kL + l] = w.w_uv.data<uint16_t>()[(hh * kL + l) * kV + v];
  }
  Tensor q = random_bf16({t_pad, h, 192}, 1.0f, rng);
  Tensor kv_c = random_bf16({t_pad, kL}, 1.0f, rng);
  Tensor k_pe = random_bf16({t_pad, 1, kR}, 1.0f, rng);

  AttentionMetadata hm;
  hm.num_decodes = 2;
  hm.num_prefills = 1;
  hm.num_prefill_tokens = 6;
  hm.seq_lens = host_tensor(DType::kI32, {3}, seq_lens.data());
  hm.query_start_loc = host_tensor(DType::kI32, {4}, qsl.data());
  hm.block_table = host_tensor(DType::kI32, {3, bt_cols}, bt.data());
  hm.slot_mapping = host_tensor(DType::kI32, {t_pad}, slots.data());
  AttentionMetadata dm = hm;
  dm.seq_lens = to_device(*be, hm.seq_lens);
  dm.query_start_loc = to_device(*be, hm.query_start_loc);
  dm.block_table = to_device(*be, hm.block_table);
  dm.slot_mapping = to_device(*be, hm.slot_mapping);

  // Reference: cache write + absorbed decode / expanded prefill, in f32.
  Tensor ref_cache = cache.clone();
  const MlaConfig ref_cfg = cfg;
  Tensor want = ref::mla_attention_f32(q, kv_c, k_pe, ref_cache, hm, w, ref_cfg, n);

  WeightStore ws_dev;
  ws_dev.config = cfg;
  ws_dev.layers.push_back(
      {to_device(*be, w.w_uk_t), to_device(*be, w.w_uv), to_device(*be, w.kv_b_proj)});
  Tensor n_dev_host = Tensor::empty(DType::kI32, {1});
  n_dev_host.data<int32_t>()[0] = static_cast<int32_t>(n);
  Tensor n_dev = to_device(*be, n_dev_host);
  RunContext ctx;
  ctx.host_meta = &hm;
  ctx.device_meta = &dm;
  ctx.weights = &ws_dev;
  ctx.num_tokens = n;
  ctx.num_tokens_device = n_dev.data<int32_t>();

  AttrMap attrs;
  attrs.set("layer", int64_t{0});
  attrs.set("num_heads", h);
  attrs.set("qk_nope_dim", int64_t{128});
  attrs.set("qk_rope_dim", int64_t{64});
  attrs.set("v_head_dim", int64_t{128});
  attrs.set("kv_lora_rank", int64_t{512});
  attrs.set("softmax_scale", 0.0);

  // Unquantized run.
  Tensor d_cache = to_device(*be, cache);
  std::vector<Tensor> ins{to_device(*be, q), to_device(*be, kv_c), to_device(*be, k_pe), d_cache};
  Tensor poison_bf16 = Tensor::empty(DType::kBF16, {t_pad, dim});
  std::memset(poison_bf16.raw(), 0xff, static_cast<size_t>(t_pad * dim) * 2);
  std::vector<Tensor> outs{to_device(*be, poison_bf16), d_cache};
  be->run(OpCall{"mla_attention", attrs, ins, outs}, ctx);
  be->synchronize();
  Tensor got = to_host(*be, outs[0]);
  std::vector<uint16_t> got_bits(got.data<uint16_t>(), got.data<uint16_t>() + t_pad * dim);
  expect_rows_close(bf16_to_f32(got_bits), want.data<float>(), static_cast<int>(n),
                    static_cast<int>(dim), "mla_attention (cuda) vs reference");
  std::vector<uint8_t> bytes(got_bits.size() * 2);
  std::memcpy(bytes.data(), got_bits.data(), bytes.size());
  expect_untouched(bytes, static_cast<size_t>(n * dim) * 2, "mla_attention bf16 output");
  Tensor got_cache = to_host(*be, d_cache);
  EXPECT_EQ(std::memcmp(got_cache.raw(), ref_cache.raw(), static_cast<size_t>(cache.numel()) * 2),
            0)
      << "the op's cache write differs from the reference's";

  // Bad arguments are errors naming the problem, never a launch.
  {
    AttrMap bad = attrs;
    bad.set("num_heads", int64_t{48});
    EXPECT_THROW(be->run(OpCall{"mla_attention", bad, ins, outs}, ctx), Error);
    bad = attrs;
    bad.set("v_head_dim", int64_t{64});
    EXPECT_THROW(be->run(OpCall{"mla_attention", bad, ins, outs}, ctx), Error);
    std::vector<Tensor> short_ins{ins[0], ins[1], ins[2]};
    EXPECT_THROW(be->run(OpCall{"mla_attention", attrs, short_ins, outs}, ctx), Error);
    RunContext no_meta = ctx;
    no_meta.device_meta = nullptr;
    EXPECT_THROW(be->run(OpCall{"mla_attention", attrs, ins, outs}, no_meta), Error);
  }

  // Fused group-128 FP8 (col-major, TMA-aligned, ue8m0): equals quantizing the bf16 output.
  AttrMap qattrs = attrs;
  qattrs.set("quant_group_size", int64_t{128});
  qattrs.set("quant_scale_ue8m0", true);
  qattrs.set("quant_col_major", true);
  qattrs.set("quant_tma_aligned", true);
  GroupScaleLayout lay{t_pad, dim / 128, true, true};
  Tensor q_poison = Tensor::empty(DType::kFp8E4M3, {t_pad, dim});
  std::memset(q_poison.raw(), 0xff, static_cast<size_t>(t_pad * dim));
  Tensor s_poison =
      Tensor::empty_strided(DType::kF32, {t_pad, dim / 128},
                            {lay.token_stride(), lay.group_stride()}, lay.storage_numel());
  std::memset(s_poison.raw(), 0xff, static_cast<size_t>(lay.storage_numel()) * 4);
  std::vector<Tensor> qouts{to_device(*be, q_poison), d_cache, to_device(*be, s_poison)};
  Tensor d_cache2 = to_device(*be, cache);  // fresh cache: the step is replayed from scratch
  ins[3] = d_cache2;
  qouts[1] = d_cache2;
  be->run(OpCall{"mla_attention", qattrs, ins, qouts}, ctx);
  be->synchronize();
  Tensor got_q = to_host(*be, qouts[0]);
  Tensor got_s = to_host(*be, qouts[2]);
  Tensor x = host_tensor(DType::kBF16, {t_pad, dim}, got_bits.data());
  Tensor want_q = q_poison.clone();
  Tensor want_s =
      Tensor::empty_strided(DType::kF32, {t_pad, dim / 128},
                            {lay.token_stride(), lay.group_stride()}, lay.storage_numel());
  std::memset(want_s.raw(), 0xff, static_cast<size_t>(lay.storage_numel()) * 4);
  ref::Fp8GroupParams gp;
  gp.ue8m0 = gp.col_major = gp.tma_aligned = true;
  ref::quant_fp8_group(x, n, gp, want_q, want_s);
  EXPECT_EQ(std::memcmp(got_q.raw(), want_q.raw(), static_cast<size_t>(t_pad * dim)), 0);
  EXPECT_EQ(std::memcmp(got_s.raw(), want_s.raw(), static_cast<size_t>(lay.storage_numel()) * 4),
            0);
}

TEST(MlaAttentionOp, FusedQuantSupport) {
  FusedQuantRequest req{OutputQuant::make(OutputFormat::kFp8Group128, true, true, true), 0, 128,
                        128};
  EXPECT_TRUE(cuda::mla_fused_quant_supported(req));
  req.num_heads = 48;
  EXPECT_FALSE(cuda::mla_fused_quant_supported(req));
  req.num_heads = 16;
  // NVFP4 has no layout flags: a descriptor with them is not one of its quantizations.
  req.quant = OutputQuant{OutputFormat::kNvfp4, Layout::kColMajorTma, true};
  EXPECT_FALSE(cuda::mla_fused_quant_supported(req));
  req.quant = OutputQuant{OutputFormat::kNvfp4};
  EXPECT_TRUE(cuda::mla_fused_quant_supported(req));
  req.quant = OutputQuant{};  // no quantization: nothing to fuse
  EXPECT_FALSE(cuda::mla_fused_quant_supported(req));
  req.quant = OutputQuant{OutputFormat::kFp8Static};
  req.v_head_dim = 64;
  EXPECT_FALSE(cuda::mla_fused_quant_supported(req));
}

}  // namespace
}  // namespace mlafuse
