// The Backend interface: which ops and fused quantizations a backend runs, and running one op.
// The fusion pass asks `fused_output_quant_supported`; the executor calls `run`. Backends see ops
// as an OpCall (name, attributes, tensors), never the graph.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "mlafuse/core/attributes.h"
#include "mlafuse/core/error.h"
#include "mlafuse/core/mla_config.h"
#include "mlafuse/core/tensor.h"
#include "mlafuse/quant/quant_key.h"

namespace mlafuse {

// Per-step attention metadata (vLLM's "forward context"). Sequences are ordered decode first
// (one query token each), then prefill. Tensors live on the device of the backend that reads them.
struct AttentionMetadata {
  int64_t num_decodes = 0;          // decode sequences == decode tokens, which come first
  int64_t num_prefills = 0;         // prefill sequences
  int64_t num_prefill_tokens = 0;
  int64_t page_size = 64;
  Tensor seq_lens;         // [num_seqs] i32: cached length after this step's cache write
  Tensor query_start_loc;  // [num_seqs + 1] i32: token range of each sequence in the batch
  Tensor block_table;      // [num_seqs, max_pages_per_seq] i32: page ids; unused slots arbitrary
  Tensor slot_mapping;     // [T_pad] i32: cache slot of each token (page * page_size + offset); -1 skips

  int64_t num_seqs() const { return num_decodes + num_prefills; }
  int64_t num_tokens() const { return num_decodes + num_prefill_tokens; }
};

// Weights an `mla_attention` node finds by its `layer` attribute (the layer object owns them in
// an engine). Tensors live on the backend's device.
struct MlaLayerWeights {
  Tensor w_uk_t;     // [H, P, L] bf16: absorbs q_nope into the latent space
  Tensor w_uv;       // [H, L, V] bf16: latent output -> per-head value space
  Tensor kv_b_proj;  // [H*(P+V), L] bf16, dequantized: expands latents for prefill
};

struct WeightStore {
  MlaConfig config;
  std::vector<MlaLayerWeights> layers;
  // Graph `weight` values by name (e.g. "layers.0.o_proj.weight"), bound by the executor.
  std::map<std::string, Tensor> tensors;
  const MlaLayerWeights& layer(int64_t i) const {
    MLAFUSE_CHECK(i >= 0 && i < static_cast<int64_t>(layers.size()), "layer ", i,
                  " has no weights (the store holds ", layers.size(), " layers)");
    return layers[static_cast<size_t>(i)];
  }
};

struct RunContext {
  const AttentionMetadata* host_meta = nullptr;    // host copy, for validation and CPU ops
  const AttentionMetadata* device_meta = nullptr;  // the backend's copy (== host_meta on the CPU)
  const WeightStore* weights = nullptr;            // on the backend's device
  int64_t num_tokens = 0;  // n: real tokens; buffers hold T_pad >= n rows
  // n in device memory, for replayed CUDA graphs: kernels launched over T_pad read the real count
  // here when non-null (else num_tokens) and write nothing for tokens >= n.
  const int32_t* num_tokens_device = nullptr;
  void* stream = nullptr;  // cudaStream_t for the CUDA backend
};

// One op invocation. Absent optional inputs are default-constructed (undefined) Tensors. Outputs
// are allocated by the caller with the shapes, dtypes and layouts the op's schema infers.
struct OpCall {
  std::string_view op;
  const AttrMap& attrs;
  std::span<const Tensor> inputs;
  std::span<Tensor> outputs;
};

// What a layer's fused attention would be asked to produce; lets a backend refuse per layer.
struct FusedQuantRequest {
  QuantKey key;
  int64_t layer = 0;
  int64_t num_heads = 0;
  int64_t v_head_dim = 0;
  bool col_major = false;
  bool ue8m0 = false;
  bool tma_aligned = false;
};

// Launches recorded once and replayed at the same buffer addresses (a CUDA graph).
class CapturedWork {
 public:
  virtual ~CapturedWork() = default;
  virtual void replay() = 0;
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual std::string name() const = 0;
  virtual Device device() const = 0;
  virtual bool supports_op(std::string_view op) const = 0;
  // Why this backend cannot run ops on this machine, in one clause ("" when it can): the CUDA
  // backend exists in every CUDA build but needs a Hopper GPU to run.
  virtual std::string unusable_reason() const { return ""; }
  // May the fusion pass fold quantization `req.key` (with these layout flags) into this layer's
  // attention? Backends answer from their kernels' can_implement checks.
  virtual bool fused_output_quant_supported(const FusedQuantRequest& req) const = 0;
  // Validates every argument (throws mlafuse::Error naming the tensor) and runs the op.
  virtual void run(const OpCall& call, const RunContext& ctx) = 0;

  // Memory on this backend's device.
  virtual Tensor allocate(DType dtype, std::vector<int64_t> shape, std::vector<int64_t> strides,
                          int64_t storage_numel) = 0;
  // Copies whole storages of equal size between host and this device (either direction).
  virtual void copy(const Tensor& src, Tensor& dst) = 0;
  virtual void synchronize() {}
  // Records what `body` launches on this backend's stream (CUDA-graph capture per padded token
  // bucket). Returns nullptr where the backend has nothing to capture (the CPU).
  virtual std::unique_ptr<CapturedWork> capture(const std::function<void()>& body) {
    return nullptr;
  }
  // Median microseconds of `iters` runs of `body` after `warmup` runs, measured with the
  // backend's own clock (CUDA events on the GPU, steady_clock on the CPU).
  virtual double time_us(const std::function<void()>& body, int iters, int warmup);
};

// "cpu" always; "cuda" when built with CUDA (throws naming the available backends otherwise).
std::unique_ptr<Backend> make_backend(std::string_view name);
std::vector<std::string> available_backends();

}  // namespace mlafuse
