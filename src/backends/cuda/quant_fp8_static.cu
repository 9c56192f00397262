// quant_fp8_static: launcher and op runner (SPEC 3.1, docs/ops.md).
#include <algorithm>

#include "backends/cuda/device_context.h"
#include "backends/cuda/op_checks.h"
#include "backends/cuda/quant_fp8_static.cuh"
#include "backends/cuda/quant_kernels.h"
#include "mlafuse/backends/cuda/cuda_check.h"
#include "mlafuse/core/error.h"

namespace mlafuse::cuda {

namespace {

template <class In>
void launch_for_dtype(const Fp8StaticParams& p, int num_sms, cudaStream_t stream,
                      const StreamLaunch& cfg) {
  const int64_t elems = static_cast<int64_t>(p.t_pad) * p.d;
  const int64_t cap = static_cast<int64_t>(std::max(num_sms, 1)) * cfg.blocks_per_sm;
  if (p.d % In::kPer16B == 0) {
    constexpr int kUnroll = 4;
    const int64_t threads = (elems / In::kPer16B + kUnroll - 1) / kUnroll;
    const int grid = static_cast<int>(std::clamp<int64_t>((threads + 255) / 256, 1, cap));
    quant_fp8_static_vec_kernel<In, kUnroll><<<grid, 256, 0, stream>>>(p);
    MLAFUSE_CUDA_CHECK_LAUNCH("quant_fp8_static_vec_kernel");
  } else {
    const int grid = static_cast<int>(std::clamp<int64_t>((elems + 255) / 256, 1, cap));
    quant_fp8_static_any_kernel<In><<<grid, 256, 0, stream>>>(p);
    MLAFUSE_CUDA_CHECK_LAUNCH("quant_fp8_static_any_kernel");
  }
}

}  // namespace

void launch_quant_fp8_static(const QuantFp8StaticArgs& a, int num_sms, cudaStream_t stream,
                             const StreamLaunch& cfg) {
  if (a.t_pad == 0 || a.d == 0) return;
  Fp8StaticParams p{};
  p.x = a.x;
  p.scale = a.scale;
  p.q = a.q;
  p.t_pad = static_cast<int32_t>(a.t_pad);
  p.d = static_cast<int32_t>(a.d);
  p.num_tokens = static_cast<int32_t>(a.num_tokens);
  p.num_tokens_device = a.num_tokens_device;
  switch (a.x_dtype) {
    case DType::kBF16:
      return launch_for_dtype<Bf16In>(p, num_sms, stream, cfg);
    case DType::kF16:
      return launch_for_dtype<F16In>(p, num_sms, stream, cfg);
    case DType::kF32:
      return launch_for_dtype<F32In>(p, num_sms, stream, cfg);
    default:
      MLAFUSE_FAIL("quant_fp8_static: x dtype ", dtype_name(a.x_dtype), " is not bf16/f16/f32");
  }
}

void run_quant_fp8_static(const OpCall& call, const RunContext& ctx, DeviceContext& dc) {
  check_arity(call, 2, 1);
  const Tensor& x = call.inputs[0];
  const Tensor& scale = call.inputs[1];
  Tensor& q = call.outputs[0];
  check_activation(x, "x", 2);
  const int64_t t_pad = x.dim(0);
  const int64_t d = x.dim(1);
  check_scalar(scale, "scale");
  check_codes(q, "q", DType::kFp8E4M3, {t_pad, d});
  check_int32_range(t_pad, "quant_fp8_static: tokens");
  check_int32_range(d, "quant_fp8_static: D");
  const int64_t n = checked_num_tokens(ctx, t_pad, "x");

  QuantFp8StaticArgs a;
  a.x = x.raw();
  a.x_dtype = x.dtype();
  a.scale = static_cast<const float*>(scale.raw());
  a.q = static_cast<uint8_t*>(q.raw());
  a.t_pad = t_pad;
  a.d = d;
  a.num_tokens = n;
  a.num_tokens_device = ctx.num_tokens_device;
  launch_quant_fp8_static(a, dc.num_sms, dc.stream_for(ctx));
}

}  // namespace mlafuse::cuda
