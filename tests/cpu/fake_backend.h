// A Backend for compiler tests: it answers the fusion question from a predicate and records the
// questions. It runs no op (the compiler never asks it to).
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "mlafuse/backends/backend.h"

namespace mlafuse::testing {

class FakeBackend : public Backend {
 public:
  using Predicate = std::function<bool(const FusedQuantRequest&)>;
  explicit FakeBackend(Predicate supported, std::string name = "fake")
      : supported_(std::move(supported)), name_(std::move(name)) {}

  std::string name() const override { return name_; }
  Device device() const override { return Device::kCpu; }
  bool supports_op(std::string_view) const override { return true; }
  bool fused_output_quant_supported(const FusedQuantRequest& req) const override {
    requests.push_back(req);
    return supported_(req);
  }
  void run(const OpCall& call, const RunContext&) override {
    MLAFUSE_FAIL("FakeBackend cannot run ", call.op, ": compiler tests only");
  }
  Tensor allocate(DType, std::vector<int64_t>, std::vector<int64_t>, int64_t) override {
    MLAFUSE_FAIL("FakeBackend allocates nothing");
  }
  void copy(const Tensor&, Tensor&) override { MLAFUSE_FAIL("FakeBackend copies nothing"); }

  mutable std::vector<FusedQuantRequest> requests;

 private:
  Predicate supported_;
  std::string name_;
};

inline FakeBackend yes_backend() {
  return FakeBackend([](const FusedQuantRequest&) { return true; }, "yes");
}
inline FakeBackend no_backend() {
  return FakeBackend([](const FusedQuantRequest&) { return false; }, "no");
}

}  // namespace mlafuse::testing
