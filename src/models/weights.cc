#include "mlafuse/models/weights.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <vector>

#include "mlafuse/core/error.h"
#include "mlafuse/core/shape.h"
#include "mlafuse/quant/codecs.h"
#include "mlafuse/quant/scale_layout.h"
#include "random.h"

namespace mlafuse::models {
namespace {

constexpr int64_t kB = kWeightBlock;

// Random streams: one purpose id per (layer, tensor), one stream per 128-row block row.
enum : uint64_t { kKvBProj = 1, kOProj = 2 };
uint64_t purpose(int64_t layer, uint64_t tensor) {
  return (static_cast<uint64_t>(layer) << 8) | tensor;
}

// Quantizes rows [r0, r0 + rows) of an [N, K] matrix held in `src` ([rows, K] f32, row-major) into
// the codes and scales of `out`, block by block.
void quantize_block_row(const float* src, int64_t r0, int64_t rows, int64_t k_dim,
                        BlockFp8Weight& out) {
  uint8_t* codes = out.weight.data<uint8_t>();         // [N, K] fp8e4m3
  float* scales = out.weight_scale_inv.data<float>();  // [ceil(N/128), ceil(K/128)] f32
  const int64_t kb = ceil_div(k_dim, kB);
  std::vector<float> block_scale(static_cast<size_t>(kb));
  for (int64_t bc = 0; bc < kb; ++bc) {
    const int64_t c0 = bc * kB, c1 = std::min(k_dim, c0 + kB);
    float amax = 0.0f;
    for (int64_t r = 0; r < rows; ++r) {
      const float* row = src + r * k_dim;
      for (int64_t c = c0; c < c1; ++c) amax = std::max(amax, std::fabs(row[c]));
    }
    MLAFUSE_CHECK(std::isfinite(amax), "block-FP8 quantization: block (", r0 / kB, ", ", bc,
                  ") holds a non-finite value");
    const float scale = amax > 0.0f ? amax / kFp8E4M3Max : 1.0f;
    scales[(r0 / kB) * kb + bc] = scale;
    block_scale[static_cast<size_t>(bc)] = scale;
  }
  for (int64_t r = 0; r < rows; ++r) {
    const float* row = src + r * k_dim;
    uint8_t* crow = codes + (r0 + r) * k_dim;
    for (int64_t c = 0; c < k_dim; ++c) {
      // A true division, as the conversion scripts do (w / scale), not a multiply by 1/scale.
      crow[c] = f32_to_e4m3(row[c] / block_scale[static_cast<size_t>(c / kB)]);
    }
  }
}

// Draws an [N, K] weight block row by block row (so a 117M-element o_proj never exists in f32)
// and quantizes it to block FP8.
BlockFp8Weight random_block_fp8(int64_t n_dim, int64_t k_dim, double std, bool vary_blocks,
                                uint64_t seed, uint64_t purpose_id) {
  BlockFp8Weight w;
  w.weight = Tensor::empty(DType::kFp8E4M3, {n_dim, k_dim});
  w.weight_scale_inv = Tensor::empty(DType::kF32, {ceil_div(n_dim, kB), ceil_div(k_dim, kB)});
  const int64_t kb = ceil_div(k_dim, kB);
  std::vector<float> buf(static_cast<size_t>(std::min(n_dim, kB) * k_dim));
  std::vector<float> block_std(static_cast<size_t>(kb));
  for (int64_t br = 0; br < ceil_div(n_dim, kB); ++br) {
    detail::Rng rng(seed, purpose_id, static_cast<uint64_t>(br));
    for (int64_t bc = 0; bc < kb; ++bc) {
      const float u = vary_blocks ? rng.uniform() * 2.0f - 1.0f : 0.0f;
      block_std[static_cast<size_t>(bc)] = static_cast<float>(std * std::exp2(u));
    }
    const int64_t r0 = br * kB, rows = std::min(kB, n_dim - r0);
    for (int64_t r = 0; r < rows; ++r) {
      float* row = buf.data() + r * k_dim;
      for (int64_t c = 0; c < k_dim; ++c) {
        row[c] = rng.fast_normal() * block_std[static_cast<size_t>(c / kB)];
      }
    }
    quantize_block_row(buf.data(), r0, rows, k_dim, w);
  }
  return w;
}

std::string layer_name(int64_t layer, const char* suffix) {
  return "layers." + std::to_string(layer) + "." + suffix;
}

}  // namespace

BlockFp8Weight quantize_block_fp8(const Tensor& w) {
  check_dtype(w, "weight", DType::kF32);
  check_rank(w, "weight", 2);
  check_device(w, "weight", Device::kCpu);
  const Tensor src = w.is_contiguous() ? w : w.clone();
  const int64_t n_dim = w.dim(0), k_dim = w.dim(1);
  BlockFp8Weight out;
  out.weight = Tensor::empty(DType::kFp8E4M3, {n_dim, k_dim});
  out.weight_scale_inv = Tensor::empty(DType::kF32, {ceil_div(n_dim, kB), ceil_div(k_dim, kB)});
  for (int64_t r0 = 0; r0 < n_dim; r0 += kB) {
    quantize_block_row(src.data<float>() + r0 * k_dim, r0, std::min(kB, n_dim - r0), k_dim, out);
  }
  return out;
}

Tensor dequantize_block_fp8_bf16(const BlockFp8Weight& w) {
  const Tensor f = dequantize_block_fp8(w);
  Tensor out = Tensor::empty(DType::kBF16, f.shape());
  const float* src = f.data<float>();
  uint16_t* dst = out.data<uint16_t>();
  for (int64_t i = 0; i < f.numel(); ++i) dst[i] = f32_to_bf16_bits(src[i]);
  return out;
}

Tensor linear_block_fp8_f32(const Tensor& x, const BlockFp8Weight& w) {
  check_block_fp8(w, "weight");
  check_dtype(x, "x", DType::kF32);
  check_rank(x, "x", 2);
  check_device(x, "x", Device::kCpu);
  const int64_t t_dim = x.dim(0), n_dim = w.weight.dim(0), k_dim = w.weight.dim(1);
  MLAFUSE_CHECK(x.dim(1) == k_dim, "tensor x: expected [T, ", k_dim, "] to match weight ",
                w.weight.str(), ", got ", x.str());
  const Tensor xc = x.is_contiguous() ? x : x.clone();
  const float* xp = xc.data<float>();                      // [T, K] f32
  const uint8_t* codes = w.weight.data<uint8_t>();         // [N, K] fp8e4m3
  const float* scales = w.weight_scale_inv.data<float>();  // [ceil(N/128), ceil(K/128)]
  const int64_t kb = ceil_div(k_dim, kB);
  Tensor y = Tensor::empty(DType::kF32, {t_dim, n_dim});
  float* yp = y.data<float>();  // [T, N] f32
  // Dequantize one weight row at a time (the o_proj is 117M codes; never all of it in f32), then
  // dot it with every token. Sixteen partial sums let the compiler vectorize the f32 reduction.
  std::vector<float> wrow(static_cast<size_t>(k_dim));
  const std::array<float, 256>& lut = e4m3_decode_table();
  constexpr int kLanes = 16;
  for (int64_t o = 0; o < n_dim; ++o) {
    const uint8_t* crow = codes + o * k_dim;
    const float* srow = scales + (o / kB) * kb;
    for (int64_t c = 0; c < k_dim; ++c) wrow[static_cast<size_t>(c)] = lut[crow[c]] * srow[c / kB];
    for (int64_t t = 0; t < t_dim; ++t) {
      const float* xr = xp + t * k_dim;
      float acc[kLanes] = {};
      int64_t c = 0;
      for (; c + kLanes <= k_dim; c += kLanes) {
        for (int j = 0; j < kLanes; ++j) acc[j] += xr[c + j] * wrow[static_cast<size_t>(c + j)];
      }
      float sum = 0.0f;
      for (; c < k_dim; ++c) sum += xr[c] * wrow[static_cast<size_t>(c)];
      for (int j = 0; j < kLanes; ++j) sum += acc[j];
      yp[t * n_dim + o] = sum;
    }
  }
  return y;
}

MlaLayerWeights mla_layer_weights_from_kv_b_proj(const Tensor& kv_b_proj, const MlaConfig& cfg) {
  cfg.validate();
  const int64_t h = cfg.num_heads, p = cfg.qk_nope_dim, v = cfg.v_head_dim, l = cfg.kv_lora_rank;
  check_dtype(kv_b_proj, "kv_b_proj", DType::kBF16);
  check_shape(kv_b_proj, "kv_b_proj", {h * (p + v), l});
  check_device(kv_b_proj, "kv_b_proj", Device::kCpu);
  MlaLayerWeights out;
  out.kv_b_proj = kv_b_proj.is_contiguous() ? kv_b_proj : kv_b_proj.clone();
  out.w_uk_t = Tensor::empty(DType::kBF16, {h, p, l});
  out.w_uv = Tensor::empty(DType::kBF16, {h, l, v});
  const uint16_t* kvb = out.kv_b_proj.data<uint16_t>();  // [H*(P+V), L] bf16
  uint16_t* uk = out.w_uk_t.data<uint16_t>();            // [H, P, L] bf16
  uint16_t* uv = out.w_uv.data<uint16_t>();              // [H, L, V] bf16
  for (int64_t hh = 0; hh < h; ++hh) {
    const uint16_t* head = kvb + hh * (p + v) * l;  // [P+V, L]
    std::memcpy(uk + hh * p * l, head, static_cast<size_t>(p * l) * sizeof(uint16_t));
    for (int64_t vv = 0; vv < v; ++vv) {
      for (int64_t ll = 0; ll < l; ++ll) uv[(hh * l + ll) * v + vv] = head[(p + vv) * l + ll];
    }
  }
  return out;
}

MlaLayerWeights mla_layer_weights_from_block_fp8(const BlockFp8Weight& kv_b_proj,
                                                 const MlaConfig& cfg) {
  cfg.validate();
  check_block_fp8(kv_b_proj, "kv_b_proj", Device::kCpu,
                  {cfg.num_heads * (cfg.qk_nope_dim + cfg.v_head_dim), cfg.kv_lora_rank});
  MlaLayerWeights out = mla_layer_weights_from_kv_b_proj(dequantize_block_fp8_bf16(kv_b_proj), cfg);
  if (cfg.kv_lora_rank % kB == 0) out.kv_b_proj_fp8 = kv_b_proj;
  return out;
}

std::string o_proj_weight_name(int64_t layer) { return layer_name(layer, "o_proj.weight"); }
std::string o_proj_scale_name(int64_t layer) {
  return layer_name(layer, "o_proj.weight_scale_inv");
}
std::string kv_b_proj_weight_name(int64_t layer) { return layer_name(layer, "kv_b_proj.weight"); }
std::string kv_b_proj_scale_name(int64_t layer) {
  return layer_name(layer, "kv_b_proj.weight_scale_inv");
}

WeightStore make_mla_weights(const MlaConfig& cfg, int64_t num_layers, uint64_t seed,
                             const WeightInit& init) {
  cfg.validate();
  MLAFUSE_CHECK(num_layers >= 1, "make_mla_weights: num_layers must be >= 1, got ", num_layers);
  WeightStore store;
  store.config = cfg;
  const int64_t h = cfg.num_heads, l = cfg.kv_lora_rank;
  for (int64_t i = 0; i < num_layers; ++i) {
    const BlockFp8Weight kvb =
        random_block_fp8(h * (cfg.qk_nope_dim + cfg.v_head_dim), l,
                         init.kv_b_proj_std_times_sqrt_l / std::sqrt(static_cast<double>(l)),
                         init.vary_block_magnitude, seed, purpose(i, kKvBProj));
    const BlockFp8Weight o = random_block_fp8(
        cfg.hidden, cfg.output_dim(),
        init.o_proj_std_times_sqrt_hv / std::sqrt(static_cast<double>(cfg.output_dim())),
        init.vary_block_magnitude, seed, purpose(i, kOProj));
    store.layers.push_back(mla_layer_weights_from_block_fp8(kvb, cfg));
    store.tensors[kv_b_proj_weight_name(i)] = kvb.weight;
    store.tensors[kv_b_proj_scale_name(i)] = kvb.weight_scale_inv;
    store.tensors[o_proj_weight_name(i)] = o.weight;
    store.tensors[o_proj_scale_name(i)] = o.weight_scale_inv;
  }
  return store;
}

static BlockFp8Weight lookup(const WeightStore& store, const std::string& wname,
                             const std::string& sname) {
  auto w = store.tensors.find(wname);
  auto s = store.tensors.find(sname);
  MLAFUSE_CHECK(w != store.tensors.end(), "weight store has no tensor '", wname, "'");
  MLAFUSE_CHECK(s != store.tensors.end(), "weight store has no tensor '", sname, "'");
  return BlockFp8Weight{w->second, s->second};
}

BlockFp8Weight o_proj_of(const WeightStore& store, int64_t layer) {
  return lookup(store, o_proj_weight_name(layer), o_proj_scale_name(layer));
}
BlockFp8Weight kv_b_proj_of(const WeightStore& store, int64_t layer) {
  return lookup(store, kv_b_proj_weight_name(layer), kv_b_proj_scale_name(layer));
}

}  // namespace mlafuse::models
