// The CUDA backend: device memory, copies, CUDA-graph capture and event timing around the op
// runners of device_context.h. Construction never fails for want of a GPU, so capability queries
// (`mlafuse compile --backend cuda`) work anywhere; everything that touches the device then throws
// "no CUDA device: <reason>".
#include "mlafuse/backends/cuda/cuda_backend.h"

#include <algorithm>
#include <cstring>
#include <string>
#include <unordered_map>
#include <vector>

#include "backends/cuda/device_context.h"
#include "mlafuse/backends/cuda/cuda_check.h"
#include "mlafuse/core/error.h"
#include "mlafuse/core/shape.h"
#include "mlafuse/ir/op_contract.h"

namespace mlafuse {

namespace {

using cuda::DeviceContext;
using Runner = void (*)(const OpCall&, const RunContext&, DeviceContext&);

const std::unordered_map<std::string_view, Runner>& runners() {
  static const std::unordered_map<std::string_view, Runner> table = {
      {ir::ops::kQuantFp8Static, &cuda::run_quant_fp8_static},
      {ir::ops::kQuantFp8Group, &cuda::run_quant_fp8_group},
      {ir::ops::kQuantNvfp4, &cuda::run_quant_nvfp4},
      {ir::ops::kCacheWrite, &cuda::run_cache_write},
      {ir::ops::kLinearFp8Block, &cuda::run_linear_fp8_block},
      {ir::ops::kLinearNvfp4, &cuda::run_linear_nvfp4},
      {ir::ops::kMlaAttention, &cuda::run_mla_attention},
  };
  return table;
}

// A recorded CUDA graph, replayed on the stream it was captured on. The backend must outlive it.
// Its kernels hold the backend workspace's address of capture time: once the workspace is
// reallocated (a larger batch ran since), it is stale and refuses to replay.
class CudaGraphWork : public CapturedWork {
 public:
  CudaGraphWork(cudaGraph_t graph, cudaGraphExec_t exec, const cuda::DeviceContext& dc)
      : graph_(graph), exec_(exec), dc_(&dc), generation_(dc.workspace_generation) {}
  ~CudaGraphWork() override {
    cudaGraphExecDestroy(exec_);
    cudaGraphDestroy(graph_);
  }
  void replay() override {
    MLAFUSE_CHECK(!stale(), "a CUDA graph captured before the CUDA backend's workspace grew ",
                  "cannot replay (its kernels would use the freed workspace); capture it again");
    MLAFUSE_CUDA_CHECK(cudaGraphLaunch(exec_, dc_->stream));
  }
  bool stale() const override { return dc_->workspace_generation != generation_; }

 private:
  cudaGraph_t graph_;
  cudaGraphExec_t exec_;
  const cuda::DeviceContext* dc_;  // the stream it was captured on, the workspace generation
  uint64_t generation_;
};

class CudaBackend : public Backend {
 public:
  CudaBackend() {
    available_ = cuda::device_available(&reason_);
    if (!available_) return;
    MLAFUSE_CUDA_CHECK(cudaGetDevice(&dc_.device));
    cudaDeviceProp prop{};
    MLAFUSE_CUDA_CHECK(cudaGetDeviceProperties(&prop, dc_.device));
    dc_.num_sms = prop.multiProcessorCount;
    device_name_ = prop.name;
    MLAFUSE_CUDA_CHECK(cudaStreamCreateWithFlags(&dc_.stream, cudaStreamNonBlocking));
    MLAFUSE_CUBLAS_CHECK(cublasCreate(&dc_.cublas));
    MLAFUSE_CUBLAS_CHECK(cublasSetStream(dc_.cublas, dc_.stream));
    MLAFUSE_CUBLAS_CHECK(cublasLtCreate(&dc_.cublaslt));
  }

  ~CudaBackend() override {
    if (!available_) return;
    cudaStreamSynchronize(dc_.stream);
    if (dc_.workspace) cudaFree(dc_.workspace);
    if (dc_.cublaslt) cublasLtDestroy(dc_.cublaslt);
    if (dc_.cublas) cublasDestroy(dc_.cublas);
    if (dc_.stream) cudaStreamDestroy(dc_.stream);
  }

  std::string name() const override { return "cuda"; }
  Device device() const override { return Device::kCuda; }
  bool supports_op(std::string_view op) const override { return runners().count(op) != 0; }
  bool fused_output_quant_supported(const FusedQuantRequest& req) const override {
    return cuda::mla_fused_quant_supported(req);
  }

  void run(const OpCall& call, const RunContext& ctx) override {
    require_device(call.op);
    auto it = runners().find(call.op);
    if (it == runners().end()) {
      std::string ops;
      for (const auto& [name, runner] : runners())
        ops += (ops.empty() ? "" : ", ") + std::string(name);
      MLAFUSE_FAIL("the CUDA backend has no op '", call.op, "' (it runs: ", ops, ")");
    }
    it->second(call, ctx, dc_);
  }

