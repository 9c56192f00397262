// The o_proj GEMM paths of the CUDA backend, exposed for tests and benchmarks. Host code.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "backends/cuda/device_context.h"

namespace mlafuse::cuda {

// The scratch cuBLASLt's block-scaled FP8 GEMM may use (its algorithms are chosen for this much).
inline constexpr size_t kLinearFp8CublasltWorkspaceBytes = size_t{32} << 20;

// y [t, n] bf16 = (xq [t, k] e4m3 with 1x128 scales xs, column-major [t, k/128] with token stride
// 1 and group stride t) x (wq [n, k] e4m3 with 128x128 scales ws [n/128, k/128] row-major)^T, on
// cuBLASLt's Hopper block-scaled FP8 GEMM. Returns false (launching nothing) when cuBLASLt offers
// no algorithm for this problem; throws on CUDA/cuBLAS errors. `gemm_workspace`:
// kLinearFp8CublasltWorkspaceBytes of device scratch, or null for the backend's workspace
// (dc.ensure_workspace, which may reallocate it: callers holding parts of it pass their own).
bool linear_fp8_block_cublaslt(DeviceContext& dc, cudaStream_t stream, const void* xq,
                               const float* xs, const void* wq, const float* ws, void* y, int64_t t,
                               int64_t n, int64_t k, void* gemm_workspace = nullptr);

}  // namespace mlafuse::cuda
