// The main job (what `mlafuse run` does), as a library so tests run exactly what users run; the
// application above the runtime, in four steps (calibrate, compile, run, compare): build N MLA
// blocks with seeded weights and a seeded batch, run the unfused graph and the fused
// graph (mla-attn-quant-fusion) on a backend, and compare
//   - the FP8/NVFP4 codes and scales o_proj reads, fused against unfused, bit for bit;
//   - each graph's o_proj output against an f32 end-to-end reference: the CPU reference attention
//     in f32 (ref::mla_attention_f32) times the dequantized o_proj weight in f32, with no
//     activation quantization.
// Static scales (FP8 input_scale, NVFP4 input_global_scale) are calibrated from the data as an
// engine's calibration pass would: amax of the bf16 attention output (the reference attention
// rounded to bf16, which is what the unfused graph's attention produces on the CPU) / 448, and
// 448 * 6 / amax.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "mlafuse/backends/backend.h"
#include "mlafuse/core/mla_config.h"
#include "mlafuse/models/batch.h"
#include "mlafuse/models/mla_block.h"
#include "mlafuse/passes/pass_manager.h"
#include "mlafuse/runtime/executor.h"

namespace mlafuse::app {

struct MlaJobOptions {
  MlaConfig config;  // DeepSeek-V3 sizes by default
  int64_t num_layers = 1;
  models::BatchSpec batch;   // decode lengths, prefills, seed (t_pad: the executor pads)
  OutputQuant quant;         // must be quantized: the job compares a fusion
  bool cuda_graphs = false;  // replay a captured bucket (backends that capture)
  int timing_iters = 1;
  int timing_warmup = 0;
};

// The job's default batch: 4 decode tokens with contexts of different lengths and one 32-token
// prefill with no earlier context.
models::BatchSpec default_job_batch();
// The default quantization: group-128 FP8 with column-major, TMA-aligned scales (what
// cuBLASLt's Hopper block scaling and DeepGEMM read).
OutputQuant default_job_quant();

struct LayerReport {
  int64_t layer = 0;
  double amax = 0;            // of the bf16 attention output (calibration)
  double input_scale = 0;     // static FP8 scale (fp8-static), else 0
  double global_scale = 0;    // NVFP4 global scale (nvfp4), else 0
  bool codes_equal = false;   // fused xq == unfused xq, tokens [0, n)
  bool scales_equal = false;  // fused xs == unfused xs where defined (true for fp8-static)
  std::string mismatch;       // the first difference, when not equal
  bool y_equal = false;       // fused y == unfused y bit for bit, tokens [0, n)
  double ref_max_abs = 0;     // max |y_ref|
  double max_abs_err = 0;     // fused: max |y - y_ref|
  double max_rel_err = 0;     // fused: max |y - y_ref| / max |y_ref|
  double unfused_max_abs_err = 0;
  double unfused_max_rel_err = 0;
};

struct MlaJobReport {
  std::string backend;
  MlaConfig config;
  int64_t num_layers = 0;
  int64_t num_tokens = 0;
  int64_t num_pages = 0;
  std::string quant;  // "fp8-group128 col_major tma_aligned"
  std::string calibration;
  std::vector<passes::PassStats> fusion;
  std::map<std::string, int64_t> ops_unfused, ops_fused;
  std::vector<LayerReport> layers;
  bool bitwise_equal = false;     // every layer's codes and scales
  double o_proj_max_abs_err = 0;  // worst layer, fused graph
  double o_proj_max_rel_err = 0;
  runtime::RunStats unfused, fused;
  // Host-side phases, milliseconds.
  double weights_ms = 0, batch_ms = 0, reference_ms = 0, compile_ms = 0;

  // Graph inputs and outputs for --dump, host tensors trimmed to the n real tokens (scales in
  // logical [n, groups] order; NVFP4 block scales as their swizzled bytes).
  std::map<std::string, Tensor> inputs;
  std::map<std::string, Tensor> unfused_outputs, fused_outputs;
  std::map<std::string, Tensor> reference;  // "layers.{i}.y_ref" f32 [n, hidden]
};

// Throws mlafuse::Error on a bad option (naming it) or when the fusion pass did not fuse a layer
// (with the pass's recorded reason).
MlaJobReport run_mla_job(Backend& backend, const MlaJobOptions& options);

// The job's two graphs for `options`: as built, and after the fusion pipeline
// (mla-attn-quant-fusion, dce) asked of `backend`.
struct MlaGraphPair {
  ir::Graph unfused, fused;
  std::vector<passes::PassStats> fusion;
};
// Throws when a quantize node is left in the fused graph, with the pass's recorded reasons.
MlaGraphPair build_fused_pair(Backend& backend, const models::MlaGraphOptions& options);

// Layer `layer`'s quantized codes (xq) and scales (xs), the fused executor's last run against the
// unfused one's, tokens [0, n), bit for bit: group FP8 scales at their strided places, NVFP4 block
// scales as every swizzled byte of the 128-row tiles holding them (static FP8 has no xs output).
struct QuantMatch {
  bool codes_equal = false;
  bool scales_equal = false;
  std::string mismatch;  // the first difference, or ""
  // The compared values as host tensors (codes [n, ...]; group scales in logical [n, groups]
  // order; NVFP4 scales as their swizzled bytes), by value name, for --dump.
  std::map<std::string, Tensor> unfused, fused;
};
QuantMatch compare_quant_outputs(const runtime::Executor& eu, const runtime::Executor& ef,
                                 const OutputQuant& quant, int64_t layer, int64_t output_dim,
                                 int64_t t_pad, int64_t n);

}  // namespace mlafuse::app
