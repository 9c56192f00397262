#include "mlafuse/passes/mla_attn_quant_fusion.h"

#include <algorithm>
#include <map>
#include <tuple>

#include "mlafuse/ir/op_registry.h"
#include "mlafuse/passes/pattern.h"
#include "mlafuse/passes/rewrite.h"

namespace mlafuse::passes {

namespace ops = ir::ops;

std::string fusion_label(const OutputQuant& quant) {
  std::string s(quant.info().name);
  if (quant.col_major()) s += "-col-major";
  if (quant.tma_aligned()) s += "-tma-aligned";
  if (quant.ue8m0) s += "-ue8m0";
  return s;
}

namespace {

namespace mla_in = ir::mla_attention::in;
namespace mla_out = ir::mla_attention::out;
namespace mla_attr = ir::mla_attention::attr;
namespace qfg_attr = ir::quant_fp8_group::attr;

std::string flags_str(const OutputQuant& q) {
  if (!q.info().group_fp8()) return "";
  std::string s = q.col_major() ? " [col_major" : " [row_major";
  if (q.tma_aligned()) s += ", tma_aligned";
  if (q.ue8m0) s += ", ue8m0";
  return s + "]";
}

// The unfused chain the pattern is: mla_attention (no quantization) -> `quant_op`, the op of
// `format` (and of any format sharing the op, which then has the same operands).
NodePat quant_op_pattern(std::string_view quant_op, const OutputFormatInfo& format) {
  NodePat attn = NodePat(std::string(ops::kMlaAttention))
                     .as("attn")
                     .attr(AttrPred::absent(mla_attr::kQuantGroupSize))
                     .input(mla_in::kOutputScale, ValuePat::absent())
                     .output(1, "kv_cache_out");
  NodePat quant = NodePat(std::string(quant_op))
                      .as("quant")
                      .input(0, ValuePat::output_of(attn, 0).as("attn_out"))
                      .output(0, "q");
  if (format.takes_scale()) quant.input(1, ValuePat::any().as("scale"));
  if (format.has_block_scale()) quant.output(1, "block_scale");
  if (quant_op == ops::kQuantFp8Group) {
    // Only the group sizes the table has a format for.
    quant.attr(AttrPred::custom(
        qfg_attr::kGroupSize,
        [](const AttrValue* v) {
          const int64_t* g = v != nullptr ? std::get_if<int64_t>(v) : nullptr;
          if (g == nullptr) return false;
          for (const OutputFormatInfo& f : output_formats()) {
            if (f.group_fp8() && f.key->group_size() == *g) return true;
          }
          return false;
        },
        "group_size of a group-FP8 format"));
  }
  return quant;
}

bool is_scalar_f32(const ir::Value* v) {
  const ir::ValueType want{DType::kF32, Shape{Dim::fixed(1)}, Layout::kRowMajor};
  return v != nullptr && v->type() == want;
}

// The backend's answers, asked once per (layer, H, V, quantization) that a match needs.
class SupportCache {
 public:
  bool supported(const FusionCapabilities& target, const FusedQuantRequest& req) {
    const auto key = std::make_tuple(req.layer, req.num_heads, req.v_head_dim, req.quant.format,
                                     req.quant.scale_layout, req.quant.ue8m0);
    auto it = answers_.find(key);
    if (it == answers_.end()) {
      it = answers_.emplace(key, target.fused_output_quant_supported(req)).first;
    }
    return it->second;
  }
  void clear() { answers_.clear(); }