  Tensor allocate(DType dtype, std::vector<int64_t> shape, std::vector<int64_t> strides,
                  int64_t storage_numel) override {
    require_device("allocate");
    MLAFUSE_CHECK(storage_numel >= 0, "allocate: storage size ", storage_numel,
                  " must be >= 0 (shape ", shape_str(shape), ")");
    auto st = std::make_shared<Storage>();
    st->bytes = static_cast<size_t>(storage_numel) * dtype_size(dtype);
    st->device = Device::kCuda;
    const cudaError_t err = cudaMalloc(&st->data, std::max<size_t>(st->bytes, 1));
    if (err != cudaSuccess) {
      cudaGetLastError();
      MLAFUSE_FAIL("allocate: cudaMalloc of ", st->bytes, " bytes for ", dtype_name(dtype),
                   shape_str(shape), " failed: ", cudaGetErrorString(err));
    }
    st->deleter = [](void* p) { cudaFree(p); };
    return Tensor(std::move(st), dtype, std::move(shape), std::move(strides), 0);
  }

  void copy(const Tensor& src, Tensor& dst) override {
    require_device("copy");
    MLAFUSE_CHECK(src.defined() && dst.defined(), "copy: source and destination must be defined");
    const Storage& s = *src.storage();
    const Storage& d = *dst.storage();
    MLAFUSE_CHECK(s.bytes == d.bytes, "copy: storages differ in size (", src.str(), " holds ",
                  s.bytes, " bytes, ", dst.str(), " holds ", d.bytes,
                  "); the backend copies whole storages");
    if (s.bytes == 0) return;
    if (s.device == Device::kCpu && d.device == Device::kCpu) {
      std::memcpy(d.data, s.data, s.bytes);
      return;
    }
    const cudaMemcpyKind kind = s.device == Device::kCpu   ? cudaMemcpyHostToDevice
                                : d.device == Device::kCpu ? cudaMemcpyDeviceToHost
                                                           : cudaMemcpyDeviceToDevice;
    MLAFUSE_CUDA_CHECK(cudaMemcpyAsync(d.data, s.data, s.bytes, kind, dc_.stream));
    MLAFUSE_CUDA_CHECK(cudaStreamSynchronize(dc_.stream));
  }

  void synchronize() override {
    require_device("synchronize");
    MLAFUSE_CUDA_CHECK(cudaStreamSynchronize(dc_.stream));
  }

  std::unique_ptr<CapturedWork> capture(const std::function<void()>& body) override {
    require_device("capture");
    MLAFUSE_CUDA_CHECK(cudaStreamBeginCapture(dc_.stream, cudaStreamCaptureModeThreadLocal));
    try {
      body();
    } catch (...) {
      cudaGraph_t partial = nullptr;
      cudaStreamEndCapture(dc_.stream, &partial);  // leave the stream usable
      if (partial) cudaGraphDestroy(partial);
      cudaGetLastError();
      throw;
    }
    cudaGraph_t graph = nullptr;
    MLAFUSE_CUDA_CHECK(cudaStreamEndCapture(dc_.stream, &graph));
    cudaGraphExec_t exec = nullptr;
    const cudaError_t err = cudaGraphInstantiate(&exec, graph, 0);
    if (err != cudaSuccess) {
      cudaGraphDestroy(graph);
      cuda::throw_cuda_error(err, "cudaGraphInstantiate", __FILE__, __LINE__);
    }
    return std::make_unique<CudaGraphWork>(graph, exec, dc_);
  }

  double time_us(const std::function<void()>& body, int iters, int warmup) override {
    require_device("time_us");
    MLAFUSE_CHECK(iters > 0, "time_us: iters must be positive, got ", iters);
    for (int i = 0; i < warmup; ++i) body();
    std::vector<cudaEvent_t> events(static_cast<size_t>(iters) + 1);
    for (auto& e : events) MLAFUSE_CUDA_CHECK(cudaEventCreate(&e));
    std::vector<float> samples(static_cast<size_t>(iters));
    try {
      MLAFUSE_CUDA_CHECK(cudaEventRecord(events[0], dc_.stream));
      for (int i = 0; i < iters; ++i) {
        body();
        MLAFUSE_CUDA_CHECK(cudaEventRecord(events[static_cast<size_t>(i) + 1], dc_.stream));
      }
      MLAFUSE_CUDA_CHECK(cudaEventSynchronize(events.back()));
      for (int i = 0; i < iters; ++i) {
        MLAFUSE_CUDA_CHECK(cudaEventElapsedTime(&samples[static_cast<size_t>(i)],
                                                events[static_cast<size_t>(i)],
                                                events[static_cast<size_t>(i) + 1]));
      }
    } catch (...) {
      for (auto& e : events) cudaEventDestroy(e);
      throw;
    }
    for (auto& e : events) cudaEventDestroy(e);
    std::nth_element(samples.begin(), samples.begin() + samples.size() / 2, samples.end());
    return 1000.0 * samples[samples.size() / 2];
  }

  std::string unusable_reason() const override { return available_ ? "" : reason_; }

 private:
  void require_device(std::string_view what) const {
    MLAFUSE_CHECK(available_, "no CUDA device: ", reason_, " (the CUDA backend cannot ", what,
                  " here; capability queries such as fused_output_quant_supported still work)");
  }

  bool available_ = false;
  std::string reason_;
  std::string device_name_;
  DeviceContext dc_;
};

}  // namespace

std::unique_ptr<Backend> make_cuda_backend() { return std::make_unique<CudaBackend>(); }

}  // namespace mlafuse
