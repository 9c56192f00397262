// Paged latent-cache write (SPEC 4), device code: token t's row [kv_c_normed[t] | k_pe[t]] goes to
// cache slot slot_mapping[t]. A pure copy of 16-byte vectors (L/8 + R/8 = 72 per DeepSeek-V3
// token), four per thread, all loaded before any is stored, with a grid that fits in one resident
// wave for 8192 tokens: the whole batch's loads are in flight at once. Slots of -1 (padding) and
// tokens >= n are skipped; a slot outside the cache is skipped too (the runner rejects it first
// when it can see the host metadata).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "backends/cuda/device_util.cuh"

namespace mlafuse::cuda {

struct CacheWriteParams {
  const uint16_t* kv_c;  // [t_pad, latent] bf16, row stride kv_c_stride
  int64_t kv_c_stride;
  const uint16_t* k_pe;  // [t_pad, rope] bf16, row stride k_pe_stride
  int64_t k_pe_stride;
  const int32_t* slot_mapping;  // [t_pad] i32
  uint16_t* kv_cache;           // [num_slots, latent + rope] bf16
  int64_t num_slots;
  int32_t t_pad;
  int32_t latent_vecs;  // latent / 8
  int32_t row_vecs;     // (latent + rope) / 8
  int32_t num_tokens;
  const int32_t* num_tokens_device;
};

// Loads are bounded by the padded count (always readable) and issued before n is known, so a
// replayed graph's device-side n costs no extra round trip; stores are bounded by n. Launched
// programmatically, it lets the next kernel (the decode's absorbed query, which reads W_UK_T
// meanwhile) start at once; that kernel waits for this one before anything reads the cache.
template <int kVecsPerThread>
__global__ void __launch_bounds__(256) cache_write_kernel(const CacheWriteParams p) {
  pdl_launch_dependents();
  pdl_wait();  // the inputs may come from the kernel before
  const int32_t n = real_tokens(p.num_tokens_device, p.num_tokens, p.t_pad);
  const int64_t total_pad = static_cast<int64_t>(p.t_pad) * p.row_vecs;
  const int64_t first =
      static_cast<int64_t>(blockIdx.x) * blockDim.x * kVecsPerThread + threadIdx.x;
  uint4 v[kVecsPerThread];
  int32_t tok[kVecsPerThread];
  int32_t slot[kVecsPerThread];
  int32_t col[kVecsPerThread];
#pragma unroll
  for (int i = 0; i < kVecsPerThread; ++i) {
    const int64_t e = first + static_cast<int64_t>(i) * blockDim.x;
    tok[i] = p.t_pad;  // "no token"
    if (e >= total_pad) continue;
    const int32_t t = static_cast<int32_t>(e / p.row_vecs);
    const int32_t c = static_cast<int32_t>(e - static_cast<int64_t>(t) * p.row_vecs);
    const uint16_t* src = c < p.latent_vecs ? p.kv_c + t * p.kv_c_stride + c * 8
                                            : p.k_pe + t * p.k_pe_stride + (c - p.latent_vecs) * 8;
    v[i] = ldg_stream(src);
    slot[i] = __ldg(p.slot_mapping + t);
    tok[i] = t;
    col[i] = c;
  }
#pragma unroll
  for (int i = 0; i < kVecsPerThread; ++i) {
    if (tok[i] >= n || slot[i] < 0 || slot[i] >= p.num_slots) continue;
    reinterpret_cast<uint4*>(p.kv_cache)[static_cast<int64_t>(slot[i]) * p.row_vecs + col[i]] =
        v[i];
  }
}

}  // namespace mlafuse::cuda
