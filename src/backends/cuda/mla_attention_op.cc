// The CUDA runner of `mla_attention` (docs/ops.md) and the fused decode kernels' can_implement.
// Host code only: it validates every argument against the op contract, then launches the chain
// cache write -> absorbed q (cuBLAS) -> device plan -> split-KV attention -> combine + W_UV +
// quantization epilogue for decode tokens, and the expanded-form prefill chain (mla_prefill.h:
// context gather -> kv_b_proj up-projection (block FP8 when the layer's weights carry the
// checkpoint form, else bf16) -> causal flash attention with the same epilogue) for prefill
// tokens, both writing into the same output and scale buffers.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "backends/cuda/cache_write.h"
#include "backends/cuda/device_context.h"
#include "backends/cuda/mla_decode.h"
#include "backends/cuda/mla_prefill.h"
#include "backends/cuda/op_checks.h"
#include "mlafuse/core/error.h"
#include "mlafuse/core/shape.h"
#include "mlafuse/ir/op_contract.h"
#include "mlafuse/mla/attention_metadata.h"
#include "mlafuse/mla/block_fp8_weight.h"
#include "mlafuse/quant/output_quant.h"
#include "mlafuse/quant/scale_layout.h"

namespace mlafuse::cuda {
namespace {

namespace mla_in = ir::mla_attention::in;
namespace mla_attr = ir::mla_attention::attr;

// The decode kernels are specialised for DeepSeek's MLA dimensions (SPEC 4, core/mla_config.h).
constexpr int64_t kNope = deepseek_mla::kQkNopeDim;     // P
constexpr int64_t kRope = deepseek_mla::kQkRopeDim;     // R
constexpr int64_t kLatent = deepseek_mla::kKvLoraRank;  // L
constexpr int64_t kVDim = deepseek_mla::kVHeadDim;      // V

bool supported_heads(int64_t h) { return h == 16 || h == 32 || h == 64 || h == 128; }
bool supported_page_size(int64_t ps) { return ps == 16 || ps == 32 || ps == 64 || ps == 128; }

// What one validated call asks for.
struct MlaCallPlan {
  int64_t t_pad = 0;  // buffer rows
  int64_t n = 0;      // real tokens
  int64_t heads = 0;
  int64_t num_pages = 0;
  int64_t page_size = 0;  // tokens a cache page
  float softmax_scale = 0.0f;
  OutputQuant quant;
  // Prefill sequences (host metadata): they take the expanded-form path.
  int num_decodes = 0;        // decode sequences
  int num_decode_tokens = 0;  // their tokens: the first rows, which take the absorbed path
  int num_prefills = 0;
  int max_prefill_q = 0;
  int max_prefill_len = 0;
  int64_t prefill_kv = 0;  // sum of the prefill sequences' seq_lens
  bool fp8_up_proj = false;  // the layer carries the block-FP8 kv_b_proj: prefill runs on it
};

void check_cuda_tensor(const Tensor& t, const char* name, DType dtype,
                       const std::vector<int64_t>& shape) {
  check_dtype(t, name, dtype);
  check_device(t, name, Device::kCuda);
  check_shape(t, name, shape);
  MLAFUSE_CHECK(t.is_contiguous(), "tensor ", name, " ", t.str(),
                ": expected a contiguous row-major tensor");
}

MlaCallPlan validate(const OpCall& call, const RunContext& ctx) {
  MlaCallPlan plan;
  const AttrMap& a = call.attrs;
  plan.heads = a.get<int64_t>(mla_attr::kNumHeads);
  const int64_t p_dim = a.get<int64_t>(mla_attr::kQkNopeDim);
  const int64_t r_dim = a.get<int64_t>(mla_attr::kQkRopeDim);
  const int64_t v_dim = a.get<int64_t>(mla_attr::kVHeadDim);
  const int64_t l_dim = a.get<int64_t>(mla_attr::kKvLoraRank);
  const int64_t layer = a.get<int64_t>(mla_attr::kLayer);
  MLAFUSE_CHECK(supported_heads(plan.heads), "mla_attention (cuda): num_heads ", plan.heads,
                " is not supported; expected 16, 32, 64 or 128");
  MLAFUSE_CHECK(p_dim == kNope && r_dim == kRope && v_dim == kVDim && l_dim == kLatent,
                "mla_attention (cuda): dims qk_nope ", p_dim, ", qk_rope ", r_dim, ", v_head ",
                v_dim, ", kv_lora_rank ", l_dim, " are not supported; expected 128, 64, 128, 512");
  const double scale_attr = a.get_or<double>(mla_attr::kSoftmaxScale, 0.0);
  MLAFUSE_CHECK(std::isfinite(scale_attr) && scale_attr >= 0.0, "softmax_scale ", scale_attr,
                " must be finite and >= 0 (0 means 1/sqrt(qk_nope + qk_rope))");
  plan.softmax_scale = scale_attr > 0.0 ? static_cast<float>(scale_attr)
                                        : 1.0f / std::sqrt(static_cast<float>(p_dim + r_dim));

  MLAFUSE_CHECK(call.inputs.size() == 4 || call.inputs.size() == 5, "mla_attention takes 4 inputs ",
                "(q, kv_c_normed, k_pe, kv_cache) and an optional output_scale; got ",
                call.inputs.size());
  MLAFUSE_CHECK(call.outputs.size() == 2 || call.outputs.size() == 3,
                "mla_attention has 2 outputs (out, kv_cache_out) and an optional "
                "output_block_scale; got ",
                call.outputs.size());
  const Tensor& q = call.inputs[0];
  const Tensor& kv_c = call.inputs[1];
  const Tensor& k_pe = call.inputs[2];
  const Tensor& cache = call.inputs[3];
  const Tensor no_tensor;
  const Tensor& out_scale =
      call.inputs.size() > mla_in::kOutputScale ? call.inputs[mla_in::kOutputScale] : no_tensor;
  const Tensor& out = call.outputs[0];
  const Tensor& cache_out = call.outputs[1];
  const Tensor& block_scale = call.outputs.size() == 3 ? call.outputs[2] : no_tensor;

  check_rank(q, "q", 3);
  plan.t_pad = q.dim(0);
  const int64_t t = plan.t_pad;
  const int64_t h = plan.heads;
  const int64_t d_out = h * v_dim;
  check_cuda_tensor(q, "q", DType::kBF16, {t, h, p_dim + r_dim});
  check_cuda_tensor(kv_c, "kv_c_normed", DType::kBF16, {t, l_dim});
  check_cuda_tensor(k_pe, "k_pe", DType::kBF16, {t, 1, r_dim});
  check_rank(cache, "kv_cache", 3);
  plan.num_pages = cache.dim(0);
  plan.page_size = cache.dim(1);
  MLAFUSE_CHECK(supported_page_size(plan.page_size), "kv_cache ", cache.str(),
                ": pages of 16, 32, 64 or 128 tokens expected (dim 1)");
  check_cuda_tensor(cache, "kv_cache", DType::kBF16, {plan.num_pages, plan.page_size, l_dim + r_dim});
  MLAFUSE_CHECK(
      plan.num_pages >= 1 && plan.num_pages * plan.page_size * (l_dim + r_dim) < (int64_t{1} << 40),
      "kv_cache ", cache.str(), ": expected 1 or more pages, and fewer than 2^40 elements in all");
  MLAFUSE_CHECK(cache_out.defined() && cache_out.raw() == cache.raw() &&
                    cache_out.shape() == cache.shape() && cache_out.dtype() == cache.dtype(),
                "kv_cache_out must be the kv_cache buffer itself (updated in place)");

  // The quantization the caller asked for (SPEC 3.4), cross-checked with the fused attributes.
  std::optional<int64_t> groups;
  if (block_scale.defined()) {
    check_rank(block_scale, "output_block_scale", 2);
    groups = block_scale.dim(1);
  }
  plan.quant = ir::mla_attention_output_quant(a, out.dtype(), out_scale.defined(), groups, d_out);
  const OutputQuant& quant = plan.quant;
  if (!quant.quantized()) {
    check_cuda_tensor(out, "out", DType::kBF16, {t, d_out});
  } else {
    FusedQuantRequest req{quant, layer, h, v_dim};
    MLAFUSE_CHECK(mla_fused_quant_supported(req), "mla_attention (cuda): fused quantization ",
                  quant.key()->str(), " (", quant.str(),
                  ") is not supported by the decode kernels");
  }
  if (out_scale.defined()) check_cuda_tensor(out_scale, "output_scale", DType::kF32, {1});
  if (quant.format == OutputFormat::kFp8Static) {
    check_cuda_tensor(out, "out", DType::kFp8E4M3, {t, d_out});
  } else if (quant.info().group_fp8()) {
    check_cuda_tensor(out, "out", DType::kFp8E4M3, {t, d_out});
    const int64_t ng = d_out / quant.group_size();
    GroupScaleLayout lay{t, ng, quant.col_major(), quant.tma_aligned()};
    check_dtype(block_scale, "output_block_scale", DType::kF32);
    check_device(block_scale, "output_block_scale", Device::kCuda);
    check_shape(block_scale, "output_block_scale", {t, ng});
    const std::vector<int64_t> want{lay.token_stride(), lay.group_stride()};
    MLAFUSE_CHECK(block_scale.strides() == want, "output_block_scale ", block_scale.str(),
                  ": strides (", block_scale.strides()[0], ", ", block_scale.strides()[1],
                  ") do not match the requested layout (col_major=", quant.col_major(),
                  ", tma_aligned=", quant.tma_aligned(), "), which needs (", want[0], ", ", want[1],
                  ")");
    MLAFUSE_CHECK(block_scale.storage()->bytes >=
                      static_cast<size_t>(block_scale.offset() + lay.storage_numel()) * 4,
                  "output_block_scale ", block_scale.str(), ": storage holds ",
                  block_scale.storage()->bytes, " bytes, the layout needs ",
                  lay.storage_numel() * 4);
  } else if (quant.format == OutputFormat::kNvfp4) {
    MLAFUSE_CHECK(out.dtype() == DType::kFp4E2M1x2 || out.dtype() == DType::kU8, "tensor out ",
                  out.str(), ": NVFP4 output must be fp4e2m1x2 or u8");
    check_cuda_tensor(out, "out", out.dtype(), {t, d_out / 2});
    MLAFUSE_CHECK(block_scale.dtype() == DType::kFp8E4M3 || block_scale.dtype() == DType::kU8,
                  "output_block_scale ", block_scale.str(),
                  ": NVFP4 block scales must be fp8e4m3 or u8");
    Nvfp4ScaleLayout lay{t, d_out};
    check_cuda_tensor(block_scale, "output_block_scale", block_scale.dtype(),
                      {lay.padded_rows(), lay.padded_cols()});
  }

  // Runtime context: metadata, weights, real token count.
  MLAFUSE_CHECK(ctx.host_meta != nullptr && ctx.device_meta != nullptr,
                "mla_attention (cuda) needs host and device AttentionMetadata in the RunContext");
  MLAFUSE_CHECK(ctx.weights != nullptr, "mla_attention (cuda) needs a WeightStore");
  plan.n = ctx.num_tokens;
  MLAFUSE_CHECK(plan.n >= 0 && plan.n <= t, "RunContext::num_tokens ", plan.n,
                " is outside [0, T_pad = ", t, "]");
  const AttentionMetadata& dm = *ctx.device_meta;
  const AttentionMetadata& hm = *ctx.host_meta;
  MLAFUSE_CHECK(dm.page_size == plan.page_size && hm.page_size == plan.page_size,
                "AttentionMetadata page_size ", dm.page_size, " (host ", hm.page_size,
                ") differs from kv_cache ", cache.str(), " (page size is dim 1)");
  MLAFUSE_CHECK(hm.num_tokens() <= t, "AttentionMetadata holds ", hm.num_tokens(),
                " tokens but the buffers hold T_pad = ", t);
  MLAFUSE_CHECK(dm.num_decodes == hm.num_decodes && dm.num_decode_tokens == hm.num_decode_tokens &&
                    dm.num_prefills == hm.num_prefills &&
                    dm.num_prefill_tokens == hm.num_prefill_tokens,
                "host and device AttentionMetadata disagree on the batch's composition");
  check_attention_metadata_tensors(dm, Device::kCuda);
  MLAFUSE_CHECK(dm.slot_mapping.dim(0) >= t, "slot_mapping ", dm.slot_mapping.str(),
                ": expected at least T_pad = ", t, " entries");
  MLAFUSE_CHECK(dm.block_table.dim(1) >= 1 && dm.block_table.dim(1) < (int64_t{1} << 24),
                "block_table ", dm.block_table.str(),
                ": expected 1 to 2^24 - 1 page columns (dim 1)");
  if (hm.seq_lens.defined() && hm.seq_lens.device() == Device::kCpu) {
    MLAFUSE_CHECK(hm.block_table.defined() && hm.block_table.shape() == dm.block_table.shape(),
                  "host block_table ", hm.block_table.str(), " differs in shape from the device's ",
                  dm.block_table.str());
    // The host copy's values, so the kernels never read a page outside the cache or a
    // block-table entry outside its row.
    const PagedCacheExtent extent{plan.num_pages, plan.page_size, "kv_cache"};
    validate_attention_metadata(hm, MetadataForm::kPadded, &extent);
  }

  const MlaLayerWeights& w = ctx.weights->layer(layer);
  check_cuda_tensor(w.w_uk_t, "W_UK_T", DType::kBF16, {h, p_dim, l_dim});
  check_cuda_tensor(w.w_uv, "W_UV", DType::kBF16, {h, l_dim, v_dim});
  // The kernels move these by TMA or in 16-byte vectors (a view at an odd offset would fault).
  check_aligned(q, "q", 16);
  check_aligned(kv_c, "kv_c_normed", 16);
  check_aligned(k_pe, "k_pe", 16);
  check_aligned(cache, "kv_cache", 16);
  check_aligned(out, "out", 16);
  check_aligned(w.w_uk_t, "W_UK_T", 16);
  check_aligned(w.w_uv, "W_UV", 16);

  plan.num_decodes = static_cast<int>(hm.num_decodes);
  plan.num_decode_tokens = static_cast<int>(hm.num_decode_tokens);
  plan.num_prefills = static_cast<int>(hm.num_prefills);
  if (plan.num_prefills > 0) {
    MLAFUSE_CHECK(hm.seq_lens.defined() && hm.seq_lens.device() == Device::kCpu &&
                      hm.query_start_loc.defined() && hm.query_start_loc.device() == Device::kCpu,
                  "mla_attention (cuda): a batch with prefills needs the host AttentionMetadata's "
                  "seq_lens and query_start_loc on the CPU (they size the prefill grid)");
    plan.fp8_up_proj = !w.kv_b_proj_fp8.empty();
    if (plan.fp8_up_proj) {  // codes [H*256, 512], scales [H*2, 4]: whole 128x128 blocks
      check_block_fp8(w.kv_b_proj_fp8, "kv_b_proj_fp8", Device::kCuda,
                      {h * (p_dim + v_dim), l_dim});
    } else {
      check_cuda_tensor(w.kv_b_proj, "kv_b_proj", DType::kBF16, {h * (p_dim + v_dim), l_dim});
    }
    const int32_t* lens = hm.seq_lens.data<int32_t>();
    const int32_t* qsl = hm.query_start_loc.data<int32_t>();
    for (int64_t s = hm.num_decodes; s < hm.num_seqs(); ++s) {
      plan.max_prefill_q = std::max(plan.max_prefill_q, qsl[s + 1] - qsl[s]);
      plan.max_prefill_len = std::max(plan.max_prefill_len, lens[s]);
      plan.prefill_kv += lens[s];
    }
    MLAFUSE_CHECK(hm.num_tokens() == plan.n, "mla_attention (cuda): a batch with prefills runs ",
                  "with its real token count: metadata holds ", hm.num_tokens(),
                  " tokens, RunContext::num_tokens is ", plan.n);
  }
  return plan;
}

}  // namespace

bool mla_fused_quant_supported(const FusedQuantRequest& req) {
  if (req.v_head_dim != kVDim || !supported_heads(req.num_heads)) return false;
  const OutputQuant& q = req.quant;
  // Every quantized format has an epilogue; group FP8 takes every layout flag, the others none
  // (a descriptor with flags on them is none of their quantizations).
  return q.quantized() && (q.info().group_fp8() || q == OutputQuant{q.format});
}

void run_mla_attention(const OpCall& call, const RunContext& ctx, DeviceContext& dc) {
  const MlaCallPlan plan = validate(call, ctx);
  const cudaStream_t stream = dc.stream_for(ctx);
  const AttentionMetadata& meta = *ctx.device_meta;
  const Tensor& q = call.inputs[0];
  const Tensor& kv_c = call.inputs[1];
  const Tensor& k_pe = call.inputs[2];
  Tensor& cache = call.outputs[1];
  const int t = static_cast<int>(plan.t_pad);
  const int h = static_cast<int>(plan.heads);

  // 1. This step's tokens into the paged cache (they are part of what the queries attend to).
  CacheWriteArgs cw;
  cw.kv_c = static_cast<const uint16_t*>(kv_c.raw());
  cw.kv_c_stride = kLatent;
  cw.k_pe = static_cast<const uint16_t*>(k_pe.raw());
  cw.k_pe_stride = kRope;
  cw.slot_mapping = meta.slot_mapping.data<int32_t>();
  cw.kv_cache = static_cast<uint16_t*>(cache.raw());
  cw.num_slots = plan.num_pages * plan.page_size;
  cw.t_pad = plan.t_pad;
  cw.latent = kLatent;
  cw.rope = kRope;
  cw.num_tokens = plan.n;
  cw.num_tokens_device = ctx.num_tokens_device;
  launch_cache_write(cw, stream);
  if (t == 0) return;

  // 2. Workspace: the absorbed query, the decode kernels' scratch, then the prefill chain's.
  const int num_parts = mla_num_parts(dc.num_sms, h);
  const size_t q_cat_bytes = (static_cast<size_t>(t) * h * kMlaRow * 2 + 255) / 256 * 256;
  const size_t decode_bytes = (mla_workspace_bytes(t, h, num_parts) + 255) / 256 * 256;
  const size_t prefill_bytes =
      plan.num_prefills > 0
          ? mla_prefill_workspace_bytes(plan.prefill_kv, plan.num_prefills, h, plan.fp8_up_proj)
          : 0;
  char* base =
      static_cast<char*>(dc.ensure_workspace(q_cat_bytes + decode_bytes + prefill_bytes));
  auto* q_cat = reinterpret_cast<__nv_bfloat16*>(base);  // [T_pad, H, 576]
  const MlaWorkspace ws = mla_workspace_carve(base + q_cat_bytes, t, h, num_parts);

  // 3. q_cat = [q_nope @ W_UK_T | q_pe] on tensor cores (cuBLAS).
  const MlaLayerWeights& w = ctx.weights->layer(call.attrs.get<int64_t>(mla_attr::kLayer));
  // (Only the decode rows when the batch has prefills: those take the expanded form.)
  launch_mla_absorb_q(dc.cublas, static_cast<const __nv_bfloat16*>(q.raw()),
                      static_cast<const __nv_bfloat16*>(w.w_uk_t.raw()), q_cat,
                      plan.num_prefills > 0 ? plan.num_decode_tokens : t, h, stream);

  // 4. Plan, split-KV attention, combine + W_UV + quantization epilogue.
  MlaDecodeProblem p;
  p.num_heads = h;
  p.num_queries = t;
  p.num_tokens = static_cast<int>(plan.n);
  p.num_tokens_device = ctx.num_tokens_device;
  p.softmax_scale = plan.softmax_scale;
  p.num_seqs = static_cast<int>(meta.num_seqs());
  p.seq_lens = meta.seq_lens.data<int32_t>();
  p.query_start_loc = meta.query_start_loc.data<int32_t>();
  p.block_table = meta.block_table.data<int32_t>();
  p.block_table_stride = static_cast<int>(meta.block_table.dim(1));
  p.num_pages = plan.num_pages;
  p.page_size = static_cast<int>(plan.page_size);
  p.q_cat = q_cat;
  p.kv_cache = static_cast<const __nv_bfloat16*>(cache.raw());
  p.w_uv = static_cast<const __nv_bfloat16*>(w.w_uv.raw());
  p.one_token_per_seq = ctx.host_meta->one_token_decodes();

  const MlaOutputParams out = mla_output_params(
      plan.quant, call.outputs[ir::mla_attention::out::kOut].raw(),
      call.inputs.size() > mla_in::kOutputScale ? call.inputs[mla_in::kOutputScale].data<float>()
                                                : nullptr,
      plan.quant.group_size() != 0 ? call.outputs[ir::mla_attention::out::kOutputBlockScale].raw()
                                   : nullptr);
  if (plan.num_prefills == 0) {
    launch_mla_decode_splitkv(p, ws, MlaSchedule::kCompute, stream);
    launch_mla_combine_up_quant(p, ws, out, stream);
    return;
  }

  // 5. A batch with prefills: the decode kernels take the decode tokens (rows < num_decode_tokens;
  // the host count, which a batch with prefills always runs with), the prefill chain the rest.
  // Decode runs first: its NVFP4 scale padding starts at num_decode_tokens and the prefill rows
  // overwrite it. (Decode kernels map a token to its sequence through query_start_loc, so a
  // decode's several tokens each get their causal length.)
  if (plan.num_decode_tokens > 0) {
    p.num_tokens = plan.num_decode_tokens;
    p.num_tokens_device = nullptr;
    launch_mla_decode_splitkv(p, ws, MlaSchedule::kCompute, stream);
    launch_mla_combine_up_quant(p, ws, out, stream);
  }
  const int nd = plan.num_decodes;
  MlaPrefillBatch pb;
  pb.num_heads = h;
  pb.num_seqs = plan.num_prefills;
  pb.max_q_len = plan.max_prefill_q;
  pb.max_seq_len = plan.max_prefill_len;
  pb.total_kv = plan.prefill_kv;
  pb.q_rows = t;
  pb.out_rows = t;
  pb.softmax_scale = plan.softmax_scale;
  pb.seq_lens = meta.seq_lens.data<int32_t>() + nd;
  pb.q_start = meta.query_start_loc.data<int32_t>() + nd;
  pb.block_table = meta.block_table.data<int32_t>() + static_cast<int64_t>(nd) * p.block_table_stride;
  pb.block_table_stride = p.block_table_stride;
  pb.num_pages = plan.num_pages;
  pb.page_size = p.page_size;
  pb.kv_cache = p.kv_cache;
  pb.q = static_cast<const __nv_bfloat16*>(q.raw());
  if (plan.fp8_up_proj) {
    pb.kv_b_proj_fp8 = w.kv_b_proj_fp8.weight.raw();
    pb.kv_b_proj_scale = w.kv_b_proj_fp8.weight_scale_inv.data<float>();
  } else {
    pb.kv_b_proj = static_cast<const __nv_bfloat16*>(w.kv_b_proj.raw());
  }
  launch_mla_prefill(pb, base + q_cat_bytes + decode_bytes, dc, out, stream);
  launch_mla_prefill_nvfp4_pad(out, t, h, static_cast<int>(plan.n), stream);
}

}  // namespace mlafuse::cuda
