// The quantization epilogue shared by the standalone quant kernels (quant_*.cu) and the fused
// attention epilogue (mla_*.cuh): one set of device functions, so codes and scales from the two
// paths are bit-identical by construction (SPEC 3). Framework-free: no IR or Tensor headers.
//
// Conventions
// - A "group" is the G values that share one scale. Its values are spread over a set of lanes of
//   one warp; `kLaneMask` names the lane-index bits that vary inside the set (15: 16 consecutive
//   lanes; 3: the 4 lanes of an mma quad). Each lane first folds its own values with `abs_max`,
//   then `group_amax<kLaneMask>` gives every lane of the set the group's amax. Reductions across
//   warps (through shared memory) are the caller's business: fmaxf is exact and order-free.
// - NaN: max ignores NaN (fmaxf), so a NaN element never poisons its group's scale. A NaN quotient
//   encodes as a NaN code (0x7f | sign); see `fp8_nan_code` for the sign rule.
// - Division: SPEC 3.2 asks for a true division x / s. `Fp8GroupScale` precomputes 1/s once per
//   group and `quotient` recovers the correctly rounded x / s with two FMAs (Markstein), or one
//   exact multiply when s is a power of two (always in ue8m0 mode). The GPU tests check it equals
//   __fdiv_rn whenever |x / s| >= 2^-30, and that its e4m3 code equals the code of __fdiv_rn for
//   every x: below 2^-30 a subnormal quotient or an underflowing residual may cost an ulp, but the
//   code is +-0 either way (e4m3's smallest step is 2^-9). The quant tests compare every code
//   with the CPU reference.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "mlafuse/quant/codecs.h"
#include "mlafuse/quant/scale_layout.h"

namespace mlafuse::cuda::qe {

// ---- reductions ---------------------------------------------------------------------------
__device__ __forceinline__ float abs_max(float m, float v) { return fmaxf(m, fabsf(v)); }

// Max over the lanes whose indices differ only in the bits of kLaneMask (all 32 lanes of the warp
// must call it: it shuffles with the full mask). Every lane of the set returns the same value.
template <int kLaneMask>
__device__ __forceinline__ float group_amax(float lane_amax) {
  static_assert(kLaneMask >= 0 && kLaneMask < 32, "lane mask must select bits of a lane index");
#pragma unroll
  for (int bit = 16; bit >= 1; bit >>= 1) {
    if (kLaneMask & bit) lane_amax = fmaxf(lane_amax, __shfl_xor_sync(0xffffffffu, lane_amax, bit));
  }
  return lane_amax;
}

// ---- FP8 e4m3 encode ----------------------------------------------------------------------
// The NaN code for a NaN quotient q = x op s. The host reference computes q on the CPU, where a NaN
// operand propagates with its sign and an invalid operation (inf/inf, 0*inf) yields the default
// NaN, which is negative on x86-64; the GPU instead always produces a positive canonical NaN. To
// stay bit-exact we derive the code from the input element `x`: NaN input -> its sign | 0x7f;
// otherwise (an invalid operation) -> 0xff.
__device__ __forceinline__ uint32_t fp8_nan_code(float x) {
  const uint32_t u = __float_as_uint(x);
  return (u & 0x7fffffffu) > 0x7f800000u ? (((u >> 24) & 0x80u) | 0x7fu) : 0xffu;
}

// Hardware cvt (round to nearest even, finite overflow and +-inf saturate to +-448): the
// first element lands in the low byte. NaN gives 0x7f or 0xff, which no finite value gives.
__device__ __forceinline__ uint32_t cvt_e4m3x2(float lo, float hi) {
  uint16_t r;
  asm("cvt.rn.satfinite.e4m3x2.f32 %0, %1, %2;" : "=h"(r) : "f"(hi), "f"(lo));
  return r;
}

// Four codes packed little-endian (element 0 in the low byte). q* are the values to encode (the
// quotients), x* the input elements they came from (for the NaN sign rule above).
__device__ __forceinline__ uint32_t encode_e4m3x4(float q0, float q1, float q2, float q3, float x0,
                                                  float x1, float x2, float x3) {
  uint32_t c = cvt_e4m3x2(q0, q1) | (cvt_e4m3x2(q2, q3) << 16);
  // Bytes 0x7f / 0xff are NaN codes; the common case has none and pays two integer ops.
  const uint32_t nan_bytes = __vcmpeq4(c | 0x80808080u, 0xffffffffu);
  if (__builtin_expect(nan_bytes != 0, 0)) {
    const float xs[4] = {x0, x1, x2, x3};
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      if ((nan_bytes >> (8 * i)) & 0xffu) {
        c = (c & ~(0xffu << (8 * i))) | (fp8_nan_code(xs[i]) << (8 * i));
      }
    }
  }
  return c;
}

// One code (scale stores, odd sizes): same rules as encode_e4m3x4.
__device__ __forceinline__ uint8_t encode_e4m3(float q, float x) {
  uint32_t c = cvt_e4m3x2(q, 0.0f) & 0xffu;
  if ((c | 0x80u) == 0xffu) c = fp8_nan_code(x);
  return static_cast<uint8_t>(c);
}

// ---- dynamic per-group FP8 (SPEC 3.2) -----------------------------------------------------
struct Fp8GroupScale {
  float s;    // the stored scale: max(eps, amax) / 448, rounded up to a power of two in ue8m0
  float rcp;  // 1 / s, correctly rounded
  bool pow2;  // s is a power of two (or 0 / inf): x * rcp is then exactly x / s
};

