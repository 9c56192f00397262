// Eager execution: binding inputs and running the prepared calls node by node.
#include "mlafuse/runtime/executor.h"

#include <algorithm>
#include <cstring>
#include <optional>

#include "executor_bucket.h"
#include "mlafuse/core/error.h"
#include "mlafuse/core/shape.h"
#include "mlafuse/ir/op_registry.h"
#include "mlafuse/mla/attention_metadata.h"

namespace mlafuse::runtime {

using detail::dtype_compatible;
using detail::input_names;
using detail::matches_plan;
using detail::token_leading;

std::string_view in_place_input(std::string_view op, std::string_view output) {
  if ((op == ir::ops::kMlaAttention || op == ir::ops::kCacheWrite) && output == "kv_cache_out") {
    return "kv_cache";
  }
  return {};
}

Executor::Executor(const ir::Graph& graph, Backend& backend, const WeightStore& weights,
                   ExecutorOptions options)
    : graph_(graph), backend_(backend), options_(std::move(options)) {
  for (size_t i = 1; i < options_.buckets.size(); ++i) {
    MLAFUSE_CHECK(options_.buckets[i] > options_.buckets[i - 1],
                  "executor buckets must be ascending, got ", options_.buckets[i - 1], " then ",
                  options_.buckets[i]);
  }
  MLAFUSE_CHECK(options_.buckets.empty() || options_.buckets[0] >= 1,
                "executor buckets must be >= 1");
  MLAFUSE_CHECK(options_.graph_block_table_cols >= 0,
                "executor graph_block_table_cols must be >= 0, got ",
                options_.graph_block_table_cols);
  MLAFUSE_CHECK(options_.timing_iters >= 1 && options_.timing_warmup >= 0,
                "executor timing: iters must be >= 1 and warmup >= 0");
  for (const ir::Node* node : graph_.nodes()) {
    MLAFUSE_CHECK(backend_.supports_op(node->op()), "backend ", backend_.name(),
                  " does not run op ", node->op(), " (node ", node->label(), ")");
  }
  // An in-place output shares its operand's buffer, so under the IR's value semantics nothing
  // else may see that operand: no other reader, no graph output, no weight (weights are shared
  // buffers outside the buckets).
  for (const ir::Node* node : graph_.nodes()) {
    const ir::OpSchema& s = node->schema();
    for (size_t i = 0; i < node->num_outputs(); ++i) {
      const std::string_view in = in_place_input(node->op(), s.outputs[i].name);
      const ir::Value* src = in.empty() ? nullptr : node->input(in);
      if (src == nullptr || node->output(i) == nullptr) continue;
      MLAFUSE_CHECK(!src->is_weight(), "node ", node->label(), " updates ", in, " ", src->name(),
                    " in place, but it is a weight; declare the cache as a graph "
                    "input (or chain it from another node's ",
                    s.outputs[i].name, ")");
      MLAFUSE_CHECK(
          src->num_uses() == 1 && !src->is_graph_output(), "node ", node->label(), " updates ", in,
          " ", src->name(), " in place (its ", s.outputs[i].name, " ", node->output(i)->name(),
          " is the same buffer), but ", src->name(),
          src->is_graph_output() ? " is also a graph output" : " is also read by another operand",
          "; chain the cache through ", s.outputs[i].name, " instead");
    }
  }
  for (const ir::Value* v : graph_.inputs()) {
    for (size_t d = 1; d < v->shape().rank(); ++d) {
      MLAFUSE_CHECK(!v->shape()[d].is_tokens(), "graph input ", v->name(), " ", v->type().str(),
                    ": only the leading dim may be the token count");
    }
    MLAFUSE_CHECK(!token_leading(v->shape()) || v->layout() == Layout::kRowMajor, "graph input ",
                  v->name(), " ", v->type().str(), ": token-dim inputs must be row-major");
  }
  bind_weights(weights);
}

Executor::~Executor() = default;

void Executor::stage_inputs(Bucket& b, const std::map<std::string, Tensor>& inputs, int64_t n) {
  for (const auto& [name, t] : inputs) {
    const ir::Value* v = graph_.find_value(name);
    MLAFUSE_CHECK(v != nullptr && v->is_graph_input(), "'", name,
                  "' is not an input of the graph (its inputs: ", input_names(graph_), ")");
  }
  for (const ir::Value* v : graph_.inputs()) {
    auto it = inputs.find(v->name());
    MLAFUSE_CHECK(it != inputs.end(), "graph input ", v->name(), " (", v->type().str(),
                  ") is missing");
    const Tensor& t = it->second;
    const std::vector<int64_t> want = v->shape().resolve(b.t_pad);
    const bool rows = token_leading(v->shape());
    bool ok = t.defined() && t.device() == Device::kCpu &&
              dtype_compatible(v->dtype(), t.dtype()) && t.rank() == want.size();
    for (size_t d = rows ? 1 : 0; ok && d < want.size(); ++d) ok = t.dim(d) == want[d];
    MLAFUSE_CHECK(ok, "graph input ", v->name(), ": expected a host tensor ", v->type().str(),
                  rows ? " (T >= " + std::to_string(n) + " rows)" : std::string(), ", got ",
                  t.defined() ? t.str() + " on " + std::string(device_name(t.device()))
                              : std::string("an absent tensor"));
    MLAFUSE_CHECK(!rows || t.dim(0) >= n, "graph input ", v->name(), " has ", t.dim(0),
                  " token rows but the batch has ", n, " tokens");
    Tensor& buf = b.buffers.at(v);
    const LayoutPlan p = plan_layout(v->layout(), want);
    if (matches_plan(t, p, v->dtype())) {
      backend_.copy(t, buf);
      continue;
    }
    MLAFUSE_CHECK(rows || v->layout() == Layout::kRowMajor, "graph input ", v->name(),
                  ": pass a tensor with the strides of layout ", layout_name(v->layout()));
    const Tensor src = t.is_contiguous() ? t : t.clone();
    Tensor& stage = b.staging.at(v);
    const size_t es = dtype_size(v->dtype());
    const size_t total = static_cast<size_t>(stage.storage()->bytes);
    const size_t copy = rows ? static_cast<size_t>(std::min<int64_t>(t.dim(0), b.t_pad) *
                                                   (t.numel() / std::max<int64_t>(t.dim(0), 1))) *
                                   es
                             : static_cast<size_t>(t.numel()) * es;
    std::memcpy(stage.storage()->data, src.raw(), copy);
    std::memset(static_cast<char*>(stage.storage()->data) + copy, 0, total - copy);
    backend_.copy(stage, buf);
  }
}

RunStats Executor::run(const std::map<std::string, Tensor>& inputs, const AttentionMetadata& meta) {
  const int64_t n = validate_attention_metadata(meta, MetadataForm::kStep);
  for (const ir::Node* node : graph_.nodes()) {
    const ir::OpSchema& s = node->schema();
    const int ci = s.input_index("kv_cache");
    if (ci < 0 || node->input(static_cast<size_t>(ci)) == nullptr) continue;
    const ir::Value* cache = node->input(static_cast<size_t>(ci));
    const std::vector<int64_t> shape = cache->shape().resolve(0);
    MLAFUSE_CHECK(shape.size() == 3, "cache ", cache->name(), " ", cache->type().str(),
                  ": expected [pages, page_size, row]");
    const PagedCacheExtent extent{shape[0], shape[1], cache->name()};
    validate_attention_metadata(meta, MetadataForm::kStep, &extent);
  }
  const int64_t t_pad = padded_tokens(n);
  Bucket& b = bucket(t_pad);
  last_ = nullptr;  // a failed run leaves nothing to read
  stage_inputs(b, inputs, n);
  RunStats stats =
      (options_.cuda_graphs && !b.cannot_capture) ? run_graph(b, meta, n) : run_eager(b, meta, n);
  last_ = &b;
  return stats;
}

RunStats Executor::run_eager(Bucket& b, const AttentionMetadata& meta, int64_t n) {
  // slot_mapping gets T_pad entries, -1 past n (docs/ops.md); the rest is copied as given.
  AttentionMetadata host = meta;
  host.slot_mapping = Tensor::empty(DType::kI32, {b.t_pad});
  int32_t* slots = host.slot_mapping.data<int32_t>();  // [T_pad]
  std::fill(slots, slots + b.t_pad, -1);
  std::memcpy(slots, meta.slot_mapping.raw(), static_cast<size_t>(n) * sizeof(int32_t));
  AttentionMetadata dev = host;
  dev.seq_lens = to_device(host.seq_lens);
  dev.query_start_loc = to_device(host.query_start_loc);
  dev.block_table = to_device(host.block_table);
  dev.slot_mapping = to_device(host.slot_mapping);
  RunContext ctx;
  ctx.host_meta = &host;
  ctx.device_meta = &dev;
  ctx.weights = &device_weights_;
  ctx.num_tokens = n;

  RunStats stats;
  stats.num_tokens = n;
  stats.t_pad = b.t_pad;
  for (PreparedCall& c : b.calls) {
    const OpCall call{c.node->op(), c.node->attrs(), c.inputs, c.outputs};
    auto body = [&] { backend_.run(call, ctx); };
    if (!options_.time_nodes) {
      body();
      continue;
    }
    const double us = backend_.time_us(body, options_.timing_iters, options_.timing_warmup);
    stats.nodes.push_back(NodeTiming{c.node->op(), c.node->label(), us});
    stats.total_us += us;
  }
  backend_.synchronize();
  return stats;
}

Tensor Executor::read(std::string_view name) const {
  const ir::Value* v = graph_.find_value(name);
  MLAFUSE_CHECK(v != nullptr, "the graph has no value named '", name, "'");
  const Tensor* buf = nullptr;
  if (v->is_weight()) {
    buf = &weight_buffers_.at(v);
  } else {
    MLAFUSE_CHECK(last_ != nullptr, "read(", name, "): nothing has run yet");
    buf = &last_->buffers.at(v);
  }
  Tensor host =
      Tensor::empty_strided(buf->dtype(), buf->shape(), buf->strides(),
                            static_cast<int64_t>(buf->storage()->bytes / dtype_size(buf->dtype())));
  backend_.copy(*buf, host);
  return host;
}

std::map<std::string, Tensor> Executor::read_outputs() const {
  std::map<std::string, Tensor> out;
  for (const ir::Value* v : graph_.outputs()) out[v->name()] = read(v->name());
  return out;
}

}  // namespace mlafuse::runtime
