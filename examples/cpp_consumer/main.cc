// Uses the installed mlafuse as an engine would: compiles a two-layer DeepSeek-V3 MLA graph and runs
// the fusion pass against every backend of the install (the CUDA backend answers capability
// questions without a GPU, so a CUDA install is exercised here too), and quantizes one tensor (FP8,
// group 128) on the CPU backend. Exits non-zero when a step does not do what it should, so CI
// catches a broken install.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <memory>
#include <string>
#include <vector>

#include "mlafuse/backends/backend.h"
#include "mlafuse/core/tensor.h"
#include "mlafuse/models/mla_block.h"
#include "mlafuse/passes/dce.h"
#include "mlafuse/passes/mla_attn_quant_fusion.h"
#include "mlafuse/passes/pass_manager.h"
#include "mlafuse/quant/codecs.h"
#include "mlafuse/quant/scale_layout.h"

namespace {

int compile_two_layers(const mlafuse::Backend& backend) {
  mlafuse::models::MlaGraphOptions options;
  options.num_layers = 2;
  options.quant = mlafuse::parse_output_quant("fp8-group128");
  mlafuse::ir::Graph graph = mlafuse::models::build_mla_graph(options);

  mlafuse::passes::PassManager pipeline;
  pipeline.emplace<mlafuse::passes::MlaAttnQuantFusion>(backend);
  pipeline.emplace<mlafuse::passes::DeadCodeElimination>();
  const std::vector<mlafuse::passes::PassStats> stats = pipeline.run(graph);
  for (const auto& s : stats) {
    std::printf("%s: pass %s: %lld rewrites, %lld -> %lld nodes\n", backend.name().c_str(),
                s.pass.c_str(), static_cast<long long>(s.matches),
                static_cast<long long>(s.nodes_before), static_cast<long long>(s.nodes_after));
  }
  // Each layer is attention -> quant -> o_proj; fusion leaves attention -> o_proj.
  if (stats.empty() || stats[0].matches != 2 || graph.num_nodes() != 4) {
    std::fprintf(stderr, "expected 2 fused layers and 4 nodes, got %zu nodes\n",
                 graph.num_nodes());
    return 1;
  }
  return 0;
}

int quantize_one_tensor(mlafuse::Backend& backend) {
  constexpr int64_t kTokens = 4, kDim = 256, kGroup = 128;
  mlafuse::Tensor x = mlafuse::Tensor::empty(mlafuse::DType::kBF16, {kTokens, kDim});
  std::vector<float> ref(kTokens * kDim);
  for (int64_t i = 0; i < kTokens * kDim; ++i) {
    ref[i] = mlafuse::round_to_bf16(std::sin(0.05f * static_cast<float>(i)) * (1 + i % 7));
    x.data<uint16_t>()[i] = mlafuse::f32_to_bf16_bits(ref[i]);
  }
  const mlafuse::GroupScaleLayout layout{kTokens, kDim / kGroup, false, false};
  mlafuse::Tensor q = mlafuse::Tensor::empty(mlafuse::DType::kFp8E4M3, {kTokens, kDim});
  mlafuse::Tensor s = mlafuse::Tensor::empty_strided(
      mlafuse::DType::kF32, {kTokens, kDim / kGroup},
      {layout.token_stride(), layout.group_stride()}, layout.storage_numel());

  mlafuse::AttrMap attrs;
  attrs.set("group_size", kGroup);
  std::vector<mlafuse::Tensor> inputs = {x}, outputs = {q, s};
  mlafuse::RunContext ctx;
  ctx.num_tokens = kTokens;
  backend.run(mlafuse::OpCall{"quant_fp8_group", attrs, inputs, outputs}, ctx);

  // Dequantize and compare: a finite positive scale per group, and each e4m3 code within half a
  // step of its input (3 mantissa bits: 2^-4 of the group's amax, which maps to 448).
  bool ok = true;
  float worst = 0.0f;
  for (int64_t t = 0; t < kTokens; ++t) {
    for (int64_t d = 0; d < kDim; ++d) {
      const float scale = s.data<float>()[layout.offset(t, d / kGroup)];
      const float back = mlafuse::e4m3_to_f32(q.data<uint8_t>()[t * kDim + d]) * scale;
      const float err = std::fabs(back - ref[t * kDim + d]);
      ok = ok && std::isfinite(scale) && scale > 0 && err <= 448.0f * scale / 16;
      worst = std::fmax(worst, err / (448.0f * scale));
    }
    std::printf("token %lld: scales %.6g %.6g, codes %02x %02x %02x %02x ...\n",
                static_cast<long long>(t), s.data<float>()[layout.offset(t, 0)],
                s.data<float>()[layout.offset(t, 1)], q.data<uint8_t>()[t * kDim],
                q.data<uint8_t>()[t * kDim + 1], q.data<uint8_t>()[t * kDim + 2],
                q.data<uint8_t>()[t * kDim + 3]);
  }
  std::printf("quant_fp8_group on %s: max |dequant - x| / group amax = %.4f\n",
              backend.name().c_str(), worst);
  if (!ok) {
    std::fprintf(stderr, "dequantized values are further from the input than e4m3 allows\n");
    return 1;
  }
  return 0;
}

}  // namespace

int main() {
  try {
    for (const std::string& name : mlafuse::available_backends()) {
      if (int rc = compile_two_layers(*mlafuse::make_backend(name))) return rc;
    }
    std::unique_ptr<mlafuse::Backend> cpu = mlafuse::make_backend("cpu");
    if (int rc = quantize_one_tensor(*cpu)) return rc;
    std::printf("mlafuse consumer: ok\n");
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "mlafuse consumer: %s\n", e.what());
    return 1;
  }
}
