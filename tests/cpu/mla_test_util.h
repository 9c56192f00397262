// Builders and double-precision oracles for the MLA reference tests: random bf16 weights split
// per reference.h, a paged cache with permuted pages and poison, and SPEC 4 attention computed
// naively in double (expanded and absorbed forms, independent of the code under test).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <numeric>
#include <random>
#include <utility>
#include <vector>

#include "mlafuse/backends/backend.h"
#include "mlafuse/core/mla_config.h"
#include "mlafuse/core/tensor.h"
#include "mlafuse/quant/codecs.h"
#include "mlafuse/quant/scale_layout.h"

namespace mlafuse::testing {

inline Tensor random_bf16(std::vector<int64_t> shape, uint32_t seed, float stddev) {
  Tensor t = Tensor::empty(DType::kBF16, std::move(shape));
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(0.0f, stddev);
  for (int64_t i = 0; i < t.numel(); ++i) t.data<uint16_t>()[i] = f32_to_bf16_bits(nd(rng));
  return t;
}

inline double bf(const Tensor& t, int64_t i) { return bf16_bits_to_f32(t.data<uint16_t>()[i]); }

// W_UK_T and W_UV copied out of kv_b_proj [H*(P+V), L] as reference.h defines them.
inline MlaLayerWeights split_kv_b_proj(const Tensor& kv_b_proj, const MlaConfig& c) {
  const int64_t h = c.num_heads, p = c.qk_nope_dim, v = c.v_head_dim, l = c.kv_lora_rank;
  MlaLayerWeights w;
  w.kv_b_proj = kv_b_proj;
  w.w_uk_t = Tensor::empty(DType::kBF16, {h, p, l});
  w.w_uv = Tensor::empty(DType::kBF16, {h, l, v});
  const uint16_t* src = kv_b_proj.data<uint16_t>();
  for (int64_t hh = 0; hh < h; ++hh) {
    for (int64_t pp = 0; pp < p; ++pp) {
      for (int64_t ll = 0; ll < l; ++ll) {
        w.w_uk_t.data<uint16_t>()[(hh * p + pp) * l + ll] = src[(hh * (p + v) + pp) * l + ll];
      }
    }
    for (int64_t vv = 0; vv < v; ++vv) {
      for (int64_t ll = 0; ll < l; ++ll) {
        w.w_uv.data<uint16_t>()[(hh * l + ll) * v + vv] = src[(hh * (p + v) + p + vv) * l + ll];
      }
    }
  }
  return w;
}

inline MlaLayerWeights random_weights(const MlaConfig& c, uint32_t seed) {
  const float stddev = 1.0f / std::sqrt(static_cast<float>(c.kv_lora_rank));
  return split_kv_b_proj(
      random_bf16({c.num_heads * (c.qk_nope_dim + c.v_head_dim), c.kv_lora_rank}, seed, stddev), c);
}

constexpr int32_t kHugePage = 1 << 30;  // unused block-table slots: must never be read

// A paged cache holding `lens[b]` latent rows per sequence (rows[b][j], bf16 values) at randomly
// permuted pages. With poison: NaN in every cache row no sequence owns (incl. past each end),
// huge page ids in unused block-table slots.
struct PagedCache {
  Tensor kv_cache;                          // [num_pages, page_size, row] bf16
  Tensor block_table;                       // [B, max_pages] i32
  Tensor seq_lens;                          // [B] i32
  std::vector<std::vector<uint16_t>> rows;  // per sequence: [len, row] bf16 bits
  int64_t page_size = 0;
  int64_t row = 0;
};

inline PagedCache make_paged(const std::vector<int64_t>& lens, int64_t page_size, int64_t row,
                             uint32_t seed, int64_t extra_pages = 3, int64_t spare_slots = 2) {
  PagedCache pc;
  pc.page_size = page_size;
  pc.row = row;
  const int64_t b = static_cast<int64_t>(lens.size());
  int64_t pages = extra_pages, max_pages = 1;
  for (int64_t len : lens) {
    pages += ceil_div(len, page_size);
    max_pages = std::max(max_pages, ceil_div(len, page_size));
  }
  max_pages += spare_slots;
  std::mt19937 rng(seed);
  std::vector<int32_t> perm(static_cast<size_t>(pages));
  std::iota(perm.begin(), perm.end(), 0);
  std::shuffle(perm.begin(), perm.end(), rng);
  pc.kv_cache = Tensor::empty(DType::kBF16, {pages, page_size, row});
  const uint16_t nan_bits = f32_to_bf16_bits(std::numeric_limits<float>::quiet_NaN());
  std::fill(pc.kv_cache.data<uint16_t>(), pc.kv_cache.data<uint16_t>() + pc.kv_cache.numel(),
            nan_bits);
  pc.block_table = Tensor::empty(DType::kI32, {b, max_pages});
  pc.seq_lens = Tensor::empty(DType::kI32, {b});
  std::normal_distribution<float> nd(0.0f, 1.0f);
  size_t next = 0;
  for (int64_t s = 0; s < b; ++s) {
    const int64_t len = lens[static_cast<size_t>(s)];
    pc.seq_lens.data<int32_t>()[s] = static_cast<int32_t>(len);
    int32_t* bt = pc.block_table.data<int32_t>() + s * max_pages;
    for (int64_t k = 0; k < max_pages; ++k) bt[k] = kHugePage;
    for (int64_t k = 0; k < ceil_div(len, page_size); ++k) bt[k] = perm[next++];
    std::vector<uint16_t> r(static_cast<size_t>(len * row));
    for (auto& x : r) x = f32_to_bf16_bits(nd(rng));
    for (int64_t j = 0; j < len; ++j) {
      uint16_t* dst =
          pc.kv_cache.data<uint16_t>() + (bt[j / page_size] * page_size + j % page_size) * row;
      std::copy(r.begin() + j * row, r.begin() + (j + 1) * row, dst);
    }
    pc.rows.push_back(std::move(r));
  }
  return pc;
}

// ---- double-precision oracles (SPEC 4) ------------------------------------------------------
// One query head of the expanded form over latent rows [0, last]: q [P+R] (values), rows
// [*, L+R] bf16 bits, kv_b_proj bf16. Returns out [V] in double.
inline std::vector<double> to_double(const Tensor& bf16) {
  std::vector<double> v(static_cast<size_t>(bf16.numel()));
  for (int64_t i = 0; i < bf16.numel(); ++i) v[static_cast<size_t>(i)] = bf(bf16, i);
  return v;
}

// kv_b_proj: the [H*(P+V), L] weight as doubles (to_double).
inline std::vector<double> oracle_expanded(const std::vector<double>& q,
                                           const std::vector<uint16_t>& rows, int64_t last,
                                           const std::vector<double>& kv_b_proj, int64_t head,
                                           const MlaConfig& c) {
  const int64_t p = c.qk_nope_dim, r = c.qk_rope_dim, v = c.v_head_dim, l = c.kv_lora_rank;
  const double scale = c.scale();
  std::vector<double> scores(static_cast<size_t>(last + 1));
  std::vector<std::vector<double>> vals(static_cast<size_t>(last + 1));
  double m = -std::numeric_limits<double>::infinity();
  for (int64_t j = 0; j <= last; ++j) {
    const uint16_t* cj = rows.data() + j * (l + r);
    double s = 0;
    std::vector<double> vj(static_cast<size_t>(v), 0.0);
    for (int64_t o = 0; o < p + v; ++o) {
      double x = 0;
      const double* wrow = kv_b_proj.data() + (head * (p + v) + o) * l;
      for (int64_t i = 0; i < l; ++i) x += wrow[i] * bf16_bits_to_f32(cj[i]);
      if (o < p) {
        s += q[static_cast<size_t>(o)] * x;
      } else {
        vj[static_cast<size_t>(o - p)] = x;
      }
    }
    for (int64_t i = 0; i < r; ++i)
      s += q[static_cast<size_t>(p + i)] * bf16_bits_to_f32(cj[l + i]);
    scores[static_cast<size_t>(j)] = s * scale;
    vals[static_cast<size_t>(j)] = std::move(vj);
    m = std::max(m, s * scale);
  }
  std::vector<double> out(static_cast<size_t>(v), 0.0);
  double sum = 0;
  for (int64_t j = 0; j <= last; ++j) {
    const double e = std::exp(scores[static_cast<size_t>(j)] - m);
    sum += e;
    for (int64_t i = 0; i < v; ++i)
      out[static_cast<size_t>(i)] += e * vals[static_cast<size_t>(j)][static_cast<size_t>(i)];
  }
  for (auto& x : out) x = sum > 0 ? x / sum : 0.0;
  return out;
}

// The absorbed form in double over latent rows [0, len): q_cat [L+R] values. Returns o_lat [L]
// and the log-sum-exp of the scaled scores.
inline std::vector<double> oracle_latent(const std::vector<double>& q_cat,
                                         const std::vector<uint16_t>& rows, int64_t len,
                                         int64_t latent, int64_t row, double scale, double* lse) {
  std::vector<double> o(static_cast<size_t>(latent), 0.0);
  if (len == 0) {
    *lse = -std::numeric_limits<double>::infinity();
    return o;
  }
  std::vector<double> s(static_cast<size_t>(len));
  double m = -std::numeric_limits<double>::infinity();
  for (int64_t j = 0; j < len; ++j) {
    double acc = 0;
    for (int64_t i = 0; i < row; ++i) {
      acc +=
          q_cat[static_cast<size_t>(i)] * bf16_bits_to_f32(rows[static_cast<size_t>(j * row + i)]);
    }
    s[static_cast<size_t>(j)] = acc * scale;
    m = std::max(m, acc * scale);
  }
  double sum = 0;
  for (int64_t j = 0; j < len; ++j) {
    const double e = std::exp(s[static_cast<size_t>(j)] - m);
    sum += e;
    for (int64_t i = 0; i < latent; ++i) {
      o[static_cast<size_t>(i)] += e * bf16_bits_to_f32(rows[static_cast<size_t>(j * row + i)]);
    }
  }
  for (auto& x : o) x /= sum;
  *lse = m + std::log(sum);
  return o;
}

// A mixed step (decodes first, then prefills) over a paged cache holding each sequence's earlier
// context; the rows the step writes are NaN in the cache beforehand, padded token rows are NaN.
struct MixedBatch {
  MlaConfig cfg;
  MlaLayerWeights w;
  std::vector<double> kv_b_proj;  // w.kv_b_proj as doubles, for the oracle
  int64_t n = 0, t_pad = 0;
  Tensor q;            // [T_pad, H, P+R] bf16
  Tensor kv_c_normed;  // [T_pad, L] bf16
  Tensor k_pe;         // [T_pad, 1, R] bf16
  PagedCache pc;       // cache before the step; pc.rows are the full sequences after it
  AttentionMetadata meta;
  std::vector<int64_t> token_seq, token_pos;  // per real token: its sequence and position
};

// decode_lens: length after the step (0 = a padded decode: one token, slot -1, output 0), each
// decode holding decode_query_len query tokens (MTP when > 1); prefills: (query length, earlier
// context).
inline MixedBatch make_mixed(const MlaConfig& cfg, const std::vector<int64_t>& decode_lens,
                             const std::vector<std::pair<int64_t, int64_t>>& prefills,
                             int64_t pad_tokens, uint32_t seed, int64_t decode_query_len = 1) {
  MixedBatch mb;
  mb.cfg = cfg;
  mb.w = random_weights(cfg, seed + 1);
  mb.kv_b_proj = to_double(mb.w.kv_b_proj);
  std::vector<int64_t> lens = decode_lens;
  for (const auto& [ql, ctx] : prefills) lens.push_back(ql + ctx);
  const int64_t row = cfg.cache_row(), l = cfg.kv_lora_rank, r = cfg.qk_rope_dim;
  mb.pc = make_paged(lens, cfg.page_size, row, seed + 2);
  const int64_t nd = static_cast<int64_t>(decode_lens.size());
  const int64_t np = static_cast<int64_t>(prefills.size());
  std::vector<int32_t> qsl = {0};
  for (int64_t i = 0; i < nd; ++i) {
    const int64_t len = decode_lens[static_cast<size_t>(i)];
    const int64_t q = len == 0 ? 1 : decode_query_len;
    qsl.push_back(qsl.back() + static_cast<int32_t>(q));
    for (int64_t j = 0; j < q; ++j) {
      mb.token_seq.push_back(i);
      mb.token_pos.push_back(len - q + j);  // -1: padded decode
    }
  }
  const int64_t decode_tokens = qsl.back();
  for (int64_t i = 0; i < np; ++i) {
    const auto [ql, ctx] = prefills[static_cast<size_t>(i)];
    qsl.push_back(qsl.back() + static_cast<int32_t>(ql));
    for (int64_t j = 0; j < ql; ++j) {
      mb.token_seq.push_back(nd + i);
      mb.token_pos.push_back(ctx + j);
    }
  }
  mb.n = qsl.back();
  mb.t_pad = mb.n + pad_tokens;
  mb.q = random_bf16({mb.t_pad, cfg.num_heads, cfg.qk_head_dim()}, seed + 3, 1.0f);
  mb.kv_c_normed = Tensor::empty(DType::kBF16, {mb.t_pad, l});
  mb.k_pe = Tensor::empty(DType::kBF16, {mb.t_pad, 1, r});
  const uint16_t nan_bits = f32_to_bf16_bits(std::numeric_limits<float>::quiet_NaN());
  for (Tensor* t : {&mb.kv_c_normed, &mb.k_pe}) {
    std::fill(t->data<uint16_t>(), t->data<uint16_t>() + t->numel(), nan_bits);
  }
  for (int64_t t = mb.n; t < mb.t_pad; ++t) {
    std::fill(mb.q.data<uint16_t>() + t * cfg.num_heads * cfg.qk_head_dim(),
              mb.q.data<uint16_t>() + (t + 1) * cfg.num_heads * cfg.qk_head_dim(), nan_bits);
  }
  AttentionMetadata& m = mb.meta;
  m.num_decodes = nd;
  m.num_decode_tokens = decode_tokens;
  m.num_prefills = np;
  m.num_prefill_tokens = mb.n - decode_tokens;
  m.page_size = cfg.page_size;
  m.seq_lens = mb.pc.seq_lens;
  m.block_table = mb.pc.block_table;
  m.query_start_loc = Tensor::empty(DType::kI32, {nd + np + 1});
  std::copy(qsl.begin(), qsl.end(), m.query_start_loc.data<int32_t>());
  m.slot_mapping = Tensor::empty(DType::kI32, {mb.t_pad});
  std::fill(m.slot_mapping.data<int32_t>(), m.slot_mapping.data<int32_t>() + mb.t_pad, -1);
  const int64_t max_pages = mb.pc.block_table.dim(1);
  for (int64_t t = 0; t < mb.n; ++t) {
    const int64_t s = mb.token_seq[static_cast<size_t>(t)];
    const int64_t pos = mb.token_pos[static_cast<size_t>(t)];
    if (pos < 0) continue;
    const int64_t page = mb.pc.block_table.data<int32_t>()[s * max_pages + pos / cfg.page_size];
    const int64_t slot = page * cfg.page_size + pos % cfg.page_size;
    m.slot_mapping.data<int32_t>()[t] = static_cast<int32_t>(slot);
    // The token carries the row; the cache holds NaN there until the op writes it.
    const uint16_t* src = mb.pc.rows[static_cast<size_t>(s)].data() + pos * row;
    std::copy(src, src + l, mb.kv_c_normed.data<uint16_t>() + t * l);
    std::copy(src + l, src + row, mb.k_pe.data<uint16_t>() + t * r);
    std::fill(mb.pc.kv_cache.data<uint16_t>() + slot * row,
              mb.pc.kv_cache.data<uint16_t>() + (slot + 1) * row, nan_bits);
  }
  return mb;
}

// Expected output row of real token t (double, expanded form over the full sequence rows).
inline std::vector<double> oracle_token(const MixedBatch& mb, int64_t t) {
  const MlaConfig& c = mb.cfg;
  const int64_t s = mb.token_seq[static_cast<size_t>(t)];
  const int64_t pos = mb.token_pos[static_cast<size_t>(t)];
  std::vector<double> out(static_cast<size_t>(c.num_heads * c.v_head_dim), 0.0);
  if (pos < 0) return out;
  for (int64_t h = 0; h < c.num_heads; ++h) {
    std::vector<double> q(static_cast<size_t>(c.qk_head_dim()));
    for (int64_t i = 0; i < c.qk_head_dim(); ++i) {
      q[static_cast<size_t>(i)] = bf(mb.q, (t * c.num_heads + h) * c.qk_head_dim() + i);
    }
    const auto o = oracle_expanded(q, mb.pc.rows[static_cast<size_t>(s)], pos, mb.kv_b_proj, h, c);
    std::copy(o.begin(), o.end(), out.begin() + h * c.v_head_dim);
  }
  return out;
}

// max |got - want| / max(max |want|, floor): the normalized error used for float outputs.
struct ErrStats {
  double max_abs_err = 0;
  double max_abs_ref = 0;
  double normalized(double floor = 1e-30) const {
    return max_abs_err / std::max(max_abs_ref, floor);
  }
  void add(double got, double want) {
    if (std::isnan(got) || std::isnan(want)) {  // std::max would drop a NaN silently
      max_abs_err = std::numeric_limits<double>::infinity();
      return;
    }
    max_abs_err = std::max(max_abs_err, std::fabs(got - want));
    max_abs_ref = std::max(max_abs_ref, std::fabs(want));
  }
};

}  // namespace mlafuse::testing
