// NumPy .npy files (format versions 1.0, 2.0, 3.0; little-endian, C order), so activations,
// codes and scales can be exchanged with numpy and other engines.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

#include "mlafuse/core/tensor.h"

namespace mlafuse {

// Writes a host tensor in its logical row-major order (a strided view, e.g. column-major scales,
// is written as its logical [rows, cols] array). Stored types: f32 -> '<f4', i32 -> '<i4',
// u8 and the one-byte code types (fp8e4m3, e8m0, fp4e2m1x2) -> '|u1' (raw bytes); bf16 and f16
// are widened exactly to '<f4' (numpy has no bf16). Throws mlafuse::Error naming the file.
void write_npy(const std::string& path, const Tensor& t);

// The bytes write_npy writes; `name` stands for the file in messages.
std::string encode_npy(const Tensor& t, const std::string& name);

// Reads a '<f4' (f32), '<i4' (i32) or '|u1' (u8) array into a contiguous host tensor. Any other
// type, big-endian or Fortran-order data, a bad header or a truncated file throws mlafuse::Error
// naming the file and what was found.
// The header must be exactly numpy's dict (descr, fortran_order, shape, nothing else) and the data
// exactly as long as the shape says: trailing bytes are an error, not ignored.
Tensor read_npy(const std::string& path);

// read_npy over bytes already in memory; `name` stands for the file in messages.
Tensor parse_npy(std::string_view bytes, const std::string& name);

// read_npy, then checks the dtype and rank: "X.npy: expected an array of dtype f32 and rank 2,
// got i32 [3, 4, 5] (rank 3)".
Tensor read_npy(const std::string& path, DType dtype, size_t rank);

}  // namespace mlafuse
