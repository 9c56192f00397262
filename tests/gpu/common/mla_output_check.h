// Helpers shared by the MLA kernel tests (mla_decode_test, mla_prefill_test): a self-freeing
// device buffer, and the check that a fused output epilogue (static FP8, group FP8 in every scale
// layout, NVFP4) writes exactly what the CPU reference quantizer makes of the kernel's own bf16
// output, over the whole (poisoned) buffers.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "backends/cuda/mla_decode.h"
#include "mlafuse/backends/cuda/cuda_check.h"
#include "mlafuse/core/tensor.h"

namespace mlafuse::gpu_test {

// A device buffer that frees itself.
struct DevBuf {
  void* p = nullptr;
  size_t bytes = 0;
  explicit DevBuf(size_t b) : bytes(b) { MLAFUSE_CUDA_CHECK(cudaMalloc(&p, b == 0 ? 1 : b)); }
  ~DevBuf() { cudaFree(p); }
  DevBuf(const DevBuf&) = delete;
  DevBuf& operator=(const DevBuf&) = delete;
  template <class T>
  T* as() const {
    return static_cast<T*>(p);
  }
  void upload(const void* src) {
    MLAFUSE_CUDA_CHECK(cudaMemcpy(p, src, bytes, cudaMemcpyHostToDevice));
  }
  void download(void* dst) const {
    MLAFUSE_CUDA_CHECK(cudaMemcpy(dst, p, bytes, cudaMemcpyDeviceToHost));
  }
  void poison() { MLAFUSE_CUDA_CHECK(cudaMemset(p, 0xff, bytes)); }
};

// A host tensor holding a copy of `src`.
Tensor host_tensor(DType dt, std::vector<int64_t> shape, const void* src);
std::vector<float> bf16_to_f32(const std::vector<uint16_t>& v);
// Every byte from `begin` on must still be the 0xff poison.
void expect_untouched(const std::vector<uint8_t>& bytes, size_t begin, const std::string& what);

// One quantized output epilogue with its layout flags.
struct QuantVariant {
  cuda::MlaEpilogue kind;
  bool col_major = false, ue8m0 = false, tma_aligned = false;
  std::string name() const;
};
// Static FP8, NVFP4, and group FP8 128 / 64 with each of the 8 flag combinations.
std::vector<QuantVariant> all_variants();

// Runs `run` (which launches the kernel under test with the given output parameters and
// synchronizes) on poisoned buffers for variant `v`, and compares codes and scales bit for bit
// with the CPU quantizer applied to `out_bf16`, the kernel's own bf16 output of [t_pad, heads*128]
// (rows >= n untouched). The static / global scale is derived from the output's amax.
void check_quant_variant(const std::function<void(const cuda::MlaOutputParams&)>& run, int heads,
                         int t_pad, int n, const std::vector<uint16_t>& out_bf16,
                         const QuantVariant& v);

}  // namespace mlafuse::gpu_test
