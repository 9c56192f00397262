// mla-attn-quant-fusion: folds the quantization that follows an MLA attention into the attention
// (SPEC 5). It has one rule per quant op of the format table (quant/output_quant.h: static FP8,
// group FP8 for the table's group sizes with any layout flags, NVFP4); a match reads the
// OutputQuant off the quant node, asks the target (FusionCapabilities) whether it can fuse that
// into this layer's attention, and rewrites
//
//   %out, %cache_out = mla_attention(%q, %kv_c, %k_pe, %cache) {layer = i, ...}
//   %xq, %xs = quant_fp8_group(%out) {group_size = 128, col_major = true, ...}
// into
//   %xq, %cache_out, %xs = mla_attention(%q, %kv_c, %k_pe, %cache) {layer = i, ...,
//       quant_group_size = 128, quant_col_major = true, ...}
//
// The fused node takes over the quant node's output Values (and the attention's kv_cache_out),
// so their names, shapes and layouts survive: the caller's scale buffer is the one the fused
// node writes, and its consumers are untouched. A match is refused, with the reason recorded,
// when the backend says no for that layer, the attention output has another user or is a graph
// output, the group does not divide H*V, a dtype is not the one the fused op produces or reads,
// or the quant op's eps differs from the fused kernels' 1e-10.
#pragma once

#include <memory>
#include <string>
#include <string_view>

#include "mlafuse/passes/fusion_capabilities.h"
#include "mlafuse/passes/pass_manager.h"
#include "mlafuse/quant/output_quant.h"

namespace mlafuse::passes {

// The name a fusion is counted and refused under in PassStats: the format, then its flags
// ("fp8-static", "fp8-group64-col-major-tma-aligned-ue8m0").
std::string fusion_label(const OutputQuant& quant);

class MlaAttnQuantFusion : public Pass {
 public:
  // `target` (a Backend, in practice) must outlive the pass.
  explicit MlaAttnQuantFusion(const FusionCapabilities& target);
  ~MlaAttnQuantFusion() override;
  std::string_view name() const override { return "mla-attn-quant-fusion"; }
  bool run(ir::Graph& graph, PassStats& stats) override;
  using Pass::run;

 private:
  struct State;
  const FusionCapabilities& target_;
  std::unique_ptr<State> state_;  // the rules (built once) and the backend's answers
};

}  // namespace mlafuse::passes
