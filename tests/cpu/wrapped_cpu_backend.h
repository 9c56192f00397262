// A Backend that forwards every call to the CPU backend. Tests derive from it to record or perturb
// what run() does without repeating the forwarding.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "mlafuse/backends/backend.h"
#include "mlafuse/backends/cpu/cpu_backend.h"

namespace mlafuse::testing {

class WrappedCpuBackend : public Backend {
 public:
  explicit WrappedCpuBackend(std::string name)
      : inner_(make_cpu_backend()), name_(std::move(name)) {}

  std::string name() const override { return name_; }
  Device device() const override { return Device::kCpu; }
  bool supports_op(std::string_view op) const override { return inner_->supports_op(op); }
  bool fused_output_quant_supported(const FusedQuantRequest& r) const override {
    return inner_->fused_output_quant_supported(r);
  }
  Tensor allocate(DType d, std::vector<int64_t> s, std::vector<int64_t> st, int64_t n) override {
    return inner_->allocate(d, std::move(s), std::move(st), n);
  }
  void copy(const Tensor& src, Tensor& dst) override { inner_->copy(src, dst); }
  void run(const OpCall& call, const RunContext& ctx) override { inner_->run(call, ctx); }

 private:
  std::unique_ptr<Backend> inner_;
  std::string name_;
};

}  // namespace mlafuse::testing
