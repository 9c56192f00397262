// CUDA-graph capture per padded token bucket: persistent capture-shaped metadata, the device
// token count, and replay.
#include <algorithm>
#include <cstring>

#include "executor_bucket.h"
#include "mlafuse/core/error.h"
#include "mlafuse/core/shape.h"
#include "mlafuse/ir/op_registry.h"
#include "mlafuse/mla/attention_metadata.h"
#include "mlafuse/runtime/executor.h"

namespace mlafuse::runtime {

namespace {

const int32_t* i32(const Tensor& t) { return t.data<int32_t>(); }

// The prefill sequences' (seq_len, query length) pairs of host metadata, flattened (GraphKey).
std::vector<int32_t> prefill_shape(const AttentionMetadata& meta) {
  std::vector<int32_t> shape;
  const int32_t* lens = meta.seq_lens.data<int32_t>();
  const int32_t* qsl = meta.query_start_loc.data<int32_t>();
  for (int64_t i = meta.num_decodes; i < meta.num_seqs(); ++i) {
    shape.push_back(lens[i]);
    shape.push_back(qsl[i + 1] - qsl[i]);
  }
  return shape;
}

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
  std::memcpy(qsl, meta.query_start_loc.raw(), static_cast<size_t>(s + 1) * sizeof(int32_t));
  // Decode-only: the padding sequences (length 0) take the padding tokens [n, T_pad) one each;
  // those past them (the real decodes held more than one token each) take none.
  for (int64_t i = s + 1; decode_only && i <= s_out; ++i) {
    qsl[i] = static_cast<int32_t>(std::min<int64_t>(qsl[i - 1] + 1, t_pad));
  }
}

// A graph captured for `k` replays `meta`'s batch: the same kind, a block table that fits, and for
// batches with prefills the same composition.
bool graph_fits(const GraphKey& k, const AttentionMetadata& meta) {
  const bool decode_only = meta.num_prefills == 0;
  if (k.decode_only != decode_only || meta.block_table.dim(1) > k.block_table_cols ||
      k.one_token_decodes != meta.one_token_decodes()) {
    return false;
  }
  return decode_only ||
         (k.num_decodes == meta.num_decodes && k.num_decode_tokens == meta.num_decode_tokens &&
          k.num_prefills == meta.num_prefills &&
          k.num_prefill_tokens == meta.num_prefill_tokens && k.prefill_shape == prefill_shape(meta));
}

// The key a capture of `meta`'s batch at `t_pad` rows records (decode-only batches as T_pad
// decodes of one T_pad-token step).
GraphKey graph_key(const AttentionMetadata& meta, int64_t t_pad, int64_t block_table_cols) {
  GraphKey key;
  key.decode_only = meta.num_prefills == 0;
  key.num_decodes = key.decode_only ? t_pad : meta.num_decodes;
  key.num_decode_tokens = key.decode_only ? t_pad : meta.num_decode_tokens;
  key.one_token_decodes = meta.one_token_decodes();
  key.num_prefills = meta.num_prefills;
  key.num_prefill_tokens = meta.num_prefill_tokens;
  if (!key.decode_only) key.prefill_shape = prefill_shape(meta);
  key.block_table_cols = block_table_cols;
  return key;
}

}  // namespace

int64_t Executor::graph_block_table_cols(int64_t cols) const {
  int64_t capacity = options_.graph_block_table_cols;
  if (capacity == 0) {  // as many pages a sequence as the cache holds
    for (const ir::Node* node : graph_.nodes()) {
      const int ci = node->schema().input_index("kv_cache");
      if (ci >= 0 && node->input(static_cast<size_t>(ci)) != nullptr) {
        capacity = std::max(capacity, node->input(static_cast<size_t>(ci))->shape().resolve(0)[0]);
      }
    }
  }
  return std::max(cols, capacity);
}

