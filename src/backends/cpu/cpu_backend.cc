// The CPU backend: every op of docs/ops.md on host memory through the reference in reference.h.
// The fused mla_attention is literally mla_attention_f32 -> bf16 -> the matching reference
// quantizer, so it equals the unfused graph bit for bit.
#include "mlafuse/backends/cpu/cpu_backend.h"

#include <cstring>
#include <optional>
#include <string>

#include "mlafuse/backends/cpu/reference.h"
#include "mlafuse/ir/op_contract.h"
#include "mlafuse/quant/codecs.h"
#include "mlafuse/quant/output_quant.h"
#include "ref_util.h"

namespace mlafuse {

namespace {

namespace mla_in = ir::mla_attention::in;
namespace mla_out = ir::mla_attention::out;
namespace mla_attr = ir::mla_attention::attr;

constexpr std::string_view kOps[] = {ir::ops::kMlaAttention,   ir::ops::kQuantFp8Static,
                                     ir::ops::kQuantFp8Group,  ir::ops::kQuantNvfp4,
                                     ir::ops::kLinearFp8Block, ir::ops::kLinearNvfp4,
                                     ir::ops::kCacheWrite};

void expect_arity(const OpCall& c, size_t min_in, size_t max_in, size_t min_out, size_t max_out) {
  MLAFUSE_CHECK(c.inputs.size() >= min_in && c.inputs.size() <= max_in, "op ", c.op, " takes ",
                min_in == max_in ? std::to_string(min_in)
                                 : std::to_string(min_in) + " to " + std::to_string(max_in),
                " inputs, got ", c.inputs.size());
  MLAFUSE_CHECK(c.outputs.size() >= min_out && c.outputs.size() <= max_out, "op ", c.op,
                " produces ",
                min_out == max_out ? std::to_string(min_out)
                                   : std::to_string(min_out) + " to " + std::to_string(max_out),
                " outputs, got ", c.outputs.size());
}

// An optional operand: absent when the span is short or holds an undefined tensor. Tensors are
// handles, so the copy writes into the caller's buffer.
Tensor optional_at(std::span<const Tensor> v, size_t i) { return i < v.size() ? v[i] : Tensor(); }
Tensor optional_at(std::span<Tensor> v, size_t i) { return i < v.size() ? v[i] : Tensor(); }

const AttentionMetadata& metadata(const OpCall& c, const RunContext& ctx) {
  const AttentionMetadata* m = ctx.host_meta != nullptr ? ctx.host_meta : ctx.device_meta;
  MLAFUSE_CHECK(m != nullptr, "op ", c.op, " needs attention metadata (RunContext::host_meta)");
  return *m;
}

bool same_buffer(const Tensor& a, const Tensor& b) {
  return a.storage() == b.storage() && a.offset() == b.offset();
}

// The in-place cache output: the input buffer itself, or (when the caller gave a separate
// kv_cache_out) a copy of the input to update.
Tensor cache_target(const Tensor& kv_cache, Tensor& kv_cache_out) {
  ref::detail::check_host(kv_cache, "kv_cache");
  if (!kv_cache_out.defined() || same_buffer(kv_cache, kv_cache_out)) return kv_cache;
  ref::detail::check_host(kv_cache_out, "kv_cache_out");
  check_dtype(kv_cache_out, "kv_cache_out", kv_cache.dtype());
  check_shape(kv_cache_out, "kv_cache_out", kv_cache.shape());
  ref::detail::check_contiguous(kv_cache, "kv_cache");
  ref::detail::check_contiguous(kv_cache_out, "kv_cache_out");
  std::memcpy(kv_cache_out.raw(), kv_cache.raw(),
              static_cast<size_t>(kv_cache.numel()) * dtype_size(kv_cache.dtype()));
  return kv_cache_out;
}

// Copies rows [0, n) of src into dst (same dtype and shape, both contiguous).
void copy_rows(const Tensor& src, Tensor& dst, int64_t n, const char* name) {
  ref::detail::check_host(dst, name);
  check_dtype(dst, name, src.dtype());
  check_shape(dst, name, src.shape());
  ref::detail::check_contiguous(dst, name);
  const int64_t row_bytes = (src.dim(0) == 0 ? 0 : src.numel() / src.dim(0)) *
                            static_cast<int64_t>(dtype_size(src.dtype()));
  std::memcpy(dst.raw(), src.raw(), static_cast<size_t>(n * row_bytes));
}

void run_mla_attention(const OpCall& c, const RunContext& ctx) {
  expect_arity(c, 4, 5, 2, 3);
  const Tensor& q = c.inputs[mla_in::kQ];
  const Tensor& kv_c_normed = c.inputs[mla_in::kKvCNormed];
  const Tensor& k_pe = c.inputs[mla_in::kKPe];
  const Tensor output_scale = optional_at(c.inputs, mla_in::kOutputScale);
  Tensor out = c.outputs[mla_out::kOut];
  Tensor block_scale = optional_at(c.outputs, mla_out::kOutputBlockScale);
  MLAFUSE_CHECK(ctx.weights != nullptr, "op mla_attention needs weights (RunContext::weights)");
  const AttentionMetadata& meta = metadata(c, ctx);

  MlaConfig cfg = ctx.weights->config;
  cfg.num_heads = c.attrs.get<int64_t>(mla_attr::kNumHeads);
  cfg.qk_nope_dim = c.attrs.get<int64_t>(mla_attr::kQkNopeDim);
  cfg.qk_rope_dim = c.attrs.get<int64_t>(mla_attr::kQkRopeDim);
  cfg.v_head_dim = c.attrs.get<int64_t>(mla_attr::kVHeadDim);
  cfg.kv_lora_rank = c.attrs.get<int64_t>(mla_attr::kKvLoraRank);
  cfg.softmax_scale = c.attrs.get_or<double>(mla_attr::kSoftmaxScale, 0.0);
  ref::detail::check_host(c.inputs[mla_in::kKvCache], "kv_cache");
  check_rank(c.inputs[mla_in::kKvCache], "kv_cache", 3);
  cfg.page_size = c.inputs[mla_in::kKvCache].dim(1);
  const int64_t hv = cfg.output_dim();

  ref::detail::check_host(out, "out");
  // The group count is read from the last dim, so the rank is checked first.
  if (block_scale.defined()) check_rank(block_scale, "output_block_scale", 2);
  const std::optional<int64_t> groups =
      block_scale.defined() ? std::optional<int64_t>(block_scale.dim(block_scale.rank() - 1))
                            : std::nullopt;
  const OutputQuant quant =
      ir::mla_attention_output_quant(c.attrs, out.dtype(), output_scale.defined(), groups, hv);

  // Validate the outputs before touching the cache.
  const int64_t t_pad = q.rank() > 0 ? q.dim(0) : 0;
  if (!quant.quantized()) {
    check_dtype(out, "out", DType::kBF16);
    check_shape(out, "out", {t_pad, hv});
  }

  const MlaLayerWeights& w = ctx.weights->layer(c.attrs.get<int64_t>(mla_attr::kLayer));
  Tensor cache = cache_target(c.inputs[mla_in::kKvCache], c.outputs[mla_out::kKvCacheOut]);
  const Tensor o32 =
      ref::mla_attention_f32(q, kv_c_normed, k_pe, cache, meta, w, cfg, ctx.num_tokens);
  // The unfused graph's bf16 attention output; quantized from there (SPEC 5).
  Tensor ob = Tensor::empty(DType::kBF16, {t_pad, hv});
  for (int64_t i = 0; i < ctx.num_tokens * hv; ++i) {
    ob.data<uint16_t>()[i] = f32_to_bf16_bits(o32.data<float>()[i]);
  }
  if (quant.quantized()) {
    ref::quantize_output(quant, ob, ctx.num_tokens, output_scale, out, block_scale);
  } else {
    copy_rows(ob, out, ctx.num_tokens, "out");
  }
}

class CpuBackend final : public Backend {
 public:
  std::string name() const override { return "cpu"; }
  Device device() const override { return Device::kCpu; }

