#include "tensors.h"

#include <map>
#include <memory>
#include <mutex>
#include <vector>

#include "mlafuse/backends/cpu/cpu_backend.h"
#include "mlafuse/core/error.h"
#include "mlafuse/core/shape.h"
#if MLAFUSE_WITH_CUDA
#include <cuda_runtime.h>

#include "mlafuse/backends/cuda/cuda_backend.h"
#include "mlafuse/backends/cuda/cuda_check.h"
#endif

namespace mlafuse::py {
namespace {

using nb::dlpack::dtype_code;
// DLPack's codes for FP8 e4m3fn and FP4 e2m1fn (dlpack.h 1.1), spelled as numbers so nanobind
// releases older than their enum names build too.
constexpr uint8_t kDLFloat8E4M3fn = 10;
constexpr uint8_t kDLFloat4E2M1fn = 17;

std::string dl_dtype_str(const nb::dlpack::dtype& dt) {
  const char* code = "code";
  switch (static_cast<dtype_code>(dt.code)) {
    case dtype_code::Int:
      code = "int";
      break;
    case dtype_code::UInt:
      code = "uint";
      break;
    case dtype_code::Float:
      code = "float";
      break;
    case dtype_code::Bfloat:
      code = "bfloat";
      break;
    case dtype_code::Bool:
      code = "bool";
      break;
    case static_cast<dtype_code>(kDLFloat8E4M3fn):
      code = "float8_e4m3fn";
      break;
    case static_cast<dtype_code>(kDLFloat4E2M1fn):
      code = "float4_e2m1fn";
      break;
    default:
      return "dlpack dtype code " + std::to_string(dt.code) + "/" + std::to_string(dt.bits);
  }
  return std::string(code) + std::to_string(dt.bits);
}

// The mlafuse element type of a DLPack type, if it has one.
std::optional<DType> from_dlpack(const nb::dlpack::dtype& dt) {
  if (dt.lanes != 1) return std::nullopt;
  const auto code = static_cast<dtype_code>(dt.code);
  if (code == dtype_code::Float && dt.bits == 16) return DType::kF16;
  if (code == dtype_code::Float && dt.bits == 32) return DType::kF32;
  if (code == dtype_code::Bfloat && dt.bits == 16) return DType::kBF16;
  if (code == dtype_code::Int && dt.bits == 32) return DType::kI32;
  if (code == dtype_code::UInt && dt.bits == 8) return DType::kU8;
  if (dt.code == kDLFloat8E4M3fn && dt.bits == 8) return DType::kFp8E4M3;
  return std::nullopt;
}

}  // namespace

Tensor ArgSet::add(const InArray& a, const char* name, std::string_view tag) {
  return add_dl(a.data(), a.dtype(), a.device_type(), a.device_id(), a.ndim(), a.shape_ptr(),
                a.stride_ptr(), name, tag);
}
Tensor ArgSet::add(const OutArray& a, const char* name, std::string_view tag) {
  return add_dl(a.data(), a.dtype(), a.device_type(), a.device_id(), a.ndim(), a.shape_ptr(),
                a.stride_ptr(), name, tag);
}
Tensor ArgSet::add(const std::optional<InArray>& a, const char* name, std::string_view tag) {
  return a ? add(*a, name, tag) : Tensor();
}
Tensor ArgSet::add(const std::optional<OutArray>& a, const char* name, std::string_view tag) {
  return a ? add(*a, name, tag) : Tensor();
}

Tensor ArgSet::add_dl(const void* data, const nb::dlpack::dtype& dt, int32_t dev_type,
                      int32_t dev_id, size_t ndim, const int64_t* shape, const int64_t* strides,
                      const char* name, std::string_view tag) {
  Place p;
  p.first = name;
  p.device_id = dev_id;
  if (dev_type == nb::device::cpu::value) {
    p.device = Device::kCpu;
    p.device_id = 0;
  } else if (dev_type == nb::device::cuda::value) {
    p.device = Device::kCuda;
  } else {
    throw nb::value_error(("argument " + std::string(name) + ": DLPack device type " +
                           std::to_string(dev_type) + " is not supported; expected a CPU array " +
                           "or a CUDA tensor")
                              .c_str());
  }
  if (!placed_) {
    place_ = p;
    placed_ = true;
  } else if (p.device != place_.device || p.device_id != place_.device_id) {
    auto where = [](const Place& q) {
      return q.device == Device::kCpu ? std::string("cpu") : "cuda:" + std::to_string(q.device_id);
    };
    throw nb::value_error(("argument " + std::string(name) + " is on " + where(p) + " but " +
                           place_.first + " is on " + where(place_) +
                           "; every tensor of a call must be on one device")
                              .c_str());
  }

  std::optional<DType> own = from_dlpack(dt);
  DType dtype;
  if (tag.empty()) {
    if (!own) {
      throw nb::type_error(("argument " + std::string(name) + ": element type " + dl_dtype_str(dt) +
                            " is not supported (expected bfloat16, float16, float32, int32, "
                            "uint8 or float8_e4m3fn)")
                               .c_str());
    }
    dtype = *own;
  } else {
    const std::optional<DType> want = parse_dtype(tag);
    MLAFUSE_CHECK(want.has_value(), "internal: unknown dtype tag ", tag);
    // A tag reinterprets raw unsigned storage of the same width, or agrees with the array's type.
    const bool raw = static_cast<dtype_code>(dt.code) == dtype_code::UInt && dt.lanes == 1 &&
                     dt.bits == 8 * dtype_size(*want);
    if (!raw && own != want) {
      throw nb::type_error(("argument " + std::string(name) + ": element type " + dl_dtype_str(dt) +
                            " cannot hold " + std::string(tag) + " values")
                               .c_str());
    }
    dtype = *want;
  }

  std::vector<int64_t> sh(shape, shape + ndim);
  std::vector<int64_t> st(ndim);
  int64_t extent = 1;  // elements reachable from element 0
  bool empty = false;
  for (size_t i = 0; i < ndim; ++i) empty |= sh[i] == 0;
  for (size_t i = 0; i < ndim; ++i) {
    // DLPack allows a null strides pointer for compact row-major arrays.
    st[i] = strides ? strides[i] : 1;
    // A dim of extent 0 or 1 never steps, so its stride is free: exporters differ there (torch up
    // to 2.9 gives such dims stride 1, numpy's x[:, None] stride 0). The row-major value keeps
    // contiguity checks and stride arithmetic from rejecting a one-token batch.
    if (!strides || sh[i] <= 1) {
      st[i] = 1;
      for (size_t j = i + 1; j < ndim; ++j) st[i] *= sh[j];
    }
    if (st[i] < 0) {
      throw nb::value_error(("argument " + std::string(name) + " has a negative stride (strides " +
                             shape_str(st) + "); expected a view with non-negative strides")
                                .c_str());
    }
    if (!empty) extent += (sh[i] - 1) * st[i];
  }
  if (empty) extent = 0;
  auto storage = std::make_shared<Storage>();
  storage->data = const_cast<void*>(data);  // borrowed: the Python object outlives the call
  storage->bytes = static_cast<size_t>(extent) * dtype_size(dtype);
  storage->device = p.device;
  return Tensor(std::move(storage), dtype, std::move(sh), std::move(st), 0);
}

Backend& backend_for(const Place& p) {
  if (p.device == Device::kCpu) {
    static const std::unique_ptr<Backend> cpu = make_cpu_backend();
    return *cpu;
  }
#if MLAFUSE_WITH_CUDA
  static std::mutex mu;
  static std::map<int, std::unique_ptr<Backend>> backends;
  std::lock_guard<std::mutex> lock(mu);
  auto it = backends.find(p.device_id);
  if (it == backends.end()) {
    // The backend binds to the current device when it is made (DeviceScope set it).
    it = backends.emplace(p.device_id, make_cuda_backend()).first;
  }
  return *it->second;
#else
  throw nb::value_error(("argument " + std::string(p.first) +
                         " is a CUDA tensor, but this mlafuse was built without the CUDA backend "
                         "(no nvcc at build time); use CPU arrays or rebuild with nvcc")
                            .c_str());
#endif
}

DeviceScope::DeviceScope(const Place& p) {
#if MLAFUSE_WITH_CUDA
  if (p.device != Device::kCuda) return;
  int current = 0;
  MLAFUSE_CUDA_CHECK(cudaGetDevice(&current));
  if (current != p.device_id) {
    MLAFUSE_CUDA_CHECK(cudaSetDevice(p.device_id));
    previous_ = current;
  }
#else
  (void)p;
#endif
}

DeviceScope::~DeviceScope() {
#if MLAFUSE_WITH_CUDA
  if (previous_ >= 0) cudaSetDevice(previous_);
#endif
}

void* stream_handle(uintptr_t stream) {
  // cudaStreamLegacy is ((cudaStream_t)0x1); spelled out so CPU-only builds need no CUDA headers.
  return stream == 0 ? reinterpret_cast<void*>(uintptr_t{1}) : reinterpret_cast<void*>(stream);
}

}  // namespace mlafuse::py
