#include "mlafuse/runtime/executor.h"

#include <algorithm>
#include <cstring>
#include <optional>
#include <vector>

#include "mlafuse/core/error.h"
#include "mlafuse/core/shape.h"
#include "mlafuse/ir/op_registry.h"
#include "mlafuse/mla/attention_metadata.h"

namespace mlafuse::runtime {

std::string_view in_place_input(std::string_view op, std::string_view output) {
  if ((op == ir::ops::kMlaAttention || op == ir::ops::kCacheWrite) && output == "kv_cache_out") {
    return "kv_cache";
  }
  return {};
}

namespace {

bool token_leading(const Shape& s) { return s.rank() > 0 && s[0].is_tokens(); }

int64_t storage_bytes(const LayoutPlan& p, DType dtype) {
  return p.storage_numel * static_cast<int64_t>(dtype_size(dtype));
}

// The whole storage of `t` is exactly a buffer of plan `p` (so Backend::copy may take it as is).
bool matches_plan(const Tensor& t, const LayoutPlan& p, DType dtype) {
  return t.offset() == 0 && t.shape() == p.shape && t.strides() == p.strides &&
         static_cast<int64_t>(t.storage()->bytes) == storage_bytes(p, dtype);
}

Tensor host_buffer(const LayoutPlan& p, DType dtype) {
  return Tensor::empty_strided(dtype, p.shape, p.strides, p.storage_numel);
}

// fp8 codes and packed fp4 may travel as u8 (docs/ops.md); everything else must match.
bool dtype_compatible(DType value, DType tensor) {
  if (value == tensor) return true;
  const bool byte_value = value == DType::kFp8E4M3 || value == DType::kFp4E2M1x2;
  return byte_value && tensor == DType::kU8;
}

std::string input_names(const ir::Graph& g) {
  std::string s;
  for (const ir::Value* v : g.inputs()) s += (s.empty() ? "" : ", ") + v->name();
  return s;
}

const int32_t* i32(const Tensor& t) { return t.data<int32_t>(); }

}  // namespace

// ---- buckets ------------------------------------------------------------------------------

struct PreparedCall {
  const ir::Node* node = nullptr;
  std::vector<Tensor> inputs;   // per schema input, undefined where absent; trailing absent cut
  std::vector<Tensor> outputs;  // per schema output, likewise
};

// What a captured graph was recorded for. Decode-only batches are captured at T_pad decodes
// (padding sequences have length 0), so one graph serves every n <= T_pad; a batch with prefills
// replays only with the same composition, down to each prefill's context and prompt length (the
// CUDA prefill path sizes its grid and scratch from them on the host).
struct GraphKey {
  bool decode_only = true;
  int64_t num_decodes = 0;
  int64_t num_prefills = 0;
  int64_t num_prefill_tokens = 0;
  int64_t block_table_cols = 0;  // capacity: later batches may use fewer
  // seq_len, then query length, of each prefill sequence
  std::vector<int32_t> prefill_shape;
};

// The prefill sequences' (seq_len, query length) pairs of host metadata, flattened.
static std::vector<int32_t> prefill_shape(const AttentionMetadata& meta) {
  std::vector<int32_t> shape;
  const int32_t* lens = meta.seq_lens.data<int32_t>();
  const int32_t* qsl = meta.query_start_loc.data<int32_t>();
  for (int64_t i = meta.num_decodes; i < meta.num_seqs(); ++i) {
    shape.push_back(lens[i]);
    shape.push_back(qsl[i + 1] - qsl[i]);
  }
  return shape;
}

struct Executor::Bucket {
  int64_t t_pad = 0;
  std::map<const ir::Value*, Tensor> buffers;  // inputs and node outputs (aliases share)
  std::map<const ir::Value*, Tensor> staging;  // host staging of inputs
  std::vector<PreparedCall> calls;
  // Graph mode: persistent metadata (host and device), the device n, the captured work.
  std::optional<GraphKey> key;
  std::unique_ptr<CapturedWork> work;
  bool cannot_capture = false;
  AttentionMetadata host_meta, device_meta;
  Tensor n_host, n_device;  // [1] i32
  RunContext ctx;
};

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

Tensor Executor::to_device(const Tensor& host) {
  check_device(host, "host tensor", Device::kCpu);
  const bool whole = host.is_contiguous() && host.offset() == 0 &&
                     static_cast<int64_t>(host.storage()->bytes) ==
                         host.numel() * static_cast<int64_t>(dtype_size(host.dtype()));
  const Tensor src = whole ? host : host.clone();
  if (backend_.device() == Device::kCpu) return src;  // the host is the device: share
  Tensor dev = backend_.allocate(src.dtype(), src.shape(), Tensor::contiguous_strides(src.shape()),
                                 src.numel());
  backend_.copy(src, dev);
  return dev;
}

Tensor Executor::allocate(const LayoutPlan& plan, DType dtype) {
  return backend_.allocate(dtype, plan.shape, plan.strides, plan.storage_numel);
}

void Executor::bind_weights(const WeightStore& weights) {
  device_weights_.config = weights.config;
  for (const ir::Value* v : graph_.weights()) {
    auto it = weights.tensors.find(v->name());
    MLAFUSE_CHECK(it != weights.tensors.end(), "weight ", v->name(), " (", v->type().str(),
                  ") is not in the weight store");
    const Tensor& t = it->second;
    for (const Dim& d : v->shape().dims) {
      MLAFUSE_CHECK(!d.is_tokens(), "weight ", v->name(), " ", v->type().str(),
                    " has a token dim; weights have fixed shapes");
    }
    MLAFUSE_CHECK(v->layout() == Layout::kRowMajor, "weight ", v->name(), " ", v->type().str(),
                  ": weights must be row-major");
    MLAFUSE_CHECK(t.defined() && dtype_compatible(v->dtype(), t.dtype()) &&
                      t.shape() == v->shape().resolve(0),
                  "weight ", v->name(), ": expected ", v->type().str(), ", got ",
                  t.defined() ? t.str() : std::string("an absent tensor"));
    Tensor dev = to_device(t);
    device_weights_.tensors[v->name()] = dev;
    weight_buffers_[v] = dev;
  }
  // Layer weights of every attention node, checked against the node's head counts.
  for (const ir::Node* node : graph_.nodes()) {
    if (node->op() != ir::ops::kMlaAttention) continue;
    const AttrMap& a = node->attrs();
    namespace attr = ir::mla_attention::attr;
    const int64_t layer = a.get<int64_t>(attr::kLayer);
    const int64_t h = a.get<int64_t>(attr::kNumHeads), p = a.get<int64_t>(attr::kQkNopeDim);
    const int64_t v = a.get<int64_t>(attr::kVHeadDim), l = a.get<int64_t>(attr::kKvLoraRank);
    const MlaLayerWeights& w = weights.layer(layer);
    const std::string who = "layer " + std::to_string(layer) + " weights: ";
    check_dtype(w.w_uk_t, (who + "w_uk_t").c_str(), DType::kBF16);
    check_dtype(w.w_uv, (who + "w_uv").c_str(), DType::kBF16);
    check_dtype(w.kv_b_proj, (who + "kv_b_proj").c_str(), DType::kBF16);
    check_shape(w.w_uk_t, (who + "w_uk_t").c_str(), {h, p, l});
    check_shape(w.w_uv, (who + "w_uv").c_str(), {h, l, v});
    check_shape(w.kv_b_proj, (who + "kv_b_proj").c_str(), {h * (p + v), l});
    if (static_cast<int64_t>(device_weights_.layers.size()) <= layer) {
      device_weights_.layers.resize(static_cast<size_t>(layer + 1));
    }
    MlaLayerWeights& d = device_weights_.layers[static_cast<size_t>(layer)];
    if (!d.w_uk_t.defined())
      d = MlaLayerWeights{to_device(w.w_uk_t), to_device(w.w_uv), to_device(w.kv_b_proj)};
  }
}

int64_t Executor::padded_tokens(int64_t n) const {
  MLAFUSE_CHECK(n >= 1, "a batch needs at least one token, got ", n);
  for (int64_t b : options_.buckets) {
    if (b >= n) return b;
  }
  return n;
}

std::vector<BufferInfo> Executor::plan(int64_t t_pad) const {
  MLAFUSE_CHECK(t_pad >= 1, "plan: T_pad must be >= 1, got ", t_pad);
  std::vector<BufferInfo> out;
  auto info = [&](const ir::Value* v, BufferKind kind) {
    BufferInfo b;
    b.value = v->name();
    b.kind = kind;
    b.dtype = v->dtype();
    b.layout = v->layout();
    b.logical_shape = v->shape().resolve(t_pad);
    b.plan = plan_layout(v->layout(), b.logical_shape);
    b.bytes = storage_bytes(b.plan, v->dtype());
    return b;
  };
  for (const ir::Value* v : graph_.inputs()) out.push_back(info(v, BufferKind::kInput));
  for (const ir::Value* v : graph_.weights()) out.push_back(info(v, BufferKind::kWeight));
  for (const ir::Node* node : graph_.nodes()) {
    const ir::OpSchema& s = node->schema();
    for (size_t i = 0; i < node->num_outputs(); ++i) {
      const ir::Value* v = node->output(i);
      if (v == nullptr) continue;
      BufferInfo b = info(v, BufferKind::kNodeOutput);
      const std::string_view in = in_place_input(node->op(), s.outputs[i].name);
      if (!in.empty()) {
        const ir::Value* src = node->input(in);
        MLAFUSE_CHECK(src != nullptr, "node ", node->label(), ": in-place output ", v->name(),
                      " has no ", in, " input");
        MLAFUSE_CHECK(src->type() == v->type(), "node ", node->label(), ": in-place output ",
                      v->name(), " ", v->type().str(), " differs from its buffer ", src->name(),
                      " ", src->type().str());
        b.kind = BufferKind::kAlias;
        b.alias_of = src->name();
        b.bytes = 0;
      }
      out.push_back(std::move(b));
    }
  }
  return out;
}

Executor::Bucket& Executor::bucket(int64_t t_pad) {
  auto it = buckets_.find(t_pad);
  if (it != buckets_.end()) return *it->second;
  auto b = std::make_unique<Bucket>();
  b->t_pad = t_pad;
  for (const BufferInfo& info : plan(t_pad)) {
    const ir::Value* v = graph_.value(info.value);
    switch (info.kind) {
      case BufferKind::kWeight:
        break;
      case BufferKind::kInput:
        b->buffers[v] = allocate(info.plan, info.dtype);
        b->staging[v] = host_buffer(info.plan, info.dtype);
        break;
      case BufferKind::kAlias:
        b->buffers[v] = b->buffers.at(graph_.value(info.alias_of));
        break;
      case BufferKind::kNodeOutput: {
        Tensor dev = allocate(info.plan, info.dtype);
        Tensor fill = host_buffer(info.plan, info.dtype);
        std::memset(fill.storage()->data, options_.fill_byte, fill.storage()->bytes);
        backend_.copy(fill, dev);
        b->buffers[v] = dev;
        break;
      }
    }
  }
  for (const ir::Node* node : graph_.nodes()) {
    PreparedCall c;
    c.node = node;
    for (const ir::Value* v : node->inputs()) {
      if (v == nullptr) {
        c.inputs.emplace_back();
      } else if (v->is_weight()) {
        c.inputs.push_back(weight_buffers_.at(v));
      } else {
        c.inputs.push_back(b->buffers.at(v));
      }
    }
    for (const ir::Value* v : node->outputs()) {
      c.outputs.push_back(v == nullptr ? Tensor() : b->buffers.at(v));
    }
    // Trailing absent optional operands are left out: backends take a short span and an undefined
    // tensor alike (docs/ops.md), and a short span is the form every backend handles.
    while (!c.inputs.empty() && !c.inputs.back().defined()) c.inputs.pop_back();
    while (!c.outputs.empty() && !c.outputs.back().defined()) c.outputs.pop_back();
    b->calls.push_back(std::move(c));
  }
  Bucket& ref = *b;
  buckets_.emplace(t_pad, std::move(b));
  return ref;
}

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

namespace {

// Writes `meta` into the persistent, capture-shaped metadata of a bucket (see GraphKey).
void fill_graph_meta(const AttentionMetadata& meta, int64_t n, int64_t t_pad,
                     AttentionMetadata& out) {
  const bool decode_only = meta.num_prefills == 0;
  const int64_t s = meta.num_seqs(), s_out = out.num_seqs();
  const int64_t cols = meta.block_table.dim(1), cols_out = out.block_table.dim(1);
  int32_t* lens = out.seq_lens.data<int32_t>();        // [S']
  int32_t* qsl = out.query_start_loc.data<int32_t>();  // [S' + 1]
  int32_t* bt = out.block_table.data<int32_t>();       // [S', cols']
  int32_t* slots = out.slot_mapping.data<int32_t>();   // [T_pad]
  std::fill(lens, lens + s_out, 0);
  std::fill(bt, bt + s_out * cols_out, 0);
  std::fill(slots, slots + t_pad, -1);
  std::memcpy(lens, meta.seq_lens.raw(), static_cast<size_t>(s) * sizeof(int32_t));
  for (int64_t i = 0; i < s; ++i) {
    std::memcpy(bt + i * cols_out, i32(meta.block_table) + i * cols,
                static_cast<size_t>(cols) * sizeof(int32_t));
  }
  std::memcpy(slots, meta.slot_mapping.raw(), static_cast<size_t>(n) * sizeof(int32_t));
  if (decode_only) {
    for (int64_t i = 0; i <= s_out; ++i) qsl[i] = static_cast<int32_t>(i);
  } else {
    std::memcpy(qsl, meta.query_start_loc.raw(), static_cast<size_t>(s + 1) * sizeof(int32_t));
  }
}

}  // namespace

RunStats Executor::run_graph(Bucket& b, const AttentionMetadata& meta, int64_t n) {
  const bool decode_only = meta.num_prefills == 0;
  const int64_t cols = meta.block_table.dim(1);
  bool fits =
      b.work != nullptr && b.key->decode_only == decode_only && cols <= b.key->block_table_cols;
  if (fits && !decode_only) {
    fits = b.key->num_decodes == meta.num_decodes && b.key->num_prefills == meta.num_prefills &&
           b.key->num_prefill_tokens == meta.num_prefill_tokens &&
           b.key->prefill_shape == prefill_shape(meta);
  }
  RunStats stats;
  stats.num_tokens = n;
  stats.t_pad = b.t_pad;
  if (!fits) {
    // An eager run first: it sizes the backend's workspaces (which must not grow while
    // capturing), gives per-node times, and leaves correct results should capture be unsupported.
    const RunStats eager = run_eager(b, meta, n);
    stats.nodes = eager.nodes;
    GraphKey key;
    key.decode_only = decode_only;
    key.num_decodes = decode_only ? b.t_pad : meta.num_decodes;
    key.num_prefills = meta.num_prefills;
    key.num_prefill_tokens = meta.num_prefill_tokens;
    if (!decode_only) key.prefill_shape = prefill_shape(meta);
    int64_t capacity = options_.graph_block_table_cols;
    if (capacity == 0) {
      for (const ir::Node* node : graph_.nodes()) {
        const int ci = node->schema().input_index("kv_cache");
        if (ci >= 0 && node->input(static_cast<size_t>(ci)) != nullptr) {
          capacity =
              std::max(capacity, node->input(static_cast<size_t>(ci))->shape().resolve(0)[0]);
        }
      }
    }
    key.block_table_cols = std::max(cols, capacity);
    const int64_t s = key.num_decodes + key.num_prefills;
    AttentionMetadata& h = b.host_meta;
    h.num_decodes = key.num_decodes;
    h.num_prefills = key.num_prefills;
    h.num_prefill_tokens = key.num_prefill_tokens;
    h.page_size = meta.page_size;
    h.seq_lens = Tensor::empty(DType::kI32, {s});
    h.query_start_loc = Tensor::empty(DType::kI32, {s + 1});
    h.block_table = Tensor::empty(DType::kI32, {s, key.block_table_cols});
    h.slot_mapping = Tensor::empty(DType::kI32, {b.t_pad});
    fill_graph_meta(meta, n, b.t_pad, h);
    // Fresh device copies (never the host tensors, even on the CPU: replays read these).
    auto dev_copy = [&](const Tensor& t) {
      Tensor d = backend_.allocate(t.dtype(), t.shape(), t.strides(), t.numel());
      backend_.copy(t, d);
      return d;
    };
    b.device_meta = h;
    b.device_meta.seq_lens = dev_copy(h.seq_lens);
    b.device_meta.query_start_loc = dev_copy(h.query_start_loc);
    b.device_meta.block_table = dev_copy(h.block_table);
    b.device_meta.slot_mapping = dev_copy(h.slot_mapping);
    b.n_host = Tensor::empty(DType::kI32, {1});
    b.n_host.data<int32_t>()[0] = static_cast<int32_t>(n);
    b.n_device = dev_copy(b.n_host);
    b.ctx = RunContext{};
    b.ctx.host_meta = &b.host_meta;
    b.ctx.device_meta = &b.device_meta;
    b.ctx.weights = &device_weights_;
    b.ctx.num_tokens = decode_only ? b.t_pad : n;  // launches cover this; n is read on device
    b.ctx.num_tokens_device = b.n_device.data<int32_t>();
    Bucket* bp = &b;
    Backend* be = &backend_;
    // Everything the body touches lives in the bucket, so a backend may keep it for replays.
    b.work = backend_.capture([bp, be] {
      for (PreparedCall& c : bp->calls) {
        be->run(OpCall{c.node->op(), c.node->attrs(), c.inputs, c.outputs}, bp->ctx);
      }
    });
    if (b.work == nullptr) {  // nothing to capture on this backend: run eagerly from now on
      b.cannot_capture = true;
      b.key.reset();
      return eager;
    }
    b.key = key;
    stats.graph_captured = true;
  }
  fill_graph_meta(meta, n, b.t_pad, b.host_meta);
  backend_.copy(b.host_meta.seq_lens, b.device_meta.seq_lens);
  backend_.copy(b.host_meta.query_start_loc, b.device_meta.query_start_loc);
  backend_.copy(b.host_meta.block_table, b.device_meta.block_table);
  backend_.copy(b.host_meta.slot_mapping, b.device_meta.slot_mapping);
  b.n_host.data<int32_t>()[0] = static_cast<int32_t>(n);
  backend_.copy(b.n_host, b.n_device);
  stats.replay_us =
      backend_.time_us([&] { b.work->replay(); }, options_.timing_iters, options_.timing_warmup);
  stats.total_us = stats.replay_us;
  stats.graph_replayed = true;
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
