// Host side of the TMA copies: encoding a tensor map (the driver's cuTensorMapEncodeTiled, reached
// through the runtime's entry-point query, so nothing links against libcuda directly).
#pragma once

#include <cuda.h>

#include <cstdint>

namespace mlafuse::cuda::tma {

// A 2-D bf16 tensor map over a row-major [rows, cols] matrix with `row_bytes` between rows, in
// boxes of [box_rows, 64] (128 bytes wide) with the 128-byte swizzle (the SW128 layout wgmma
// reads). Throws mlafuse::Error naming `what` when the driver refuses the shape.
CUtensorMap make_map_2d_bf16_sw128(const void* base, uint64_t rows, uint64_t cols,
                                   uint64_t row_bytes, uint32_t box_rows, const char* what);

}  // namespace mlafuse::cuda::tma
