// Reference MLA (SPEC 4): the paged latent cache write, absorbed decode (with split-KV merging),
// the per-head V up-projection, expanded causal prefill, and the mixed-batch op. Straight loops in
// f32 with the innermost loop over contiguous memory.
#include <algorithm>
#include <array>
#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "mlafuse/backends/cpu/reference.h"
#include "mlafuse/quant/codecs.h"
#include "mlafuse/quant/scale_layout.h"
#include "ref_util.h"

namespace mlafuse::ref {

namespace {

using detail::axpy;
using detail::check_contiguous;
using detail::check_host;
using detail::dot;

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

// Rows [begin, end) of a contiguous tensor, as a view.
Tensor slice_rows(const Tensor& t, int64_t begin, int64_t end) {
  std::vector<int64_t> shape = t.shape();
  shape[0] = end - begin;
  return t.view(t.dtype(), shape, Tensor::contiguous_strides(shape),
                t.offset() + begin * t.strides()[0]);
}

void check_bf16(const Tensor& t, const char* name, size_t rank) {
  check_host(t, name);
  check_dtype(t, name, DType::kBF16);
  check_rank(t, name, rank);
  check_contiguous(t, name);
}

void check_i32(const Tensor& t, const char* name, size_t rank) {
  check_host(t, name);
  check_dtype(t, name, DType::kI32);
  check_rank(t, name, rank);
  check_contiguous(t, name);
}

// A bf16 or f32 contiguous tensor (query inputs may come unrounded from tests).
void check_bf16_or_f32(const Tensor& t, const char* name, size_t rank) {
  check_host(t, name);
  check_rank(t, name, rank);
  MLAFUSE_CHECK(t.dtype() == DType::kBF16 || t.dtype() == DType::kF32, "tensor ", name, " ",
                t.str(), ": expected dtype bf16 (or f32)");
  check_contiguous(t, name);
}

void check_cache(const Tensor& kv_cache) {
  check_bf16(kv_cache, "kv_cache", 3);
  MLAFUSE_CHECK(kv_cache.dim(1) > 0, "tensor kv_cache ", kv_cache.str(),
                ": the page size (dim 1) must be positive");
}

// The cache of a config: rows of L + R.
void check_cache(const Tensor& kv_cache, int64_t l, int64_t r) {
  check_cache(kv_cache);
  MLAFUSE_CHECK(kv_cache.dim(2) == l + r, "tensor kv_cache ", kv_cache.str(),
                ": expected rows of L + R = ", l + r);
}

// Cached positions [0, len) of sequence `seq` as f32 rows: out [len, row]. Every page the sequence
// uses must be inside the cache; block-table slots past its length are never read (they may hold
// anything).
void gather_sequence(const Tensor& kv_cache, const Tensor& block_table, int64_t seq, int64_t len,
                     std::vector<float>* out) {
  const int64_t num_pages = kv_cache.dim(0);
  const int64_t page_size = kv_cache.dim(1);
  const int64_t row = kv_cache.dim(2);
  const int64_t max_pages = block_table.dim(1);
  MLAFUSE_CHECK(len >= 0, "seq_lens[", seq, "] = ", len, " is negative");
  MLAFUSE_CHECK(ceil_div(len, page_size) <= max_pages, "seq_lens[", seq, "] = ", len, " needs ",
                ceil_div(len, page_size), " pages of ", page_size, " but block_table has room for ",
                max_pages, " (block_table ", block_table.str(), ")");
  const int32_t* pages = block_table.data<int32_t>() + seq * max_pages;  // [max_pages]
  const uint16_t* cache = kv_cache.data<uint16_t>();  // [num_pages, page_size, row] bf16
  out->resize(static_cast<size_t>(len * row));
  for (int64_t j = 0; j < len; ++j) {
    const int64_t slot = j / page_size;
    const int64_t page = pages[slot];
    MLAFUSE_CHECK(page >= 0 && page < num_pages, "block_table[", seq, ", ", slot, "] = ", page,
                  " points outside kv_cache ", kv_cache.str(), " (", num_pages, " pages)");
    const uint16_t* src = cache + (page * page_size + j % page_size) * row;
    float* dst = out->data() + j * row;
    for (int64_t i = 0; i < row; ++i) dst[i] = bf16_bits_to_f32(src[i]);
  }
}

// Softmax attention of one absorbed query over latent rows [begin, end):
// score_j = (q[:L] . c_j[:L] + q[L:] . c_j[L:]) * scale; o = softmax(score) @ c[:, :L].
// o: [L] f32; returns the log-sum-exp of the scores (-inf for an empty range, o = 0).
float attend_latent(const float* q, const float* rows, int64_t begin, int64_t end, int64_t latent,
                    int64_t row, float scale, float* o, std::vector<float>* scores) {
  std::fill(o, o + latent, 0.0f);
  if (end <= begin) return kNegInf;
  scores->resize(static_cast<size_t>(end - begin));
  float m = kNegInf;
  for (int64_t j = begin; j < end; ++j) {
    const float* c = rows + j * row;
    const float s = (dot(q, c, latent) + dot(q + latent, c + latent, row - latent)) * scale;
    (*scores)[static_cast<size_t>(j - begin)] = s;
    m = std::max(m, s);
  }
  float sum = 0.0f;
  for (int64_t j = begin; j < end; ++j) {
    const float p = std::exp((*scores)[static_cast<size_t>(j - begin)] - m);
    sum += p;
    axpy(p, rows + j * row, o, latent);
  }
  for (int64_t i = 0; i < latent; ++i) o[i] /= sum;
  return m + std::log(sum);
}

// q [T, H, P+R] -> [T, H, L+R]: q_nope @ W_UK_T[h], q_pe copied; rounded to bf16 if asked.
Tensor absorb_q(const Tensor& q, const Tensor& w_uk_t, bool round_bf16) {
  check_bf16_or_f32(q, "q", 3);
  check_bf16(w_uk_t, "w_uk_t", 3);
  const int64_t t = q.dim(0), h = q.dim(1);
  const int64_t p = w_uk_t.dim(1), l = w_uk_t.dim(2);
  MLAFUSE_CHECK(w_uk_t.dim(0) == h, "tensor w_uk_t ", w_uk_t.str(), ": expected ", h,
                " heads (dim 0) to match q ", q.str());
  MLAFUSE_CHECK(q.dim(2) > p, "tensor q ", q.str(), ": the head dim must be P + R with P = ", p,
                " (w_uk_t ", w_uk_t.str(), ") and R > 0");
  const int64_t r = q.dim(2) - p;
  const std::vector<float> w = detail::to_f32(w_uk_t);  // [H, P, L]
  const std::vector<float> qf = detail::to_f32(q);      // [T, H, P+R]
  Tensor out = Tensor::empty(round_bf16 ? DType::kBF16 : DType::kF32, {t, h, l + r});
  std::vector<float> acc(static_cast<size_t>(l + r));
  for (int64_t ti = 0; ti < t; ++ti) {
    for (int64_t hi = 0; hi < h; ++hi) {
      const float* qh = qf.data() + (ti * h + hi) * (p + r);  // [P+R]
      std::fill(acc.begin(), acc.end(), 0.0f);
      for (int64_t pi = 0; pi < p; ++pi) axpy(qh[pi], w.data() + (hi * p + pi) * l, acc.data(), l);
      for (int64_t ri = 0; ri < r; ++ri) acc[static_cast<size_t>(l + ri)] = qh[p + ri];
      const int64_t base = (ti * h + hi) * (l + r);
      for (int64_t i = 0; i < l + r; ++i) {
        if (round_bf16) {
          out.data<uint16_t>()[base + i] = f32_to_bf16_bits(acc[static_cast<size_t>(i)]);
        } else {
          out.data<float>()[base + i] = acc[static_cast<size_t>(i)];
        }
      }
    }
  }
  return out;
}

}  // namespace

// ---- cache write ----------------------------------------------------------------------------
void cache_write(const Tensor& kv_c_normed, const Tensor& k_pe, const Tensor& slot_mapping,
                 int64_t n, Tensor& kv_cache) {
  check_bf16(kv_c_normed, "kv_c_normed", 2);
  check_bf16(k_pe, "k_pe", 3);
  check_i32(slot_mapping, "slot_mapping", 1);
  check_cache(kv_cache);
  const int64_t t_pad = kv_c_normed.dim(0);
  const int64_t l = kv_c_normed.dim(1);
  detail::check_token_count(n, t_pad, "kv_c_normed");
  MLAFUSE_CHECK(k_pe.dim(0) == t_pad && k_pe.dim(1) == 1, "tensor k_pe ", k_pe.str(),
                ": expected [", t_pad, ", 1, R] to match kv_c_normed ", kv_c_normed.str());
  const int64_t r = k_pe.dim(2);
  MLAFUSE_CHECK(kv_cache.dim(2) == l + r, "tensor kv_cache ", kv_cache.str(),
                ": expected rows of L + R = ", l, " + ", r, " = ", l + r,
                " (from kv_c_normed and k_pe)");
  MLAFUSE_CHECK(slot_mapping.dim(0) >= n, "tensor slot_mapping ", slot_mapping.str(),
                ": expected at least n = ", n, " entries");
  const int64_t num_slots = kv_cache.dim(0) * kv_cache.dim(1);
  const int32_t* slots = slot_mapping.data<int32_t>();  // [T_pad]
  // Validate every slot before writing any, so a bad mapping leaves the cache untouched.
  for (int64_t t = 0; t < n; ++t) {
    MLAFUSE_CHECK(slots[t] == -1 || (slots[t] >= 0 && slots[t] < num_slots), "slot_mapping[", t,
                  "] = ", slots[t], " is outside kv_cache ", kv_cache.str(), " (slots 0..",
                  num_slots - 1, ", or -1 to skip)");
  }
  const uint16_t* c = kv_c_normed.data<uint16_t>();  // [T_pad, L] bf16
  const uint16_t* pe = k_pe.data<uint16_t>();        // [T_pad, 1, R] bf16
  uint16_t* cache = kv_cache.data<uint16_t>();       // [num_pages, page_size, L+R] bf16
  for (int64_t t = 0; t < n; ++t) {
    if (slots[t] == -1) continue;
    uint16_t* dst = cache + static_cast<int64_t>(slots[t]) * (l + r);
    std::copy(c + t * l, c + (t + 1) * l, dst);
    std::copy(pe + t * r, pe + (t + 1) * r, dst + l);
  }
}

// ---- absorbed decode ------------------------------------------------------------------------
Tensor mla_absorb_q(const Tensor& q, const Tensor& w_uk_t) { return absorb_q(q, w_uk_t, true); }
Tensor mla_absorb_q_f32(const Tensor& q, const Tensor& w_uk_t) {
  return absorb_q(q, w_uk_t, false);
}

Tensor mla_decode_latent(const Tensor& q_cat, const Tensor& kv_cache, const Tensor& block_table,
                         const Tensor& seq_lens, int64_t latent_dim, float softmax_scale,
                         Tensor* lse, int64_t kv_splits) {
  check_bf16_or_f32(q_cat, "q_cat", 3);
  check_cache(kv_cache);
  check_i32(block_table, "block_table", 2);
  check_i32(seq_lens, "seq_lens", 1);
  const int64_t b = q_cat.dim(0), h = q_cat.dim(1), row = q_cat.dim(2);
  MLAFUSE_CHECK(kv_cache.dim(2) == row, "tensor kv_cache ", kv_cache.str(), ": rows of ",
                kv_cache.dim(2), " but q_cat ", q_cat.str(), " has ", row);
  MLAFUSE_CHECK(latent_dim > 0 && latent_dim < row, "latent_dim ", latent_dim, " must be in (0, ",
                row, ") (the cache row is L + R = ", row, ")");
  check_shape(seq_lens, "seq_lens", {b});
  MLAFUSE_CHECK(block_table.dim(0) == b, "tensor block_table ", block_table.str(), ": expected ", b,
                " rows (one per sequence of q_cat ", q_cat.str(), ")");
  MLAFUSE_CHECK(kv_splits >= 1, "kv_splits ", kv_splits, " must be >= 1");
  MLAFUSE_CHECK(std::isfinite(softmax_scale), "softmax_scale ", softmax_scale, " is not finite");

  const std::vector<float> qf = detail::to_f32(q_cat);  // [B, H, L+R]
  Tensor o_lat = Tensor::empty(DType::kF32, {b, h, latent_dim});
  if (lse != nullptr) *lse = Tensor::empty(DType::kF32, {b, h});
  std::vector<float> rows, scores;
  std::vector<float> part_o(static_cast<size_t>(kv_splits * latent_dim));
  std::vector<float> part_lse(static_cast<size_t>(kv_splits));
  for (int64_t bi = 0; bi < b; ++bi) {
    const int64_t len = seq_lens.data<int32_t>()[bi];
    gather_sequence(kv_cache, block_table, bi, len, &rows);  // [len, L+R]
    for (int64_t hi = 0; hi < h; ++hi) {
      const float* q = qf.data() + (bi * h + hi) * row;
      float* o = o_lat.data<float>() + (bi * h + hi) * latent_dim;  // [L]
      float out_lse;
      if (kv_splits == 1) {
        out_lse = attend_latent(q, rows.data(), 0, len, latent_dim, row, softmax_scale, o, &scores);
      } else {
        // Contiguous chunks [c*len/S, (c+1)*len/S), merged by log-sum-exp as the kernels do.
        float m = kNegInf;
        for (int64_t c = 0; c < kv_splits; ++c) {
          part_lse[static_cast<size_t>(c)] = attend_latent(
              q, rows.data(), c * len / kv_splits, (c + 1) * len / kv_splits, latent_dim, row,
              softmax_scale, part_o.data() + c * latent_dim, &scores);
          m = std::max(m, part_lse[static_cast<size_t>(c)]);
        }
        std::fill(o, o + latent_dim, 0.0f);
        if (m == kNegInf) {
          out_lse = kNegInf;
        } else {
          float wsum = 0.0f;
          for (int64_t c = 0; c < kv_splits; ++c) {
            const float w = std::exp(part_lse[static_cast<size_t>(c)] - m);  // 0 for empty chunks
            wsum += w;
            axpy(w, part_o.data() + c * latent_dim, o, latent_dim);
          }
          for (int64_t i = 0; i < latent_dim; ++i) o[i] /= wsum;
          out_lse = m + std::log(wsum);
        }
      }
      if (lse != nullptr) lse->data<float>()[bi * h + hi] = out_lse;
    }
  }
  return o_lat;
}

Tensor mla_up_proj(const Tensor& o_lat, const Tensor& w_uv, bool round_input_bf16) {
  check_host(o_lat, "o_lat");
  check_dtype(o_lat, "o_lat", DType::kF32);
  check_rank(o_lat, "o_lat", 3);
  check_contiguous(o_lat, "o_lat");
  check_bf16(w_uv, "w_uv", 3);
  const int64_t b = o_lat.dim(0), h = o_lat.dim(1), l = o_lat.dim(2);
  MLAFUSE_CHECK(w_uv.dim(0) == h && w_uv.dim(1) == l, "tensor w_uv ", w_uv.str(), ": expected [", h,
                ", ", l, ", V] to match o_lat ", o_lat.str());
  const int64_t v = w_uv.dim(2);
  const std::vector<float> w = detail::to_f32(w_uv);  // [H, L, V]
  Tensor out = Tensor::empty(DType::kF32, {b, h * v});
  const float* o = o_lat.data<float>();  // [B, H, L] f32
  for (int64_t bi = 0; bi < b; ++bi) {
    for (int64_t hi = 0; hi < h; ++hi) {
      float* dst = out.data<float>() + bi * h * v + hi * v;  // [V]
      const float* src = o + (bi * h + hi) * l;              // [L]
      for (int64_t li = 0; li < l; ++li) {
        const float a = round_input_bf16 ? round_to_bf16(src[li]) : src[li];
        axpy(a, w.data() + (hi * l + li) * v, dst, v);
      }
    }
  }
  return out;
}

// ---- expanded prefill -----------------------------------------------------------------------
namespace {

// The latents of gathered rows ([S, L+R] f32) as the W8A8 block-FP8 linear sees them: quantized
// per row by the reference group quantizer (groups of 128, f32 scales, row-major), then each code
// times its group's scale in f32, as linear_fp8_block dequantizes its activations. -> [S, L].
std::vector<float> fp8_dequantized_latents(const std::vector<float>& rows, int64_t s, int64_t l,
                                           int64_t r) {
  constexpr int64_t kGroup = 128;
  Tensor x = Tensor::empty(DType::kF32, {s, l});  // the cached bf16 values, exact in f32
  for (int64_t j = 0; j < s; ++j) {
    std::copy_n(rows.data() + j * (l + r), l, x.data<float>() + j * l);
  }
  Tensor codes = Tensor::empty(DType::kFp8E4M3, {s, l});
  Tensor scales = Tensor::empty(DType::kF32, {s, l / kGroup});
  Fp8GroupParams p;
  p.group_size = kGroup;
  quant_fp8_group(x, s, p, codes, scales);
  const std::array<float, 256>& lut = e4m3_decode_table();
  const uint8_t* c = codes.data<uint8_t>();  // [S, L] e4m3
  const float* sc = scales.data<float>();    // [S, L/128]
  std::vector<float> out(static_cast<size_t>(s * l));
  for (int64_t i = 0; i < s * l; ++i) out[static_cast<size_t>(i)] = lut[c[i]] * sc[i / kGroup];
  return out;
}

}  // namespace

Tensor mla_prefill_expanded(const Tensor& q, const Tensor& kv_cache, const Tensor& block_table,
                            int64_t seq, int64_t seq_len, const Tensor& kv_b_proj,
                            const MlaConfig& cfg, bool round_kv_bf16,
                            const BlockFp8Weight& kv_b_proj_fp8) {
  cfg.validate();
  const int64_t h = cfg.num_heads, p = cfg.qk_nope_dim, r = cfg.qk_rope_dim;
  const int64_t v = cfg.v_head_dim, l = cfg.kv_lora_rank;
  check_bf16_or_f32(q, "q", 3);
  const int64_t tq = q.dim(0);
  check_shape(q, "q", {tq, h, p + r});
  check_cache(kv_cache, l, r);
  check_i32(block_table, "block_table", 2);
  MLAFUSE_CHECK(seq >= 0 && seq < block_table.dim(0), "sequence ", seq,
                " has no row in block_table ", block_table.str());
  MLAFUSE_CHECK(seq_len >= tq, "sequence ", seq, ": seq_len ", seq_len, " is shorter than its ", tq,
                " query tokens (the cache write must come first)");
  const bool fp8 = !kv_b_proj_fp8.empty();
  if (fp8) {
    check_block_fp8(kv_b_proj_fp8, "kv_b_proj_fp8", Device::kCpu, {h * (p + v), l});
    MLAFUSE_CHECK(l % 128 == 0, "kv_b_proj_fp8: kv_lora_rank L = ", l,
                  " must be a multiple of 128 (the latents are quantized in groups of 128)");
  } else {
    check_bf16(kv_b_proj, "kv_b_proj", 2);
    check_shape(kv_b_proj, "kv_b_proj", {h * (p + v), l});
  }

  std::vector<float> rows;
  gather_sequence(kv_cache, block_table, seq, seq_len, &rows);  // [S, L+R]
  // The up-projection's operands in f32: the cached latents (row stride L+R) and the bf16 weight,
  // or, for the block-FP8 linear, both dequantized (row stride L).
  const std::vector<float> w = fp8 ? detail::to_f32(dequantize_block_fp8(kv_b_proj_fp8))
                                   : detail::to_f32(kv_b_proj);  // [H*(P+V), L]
  std::vector<float> lat_fp8;
  if (fp8) lat_fp8 = fp8_dequantized_latents(rows, seq_len, l, r);  // [S, L]
  const float* lat = fp8 ? lat_fp8.data() : rows.data();
  const int64_t lat_stride = fp8 ? l : l + r;
  const std::vector<float> qf = detail::to_f32(q);  // [Tq, H, P+R]
  const float scale = cfg.scale();
  Tensor out = Tensor::empty(DType::kF32, {tq, h * v});
  std::vector<float> kv(static_cast<size_t>(seq_len * (p + v)));
  std::vector<float> scores(static_cast<size_t>(seq_len));
  for (int64_t hi = 0; hi < h; ++hi) {
    // This head's up-projected keys (nope part) and values of every context position:
    // kv [S, P+V] = c[:, :L] @ kv_b_proj[h]^T.
    const float* wh = w.data() + hi * (p + v) * l;  // [P+V, L]
    for (int64_t j = 0; j < seq_len; ++j) {
      const float* c = lat + j * lat_stride;
      for (int64_t o = 0; o < p + v; ++o) {
        const float x = dot(wh + o * l, c, l);
        kv[static_cast<size_t>(j * (p + v) + o)] = round_kv_bf16 ? round_to_bf16(x) : x;
      }
    }
    for (int64_t i = 0; i < tq; ++i) {
      const int64_t last = seq_len - tq + i;                 // causal: positions [0, last]
      const float* qh = qf.data() + (i * h + hi) * (p + r);  // [P+R]
      float m = kNegInf;
      for (int64_t j = 0; j <= last; ++j) {
        const float* k_nope = kv.data() + j * (p + v);      // [P]
        const float* k_pe = rows.data() + j * (l + r) + l;  // [R]
        const float s = (dot(qh, k_nope, p) + dot(qh + p, k_pe, r)) * scale;
        scores[static_cast<size_t>(j)] = s;
        m = std::max(m, s);
      }
      float* dst = out.data<float>() + i * h * v + hi * v;  // [V]
      float sum = 0.0f;
      for (int64_t j = 0; j <= last; ++j) {
        const float e = std::exp(scores[static_cast<size_t>(j)] - m);
        sum += e;
        axpy(e, kv.data() + j * (p + v) + p, dst, v);
      }
      for (int64_t vi = 0; vi < v; ++vi) dst[vi] /= sum;
    }
  }
  return out;
}

// ---- the mixed-batch op ---------------------------------------------------------------------
Tensor mla_attention_f32(const Tensor& q, const Tensor& kv_c_normed, const Tensor& k_pe,
                         Tensor& kv_cache, const AttentionMetadata& meta, const MlaLayerWeights& w,
                         const MlaConfig& cfg, int64_t n) {
  cfg.validate();
  const int64_t h = cfg.num_heads, p = cfg.qk_nope_dim, r = cfg.qk_rope_dim;
  const int64_t v = cfg.v_head_dim, l = cfg.kv_lora_rank;
  check_bf16(q, "q", 3);
  const int64_t t_pad = q.dim(0);
  check_shape(q, "q", {t_pad, h, p + r});
  check_shape(kv_c_normed, "kv_c_normed", {t_pad, l});
  check_shape(k_pe, "k_pe", {t_pad, 1, r});
  check_cache(kv_cache, l, r);
  MLAFUSE_CHECK(meta.page_size == kv_cache.dim(1), "metadata page_size ", meta.page_size,
                " differs from kv_cache ", kv_cache.str(), " (page size is dim 1)");
  detail::check_token_count(n, t_pad, "q");
  MLAFUSE_CHECK(meta.num_decodes >= 0 && meta.num_decode_tokens >= 0 && meta.num_prefills >= 0 &&
                    meta.num_prefill_tokens >= 0,
                "metadata counts must be >= 0 (num_decodes ", meta.num_decodes,
                ", num_decode_tokens ", meta.num_decode_tokens, ", num_prefills ",
                meta.num_prefills, ", num_prefill_tokens ", meta.num_prefill_tokens, ")");
  MLAFUSE_CHECK(meta.num_tokens() == n, "metadata describes ", meta.num_tokens(), " tokens (",
                meta.num_decode_tokens, " decode + ", meta.num_prefill_tokens,
                " prefill) but the real token count n is ", n);
  const int64_t num_seqs = meta.num_seqs();
  check_i32(meta.seq_lens, "seq_lens", 1);
  check_shape(meta.seq_lens, "seq_lens", {num_seqs});
  check_i32(meta.query_start_loc, "query_start_loc", 1);
  check_shape(meta.query_start_loc, "query_start_loc", {num_seqs + 1});
  check_i32(meta.block_table, "block_table", 2);
  MLAFUSE_CHECK(meta.block_table.dim(0) == num_seqs, "tensor block_table ", meta.block_table.str(),
                ": expected ", num_seqs, " rows (one per sequence)");
  check_shape(w.w_uk_t, "w_uk_t", {h, p, l});
  check_shape(w.w_uv, "w_uv", {h, l, v});
  if (meta.num_prefills > 0 && w.kv_b_proj_fp8.empty()) {
    check_shape(w.kv_b_proj, "kv_b_proj", {h * (p + v), l});
  }

  const int32_t* qsl = meta.query_start_loc.data<int32_t>();  // [num_seqs + 1]
  const int32_t* lens = meta.seq_lens.data<int32_t>();        // [num_seqs]
  MLAFUSE_CHECK(qsl[0] == 0, "query_start_loc[0] = ", qsl[0], "; expected 0");
  for (int64_t i = 0; i < num_seqs; ++i) {
    const int64_t qlen = static_cast<int64_t>(qsl[i + 1]) - qsl[i];  // no int32 wrap
    if (i < meta.num_decodes && lens[i] == 0) {  // a padding decode: one query token or none
      MLAFUSE_CHECK(qlen == 0 || qlen == 1, "padding decode sequence ", i, " (seq_lens 0) has ",
                    qlen, " query tokens (query_start_loc); expected 0 or 1");
    } else if (i < meta.num_decodes) {
      MLAFUSE_CHECK(qlen >= 1, "decode sequence ", i, " has ", qlen,
                    " query tokens (query_start_loc must increase)");
      MLAFUSE_CHECK(lens[i] >= qlen, "seq_lens[", i, "] = ", lens[i], " is shorter than its ", qlen,
                    " query tokens");
    } else {
      MLAFUSE_CHECK(qlen >= 1, "prefill sequence ", i, " has ", qlen,
                    " query tokens (query_start_loc must increase)");
      MLAFUSE_CHECK(lens[i] >= qlen, "seq_lens[", i, "] = ", lens[i], " is shorter than its ", qlen,
                    " query tokens");
    }
  }
  MLAFUSE_CHECK(qsl[meta.num_decodes] == meta.num_decode_tokens, "query_start_loc[",
                meta.num_decodes, "] = ", qsl[meta.num_decodes], "; expected num_decode_tokens ",
                meta.num_decode_tokens);
  MLAFUSE_CHECK(qsl[num_seqs] == n, "query_start_loc[", num_seqs, "] = ", qsl[num_seqs],
                "; expected the token count ", n);

  cache_write(kv_c_normed, k_pe, meta.slot_mapping, n, kv_cache);

  Tensor out = Tensor::empty(DType::kF32, {t_pad, h * v});
  const int64_t nd = meta.num_decode_tokens;
  if (nd > 0) {
    // Per decode token: its sequence's block-table row and its causal length (a decode token
    // sees its sequence up to its own position; the last token sees all of it).
    const int64_t cols = meta.block_table.dim(1);
    Tensor token_lens = Tensor::empty(DType::kI32, {nd});
    Tensor token_pages = Tensor::empty(DType::kI32, {nd, cols});
    for (int64_t s = 0; s < meta.num_decodes; ++s) {
      for (int64_t t = qsl[s]; t < qsl[s + 1]; ++t) {
        token_lens.data<int32_t>()[t] = static_cast<int32_t>(lens[s] - (qsl[s + 1] - 1 - t));
        std::copy_n(meta.block_table.data<int32_t>() + s * cols, cols,
                    token_pages.data<int32_t>() + t * cols);
      }
    }
    const Tensor q_cat = mla_absorb_q(slice_rows(q, 0, nd), w.w_uk_t);  // [nd, H, L+R] bf16
    const Tensor o_lat = mla_decode_latent(q_cat, kv_cache, token_pages, token_lens, l,
                                           cfg.scale());  // [nd, H, L]
    const Tensor o = mla_up_proj(o_lat, w.w_uv, true);    // [nd, H*V]
    std::copy(o.data<float>(), o.data<float>() + nd * h * v, out.data<float>());
  }
  for (int64_t i = meta.num_decodes; i < num_seqs; ++i) {
    const Tensor o = mla_prefill_expanded(slice_rows(q, qsl[i], qsl[i + 1]), kv_cache,
                                          meta.block_table, i, lens[i], w.kv_b_proj, cfg, true,
                                          w.kv_b_proj_fp8);
    std::copy(o.data<float>(), o.data<float>() + o.numel(), out.data<float>() + qsl[i] * h * v);
  }
  return out;
}

}  // namespace mlafuse::ref
