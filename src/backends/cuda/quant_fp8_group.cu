// quant_fp8_group: launcher and op runner (SPEC 3.2, docs/ops.md).
#include <algorithm>
#include <cmath>
#include <type_traits>

#include "backends/cuda/device_context.h"
#include "backends/cuda/op_checks.h"
#include "backends/cuda/quant_fp8_group.cuh"
#include "backends/cuda/quant_kernels.h"
#include "mlafuse/backends/cuda/cuda_check.h"
#include "mlafuse/core/error.h"
#include "mlafuse/core/shape.h"
#include "mlafuse/ir/op_contract.h"

namespace mlafuse::cuda {

namespace {

// Blocks for `work_threads` threads of useful work, capped at a resident grid (grid-stride loops
// take the rest).
int grid_for(int64_t work_threads, const StreamLaunch& cfg, int num_sms) {
  const int64_t want = (work_threads + cfg.block - 1) / cfg.block;
  const int64_t cap = static_cast<int64_t>(std::max(num_sms, 1)) * cfg.blocks_per_sm;
  return static_cast<int>(std::max<int64_t>(1, std::min(want, cap)));
}

template <class In, int G, int kUnroll, GroupMap kMap, bool kPrefetch = false>
void launch_vec(const Fp8GroupParams& p, int num_sms, cudaStream_t stream,
                const StreamLaunch& cfg) {
  constexpr int kVecsPerGroup = G / In::kPer16B;
  constexpr int kLanes = kVecsPerGroup < 32 ? kVecsPerGroup : 32;
  int64_t threads;
  if constexpr (kMap == GroupMap::kTiled) {
    const int64_t tokens_per_tile = cfg.block / kLanes;
    const int64_t tiles =
        (p.t_pad + tokens_per_tile - 1) / tokens_per_tile * ((p.groups + kUnroll - 1) / kUnroll);
    threads = tiles * cfg.block;
  } else {
    threads = (static_cast<int64_t>(p.t_pad) * p.groups * kLanes + kUnroll - 1) / kUnroll;
  }
  const int grid = grid_for(threads, cfg, num_sms);
  quant_fp8_group_vec_kernel<In, G, kUnroll, kMap, kPrefetch><<<grid, cfg.block, 0, stream>>>(p);
  MLAFUSE_CUDA_CHECK_LAUNCH("quant_fp8_group_vec_kernel");
}

template <class In, int G, int kUnroll>
void launch_map(const Fp8GroupParams& p, int num_sms, cudaStream_t stream,
                const StreamLaunch& cfg) {
  if (cfg.prefetch) {
    if constexpr (kUnroll <= 4) {
      switch (cfg.map) {
        case 1:
          return launch_vec<In, G, kUnroll, GroupMap::kContiguous, true>(p, num_sms, stream, cfg);
        case 2:
          return launch_vec<In, G, kUnroll, GroupMap::kTiled, true>(p, num_sms, stream, cfg);
        default:
          break;
      }
    }
    MLAFUSE_FAIL("quant_fp8_group: prefetch takes map 1 or 2 with unroll <= 4 (got map ", cfg.map,
                 ", unroll ", kUnroll, ")");
  }
  switch (cfg.map) {
    case 0:
      return launch_vec<In, G, kUnroll, GroupMap::kStrided>(p, num_sms, stream, cfg);
    case 1:
      return launch_vec<In, G, kUnroll, GroupMap::kContiguous>(p, num_sms, stream, cfg);
    case 2:
      return launch_vec<In, G, kUnroll, GroupMap::kTiled>(p, num_sms, stream, cfg);
    default:
      MLAFUSE_FAIL("quant_fp8_group: map ", cfg.map, " is not one of 0, 1, 2");
  }
}

// Every launch shape for bf16 with G = 64 / 128 (tuned and swept by the benchmark); the three
// shapes the defaults use for the other inputs and groups.
template <class In, int G>
void launch_unroll(const Fp8GroupParams& p, int num_sms, cudaStream_t stream,
                   const StreamLaunch& cfg) {
  if constexpr (std::is_same_v<In, Bf16In> && (G == 64 || G == 128)) {
    switch (cfg.unroll) {
      case 1:
        return launch_map<In, G, 1>(p, num_sms, stream, cfg);
      case 2:
        return launch_map<In, G, 2>(p, num_sms, stream, cfg);
      case 4:
        return launch_map<In, G, 4>(p, num_sms, stream, cfg);
      case 8:
        return launch_map<In, G, 8>(p, num_sms, stream, cfg);
      default:
        MLAFUSE_FAIL("quant_fp8_group: unroll ", cfg.unroll, " is not one of 1, 2, 4, 8");
    }
  } else {
    if (cfg.unroll == 1) {
      return launch_vec<In, G, 1, GroupMap::kContiguous>(p, num_sms, stream, cfg);
    }
    if (cfg.map == 2) return launch_vec<In, G, 2, GroupMap::kTiled, true>(p, num_sms, stream, cfg);
    return launch_vec<In, G, 2, GroupMap::kContiguous, true>(p, num_sms, stream, cfg);
  }
}

template <class In>
void launch_for_dtype(const Fp8GroupParams& p, int64_t group, int num_sms, cudaStream_t stream,
                      const StreamLaunch& cfg) {
  switch (group) {
    case 16:
      return launch_unroll<In, 16>(p, num_sms, stream, cfg);
    case 32:
      return launch_unroll<In, 32>(p, num_sms, stream, cfg);
    case 64:
      return launch_unroll<In, 64>(p, num_sms, stream, cfg);
    case 128:
      return launch_unroll<In, 128>(p, num_sms, stream, cfg);
    case 256:
      return launch_unroll<In, 256>(p, num_sms, stream, cfg);
    default: {
      const int64_t units = static_cast<int64_t>(p.t_pad) * p.groups;
      const int grid = grid_for(units * 32, cfg, num_sms);
      quant_fp8_group_any_kernel<In>
          <<<grid, cfg.block, 0, stream>>>(p, static_cast<int32_t>(group));
      MLAFUSE_CUDA_CHECK_LAUNCH("quant_fp8_group_any_kernel");
    }
  }
}

// Fills in the automatic choices, from the H100 sweep of bench_quant (docs/PERF.md). What decides
// the speed is resident threads: the kernel is latency-bound per thread (load, reduce, divide,
// encode), so shapes that keep the kernel at <= 32 registers (full occupancy) win, and prefetching
// the next round, which needs more registers, lost.
// - Problems that fit in one resident wave with one group per thread (T <= ~128 at D = 16384):
//   one group per thread, contiguous walk (latency decides there).
// - Larger, column-major scales: 2 groups per thread on the tiled walk (each group's scales go out
//   as a run of consecutive tokens): the fastest measured at T = 1024 and 8192.
// - Larger, row-major scales: 8 groups per thread, contiguous walk (fastest measured at 8192).
// Inputs other than bf16 G = 64 / 128 take the shapes they have (unroll 1, or 2 with prefetch).
StreamLaunch resolve_group_launch(const QuantFp8GroupArgs& a, int num_sms,
                                  const StreamLaunch& cfg) {
  StreamLaunch r = cfg;
  const int64_t vec = a.x_dtype == DType::kF32 ? 4 : 8;
  const int64_t lanes = std::min<int64_t>(32, std::max<int64_t>(1, a.group / vec));
  const int64_t threads_one_each = a.t_pad * (a.d / a.group) * lanes;
  const bool small = threads_one_each <= static_cast<int64_t>(std::max(num_sms, 1)) * 2048;
  if (r.unroll == 0) {
    r.unroll = small ? 1 : (a.col_major ? 2 : 8);
    r.prefetch = false;
  }
  if (r.map < 0) r.map = (r.unroll == 1 || !a.col_major) ? 1 : 2;
  return r;
}

}  // namespace

void launch_quant_fp8_group(const QuantFp8GroupArgs& a, int num_sms, cudaStream_t stream,
                            const StreamLaunch& cfg) {
  MLAFUSE_CHECK(cfg.block > 0 && cfg.block % 32 == 0 && cfg.block <= 256,
                "quant_fp8_group: block size ", cfg.block,
                " must be a multiple of 32, at most 256");
  if (a.t_pad == 0) return;
  const StreamLaunch shape = resolve_group_launch(a, num_sms, cfg);
  Fp8GroupParams p{};
  p.x = a.x;
  p.q = a.q;
  p.s = a.s;
  p.t_pad = static_cast<int32_t>(a.t_pad);
  p.d = static_cast<int32_t>(a.d);
  p.groups = static_cast<int32_t>(a.d / a.group);
  const GroupScaleLayout layout{a.t_pad, a.d / a.group, a.col_major, a.tma_aligned};
  p.col_major = a.col_major;
  p.group_stride = layout.group_stride();
  p.num_tokens = static_cast<int32_t>(a.num_tokens);
  p.num_tokens_device = a.num_tokens_device;
  p.eps = a.eps;
  p.ue8m0 = a.ue8m0;
  switch (a.x_dtype) {
    case DType::kBF16:
      return launch_for_dtype<Bf16In>(p, a.group, num_sms, stream, shape);
    case DType::kF16:
      return launch_for_dtype<F16In>(p, a.group, num_sms, stream, shape);
    case DType::kF32:
      return launch_for_dtype<F32In>(p, a.group, num_sms, stream, shape);
    default:
      MLAFUSE_FAIL("quant_fp8_group: x dtype ", dtype_name(a.x_dtype), " is not bf16/f16/f32");
  }
}

void run_quant_fp8_group(const OpCall& call, const RunContext& ctx, DeviceContext& dc) {
  namespace io = ir::quant_fp8_group;
  namespace qfg_attr = io::attr;
  check_arity(call, 1, 2);
  const Tensor& x = call.inputs[io::in::kX];
  Tensor& q = call.outputs[io::out::kQ];
  Tensor& s = call.outputs[io::out::kS];
  check_activation(x, "x", 2);
  const int64_t t_pad = x.dim(0);
  const int64_t d = x.dim(1);
  const int64_t g = call.attrs.get<int64_t>(qfg_attr::kGroupSize);
  MLAFUSE_CHECK(g > 0 && g % 16 == 0 && d % g == 0, "quant_fp8_group: group_size ", g,
                " must be a positive multiple of 16 dividing the last dim of x ", x.str());
  const bool ue8m0 = call.attrs.get_or<bool>(qfg_attr::kUe8m0, false);
  const bool col_major = call.attrs.get_or<bool>(qfg_attr::kColMajor, false);
  const bool tma_aligned = call.attrs.get_or<bool>(qfg_attr::kTmaAligned, false);
  const double eps = call.attrs.get_or<double>(qfg_attr::kEps, kDefaultQuantEps);
  // eps >= 1e-18 keeps every scale a normal f32, which the exact division in the epilogue needs.
  MLAFUSE_CHECK(std::isfinite(eps) && eps >= 1e-18 && eps <= 1e18, "quant_fp8_group: eps ", eps,
                " must be in [1e-18, 1e18] on the CUDA backend");
  const int64_t groups = d / g;
  check_codes(q, "q", DType::kFp8E4M3, {t_pad, d});
  check_cuda_tensor(s, "s");
  check_dtype(s, "s", DType::kF32);
  check_shape(s, "s", {t_pad, groups});
  const GroupScaleLayout layout{t_pad, groups, col_major, tma_aligned};
  const int64_t want[2] = {layout.token_stride(), layout.group_stride()};
  for (size_t i = 0; i < 2; ++i) {
    MLAFUSE_CHECK(s.dim(i) <= 1 || s.strides()[i] == want[i], "tensor s ", s.str(), " has strides ",
                  shape_str(s.strides()), "; the ",
                  col_major ? (tma_aligned ? "col_major tma_aligned" : "col_major") : "row_major",
                  " scale layout for ", t_pad, " tokens needs strides ",
                  shape_str({want[0], want[1]}));
  }
  check_int32_range(t_pad * groups, "quant_fp8_group: tokens x groups");
  check_int32_range(d, "quant_fp8_group: D");
  const int64_t n = checked_num_tokens(ctx, t_pad, "x");

  QuantFp8GroupArgs a;
  a.x = x.raw();
  a.x_dtype = x.dtype();
  a.q = static_cast<uint8_t*>(q.raw());
  a.s = static_cast<float*>(s.raw());
  a.t_pad = t_pad;
  a.d = d;
  a.group = g;
  a.ue8m0 = ue8m0;
  a.col_major = col_major;
  a.tma_aligned = tma_aligned;
  a.eps = static_cast<float>(eps);
  a.num_tokens = n;
  a.num_tokens_device = ctx.num_tokens_device;
  launch_quant_fp8_group(a, dc.num_sms, dc.stream_for(ctx));
}

}  // namespace mlafuse::cuda
