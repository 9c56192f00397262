// Launcher of mla_prefill_attention: checks the problem, encodes the TMA maps of the sm90 kernel
// (mla_prefill_attention_sm90.cuh) and dispatches to one instantiation file per epilogue; and
// NVFP4's scale padding for callers that write no other rows.
#include <cmath>

#include "backends/cuda/mla_prefill.h"
#include "backends/cuda/mla_prefill_attention_sm90.cuh"
#include "backends/cuda/tma_map.h"
#include "mlafuse/backends/cuda/cuda_check.h"
#include "mlafuse/core/error.h"
#include "mlafuse/quant/scale_layout.h"

namespace mlafuse::cuda {
namespace mla {
extern template void launch_prefill_attention<EpiBf16>(const MlaPrefillProblem&, const PrefillMaps&,
                                                       const MlaOutputParams&, cudaStream_t);
extern template void launch_prefill_attention<EpiFp8Static>(const MlaPrefillProblem&,
                                                            const PrefillMaps&,
                                                            const MlaOutputParams&, cudaStream_t);
extern template void launch_prefill_attention<EpiFp8Group<128>>(const MlaPrefillProblem&,
                                                                const PrefillMaps&,
                                                                const MlaOutputParams&,
                                                                cudaStream_t);
extern template void launch_prefill_attention<EpiFp8Group<64>>(const MlaPrefillProblem&,
                                                               const PrefillMaps&,
                                                               const MlaOutputParams&,
                                                               cudaStream_t);
extern template void launch_prefill_attention<EpiNvfp4>(const MlaPrefillProblem&,
                                                        const PrefillMaps&, const MlaOutputParams&,
                                                        cudaStream_t);

namespace {

__global__ void mla_prefill_nvfp4_pad_kernel(uint8_t* sf, Nvfp4ScaleLayout layout, int n,
                                             int pad_end, int cols) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t t = n + i / cols;
  if (t < pad_end) qe::store_nvfp4_scale(sf, layout, t, i % cols, 0);
}

}  // namespace
}  // namespace mla

void check_mla_prefill_output(const MlaOutputParams& out) {
  MLAFUSE_CHECK(out.out != nullptr, "mla_prefill: null output pointer");
  MLAFUSE_CHECK(out.kind == MlaEpilogue::kBf16 || out.scale != nullptr ||
                    out.kind == MlaEpilogue::kFp8Group128 || out.kind == MlaEpilogue::kFp8Group64,
                "mla_prefill: static FP8 and NVFP4 outputs need the [1] scale");
  MLAFUSE_CHECK((out.kind != MlaEpilogue::kFp8Group128 && out.kind != MlaEpilogue::kFp8Group64) ||
                    out.group_scales != nullptr,
                "mla_prefill: group FP8 output needs the scale buffer");
  MLAFUSE_CHECK(out.kind != MlaEpilogue::kNvfp4 || out.nvfp4_scales != nullptr,
                "mla_prefill: NVFP4 output needs the block-scale buffer");
}

