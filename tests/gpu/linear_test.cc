// GPU tests of the o_proj ops (SPEC 7, docs/ops.md): linear_fp8_block on cuBLASLt's block-scaled
// FP8 path and on the fallback kernel, and linear_nvfp4, against an f64 reference of the same
// formula (and the CPU backend where it runs the op).
//
// Tolerance: these are f32-accumulated GEMMs with a bf16 output, so each element must be within
// 2^-7 * |ref| + 2e-3 * rms(ref) of the f64 value (bf16 rounding is 2^-9 relative; the rest covers
// the tensor cores' accumulation order and f32 rounding over K <= 4096), and the normalized error
// ||y - ref|| / ||ref|| must stay under 5e-3. A wrong scale index or layout gives O(1) errors.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "backends/cuda/linear_ops.h"
#include "gpu/common/gpu_harness.h"
#include "mlafuse/backends/cpu/cpu_backend.h"
#include "mlafuse/backends/cuda/cuda_backend.h"
#include "mlafuse/backends/cuda/cuda_check.h"
#include "mlafuse/quant/codecs.h"
#include "mlafuse/quant/scale_layout.h"

namespace mlafuse {
namespace {

using gpu_test::OpCase;
using gpu_test::TensorSpec;

enum class ScaleKind { kColMajor, kColMajorTma, kRowMajor, kPerTensor };

struct Fp8Problem {
  int64_t t_pad, n, n_out, k, group;
  ScaleKind kind;
};

OpCase fp8_case(const Fp8Problem& p, uint64_t seed) {
  OpCase c;
  c.op = "linear_fp8_block";
  Tensor xq = gpu_test::random_fp8({p.t_pad, p.k}, seed);
  Tensor xs;
  if (p.kind == ScaleKind::kPerTensor) {
    xs = gpu_test::scalar_f32(0.0123f);
  } else {
    const Layout layout = p.kind == ScaleKind::kRowMajor   ? Layout::kRowMajor
                          : p.kind == ScaleKind::kColMajor ? Layout::kColMajor
                                                           : Layout::kColMajorTma;
    const TensorSpec spec = TensorSpec::layout(DType::kF32, layout, {p.t_pad, p.k / p.group});
    xs = gpu_test::host_filled(spec, 0);
    Tensor vals = gpu_test::random_positive({spec.storage_numel}, 1e-3f, 2e-2f, seed + 1);
    std::memcpy(xs.raw(), vals.raw(), vals.storage()->bytes);
  }
  c.inputs = {xq, xs, gpu_test::random_fp8({p.n_out, p.k}, seed + 2),
              gpu_test::random_positive({ceil_div(p.n_out, 128), ceil_div(p.k, 128)}, 1e-3f, 1e-2f,
                                        seed + 3)};
  c.outputs = {TensorSpec::contiguous(DType::kBF16, {p.t_pad, p.n_out})};
  c.n = p.n;
  c.t_pad = p.t_pad;
  return c;
}

// y[t, o] = sum_k (xq * xs) * (wq * ws) in f64, as a [T_pad, N] f32 tensor (rows >= n zero).
Tensor fp8_reference(const OpCase& c) {
  const Tensor& xq = c.inputs[0];
  const Tensor& xs = c.inputs[1];
  const Tensor& wq = c.inputs[2];
  const Tensor& ws = c.inputs[3];
  const int64_t t_pad = xq.dim(0), k = xq.dim(1), n_out = wq.dim(0);
  const bool per_tensor = xs.rank() == 1;
  const int64_t group = per_tensor ? k : k / xs.dim(1);
  Tensor y = Tensor::empty(DType::kF32, {t_pad, n_out});
  std::vector<double> w(static_cast<size_t>(n_out * k));
  for (int64_t o = 0; o < n_out; ++o) {
    for (int64_t i = 0; i < k; ++i) {
      w[static_cast<size_t>(o * k + i)] =
          static_cast<double>(e4m3_to_f32(wq.data<uint8_t>()[o * k + i])) *
          ws.data<float>()[(o / 128) * ceil_div(k, 128) + i / 128];
    }
  }
  std::vector<double> x(static_cast<size_t>(k));
  for (int64_t t = 0; t < c.n; ++t) {
    for (int64_t i = 0; i < k; ++i) {
      const float s = per_tensor
                          ? xs.data<float>()[0]
                          : xs.data<float>()[t * xs.strides()[0] + (i / group) * xs.strides()[1]];
      x[static_cast<size_t>(i)] =
          static_cast<double>(e4m3_to_f32(xq.data<uint8_t>()[t * k + i])) * s;
    }
    for (int64_t o = 0; o < n_out; ++o) {
      double acc = 0.0;
      const double* wr = w.data() + o * k;
      for (int64_t i = 0; i < k; ++i) acc += x[static_cast<size_t>(i)] * wr[i];
      y.data<float>()[t * n_out + o] = static_cast<float>(acc);
    }
  }
  return y;
}

double rms(const Tensor& y, int64_t rows) {
  double s = 0.0;
  const int64_t cols = y.dim(1);
  for (int64_t i = 0; i < rows * cols; ++i) s += double(y.data<float>()[i]) * y.data<float>()[i];
  return rows > 0 ? std::sqrt(s / double(rows * cols)) : 0.0;
}

// Rows [n, T_pad) of y still hold the poison (the fallback kernels write only real rows).
::testing::AssertionResult untouched_rows(const Tensor& y, int64_t n, uint8_t poison) {
  const size_t row_bytes = static_cast<size_t>(y.dim(1)) * 2;
  const auto* p = static_cast<const uint8_t*>(y.raw());
  for (size_t i = static_cast<size_t>(n) * row_bytes; i < static_cast<size_t>(y.dim(0)) * row_bytes;
       ++i) {
    if (p[i] != poison) {
      return ::testing::AssertionFailure()
             << "byte " << i << " of padded row " << i / row_bytes << " was written";
    }
  }
  return ::testing::AssertionSuccess();
}

class Linear : public ::testing::Test {
 protected:
  void SetUp() override {
    MLAFUSE_SKIP_WITHOUT_GPU();
    cpu_ = make_cpu_backend();
    cuda_ = make_cuda_backend();
  }
  void check(const OpCase& c, const Tensor& ref, bool padded_rows_untouched) {
    const gpu_test::Outputs dut = gpu_test::run_cuda(*cuda_, c, 0xff);
    const double scale = rms(ref, c.n);
    EXPECT_TRUE(gpu_test::close(ref, dut[0], c.n, 2e-3 * scale, 1.0 / 128, 5e-3, c.op + " vs f64"));
    if (padded_rows_untouched) {
      EXPECT_TRUE(untouched_rows(dut[0], c.n, 0xff));
    }
    if (cpu_->supports_op(c.op) && !c.n_on_device) {
      const gpu_test::Outputs cpu = gpu_test::run_reference(*cpu_, c, 0xff);
      EXPECT_TRUE(gpu_test::close(cpu[0], dut[0], c.n, 2e-3 * scale, 1.0 / 128, 5e-3,
                                  c.op + " vs the CPU backend"));
    }
  }
  std::unique_ptr<Backend> cpu_, cuda_;
};

// The layout the fused attention writes for o_proj: group 128, column-major, T % 4 == 0.
TEST_F(Linear, Fp8BlockCublasLtPath) {
  uint64_t seed = 1;
  for (int64_t t : {4, 64, 256}) {
    for (int64_t k : {2048, 4096}) {
      const Fp8Problem p{t, t, 512, k, 128, ScaleKind::kColMajorTma};
      SCOPED_TRACE("T=" + std::to_string(t) + " K=" + std::to_string(k));
      const OpCase c = fp8_case(p, seed += 10);
      check(c, fp8_reference(c), false);
    }
  }
  // The fast path is really cuBLASLt's (not the fallback) for this layout.
  const Fp8Problem p{64, 64, 256, 2048, 128, ScaleKind::kColMajor};
  const OpCase c = fp8_case(p, 99);
  gpu_test::GuardedBuffer xq(TensorSpec::contiguous(DType::kFp8E4M3, {64, 2048}));
  gpu_test::GuardedBuffer xs(TensorSpec::layout(DType::kF32, Layout::kColMajor, {64, 16}));
  gpu_test::GuardedBuffer wq(TensorSpec::contiguous(DType::kFp8E4M3, {256, 2048}));
  gpu_test::GuardedBuffer ws(TensorSpec::contiguous(DType::kF32, {2, 16}));
  gpu_test::GuardedBuffer y(TensorSpec::contiguous(DType::kBF16, {64, 256}));
  xq.upload(c.inputs[0]);
  xs.upload(c.inputs[1]);
  wq.upload(c.inputs[2]);
  ws.upload(c.inputs[3]);
  y.poison(0xff);
  cuda::DeviceContext dc;
  MLAFUSE_CUBLAS_CHECK(cublasLtCreate(&dc.cublaslt));
  const bool taken = cuda::linear_fp8_block_cublaslt(
      dc, nullptr, xq.tensor().raw(), xs.tensor().data<float>(), wq.tensor().raw(),
      ws.tensor().data<float>(), y.tensor().raw(), 64, 256, 2048);
  MLAFUSE_CUDA_CHECK(cudaDeviceSynchronize());
  EXPECT_TRUE(taken) << "cuBLASLt offered no block-scaled FP8 algorithm";
  if (taken) {
    const Tensor ref = fp8_reference(c);
    EXPECT_TRUE(gpu_test::close(ref, y.download(), 64, 2e-3 * rms(ref, 64), 1.0 / 128, 5e-3,
                                "direct cuBLASLt call"));
  }
  EXPECT_EQ(y.guard_damage(), "");
  if (dc.workspace) cudaFree(dc.workspace);
  cublasLtDestroy(dc.cublaslt);
}

// Layouts cuBLASLt's block scaling does not take go to the fallback kernel.
TEST_F(Linear, Fp8BlockFallbackLayouts) {
  uint64_t seed = 100;
  const Fp8Problem problems[] = {
      {7, 7, 200, 2048, 128, ScaleKind::kColMajorTma},  // T % 4 != 0, N % 16 != 0
      {64, 64, 256, 2048, 128, ScaleKind::kRowMajor},
      {64, 64, 256, 2048, 64, ScaleKind::kColMajor},
      {33, 33, 130, 960, 64, ScaleKind::kColMajorTma},  // partial 128-blocks of N and K
      {64, 64, 256, 2048, 128, ScaleKind::kPerTensor},
      {1, 1, 7168, 2048, 128, ScaleKind::kRowMajor},
  };
  for (const Fp8Problem& p : problems) {
    SCOPED_TRACE("T=" + std::to_string(p.t_pad) + " N=" + std::to_string(p.n_out) +
                 " K=" + std::to_string(p.k) + " G=" + std::to_string(p.group) +
                 " kind=" + std::to_string(static_cast<int>(p.kind)));
    const OpCase c = fp8_case(p, seed += 10);
    check(c, fp8_reference(c), true);
  }
  // A padded batch: n from device memory, rows >= n untouched.
  Fp8Problem p{100, 61, 256, 2048, 64, ScaleKind::kRowMajor};
  OpCase c = fp8_case(p, 555);
  c.n_on_device = true;
  check(c, fp8_reference(c), true);
}

OpCase nvfp4_case(int64_t t_pad, int64_t n, int64_t n_out, int64_t k, uint64_t seed) {
  OpCase c;
  c.op = "linear_nvfp4";
  // Any byte is a valid e2m1 pair; the codes travel as u8 (docs/ops.md allows it for fp4e2m1x2).
  Tensor codes = gpu_test::random_fp8({t_pad, k / 2}, seed);
  Tensor xq = codes.view(DType::kU8, {t_pad, k / 2}, {k / 2, 1});
  const Nvfp4ScaleLayout layout{t_pad, k};
  Tensor sf = Tensor::empty(DType::kFp8E4M3, {layout.padded_rows(), layout.padded_cols()});
  std::mt19937_64 rng(seed + 1);
  for (int64_t i = 0; i < sf.numel(); ++i) {
    sf.data<uint8_t>()[i] = static_cast<uint8_t>(0x28 + rng() % 0x30);  // 2^-2 .. 2^4, positive
  }
  c.inputs = {
      xq, sf, gpu_test::scalar_f32(2.625f), gpu_test::random_fp8({n_out, k}, seed + 2),
      gpu_test::random_positive({ceil_div(n_out, 128), ceil_div(k, 128)}, 1e-3f, 1e-2f, seed + 3)};
  c.outputs = {TensorSpec::contiguous(DType::kBF16, {t_pad, n_out})};
  c.n = n;
  c.t_pad = t_pad;
  return c;
}

Tensor nvfp4_reference(const OpCase& c) {
  const Tensor& xq = c.inputs[0];
  const Tensor& sf = c.inputs[1];
  const float gs = c.inputs[2].data<float>()[0];
  const Tensor& wq = c.inputs[3];
  const Tensor& ws = c.inputs[4];
  const int64_t t_pad = xq.dim(0), k = xq.dim(1) * 2, n_out = wq.dim(0);
  const Nvfp4ScaleLayout layout{t_pad, k};
  Tensor y = Tensor::empty(DType::kF32, {t_pad, n_out});
  for (int64_t t = 0; t < c.n; ++t) {
    for (int64_t o = 0; o < n_out; ++o) {
      double acc = 0.0;
      for (int64_t i = 0; i < k; ++i) {
        const uint8_t byte = xq.data<uint8_t>()[t * (k / 2) + i / 2];
        const double x = double(e2m1_to_f32((i & 1) ? byte >> 4 : byte & 0xf)) *
                         e4m3_to_f32(sf.data<uint8_t>()[layout.offset(t, i / 16)]) / gs;
        const double w = double(e4m3_to_f32(wq.data<uint8_t>()[o * k + i])) *
                         ws.data<float>()[(o / 128) * ceil_div(k, 128) + i / 128];
        acc += x * w;
      }
      y.data<float>()[t * n_out + o] = static_cast<float>(acc);
    }
  }
  return y;
}

TEST_F(Linear, Nvfp4) {
  uint64_t seed = 1000;
  for (int64_t t : {1, 7, 130}) {
    SCOPED_TRACE("T=" + std::to_string(t));
    const OpCase c = nvfp4_case(t, t, 256, 2048, seed += 10);
    check(c, nvfp4_reference(c), true);
  }
  OpCase c = nvfp4_case(200, 129, 128, 1024, 7);
  c.n_on_device = true;
  check(c, nvfp4_reference(c), true);
}

void expect_rejected(Backend& cuda, const OpCase& c, const std::string& needle) {
  try {
    gpu_test::run_cuda(cuda, c, 0xff);
    ADD_FAILURE() << "expected an error mentioning '" << needle << "'";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos)
        << "message: " << e.what() << "\nexpected it to mention: " << needle;
  }
}

TEST_F(Linear, RejectsBadArguments) {
  const Fp8Problem p{8, 8, 256, 2048, 128, ScaleKind::kColMajor};
  {
    OpCase c = fp8_case(p, 1);
    c.inputs[2] = gpu_test::random_fp8({256, 1024}, 2);
    expect_rejected(*cuda_, c, "tensor wq");
  }
  {
    OpCase c = fp8_case(p, 1);
    c.inputs[3] = gpu_test::random_positive({2, 8}, 1.0f, 2.0f, 3);
    expect_rejected(*cuda_, c, "tensor ws");
  }
  {
    OpCase c = fp8_case(p, 1);
    c.inputs[1] = gpu_test::random_positive({8, 7}, 1.0f, 2.0f, 3);  // 2048 / 7 is no group
    expect_rejected(*cuda_, c, "tensor xs");
  }
  {
    OpCase c = fp8_case(p, 1);
    c.outputs[0] = TensorSpec::contiguous(DType::kF32, {8, 256});
    expect_rejected(*cuda_, c, "tensor y");
  }
  {
    OpCase c = nvfp4_case(8, 8, 128, 1024, 1);
    c.inputs[1] = Tensor::empty(DType::kFp8E4M3, {8, 16});
    expect_rejected(*cuda_, c, "tensor sf");
  }
}

}  // namespace
}  // namespace mlafuse
