#include "compare.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <sstream>

#include "mlafuse/core/error.h"
#include "mlafuse/quant/codecs.h"

namespace mlafuse::app {
namespace {

std::string hex_bytes(const uint8_t* p, size_t n) {
  std::ostringstream os;
  os << "0x" << std::hex;
  for (size_t i = n; i-- > 0;) os << (p[i] >> 4) << (p[i] & 15);  // little-endian value
  return os.str();
}

}  // namespace

Tensor first_rows(const Tensor& t, int64_t n) {
  std::vector<int64_t> shape = t.shape();
  shape[0] = n;
  Tensor out = Tensor::empty(t.dtype(), shape);
  std::memcpy(out.raw(), t.raw(), static_cast<size_t>(out.numel()) * dtype_size(t.dtype()));
  return out;
}

bool rows_equal(const Tensor& a, const Tensor& b, int64_t n, const std::string& name,
                std::string* why) {
  const int64_t row_elems = a.numel() / a.dim(0);
  const size_t es = dtype_size(a.dtype());
  const auto* pa = static_cast<const uint8_t*>(a.raw());
  const auto* pb = static_cast<const uint8_t*>(b.raw());
  for (int64_t i = 0; i < n * row_elems; ++i) {
    if (std::memcmp(pa + i * es, pb + i * es, es) != 0) {
      *why = name + "[" + std::to_string(i / row_elems) + ", " + std::to_string(i % row_elems) +
             "]: unfused " + hex_bytes(pa + i * es, es) + ", fused " + hex_bytes(pb + i * es, es);
      return false;
    }
  }
  return true;
}

bool group_scales_equal(const Tensor& a, const Tensor& b, const GroupScaleLayout& l, int64_t n,
                        const std::string& name, std::string* why) {
  for (int64_t t = 0; t < n; ++t) {
    for (int64_t g = 0; g < l.groups; ++g) {
      const auto* pa = a.data<uint8_t>() + l.offset(t, g) * 4;
      const auto* pb = b.data<uint8_t>() + l.offset(t, g) * 4;
      if (std::memcmp(pa, pb, 4) != 0) {
        *why = name + " token " + std::to_string(t) + " group " + std::to_string(g) + ": unfused " +
               hex_bytes(pa, 4) + ", fused " + hex_bytes(pb, 4);
        return false;
      }
    }
  }
  return true;
}

Tensor group_scales_logical(const Tensor& s, const GroupScaleLayout& l, int64_t n) {
  Tensor out = Tensor::empty(DType::kF32, {n, l.groups});
  for (int64_t t = 0; t < n; ++t) {
    for (int64_t g = 0; g < l.groups; ++g) {
      out.data<float>()[t * l.groups + g] = s.data<float>()[l.offset(t, g)];
    }
  }
  return out;
}

GroupScaleLayout group_layout(Layout layout, int64_t t_pad, int64_t groups) {
  return GroupScaleLayout{t_pad, groups, layout != Layout::kRowMajor,
                          layout == Layout::kColMajorTma};
}

ErrStats compare_to_reference(const Tensor& y, const Tensor& ref, int64_t n) {
  ErrStats e;
  const int64_t cols = ref.dim(1);
  MLAFUSE_CHECK(y.dtype() == DType::kBF16 && y.dim(1) == cols, "o_proj output ", y.str(),
                " does not match the reference ", ref.str());
  for (int64_t i = 0; i < n * cols; ++i) {
    const double r = ref.data<float>()[i];
    const double v = bf16_bits_to_f32(y.data<uint16_t>()[i]);
    e.ref_max = std::max(e.ref_max, std::fabs(r));
    // A NaN anywhere makes the error infinite rather than silently ignored.
    const double d = std::fabs(v - r);
    e.max_abs = std::isnan(d) ? INFINITY : std::max(e.max_abs, d);
  }
  return e;
}

}  // namespace mlafuse::app