// amax: the group's max |x| (NaN ignored). eps > 0 keeps s a normal number: the runner requires
// eps >= 1e-18 so that every step of `quotient` stays clear of f32 underflow where it matters.
__device__ __forceinline__ Fp8GroupScale fp8_group_scale(float amax, float eps, bool ue8m0) {
  Fp8GroupScale r;
  r.s = __fdiv_rn(fmaxf(eps, amax), kFp8E4M3Max);
  if (ue8m0) r.s = round_up_pow2(r.s);
  r.rcp = __frcp_rn(r.s);
  r.pow2 = (__float_as_uint(r.s) & 0x7fffffu) == 0u;
  return r;
}

// x / s rounded to nearest even, bit-exact with __fdiv_rn for the scales fp8_group_scale makes.
// Markstein: with rcp = RN(1/s) and q0 = RN(x * rcp) within an ulp, the residual x - q0*s is exact
// in an FMA and RN(q0 + residual * rcp) is the correctly rounded quotient. The sum loses the sign
// of x = -0 (+0 + -0 = +0); s > 0, so the quotient's sign is always x's: OR it back (one LOP3).
// Non-power-of-two scales are finite, so x is finite on that path.
__device__ __forceinline__ float quotient(float x, const Fp8GroupScale& sc) {
  const float q0 = __fmul_rn(x, sc.rcp);
  if (sc.pow2) return q0;
  const float res = __fmaf_rn(-q0, sc.s, x);
  const float q = __fmaf_rn(res, sc.rcp, q0);
  return __uint_as_float(__float_as_uint(q) | (__float_as_uint(x) & 0x80000000u));
}

// Four elements of one group -> four codes (clamp to +-448 is the cvt's satfinite).
__device__ __forceinline__ uint32_t quant_fp8x4(float x0, float x1, float x2, float x3,
                                                const Fp8GroupScale& sc) {
  return encode_e4m3x4(quotient(x0, sc), quotient(x1, sc), quotient(x2, sc), quotient(x3, sc), x0,
                       x1, x2, x3);
}

// Stores one group's scale at its GroupScaleLayout place (row-major, column-major, or column-major
// with the token stride padded to 4). Exactly one lane of the group should call it.
__device__ __forceinline__ void store_group_scale(float* scales,  // storage of the [T, D/G] view
                                                  const GroupScaleLayout& layout, int64_t t,
                                                  int64_t g, float s) {
  scales[layout.offset(t, g)] = s;
}

// ---- static per-tensor FP8 (SPEC 3.1) -----------------------------------------------------
// inv = 1 / scale in f32 (correctly rounded, as the host's 1.0f / scale), computed once.
__device__ __forceinline__ float fp8_static_inv(float scale) { return __frcp_rn(scale); }

__device__ __forceinline__ uint32_t quant_fp8_static_x4(float x0, float x1, float x2, float x3,
                                                        float inv) {
  return encode_e4m3x4(__fmul_rn(x0, inv), __fmul_rn(x1, inv), __fmul_rn(x2, inv),
                       __fmul_rn(x3, inv), x0, x1, x2, x3);
}

// ---- NVFP4 (SPEC 3.3) ---------------------------------------------------------------------
// One 16-element block: `amax` = max |x_i| (NaN ignored), `gs` the global scale.
struct Nvfp4BlockScale {
  uint8_t sf;       // e4m3 code of gs * amax / 6, stored in the swizzled scale buffer
  float out_scale;  // gs / float(sf), or 0 when float(sf) == 0
};

__device__ __forceinline__ Nvfp4BlockScale nvfp4_block_scale(float amax, float gs) {
  Nvfp4BlockScale r;
  // A NaN here can only come from gs (amax ignores NaN): the code follows gs's sign rule.
  r.sf = encode_e4m3(__fdiv_rn(__fmul_rn(gs, amax), kFp4E2M1Max), gs);
  const float sf_value = e4m3_to_f32(r.sf);
  r.out_scale = sf_value == 0.0f ? 0.0f : __fdiv_rn(gs, sf_value);
  return r;
}

// Two consecutive elements -> one byte of packed e2m1 (the first in the low nibble).
// Software codec: sm_90 has no e2m1 cvt; rounding ties to even and NaN -> 0x7 as SPEC 1 says.
__device__ __forceinline__ uint32_t quant_nvfp4x2(float x0, float x1, float out_scale) {
  return static_cast<uint32_t>(f32_to_e2m1(__fmul_rn(x0, out_scale))) |
         (static_cast<uint32_t>(f32_to_e2m1(__fmul_rn(x1, out_scale))) << 4);
}

// Eight consecutive elements -> 4 bytes of packed e2m1 (element 2i in the low nibble of byte i).
__device__ __forceinline__ uint32_t quant_nvfp4x8(const float (&x)[8], float out_scale) {
  uint32_t packed = 0;
#pragma unroll
  for (int i = 0; i < 4; ++i) packed |= quant_nvfp4x2(x[2 * i], x[2 * i + 1], out_scale) << (8 * i);
  return packed;
}

// Byte offset of (row m, scale column k) in the swizzled block-scale buffer; padding entries
// (m >= n rows up to the next 128, k >= D/16 up to the next 4) are written as zero by the caller.
__device__ __forceinline__ void store_nvfp4_scale(uint8_t* sf,  // swizzled [round_up(T,128), ..]
                                                  const Nvfp4ScaleLayout& layout, int64_t m,
                                                  int64_t k, uint8_t code) {
  sf[layout.offset(m, k)] = code;
}

}  // namespace mlafuse::cuda::qe
