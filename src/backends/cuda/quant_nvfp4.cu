// quant_nvfp4: launcher and op runner (SPEC 3.3, docs/ops.md).
#include <algorithm>

#include "backends/cuda/device_context.h"
#include "backends/cuda/op_checks.h"
#include "backends/cuda/quant_kernels.h"
#include "backends/cuda/quant_nvfp4.cuh"
#include "mlafuse/backends/cuda/cuda_check.h"
#include "mlafuse/core/error.h"

namespace mlafuse::cuda {

void launch_quant_nvfp4(const QuantNvfp4Args& a, cudaStream_t stream) {
  if (a.t_pad == 0) return;
  Nvfp4Params p{};
  p.x = a.x;
  p.global_scale = a.global_scale;
  p.q = a.q;
  p.sf = a.sf;
  p.layout = Nvfp4ScaleLayout{a.t_pad, a.d};
  p.t_pad = static_cast<int32_t>(a.t_pad);
  p.d = static_cast<int32_t>(a.d);
  p.padded_cols = static_cast<int32_t>(p.layout.padded_cols());
  p.num_tokens = static_cast<int32_t>(a.num_tokens);
  p.num_tokens_device = a.num_tokens_device;
  // One thread per scale entry of the padded buffer; threads past round_up(n, 128) rows exit.
  const int64_t entries = p.layout.padded_rows() * p.padded_cols;
  const int grid = static_cast<int>(std::max<int64_t>(1, (entries + 255) / 256));
  switch (a.x_dtype) {
    case DType::kBF16:
      quant_nvfp4_kernel<Bf16In><<<grid, 256, 0, stream>>>(p);
      break;
    case DType::kF16:
      quant_nvfp4_kernel<F16In><<<grid, 256, 0, stream>>>(p);
      break;
    case DType::kF32:
      quant_nvfp4_kernel<F32In><<<grid, 256, 0, stream>>>(p);
      break;
    default:
      MLAFUSE_FAIL("quant_nvfp4: x dtype ", dtype_name(a.x_dtype), " is not bf16/f16/f32");
  }
  MLAFUSE_CUDA_CHECK_LAUNCH("quant_nvfp4_kernel");
}

void run_quant_nvfp4(const OpCall& call, const RunContext& ctx, DeviceContext& dc) {
  check_arity(call, 2, 2);
  const Tensor& x = call.inputs[0];
  const Tensor& gs = call.inputs[1];
  Tensor& q = call.outputs[0];
  Tensor& sf = call.outputs[1];
  check_activation(x, "x", 2);
  const int64_t t_pad = x.dim(0);
  const int64_t d = x.dim(1);
  MLAFUSE_CHECK(d % 16 == 0, "quant_nvfp4: the last dim of x ", x.str(),
                " must be a multiple of 16 (one e4m3 block scale per 16 elements)");
  check_scalar(gs, "global_scale");
  check_codes(q, "q", DType::kFp4E2M1x2, {t_pad, d / 2});
  const Nvfp4ScaleLayout layout{t_pad, d};
  check_codes(sf, "sf", DType::kFp8E4M3, {layout.padded_rows(), layout.padded_cols()});
  check_int32_range(layout.padded_rows(), "quant_nvfp4: padded tokens");
  check_int32_range(d, "quant_nvfp4: D");
  const int64_t n = checked_num_tokens(ctx, t_pad, "x");

  QuantNvfp4Args a;
  a.x = x.raw();
  a.x_dtype = x.dtype();
  a.global_scale = static_cast<const float*>(gs.raw());
  a.q = static_cast<uint8_t*>(q.raw());
  a.sf = static_cast<uint8_t*>(sf.raw());
  a.t_pad = t_pad;
  a.d = d;
  a.num_tokens = n;
  a.num_tokens_device = ctx.num_tokens_device;
  launch_quant_nvfp4(a, dc.stream_for(ctx));
}

}  // namespace mlafuse::cuda
