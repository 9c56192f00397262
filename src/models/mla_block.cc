#include "mlafuse/models/mla_block.h"

#include "mlafuse/core/error.h"
#include "mlafuse/ir/op_registry.h"
#include "mlafuse/quant/scale_layout.h"

namespace mlafuse::models {

std::string layer_value_name(int64_t layer, std::string_view suffix) {
  return "layers." + std::to_string(layer) + "." + std::string(suffix);
}

namespace {

using ir::ValueType;

ValueType type(DType dtype, std::vector<Dim> dims, Layout layout = Layout::kRowMajor) {
  return ValueType{dtype, Shape(std::move(dims)), layout};
}

Dim fixed(int64_t v) { return Dim::fixed(v); }

void check_options(const MlaGraphOptions& o) {
  o.config.validate();
  MLAFUSE_CHECK(o.num_layers > 0, "MLA graph: num_layers must be positive, got ", o.num_layers);
  MLAFUSE_CHECK(o.num_pages > 0, "MLA graph: num_pages must be positive, got ", o.num_pages);
  const int64_t hv = o.config.output_dim();
  const int64_t g = o.quant.group_size();
  MLAFUSE_CHECK(g == 0 || hv % g == 0, "MLA graph: ", o.quant.info().name, " groups of ", g,
                " do not tile H*V = ", hv);
}

}  // namespace

ir::Graph build_mla_graph(const MlaGraphOptions& o) {
  check_options(o);
  const MlaConfig& c = o.config;
  const int64_t hv = c.output_dim();
  const Dim t = Dim::tokens();
  ir::Graph g;
  for (int64_t i = 0; i < o.num_layers; ++i) {
    auto name = [i](std::string_view suffix) { return layer_value_name(i, suffix); };
    ir::Value* q =
        g.add_input(name("q"), type(DType::kBF16, {t, fixed(c.num_heads), fixed(c.qk_head_dim())}));
    ir::Value* kvc =
        g.add_input(name("kv_c_normed"), type(DType::kBF16, {t, fixed(c.kv_lora_rank)}));
    ir::Value* kpe =
        g.add_input(name("k_pe"), type(DType::kBF16, {t, fixed(1), fixed(c.qk_rope_dim)}));
    ir::Value* cache = g.add_input(
        name("kv_cache"),
        type(DType::kBF16, {fixed(o.num_pages), fixed(c.page_size), fixed(c.cache_row())}));

    namespace attr = ir::mla_attention::attr;
    AttrMap attn_attrs;
    attn_attrs.set(attr::kLayer, i);
    attn_attrs.set(attr::kNumHeads, c.num_heads);
    attn_attrs.set(attr::kQkNopeDim, c.qk_nope_dim);
    attn_attrs.set(attr::kQkRopeDim, c.qk_rope_dim);
    attn_attrs.set(attr::kVHeadDim, c.v_head_dim);
    attn_attrs.set(attr::kKvLoraRank, c.kv_lora_rank);
    attn_attrs.set(attr::kSoftmaxScale, c.softmax_scale);
    ir::Node* attn = g.add_node(ir::ops::kMlaAttention, {q, kvc, kpe, cache}, std::move(attn_attrs),
                                {name("attn_out"), name("kv_cache_out")});
    ir::Value* attn_out = attn->output(0);

    if (!o.quant.quantized()) {
      g.mark_output(attn_out);
      g.mark_output(attn->output(1));
      continue;
    }
    // o_proj in DeepSeek-V3's block-FP8 checkpoint layout.
    ir::Value* wq =
        g.add_weight(name("o_proj.weight"), type(DType::kFp8E4M3, {fixed(c.hidden), fixed(hv)}));
    ir::Value* ws =
        g.add_weight(name("o_proj.weight_scale_inv"),
                     type(DType::kF32, {fixed(ceil_div(c.hidden, 128)), fixed(ceil_div(hv, 128))}));
    const std::string_view quant_op = ir::quant_op_of(o.quant);
    ir::Node* linear = nullptr;
    if (quant_op == ir::ops::kQuantFp8Static) {
      ir::Value* scale = g.add_input(name("o_proj.input_scale"), type(DType::kF32, {fixed(1)}));
      ir::Node* quant = g.add_node(quant_op, {attn_out, scale}, {}, {name("xq")});
      linear =
          g.add_node(ir::ops::kLinearFp8Block, {quant->output(0), scale, wq, ws}, {}, {name("y")});
    } else if (quant_op == ir::ops::kQuantFp8Group) {
      ir::Node* quant =
          g.add_node(quant_op, {attn_out}, ir::quant_op_attrs(o.quant), {name("xq"), name("xs")});
      linear = g.add_node(ir::ops::kLinearFp8Block, {quant->output(0), quant->output(1), wq, ws},
                          {}, {name("y")});
    } else {
      ir::Value* gs = g.add_input(name("o_proj.input_global_scale"), type(DType::kF32, {fixed(1)}));
      ir::Node* quant = g.add_node(quant_op, {attn_out, gs}, {}, {name("xq"), name("xs")});
      linear = g.add_node(ir::ops::kLinearNvfp4, {quant->output(0), quant->output(1), gs, wq, ws},
                          {}, {name("y")});
    }
    g.mark_output(linear->output(0));
    g.mark_output(attn->output(1));
  }
  return g;
}

}  // namespace mlafuse::models
