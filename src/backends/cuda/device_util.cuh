// Small device helpers shared by the quant and cache-write kernels: streaming 16-byte loads,
// unpacking activations to f32, and the real token count of a padded batch. Framework-free.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "mlafuse/quant/codecs.h"

namespace mlafuse::cuda {

// 16 bytes, read once: skip L1 (the data is streamed) and use the non-coherent path.
__device__ __forceinline__ uint4 ldg_stream(const void* p) {
  uint4 v;
  asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];"
               : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
               : "l"(p));
  return v;
}

// The real token count n of a padded batch (SPEC 6): from device memory when a replayed CUDA graph
// supplies it, else the launch-time value; clamped to [0, t_pad] so a bad count never makes a
// kernel touch memory outside its buffers.
__device__ __forceinline__ int32_t real_tokens(const int32_t* num_tokens_device, int32_t num_tokens,
                                               int32_t t_pad) {
  const int32_t n = num_tokens_device != nullptr ? __ldg(num_tokens_device) : num_tokens;
  return n < 0 ? 0 : (n > t_pad ? t_pad : n);
}

// Programmatic dependent launch (sm_90): a kernel started by launch_pdl (launch_pdl.h) may begin
// while the kernel before it in the stream still runs. It calls pdl_wait() before it reads that
// kernel's results (the wait returns once that grid has completed and its writes are visible);
// pdl_launch_dependents() lets the next such kernel start early. Both are no-ops for a kernel
// launched the ordinary way. Every CTA waits before it exits, so a kernel's completion still
// implies its predecessor's for the ordinary launches after it.
// The GPU's nanosecond clock, comparable across SMs and kernels (the stamps builds' timelines).
__device__ __forceinline__ uint64_t global_ns() {
  uint64_t t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
  return t;
}

__device__ __forceinline__ void pdl_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}
__device__ __forceinline__ void pdl_launch_dependents() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

// Activation element types, as 16-byte vectors unpacked to f32. bf16 and f16 decode bit-exactly
// (NaN keeps its sign), as the host reference does.
struct Bf16In {
  static constexpr int kPer16B = 8;
  static constexpr int kBytes = 2;
  __device__ __forceinline__ static void unpack(const uint4& v, float* out) {
    const uint32_t w[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      out[2 * i] = __uint_as_float(w[i] << 16);
      out[2 * i + 1] = __uint_as_float(w[i] & 0xffff0000u);
    }
  }
  __device__ __forceinline__ static float load1(const void* base, int64_t i) {
    return __uint_as_float(static_cast<uint32_t>(static_cast<const uint16_t*>(base)[i]) << 16);
  }
};

struct F16In {
  static constexpr int kPer16B = 8;
  static constexpr int kBytes = 2;
  __device__ __forceinline__ static void unpack(const uint4& v, float* out) {
    const uint32_t w[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      out[2 * i] = f16_bits_to_f32(static_cast<uint16_t>(w[i] & 0xffffu));
      out[2 * i + 1] = f16_bits_to_f32(static_cast<uint16_t>(w[i] >> 16));
    }
  }
  __device__ __forceinline__ static float load1(const void* base, int64_t i) {
    return f16_bits_to_f32(static_cast<const uint16_t*>(base)[i]);
  }
};

struct F32In {
  static constexpr int kPer16B = 4;
  static constexpr int kBytes = 4;
  __device__ __forceinline__ static void unpack(const uint4& v, float* out) {
    out[0] = __uint_as_float(v.x);
    out[1] = __uint_as_float(v.y);
    out[2] = __uint_as_float(v.z);
    out[3] = __uint_as_float(v.w);
  }
  __device__ __forceinline__ static float load1(const void* base, int64_t i) {
    return static_cast<const float*>(base)[i];
  }
};

}  // namespace mlafuse::cuda
