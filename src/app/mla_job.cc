#include "mlafuse/app/mla_job.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <sstream>

#include "compare.h"
#include "mlafuse/app/pipeline.h"
#include "mlafuse/backends/cpu/reference.h"
#include "mlafuse/core/error.h"
#include "mlafuse/ir/op_registry.h"
#include "mlafuse/models/weights.h"
#include "mlafuse/quant/codecs.h"
#include "mlafuse/quant/scale_layout.h"

namespace mlafuse::app {
namespace {

using Clock = std::chrono::steady_clock;
double ms_since(Clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
}

Tensor scalar_f32(double v) {
  Tensor t = Tensor::empty(DType::kF32, {1});
  t.data<float>()[0] = static_cast<float>(v);
  return t;
}

}  // namespace

models::BatchSpec default_job_batch() {
  models::BatchSpec s;
  s.decode_lens = {1, 77, 300, 1000};
  s.prefills = {{32, 0}};
  return s;
}

OutputQuant default_job_quant() {
  return OutputQuant::make(OutputFormat::kFp8Group128, /*col_major=*/true, /*tma_aligned=*/true);
}

MlaGraphPair build_fused_pair(Backend& backend, const models::MlaGraphOptions& options) {
  MlaGraphPair g;
  g.unfused = models::build_mla_graph(options);
  g.fused = models::build_mla_graph(options);
  g.fusion = default_pipeline(backend).run(g.fused);
  const std::map<std::string, int64_t> ops = g.fused.op_counts();
  for (std::string_view op :
       {ir::ops::kQuantFp8Static, ir::ops::kQuantFp8Group, ir::ops::kQuantNvfp4}) {
    const auto it = ops.find(std::string(op));
    if (it == ops.end()) continue;
    std::string reasons;
    for (const passes::PassStats& s : g.fusion) {
      for (const passes::Rejection& j : s.rejections) reasons += "; " + j.node + ": " + j.reason;
    }
    MLAFUSE_FAIL("backend ", backend.name(), " did not fuse ", options.quant.str(),
                 " into every layer (", it->second, " ", op, " nodes left)", reasons);
  }
  return g;
}

namespace {

// Step 1, calibrate: the f32 end-to-end reference of every layer (r.reference, and each layer's
// amax) and the static scales an engine's calibration pass would set, added to the graph inputs.
struct Calibration {
  std::map<std::string, Tensor> inputs;  // the batch's graph inputs and the calibrated scales
  std::vector<Tensor> y_ref;             // per layer: [n, hidden] f32
};

Calibration calibrate(const MlaJobOptions& o, const models::Batch& batch,
                      const WeightStore& weights, MlaJobReport& r) {
  Calibration c;
  c.inputs = batch.graph_inputs();
  r.layers.resize(static_cast<size_t>(o.num_layers));
  c.y_ref.resize(static_cast<size_t>(o.num_layers));
  for (int64_t i = 0; i < o.num_layers; ++i) {
    LayerReport& lr = r.layers[static_cast<size_t>(i)];
    lr.layer = i;
    const MlaConfig& cfg = o.config;
    const int64_t n = batch.num_tokens;
    const models::LayerBatch& lb = batch.layers[static_cast<size_t>(i)];
    Tensor cache = lb.kv_cache.clone();  // the op writes this step's tokens into it
    const Tensor attn = ref::mla_attention_f32(lb.q, lb.kv_c_normed, lb.k_pe, cache, batch.meta,
                                               weights.layer(i), cfg, n);  // [n, H*V] f32
    for (int64_t e = 0; e < n * cfg.output_dim(); ++e) {
      lr.amax =
          std::max(lr.amax, static_cast<double>(std::fabs(round_to_bf16(attn.data<float>()[e]))));
    }
    const double amax = lr.amax > 0 ? lr.amax : 1.0;  // an all-zero output: any scale works
    if (o.quant.format == OutputFormat::kFp8Static) {
      lr.input_scale = static_cast<float>(amax / kFp8E4M3Max);
      c.inputs[models::layer_value_name(i, "o_proj.input_scale")] = scalar_f32(lr.input_scale);
    } else if (o.quant.format == OutputFormat::kNvfp4) {
      lr.global_scale = static_cast<float>(kFp8E4M3Max * kFp4E2M1Max / amax);
      c.inputs[models::layer_value_name(i, "o_proj.input_global_scale")] =
          scalar_f32(lr.global_scale);
    }
    c.y_ref[static_cast<size_t>(i)] =
        models::linear_block_fp8_f32(attn, models::o_proj_of(weights, i));
    r.reference[models::layer_value_name(i, "y_ref")] = c.y_ref[static_cast<size_t>(i)];
  }
  if (o.quant.format == OutputFormat::kFp8Static) {
    r.calibration = "static FP8 input_scale = amax(bf16 attention output) / 448 per layer";
  } else if (o.quant.format == OutputFormat::kNvfp4) {
    r.calibration = "NVFP4 input_global_scale = 448 * 6 / amax(bf16 attention output) per layer";
  } else {
    r.calibration = "dynamic per-token-group scales: none to calibrate";
  }

  return c;
}

// Step 4, compare: layer i's codes, scales and o_proj output, fused against unfused (bit for bit)
// and against the f32 reference; records them for --dump.
void compare_layer(int64_t i, const MlaJobOptions& o, const runtime::Executor& eu,
                   const runtime::Executor& ef, int64_t t_pad, int64_t n, const Tensor& y_ref,
                   MlaJobReport& r) {
  const MlaConfig& cfg = o.config;
  LayerReport& lr = r.layers[static_cast<size_t>(i)];
  const std::string y_name = models::layer_value_name(i, "y");
  QuantMatch m = compare_quant_outputs(eu, ef, o.quant, i, cfg.output_dim(), t_pad, n);
  lr.codes_equal = m.codes_equal;
  lr.scales_equal = m.scales_equal;
  lr.mismatch = std::move(m.mismatch);
  for (auto& [name, t] : m.unfused) r.unfused_outputs[name] = std::move(t);
  for (auto& [name, t] : m.fused) r.fused_outputs[name] = std::move(t);
  r.bitwise_equal = r.bitwise_equal && lr.codes_equal && lr.scales_equal;

  const Tensor y_u = eu.read(y_name), y_f = ef.read(y_name);
  std::string ignored;
  lr.y_equal = rows_equal(y_u, y_f, n, y_name, &ignored);
  const Tensor& ref = y_ref;
  const ErrStats ef_err = compare_to_reference(y_f, ref, n);
  const ErrStats eu_err = compare_to_reference(y_u, ref, n);
  lr.ref_max_abs = ef_err.ref_max;
  const double denom = ef_err.ref_max > 0 ? ef_err.ref_max : 1.0;
  lr.max_abs_err = ef_err.max_abs;
  lr.max_rel_err = ef_err.max_abs / denom;
  lr.unfused_max_abs_err = eu_err.max_abs;
  lr.unfused_max_rel_err = eu_err.max_abs / denom;
  r.o_proj_max_abs_err = std::max(r.o_proj_max_abs_err, lr.max_abs_err);
  r.o_proj_max_rel_err = std::max(r.o_proj_max_rel_err, lr.max_rel_err);
  r.unfused_outputs[y_name] = first_rows(y_u, n);
  r.fused_outputs[y_name] = first_rows(y_f, n);
  const std::string cache_name = models::layer_value_name(i, "kv_cache_out");
  r.unfused_outputs[cache_name] = eu.read(cache_name);
  r.fused_outputs[cache_name] = ef.read(cache_name);
}

}  // namespace

MlaJobReport run_mla_job(Backend& backend, const MlaJobOptions& o) {
  const MlaConfig& cfg = o.config;
  cfg.validate();
  MLAFUSE_CHECK(o.num_layers >= 1, "--layers must be >= 1, got ", o.num_layers);
  MLAFUSE_CHECK(o.quant.quantized(),
                "the job compares a fused graph with the unfused one; quantization 'none' has "
                "nothing to fuse");
  MlaJobReport r;
  r.backend = backend.name();
  r.config = cfg;
  r.num_layers = o.num_layers;
  r.quant = o.quant.str();

  auto t0 = Clock::now();
  const WeightStore weights = models::make_mla_weights(cfg, o.num_layers, o.batch.seed);
  r.weights_ms = ms_since(t0);
  t0 = Clock::now();
  models::BatchSpec spec = o.batch;
  spec.t_pad = 0;  // the executor pads to its bucket
  const models::Batch batch = models::make_batch(cfg, o.num_layers, spec);
  const int64_t n = batch.num_tokens;
  r.num_tokens = n;
  r.num_pages = batch.num_pages;
  r.batch_ms = ms_since(t0);

  // 1. calibrate.
  t0 = Clock::now();
  const Calibration calibration = calibrate(o, batch, weights, r);
  const std::map<std::string, Tensor>& inputs = calibration.inputs;
  r.reference_ms = ms_since(t0);

  // 2. compile: the two graphs, as built and after the fusion pipeline.
  t0 = Clock::now();
  models::MlaGraphOptions go;
  go.config = cfg;
  go.num_layers = o.num_layers;
  go.num_pages = batch.num_pages;
  go.quant = o.quant;
  const MlaGraphPair graphs = build_fused_pair(backend, go);
  r.fusion = graphs.fusion;
  r.compile_ms = ms_since(t0);
  const ir::Graph& unfused = graphs.unfused;
  const ir::Graph& fused = graphs.fused;
  r.ops_unfused = unfused.op_counts();
  r.ops_fused = fused.op_counts();

  // 3. run both on the backend.
  runtime::ExecutorOptions eo;
  eo.cuda_graphs = o.cuda_graphs;
  eo.timing_iters = o.timing_iters;
  eo.timing_warmup = o.timing_warmup;
  runtime::Executor eu(unfused, backend, weights, eo);
  runtime::Executor ef(fused, backend, weights, eo);
  r.unfused = eu.run(inputs, batch.meta);
  r.fused = ef.run(inputs, batch.meta);
  const int64_t t_pad = r.fused.t_pad;

  // 4. compare, layer by layer.
  r.bitwise_equal = true;
  for (int64_t i = 0; i < o.num_layers; ++i) {
    compare_layer(i, o, eu, ef, t_pad, n, calibration.y_ref[static_cast<size_t>(i)], r);
  }

  // Inputs for --dump: the graph inputs, the step's metadata and the checkpoint tensors.
  r.inputs = inputs;
  r.inputs["meta.seq_lens"] = batch.meta.seq_lens;
  r.inputs["meta.query_start_loc"] = batch.meta.query_start_loc;
  r.inputs["meta.block_table"] = batch.meta.block_table;
  r.inputs["meta.slot_mapping"] = batch.meta.slot_mapping;
  for (const auto& [name, t] : weights.tensors) r.inputs[name] = t;
  return r;
}

QuantMatch compare_quant_outputs(const runtime::Executor& eu, const runtime::Executor& ef,
                                 const OutputQuant& quant, int64_t layer, int64_t output_dim,
                                 int64_t t_pad, int64_t n) {
  QuantMatch m;
  const std::string xq_name = models::layer_value_name(layer, "xq");
  const std::string xs_name = models::layer_value_name(layer, "xs");
  const Tensor xq_u = eu.read(xq_name), xq_f = ef.read(xq_name);
  m.codes_equal = rows_equal(xq_u, xq_f, n, xq_name, &m.mismatch);
  m.unfused[xq_name] = first_rows(xq_u, n);
  m.fused[xq_name] = first_rows(xq_f, n);
  m.scales_equal = true;
  if (quant.info().group_fp8()) {
    const ir::Value* v = eu.graph().value(xs_name);
    MLAFUSE_CHECK(ef.graph().value(xs_name)->type() == v->type(), "fused ", xs_name, " ",
                  ef.graph().value(xs_name)->type().str(), " differs from the unfused ",
                  v->type().str());
    const GroupScaleLayout l = group_layout(v->layout(), t_pad, output_dim / quant.group_size());
    const Tensor xs_u = eu.read(xs_name), xs_f = ef.read(xs_name);
    std::string why;
    m.scales_equal = group_scales_equal(xs_u, xs_f, l, n, xs_name, &why);
    if (m.mismatch.empty()) m.mismatch = why;
    m.unfused[xs_name] = group_scales_logical(xs_u, l, n);
    m.fused[xs_name] = group_scales_logical(xs_f, l, n);
  } else if (quant.format == OutputFormat::kNvfp4) {
    // Swizzled block scales: every byte of the 128-row tiles that hold tokens [0, n), padding
    // (written as zero) included.
    const Nvfp4ScaleLayout l{t_pad, output_dim};
    const int64_t rows = round_up(n, 128);
    const Tensor xs_u = eu.read(xs_name), xs_f = ef.read(xs_name);
    const Tensor tu = xs_u.view(DType::kU8, {rows, l.padded_cols()}, {l.padded_cols(), 1});
    const Tensor tf = xs_f.view(DType::kU8, {rows, l.padded_cols()}, {l.padded_cols(), 1});
    std::string why;
    m.scales_equal = rows_equal(tu, tf, rows, xs_name + " (swizzled bytes)", &why);
    if (m.mismatch.empty()) m.mismatch = why;
    m.unfused[xs_name] = first_rows(tu, rows);
    m.fused[xs_name] = first_rows(tf, rows);
  }
  return m;
}

}  // namespace mlafuse::app
