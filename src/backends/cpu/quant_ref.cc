// Reference quantizers (SPEC 3.1-3.3, padded batches SPEC 6): literal per-element loops.
#include <cmath>
#include <limits>
#include <vector>

#include "mlafuse/backends/cpu/reference.h"
#include "mlafuse/quant/codecs.h"
#include "mlafuse/quant/scale_layout.h"
#include "ref_util.h"

namespace mlafuse::ref {

namespace {

using detail::check_activation;
using detail::check_bytes;
using detail::check_contiguous;
using detail::check_host;
using detail::check_token_count;

// e4m3(clamp(v, -448, 448)) for the quotient v computed from input element x; +-Inf clamps to
// +-448. NaN codes follow one explicit rule, so they do not depend on how a platform signs the NaN
// an invalid operation makes (x86: negative, NVIDIA GPUs: positive): a NaN input element keeps its
// sign (sign | 0x7f); a NaN made by the arithmetic from a non-NaN element (inf / inf when an Inf
// set the group scale) is 0xff. The CUDA quant epilogue (fp8_nan_code) uses the same rule.
uint8_t encode_fp8(float v, float x) {
  if (std::isnan(v)) return std::isnan(x) ? (std::signbit(x) ? 0xff : 0x7f) : 0xff;
  if (v > kFp8E4M3Max) v = kFp8E4M3Max;
  if (v < -kFp8E4M3Max) v = -kFp8E4M3Max;
  return f32_to_e4m3(v);
}

void check_codes_out(const Tensor& q, const char* name, DType coded, int64_t rows, int64_t cols) {
  check_bytes(q, name, coded);
  check_shape(q, name, {rows, cols});
  check_contiguous(q, name);
}

// The scale view must have the strides GroupScaleLayout gives for the flags (a dim of extent 1
// may carry any stride), so a layout mix-up between a caller and the op is an error, not garbage.
void check_group_scales(const Tensor& s, int64_t t_pad, int64_t groups, const Fp8GroupParams& p) {
  check_host(s, "s");
  check_dtype(s, "s", DType::kF32);
  check_shape(s, "s", {t_pad, groups});
  const GroupScaleLayout layout{t_pad, groups, p.col_major, p.tma_aligned};
  const int64_t want[2] = {layout.token_stride(), layout.group_stride()};
  for (size_t d = 0; d < 2; ++d) {
    MLAFUSE_CHECK(
        s.dim(d) <= 1 || s.strides()[d] == want[d], "tensor s ", s.str(), " has strides ",
        shape_str(s.strides()), "; the ",
        p.col_major ? (p.tma_aligned ? "col_major tma_aligned" : "col_major") : "row_major",
        " scale layout for ", t_pad, " tokens needs strides ", shape_str({want[0], want[1]}));
  }
}

// amax folded with |x|, every NaN skipped (SPEC 3). Not std::fmax: glibc's returns NaN for a
// signalling NaN operand, which then restarts the fold (CUDA's fmaxf skips every NaN).
inline float fold_amax(float amax, float x) {
  const float a = std::fabs(x);
  return a > amax ? a : amax;
}

// One row of x in f32, sized only when there is a row to hold: an empty x [0, D] is valid input
// and its D may be far more than is worth allocating (the data's size bounds D only when T > 0).
std::vector<float> row_buffer(int64_t rows, int64_t d) {
  return std::vector<float>(rows > 0 ? static_cast<size_t>(d) : 0);
}

}  // namespace

void quant_fp8_static(const Tensor& x, int64_t n, const Tensor& scale, Tensor& q) {
  check_activation(x, "x", 2);
  const int64_t t_pad = x.dim(0);
  const int64_t d = x.dim(1);
  check_token_count(n, t_pad, "x");
  const float s = detail::scalar_scale(scale, "scale");
  check_codes_out(q, "q", DType::kFp8E4M3, t_pad, d);

  const float inv = 1.0f / s;  // once, in f32 (SPEC 3.1)
  std::vector<float> row = row_buffer(n, d);
  uint8_t* q_data = q.data<uint8_t>();  // [T_pad, D] e4m3
  for (int64_t t = 0; t < n; ++t) {
    detail::load_span_f32(x, t * d, d, row.data());
    for (int64_t i = 0; i < d; ++i) q_data[t * d + i] = encode_fp8(row[i] * inv, row[i]);
  }
}

void quant_fp8_group(const Tensor& x, int64_t n, const Fp8GroupParams& p, Tensor& q, Tensor& s) {
  check_activation(x, "x", 2);
  const int64_t t_pad = x.dim(0);
  const int64_t d = x.dim(1);
  check_token_count(n, t_pad, "x");
  const int64_t g = p.group_size;
  MLAFUSE_CHECK(g > 0 && g % 16 == 0 && d % g == 0, "quant_fp8_group: group_size ", g,
                " must be a positive multiple of 16 dividing the last dim of x ", x.str());
  // eps / 448 must stay a normal f32: a smaller one rounds to 0 or a subnormal, and an all-zero
  // group then divides 0 by 0 (NaN codes) or x / s overflows.
  MLAFUSE_CHECK(std::isfinite(p.eps) && p.eps / kFp8E4M3Max >= std::numeric_limits<float>::min(),
                "quant_fp8_group: eps ", p.eps, " must be finite and at least 448 * FLT_MIN = ",
                kFp8E4M3Max * std::numeric_limits<float>::min(),
                " (it keeps all-zero groups from dividing by 0)");
  const int64_t groups = d / g;
  check_codes_out(q, "q", DType::kFp8E4M3, t_pad, d);
  check_group_scales(s, t_pad, groups, p);

  std::vector<float> row = row_buffer(n, d);
  uint8_t* q_data = q.data<uint8_t>();  // [T_pad, D] e4m3
  float* s_data = s.data<float>();      // logical [T_pad, D/G], strides from the layout
  const int64_t s_tok = s.strides()[0];
  const int64_t s_grp = s.strides()[1];
  for (int64_t t = 0; t < n; ++t) {
    detail::load_span_f32(x, t * d, d, row.data());
    for (int64_t j = 0; j < groups; ++j) {
      const float* xg = row.data() + j * g;
      float amax = 0.0f;
      for (int64_t i = 0; i < g; ++i) amax = fold_amax(amax, xg[i]);
      amax = std::fmax(amax, p.eps);
      float sc = amax / kFp8E4M3Max;
      if (p.ue8m0) sc = round_up_pow2(sc);
      uint8_t* qg = q_data + t * d + j * g;
      for (int64_t i = 0; i < g; ++i) qg[i] = encode_fp8(xg[i] / sc, xg[i]);
      s_data[t * s_tok + j * s_grp] = sc;
    }
  }
}

void quant_nvfp4(const Tensor& x, int64_t n, const Tensor& global_scale, Tensor& q, Tensor& sf) {
  check_activation(x, "x", 2);
  const int64_t t_pad = x.dim(0);
  const int64_t d = x.dim(1);
  check_token_count(n, t_pad, "x");
  MLAFUSE_CHECK(d % 16 == 0, "quant_nvfp4: the last dim of x ", x.str(),
                " must be a multiple of 16 (one e4m3 block scale per 16 elements)");
  const float gs = detail::scalar_scale(global_scale, "global_scale");
  check_codes_out(q, "q", DType::kFp4E2M1x2, t_pad, d / 2);
  const Nvfp4ScaleLayout layout{t_pad, d};
  check_codes_out(sf, "sf", DType::kFp8E4M3, layout.padded_rows(), layout.padded_cols());

  const int64_t blocks = d / 16;
  std::vector<float> row = row_buffer(n, d);
  uint8_t* q_data = q.data<uint8_t>();    // [T_pad, D/2] e2m1x2
  uint8_t* sf_data = sf.data<uint8_t>();  // [round_up(T_pad,128), round_up(D/16,4)] swizzled e4m3
  for (int64_t t = 0; t < n; ++t) {
    detail::load_span_f32(x, t * d, d, row.data());
    for (int64_t b = 0; b < blocks; ++b) {
      const float* xb = row.data() + b * 16;
      float amax = 0.0f;
      for (int64_t i = 0; i < 16; ++i) amax = fold_amax(amax, xb[i]);
      const uint8_t code = f32_to_e4m3(gs * amax / kFp4E2M1Max);
      const float sf_value = e4m3_to_f32(code);
      const float out_scale = sf_value == 0.0f ? 0.0f : gs / sf_value;
      uint8_t* qb = q_data + t * (d / 2) + b * 8;
      for (int64_t i = 0; i < 8; ++i) {
        qb[i] = pack_e2m1x2(xb[2 * i] * out_scale, xb[2 * i + 1] * out_scale);
      }
      sf_data[layout.offset(t, b)] = code;
    }
    // Padding scale columns of a real row.
    for (int64_t k = blocks; k < layout.padded_cols(); ++k) sf_data[layout.offset(t, k)] = 0;
  }
  // Padding rows up to the next multiple of 128 (GEMMs read whole 128-row tiles).
  for (int64_t t = n; t < round_up(n, 128); ++t) {
    for (int64_t k = 0; k < layout.padded_cols(); ++k) sf_data[layout.offset(t, k)] = 0;
  }
}

void quantize_output(const OutputQuant& quant, const Tensor& x, int64_t n, const Tensor& scale,
                     Tensor& q, Tensor& block_scale) {
  const OutputFormatInfo& format = quant.info();
  MLAFUSE_CHECK(format.key.has_value(), "quantize_output: format ", format.name,
                " has nothing to quantize");
  // Group FP8 of any group size the table has: one quantizer with the descriptor's layout.
  if (format.group_fp8()) {
    Fp8GroupParams p;
    p.group_size = quant.group_size();
    p.ue8m0 = quant.ue8m0;
    p.col_major = quant.col_major();
    p.tma_aligned = quant.tma_aligned();
    quant_fp8_group(x, n, p, q, block_scale);
  } else if (*format.key == kFp8StaticTensorSym) {
    quant_fp8_static(x, n, scale, q);
  } else if (*format.key == kNvfp4Dynamic) {
    quant_nvfp4(x, n, scale, q, block_scale);
  } else {
    MLAFUSE_FAIL("quantize_output: no reference quantizer for ", format.name, " (",
                 format.key->str(), ")");
  }
}

}  // namespace mlafuse::ref
