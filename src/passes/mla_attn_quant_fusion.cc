#include "mlafuse/passes/mla_attn_quant_fusion.h"

#include <map>
#include <tuple>

#include "mlafuse/ir/op_registry.h"
#include "mlafuse/passes/pattern.h"
#include "mlafuse/passes/rewrite.h"

namespace mlafuse::passes {

namespace ops = ir::ops;

const std::vector<FusionVariant>& mla_fusion_variants() {
  static const std::vector<FusionVariant> variants = [] {
    std::vector<FusionVariant> v;
    v.push_back(FusionVariant{"fp8-static", ops::kQuantFp8Static, kFp8StaticTensorSym});
    v.push_back(FusionVariant{"nvfp4", ops::kQuantNvfp4, kNvfp4Dynamic, ops::kNvfp4BlockSize});
    for (int64_t g : {int64_t{128}, int64_t{64}}) {
      for (bool col_major : {false, true}) {
        for (bool tma_aligned : {false, true}) {
          for (bool ue8m0 : {false, true}) {
            std::string name = "fp8-group" + std::to_string(g);
            if (col_major) name += "-col-major";
            if (tma_aligned) name += "-tma-aligned";
            if (ue8m0) name += "-ue8m0";
            v.push_back(FusionVariant{std::move(name), ops::kQuantFp8Group,
                                      g == 128 ? kFp8Dynamic128Sym : kFp8Dynamic64Sym, g, col_major,
                                      ue8m0, tma_aligned});
          }
        }
      }
    }
    return v;
  }();
  return variants;
}

namespace {

namespace mla_in = ir::mla_attention::in;
namespace mla_attr = ir::mla_attention::attr;
namespace qfg_attr = ir::quant_fp8_group::attr;

std::string flags_str(const FusionVariant& v) {
  if (v.quant_op != ops::kQuantFp8Group) return "";
  std::string s = v.col_major ? " [col_major" : " [row_major";
  if (v.tma_aligned) s += ", tma_aligned";
  if (v.ue8m0) s += ", ue8m0";
  return s + "]";
}

// The unfused chain the pattern is: mla_attention (no quantization) -> the variant's quant op.
NodePat variant_pattern(const FusionVariant& v) {
  NodePat attn = NodePat(std::string(ops::kMlaAttention))
                     .as("attn")
                     .attr(AttrPred::absent(mla_attr::kQuantGroupSize))
                     .input(mla_in::kOutputScale, ValuePat::absent())
                     .output(1, "kv_cache_out");
  NodePat quant = NodePat(std::string(v.quant_op))
                      .as("quant")
                      .input(0, ValuePat::output_of(attn, 0).as("attn_out"))
                      .output(0, "q");
  if (v.quant_op == ops::kQuantFp8Group) {
    quant.attr(AttrPred::eq(qfg_attr::kGroupSize, v.group_size))
        .attr(AttrPred::eq(qfg_attr::kColMajor, v.col_major))
        .attr(AttrPred::eq(qfg_attr::kTmaAligned, v.tma_aligned))
        .attr(AttrPred::eq(qfg_attr::kUe8m0, v.ue8m0))
        .output(1, "block_scale");
  } else if (v.quant_op == ops::kQuantNvfp4) {
    quant.input(1, ValuePat::any().as("scale")).output(1, "block_scale");
  } else {
    quant.input(1, ValuePat::any().as("scale"));
  }
  return quant;
}

bool is_scalar_f32(const ir::Value* v) {
  const ir::ValueType want{DType::kF32, Shape{Dim::fixed(1)}, Layout::kRowMajor};
  return v != nullptr && v->type() == want;
}

// The backend's answers: for each distinct (layer, num_heads, v_head_dim), one per variant.
struct SupportTable {
  std::map<std::tuple<int64_t, int64_t, int64_t>, size_t> row;  // -> index into `answers`
  std::vector<std::vector<bool>> answers;

