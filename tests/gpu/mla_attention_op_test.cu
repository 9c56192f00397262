// GPU tests of the CUDA `mla_attention` op through the backend: a mixed batch (decodes, a prefill,
// padded rows) with the cache write and the absorbed query, against the CPU reference
// `mla_attention_f32` (normalized error <= 1e-2 per token row; bf16 operands), and the fused
// group-FP8 output bit-exact against the reference quantizer on the op's own bf16 output. Mixed
// batches with real prompts (decode tokens on the decode kernels, prefill tokens on the expanded
// prefill path) check every output key the same way, also with the layer carrying the
// checkpoint's block-FP8 kv_b_proj (the prefill up-projection then runs as W8A8 block FP8, on
// both sides).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <numeric>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "backends/cuda/device_context.h"
#include "gpu/common/gpu_harness.h"
#include "gpu/common/mla_output_check.h"
#include "mlafuse/backends/backend.h"
#include "mlafuse/backends/cpu/reference.h"
#include "mlafuse/backends/cuda/cuda_check.h"
#include "mlafuse/models/weights.h"
#include "mlafuse/quant/codecs.h"
#include "mlafuse/quant/scale_layout.h"

namespace mlafuse {
namespace {

constexpr int kL = 512, kR = 64, kRow = 576, kV = 128;
constexpr uint16_t kBf16NaN = 0x7fc0;
constexpr double kFloatTol = 1e-2;

using gpu_test::bf16_to_f32;
using gpu_test::expect_untouched;
using gpu_test::host_tensor;

uint16_t bf16(float f) { return f32_to_bf16_bits(f); }

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

// Random W_UK_T / W_UV, and kv_b_proj holding the same weights (head h: W_UK rows, then W_UV^T
// rows), so the reference's expanded prefill and the kernels' absorbed form compute the same
// function.
MlaLayerWeights random_weights(int64_t h, std::mt19937& rng) {
  MlaLayerWeights w;
  w.w_uk_t = random_bf16({h, 128, kL}, 0.1f, rng);
  w.w_uv = random_bf16({h, kL, kV}, 0.08f, rng);
  w.kv_b_proj = Tensor::empty(DType::kBF16, {h * (128 + kV), kL});
  for (int64_t hh = 0; hh < h; ++hh) {
    uint16_t* dst = w.kv_b_proj.data<uint16_t>() + hh * (128 + kV) * kL;
    std::memcpy(dst, w.w_uk_t.data<uint16_t>() + hh * 128 * kL, 128 * kL * 2);
    for (int v = 0; v < kV; ++v)
      for (int l = 0; l < kL; ++l)
        dst[(128 + v) * kL + l] = w.w_uv.data<uint16_t>()[(hh * kL + l) * kV + v];
  }
  return w;
}

// A checkpoint-style layer: kv_b_proj drawn in f32, quantized to block FP8 as DeepSeek's
// conversion does; the bf16 tensors are its dequantized value (models' store builder).
MlaLayerWeights random_fp8_weights(int64_t h, std::mt19937& rng) {
  MlaConfig cfg;
  cfg.num_heads = h;
  Tensor w = Tensor::empty(DType::kF32, {h * (128 + kV), kL});
  std::normal_distribution<float> nd(0.0f, 2.0f / std::sqrt(static_cast<float>(kL)));
  for (int64_t i = 0; i < w.numel(); ++i) w.data<float>()[i] = nd(rng);
  return models::mla_layer_weights_from_block_fp8(models::quantize_block_fp8(w), cfg);
}

// The op's attributes for DeepSeek's dimensions, layer 0, the default softmax scale.
AttrMap mla_attrs(int64_t h) {
  AttrMap attrs;
  attrs.set("layer", int64_t{0});
  attrs.set("num_heads", h);
  attrs.set("qk_nope_dim", int64_t{128});
  attrs.set("qk_rope_dim", int64_t{64});
  attrs.set("v_head_dim", int64_t{128});
  attrs.set("kv_lora_rank", int64_t{512});
  attrs.set("softmax_scale", 0.0);
  return attrs;
}

// The device copy of host metadata (its tensors on the GPU).
AttentionMetadata device_metadata(Backend& be, const AttentionMetadata& hm) {
  AttentionMetadata dm = hm;
  dm.seq_lens = to_device(be, hm.seq_lens);
  dm.query_start_loc = to_device(be, hm.query_start_loc);
  dm.block_table = to_device(be, hm.block_table);
  dm.slot_mapping = to_device(be, hm.slot_mapping);
  return dm;
}

// A one-layer store of `w` on the GPU.
WeightStore device_weights(Backend& be, const MlaLayerWeights& w, const MlaConfig& cfg) {
  WeightStore ws;
  ws.config = cfg;
  MlaLayerWeights d;
  d.w_uk_t = to_device(be, w.w_uk_t);
  d.w_uv = to_device(be, w.w_uv);
  d.kv_b_proj = to_device(be, w.kv_b_proj);
  if (!w.kv_b_proj_fp8.empty()) {
    d.kv_b_proj_fp8 = {to_device(be, w.kv_b_proj_fp8.weight),
                       to_device(be, w.kv_b_proj_fp8.weight_scale_inv)};
  }
  ws.layers.push_back(d);
  return ws;
}

TEST(MlaAttentionOp, MixedBatchFusedAndUnfusedAgree) {
  MLAFUSE_SKIP_WITHOUT_GPU();
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
  const MlaLayerWeights w = random_weights(h, rng);
  Tensor q = random_bf16({t_pad, h, 192}, 1.0f, rng);
  Tensor kv_c = random_bf16({t_pad, kL}, 1.0f, rng);
  Tensor k_pe = random_bf16({t_pad, 1, kR}, 1.0f, rng);

  AttentionMetadata hm;
  hm.num_decodes = 2;
  hm.num_decode_tokens = 2;
  hm.num_prefills = 1;
  hm.num_prefill_tokens = 6;
  hm.seq_lens = host_tensor(DType::kI32, {3}, seq_lens.data());
  hm.query_start_loc = host_tensor(DType::kI32, {4}, qsl.data());
  hm.block_table = host_tensor(DType::kI32, {3, bt_cols}, bt.data());
  hm.slot_mapping = host_tensor(DType::kI32, {t_pad}, slots.data());
  const AttentionMetadata dm = device_metadata(*be, hm);

  // Reference: cache write + absorbed decode / expanded prefill, in f32.
  Tensor ref_cache = cache.clone();
  const MlaConfig ref_cfg = cfg;
  Tensor want = ref::mla_attention_f32(q, kv_c, k_pe, ref_cache, hm, w, ref_cfg, n);

  const WeightStore ws_dev = device_weights(*be, w, cfg);
  Tensor n_dev_host = Tensor::empty(DType::kI32, {1});
  n_dev_host.data<int32_t>()[0] = static_cast<int32_t>(n);
  Tensor n_dev = to_device(*be, n_dev_host);
  RunContext ctx;
  ctx.host_meta = &hm;
  ctx.device_meta = &dm;
  ctx.weights = &ws_dev;
  ctx.num_tokens = n;
  ctx.num_tokens_device = n_dev.data<int32_t>();

  const AttrMap attrs = mla_attrs(h);

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
    // An output view 2 bytes past a 16-byte boundary: the kernels' vector stores would fault.
    const Tensor big = be->allocate(DType::kBF16, {t_pad * dim + 8}, {1}, t_pad * dim + 8);
    std::vector<Tensor> odd_outs{big.view(DType::kBF16, {t_pad, dim}, {dim, 1}, 1), d_cache};
    try {
      be->run(OpCall{"mla_attention", attrs, ins, odd_outs}, ctx);
      ADD_FAILURE() << "a misaligned out view was accepted";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("tensor out"), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find("16-byte aligned"), std::string::npos) << e.what();
    }
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

// ---- mixed batches with real prompts: decode tokens on the decode kernels, prefill tokens on the
// expanded-form prefill path, one set of output buffers ----------------------------------------

struct MixedCase {
  int64_t heads = 16;
  std::vector<int> decode_ctx;                 // cached tokens of each decode before this step
  int decode_query_len = 1;                    // new tokens of each decode (MTP when > 1)
  std::vector<std::pair<int, int>> prefills;   // (cached tokens, new tokens)
  int64_t pad = 3;
  uint32_t seed = 1;
  bool fp8_kv_b_proj = false;  // the layer carries the block-FP8 kv_b_proj (random_fp8_weights)
};

void run_mixed_case(const MixedCase& mc) {
  std::unique_ptr<Backend> be = make_backend("cuda");
  std::mt19937 rng(mc.seed);
  MlaConfig cfg;
  cfg.num_heads = mc.heads;
  const int64_t h = cfg.num_heads, dim = h * kV;
  const int nd = static_cast<int>(mc.decode_ctx.size());
  const int np = static_cast<int>(mc.prefills.size());
  const int num_seqs = nd + np;
  std::vector<int32_t> seq_lens, ctxs, qsl{0};
  for (int c : mc.decode_ctx) {
    ctxs.push_back(c);
    seq_lens.push_back(c + mc.decode_query_len);
    qsl.push_back(qsl.back() + mc.decode_query_len);
  }
  const int64_t decode_tokens = qsl.back();
  for (const auto& [c, q] : mc.prefills) {
    ctxs.push_back(c);
    seq_lens.push_back(c + q);
    qsl.push_back(qsl.back() + q);
  }
  const int64_t n = qsl.back(), t_pad = n + mc.pad;
  int64_t max_pages = 1, total_pages = 0;
  for (int32_t len : seq_lens) {
    max_pages = std::max<int64_t>(max_pages, (len + 63) / 64);
    total_pages += (len + 63) / 64;
  }
  const int64_t pages = total_pages + 2, bt_cols = max_pages + 1;
  std::vector<int32_t> pool(static_cast<size_t>(pages));
  std::iota(pool.begin(), pool.end(), 0);
  std::shuffle(pool.begin(), pool.end(), rng);
  std::vector<int32_t> bt(static_cast<size_t>(num_seqs * bt_cols));
  for (size_t i = 0; i < bt.size(); ++i) bt[i] = 0x3ffffff0 + static_cast<int32_t>(i % 8);
  Tensor cache = Tensor::empty(DType::kBF16, {pages, 64, kRow});
  for (int64_t i = 0; i < cache.numel(); ++i) cache.data<uint16_t>()[i] = kBf16NaN;
  std::vector<int32_t> slots(static_cast<size_t>(t_pad), -1);
  std::uniform_real_distribution<float> u(-1, 1);
  int next = 0;
  for (int s = 0; s < num_seqs; ++s) {
    for (int64_t pg = 0; pg < (seq_lens[s] + 63) / 64; ++pg) bt[s * bt_cols + pg] = pool[next++];
    for (int j = 0; j < seq_lens[s]; ++j) {
      const int64_t slot = static_cast<int64_t>(bt[s * bt_cols + j / 64]) * 64 + j % 64;
      if (j < ctxs[s]) {
        for (int c = 0; c < kRow; ++c) cache.data<uint16_t>()[slot * kRow + c] = bf16(u(rng));
      } else {
        slots[static_cast<size_t>(qsl[s] + (j - ctxs[s]))] = static_cast<int32_t>(slot);
      }
    }
  }
  const MlaLayerWeights w = mc.fp8_kv_b_proj ? random_fp8_weights(h, rng) : random_weights(h, rng);
  Tensor q = random_bf16({t_pad, h, 192}, 1.0f, rng);
  Tensor kv_c = random_bf16({t_pad, kL}, 1.0f, rng);
  Tensor k_pe = random_bf16({t_pad, 1, kR}, 1.0f, rng);

  AttentionMetadata hm;
  hm.num_decodes = nd;
  hm.num_decode_tokens = decode_tokens;
  hm.num_prefills = np;
  hm.num_prefill_tokens = n - decode_tokens;
  hm.seq_lens = host_tensor(DType::kI32, {num_seqs}, seq_lens.data());
  hm.query_start_loc = host_tensor(DType::kI32, {num_seqs + 1}, qsl.data());
  hm.block_table = host_tensor(DType::kI32, {num_seqs, bt_cols}, bt.data());
  hm.slot_mapping = host_tensor(DType::kI32, {t_pad}, slots.data());
  const AttentionMetadata dm = device_metadata(*be, hm);

  Tensor ref_cache = cache.clone();
  Tensor want = ref::mla_attention_f32(q, kv_c, k_pe, ref_cache, hm, w, cfg, n);

  const WeightStore ws_dev = device_weights(*be, w, cfg);
  RunContext ctx;
  ctx.host_meta = &hm;
  ctx.device_meta = &dm;
  ctx.weights = &ws_dev;
  ctx.num_tokens = n;
  const AttrMap attrs = mla_attrs(h);
  const std::vector<Tensor> base_ins{to_device(*be, q), to_device(*be, kv_c), to_device(*be, k_pe)};

  // Runs the op on a fresh copy of the cache; returns the outputs on the host.
  auto run = [&](const AttrMap& a, const std::vector<Tensor>& extra_in,
                 const std::vector<Tensor>& host_outs) {
    Tensor d_cache = to_device(*be, cache);
    std::vector<Tensor> ins = base_ins;
    ins.push_back(d_cache);
    for (const Tensor& t : extra_in) ins.push_back(to_device(*be, t));
    std::vector<Tensor> outs{to_device(*be, host_outs[0]), d_cache};
    for (size_t i = 1; i < host_outs.size(); ++i) outs.push_back(to_device(*be, host_outs[i]));
    be->run(OpCall{"mla_attention", a, ins, outs}, ctx);
    be->synchronize();
    std::vector<Tensor> got;
    got.push_back(to_host(*be, outs[0]));
    for (size_t i = 2; i < outs.size(); ++i) got.push_back(to_host(*be, outs[i]));
    Tensor got_cache = to_host(*be, d_cache);
    EXPECT_EQ(
        std::memcmp(got_cache.raw(), ref_cache.raw(), static_cast<size_t>(cache.numel()) * 2), 0)
        << "the op's cache write differs from the reference's";
    return got;
  };

  Tensor poison_bf16 = Tensor::empty(DType::kBF16, {t_pad, dim});
  std::memset(poison_bf16.raw(), 0xff, static_cast<size_t>(t_pad * dim) * 2);
  const Tensor got = run(attrs, {}, {poison_bf16})[0];
  std::vector<uint16_t> got_bits(got.data<uint16_t>(), got.data<uint16_t>() + t_pad * dim);
  expect_rows_close(bf16_to_f32(got_bits), want.data<float>(), static_cast<int>(n),
                    static_cast<int>(dim), "mla_attention (cuda) vs reference");
  {
    std::vector<uint8_t> bytes(got_bits.size() * 2);
    std::memcpy(bytes.data(), got_bits.data(), bytes.size());
    expect_untouched(bytes, static_cast<size_t>(n * dim) * 2, "mla_attention bf16 output");
  }
  Tensor x = host_tensor(DType::kBF16, {t_pad, dim}, got_bits.data());
  float amax = 0.0f;
  for (int64_t i = 0; i < n * dim; ++i)
    amax = std::max(amax, std::fabs(bf16_bits_to_f32(got_bits[static_cast<size_t>(i)])));

  {  // static FP8
    SCOPED_TRACE("fp8 static");
    const float sv = std::max(amax, 1e-6f) / 300.0f;
    Tensor scale = host_tensor(DType::kF32, {1}, &sv);
    Tensor qp = Tensor::empty(DType::kFp8E4M3, {t_pad, dim});
    std::memset(qp.raw(), 0xff, static_cast<size_t>(t_pad * dim));
    const Tensor gq = run(attrs, {scale}, {qp})[0];
    Tensor wq = qp.clone();
    ref::quant_fp8_static(x, n, scale, wq);
    EXPECT_EQ(std::memcmp(gq.raw(), wq.raw(), static_cast<size_t>(t_pad * dim)), 0);
  }
  for (const auto& [g, col, tma, ue8m0] :
       {std::tuple<int64_t, bool, bool, bool>{128, false, false, false}, {128, true, true, true},
        {64, true, false, false}, {64, false, false, true}}) {
    SCOPED_TRACE("fp8 group " + std::to_string(g) + (col ? " col" : "") + (tma ? " tma" : "") +
                 (ue8m0 ? " ue8m0" : ""));
    AttrMap qa = attrs;
    qa.set("quant_group_size", g);
    qa.set("quant_scale_ue8m0", ue8m0);
    qa.set("quant_col_major", col);
    qa.set("quant_tma_aligned", tma);
    GroupScaleLayout lay{t_pad, dim / g, col, tma};
    Tensor qp = Tensor::empty(DType::kFp8E4M3, {t_pad, dim});
    std::memset(qp.raw(), 0xff, static_cast<size_t>(t_pad * dim));
    Tensor sp = Tensor::empty_strided(DType::kF32, {t_pad, dim / g},
                                      {lay.token_stride(), lay.group_stride()}, lay.storage_numel());
    std::memset(sp.raw(), 0xff, static_cast<size_t>(lay.storage_numel()) * 4);
    const std::vector<Tensor> gout = run(qa, {}, {qp, sp});
    Tensor wq = qp.clone();
    Tensor ws = Tensor::empty_strided(DType::kF32, {t_pad, dim / g},
                                      {lay.token_stride(), lay.group_stride()}, lay.storage_numel());
    std::memset(ws.raw(), 0xff, static_cast<size_t>(lay.storage_numel()) * 4);  // clone() packs
    ref::Fp8GroupParams gp;
    gp.group_size = g;
    gp.ue8m0 = ue8m0;
    gp.col_major = col;
    gp.tma_aligned = tma;
    ref::quant_fp8_group(x, n, gp, wq, ws);
    EXPECT_EQ(std::memcmp(gout[0].raw(), wq.raw(), static_cast<size_t>(t_pad * dim)), 0)
        << "codes differ";
    EXPECT_EQ(std::memcmp(gout[1].raw(), ws.raw(), static_cast<size_t>(lay.storage_numel()) * 4), 0)
        << "scales differ";
  }
  {  // NVFP4
    SCOPED_TRACE("nvfp4");
    const float gs = 448.0f * 6.0f / std::max(amax, 1e-6f);
    Tensor scale = host_tensor(DType::kF32, {1}, &gs);
    Nvfp4ScaleLayout lay{t_pad, dim};
    Tensor qp = Tensor::empty(DType::kFp4E2M1x2, {t_pad, dim / 2});
    std::memset(qp.raw(), 0xff, static_cast<size_t>(t_pad * dim / 2));
    Tensor sp = Tensor::empty(DType::kU8, {lay.padded_rows(), lay.padded_cols()});
    std::memset(sp.raw(), 0xff, static_cast<size_t>(lay.storage_bytes()));
    AttrMap na = attrs;
    na.set("quant_group_size", int64_t{16});  // NVFP4's 16-element blocks
    const std::vector<Tensor> gout = run(na, {scale}, {qp, sp});
    Tensor wq = qp.clone();
    Tensor ws = sp.clone();
    ref::quant_nvfp4(x, n, scale, wq, ws);
    EXPECT_EQ(std::memcmp(gout[0].raw(), wq.raw(), static_cast<size_t>(t_pad * dim / 2)), 0)
        << "codes differ";
    EXPECT_EQ(std::memcmp(gout[1].raw(), ws.raw(), static_cast<size_t>(lay.storage_bytes())), 0)
        << "block scales (or their zero padding) differ";
  }
}

TEST(MlaAttentionOp, MixedBatchWithPromptsH16) {
  MLAFUSE_SKIP_WITHOUT_GPU();
  MixedCase mc;
  mc.heads = 16;
  mc.decode_ctx = {70, 0, 200};
  mc.prefills = {{0, 1}, {63, 17}, {0, 129}, {130, 64}};
  mc.seed = 21;
  run_mixed_case(mc);
}

TEST(MlaAttentionOp, MixedBatchWithPromptsH128) {
  MLAFUSE_SKIP_WITHOUT_GPU();
  MixedCase mc;
  mc.heads = 128;
  mc.decode_ctx = {5};
  mc.prefills = {{63, 17}, {0, 130}};
  mc.seed = 22;
  run_mixed_case(mc);
}

// Multi-token decodes (MTP, speculative decoding): each decode's tokens run on the decode kernels,
// causal among themselves; alone, and beside prefills.
TEST(MlaAttentionOp, MultiTokenDecodesH16) {
  MLAFUSE_SKIP_WITHOUT_GPU();
  MixedCase mc;
  mc.heads = 16;
  mc.decode_ctx = {70, 0, 200, 63};
  mc.decode_query_len = 2;
  mc.seed = 24;
  run_mixed_case(mc);
  mc.prefills = {{0, 1}, {63, 17}};
  mc.decode_query_len = 3;
  mc.seed = 25;
  run_mixed_case(mc);
}

TEST(MlaAttentionOp, MultiTokenDecodesH32) {
  MLAFUSE_SKIP_WITHOUT_GPU();
  MixedCase mc;
  mc.heads = 32;
  mc.decode_ctx = {126, 0, 4000, 62};  // lengths crossing a tile inside a unit of two tokens
  mc.decode_query_len = 4;
  mc.seed = 28;
  run_mixed_case(mc);
  mc.prefills = {{0, 3}, {127, 9}};
  mc.decode_query_len = 2;
  mc.seed = 29;
  run_mixed_case(mc);
}

TEST(MlaAttentionOp, MultiTokenDecodesH128) {
  MLAFUSE_SKIP_WITHOUT_GPU();
  MixedCase mc;
  mc.heads = 128;
  mc.decode_ctx = {5, 4095, 0};
  mc.decode_query_len = 2;
  mc.seed = 26;
  run_mixed_case(mc);
  mc.prefills = {{64, 2}};
  mc.seed = 27;
  run_mixed_case(mc);
}

TEST(MlaAttentionOp, PrefillOnlyBatch) {
  MLAFUSE_SKIP_WITHOUT_GPU();
  MixedCase mc;
  mc.heads = 32;
  mc.prefills = {{0, 200}, {64, 1}};
  mc.pad = 130;  // NVFP4 padding rows reach past round_up(n, 128)
  mc.seed = 23;
  run_mixed_case(mc);
}

TEST(MlaAttentionOp, MixedBatchFp8KvBProjH16) {
  MLAFUSE_SKIP_WITHOUT_GPU();
  MixedCase mc;
  mc.heads = 16;
  mc.decode_ctx = {70, 0};
  mc.prefills = {{0, 1}, {63, 17}, {0, 129}, {130, 64}};  // context 404: a padded FP8 GEMM row
  mc.seed = 31;
  mc.fp8_kv_b_proj = true;
  run_mixed_case(mc);
}

TEST(MlaAttentionOp, PrefillOnlyFp8KvBProjH128) {
  MLAFUSE_SKIP_WITHOUT_GPU();
  MixedCase mc;
  mc.heads = 128;
  mc.prefills = {{63, 17}, {0, 130}, {5, 2}};
  mc.pad = 130;
  mc.seed = 32;
  mc.fp8_kv_b_proj = true;
  run_mixed_case(mc);
}

// A block-FP8 kv_b_proj of the wrong shape is refused, naming the tensor and the expected shape.
TEST(MlaAttentionOp, BadFp8KvBProjIsAnError) {
  MLAFUSE_SKIP_WITHOUT_GPU();
  std::unique_ptr<Backend> be = make_backend("cuda");
  std::mt19937 rng(33);
  const int64_t h = 16, t_pad = 4, pages = 2;
  MlaConfig cfg;
  cfg.num_heads = h;
  const std::vector<int32_t> seq_lens{4}, qsl{0, 4}, bt{1}, slots{64, 65, 66, 67};
  AttentionMetadata hm;
  hm.num_prefills = 1;
  hm.num_prefill_tokens = 4;
  hm.seq_lens = host_tensor(DType::kI32, {1}, seq_lens.data());
  hm.query_start_loc = host_tensor(DType::kI32, {2}, qsl.data());
  hm.block_table = host_tensor(DType::kI32, {1, 1}, bt.data());
  hm.slot_mapping = host_tensor(DType::kI32, {t_pad}, slots.data());
  const AttentionMetadata dm = device_metadata(*be, hm);
  MlaLayerWeights w = random_fp8_weights(h, rng);
  Tensor cache = Tensor::empty(DType::kBF16, {pages, 64, kRow});
  std::memset(cache.raw(), 0, static_cast<size_t>(cache.numel()) * 2);
  Tensor d_cache = to_device(*be, cache);
  const std::vector<Tensor> ins{to_device(*be, random_bf16({t_pad, h, 192}, 1.0f, rng)),
                                to_device(*be, random_bf16({t_pad, kL}, 1.0f, rng)),
                                to_device(*be, random_bf16({t_pad, 1, kR}, 1.0f, rng)), d_cache};
  std::vector<Tensor> outs{to_device(*be, Tensor::empty(DType::kBF16, {t_pad, h * kV})), d_cache};
  auto expect_refused = [&](const MlaLayerWeights& bad, const std::vector<std::string>& needles) {
    const WeightStore ws = device_weights(*be, bad, cfg);
    RunContext ctx;
    ctx.host_meta = &hm;
    ctx.device_meta = &dm;
    ctx.weights = &ws;
    ctx.num_tokens = 4;
    try {
      be->run(OpCall{"mla_attention", mla_attrs(h), ins, outs}, ctx);
      ADD_FAILURE() << "no error for a bad kv_b_proj_fp8";
    } catch (const Error& e) {
      for (const std::string& n : needles)
        EXPECT_NE(std::string(e.what()).find(n), std::string::npos) << e.what();
    }
  };
  MlaLayerWeights bad = w;
  bad.kv_b_proj_fp8.weight_scale_inv = Tensor::empty(DType::kF32, {h * 2, 3});
  expect_refused(bad, {"kv_b_proj_fp8.weight_scale_inv", "[32, 4]"});
  bad = w;
  bad.kv_b_proj_fp8.weight = Tensor::empty(DType::kFp8E4M3, {h * 256, 256});
  expect_refused(bad, {"kv_b_proj_fp8.weight", "[4096, 512]"});
  bad = w;
  bad.kv_b_proj_fp8.weight = Tensor::empty(DType::kBF16, {h * 256, kL});
  expect_refused(bad, {"kv_b_proj_fp8.weight", "fp8e4m3"});
  be->synchronize();
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
