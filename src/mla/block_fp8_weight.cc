#include "mlafuse/mla/block_fp8_weight.h"

#include <array>

#include "mlafuse/core/error.h"
#include "mlafuse/core/shape.h"
#include "mlafuse/quant/codecs.h"
#include "mlafuse/quant/scale_layout.h"

namespace mlafuse {

void check_block_fp8(const BlockFp8Weight& w, const std::string& name, Device device,
                     const std::vector<int64_t>& shape) {
  constexpr int64_t kB = kWeightBlock;
  MLAFUSE_CHECK(w.weight.defined(), "block-FP8 weight ", name, " is absent");
  MLAFUSE_CHECK(w.weight_scale_inv.defined(), "block-FP8 weight ", name,
                " has no weight_scale_inv");
  check_device(w.weight, (name + ".weight").c_str(), device);
  check_device(w.weight_scale_inv, (name + ".weight_scale_inv").c_str(), device);
  MLAFUSE_CHECK(w.weight.dtype() == DType::kFp8E4M3 || w.weight.dtype() == DType::kU8, "tensor ",
                name, ".weight: expected fp8e4m3 (or u8 codes), got ", w.weight.str());
  check_rank(w.weight, (name + ".weight").c_str(), 2);
  if (!shape.empty()) check_shape(w.weight, (name + ".weight").c_str(), shape);
  MLAFUSE_CHECK(w.weight.is_contiguous(), "tensor ", name, ".weight must be contiguous");
  check_dtype(w.weight_scale_inv, (name + ".weight_scale_inv").c_str(), DType::kF32);
  check_shape(w.weight_scale_inv, (name + ".weight_scale_inv").c_str(),
              {ceil_div(w.weight.dim(0), kB), ceil_div(w.weight.dim(1), kB)});
  MLAFUSE_CHECK(w.weight_scale_inv.is_contiguous(), "tensor ", name,
                ".weight_scale_inv must be contiguous");
}

Tensor dequantize_block_fp8(const BlockFp8Weight& w) {
  constexpr int64_t kB = kWeightBlock;
  check_block_fp8(w, "weight");
  const int64_t n_dim = w.weight.dim(0), k_dim = w.weight.dim(1), kb = ceil_div(k_dim, kB);
  Tensor out = Tensor::empty(DType::kF32, {n_dim, k_dim});
  const uint8_t* codes = w.weight.data<uint8_t>();         // [N, K] fp8e4m3
  const float* scales = w.weight_scale_inv.data<float>();  // [ceil(N/128), ceil(K/128)]
  float* o = out.data<float>();                            // [N, K] f32
  const std::array<float, 256>& lut = e4m3_decode_table();
  for (int64_t r = 0; r < n_dim; ++r) {
    for (int64_t c = 0; c < k_dim; ++c) {
      o[r * k_dim + c] = lut[codes[r * k_dim + c]] * scales[(r / kB) * kb + c / kB];
    }
  }
  return out;
}

}  // namespace mlafuse
