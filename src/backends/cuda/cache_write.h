// Launcher of the paged latent-cache write (SPEC 4), for the op runner and the MLA op. Host code.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace mlafuse::cuda {

struct CacheWriteArgs {
  const uint16_t* kv_c = nullptr;  // [t_pad, latent] bf16, row stride kv_c_stride elements
  int64_t kv_c_stride = 0;
  const uint16_t* k_pe = nullptr;  // [t_pad, 1, rope] bf16, row stride k_pe_stride elements
  int64_t k_pe_stride = 0;
  const int32_t* slot_mapping = nullptr;  // [t_pad] i32: page * page_size + offset, -1 skips
  uint16_t* kv_cache = nullptr;           // [num_pages, page_size, latent + rope] bf16, contiguous
  int64_t num_slots = 0;                  // num_pages * page_size: larger slots are skipped
  int64_t t_pad = 0;
  int64_t latent = 512;  // L, a multiple of 8
  int64_t rope = 64;     // R, a multiple of 8
  int64_t num_tokens = 0;
  const int32_t* num_tokens_device = nullptr;
};
void launch_cache_write(const CacheWriteArgs& a, cudaStream_t stream);

}  // namespace mlafuse::cuda
