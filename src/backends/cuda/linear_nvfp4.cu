// linear_nvfp4 (docs/ops.md): o_proj on NVFP4 activations. The activations are dequantized per
// SPEC 3.3 (x = e2m1(q) * float(sf) / global_scale) inside the straightforward f32 GEMM of
// linear_simt.cuh; there is no Hopper tensor-core path for FP4. Rows >= n are not written.
#include "backends/cuda/device_context.h"
#include "backends/cuda/linear_simt.cuh"
#include "backends/cuda/op_checks.h"
#include "mlafuse/backends/cuda/cuda_check.h"
#include "mlafuse/core/error.h"
#include "mlafuse/quant/scale_layout.h"

namespace mlafuse::cuda {

void run_linear_nvfp4(const OpCall& call, const RunContext& ctx, DeviceContext& dc) {
  check_arity(call, 5, 1);
  const Tensor& xq = call.inputs[0];
  const Tensor& sf = call.inputs[1];
  const Tensor& gs = call.inputs[2];
  const Tensor& wq = call.inputs[3];
  const Tensor& ws = call.inputs[4];
  Tensor& y = call.outputs[0];
  check_cuda_tensor(xq, "xq");
  check_rank(xq, "xq", 2);
  const int64_t t_pad = xq.dim(0);
  const int64_t k = xq.dim(1) * 2;
  check_codes(xq, "xq", DType::kFp4E2M1x2, {t_pad, k / 2});
  MLAFUSE_CHECK(k % 16 == 0, "tensor xq ", xq.str(), ": K = ", k,
                " must be a multiple of 16 (one block scale per 16 values)");
  const Nvfp4ScaleLayout layout{t_pad, k};
  check_codes(sf, "sf", DType::kFp8E4M3, {layout.padded_rows(), layout.padded_cols()});
  check_scalar(gs, "global_scale");
  const int64_t n_out = check_block_fp8_weight_and_output(xq, k, wq, ws, y);
  check_int32_range(layout.padded_rows(), "linear_nvfp4: tokens");
  check_int32_range(n_out, "linear_nvfp4: N");
  check_int32_range(k, "linear_nvfp4: K");
  // The kernel's token tiles are its grid's y extent, at most 65535.
  MLAFUSE_CHECK(ceil_div(t_pad, 64) <= 65535, "linear_nvfp4: tensor xq ", xq.str(), " has ", t_pad,
                " token rows; at most 65535 * 64 = 4194240 a call");
  const int64_t n = checked_num_tokens(ctx, t_pad, "xq");
  if (t_pad == 0 || n_out == 0) return;

  const Nvfp4ActLoader loader{static_cast<const uint8_t*>(xq.raw()),
                              static_cast<const uint8_t*>(sf.raw()), layout,
                              static_cast<const float*>(gs.raw())};
  const LinearSimtParams p{static_cast<const uint8_t*>(wq.raw()),
                           static_cast<const float*>(ws.raw()),
                           static_cast<__nv_bfloat16*>(y.raw()),
                           static_cast<int32_t>(t_pad),
                           static_cast<int32_t>(n_out),
                           static_cast<int32_t>(k),
                           static_cast<int32_t>(n),
                           ctx.num_tokens_device};
  const dim3 grid(static_cast<unsigned>(ceil_div(n_out, 64)),
                  static_cast<unsigned>(ceil_div(t_pad, 64)));
  linear_simt_kernel<Nvfp4ActLoader><<<grid, 256, 0, dc.stream_for(ctx)>>>(p, loader);
  MLAFUSE_CUDA_CHECK_LAUNCH("linear_simt_kernel<Nvfp4ActLoader>");
}

}  // namespace mlafuse::cuda