  bool supports_op(std::string_view op) const override {
    for (std::string_view o : kOps) {
      if (o == op) return true;
    }
    return false;
  }

  // The reference quantizes any bf16 output, so every format of the table is supported with any
  // layout flags, as long as the groups tile the output dim.
  bool fused_output_quant_supported(const FusedQuantRequest& req) const override {
    const int64_t hv = req.num_heads * req.v_head_dim;
    const int64_t g = req.quant.group_size();
    return req.quant.quantized() && (hv <= 0 || g == 0 || hv % g == 0);
  }

  void run(const OpCall& c, const RunContext& ctx) override {
    const int64_t n = ctx.num_tokens;
    if (c.op == ir::ops::kMlaAttention) {
      run_mla_attention(c, ctx);
    } else if (c.op == ir::ops::kQuantFp8Static) {
      namespace io = ir::quant_fp8_static;
      expect_arity(c, 2, 2, 1, 1);
      ref::quant_fp8_static(c.inputs[io::in::kX], n, c.inputs[io::in::kScale],
                            c.outputs[io::out::kQ]);
    } else if (c.op == ir::ops::kQuantFp8Group) {
      namespace io = ir::quant_fp8_group;
      expect_arity(c, 1, 1, 2, 2);
      ref::Fp8GroupParams p;
      p.group_size = c.attrs.get<int64_t>(io::attr::kGroupSize);
      p.ue8m0 = c.attrs.get_or<bool>(io::attr::kUe8m0, false);
      p.col_major = c.attrs.get_or<bool>(io::attr::kColMajor, false);
      p.tma_aligned = c.attrs.get_or<bool>(io::attr::kTmaAligned, false);
      p.eps = static_cast<float>(c.attrs.get_or<double>(io::attr::kEps, kDefaultQuantEps));
      ref::quant_fp8_group(c.inputs[io::in::kX], n, p, c.outputs[io::out::kQ],
                           c.outputs[io::out::kS]);
    } else if (c.op == ir::ops::kQuantNvfp4) {
      namespace io = ir::quant_nvfp4;
      expect_arity(c, 2, 2, 2, 2);
      ref::quant_nvfp4(c.inputs[io::in::kX], n, c.inputs[io::in::kGlobalScale],
                       c.outputs[io::out::kQ], c.outputs[io::out::kSf]);
    } else if (c.op == ir::ops::kLinearFp8Block) {
      namespace io = ir::linear_fp8_block;
      expect_arity(c, 4, 4, 1, 1);
      const Tensor y = ref::linear_fp8_block(c.inputs[io::in::kXq], c.inputs[io::in::kXs],
                                             c.inputs[io::in::kWq], c.inputs[io::in::kWs], n);
      copy_rows(y, c.outputs[io::out::kY], n, "y");
    } else if (c.op == ir::ops::kLinearNvfp4) {
      namespace io = ir::linear_nvfp4;
      expect_arity(c, 5, 5, 1, 1);
      const Tensor y = ref::linear_nvfp4(c.inputs[io::in::kXq], c.inputs[io::in::kSf],
                                         c.inputs[io::in::kGlobalScale], c.inputs[io::in::kWq],
                                         c.inputs[io::in::kWs], n);
      copy_rows(y, c.outputs[io::out::kY], n, "y");
    } else if (c.op == ir::ops::kCacheWrite) {
      namespace io = ir::cache_write;
      expect_arity(c, 3, 3, 1, 1);
      Tensor cache = cache_target(c.inputs[io::in::kKvCache], c.outputs[io::out::kKvCacheOut]);
      ref::cache_write(c.inputs[io::in::kKvCNormed], c.inputs[io::in::kKPe],
                       metadata(c, ctx).slot_mapping, n, cache);
    } else {
      MLAFUSE_FAIL("the cpu backend has no op '", c.op, "'");
    }
  }

  Tensor allocate(DType dtype, std::vector<int64_t> shape, std::vector<int64_t> strides,
                  int64_t storage_numel) override {
    return Tensor::empty_strided(dtype, std::move(shape), std::move(strides), storage_numel);
  }

  void copy(const Tensor& src, Tensor& dst) override {
    ref::detail::check_host(src, "src");
    ref::detail::check_host(dst, "dst");
    MLAFUSE_CHECK(src.storage()->bytes == dst.storage()->bytes, "copy: source ", src.str(), " has ",
                  src.storage()->bytes, " bytes of storage, destination ", dst.str(), " has ",
                  dst.storage()->bytes);
    if (src.storage() != dst.storage()) {
      std::memcpy(dst.storage()->data, src.storage()->data, src.storage()->bytes);
    }
  }
};

}  // namespace

std::unique_ptr<Backend> make_cpu_backend() { return std::make_unique<CpuBackend>(); }

}  // namespace mlafuse
