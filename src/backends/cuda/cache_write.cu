// cache_write: launcher and op runner (SPEC 4, docs/ops.md).
#include <algorithm>

#include "backends/cuda/cache_write.cuh"
#include "backends/cuda/cache_write.h"
#include "backends/cuda/device_context.h"
#include "backends/cuda/launch_pdl.h"
#include "backends/cuda/op_checks.h"
#include "mlafuse/backends/cuda/cuda_check.h"
#include "mlafuse/core/error.h"
#include "mlafuse/core/shape.h"

namespace mlafuse::cuda {

void launch_cache_write(const CacheWriteArgs& a, cudaStream_t stream) {
  if (a.t_pad == 0) return;
  CacheWriteParams p{};
  p.kv_c = a.kv_c;
  p.kv_c_stride = a.kv_c_stride;
  p.k_pe = a.k_pe;
  p.k_pe_stride = a.k_pe_stride;
  p.slot_mapping = a.slot_mapping;
  p.kv_cache = a.kv_cache;
  p.num_slots = a.num_slots;
  p.t_pad = static_cast<int32_t>(a.t_pad);
  p.latent_vecs = static_cast<int32_t>(a.latent / 8);
  p.row_vecs = static_cast<int32_t>((a.latent + a.rope) / 8);
  p.num_tokens = static_cast<int32_t>(a.num_tokens);
  p.num_tokens_device = a.num_tokens_device;
  constexpr int kVecsPerThread = 4;
  const int64_t vecs = a.t_pad * p.row_vecs;
  const int grid = static_cast<int>(
      std::max<int64_t>(1, (vecs + 256 * kVecsPerThread - 1) / (256 * kVecsPerThread)));
  launch_pdl("cache_write_kernel", cache_write_kernel<kVecsPerThread>, dim3(grid), dim3(256), 0,
             stream, p);
}

void run_cache_write(const OpCall& call, const RunContext& ctx, DeviceContext& dc) {
  check_arity(call, 3, 1);
  const Tensor& kv_c = call.inputs[0];
  const Tensor& k_pe = call.inputs[1];
  const Tensor& cache = call.inputs[2];
  Tensor& cache_out = call.outputs[0];

  check_cuda_tensor(kv_c, "kv_c_normed");
  check_dtype(kv_c, "kv_c_normed", DType::kBF16);
  check_rank(kv_c, "kv_c_normed", 2);
  const int64_t t_pad = kv_c.dim(0);
  const int64_t latent = kv_c.dim(1);
  check_cuda_tensor(k_pe, "k_pe");
  check_dtype(k_pe, "k_pe", DType::kBF16);
  check_rank(k_pe, "k_pe", 3);
  MLAFUSE_CHECK(k_pe.dim(0) == t_pad && k_pe.dim(1) == 1, "tensor k_pe ", k_pe.str(),
                ": expected shape [", t_pad, ", 1, R] (one RoPE key per token of kv_c_normed ",
                kv_c.str(), ")");
  const int64_t rope = k_pe.dim(2);
  check_cuda_tensor(cache, "kv_cache");
  check_dtype(cache, "kv_cache", DType::kBF16);
  check_rank(cache, "kv_cache", 3);
  MLAFUSE_CHECK(cache.dim(2) == latent + rope, "tensor kv_cache ", cache.str(),
                ": the last dim must be L + R = ", latent, " + ", rope, " (kv_c_normed ",
                kv_c.str(), ", k_pe ", k_pe.str(), ")");
  MLAFUSE_CHECK(cache.is_contiguous(), "tensor kv_cache ", cache.str(), " must be contiguous");
  check_aligned(cache, "kv_cache", 16);
  MLAFUSE_CHECK(cache_out.defined() && cache_out.raw() == cache.raw() &&
                    cache_out.shape() == cache.shape() && cache_out.dtype() == cache.dtype(),
                "output kv_cache_out must be the kv_cache buffer itself (the write is in place)");
  // 16-byte vectors: L and R multiples of 8, rows starting 16-byte aligned.
  MLAFUSE_CHECK(latent % 8 == 0 && rope % 8 == 0, "cache_write: L = ", latent, " and R = ", rope,
                " must be multiples of 8 (the kernel moves 16-byte vectors)");
  MLAFUSE_CHECK(kv_c.strides()[1] == 1 && kv_c.strides()[0] % 8 == 0 && kv_c.strides()[0] >= latent,
                "tensor kv_c_normed ", kv_c.str(), " with strides ", shape_str(kv_c.strides()),
                ": rows must be contiguous with a row stride that is a multiple of 8 elements");
  MLAFUSE_CHECK(k_pe.strides()[2] == 1 && k_pe.strides()[0] % 8 == 0 && k_pe.strides()[0] >= rope,
                "tensor k_pe ", k_pe.str(), " with strides ", shape_str(k_pe.strides()),
                ": rows must be contiguous with a row stride that is a multiple of 8 elements");
  check_aligned(kv_c, "kv_c_normed", 16);
  check_aligned(k_pe, "k_pe", 16);

  MLAFUSE_CHECK(ctx.device_meta != nullptr,
                "cache_write needs RunContext::device_meta (its slot_mapping)");
  const Tensor& slots = ctx.device_meta->slot_mapping;
  check_cuda_tensor(slots, "slot_mapping");
  check_dtype(slots, "slot_mapping", DType::kI32);
  check_shape(slots, "slot_mapping", {t_pad});
  MLAFUSE_CHECK(slots.is_contiguous(), "tensor slot_mapping must be contiguous");
  MLAFUSE_CHECK(ctx.device_meta->page_size == cache.dim(1), "metadata page_size ",
                ctx.device_meta->page_size, " differs from the kv_cache page size ", cache.dim(1),
                " (kv_cache ", cache.str(), ")");
  const int64_t n = checked_num_tokens(ctx, t_pad, "kv_c_normed");
  const int64_t num_slots = cache.dim(0) * cache.dim(1);
  check_int32_range(t_pad * ((latent + rope) / 8), "cache_write: token vectors");
  check_int32_range(num_slots, "cache_write: cache slots");

  // The host copy of the metadata lets us reject out-of-range slots before launching (the kernel
  // skips them regardless, so a replayed graph never writes outside the cache).
  if (ctx.host_meta != nullptr && ctx.host_meta->slot_mapping.defined() &&
      ctx.host_meta->slot_mapping.device() == Device::kCpu &&
      ctx.host_meta->slot_mapping.dtype() == DType::kI32 &&
      ctx.host_meta->slot_mapping.is_contiguous() && ctx.host_meta->slot_mapping.numel() >= n) {
    const int32_t* hs = ctx.host_meta->slot_mapping.data<int32_t>();
    for (int64_t t = 0; t < n; ++t) {
      MLAFUSE_CHECK(hs[t] >= -1 && hs[t] < num_slots, "slot_mapping[", t, "] = ", hs[t],
                    " is outside [-1, ", num_slots, ") (kv_cache ", cache.str(), " holds ",
                    num_slots, " slots)");
    }
  }

  CacheWriteArgs a;
  a.kv_c = static_cast<const uint16_t*>(kv_c.raw());
  a.kv_c_stride = kv_c.strides()[0];
  a.k_pe = static_cast<const uint16_t*>(k_pe.raw());
  a.k_pe_stride = k_pe.strides()[0];
  a.slot_mapping = static_cast<const int32_t*>(slots.raw());
  a.kv_cache = static_cast<uint16_t*>(cache_out.raw());
  a.num_slots = num_slots;
  a.t_pad = t_pad;
  a.latent = latent;
  a.rope = rope;
  a.num_tokens = n;
  a.num_tokens_device = ctx.num_tokens_device;
  launch_cache_write(a, dc.stream_for(ctx));
}

}  // namespace mlafuse::cuda
