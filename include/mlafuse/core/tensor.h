// Tensors: a shared storage (host or device memory) viewed with a dtype, extents and strides.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "mlafuse/core/dtype.h"

namespace mlafuse {

enum class Device { kCpu, kCuda };
std::string_view device_name(Device d);

// Raw bytes owned by someone; the deleter frees them (free(), cudaFree(), or nothing for views).
struct Storage {
  void* data = nullptr;
  size_t bytes = 0;
  Device device = Device::kCpu;
  std::function<void(void*)> deleter;
  ~Storage() {
    if (deleter && data) deleter(data);
  }
};

// A strided view. Strides and offset are in elements. A default-constructed Tensor is "absent"
// (used for optional op inputs).
class Tensor {
 public:
  Tensor() = default;
  // Host tensor, zero-initialised, contiguous row-major.
  static Tensor empty(DType dtype, std::vector<int64_t> shape);
  // Host tensor over a storage of `storage_numel` elements with explicit strides (padded layouts,
  // e.g. column-major TMA-aligned scales).
  static Tensor empty_strided(DType dtype, std::vector<int64_t> shape,
                              std::vector<int64_t> strides, int64_t storage_numel);
  // A view over existing storage.
  Tensor(std::shared_ptr<Storage> storage, DType dtype, std::vector<int64_t> shape,
         std::vector<int64_t> strides, int64_t offset = 0);

  bool defined() const { return storage_ != nullptr; }
  DType dtype() const { return dtype_; }
  Device device() const { return storage_ ? storage_->device : Device::kCpu; }
  const std::vector<int64_t>& shape() const { return shape_; }
  const std::vector<int64_t>& strides() const { return strides_; }
  int64_t dim(size_t i) const;  // throws mlafuse::Error (with the shape) when i >= rank
  size_t rank() const { return shape_.size(); }
  int64_t offset() const { return offset_; }
  int64_t numel() const;
  // Elements the view can reach (1 + max offset), for bounds checks.
  int64_t extent_numel() const;
  bool is_contiguous() const;
  const std::shared_ptr<Storage>& storage() const { return storage_; }

  void* raw() const;  // pointer to element 0 of the view
  template <typename T>
  T* data() const {
    return static_cast<T*>(raw());
  }
  // Same storage, new dtype/extents/strides (no copy).
  Tensor view(DType dtype, std::vector<int64_t> shape, std::vector<int64_t> strides,
              int64_t offset = 0) const;
  // Contiguous host copy (device tensors are copied by the backend that owns them).
  Tensor clone() const;
  // "bf16[4, 128]"
  std::string str() const;

  static std::vector<int64_t> contiguous_strides(const std::vector<int64_t>& shape);

 private:
  std::shared_ptr<Storage> storage_;
  DType dtype_ = DType::kF32;
  std::vector<int64_t> shape_;
  std::vector<int64_t> strides_;
  int64_t offset_ = 0;
};

// Checks used at every op boundary; messages name the tensor.
void check_dtype(const Tensor& t, const char* name, DType expected);
void check_rank(const Tensor& t, const char* name, size_t rank);
void check_shape(const Tensor& t, const char* name, const std::vector<int64_t>& expected);
void check_device(const Tensor& t, const char* name, Device expected);

}  // namespace mlafuse
