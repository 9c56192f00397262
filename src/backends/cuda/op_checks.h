// Host-side argument checks shared by the CUDA op runners: each throws mlafuse::Error naming the
// tensor, its shape and what was expected, before anything is launched.
#pragma once

#include <cstdint>
#include <string_view>

#include "mlafuse/backends/backend.h"
#include "mlafuse/core/tensor.h"

namespace mlafuse::cuda {

// A defined tensor in CUDA device memory.
void check_cuda_tensor(const Tensor& t, const char* name);
// The view's first element is 16-byte aligned (vectorized kernels read 16-byte chunks).
void check_aligned(const Tensor& t, const char* name, int64_t bytes);
// bf16 / f16 / f32, the given rank, contiguous, on the device, 16-byte aligned.
void check_activation(const Tensor& t, const char* name, size_t rank);
// A byte-coded tensor (fp8e4m3, fp4e2m1x2) that may also arrive as u8 (docs/ops.md), on the device.
void check_codes(const Tensor& t, const char* name, DType coded, const std::vector<int64_t>& shape);
// A one-element f32 tensor on the device (static scales). Its value is read by the kernel.
void check_scalar(const Tensor& t, const char* name);
// n = RunContext::num_tokens, within [0, t_pad].
int64_t checked_num_tokens(const RunContext& ctx, int64_t t_pad, const char* buffer);
// The op receives exactly these input / output counts.
void check_arity(const OpCall& call, size_t inputs, size_t outputs);
// The o_proj weight side shared by linear_fp8_block and linear_nvfp4: wq [N, K] fp8e4m3 codes,
// ws [ceil(N/128), ceil(K/128)] f32 contiguous, y [T_pad, N] bf16 contiguous, T_pad = xq's rows.
// Returns N.
int64_t check_block_fp8_weight_and_output(const Tensor& xq, int64_t k, const Tensor& wq,
                                          const Tensor& ws, const Tensor& y);
// Kernels index tokens * extent with 32-bit counters.
void check_int32_range(int64_t value, const char* what);

}  // namespace mlafuse::cuda