void launch_mla_prefill_attention(const MlaPrefillProblem& p, const MlaOutputParams& out,
                                  cudaStream_t stream) {
  const int h = p.num_heads;
  MLAFUSE_CHECK(h == 16 || h == 32 || h == 64 || h == 128, "mla_prefill_attention: num_heads ", h,
                " is not supported; expected 16, 32, 64 or 128");
  MLAFUSE_CHECK(p.num_seqs >= 0 && p.num_seqs <= 65535, "mla_prefill_attention: num_seqs ",
                p.num_seqs, " must be in [0, 65535] (one grid z slice a sequence)");
  MLAFUSE_CHECK(p.max_q_len >= 0 && p.q_rows >= 0 && p.out_rows >= 0 && p.kv_rows >= 0,
                "mla_prefill_attention: negative sizes (max_q_len ", p.max_q_len, ", q_rows ",
                p.q_rows, ", out_rows ", p.out_rows, ", kv_rows ", p.kv_rows, ")");
  if (p.num_seqs == 0 || p.max_q_len == 0) return;
  MLAFUSE_CHECK(p.max_q_len <= p.q_rows && p.q_rows <= p.out_rows,
                "mla_prefill_attention: max_q_len ", p.max_q_len, " must be <= q_rows ", p.q_rows,
                " <= out_rows ", p.out_rows);
  MLAFUSE_CHECK(p.kv_rows >= p.max_q_len, "mla_prefill_attention: kv_rows ", p.kv_rows,
                " cannot hold a sequence of ", p.max_q_len,
                " queries (each query is a context row)");
  MLAFUSE_CHECK(p.q_start != nullptr && p.kv_start != nullptr && p.q != nullptr &&
                    p.kv != nullptr && p.k_pe != nullptr,
                "mla_prefill_attention: null q_start / kv_start / q / kv / k_pe pointer");
  MLAFUSE_CHECK(std::isfinite(p.softmax_scale) && p.softmax_scale > 0.0f,
                "mla_prefill_attention: softmax_scale ", p.softmax_scale,
                " must be finite and > 0");
  check_mla_prefill_output(out);

  mla::PrefillMaps maps;
  maps.q = tma::make_map_2d_bf16_sw128(
      p.q, static_cast<uint64_t>(p.q_rows), static_cast<uint64_t>(h) * kMlaQDim,
      static_cast<uint64_t>(h) * kMlaQDim * 2, kMlaPrefillTileM, "prefill q");
  maps.kv = tma::make_map_2d_bf16_sw128(
      p.kv, static_cast<uint64_t>(p.kv_rows), static_cast<uint64_t>(h) * kMlaPrefillKvDim,
      static_cast<uint64_t>(h) * kMlaPrefillKvDim * 2, kMlaPrefillTileN, "prefill kv");
  maps.k_pe = tma::make_map_2d_bf16_sw128(p.k_pe, static_cast<uint64_t>(p.kv_rows), kMlaRope,
                                          kMlaRope * 2, kMlaPrefillTileN, "prefill k_pe");
  switch (out.kind) {
    case MlaEpilogue::kBf16:
      mla::launch_prefill_attention<mla::EpiBf16>(p, maps, out, stream);
      break;
    case MlaEpilogue::kFp8Static:
      mla::launch_prefill_attention<mla::EpiFp8Static>(p, maps, out, stream);
      break;
    case MlaEpilogue::kFp8Group128:
      mla::launch_prefill_attention<mla::EpiFp8Group<128>>(p, maps, out, stream);
      break;
    case MlaEpilogue::kFp8Group64:
      mla::launch_prefill_attention<mla::EpiFp8Group<64>>(p, maps, out, stream);
      break;
    case MlaEpilogue::kNvfp4:
      mla::launch_prefill_attention<mla::EpiNvfp4>(p, maps, out, stream);
      break;
  }
}

void launch_mla_prefill_nvfp4_pad(const MlaOutputParams& out, int out_rows, int num_heads, int n,
                                  cudaStream_t stream) {
  if (out.kind != MlaEpilogue::kNvfp4) return;
  MLAFUSE_CHECK(n >= 0 && n <= out_rows && out.nvfp4_scales != nullptr, "mla_prefill_nvfp4_pad: n ",
                n, " outside [0, ", out_rows, "] or no block-scale buffer");
  const int pad_end = static_cast<int>(round_up(n, 128));
  const int cols = num_heads * kMlaVDim / 16;
  const int64_t total = static_cast<int64_t>(pad_end - n) * cols;
  if (total == 0) return;
  const Nvfp4ScaleLayout layout{out_rows, static_cast<int64_t>(num_heads) * kMlaVDim};
  mla::mla_prefill_nvfp4_pad_kernel<<<static_cast<unsigned>((total + 255) / 256), 256, 0, stream>>>(
      out.nvfp4_scales, layout, n, pad_end, cols);
  MLAFUSE_CUDA_CHECK_LAUNCH("mla_prefill_nvfp4_pad_kernel");
}

}  // namespace mlafuse::cuda