 private:
  std::map<std::tuple<int64_t, int64_t, int64_t, OutputFormat, Layout, bool>, bool> answers_;
};

RewriteResult fuse(const Match& m, const FusionCapabilities& target, SupportCache& support) {
  const ir::Node* attn = m.node("attn");
  const ir::Node* quant_node = m.node("quant");
  const OutputQuant quant = *ir::output_quant_of_quant_op(quant_node->op(), quant_node->attrs());
  const OutputFormatInfo& format = quant.info();
  const std::string label = fusion_label(quant);
  const AttrMap& a = attn->attrs();
  const int64_t layer = a.get<int64_t>(mla_attr::kLayer);
  const int64_t h = a.get<int64_t>(mla_attr::kNumHeads);
  const int64_t vd = a.get<int64_t>(mla_attr::kVHeadDim);
  const int64_t hv = h * vd;

  if (!support.supported(target, FusedQuantRequest{quant, layer, h, vd})) {
    return RewriteResult::reject("backend '" + target.name() + "' does not support " +
                                 format.key->str() + flags_str(quant) + " for layer " +
                                 std::to_string(layer) + " (H = " + std::to_string(h) +
                                 ", V = " + std::to_string(vd) + ")")
        .labelled(label);
  }
  const ir::Value* attn_out = m.value("attn_out");
  if (attn_out->dtype() != DType::kBF16) {
    return RewriteResult::reject("wrong dtype: the attention output %" + attn_out->name() + " is " +
                                 attn_out->type().str() +
                                 "; the fused op quantizes the bf16 output")
        .labelled(label);
  }
  const DType q_dtype = format.code_dtype();
  const ir::Value* q = m.value("q");
  if (q == nullptr || q->dtype() != q_dtype) {
    return RewriteResult::reject(
               "wrong dtype: the quantized output " +
               (q ? "%" + q->name() + " is " + q->type().str() : std::string("is absent")) +
               ", expected " + std::string(dtype_name(q_dtype)))
        .labelled(label);
  }
  const int64_t g = quant.group_size();
  if (g > 0 && hv % g != 0) {
    return RewriteResult::reject("group size " + std::to_string(g) +
                                 " does not divide H*V = " + std::to_string(hv))
        .labelled(label);
  }
  ir::Value* scale = m.has_value("scale") ? m.value("scale") : nullptr;
  if (format.takes_scale() && !is_scalar_f32(scale)) {
    return RewriteResult::reject(
               "wrong dtype: the " + std::string(format.key->scale2 ? "global" : "static") +
               " scale " +
               (scale ? "%" + scale->name() + " is " + scale->type().str() : "is absent") +
               ", expected f32[1]")
        .labelled(label);
  }
  if (quant_node->op() == ops::kQuantFp8Group) {
    const double eps = quant_node->attrs().get_or<double>(qfg_attr::kEps, ops::kDefaultQuantEps);
    if (eps != ops::kDefaultQuantEps) {
      return RewriteResult::reject("eps " + std::to_string(eps) +
                                   " differs from the fused op's fixed 1e-10")
          .labelled(label);
    }
  }

  Replacement r;
  r.op = std::string(ops::kMlaAttention);
  r.inputs = {attn->input(mla_in::kQ), attn->input(mla_in::kKvCNormed), attn->input(mla_in::kKPe),
              attn->input(mla_in::kKvCache), scale};  // scale: the output_scale slot
  r.attrs = a;
  ir::set_fused_quant_attrs(r.attrs, quant);
  // Re-parent the quant node's outputs (the caller's buffers) and the updated cache.
  r.outputs.resize(3);
  r.outputs[mla_out::kOut].reuse = m.value("q");
  r.outputs[mla_out::kKvCacheOut].reuse = m.value("kv_cache_out");
  r.outputs[mla_out::kOutputBlockScale].reuse =
      m.has_value("block_scale") ? m.value("block_scale") : nullptr;
  return RewriteResult::replace(std::move(r)).labelled(label);
}

}  // namespace

struct MlaAttnQuantFusion::State {
  SupportCache support;
  RuleSet rules;
};

MlaAttnQuantFusion::MlaAttnQuantFusion(const FusionCapabilities& target)
    : target_(target), state_(std::make_unique<State>()) {
  // One rule per quant op of the table, in table order.
  std::vector<std::string_view> quant_ops;
  for (const OutputFormatInfo& f : output_formats()) {
    if (!f.key) continue;
    const std::string_view op = ir::quant_op_of(OutputQuant{f.format});
    if (std::find(quant_ops.begin(), quant_ops.end(), op) != quant_ops.end()) continue;
    quant_ops.push_back(op);
    State* state = state_.get();
    const FusionCapabilities& target = target_;
    state_->rules.add(
        Rule{std::string(op), quant_op_pattern(op, f),
             [&target, state](const Match& m) { return fuse(m, target, state->support); }});
  }
}

MlaAttnQuantFusion::~MlaAttnQuantFusion() = default;

bool MlaAttnQuantFusion::run(ir::Graph& graph, PassStats& stats) {
  state_->support.clear();  // the target's answers may differ between runs
  return apply_rules(graph, state_->rules, stats);
}

}  // namespace mlafuse::passes
