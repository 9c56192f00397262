// mla-attn-quant-fusion: folds the quantization that follows an MLA attention into the attention
// (SPEC 5). For every layer it asks the target (FusionCapabilities) which of 18 quantizations it can fuse (static
// FP8, NVFP4, and group FP8 for G in {128, 64} x col_major x ue8m0 x tma_aligned) and rewrites
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
#include <vector>

#include "mlafuse/passes/fusion_capabilities.h"
#include "mlafuse/passes/pass_manager.h"
#include "mlafuse/quant/quant_key.h"

namespace mlafuse::passes {

// One quantization the pass can fold into mla_attention.
struct FusionVariant {
  std::string name;           // the pattern's name: "fp8-static", "fp8-group64-col-major-ue8m0"
  std::string_view quant_op;  // quant_fp8_static, quant_fp8_group or quant_nvfp4
  QuantKey key;
  int64_t group_size = 0;  // quant_group_size of the fused node; 0 for static FP8
  bool col_major = false;
  bool ue8m0 = false;
  bool tma_aligned = false;
};

// The 18 variants: fp8-static, nvfp4, then the 16 group-FP8 ones.
const std::vector<FusionVariant>& mla_fusion_variants();

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
  std::unique_ptr<State> state_;  // the 18 rules (built once) and the backend's answers
};

}  // namespace mlafuse::passes
