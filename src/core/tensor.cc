#include "mlafuse/core/tensor.h"

#include <cstdlib>
#include <cstring>
#include <sstream>

#include "mlafuse/core/error.h"
#include "mlafuse/core/shape.h"

namespace mlafuse {

std::string_view device_name(Device d) { return d == Device::kCpu ? "cpu" : "cuda"; }

std::vector<int64_t> Tensor::contiguous_strides(const std::vector<int64_t>& shape) {
  std::vector<int64_t> strides(shape.size());
  int64_t s = 1;
  for (size_t i = shape.size(); i-- > 0;) {
    strides[i] = s;
    s *= shape[i];
  }
  return strides;
}

static std::shared_ptr<Storage> host_storage(size_t bytes) {
  auto st = std::make_shared<Storage>();
  st->bytes = bytes;
  st->device = Device::kCpu;
  // calloc: zero-filled so a freshly allocated tensor never carries stale bytes.
  st->data = std::calloc(bytes == 0 ? 1 : bytes, 1);
  MLAFUSE_CHECK(st->data != nullptr, "out of host memory allocating ", bytes, " bytes");
  st->deleter = [](void* p) { std::free(p); };
  return st;
}

Tensor Tensor::empty(DType dtype, std::vector<int64_t> shape) {
  int64_t n = 1;
  for (int64_t e : shape) {
    MLAFUSE_CHECK(e >= 0, "tensor extent must be >= 0, got shape ", shape_str(shape));
    n *= e;  // cannot wrap: bounded by the product checked below
  }
  // The strides are products of the nonzero extents, so they must fit even when n is 0.
  MLAFUSE_CHECK(extents_bytes_fit(shape, dtype_size(dtype)), "tensor ", dtype_name(dtype), " ",
                shape_str(shape), " is more than 2^63 bytes");
  auto strides = contiguous_strides(shape);
  return empty_strided(dtype, std::move(shape), std::move(strides), n);
}

Tensor Tensor::empty_strided(DType dtype, std::vector<int64_t> shape, std::vector<int64_t> strides,
                             int64_t storage_numel) {
  MLAFUSE_CHECK(storage_numel >= 0, "storage size must be >= 0");
  auto st = host_storage(static_cast<size_t>(storage_numel) * dtype_size(dtype));
  Tensor t(std::move(st), dtype, std::move(shape), std::move(strides), 0);
  MLAFUSE_CHECK(t.extent_numel() <= storage_numel, "view ", t.str(), " reaches past its storage of ",
                storage_numel, " elements");
  return t;
}

Tensor::Tensor(std::shared_ptr<Storage> storage, DType dtype, std::vector<int64_t> shape,
               std::vector<int64_t> strides, int64_t offset)
    : storage_(std::move(storage)),
      dtype_(dtype),
      shape_(std::move(shape)),
      strides_(std::move(strides)),
      offset_(offset) {
  MLAFUSE_CHECK(shape_.size() == strides_.size(), "tensor rank ", shape_.size(), " but ",
                strides_.size(), " strides");
  if (storage_) {
    MLAFUSE_CHECK(static_cast<size_t>(extent_numel()) * dtype_size(dtype_) <= storage_->bytes,
                  "view ", str(), " reaches past its storage of ", storage_->bytes, " bytes");
  }
}

int64_t Tensor::dim(size_t i) const {
  MLAFUSE_CHECK(i < shape_.size(), "tensor ", str(), ": dimension ", i, " does not exist (rank ",
                shape_.size(), ")");
  return shape_[i];
}

int64_t Tensor::numel() const {
  int64_t n = 1;
  for (int64_t e : shape_) n *= e;
  return n;
}

int64_t Tensor::extent_numel() const {
  if (numel() == 0) return offset_;
  int64_t last = offset_;
  for (size_t i = 0; i < shape_.size(); ++i) last += (shape_[i] - 1) * strides_[i];
  return last + 1;
}

bool Tensor::is_contiguous() const { return strides_ == contiguous_strides(shape_); }

void* Tensor::raw() const {
  MLAFUSE_CHECK(storage_ != nullptr, "access to an absent tensor");
  return static_cast<char*>(storage_->data) + offset_ * static_cast<int64_t>(dtype_size(dtype_));
}

Tensor Tensor::view(DType dtype, std::vector<int64_t> shape, std::vector<int64_t> strides,
                    int64_t offset) const {
  return Tensor(storage_, dtype, std::move(shape), std::move(strides), offset);
}

Tensor Tensor::clone() const {
  MLAFUSE_CHECK(device() == Device::kCpu, "Tensor::clone of a device tensor; copy it to the host");
  Tensor out = empty(dtype_, shape_);
  const size_t es = dtype_size(dtype_);
  const int64_t n = numel();
  const char* src = static_cast<const char*>(raw());
  char* dst = static_cast<char*>(out.raw());
  std::vector<int64_t> idx(shape_.size(), 0);
  for (int64_t i = 0; i < n; ++i) {
    int64_t off = 0;
    for (size_t d = 0; d < idx.size(); ++d) off += idx[d] * strides_[d];
    std::memcpy(dst + i * es, src + off * es, es);
    for (size_t d = idx.size(); d-- > 0;) {
      if (++idx[d] < shape_[d]) break;
      idx[d] = 0;
    }
  }
  return out;
}

std::string Tensor::str() const {
  std::ostringstream os;
  os << dtype_name(dtype_) << shape_str(shape_);
  return os.str();
}

void check_dtype(const Tensor& t, const char* name, DType expected) {
  MLAFUSE_CHECK(t.defined(), "tensor ", name, " is missing (expected ", dtype_name(expected), ")");
  MLAFUSE_CHECK(t.dtype() == expected, "tensor ", name, " ", t.str(), ": expected dtype ",
                dtype_name(expected), ", got ", dtype_name(t.dtype()));
}

void check_rank(const Tensor& t, const char* name, size_t rank) {
  MLAFUSE_CHECK(t.defined(), "tensor ", name, " is missing");
  MLAFUSE_CHECK(t.rank() == rank, "tensor ", name, " ", t.str(), ": expected rank ", rank, ", got ",
                t.rank());
}

void check_shape(const Tensor& t, const char* name, const std::vector<int64_t>& expected) {
  MLAFUSE_CHECK(t.defined(), "tensor ", name, " is missing (expected shape ", shape_str(expected),
                ")");
  MLAFUSE_CHECK(t.shape() == expected, "tensor ", name, " ", t.str(), ": expected shape ",
                shape_str(expected));
}

void check_device(const Tensor& t, const char* name, Device expected) {
  MLAFUSE_CHECK(t.defined(), "tensor ", name, " is missing");
  MLAFUSE_CHECK(t.device() == expected, "tensor ", name, " ", t.str(), " is on ",
                device_name(t.device()), ", expected ", device_name(expected));
}

}  // namespace mlafuse
