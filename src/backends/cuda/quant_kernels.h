// Launchers of the standalone quantization kernels (SPEC 3) over plain parameter structs, for the
// op runners and for other CUDA code (the unfused MLA chain). Host code; no kernels here.
// The launchers trust their arguments: the runners validate them first (quant_*.cu).
//
// Padded batches (SPEC 6): buffers hold t_pad token rows and the kernels are launched over t_pad;
// the real count n comes from *num_tokens_device when it is non-null (a replayed CUDA graph), else
// from num_tokens. Nothing that belongs to tokens >= n is written.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "mlafuse/core/dtype.h"
#include "mlafuse/quant/quant_key.h"
#include "mlafuse/quant/scale_layout.h"

namespace mlafuse::cuda {

// Launch shape of the streaming kernels: threads per block, groups each thread keeps in flight
// (0: auto; else 1, 2, 4 or 8), the most resident blocks per SM the grid asks for, how the group
// kernel walks its groups (-1: auto; 0 strided, 1 contiguous per warp, 2 tiles of tokens x
// groups; see GroupMap in quant_fp8_group.cuh), and whether a thread loads its next round before
// computing the current one (walks 1 and 2 with unroll <= 4; off in auto). Every combination is
// available for bf16 input with G = 64 or 128 (the benchmark sweeps them); other inputs and
// groups take unroll 1, or unroll 2 with prefetch, on the contiguous or tiled walk. The defaults
// are tuned on the H100 (docs/PERF.md).
struct StreamLaunch {
  int block = 256;
  int unroll = 0;
  int blocks_per_sm = 8;
  int map = -1;
  bool prefetch = false;
};

struct QuantFp8GroupArgs {
  const void* x = nullptr;  // [t_pad, d] bf16|f16|f32, row-major, 16-byte aligned
  DType x_dtype = DType::kBF16;
  uint8_t* q = nullptr;  // [t_pad, d] e4m3 codes
  float* s = nullptr;    // scales at GroupScaleLayout{t_pad, d/group, col_major, tma_aligned}
  int64_t t_pad = 0;
  int64_t d = 0;
  int64_t group = 128;  // any multiple of 16 dividing d; 16..256 powers of two are fastest
  bool ue8m0 = false;
  bool col_major = false;
  bool tma_aligned = false;
  float eps = static_cast<float>(kDefaultQuantEps);  // >= 1e-18 (the runner checks)
  int64_t num_tokens = 0;                            // n, when num_tokens_device is null
  const int32_t* num_tokens_device = nullptr;
};
void launch_quant_fp8_group(const QuantFp8GroupArgs& a, int num_sms, cudaStream_t stream,
                            const StreamLaunch& cfg = {});

struct QuantFp8StaticArgs {
  const void* x = nullptr;  // [t_pad, d] bf16|f16|f32, row-major
  DType x_dtype = DType::kBF16;
  const float* scale = nullptr;  // [1] f32 on the device
  uint8_t* q = nullptr;          // [t_pad, d] e4m3 codes
  int64_t t_pad = 0;
  int64_t d = 0;
  int64_t num_tokens = 0;
  const int32_t* num_tokens_device = nullptr;
};
void launch_quant_fp8_static(const QuantFp8StaticArgs& a, int num_sms, cudaStream_t stream,
                             const StreamLaunch& cfg = {});

struct QuantNvfp4Args {
  const void* x = nullptr;  // [t_pad, d] bf16|f16|f32, row-major, d % 16 == 0
  DType x_dtype = DType::kBF16;
  const float* global_scale = nullptr;  // [1] f32 on the device
  uint8_t* q = nullptr;                 // [t_pad, d/2] packed e2m1 pairs
  uint8_t* sf = nullptr;  // [round_up(t_pad,128), round_up(d/16,4)] e4m3, swizzled (SPEC 3.3)
  int64_t t_pad = 0;
  int64_t d = 0;
  int64_t num_tokens = 0;
  const int32_t* num_tokens_device = nullptr;
};
void launch_quant_nvfp4(const QuantNvfp4Args& a, cudaStream_t stream);

}  // namespace mlafuse::cuda
