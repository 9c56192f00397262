// The Backend interface: which ops and fused quantizations a backend runs, and running one op.
// The fusion pass asks `fused_output_quant_supported` (through passes::FusionCapabilities, the
// interface the pass owns); the executor calls `run`. Backends see ops as an OpCall (name,
// attributes, tensors), never the graph.
#pragma once

#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "mlafuse/core/attributes.h"
#include "mlafuse/core/tensor.h"
#include "mlafuse/mla/attention_metadata.h"
#include "mlafuse/mla/fused_quant_request.h"
#include "mlafuse/mla/weight_store.h"
#include "mlafuse/passes/fusion_capabilities.h"

namespace mlafuse {

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

// Launches recorded once and replayed at the same buffer addresses (a CUDA graph).
class CapturedWork {
 public:
  virtual ~CapturedWork() = default;
  virtual void replay() = 0;
  // True once the backend has moved memory the recorded launches point at (its scratch grew for
  // a larger batch): a replay would touch freed memory, so the owner must capture again.
  virtual bool stale() const { return false; }
};

class Backend : public passes::FusionCapabilities {
 public:
  ~Backend() override = default;
  std::string name() const override = 0;
  virtual Device device() const = 0;
  virtual bool supports_op(std::string_view op) const = 0;
  // Why this backend cannot run ops on this machine, in one clause ("" when it can): the CUDA
  // backend exists in every CUDA build but needs a Hopper GPU to run.
  virtual std::string unusable_reason() const { return ""; }
  // May the fusion pass fold quantization `req.quant` into this layer's
  // attention? Backends answer from their kernels' can_implement checks.
  bool fused_output_quant_supported(const FusedQuantRequest& req) const override = 0;
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
