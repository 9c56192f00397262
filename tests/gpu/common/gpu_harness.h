// The GPU test harness: run one op on the CUDA backend and on the CPU reference backend over the
// same inputs and compare. Reusable by every GPU test (ggml's test-backend-ops habit):
// - GuardedBuffer: a device tensor with sentinel bytes on both sides of its storage, checked after
//   every run (catches out-of-bounds writes), poisonable with any byte;
// - OpCase / run_reference / run_cuda: inputs as host tensors, outputs as TensorSpecs; outputs are
//   poisoned before each run and read back whole (padding included), so bytes a kernel must not
//   write are compared too;
// - expect_bitwise_equal (codes, scales), expect_close (float outputs), random inputs with
//   optional NaN/Inf/-0/subnormal specials, token-count sweeps shrunk for sanitizer runs.
#pragma once

#include <gtest/gtest.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "mlafuse/backends/backend.h"
#include "mlafuse/core/tensor.h"
#include "mlafuse/quant/layout.h"

namespace mlafuse::gpu_test {

// Skips the current test (with the reason) where no usable sm_90 GPU is present; fails instead
// under MLAFUSE_REQUIRE_GPU=1 (bench/device.sh sets it), so a GPU machine whose driver or device
// query fails cannot pass every test by skipping them.
#define MLAFUSE_SKIP_WITHOUT_GPU()                                                             \
  do {                                                                                         \
    std::string mlafuse_reason_;                                                               \
    if (!::mlafuse::gpu_test::gpu_present(&mlafuse_reason_)) {                                 \
      if (::mlafuse::gpu_test::gpu_required()) FAIL() << "no usable GPU: " << mlafuse_reason_; \
      GTEST_SKIP() << "no usable GPU: " << mlafuse_reason_;                                    \
    }                                                                                          \
  } while (0)

bool gpu_present(std::string* reason);
// MLAFUSE_REQUIRE_GPU=1 in the environment.
bool gpu_required();

// MLAFUSE_GPU_TEST_SMALL=1 (set by bench/device.sh for compute-sanitizer runs): small shapes only.
bool small_shapes();
// The token-count sweep {1, 3, 7, 64, 255, 256, 1000, 8192}; without 1000 and 8192 when small.
std::vector<int64_t> token_counts();
// Hidden sizes {2048, 16384} (16 and 128 heads of 128); {2048} when small.
std::vector<int64_t> hidden_sizes();

// Physical description of a tensor: dtype, extents, strides (elements) and storage size.
struct TensorSpec {
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;
  std::vector<int64_t> strides;
  int64_t storage_numel = 0;

  static TensorSpec contiguous(DType dtype, std::vector<int64_t> shape);
  // The physical buffer a value of this layout and logical shape gets (core/layout.h).
  static TensorSpec layout(DType dtype, Layout layout, const std::vector<int64_t>& logical);
  int64_t storage_bytes() const;
};

// A host tensor of `spec` whose whole storage holds `fill` bytes.
Tensor host_filled(const TensorSpec& spec, uint8_t fill);

// A device tensor with kGuardBytes of sentinel bytes before and after its storage.
class GuardedBuffer {
 public:
  static constexpr int64_t kGuardBytes = 256;  // keeps the payload 256-byte aligned
  explicit GuardedBuffer(const TensorSpec& spec);
  ~GuardedBuffer();
  GuardedBuffer(const GuardedBuffer&) = delete;
  GuardedBuffer& operator=(const GuardedBuffer&) = delete;

  const Tensor& tensor() const { return tensor_; }
  Tensor& tensor() { return tensor_; }
  const TensorSpec& spec() const { return spec_; }
  // Whole storage <- `fill` bytes.
  void poison(uint8_t fill);
  // Whole storage <- the storage of `host` (same byte size).
  void upload(const Tensor& host);
  // A host tensor with the same spec holding the device storage.
  Tensor download() const;
  // "" when both guards are intact, else where the first damaged byte is.
  std::string guard_damage() const;

 private:
  TensorSpec spec_;
  char* base_ = nullptr;  // guard | payload | guard
  Tensor tensor_;
};

// One op invocation, described on the host.
struct OpCase {
  std::string op;
  AttrMap attrs;
  std::vector<Tensor> inputs;  // host tensors; absent optional inputs default-constructed
  std::vector<TensorSpec> outputs;
  std::vector<int> alias;                   // alias[i] >= 0: output i is input alias[i] (in place)
  int64_t n = 0;                            // real tokens
  const AttentionMetadata* meta = nullptr;  // host metadata (host tensors), when the op needs it
  // CUDA side: pass n through RunContext::num_tokens_device, with num_tokens set to the padded
  // count, so a kernel that ignores the device value computes the wrong rows and fails.
  bool n_on_device = false;
  int64_t t_pad = 0;  // the padded count used with n_on_device
};

// Output storages, read back to the host.
using Outputs = std::vector<Tensor>;

// The op on `cpu` (the reference backend) with outputs pre-filled with `poison`.
Outputs run_reference(Backend& cpu, const OpCase& c, uint8_t poison);
// The op on `cuda`: inputs uploaded into guarded buffers, outputs poisoned, guards checked after
// the run (a damaged guard is a test failure naming the tensor).
Outputs run_cuda(Backend& cuda, const OpCase& c, uint8_t poison);

// Byte-for-byte equality of whole storages; reports the first mismatches with their indices.
::testing::AssertionResult bitwise_equal(const Tensor& ref, const Tensor& dut,
                                         const std::string& what);
// For each poison byte in {0xff, 0x5a}: reference and CUDA outputs equal byte for byte, padding
// included. The reference runs once per poison, so keep large shapes few.
void expect_backends_bitwise_equal(Backend& cpu, Backend& cuda, const OpCase& c,
                                   bool both_poisons = true);

// Float outputs (bf16 or f32), rows [0, rows) of a row-major [T, N] tensor: every element within
// abs_tol + rel_tol * |ref|, NaN/Inf only where the reference has them, and the normalized error
// ||dut - ref|| / ||ref|| <= norm_tol.
::testing::AssertionResult close(const Tensor& ref, const Tensor& dut, int64_t rows, double abs_tol,
                                 double rel_tol, double norm_tol, const std::string& what);

// Random inputs (host tensors). Activations: normal values whose magnitude changes every 16
// elements over 2^-8..2^8 (so group scales differ), rounded to `dtype`.
struct Specials {
  double rate = 0.0;  // fraction of elements replaced by NaN, -NaN, +-Inf, +-0, subnormals, huge
};
Tensor random_activations(DType dtype, int64_t rows, int64_t cols, uint64_t seed,
                          Specials specials = {});
// Random finite e4m3 codes (no NaN), e.g. FP8 weights.
Tensor random_fp8(std::vector<int64_t> shape, uint64_t seed);
// Positive f32 values in [lo, hi), e.g. weight block scales.
Tensor random_positive(std::vector<int64_t> shape, float lo, float hi, uint64_t seed);
Tensor scalar_f32(float v);
Tensor i32_tensor(const std::vector<int32_t>& values);

}  // namespace mlafuse::gpu_test