std::unique_ptr<BucketGraph> Executor::capture_graph(Bucket& b, const AttentionMetadata& meta,
                                                     int64_t n) {
  auto fresh = std::make_unique<BucketGraph>();
  BucketGraph& gr = *fresh;
  GraphKey& key = gr.key;
  key = graph_key(meta, b.t_pad, graph_block_table_cols(meta.block_table.dim(1)));
  const int64_t s = key.num_decodes + key.num_prefills;
  AttentionMetadata& h = gr.host_meta;
  h.num_decodes = key.num_decodes;
  h.num_decode_tokens = key.num_decode_tokens;
  // The kind alone: T_pad bounds the decodes of every batch the graph replays.
  h.max_decode_query_len = key.one_token_decodes ? 1 : b.t_pad;
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
  gr.device_meta = h;
  gr.device_meta.seq_lens = dev_copy(h.seq_lens);
  gr.device_meta.query_start_loc = dev_copy(h.query_start_loc);
  gr.device_meta.block_table = dev_copy(h.block_table);
  gr.device_meta.slot_mapping = dev_copy(h.slot_mapping);
  gr.n_host = Tensor::empty(DType::kI32, {1});
  gr.n_host.data<int32_t>()[0] = static_cast<int32_t>(n);
  gr.n_device = dev_copy(gr.n_host);
  gr.ctx = RunContext{};
  gr.ctx.host_meta = &gr.host_meta;
  gr.ctx.device_meta = &gr.device_meta;
  gr.ctx.weights = &device_weights_;
  gr.ctx.num_tokens = key.decode_only ? b.t_pad : n;  // launches cover this; n is read on device
  gr.ctx.num_tokens_device = gr.n_device.data<int32_t>();
  Bucket* bp = &b;
  BucketGraph* gp = &gr;
  Backend* be = &backend_;
  // Everything the body touches lives in the bucket, so a backend may keep it for replays.
  gr.work = backend_.capture([bp, gp, be] {
    for (PreparedCall& c : bp->calls) {
      be->run(OpCall{c.node->op(), c.node->attrs(), c.inputs, c.outputs}, gp->ctx);
    }
  });
  if (gr.work == nullptr) return nullptr;  // nothing to capture on this backend
  return fresh;
}

RunStats Executor::run_graph(Bucket& b, const AttentionMetadata& meta, int64_t n) {
  // A graph whose recorded launches point at memory the backend has since moved never replays.
  auto drop_stale = [&b] {
    std::erase_if(b.graphs, [](const std::unique_ptr<BucketGraph>& g) { return g->work->stale(); });
  };
  drop_stale();
  BucketGraph* graph = nullptr;
  for (const auto& g : b.graphs) {
    if (graph_fits(g->key, meta)) {
      graph = g.get();
      break;
    }
  }
  RunStats stats;
  stats.num_tokens = n;
  stats.t_pad = b.t_pad;
  if (graph == nullptr) {
    // An eager run first: it sizes the backend's workspaces (which must not grow while
    // capturing), gives per-node times, and leaves correct results should capture be unsupported.
    const RunStats eager = run_eager(b, meta, n);
    stats.nodes = eager.nodes;
    drop_stale();  // that run may have grown the backend's scratch under the other graphs
    std::unique_ptr<BucketGraph> fresh = capture_graph(b, meta, n);
    if (fresh == nullptr) {  // this backend cannot capture: run eagerly from now on
      b.cannot_capture = true;
      b.graphs.clear();
      return eager;
    }
    if (b.graphs.size() >= kGraphsPerBucket) {
      b.graphs.erase(std::min_element(
          b.graphs.begin(), b.graphs.end(),
          [](const auto& x, const auto& y) { return x->last_used < y->last_used; }));
    }
    graph = fresh.get();
    b.graphs.push_back(std::move(fresh));
    stats.graph_captured = true;
  }
  BucketGraph& gr = *graph;
  gr.last_used = ++b.use_clock;
  fill_graph_meta(meta, n, b.t_pad, gr.host_meta);
  backend_.copy(gr.host_meta.seq_lens, gr.device_meta.seq_lens);
  backend_.copy(gr.host_meta.query_start_loc, gr.device_meta.query_start_loc);
  backend_.copy(gr.host_meta.block_table, gr.device_meta.block_table);
  backend_.copy(gr.host_meta.slot_mapping, gr.device_meta.slot_mapping);
  gr.n_host.data<int32_t>()[0] = static_cast<int32_t>(n);
  backend_.copy(gr.n_host, gr.n_device);
  stats.replay_us =
      backend_.time_us([&] { gr.work->replay(); }, options_.timing_iters, options_.timing_warmup);
  stats.total_us = stats.replay_us;
  stats.graph_replayed = true;
  backend_.synchronize();
  return stats;
}

}  // namespace mlafuse::runtime
