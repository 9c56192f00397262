// Reference o_proj consumers (SPEC 7): block-scaled FP8 GEMM and the NVFP4 variant, f32
// accumulation in a fixed order, bf16 out.
#include <vector>

#include "mlafuse/backends/cpu/reference.h"
#include "mlafuse/quant/codecs.h"
#include "mlafuse/quant/scale_layout.h"
#include "ref_util.h"

namespace mlafuse::ref {

namespace {

using detail::check_bytes;
using detail::check_contiguous;
using detail::check_host;

struct WeightDims {
  int64_t n = 0, k = 0;
};

// wq [N, K] e4m3 and its [ceil(N/128), ceil(K/128)] f32 block scales.
WeightDims check_weight(const Tensor& wq, const Tensor& ws, int64_t k) {
  check_bytes(wq, "wq", DType::kFp8E4M3);
  check_rank(wq, "wq", 2);
  check_contiguous(wq, "wq");
  MLAFUSE_CHECK(wq.dim(1) == k, "tensor wq ", wq.str(), ": expected K = ", k,
                " columns to match the activations");
  const int64_t n = wq.dim(0);
  check_host(ws, "ws");
  check_dtype(ws, "ws", DType::kF32);
  check_shape(ws, "ws", {ceil_div(n, 128), ceil_div(k, 128)});
  check_contiguous(ws, "ws");
  return {n, k};
}

// y[t, o] = sum_k a[t, k] * (Wq[o, k] * Ws[o/128, k/128]) for t < n; a: [n, K] dequantized
// activations. Each weight row is dequantized once and dotted with every activation row.
Tensor gemm_dequant_weight(const std::vector<float>& a, int64_t n, int64_t t_pad, const Tensor& wq,
                           const Tensor& ws, WeightDims d) {
  const auto& lut = e4m3_decode_table();
  const uint8_t* w = wq.data<uint8_t>();  // [N, K] e4m3
  const float* wsd = ws.data<float>();    // [ceil(N/128), ceil(K/128)]
  const int64_t ws_cols = ceil_div(d.k, 128);
  Tensor y = Tensor::empty(DType::kBF16, {t_pad, d.n});
  uint16_t* yd = y.data<uint16_t>();  // [T_pad, N] bf16
  std::vector<float> b(static_cast<size_t>(d.k));
  for (int64_t o = 0; o < d.n; ++o) {
    const uint8_t* wrow = w + o * d.k;
    const float* srow = wsd + (o / 128) * ws_cols;
    for (int64_t kk = 0; kk < d.k; ++kk)
      b[static_cast<size_t>(kk)] = lut[wrow[kk]] * srow[kk / 128];
    for (int64_t t = 0; t < n; ++t) {
      yd[t * d.n + o] = f32_to_bf16_bits(detail::dot(a.data() + t * d.k, b.data(), d.k));
    }
  }
  return y;
}

}  // namespace

Tensor linear_fp8_block(const Tensor& xq, const Tensor& xs, const Tensor& wq, const Tensor& ws,
                        int64_t n) {
  check_bytes(xq, "xq", DType::kFp8E4M3);
  check_rank(xq, "xq", 2);
  check_contiguous(xq, "xq");
  const int64_t t_pad = xq.dim(0), k = xq.dim(1);
  detail::check_token_count(n, t_pad, "xq");
  check_host(xs, "xs");
  check_dtype(xs, "xs", DType::kF32);
  const WeightDims d = check_weight(wq, ws, k);

  // xs: a per-tensor [1] scale, or [T_pad, K/G] group scales with any strides.
  const bool per_tensor = xs.rank() == 1 && xs.dim(0) == 1;
  int64_t g = 0;
  if (!per_tensor) {
    MLAFUSE_CHECK(xs.rank() == 2 && xs.dim(0) == t_pad && xs.dim(1) > 0 && k % xs.dim(1) == 0,
                  "tensor xs ", xs.str(), ": expected [1] (per-tensor) or [", t_pad,
                  ", K/G] group scales with K = ", k);
    g = k / xs.dim(1);
    MLAFUSE_CHECK(g == 128 || g == 64, "tensor xs ", xs.str(), ": group size K/", xs.dim(1), " = ",
                  g, "; expected 128 or 64");
  }
  const auto& lut = e4m3_decode_table();
  const uint8_t* x = xq.data<uint8_t>();  // [T_pad, K] e4m3
  const float* s = xs.data<float>();
  std::vector<float> a(static_cast<size_t>(n * k));  // [n, K] dequantized activations
  for (int64_t t = 0; t < n; ++t) {
    for (int64_t kk = 0; kk < k; ++kk) {
      const float sc = per_tensor ? s[0] : s[t * xs.strides()[0] + (kk / g) * xs.strides()[1]];
      a[static_cast<size_t>(t * k + kk)] = lut[x[t * k + kk]] * sc;
    }
  }
  return gemm_dequant_weight(a, n, t_pad, wq, ws, d);
}

Tensor linear_nvfp4(const Tensor& xq, const Tensor& sf, const Tensor& global_scale,
                    const Tensor& wq, const Tensor& ws, int64_t n) {
  check_bytes(xq, "xq", DType::kFp4E2M1x2);
  check_rank(xq, "xq", 2);
  check_contiguous(xq, "xq");
  const int64_t t_pad = xq.dim(0), k = xq.dim(1) * 2;
  detail::check_token_count(n, t_pad, "xq");
  MLAFUSE_CHECK(k % 16 == 0, "tensor xq ", xq.str(), ": K = ", k,
                " (two values a byte) must be a multiple of 16");
  const Nvfp4ScaleLayout layout{t_pad, k};
  check_bytes(sf, "sf", DType::kFp8E4M3);
  check_shape(sf, "sf", {layout.padded_rows(), layout.padded_cols()});
  check_contiguous(sf, "sf");
  const float gs = detail::scalar_scale(global_scale, "global_scale");
  const WeightDims d = check_weight(wq, ws, k);

  const auto& lut = e4m3_decode_table();
  const uint8_t* x = xq.data<uint8_t>();    // [T_pad, K/2] e2m1x2
  const uint8_t* sfd = sf.data<uint8_t>();  // swizzled e4m3 block scales
  std::vector<float> a(static_cast<size_t>(n * k));
  for (int64_t t = 0; t < n; ++t) {
    for (int64_t kk = 0; kk < k; ++kk) {
      const uint8_t byte = x[t * (k / 2) + kk / 2];
      const uint8_t code = (kk % 2) ? (byte >> 4) : (byte & 0xf);
      // SPEC 3.3 dequant: e2m1(q) * float(sf) / GS.
      a[static_cast<size_t>(t * k + kk)] =
          e2m1_to_f32(code) * lut[sfd[layout.offset(t, kk / 16)]] / gs;
    }
  }
  return gemm_dequant_weight(a, n, t_pad, wq, ws, d);
}

}  // namespace mlafuse::ref
