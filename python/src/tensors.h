// DLPack arrays (nb::ndarray) as mlafuse Tensors, and the backend that runs a call: the CPU
// reference for host arrays, the CUDA backend of the arrays' device for CUDA arrays.
#pragma once

#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "mlafuse/backends/backend.h"
#include "mlafuse/core/tensor.h"

namespace mlafuse::py {

namespace nb = nanobind;

// Inputs may be read-only (numpy arrays with writeable=False); outputs must be writable.
using InArray = nb::ndarray<nb::ro>;
using OutArray = nb::ndarray<>;

// Where one call's tensors live.
struct Place {
  Device device = Device::kCpu;
  int device_id = 0;
  const char* first = nullptr;  // the argument that fixed it, for messages
};

// The tensors of one op call: each is converted with its argument name and must share the
// device of the first one.
class ArgSet {
 public:
  // `tag` names the element type the caller means when the array's own type cannot carry it
  // ("fp8e4m3" for a uint8 view of FP8 codes, "bf16" for a uint16 view); "" takes the array's.
  Tensor add(const InArray& a, const char* name, std::string_view tag = "");
  Tensor add(const OutArray& a, const char* name, std::string_view tag = "");
  Tensor add(const std::optional<InArray>& a, const char* name, std::string_view tag = "");
  Tensor add(const std::optional<OutArray>& a, const char* name, std::string_view tag = "");
  const Place& place() const { return place_; }

 private:
  Tensor add_dl(const void* data, const nb::dlpack::dtype& dt, int32_t dev_type, int32_t dev_id,
                size_t ndim, const int64_t* shape, const int64_t* strides, const char* name,
                std::string_view tag);
  Place place_;
  bool placed_ = false;
};

// The backend for a place (created once per device). A CUDA place in a build without CUDA is a
// ValueError naming the argument.
Backend& backend_for(const Place& p);

// Makes the place's CUDA device current for the scope of a call (kernels launch on the current
// device) and restores the caller's. Does nothing for the CPU.
class DeviceScope {
 public:
  explicit DeviceScope(const Place& p);
  ~DeviceScope();
  DeviceScope(const DeviceScope&) = delete;
  DeviceScope& operator=(const DeviceScope&) = delete;

 private:
  int previous_ = -1;
};

// The caller's stream as a RunContext::stream: 0 (the legacy default stream, which is what torch
// reports for its default stream) becomes the explicit legacy handle, so the backend does not
// fall back to its own stream.
void* stream_handle(uintptr_t stream);

// Runs `fn`, turning mlafuse::Error into ValueError prefixed with `op` (the Python signature's
// argument names next to the op contract's, where they differ).
template <typename Fn>
auto with_op_context(const char* op, Fn&& fn) -> decltype(fn()) {
  try {
    return fn();
  } catch (const Error& e) {
    throw nb::value_error((std::string(op) + ": " + e.what()).c_str());
  }
}

}  // namespace mlafuse::py
