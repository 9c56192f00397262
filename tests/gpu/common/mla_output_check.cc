// See mla_output_check.h.
#include "mla_output_check.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "mlafuse/backends/cpu/reference.h"
#include "mlafuse/quant/codecs.h"
#include "mlafuse/quant/scale_layout.h"

namespace mlafuse::gpu_test {

using cuda::MlaEpilogue;
using cuda::MlaOutputParams;
constexpr int kMlaV = 128;

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

void expect_untouched(const std::vector<uint8_t>& bytes, size_t begin, const std::string& what) {
  size_t bad = 0;
  for (size_t i = begin; i < bytes.size(); ++i) bad += bytes[i] != 0xff;
  EXPECT_EQ(bad, 0u) << what << ": " << bad << " bytes written past the real tokens";
}

std::string QuantVariant::name() const {
  std::string s = kind == cuda::MlaEpilogue::kFp8Static     ? "fp8_static"
                  : kind == cuda::MlaEpilogue::kFp8Group128 ? "fp8_group128"
                  : kind == cuda::MlaEpilogue::kFp8Group64  ? "fp8_group64"
                                                            : "nvfp4";
  if (col_major) s += "_col";
  if (ue8m0) s += "_ue8m0";
  if (tma_aligned) s += "_tma";
  return s;
}

std::vector<QuantVariant> all_variants() {
  std::vector<QuantVariant> v{{cuda::MlaEpilogue::kFp8Static}, {cuda::MlaEpilogue::kNvfp4}};
  for (cuda::MlaEpilogue k : {cuda::MlaEpilogue::kFp8Group128, cuda::MlaEpilogue::kFp8Group64})
    for (int f = 0; f < 8; ++f) v.push_back({k, (f & 1) != 0, (f & 2) != 0, (f & 4) != 0});
  return v;
}

void check_quant_variant(const std::function<void(const cuda::MlaOutputParams&)>& run, int heads,
                         int t_pad_i, int n, const std::vector<uint16_t>& out_bf16,
                         const QuantVariant& v) {
  SCOPED_TRACE(v.name());
  const int64_t t_pad = t_pad_i, dim = static_cast<int64_t>(heads) * kMlaV;
  Tensor x = host_tensor(DType::kBF16, {t_pad, dim}, out_bf16.data());
  MlaOutputParams op;
  op.kind = v.kind;
  op.col_major = v.col_major;
  op.ue8m0 = v.ue8m0;
  op.tma_aligned = v.tma_aligned;
  DevBuf scale(4);
  float amax = 0.0f;
  for (int64_t i = 0; i < n * dim; ++i)
    amax = std::max(amax, std::fabs(bf16_bits_to_f32(out_bf16[i])));
  const float scale_v = v.kind == MlaEpilogue::kNvfp4 ? 448.0f * 6.0f / std::max(amax, 1e-6f)
                                                      : std::max(amax, 1e-6f) / 300.0f;
  scale.upload(&scale_v);
  op.scale = scale.as<float>();
  Tensor scale_t = host_tensor(DType::kF32, {1}, &scale_v);

  if (v.kind == MlaEpilogue::kFp8Static) {
    DevBuf q(static_cast<size_t>(t_pad * dim));
    q.poison();
    op.out = q.p;
    run(op);
    std::vector<uint8_t> got(q.bytes);
    q.download(got.data());
    Tensor want = Tensor::empty(DType::kFp8E4M3, {t_pad, dim});
    std::memset(want.raw(), 0xff, q.bytes);
    ref::quant_fp8_static(x, n, scale_t, want);
    EXPECT_EQ(std::memcmp(got.data(), want.raw(), q.bytes), 0) << "static FP8 codes differ";
    return;
  }
  if (v.kind == MlaEpilogue::kNvfp4) {
    Nvfp4ScaleLayout lay{t_pad, dim};
    DevBuf q(static_cast<size_t>(t_pad * dim / 2));
    DevBuf sf(static_cast<size_t>(lay.storage_bytes()));
    q.poison();
    sf.poison();
    op.out = q.p;
    op.nvfp4_scales = sf.as<uint8_t>();
    run(op);
    std::vector<uint8_t> got_q(q.bytes), got_sf(sf.bytes);
    q.download(got_q.data());
    sf.download(got_sf.data());
    Tensor want_q = Tensor::empty(DType::kU8, {t_pad, dim / 2});
    Tensor want_sf = Tensor::empty(DType::kU8, {lay.padded_rows(), lay.padded_cols()});
    std::memset(want_q.raw(), 0xff, q.bytes);
    std::memset(want_sf.raw(), 0xff, sf.bytes);
    ref::quant_nvfp4(x, n, scale_t, want_q, want_sf);
    EXPECT_EQ(std::memcmp(got_q.data(), want_q.raw(), q.bytes), 0) << "NVFP4 codes differ";
    EXPECT_EQ(std::memcmp(got_sf.data(), want_sf.raw(), sf.bytes), 0)
        << "NVFP4 block scales (or their zero padding) differ";
    return;
  }
  const int64_t g = v.kind == MlaEpilogue::kFp8Group128 ? 128 : 64;
  GroupScaleLayout lay{t_pad, dim / g, v.col_major, v.tma_aligned};
  DevBuf q(static_cast<size_t>(t_pad * dim));
  DevBuf s(static_cast<size_t>(lay.storage_numel()) * 4);
  q.poison();
  s.poison();
  op.out = q.p;
  op.group_scales = s.as<float>();
  run(op);
  std::vector<uint8_t> got_q(q.bytes), got_s(s.bytes);
  q.download(got_q.data());
  s.download(got_s.data());
  Tensor want_q = Tensor::empty(DType::kFp8E4M3, {t_pad, dim});
  Tensor want_s = Tensor::empty_strided(
      DType::kF32, {t_pad, dim / g}, {lay.token_stride(), lay.group_stride()}, lay.storage_numel());
  std::memset(want_q.raw(), 0xff, q.bytes);
  std::memset(want_s.raw(), 0xff, s.bytes);
  ref::Fp8GroupParams gp;
  gp.group_size = g;
  gp.ue8m0 = v.ue8m0;
  gp.col_major = v.col_major;
  gp.tma_aligned = v.tma_aligned;
  ref::quant_fp8_group(x, n, gp, want_q, want_s);
  EXPECT_EQ(std::memcmp(got_q.data(), want_q.raw(), q.bytes), 0) << "group FP8 codes differ";
  EXPECT_EQ(std::memcmp(got_s.data(), want_s.raw(), s.bytes), 0) << "group FP8 scales differ";
}

}  // namespace mlafuse::gpu_test