  bool supported(int64_t layer, int64_t h, int64_t v, size_t variant) const {
    auto it = row.find({layer, h, v});
    return it != row.end() && answers[it->second][variant];
  }
};

RewriteResult fuse(const Match& m, const FusionVariant& v, size_t variant_index,
                   const SupportTable& support, const std::string& backend_name) {
  const ir::Node* attn = m.node("attn");
  const ir::Node* quant = m.node("quant");
  const AttrMap& a = attn->attrs();
  const int64_t layer = a.get<int64_t>(mla_attr::kLayer);
  const int64_t h = a.get<int64_t>(mla_attr::kNumHeads);
  const int64_t vd = a.get<int64_t>(mla_attr::kVHeadDim);
  const int64_t hv = h * vd;

  if (!support.supported(layer, h, vd, variant_index)) {
    return RewriteResult::reject("backend '" + backend_name + "' does not support " + v.key.str() +
                                 flags_str(v) + " for layer " + std::to_string(layer) + " (H = " +
                                 std::to_string(h) + ", V = " + std::to_string(vd) + ")");
  }
  const ir::Value* attn_out = m.value("attn_out");
  if (attn_out->dtype() != DType::kBF16) {
    return RewriteResult::reject("wrong dtype: the attention output %" + attn_out->name() + " is " +
                                 attn_out->type().str() +
                                 "; the fused op quantizes the bf16 output");
  }
  const DType q_dtype = v.quant_op == ops::kQuantNvfp4 ? DType::kFp4E2M1x2 : DType::kFp8E4M3;
  const ir::Value* q = m.value("q");
  if (q == nullptr || q->dtype() != q_dtype) {
    return RewriteResult::reject(
        "wrong dtype: the quantized output " +
        (q ? "%" + q->name() + " is " + q->type().str() : std::string("is absent")) +
        ", expected " + std::string(dtype_name(q_dtype)));
  }
  if (v.group_size > 0 && hv % v.group_size != 0) {
    return RewriteResult::reject("group size " + std::to_string(v.group_size) +
                                 " does not divide H*V = " + std::to_string(hv));
  }
  ir::Value* scale = m.has_value("scale") ? m.value("scale") : nullptr;
  if (v.quant_op != ops::kQuantFp8Group && !is_scalar_f32(scale)) {
    return RewriteResult::reject(
        "wrong dtype: the " + std::string(v.quant_op == ops::kQuantNvfp4 ? "global" : "static") +
        " scale " + (scale ? "%" + scale->name() + " is " + scale->type().str() : "is absent") +
        ", expected f32[1]");
  }
  if (v.quant_op == ops::kQuantFp8Group) {
    const double eps = quant->attrs().get_or<double>(qfg_attr::kEps, ops::kDefaultQuantEps);
    if (eps != ops::kDefaultQuantEps) {
      return RewriteResult::reject("eps " + std::to_string(eps) +
                                   " differs from the fused op's fixed 1e-10");
    }
  }

  Replacement r;
  r.op = std::string(ops::kMlaAttention);
  r.inputs = {attn->input(mla_in::kQ), attn->input(mla_in::kKvCNormed), attn->input(mla_in::kKPe),
              attn->input(mla_in::kKvCache), scale};  // scale: the output_scale slot
  r.attrs = a;
  if (v.group_size > 0) r.attrs.set(mla_attr::kQuantGroupSize, v.group_size);
  if (v.quant_op == ops::kQuantFp8Group) {
    r.attrs.set(mla_attr::kQuantScaleUe8m0, v.ue8m0);
    r.attrs.set(mla_attr::kQuantColMajor, v.col_major);
    r.attrs.set(mla_attr::kQuantTmaAligned, v.tma_aligned);
  }
  // Re-parent the quant node's outputs (the caller's buffers) and the updated cache.
  r.outputs.resize(3);
  r.outputs[0].reuse = m.value("q");
  r.outputs[1].reuse = m.value("kv_cache_out");
  r.outputs[2].reuse = m.has_value("block_scale") ? m.value("block_scale") : nullptr;
  return RewriteResult::replace(std::move(r));
}

}  // namespace

struct MlaAttnQuantFusion::State {
  SupportTable support;
  std::string backend_name;
  RuleSet rules;
};

MlaAttnQuantFusion::MlaAttnQuantFusion(const FusionCapabilities& target)
    : target_(target), state_(std::make_unique<State>()) {
  const auto& variants = mla_fusion_variants();
  State* state = state_.get();
  for (size_t i = 0; i < variants.size(); ++i) {
    const FusionVariant& v = variants[i];
    state_->rules.add(Rule{v.name, variant_pattern(v), [&v, i, state](const Match& m) {
                             return fuse(m, v, i, state->support, state->backend_name);
                           }});
  }
}

MlaAttnQuantFusion::~MlaAttnQuantFusion() = default;

bool MlaAttnQuantFusion::run(ir::Graph& graph, PassStats& stats) {
  const auto& variants = mla_fusion_variants();
  // Ask the backend once per layer and variant: a rule fuses only what the backend said yes to.
  SupportTable& support = state_->support;
  support = SupportTable();
  state_->backend_name = target_.name();
  for (const ir::Node* n : graph.nodes()) {
    // Only unfused attentions (no quantization attribute, no output_scale) can take a quant op.
    if (n->op() != ops::kMlaAttention || n->attrs().has(mla_attr::kQuantGroupSize) ||
        n->input(mla_in::kOutputScale) != nullptr) {
      continue;
    }
    const int64_t layer = n->attrs().get<int64_t>(mla_attr::kLayer);
    const int64_t h = n->attrs().get<int64_t>(mla_attr::kNumHeads);
    const int64_t vd = n->attrs().get<int64_t>(mla_attr::kVHeadDim);
    auto [it, fresh] = support.row.emplace(std::make_tuple(layer, h, vd), support.answers.size());
    if (!fresh) continue;
    std::vector<bool>& answers = support.answers.emplace_back(variants.size(), false);
    for (size_t i = 0; i < variants.size(); ++i) {
      const FusionVariant& v = variants[i];
      FusedQuantRequest req{v.key, layer, h, vd, v.col_major, v.ue8m0, v.tma_aligned};
      answers[i] = target_.fused_output_quant_supported(req);
    }
  }
  if (support.answers.empty()) return false;
  return apply_rules(graph, state_->rules, stats);
}

}  // namespace mlafuse::passes
