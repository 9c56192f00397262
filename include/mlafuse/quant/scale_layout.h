// Where scales live in memory (SPEC 3.2, 3.3). Pure index math, usable on host and device.
#pragma once

#include <cstdint>

#include "mlafuse/core/hd.h"

namespace mlafuse {

MLAFUSE_HD int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }
MLAFUSE_HD int64_t round_up(int64_t a, int64_t b) { return ceil_div(a, b) * b; }

// Per-token-group FP8 scales, logical shape [T, groups] with T the (padded) buffer token count.
struct GroupScaleLayout {
  int64_t num_tokens = 0;  // T (T_pad for padded batches): fixes the column stride
  int64_t groups = 0;      // D / G
  bool col_major = false;
  bool tma_aligned = false;  // only meaningful with col_major

  MLAFUSE_HD int64_t token_stride() const { return col_major ? 1 : groups; }
  MLAFUSE_HD int64_t group_stride() const {
    return col_major ? (tma_aligned ? round_up(num_tokens, 4) : num_tokens) : 1;
  }
  MLAFUSE_HD int64_t storage_numel() const {
    return col_major ? groups * group_stride() : num_tokens * groups;
  }
  MLAFUSE_HD int64_t offset(int64_t t, int64_t g) const {
    return t * token_stride() + g * group_stride();
  }
};

// NVFP4 swizzled block-scale layout: rows padded to 128, scale columns (D/16) padded to 4.
struct Nvfp4ScaleLayout {
  int64_t num_tokens = 0;  // T
  int64_t dim = 0;         // D (a multiple of 16)

  MLAFUSE_HD int64_t scale_cols() const { return dim / 16; }
  MLAFUSE_HD int64_t padded_rows() const { return round_up(num_tokens, 128); }
  MLAFUSE_HD int64_t padded_cols() const { return round_up(scale_cols(), 4); }
  MLAFUSE_HD int64_t storage_bytes() const { return padded_rows() * padded_cols(); }
  MLAFUSE_HD int64_t col_tiles() const { return ceil_div(dim, 64); }  // kt
  // Byte offset of (row m, scale column k). Depends only on m, k and D: the layout for n rows is a
  // prefix of the layout for any T >= n.
  MLAFUSE_HD int64_t offset(int64_t m, int64_t k) const {
    return ((m / 128) * col_tiles() + k / 4) * 512 + (m % 32) * 16 + ((m / 32) % 4) * 4 + (k % 4);
  }
};

}  // namespace mlafuse
