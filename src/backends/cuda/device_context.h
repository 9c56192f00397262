// Host-side state the CUDA backend's op runners share. Host code only (no kernels here).
#pragma once

#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "mlafuse/backends/backend.h"

namespace mlafuse::cuda {

struct DeviceContext {
  int device = 0;
  int num_sms = 0;
  cudaStream_t stream = nullptr;      // the backend's stream; RunContext::stream overrides it
  cublasHandle_t cublas = nullptr;
  cublasLtHandle_t cublaslt = nullptr;
  // Scratch owned by the backend. Grows only outside CUDA-graph capture: size it first with a
  // warm-up run at the largest padded token count.
  void* workspace = nullptr;
  size_t workspace_bytes = 0;
  // Bumped at each reallocation: graphs captured before it point at the freed workspace.
  uint64_t workspace_generation = 0;
  void* ensure_workspace(size_t bytes);
  cudaStream_t stream_for(const RunContext& ctx) const {
    return ctx.stream ? static_cast<cudaStream_t>(ctx.stream) : stream;
  }
};

// One runner per op: validate every argument on the host (mlafuse::Error naming the tensor), then
// launch. Kernels never see OpCall: runners translate it into a plain params struct.
void run_quant_fp8_static(const OpCall& call, const RunContext& ctx, DeviceContext& dc);
void run_quant_fp8_group(const OpCall& call, const RunContext& ctx, DeviceContext& dc);
void run_quant_nvfp4(const OpCall& call, const RunContext& ctx, DeviceContext& dc);
void run_cache_write(const OpCall& call, const RunContext& ctx, DeviceContext& dc);
void run_linear_fp8_block(const OpCall& call, const RunContext& ctx, DeviceContext& dc);
void run_linear_nvfp4(const OpCall& call, const RunContext& ctx, DeviceContext& dc);
void run_mla_attention(const OpCall& call, const RunContext& ctx, DeviceContext& dc);
// Whether the fused decode kernels implement this quantization (their can_implement).
bool mla_fused_quant_supported(const FusedQuantRequest& req);

}  // namespace mlafuse::cuda
