// Comparing the fused graph's outputs with the unfused graph's and with the f32 reference: the
// `compare` step of the run job, byte for byte where the job promises bit-exactness.
#pragma once

#include <cstdint>
#include <string>

#include "mlafuse/core/tensor.h"
#include "mlafuse/quant/layout.h"
#include "mlafuse/quant/scale_layout.h"

namespace mlafuse::app {

// Rows [0, n) of a row-major [T_pad, ...] buffer, as a contiguous [n, ...] host tensor.
Tensor first_rows(const Tensor& t, int64_t n);

// Compares rows [0, n) of two row-major buffers byte for byte; names the first difference in *why.
bool rows_equal(const Tensor& a, const Tensor& b, int64_t n, const std::string& name,
                std::string* why);

// Group-FP8 scales of tokens [0, n), at their strided places, as f32 bits.
bool group_scales_equal(const Tensor& a, const Tensor& b, const GroupScaleLayout& l, int64_t n,
                        const std::string& name, std::string* why);

// Logical [n, groups] f32 copy of a strided group-scale buffer.
Tensor group_scales_logical(const Tensor& s, const GroupScaleLayout& l, int64_t n);

GroupScaleLayout group_layout(Layout layout, int64_t t_pad, int64_t groups);

struct ErrStats {
  double ref_max = 0, max_abs = 0;
};
// y: [T_pad, N] bf16 (rows < n compared); ref: [n, N] f32.
ErrStats compare_to_reference(const Tensor& y, const Tensor& ref, int64_t n);

}  // namespace mlafuse::app
