// GPU tests of the quantization epilogue and the standalone quant ops (SPEC 3, 6).
//
// - The epilogue's hardware e4m3 encode equals codecs.h's f32_to_e4m3 for every one of the 2^32
//   f32 bit patterns (NaN included), and its division equals __fdiv_rn on 2^30 random pairs.
// - quant_fp8_group / quant_fp8_static / quant_nvfp4 on the CUDA backend equal the CPU reference
//   backend byte for byte over the whole output buffers (padding included), for T in {1, 3, 7,
//   64, 255, 256, 1000, 8192}, D in {2048, 16384}, every dtype and scale layout, padded batches
//   (n < T_pad, n read from device memory), NaN/Inf inputs, and CUDA-graph replay with varying n.
// - Bad arguments are rejected with errors naming the tensor.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <string>
#include <vector>

#include "backends/cuda/quant_epilogue.cuh"
#include "backends/cuda/quant_kernels.h"
#include "gpu/common/gpu_harness.h"
#include "mlafuse/backends/cpu/cpu_backend.h"
#include "mlafuse/backends/cuda/cuda_backend.h"
#include "mlafuse/backends/cuda/cuda_check.h"
#include "mlafuse/quant/codecs.h"
#include "mlafuse/quant/scale_layout.h"

namespace mlafuse {
namespace {

using gpu_test::OpCase;
using gpu_test::Specials;
using gpu_test::TensorSpec;

// ---- the epilogue, exhaustively -----------------------------------------------------------
struct Mismatches {
  unsigned long long count;
  unsigned int first_input;
  unsigned int first_got;
  unsigned int first_want;
};

__device__ void record(Mismatches* m, uint32_t input, uint32_t got, uint32_t want) {
  if (atomicAdd(&m->count, 1ull) == 0) {
    m->first_input = input;
    m->first_got = got;
    m->first_want = want;
  }
}

// Every f32 bit pattern u: encode_e4m3 (hardware cvt + NaN rule) == f32_to_e4m3 (codecs.h); the
// raw cvt agrees on every non-NaN; and the 4-wide encode puts each code in its byte.
// (`count` patterns u = i * step: all 2^32 with step 1; a spread sample under compute-sanitizer.)
__global__ void e4m3_exhaustive_kernel(uint64_t count, uint32_t step, Mismatches* single,
                                       Mismatches* quad) {
  const uint64_t stride = static_cast<uint64_t>(gridDim.x) * blockDim.x;
  for (uint64_t i = static_cast<uint64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < count;
       i += stride) {
    const uint32_t u = static_cast<uint32_t>(i) * step;
    const float f = __uint_as_float(u);
    const uint32_t want = f32_to_e4m3(f);
    const uint32_t got = cuda::qe::encode_e4m3(f, f);
    if (got != want) record(single, u, got, want);
    if (!isnan(f) && (cuda::qe::cvt_e4m3x2(f, 0.0f) & 0xffu) != want) {
      record(single, u, cuda::qe::cvt_e4m3x2(f, 0.0f) & 0xffu, want);
    }
    const float g = __uint_as_float(u ^ 0x80000000u), h = __uint_as_float(u * 2654435761u),
                k = __uint_as_float(~u);
    const uint32_t packed = cuda::qe::encode_e4m3x4(f, g, h, k, f, g, h, k);
    const uint32_t expect = want | (static_cast<uint32_t>(f32_to_e4m3(g)) << 8) |
                            (static_cast<uint32_t>(f32_to_e4m3(h)) << 16) |
                            (static_cast<uint32_t>(f32_to_e4m3(k)) << 24);
    if (packed != expect) record(quad, u, packed, expect);
  }
}

__device__ uint32_t hash32(uint64_t x) {
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdull;
  x ^= x >> 33;
  x *= 0xc4ceb9fe1a85ec53ull;
  x ^= x >> 33;
  return static_cast<uint32_t>(x);
}

// Random amax over the whole range a group can have (eps 1e-18 up to the largest finite) and x with
// |x| <= amax (down to subnormals and zeros): the e4m3 code of quotient(x, scale) equals the code
// of __fdiv_rn(x, s) always, and the quotients are equal bit for bit when |x / s| >= 2^-30 (below,
// a subnormal quotient or an underflowing Markstein residual may cost an ulp; such quotients code
// to +-0 anyway, e4m3's smallest step being 2^-9), both modes.
__global__ void quotient_kernel(uint64_t samples, Mismatches* m) {
  const uint64_t stride = static_cast<uint64_t>(gridDim.x) * blockDim.x;
  for (uint64_t i = static_cast<uint64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < samples;
       i += stride) {
    const uint32_t r0 = hash32(2 * i), r1 = hash32(2 * i + 1);
    // amax exponent in [-60, 127], random mantissa
    const uint32_t ea = 67 + r0 % 188;
    const float amax = __uint_as_float(ea < 255 ? (ea << 23) | (r1 & 0x7fffffu) : 0x7f7fffffu);
    float x;
    switch (r0 >> 30) {
      case 0:
        x = amax;
        break;
      case 1:
        x = __uint_as_float(r1 & 0x7fffffffu);
        break;  // any magnitude, clipped below
      case 2:
        x = amax * __uint_as_float(0x3f800000u | (r1 >> 9)) * 0.5f;
        break;
      default:
        x = __uint_as_float(__float_as_uint(amax) - (r1 % (40u << 23)));
        break;
    }
    if (!(fabsf(x) <= amax) || isnan(x)) x = amax * 0.75f;
    if (r1 & 1u) x = -x;
    if ((r0 & 0xffffu) == 7u) x = (r1 & 2u) ? -0.0f : 0.0f;
    for (int ue8m0 = 0; ue8m0 < 2; ++ue8m0) {
      const cuda::qe::Fp8GroupScale sc = cuda::qe::fp8_group_scale(amax, 1e-18f, ue8m0 != 0);
      const float got = cuda::qe::quotient(x, sc);
      const float want = __fdiv_rn(x, sc.s);
      const bool tiny = fabsf(want) < 0x1p-30f;
      if ((!tiny && __float_as_uint(got) != __float_as_uint(want)) ||
          cuda::qe::encode_e4m3(got, x) != f32_to_e4m3(want)) {
        record(m, __float_as_uint(x), __float_as_uint(got), __float_as_uint(want));
      }
    }
  }
}

TEST(QuantEpilogue, HardwareE4m3EqualsCodecForEveryF32) {
  MLAFUSE_SKIP_WITHOUT_GPU();
  Mismatches* d = nullptr;
  MLAFUSE_CUDA_CHECK(cudaMalloc(&d, 2 * sizeof(Mismatches)));
  MLAFUSE_CUDA_CHECK(cudaMemset(d, 0, 2 * sizeof(Mismatches)));
  if (gpu_test::small_shapes()) {
    e4m3_exhaustive_kernel<<<132 * 8, 256>>>(1ull << 22, 1021u, d, d + 1);
  } else {
    e4m3_exhaustive_kernel<<<132 * 8, 256>>>(1ull << 32, 1u, d, d + 1);
  }
  MLAFUSE_CUDA_CHECK(cudaGetLastError());
  Mismatches h[2];
  MLAFUSE_CUDA_CHECK(cudaMemcpy(h, d, sizeof(h), cudaMemcpyDeviceToHost));
  cudaFree(d);
  EXPECT_EQ(h[0].count, 0u) << "first: f32 bits 0x" << std::hex << h[0].first_input << " got 0x"
                            << h[0].first_got << " want 0x" << h[0].first_want;
  EXPECT_EQ(h[1].count, 0u) << "4-wide, first: f32 bits 0x" << std::hex << h[1].first_input
                            << " got 0x" << h[1].first_got << " want 0x" << h[1].first_want;
}

TEST(QuantEpilogue, QuotientEqualsCorrectlyRoundedDivision) {
  MLAFUSE_SKIP_WITHOUT_GPU();
  Mismatches* d = nullptr;
  MLAFUSE_CUDA_CHECK(cudaMalloc(&d, sizeof(Mismatches)));
  MLAFUSE_CUDA_CHECK(cudaMemset(d, 0, sizeof(Mismatches)));
  const uint64_t samples = gpu_test::small_shapes() ? (1ull << 20) : (1ull << 30);
  quotient_kernel<<<132 * 8, 256>>>(samples, d);
  MLAFUSE_CUDA_CHECK(cudaGetLastError());
  Mismatches h;
  MLAFUSE_CUDA_CHECK(cudaMemcpy(&h, d, sizeof(h), cudaMemcpyDeviceToHost));
  cudaFree(d);
  EXPECT_EQ(h.count, 0u) << "first: x bits 0x" << std::hex << h.first_input << " got 0x"
                         << h.first_got << " want 0x" << h.first_want;
}

// ---- ops against the CPU reference backend ------------------------------------------------
class QuantOps : public ::testing::Test {
 protected:
  void SetUp() override {
    MLAFUSE_SKIP_WITHOUT_GPU();
    cpu_ = make_cpu_backend();
    cuda_ = make_cuda_backend();
  }
  std::unique_ptr<Backend> cpu_, cuda_;
};

struct GroupConfig {
  DType dtype;
  int64_t group;
  bool col_major, tma_aligned, ue8m0;
};

std::string describe(const GroupConfig& g) {
  return detail::concat(
      dtype_name(g.dtype), " G=", g.group,
      g.col_major ? (g.tma_aligned ? " col_major_tma" : " col_major") : " row_major",
      g.ue8m0 ? " ue8m0" : "");
}

OpCase group_case(const GroupConfig& g, int64_t t_pad, int64_t d, int64_t n, uint64_t seed,
                  Specials specials = {}) {
  OpCase c;
  c.op = "quant_fp8_group";
  c.attrs.set("group_size", g.group);
  c.attrs.set("ue8m0", g.ue8m0);
  c.attrs.set("col_major", g.col_major);
  c.attrs.set("tma_aligned", g.tma_aligned);
  c.inputs = {gpu_test::random_activations(g.dtype, t_pad, d, seed, specials)};
  const Layout layout =
      !g.col_major ? Layout::kRowMajor : (g.tma_aligned ? Layout::kColMajorTma : Layout::kColMajor);
  c.outputs = {TensorSpec::contiguous(DType::kFp8E4M3, {t_pad, d}),
               TensorSpec::layout(DType::kF32, layout, {t_pad, d / g.group})};
  c.n = n;
  c.t_pad = t_pad;
  return c;
}

// The default (DeepGEMM / cuBLASLt layout) and the Triton-style layout over the whole sweep.
TEST_F(QuantOps, Fp8GroupSweep) {
  const GroupConfig configs[] = {{DType::kBF16, 128, true, true, false},
                                 {DType::kBF16, 64, false, false, true}};
  uint64_t seed = 1;
  for (const GroupConfig& g : configs) {
    for (int64_t d : gpu_test::hidden_sizes()) {
      for (int64_t t : gpu_test::token_counts()) {
        SCOPED_TRACE(describe(g) + " T=" + std::to_string(t) + " D=" + std::to_string(d));
        const bool big = t * d > (1 << 24);
        gpu_test::expect_backends_bitwise_equal(*cpu_, *cuda_, group_case(g, t, d, t, seed++),
                                                !big);
        // A padded batch: n < T_pad, n from device memory.
        if (t > 1 && !big) {
          OpCase c = group_case(g, t, d, t - 1 - t / 3, seed++);
          c.n_on_device = true;
          gpu_test::expect_backends_bitwise_equal(*cpu_, *cuda_, c);
        }
      }
    }
  }
}

// Every dtype x layout x ue8m0 combination at a few sizes.
TEST_F(QuantOps, Fp8GroupAllLayoutsAndDtypes) {
  uint64_t seed = 100;
  for (DType dtype : {DType::kBF16, DType::kF16, DType::kF32}) {
    for (int64_t group : {64, 128}) {
      for (int layout = 0; layout < 3; ++layout) {
        for (bool ue8m0 : {false, true}) {
          const GroupConfig g{dtype, group, layout > 0, layout == 2, ue8m0};
          for (int64_t t : {int64_t{1}, int64_t{7}, int64_t{255}}) {
            SCOPED_TRACE(describe(g) + " T=" + std::to_string(t));
            gpu_test::expect_backends_bitwise_equal(*cpu_, *cuda_,
                                                    group_case(g, t, 2048, t, seed++));
            OpCase c = group_case(g, t, 2048, t / 2, seed++);
            c.n_on_device = true;
            gpu_test::expect_backends_bitwise_equal(*cpu_, *cuda_, c);
          }
        }
      }
    }
  }
}

// Group sizes off the fast path (and the other fast ones): any multiple of 16 dividing D.
TEST_F(QuantOps, Fp8GroupOtherGroupSizes) {
  uint64_t seed = 300;
  for (DType dtype : {DType::kBF16, DType::kF32}) {
    for (int64_t group : {16, 32, 48, 80, 112, 256, 560, 1680}) {
      const int64_t d = 3360;  // divisible by every group above
      if (d % group != 0) continue;
      for (bool col_major : {false, true}) {
        const GroupConfig g{dtype, group, col_major, col_major, false};
        SCOPED_TRACE(describe(g));
        gpu_test::expect_backends_bitwise_equal(*cpu_, *cuda_, group_case(g, 37, d, 37, seed++));
        OpCase c = group_case(g, 64, d, 13, seed++);
        c.n_on_device = true;
        gpu_test::expect_backends_bitwise_equal(*cpu_, *cuda_, c);
      }
    }
  }
  // G = 256 and 2048 with D = 2048: one group per 8 vectors per lane / one group per row.
  for (int64_t group : {256, 512, 2048}) {
    const GroupConfig g{DType::kBF16, group, true, true, true};
    SCOPED_TRACE(describe(g));
    gpu_test::expect_backends_bitwise_equal(*cpu_, *cuda_, group_case(g, 100, 2048, 100, seed++));
  }
}

TEST_F(QuantOps, Fp8GroupNanInfAndSpecials) {
  uint64_t seed = 500;
  for (DType dtype : {DType::kBF16, DType::kF16, DType::kF32}) {
    for (int64_t group : {64, 128, 48}) {
      for (bool ue8m0 : {false, true}) {
        const GroupConfig g{dtype, group, true, true, ue8m0};
        SCOPED_TRACE(describe(g));
        for (double rate : {0.002, 0.05, 0.5}) {
          gpu_test::expect_backends_bitwise_equal(
              *cpu_, *cuda_,
              group_case(g, 64, group == 48 ? 1920 : 2048, 64, seed++, Specials{rate}));
        }
      }
    }
  }
}

// Capture once at T_pad = 256, replay with different real counts written to device memory.
TEST_F(QuantOps, Fp8GroupGraphReplayReadsTokenCount) {
  const int64_t t_pad = 256, d = 2048;
  const GroupConfig g{DType::kBF16, 128, true, true, false};
  OpCase c = group_case(g, t_pad, d, t_pad, 900);
  gpu_test::GuardedBuffer x(TensorSpec::contiguous(DType::kBF16, {t_pad, d}));
  x.upload(c.inputs[0]);
  gpu_test::GuardedBuffer q(c.outputs[0]), s(c.outputs[1]);
  gpu_test::GuardedBuffer n_dev(TensorSpec::contiguous(DType::kI32, {1}));
  std::vector<Tensor> ins = {x.tensor()};
  std::vector<Tensor> outs = {q.tensor(), s.tensor()};
  RunContext ctx;
  ctx.num_tokens = t_pad;
  ctx.num_tokens_device = n_dev.tensor().data<int32_t>();
  n_dev.upload(gpu_test::i32_tensor({static_cast<int32_t>(t_pad)}));
  cuda_->run(OpCall{c.op, c.attrs, ins, outs}, ctx);  // warm-up outside the capture
  cuda_->synchronize();
  auto graph = cuda_->capture([&] { cuda_->run(OpCall{c.op, c.attrs, ins, outs}, ctx); });
  ASSERT_NE(graph, nullptr);
  for (int64_t n : {int64_t{0}, int64_t{1}, int64_t{100}, int64_t{255}, int64_t{256}}) {
    SCOPED_TRACE("n=" + std::to_string(n));
    n_dev.upload(gpu_test::i32_tensor({static_cast<int32_t>(n)}));
    q.poison(0xff);
    s.poison(0xff);
    graph->replay();
    cuda_->synchronize();
    c.n = n;
    const gpu_test::Outputs ref = gpu_test::run_reference(*cpu_, c, 0xff);
    EXPECT_TRUE(gpu_test::bitwise_equal(ref[0], q.download(), "q"));
    EXPECT_TRUE(gpu_test::bitwise_equal(ref[1], s.download(), "s"));
    EXPECT_EQ(q.guard_damage(), "");
    EXPECT_EQ(s.guard_damage(), "");
  }
}

// Every launch shape of the group kernel (walk x groups in flight x block size) gives the same
// bytes as the reference, including padded batches with n on the device: the benchmark's sweep
// only times correct kernels, and any of them can become the default.
TEST_F(QuantOps, Fp8GroupEveryLaunchShape) {
  uint64_t seed = 700;
  for (int64_t group : {64, 128}) {
    for (bool col_major : {false, true}) {
      const GroupConfig g{DType::kBF16, group, col_major, col_major, false};
      for (int64_t n : {int64_t{77}, int64_t{50}}) {
        const OpCase c = group_case(g, 77, 2048, n, seed++);
        const gpu_test::Outputs ref = gpu_test::run_reference(*cpu_, c, 0xff);
        gpu_test::GuardedBuffer x(TensorSpec::contiguous(DType::kBF16, {77, 2048}));
        x.upload(c.inputs[0]);
        gpu_test::GuardedBuffer q(c.outputs[0]), s(c.outputs[1]);
        gpu_test::GuardedBuffer n_dev(TensorSpec::contiguous(DType::kI32, {1}));
        n_dev.upload(gpu_test::i32_tensor({static_cast<int32_t>(n)}));
        for (int map : {0, 1, 2}) {
          for (int unroll : {1, 2, 4, 8}) {
            for (int block : {256, 128}) {
              for (bool prefetch : {false, true}) {
                if (prefetch && (map == 0 || unroll > 4)) continue;  // not offered
                SCOPED_TRACE(describe(g) + " n=" + std::to_string(n) +
                             " map=" + std::to_string(map) + " unroll=" + std::to_string(unroll) +
                             " block=" + std::to_string(block) +
                             " prefetch=" + std::to_string(prefetch));
                q.poison(0xff);
                s.poison(0xff);
                cuda::QuantFp8GroupArgs a;
                a.x = x.tensor().raw();
                a.q = q.tensor().data<uint8_t>();
                a.s = s.tensor().data<float>();
                a.t_pad = 77;
                a.d = 2048;
                a.group = group;
                a.col_major = col_major;
                a.tma_aligned = col_major;
                a.num_tokens = 77;  // ignored: n comes from the device
                a.num_tokens_device = n_dev.tensor().data<int32_t>();
                // Few blocks per SM, so the grid-stride loops take several rounds.
                cuda::launch_quant_fp8_group(a, 2, nullptr,
                                             cuda::StreamLaunch{block, unroll, 1, map, prefetch});
                MLAFUSE_CUDA_CHECK(cudaDeviceSynchronize());
                EXPECT_TRUE(gpu_test::bitwise_equal(ref[0], q.download(), "q"));
                EXPECT_TRUE(gpu_test::bitwise_equal(ref[1], s.download(), "s"));
                EXPECT_EQ(q.guard_damage(), "");
                EXPECT_EQ(s.guard_damage(), "");
              }
            }
          }
        }
      }
    }
  }
}

OpCase static_case(DType dtype, int64_t t_pad, int64_t d, int64_t n, float scale, uint64_t seed,
                   Specials specials = {}) {
  OpCase c;
  c.op = "quant_fp8_static";
  c.inputs = {gpu_test::random_activations(dtype, t_pad, d, seed, specials),
              gpu_test::scalar_f32(scale)};
  c.outputs = {TensorSpec::contiguous(DType::kFp8E4M3, {t_pad, d})};
  c.n = n;
  c.t_pad = t_pad;
  return c;
}

TEST_F(QuantOps, Fp8StaticSweep) {
  uint64_t seed = 1000;
  for (int64_t d : gpu_test::hidden_sizes()) {
    for (int64_t t : gpu_test::token_counts()) {
      SCOPED_TRACE("T=" + std::to_string(t) + " D=" + std::to_string(d));
      const bool big = t * d > (1 << 24);
      gpu_test::expect_backends_bitwise_equal(
          *cpu_, *cuda_, static_case(DType::kBF16, t, d, t, 0.0173f, seed++), !big);
      if (t > 1 && !big) {
        OpCase c = static_case(DType::kBF16, t, d, t / 2, 1.37f, seed++);
        c.n_on_device = true;
        gpu_test::expect_backends_bitwise_equal(*cpu_, *cuda_, c);
      }
    }
  }
  for (DType dtype : {DType::kF16, DType::kF32}) {
    for (int64_t d : {int64_t{2048}, int64_t{100}, int64_t{3}}) {  // 100, 3: the scalar path
      SCOPED_TRACE(std::string(dtype_name(dtype)) + " D=" + std::to_string(d));
      gpu_test::expect_backends_bitwise_equal(*cpu_, *cuda_,
                                              static_case(dtype, 37, d, 37, 0.25f, seed++));
      OpCase c = static_case(dtype, 37, d, 20, 3.0f, seed++);
      c.n_on_device = true;
      gpu_test::expect_backends_bitwise_equal(*cpu_, *cuda_, c);
    }
  }
  for (DType dtype : {DType::kBF16, DType::kF16, DType::kF32}) {
    SCOPED_TRACE(std::string(dtype_name(dtype)) + " specials");
    gpu_test::expect_backends_bitwise_equal(
        *cpu_, *cuda_, static_case(dtype, 64, 2048, 64, 0.011f, seed++, Specials{0.05}));
  }
}

OpCase nvfp4_case(DType dtype, int64_t t_pad, int64_t d, int64_t n, float gs, uint64_t seed,
                  Specials specials = {}) {
  OpCase c;
  c.op = "quant_nvfp4";
  c.inputs = {gpu_test::random_activations(dtype, t_pad, d, seed, specials),
              gpu_test::scalar_f32(gs)};
  c.outputs = {TensorSpec::contiguous(DType::kFp4E2M1x2, {t_pad, d / 2}),
               TensorSpec::layout(DType::kFp8E4M3, Layout::kNvfp4Swizzled, {t_pad, d / 16})};
  c.n = n;
  c.t_pad = t_pad;
  return c;
}

TEST_F(QuantOps, Nvfp4Sweep) {
  uint64_t seed = 2000;
  // Inputs reach 2^8 * ~4: GS = 448 * 6 / 1024 keeps block scales inside e4m3's range; 2.0 makes
  // large blocks saturate the scale and small ones underflow it (both must match too).
  for (int64_t d : gpu_test::hidden_sizes()) {
    for (int64_t t : gpu_test::token_counts()) {
      SCOPED_TRACE("T=" + std::to_string(t) + " D=" + std::to_string(d));
      const bool big = t * d > (1 << 24);
      gpu_test::expect_backends_bitwise_equal(
          *cpu_, *cuda_, nvfp4_case(DType::kBF16, t, d, t, 2.625f, seed++), !big);
      if (t > 1 && !big) {
        OpCase c = nvfp4_case(DType::kBF16, t, d, t - 1 - t / 5, 2.0f, seed++);
        c.n_on_device = true;
        gpu_test::expect_backends_bitwise_equal(*cpu_, *cuda_, c);
      }
    }
  }
  for (DType dtype : {DType::kF16, DType::kF32}) {
    for (int64_t d : {int64_t{2048}, int64_t{48}, int64_t{80}}) {  // 48, 80: padded scale columns
      SCOPED_TRACE(std::string(dtype_name(dtype)) + " D=" + std::to_string(d));
      gpu_test::expect_backends_bitwise_equal(*cpu_, *cuda_,
                                              nvfp4_case(dtype, 130, d, 130, 2.625f, seed++));
      OpCase c = nvfp4_case(dtype, 300, d, 129, 2.625f, seed++);
      c.n_on_device = true;
      gpu_test::expect_backends_bitwise_equal(*cpu_, *cuda_, c);
    }
  }
  for (DType dtype : {DType::kBF16, DType::kF16, DType::kF32}) {
    SCOPED_TRACE(std::string(dtype_name(dtype)) + " specials");
    gpu_test::expect_backends_bitwise_equal(
        *cpu_, *cuda_, nvfp4_case(dtype, 64, 2048, 64, 2.625f, seed++, Specials{0.05}));
  }
}

// ---- argument validation ------------------------------------------------------------------
// Runs `c` on the CUDA backend expecting an mlafuse::Error whose message contains `needle`.
void expect_rejected(Backend& cuda, const OpCase& c, const std::string& needle) {
  try {
    gpu_test::run_cuda(cuda, c, 0xff);
    ADD_FAILURE() << c.op << ": expected an error mentioning '" << needle << "'";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos)
        << "message: " << e.what() << "\nexpected it to mention: " << needle;
  }
}

TEST_F(QuantOps, RejectsBadArguments) {
  const GroupConfig g{DType::kBF16, 128, true, true, false};
  {
    OpCase c = group_case(g, 8, 2048, 8, 1);
    c.inputs[0] = Tensor::empty(DType::kI32, {8, 2048});
    expect_rejected(*cuda_, c, "tensor x");
  }
  {
    OpCase c = group_case(g, 8, 2048, 8, 1);
    c.attrs.set("group_size", int64_t{24});
    expect_rejected(*cuda_, c, "group_size 24");
  }
  {
    OpCase c = group_case(g, 8, 2048, 8, 1);
    c.attrs.set("group_size", int64_t{96});  // a multiple of 16 that does not divide 2048
    expect_rejected(*cuda_, c, "group_size 96");
  }
  {
    OpCase c = group_case(g, 8, 2048, 8, 1);
    c.outputs[1] = TensorSpec::layout(DType::kF32, Layout::kRowMajor, {8, 16});  // flags: col
    expect_rejected(*cuda_, c, "tensor s");
  }
  {
    OpCase c = group_case(g, 8, 2048, 8, 1);
    c.outputs[0] = TensorSpec::contiguous(DType::kFp8E4M3, {8, 1024});
    expect_rejected(*cuda_, c, "tensor q");
  }
  {
    OpCase c = group_case(g, 8, 2048, 9, 1);  // n > T_pad
    expect_rejected(*cuda_, c, "real token count n = 9");
  }
  {
    OpCase c = group_case(g, 8, 2048, 8, 1);
    c.attrs.set("eps", 0.0);
    expect_rejected(*cuda_, c, "eps");
  }
  {
    OpCase c = group_case(g, 8, 2048, 8, 1);
    c.attrs.erase("group_size");
    expect_rejected(*cuda_, c, "group_size");
  }
  {
    OpCase c = group_case(g, 8, 2048, 8, 1);
    c.outputs.pop_back();
    expect_rejected(*cuda_, c, "takes 1 inputs and 2 outputs");
  }
  {
    OpCase c = static_case(DType::kBF16, 8, 2048, 8, 1.0f, 1);
    c.inputs[1] = Tensor::empty(DType::kF32, {2});
    expect_rejected(*cuda_, c, "tensor scale");
  }
  {
    OpCase c = nvfp4_case(DType::kBF16, 8, 40, 8, 1.0f, 1);
    c.outputs = {TensorSpec::contiguous(DType::kFp4E2M1x2, {8, 20}),
                 TensorSpec::contiguous(DType::kFp8E4M3, {128, 4})};
    expect_rejected(*cuda_, c, "multiple of 16");
  }
  {
    OpCase c = nvfp4_case(DType::kBF16, 8, 64, 8, 1.0f, 1);
    c.outputs[1] = TensorSpec::contiguous(DType::kFp8E4M3, {8, 4});  // not padded to 128 rows
    expect_rejected(*cuda_, c, "tensor sf");
  }
  // Host tensors handed to the CUDA backend.
  {
    OpCase c = group_case(g, 8, 2048, 8, 1);
    std::vector<Tensor> ins = {c.inputs[0]};
    std::vector<Tensor> outs = {gpu_test::host_filled(c.outputs[0], 0),
                                gpu_test::host_filled(c.outputs[1], 0)};
    RunContext ctx;
    ctx.num_tokens = 8;
    try {
      cuda_->run(OpCall{c.op, c.attrs, ins, outs}, ctx);
      ADD_FAILURE() << "host tensors accepted";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("device tensors"), std::string::npos) << e.what();
    }
  }
  // A view that is not 16-byte aligned.
  {
    gpu_test::GuardedBuffer x(TensorSpec::contiguous(DType::kBF16, {9, 2048}));
    Tensor view = x.tensor().view(DType::kBF16, {8, 2048}, {2048, 1}, 1);
    gpu_test::GuardedBuffer q(TensorSpec::contiguous(DType::kFp8E4M3, {8, 2048}));
    gpu_test::GuardedBuffer s(TensorSpec::layout(DType::kF32, Layout::kColMajorTma, {8, 16}));
    std::vector<Tensor> ins = {view};
    std::vector<Tensor> outs = {q.tensor(), s.tensor()};
    OpCase c = group_case(g, 8, 2048, 8, 1);
    RunContext ctx;
    ctx.num_tokens = 8;
    try {
      cuda_->run(OpCall{c.op, c.attrs, ins, outs}, ctx);
      ADD_FAILURE() << "misaligned view accepted";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("aligned"), std::string::npos) << e.what();
    }
  }
}

}  // namespace
}  // namespace mlafuse
