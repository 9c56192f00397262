// The executor: plans a buffer for every value of a graph, binds graph inputs and weights by
// name, and runs the nodes on a backend in order, timing each one. Buffers hold T_pad token rows
// (the smallest bucket >= n); n <= T_pad is the real count. With `cuda_graphs` on, each bucket's
// whole node sequence is captured once (Backend::capture) and replayed for later batches: n goes
// to a device int (RunContext::num_tokens_device) and the metadata to the bucket's persistent
// buffers before each replay. Backends that cannot capture (the CPU) run eagerly.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "mlafuse/backends/backend.h"
#include "mlafuse/core/tensor.h"
#include "mlafuse/ir/graph.h"
#include "mlafuse/quant/layout.h"

namespace mlafuse::runtime {

// vLLM-style capture sizes: a batch of n tokens runs at the smallest bucket >= n.
inline const std::vector<int64_t> kDefaultBuckets = {1, 2, 4, 8, 16, 32, 64, 128, 256, 512};

struct ExecutorOptions {
  // Padded token counts, ascending. n above the largest runs unpadded and eagerly (T_pad = n);
  // an empty list never pads. The executor keeps the buffers of every listed bucket it has run,
  // but of only the latest unpadded one (each distinct large n would otherwise hold its own).
  std::vector<int64_t> buckets = kDefaultBuckets;
  // Capture each bucket's node sequence once and replay it (where the backend captures).
  bool cuda_graphs = false;
  // Per-node timing of eager runs with Backend::time_us (iters runs after warmup runs; every op
  // is idempotent given its inputs, so repeated runs leave the same results).
  bool time_nodes = true;
  int timing_iters = 1;
  int timing_warmup = 0;
  // Block-table columns of a captured graph's persistent metadata (later batches may use fewer).
  // 0: the page count of the graph's largest cache, which no sequence can exceed.
  int64_t graph_block_table_cols = 0;
  // Every byte of a fresh node-output buffer (tests poison with 0xff to see what was written).
  uint8_t fill_byte = 0;
};

enum class BufferKind { kInput, kWeight, kNodeOutput, kAlias };

// One value's buffer in the plan of a bucket.
struct BufferInfo {
  std::string value;
  BufferKind kind = BufferKind::kNodeOutput;
  DType dtype = DType::kBF16;
  Layout layout = Layout::kRowMajor;
  std::vector<int64_t> logical_shape;  // the value's shape at T_pad
  LayoutPlan plan;                     // physical extents, strides (elements), storage
  int64_t bytes = 0;                   // storage bytes (0 for an alias)
  std::string alias_of;                // kAlias: the value whose buffer this one is
};

struct NodeTiming {
  std::string op;
  std::string label;  // "%layers.0.attn_out, %layers.0.kv_cache_out = mla_attention"
  double us = 0;
};

struct RunStats {
  int64_t num_tokens = 0;  // n
  int64_t t_pad = 0;
  bool graph_captured = false;    // this run captured the bucket's graph
  bool graph_replayed = false;    // this run replayed a captured graph
  std::vector<NodeTiming> nodes;  // eager runs (with time_nodes)
  double replay_us = 0;           // graph runs: one replay, by the backend's clock
  double total_us = 0;            // sum over nodes, or replay_us
};

struct BucketGraph;  // one captured graph of a bucket (src/runtime/executor_bucket.h)

class Executor {
 public:
  // `weights` are host tensors: graph weights by name from `tensors`, and the layers that the
  // graph's mla_attention nodes name. They are copied to the backend's device once (shared as
  // they are on the CPU). The graph and backend must outlive the executor. Throws naming the
  // weight when one is missing or has the wrong dtype or shape.
  Executor(const ir::Graph& graph, Backend& backend, const WeightStore& weights,
           ExecutorOptions options = {});
  ~Executor();
  Executor(const Executor&) = delete;
  Executor& operator=(const Executor&) = delete;

  // Token rows of the buffers for a batch of n tokens.
  int64_t padded_tokens(int64_t n) const;
  // The buffers a batch padded to t_pad gets (no allocation).
  std::vector<BufferInfo> plan(int64_t t_pad) const;

  // Binds `inputs` (host tensors by graph-input name; token-dim inputs need >= n rows, rows past
  // min(rows, T_pad) are zero), copies `meta` (host tensors; n = meta.num_tokens()) to the
  // device, and runs the graph. Throws mlafuse::Error naming the input on a missing, unknown or
  // mis-shaped input and on inconsistent metadata.
  RunStats run(const std::map<std::string, Tensor>& inputs, const AttentionMetadata& meta);

  // Host copy of any value's buffer after the last run, in its physical layout (T_pad rows).
  Tensor read(std::string_view value) const;
  // Host copies of the graph outputs, by name.
  std::map<std::string, Tensor> read_outputs() const;

  const WeightStore& device_weights() const { return device_weights_; }
  Backend& backend() const { return backend_; }
  const ir::Graph& graph() const { return graph_; }

 private:
  struct Bucket;
  Bucket& bucket(int64_t t_pad);
  Tensor to_device(const Tensor& host);
  Tensor allocate(const LayoutPlan& plan, DType dtype);
  void bind_weights(const WeightStore& weights);
  void stage_inputs(Bucket& b, const std::map<std::string, Tensor>& inputs, int64_t n);
  RunStats run_eager(Bucket& b, const AttentionMetadata& meta, int64_t n);
  RunStats run_graph(Bucket& b, const AttentionMetadata& meta, int64_t n);
  // A new graph of `meta`'s batch kind for bucket b (nullptr where the backend cannot capture).
  std::unique_ptr<BucketGraph> capture_graph(Bucket& b, const AttentionMetadata& meta, int64_t n);
  // Block-table columns a graph reserves: options_.graph_block_table_cols, else the cache's pages.
  int64_t graph_block_table_cols(int64_t cols) const;

  const ir::Graph& graph_;
  Backend& backend_;
  ExecutorOptions options_;
  WeightStore device_weights_;
  std::map<const ir::Value*, Tensor> weight_buffers_;
  std::map<int64_t, std::unique_ptr<Bucket>> buckets_;
  Bucket* last_ = nullptr;
};

// Whether output `output` of `op` is written in place into input `input` (docs/ops.md:
// `kv_cache_out` is the `kv_cache` buffer); returns the input operand name or "".
std::string_view in_place_input(std::string_view op, std::string_view output);

}  // namespace mlafuse::runtime
