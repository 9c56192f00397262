#include "backends/cuda/op_checks.h"

#include <cstdint>
#include <limits>

#include "mlafuse/core/error.h"
#include "mlafuse/core/shape.h"
#include "mlafuse/quant/scale_layout.h"

namespace mlafuse::cuda {

void check_cuda_tensor(const Tensor& t, const char* name) {
  MLAFUSE_CHECK(t.defined(), "tensor ", name, " is missing");
  MLAFUSE_CHECK(t.device() == Device::kCuda, "tensor ", name, " ", t.str(), " is in ",
                device_name(t.device()),
                " memory; the CUDA backend needs device tensors (allocate "
                "them with the backend and copy host data in)");
}

void check_aligned(const Tensor& t, const char* name, int64_t bytes) {
  MLAFUSE_CHECK(reinterpret_cast<uintptr_t>(t.raw()) % static_cast<uintptr_t>(bytes) == 0,
                "tensor ", name, " ", t.str(), " starts at element offset ", t.offset(),
                ", which is not ", bytes, "-byte aligned; the kernel reads ", bytes,
                "-byte vectors");
}

void check_activation(const Tensor& t, const char* name, size_t rank) {
  check_cuda_tensor(t, name);
  check_rank(t, name, rank);
  MLAFUSE_CHECK(is_float_activation(t.dtype()), "tensor ", name, " ", t.str(),
                ": expected dtype bf16, f16 or f32");
  MLAFUSE_CHECK(t.is_contiguous(), "tensor ", name, " ", t.str(), " with strides ",
                shape_str(t.strides()), " must be contiguous (row-major)");
  check_aligned(t, name, 16);
}

void check_codes(const Tensor& t, const char* name, DType coded,
                 const std::vector<int64_t>& shape) {
  check_cuda_tensor(t, name);
  MLAFUSE_CHECK(t.dtype() == coded || t.dtype() == DType::kU8, "tensor ", name, " ", t.str(),
                ": expected dtype ", dtype_name(coded), " (or u8)");
  check_shape(t, name, shape);
  MLAFUSE_CHECK(t.is_contiguous(), "tensor ", name, " ", t.str(), " with strides ",
                shape_str(t.strides()), " must be contiguous (row-major)");
  check_aligned(t, name, 16);
}

void check_scalar(const Tensor& t, const char* name) {
  check_cuda_tensor(t, name);
  check_dtype(t, name, DType::kF32);
  MLAFUSE_CHECK(t.numel() == 1, "tensor ", name, " ", t.str(), ": expected one f32 element");
}

int64_t checked_num_tokens(const RunContext& ctx, int64_t t_pad, const char* buffer) {
  MLAFUSE_CHECK(ctx.num_tokens >= 0 && ctx.num_tokens <= t_pad,
                "real token count n = ", ctx.num_tokens, " is outside [0, ", t_pad, "] (the ",
                buffer, " buffer holds ", t_pad, " token rows)");
  return ctx.num_tokens;
}

void check_arity(const OpCall& call, size_t inputs, size_t outputs) {
  MLAFUSE_CHECK(call.inputs.size() == inputs && call.outputs.size() == outputs, "op ", call.op,
                " takes ", inputs, " inputs and ", outputs, " outputs (docs/ops.md); got ",
                call.inputs.size(), " and ", call.outputs.size());
}

void check_int32_range(int64_t value, const char* what) {
  MLAFUSE_CHECK(value >= 0 && value <= std::numeric_limits<int32_t>::max(), what, " = ", value,
                " exceeds the kernels' 32-bit index range");
}

int64_t check_block_fp8_weight_and_output(const Tensor& xq, int64_t k, const Tensor& wq,
                                          const Tensor& ws, const Tensor& y) {
  const int64_t t_pad = xq.dim(0);
  check_cuda_tensor(wq, "wq");
  check_rank(wq, "wq", 2);
  const int64_t n_out = wq.dim(0);
  MLAFUSE_CHECK(wq.dim(1) == k, "tensor wq ", wq.str(), ": expected [N, ", k, "] (K from xq ",
                xq.str(), ")");
  check_codes(wq, "wq", DType::kFp8E4M3, {n_out, k});
  check_cuda_tensor(ws, "ws");
  check_dtype(ws, "ws", DType::kF32);
  check_shape(ws, "ws", {ceil_div(n_out, 128), ceil_div(k, 128)});
  MLAFUSE_CHECK(ws.is_contiguous(), "tensor ws ", ws.str(), " must be contiguous (row-major)");
  check_cuda_tensor(y, "y");
  check_dtype(y, "y", DType::kBF16);
  check_shape(y, "y", {t_pad, n_out});
  MLAFUSE_CHECK(y.is_contiguous(), "tensor y ", y.str(), " must be contiguous");
  return n_out;
}

}  // namespace mlafuse::cuda
