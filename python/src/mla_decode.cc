#include "mla_decode.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>
#include <mutex>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "mlafuse/backends/cpu/reference.h"
#include "mlafuse/core/error.h"
#include "mlafuse/core/mla_config.h"
#include "mlafuse/core/shape.h"
#include "mlafuse/quant/codecs.h"
#include "mlafuse/quant/scale_layout.h"
#if MLAFUSE_WITH_CUDA
#include <cuda_runtime.h>

#include "backends/cuda/mla_decode.h"
#include "mlafuse/backends/cuda/cuda_check.h"
#endif

namespace mlafuse::py {
namespace {

// DeepSeek's MLA dimensions (SPEC 4, core/mla_config.h), which the decode kernels are
// specialised for.
constexpr int64_t kLatent = deepseek_mla::kKvLoraRank;
constexpr int64_t kRope = deepseek_mla::kQkRopeDim;
constexpr int64_t kRow = deepseek_mla::kCacheRow;
constexpr int64_t kVDim = deepseek_mla::kVHeadDim;
constexpr int64_t kQkDim = deepseek_mla::kQkHeadDim;  // the default softmax scale is 1/sqrt(192)

void check_tensor(const Tensor& t, const char* name, DType dtype,
                  const std::vector<int64_t>& shape) {
  check_dtype(t, name, dtype);
  check_shape(t, name, shape);
  MLAFUSE_CHECK(t.is_contiguous(), "tensor ", name, " ", t.str(), " with strides ",
                shape_str(t.strides()), ": expected a contiguous row-major tensor");
}

// A byte-coded tensor that may come typed (fp8e4m3) or as raw u8 (docs/ops.md).
void check_codes(const Tensor& t, const char* name, DType coded,
                 const std::vector<int64_t>& shape) {
  MLAFUSE_CHECK(t.dtype() == coded || t.dtype() == DType::kU8, "tensor ", name, " ", t.str(),
                ": expected dtype ", dtype_name(coded), " (or u8)");
  check_tensor(t, name, t.dtype(), shape);
}

// Which GroupScaleLayout the strides of `s` [t_pad, groups] are. Where two layouts agree on every
// element's place (one token, one group, or T_pad a multiple of 4) either one writes the same
// memory, so the first match is taken.
void infer_group_layout(const Tensor& s, int64_t t_pad, DecodeOutput* o) {
  const int64_t groups = s.dim(1);
  const bool flags[3][2] = {{false, false}, {true, false}, {true, true}};
  for (const auto& f : flags) {
    const GroupScaleLayout lay{t_pad, groups, f[0], f[1]};
    const int64_t want[2] = {lay.token_stride(), lay.group_stride()};
    if ((s.dim(0) <= 1 || s.strides()[0] == want[0]) &&
        (s.dim(1) <= 1 || s.strides()[1] == want[1])) {
      o->col_major = f[0];
      o->tma_aligned = f[1];
      return;
    }
  }
  MLAFUSE_FAIL("tensor output_block_scale ", s.str(), " has strides ", shape_str(s.strides()),
               ", which is no group-scale layout for T_pad = ", t_pad, ": row-major needs (",
               groups, ", 1), column-major (1, ", t_pad, "), column-major TMA-aligned (1, ",
               round_up(t_pad, 4), ")");
}

int64_t real_tokens(const MlaDecodeArgs& a, int64_t t_pad, Device device) {
  if (a.num_tokens_device.defined()) {
    check_tensor(a.num_tokens_device, "num_tokens", DType::kI32, {1});
    if (device == Device::kCuda) return t_pad;  // read by the kernels, which clamp it to T_pad
    const int64_t n = *a.num_tokens_device.data<int32_t>();
    MLAFUSE_CHECK(n >= 0 && n <= t_pad, "num_tokens ", n, " is outside [0, T_pad = ", t_pad, "]");
    return n;
  }
  const int64_t n = a.num_tokens < 0 ? t_pad : a.num_tokens;
  MLAFUSE_CHECK(n <= t_pad, "num_tokens ", n, " is outside [0, T_pad = ", t_pad, "]");
  return n;
}

// Rows [0, n) of a contiguous tensor.
Tensor head_rows(const Tensor& t, int64_t n) {
  std::vector<int64_t> shape = t.shape();
  shape[0] = n;
  return t.view(t.dtype(), shape, Tensor::contiguous_strides(shape), 0);
}

// Per query row t < n: its sequence's block-table row and its causal length (MlaDecodeArgs).
void per_row_metadata(const MlaDecodeArgs& a, int64_t n, Tensor* table, Tensor* lens) {
  const int64_t k = a.tokens_per_seq, cols = a.block_table.dim(1);
  *table = Tensor::empty(DType::kI32, {n, cols});
  *lens = Tensor::empty(DType::kI32, {n});
  for (int64_t t = 0; t < n; ++t) {
    const int64_t s = t / k;
    std::memcpy(table->data<int32_t>() + t * cols, a.block_table.data<int32_t>() + s * cols,
                static_cast<size_t>(cols) * 4);
    const int64_t len = a.seq_lens.data<int32_t>()[s];
    lens->data<int32_t>()[t] =
        static_cast<int32_t>(len < 0 ? len : std::max<int64_t>(0, len - (k - 1 - t % k)));
  }
}

void run_cpu(const MlaDecodeArgs& a, const DecodeOutput& o, int64_t t_pad, int64_t heads,
             int64_t n) {
  const int64_t d = heads * kVDim;
  const float scale = a.softmax_scale > 0 ? static_cast<float>(a.softmax_scale)
                                          : 1.0f / std::sqrt(static_cast<float>(kQkDim));
  // The bf16 attention output, which every format is quantized from (SPEC 5).
  Tensor ob = Tensor::empty(DType::kBF16, {t_pad, d});
  if (n > 0) {
    Tensor table, lens;
    per_row_metadata(a, n, &table, &lens);
    const Tensor o_lat =
        ref::mla_decode_latent(head_rows(a.q, n), a.kv_cache, table, lens, kLatent, scale);
    const Tensor up = ref::mla_up_proj(o_lat, a.w_uv, /*round_input_bf16=*/true);
    for (int64_t i = 0; i < n * d; ++i) {
      ob.data<uint16_t>()[i] = f32_to_bf16_bits(up.data<float>()[i]);
    }
  }
  Tensor out = a.out;
  Tensor block_scale = a.output_block_scale;
  if (!o.key) {
    std::memcpy(out.raw(), ob.raw(), static_cast<size_t>(n * d) * 2);
  } else if (*o.key == kFp8StaticTensorSym) {
    ref::quant_fp8_static(ob, n, a.output_scale, out);
  } else if (*o.key == kNvfp4Dynamic) {
    ref::quant_nvfp4(ob, n, a.output_scale, out, block_scale);
  } else {
    ref::Fp8GroupParams p;
    p.group_size = o.key->group_size();
    p.ue8m0 = a.scale_ue8m0;
    p.col_major = o.col_major;
    p.tma_aligned = o.tma_aligned;
    ref::quant_fp8_group(ob, n, p, out, block_scale);
  }
}

#if MLAFUSE_WITH_CUDA
int num_sms(int device) {
  static std::mutex mu;
  static std::vector<int> cache;
  std::lock_guard<std::mutex> lock(mu);
  if (static_cast<size_t>(device) >= cache.size()) cache.resize(device + 1, 0);
  if (cache[device] == 0) {
    MLAFUSE_CUDA_CHECK(
        cudaDeviceGetAttribute(&cache[device], cudaDevAttrMultiProcessorCount, device));
  }
  return cache[device];
}

// query_start_loc of a pure decode batch of k tokens a sequence is 0, k, 2k, ..., T_pad: one
// read-only table per device and k, made once (outside any capture) and never freed while a
// queued kernel might read it.
const int32_t* decode_query_starts(int device, int64_t t_pad, int64_t k, cudaStream_t stream) {
  struct Arange {
    int32_t* data = nullptr;
    int64_t size = 0;
  };
  static std::mutex mu;
  static std::map<std::pair<int, int64_t>, Arange> tables;
  std::lock_guard<std::mutex> lock(mu);
  Arange& r = tables[{device, k}];
  const int64_t seqs = t_pad / k;
  if (r.size < seqs + 1) {
    cudaStreamCaptureStatus status = cudaStreamCaptureStatusNone;
    MLAFUSE_CUDA_CHECK(cudaStreamIsCapturing(stream, &status));
    MLAFUSE_CHECK(status == cudaStreamCaptureStatusNone, "mla_decode: T_pad = ", t_pad,
                  " (tokens_per_seq ", k,
                  ") is larger than any earlier call on this device with that tokens_per_seq; "
                  "call it once with the largest T_pad before capturing a CUDA graph (it sets up "
                  "a small index table)");
    const int64_t size = std::max<int64_t>(seqs + 1, 65537 / k + 1);
    std::vector<int32_t> host(static_cast<size_t>(size));
    for (int64_t i = 0; i < size; ++i) host[static_cast<size_t>(i)] = static_cast<int32_t>(i * k);
    int32_t* dev = nullptr;
    MLAFUSE_CUDA_CHECK(cudaMalloc(&dev, static_cast<size_t>(size) * 4));
    // On the call's stream, waited for: a plain cudaMemcpy from pageable memory may return before
    // the data lands, and the caller's (non-blocking) stream would not wait for the legacy one.
    MLAFUSE_CUDA_CHECK(cudaMemcpyAsync(dev, host.data(), static_cast<size_t>(size) * 4,
                                       cudaMemcpyHostToDevice, stream));
    MLAFUSE_CUDA_CHECK(cudaStreamSynchronize(stream));
    r.data = dev;  // the previous table, if any, is left allocated on purpose (see above)
    r.size = size;
  }
  return r.data;
}

// The split-KV part count of a call: the caller's, or one a CTA slot of the device.
int kv_parts(int64_t num_kv_splits, int device, int64_t heads) {
  MLAFUSE_CHECK(num_kv_splits >= 0 && num_kv_splits <= cuda::kMlaMaxParts, "num_kv_splits ",
                num_kv_splits, " is outside [0, ", cuda::kMlaMaxParts, "] (0: one per CTA slot)");
  return num_kv_splits > 0 ? static_cast<int>(num_kv_splits)
                           : cuda::mla_num_parts(num_sms(device), static_cast<int>(heads));
}

// What the split-KV schedule in a workspace was computed for. reuse_schedule=True compares a call
// with the last call that computed the schedule into the same workspace (keyed by its address).
struct ScheduleKey {
  int device = 0;
  int64_t t_pad = 0;
  int parts = 0;
  int64_t page_size = 0;
  int64_t table_width = 0;
  int64_t tokens_per_seq = 1;
  // Query tokens a schedule unit (mla_unit_tokens): with tokens_per_seq > 1 it depends on the head
  // count, so a schedule computed at one H is wrong at another.
  int unit_tokens = 1;
  const void* seq_lens = nullptr;
  int64_t num_tokens = -1;
  const void* num_tokens_device = nullptr;
};

std::string schedule_diff(const ScheduleKey& had, const ScheduleKey& now) {
  std::string d;
  auto field = [&d](const char* name, auto a, auto b) {
    if (a == b) return;
    d += d.empty() ? "" : ", ";
    d += detail::concat(name, " ", a, " there, ", b, " here");
  };
  field("device", had.device, now.device);
  field("T_pad", had.t_pad, now.t_pad);
  field("split-KV parts", had.parts, now.parts);
  field("page size", had.page_size, now.page_size);
  field("block_table width", had.table_width, now.table_width);
  field("tokens_per_seq", had.tokens_per_seq, now.tokens_per_seq);
  field("query tokens a schedule unit", had.unit_tokens, now.unit_tokens);
  field("seq_lens at", had.seq_lens, now.seq_lens);
  field("num_tokens", had.num_tokens, now.num_tokens);
  field("num_tokens tensor at", had.num_tokens_device, now.num_tokens_device);
  return d;
}

// Records the schedule a call computes into a caller's workspace, forgets the address of a
// temporary one, or (reuse) checks that the workspace holds a schedule for this call's shape and
// tensors.
void track_schedule(const void* workspace, const ScheduleKey& key, bool reuse, bool temporary) {
  static std::mutex mu;
  static std::unordered_map<const void*, ScheduleKey> computed;
  std::lock_guard<std::mutex> lock(mu);
  if (!reuse) {
    if (temporary) {
      computed.erase(workspace);
    } else {
      computed[workspace] = key;
    }
    return;
  }
  const auto it = computed.find(workspace);
  MLAFUSE_CHECK(it != computed.end(), "mla_decode(reuse_schedule=True): tensor workspace at ",
                workspace,
                " holds no schedule; compute it first with a reuse_schedule=False call on the "
                "same workspace (the first layer of the step)");
  const std::string diff = schedule_diff(it->second, key);
  MLAFUSE_CHECK(diff.empty(),
                "mla_decode(reuse_schedule=True): the schedule in tensor workspace at ", workspace,
                " was computed for another call (", diff,
                "); call with reuse_schedule=False when any of these changes");
}

void check_aligned(const Tensor& t, const char* name, uintptr_t bytes) {
  MLAFUSE_CHECK(reinterpret_cast<uintptr_t>(t.raw()) % bytes == 0, "tensor ", name, " ", t.str(),
                ": its data must be ", bytes, "-byte aligned");
}

void run_cuda(const MlaDecodeArgs& a, const DecodeOutput& o, const Place& place, int64_t t_pad,
              int64_t heads, cudaStream_t stream) {
  using namespace cuda;
  Backend& backend = backend_for(place);
  MLAFUSE_CHECK(heads == 16 || heads == 32 || heads == 64 || heads == 128, "tensor q ", a.q.str(),
                ": the CUDA decode kernels take 16, 32, 64 or 128 heads, got ", heads);
  const int64_t page_size = a.kv_cache.dim(1);
  MLAFUSE_CHECK(page_size == 16 || page_size == 32 || page_size == 64 || page_size == 128,
                "tensor kv_cache ", a.kv_cache.str(),
                ": the CUDA decode kernels take pages of 16, 32, 64 or 128 tokens (dim 1)");
  // The buffers' key with the flags as given (the kernels refuse flags on a non-group format).
  const OutputQuant quant{*output_format_of(o.key), group_scale_layout(o.col_major, o.tma_aligned),
                          a.scale_ue8m0};
  if (quant.quantized()) {
    const FusedQuantRequest req{quant, 0, heads, kVDim};
    MLAFUSE_CHECK(backend.fused_output_quant_supported(req), "the CUDA decode kernels do not fuse ",
                  o.key->str(), " with col_major=", o.col_major, " ue8m0=", a.scale_ue8m0,
                  " tma_aligned=", o.tma_aligned);
  }
  check_aligned(a.q, "q", 16);
  check_aligned(a.kv_cache, "kv_cache", 16);
  check_aligned(a.w_uv, "w_uv", 16);
  check_aligned(a.out, "out", 16);
  const int dev = place.device_id;
  const int parts = kv_parts(a.num_kv_splits, dev, heads);
  const size_t need = mla_workspace_bytes(static_cast<int>(t_pad), static_cast<int>(heads), parts);
  MLAFUSE_CHECK(a.workspace.defined(), "mla_decode on CUDA needs a workspace of ", need,
                " bytes (mlafuse allocates it with torch; without torch pass workspace=)");
  check_tensor(a.workspace, "workspace", DType::kU8, {a.workspace.numel()});
  MLAFUSE_CHECK(static_cast<size_t>(a.workspace.numel()) >= need, "tensor workspace ",
                a.workspace.str(), ": expected at least ", need, " bytes for T_pad = ", t_pad,
                " and ", heads, " heads and ", parts, " split-KV parts");
  check_aligned(a.workspace, "workspace", 256);
  if (t_pad == 0) return;

  MlaDecodeProblem p;
  p.num_heads = static_cast<int>(heads);
  p.num_queries = static_cast<int>(t_pad);
  p.num_tokens = static_cast<int>(a.num_tokens < 0 ? t_pad : a.num_tokens);
  p.num_tokens_device =
      a.num_tokens_device.defined() ? a.num_tokens_device.data<int32_t>() : nullptr;
  p.softmax_scale = a.softmax_scale > 0 ? static_cast<float>(a.softmax_scale)
                                        : 1.0f / std::sqrt(static_cast<float>(kQkDim));
  p.num_seqs = static_cast<int>(t_pad / a.tokens_per_seq);
  p.seq_lens = a.seq_lens.data<int32_t>();
  p.query_start_loc = decode_query_starts(dev, t_pad, a.tokens_per_seq, stream);
  p.block_table = a.block_table.data<int32_t>();
  p.block_table_stride = static_cast<int>(a.block_table.dim(1));
  p.num_pages = a.kv_cache.dim(0);
  p.page_size = static_cast<int>(page_size);
  p.q_cat = static_cast<const __nv_bfloat16*>(a.q.raw());
  p.kv_cache = static_cast<const __nv_bfloat16*>(a.kv_cache.raw());
  p.w_uv = static_cast<const __nv_bfloat16*>(a.w_uv.raw());
  p.one_token_per_seq = a.tokens_per_seq == 1;

  const MlaOutputParams out = mla_output_params(
      quant, a.out.raw(), a.output_scale.defined() ? a.output_scale.data<float>() : nullptr,
      a.output_block_scale.defined() ? a.output_block_scale.raw() : nullptr);
  const MlaWorkspace ws = mla_workspace_carve(a.workspace.raw(), static_cast<int>(t_pad),
                                              static_cast<int>(heads), parts);
  ScheduleKey key;
  key.device = dev;
  key.t_pad = t_pad;
  key.parts = parts;
  key.page_size = page_size;
  key.table_width = a.block_table.dim(1);
  key.tokens_per_seq = a.tokens_per_seq;
  key.unit_tokens = mla_unit_tokens(p);
  key.seq_lens = a.seq_lens.raw();
  key.num_tokens = p.num_tokens_device != nullptr ? -1 : p.num_tokens;
  key.num_tokens_device = p.num_tokens_device;
  // A temporary workspace holds no schedule (and may sit where an earlier buffer was).
  MLAFUSE_CHECK(!(a.reuse_schedule && a.workspace_temporary),
                "mla_decode(reuse_schedule=True) needs workspace=: the buffer the step's first "
                "call (reuse_schedule=False) computed the schedule into");
  track_schedule(a.workspace.raw(), key, a.reuse_schedule, a.workspace_temporary);
  launch_mla_decode_splitkv(p, ws, a.reuse_schedule ? MlaSchedule::kReuse : MlaSchedule::kCompute,
                            stream);
  launch_mla_combine_up_quant(p, ws, out, stream);
}
#endif

}  // namespace

DecodeOutput check_decode_output(const MlaDecodeArgs& a, int64_t t_pad, int64_t heads) {
  const int64_t d = heads * kVDim;
  const Tensor& s = a.output_block_scale;
  std::optional<int64_t> groups;
  if (s.defined()) {
    check_rank(s, "output_block_scale", 2);
    groups = s.dim(1);
  }
  DecodeOutput o;
  o.key = detect_output_quant_key(a.out.dtype(), a.output_scale.defined(), groups, d);
  if (a.output_scale.defined()) check_tensor(a.output_scale, "output_scale", DType::kF32, {1});
  if (!o.key) {
    check_tensor(a.out, "out", DType::kBF16, {t_pad, d});
  } else if (*o.key == kFp8StaticTensorSym) {
    check_codes(a.out, "out", DType::kFp8E4M3, {t_pad, d});
  } else if (*o.key == kNvfp4Dynamic) {
    check_codes(a.out, "out", DType::kFp4E2M1x2, {t_pad, d / 2});
    const Nvfp4ScaleLayout lay{t_pad, d};
    check_codes(s, "output_block_scale", DType::kFp8E4M3, {lay.padded_rows(), lay.padded_cols()});
  } else {
    check_codes(a.out, "out", DType::kFp8E4M3, {t_pad, d});
    check_dtype(s, "output_block_scale", DType::kF32);
    check_shape(s, "output_block_scale", {t_pad, *groups});
    infer_group_layout(s, t_pad, &o);
  }
  MLAFUSE_CHECK(
      !a.scale_ue8m0 || (o.key && o.key->group_size() != 0 && o.key->dtype == DType::kFp8E4M3),
      "scale_ue8m0=True applies to group FP8 output (an fp8 out with "
      "output_block_scale), not to ",
      o.key ? o.key->str() : std::string("a bf16 out"));
  return o;
}

void mla_decode(const MlaDecodeArgs& a, const Place& place, void* stream) {
  check_rank(a.q, "q", 3);
  const int64_t t_pad = a.q.dim(0);
  const int64_t heads = a.q.dim(1);
  MLAFUSE_CHECK(heads >= 1, "tensor q ", a.q.str(), ": expected at least one head");
  check_tensor(a.q, "q", DType::kBF16, {t_pad, heads, kRow});
  check_rank(a.kv_cache, "kv_cache", 3);
  check_tensor(a.kv_cache, "kv_cache", DType::kBF16, {a.kv_cache.dim(0), a.kv_cache.dim(1), kRow});
  MLAFUSE_CHECK(a.kv_cache.dim(0) >= 1 && a.kv_cache.dim(1) >= 1, "tensor kv_cache ",
                a.kv_cache.str(), ": expected at least one page of at least one token");
  const int64_t k = a.tokens_per_seq;
  MLAFUSE_CHECK(k >= 1 && t_pad % k == 0, "tokens_per_seq ", k, " must be >= 1 and divide the ",
                t_pad, " query rows of q ", a.q.str());
  const int64_t seqs = t_pad / k;
  check_rank(a.block_table, "block_table", 2);
  check_tensor(a.block_table, "block_table", DType::kI32, {seqs, a.block_table.dim(1)});
  MLAFUSE_CHECK(a.block_table.dim(1) >= 1 && a.block_table.dim(1) < (int64_t{1} << 24),
                "tensor block_table ", a.block_table.str(),
                ": expected 1 to 2^24 - 1 page columns (dim 1)");
  check_tensor(a.seq_lens, "seq_lens", DType::kI32, {seqs});
  check_tensor(a.w_uv, "w_uv", DType::kBF16, {heads, kLatent, kVDim});
  MLAFUSE_CHECK(a.softmax_scale >= 0 && std::isfinite(a.softmax_scale), "softmax_scale ",
                a.softmax_scale, " must be finite and >= 0 (0 means 1/sqrt(192))");
  MLAFUSE_CHECK(a.num_tokens >= -1, "num_tokens ", a.num_tokens, " must be >= 0");
  MLAFUSE_CHECK(a.num_kv_splits >= 0, "num_kv_splits ", a.num_kv_splits,
                " must be >= 0 (0: one per CTA slot)");
  MLAFUSE_CHECK(t_pad < (int64_t{1} << 24), "tensor q ", a.q.str(),
                ": too many query rows (dim 0); expected fewer than 2^24");
  const DecodeOutput o = check_decode_output(a, t_pad, heads);
  const int64_t n = real_tokens(a, t_pad, place.device);
  if (place.device == Device::kCpu) {
    MLAFUSE_CHECK(!a.workspace.defined() || a.workspace.device() == Device::kCpu,
                  "workspace must be on the device of q");
    run_cpu(a, o, t_pad, heads, n);
    return;
  }
#if MLAFUSE_WITH_CUDA
  run_cuda(a, o, place, t_pad, heads, static_cast<cudaStream_t>(stream));
#else
  (void)stream;
  backend_for(place);  // throws: no CUDA backend in this build
#endif
}

size_t mla_decode_workspace_bytes(int64_t t_pad, int64_t heads, const Place& place,
                                  int64_t num_kv_splits) {
  MLAFUSE_CHECK(t_pad >= 0 && t_pad < (int64_t{1} << 24) && heads >= 1 && heads <= 1024,
                "mla_decode_workspace_bytes: T_pad ", t_pad, " and heads ", heads,
                " must be in [0, 2^24) and [1, 1024]");
  MLAFUSE_CHECK(num_kv_splits >= 0, "num_kv_splits ", num_kv_splits, " must be >= 0");
  if (place.device == Device::kCpu) return 0;
#if MLAFUSE_WITH_CUDA
  const int parts = kv_parts(num_kv_splits, place.device_id, heads);
  return cuda::mla_workspace_bytes(static_cast<int>(t_pad), static_cast<int>(heads), parts);
#else
  backend_for(place);
  return 0;
#endif
}

}  // namespace mlafuse::py
