// Overflow-checked int64 arithmetic for extents that come from outside (IR attributes and types,
// .npy headers): an overflow is an mlafuse::Error naming what was being computed, never a wrapped
// value that a later check might accept.
#pragma once

#include <cstdint>
#include <string_view>

#include "mlafuse/core/error.h"

namespace mlafuse {

// a * b; `what` names the product in the message ("num_heads * v_head_dim").
inline int64_t checked_mul(int64_t a, int64_t b, std::string_view what) {
  int64_t r = 0;
  MLAFUSE_CHECK(!__builtin_mul_overflow(a, b, &r), what, " = ", a, " * ", b,
                " does not fit in int64");
  return r;
}

// a + b; `what` names the sum in the message ("qk_nope_dim + qk_rope_dim").
inline int64_t checked_add(int64_t a, int64_t b, std::string_view what) {
  int64_t r = 0;
  MLAFUSE_CHECK(!__builtin_add_overflow(a, b, &r), what, " = ", a, " + ", b,
                " does not fit in int64");
  return r;
}

// ceil(a / b) for a >= 0, b > 0, without the a + b - 1 that wraps near INT64_MAX.
inline int64_t ceil_div_nowrap(int64_t a, int64_t b) { return a / b + (a % b != 0 ? 1 : 0); }

}  // namespace mlafuse
