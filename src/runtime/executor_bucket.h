// The executor's private parts shared by its three files: buffer planning (buffer_plan.cc), eager
// execution (executor.cc) and CUDA-graph capture (cuda_graph.cc).
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "mlafuse/backends/backend.h"
#include "mlafuse/ir/graph.h"
#include "mlafuse/mla/attention_metadata.h"
#include "mlafuse/quant/layout.h"
#include "mlafuse/runtime/executor.h"

namespace mlafuse::runtime {
namespace detail {

inline bool token_leading(const Shape& s) { return s.rank() > 0 && s[0].is_tokens(); }

inline int64_t storage_bytes(const LayoutPlan& p, DType dtype) {
  return p.storage_numel * static_cast<int64_t>(dtype_size(dtype));
}

// The whole storage of `t` is exactly a buffer of plan `p` (so Backend::copy may take it as is).
inline bool matches_plan(const Tensor& t, const LayoutPlan& p, DType dtype) {
  return t.offset() == 0 && t.shape() == p.shape && t.strides() == p.strides &&
         static_cast<int64_t>(t.storage()->bytes) == storage_bytes(p, dtype);
}

inline Tensor host_buffer(const LayoutPlan& p, DType dtype) {
  return Tensor::empty_strided(dtype, p.shape, p.strides, p.storage_numel);
}

// fp8 codes and packed fp4 may travel as u8 (docs/ops.md); everything else must match.
inline bool dtype_compatible(DType value, DType tensor) {
  if (value == tensor) return true;
  const bool byte_value = value == DType::kFp8E4M3 || value == DType::kFp4E2M1x2;
  return byte_value && tensor == DType::kU8;
}

inline std::string input_names(const ir::Graph& g) {
  std::string s;
  for (const ir::Value* v : g.inputs()) s += (s.empty() ? "" : ", ") + v->name();
  return s;
}

}  // namespace detail

struct PreparedCall {
  const ir::Node* node = nullptr;
  std::vector<Tensor> inputs;   // per schema input, undefined where absent; trailing absent cut
  std::vector<Tensor> outputs;  // per schema output, likewise
};

// What a captured graph was recorded for. Decode-only batches are captured at T_pad decodes of
// T_pad tokens (padding sequences have length 0), so one graph serves every n <= T_pad, whatever
// the decodes' token counts; a batch with prefills replays only with the same composition.
struct GraphKey {
  bool decode_only = true;
  int64_t num_decodes = 0;
  int64_t num_decode_tokens = 0;
  // AttentionMetadata::one_token_decodes of the captured batch: it picks the decode kernels'
  // schedule, so a graph replays only for batches of the same kind (eager and replayed runs then
  // agree bit for bit).
  bool one_token_decodes = true;
  int64_t num_prefills = 0;
  int64_t num_prefill_tokens = 0;
  int64_t block_table_cols = 0;  // capacity: later batches may use fewer
  // seq_len, then query length, of each prefill sequence: the CUDA prefill path sizes its grid,
  // scratch and up-projection from them on the host, so a graph replays only for the same ones
  std::vector<int32_t> prefill_shape;
};

// One captured graph of a bucket: its key, the persistent metadata (host and device) and device
// n its launches read, and the work. Heap-held, so the captured body's pointers stay valid.
struct BucketGraph {
  GraphKey key;
  std::unique_ptr<CapturedWork> work;
  AttentionMetadata host_meta, device_meta;
  Tensor n_host, n_device;  // [1] i32
  RunContext ctx;
  uint64_t last_used = 0;  // the bucket's use clock at its last replay
};

// Graphs a bucket keeps: one-token decode steps, MTP decode steps and two compositions with
// prefills, so a workload that alternates kinds replays instead of capturing at every change.
// The least recently replayed goes first.
inline constexpr size_t kGraphsPerBucket = 4;

struct Executor::Bucket {
  int64_t t_pad = 0;
  std::map<const ir::Value*, Tensor> buffers;  // inputs and node outputs (aliases share)
  std::map<const ir::Value*, Tensor> staging;  // host staging of inputs
  std::vector<PreparedCall> calls;
  // Graph mode: the captured graphs (they share the buffers: runs are in stream order).
  std::vector<std::unique_ptr<BucketGraph>> graphs;
  uint64_t use_clock = 0;
  bool cannot_capture = false;
};

}  // namespace mlafuse::runtime
