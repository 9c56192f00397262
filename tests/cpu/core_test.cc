#include <gtest/gtest.h>

#include "cpu/ref_test_util.h"
#include "mlafuse/core/checked.h"
#include "mlafuse/core/error.h"
#include "mlafuse/core/shape.h"
#include "mlafuse/core/tensor.h"
#include "mlafuse/quant/layout.h"

namespace mlafuse {
namespace {

TEST(Tensor, EmptyIsZeroedAndContiguous) {
  Tensor t = Tensor::empty(DType::kF32, {3, 4});
  EXPECT_TRUE(t.is_contiguous());
  EXPECT_EQ(t.numel(), 12);
  for (int i = 0; i < 12; ++i) EXPECT_EQ(t.data<float>()[i], 0.0f);
  EXPECT_EQ(t.str(), "f32[3, 4]");
}

TEST(Tensor, ViewPastStorageThrows) {
  Tensor t = Tensor::empty(DType::kF32, {4});
  EXPECT_THROW(t.view(DType::kF32, {5}, {1}), Error);
}

TEST(Tensor, CheckMessagesNameTheTensor) {
  Tensor t = Tensor::empty(DType::kBF16, {2, 3});
  try {
    check_shape(t, "kv_c_normed", {2, 512});
    FAIL() << "no throw";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("kv_c_normed"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("[2, 512]"), std::string::npos) << e.what();
  }
  EXPECT_THROW(check_dtype(t, "q", DType::kF32), Error);
}

TEST(Layout, ColMajorTmaPadsTheTokenStride) {
  LayoutPlan p = plan_layout(Layout::kColMajorTma, {5, 3});
  EXPECT_EQ(p.strides, (std::vector<int64_t>{1, 8}));
  EXPECT_EQ(p.storage_numel, 24);
  LayoutPlan c = plan_layout(Layout::kColMajor, {5, 3});
  EXPECT_EQ(c.strides, (std::vector<int64_t>{1, 5}));
  LayoutPlan r = plan_layout(Layout::kRowMajor, {5, 3});
  EXPECT_EQ(r.strides, (std::vector<int64_t>{3, 1}));
  LayoutPlan s = plan_layout(Layout::kNvfp4Swizzled, {5, 7});
  EXPECT_EQ(s.shape, (std::vector<int64_t>{128, 8}));
}

}  // namespace
}  // namespace mlafuse

namespace mlafuse {
namespace {

TEST(Tensor, DimPastTheRankIsANamedError) {
  Tensor t = Tensor::empty(DType::kF32, {2, 3});
  EXPECT_EQ(t.dim(1), 3);
  try {
    t.dim(2);
    FAIL() << "no throw";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("f32[2, 3]"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace mlafuse

namespace mlafuse {
namespace {

TEST(CheckedMath, OverflowIsANamedErrorNotAWrappedValue) {
  EXPECT_EQ(checked_mul(int64_t{1} << 31, int64_t{1} << 31, "a * b"), int64_t{1} << 62);
  EXPECT_EQ(checked_add(INT64_MAX - 1, 1, "a + b"), INT64_MAX);
  testing::expect_error([] { checked_mul(int64_t{1} << 62, 128, "num_heads * v_head_dim"); },
                        {"num_heads * v_head_dim = 4611686018427387904 * 128 does not fit"});
  testing::expect_error([] { checked_add(INT64_MAX, 64, "qk_nope_dim + qk_rope_dim"); },
                        {"qk_nope_dim + qk_rope_dim = 9223372036854775807 + 64 does not fit"});
  EXPECT_EQ(ceil_div_nowrap(INT64_MAX, 128), INT64_MAX / 128 + 1);
  EXPECT_EQ(ceil_div_nowrap(256, 128), 2);
  EXPECT_EQ(ceil_div_nowrap(0, 128), 0);
}

TEST(Tensor, EmptyShapeWhoseStridesWrapIsRefused) {
  // numel is 0, but the leading stride would be 2^40 * 2^40: refused before anything is computed.
  testing::expect_error(
      [] { Tensor::empty(DType::kF32, {0, int64_t{1} << 40, int64_t{1} << 40}); },
      {"f32 [0, 1099511627776, 1099511627776] is more than 2^63 bytes"});
  // An empty tensor with a large (but representable) row allocates nothing.
  const Tensor e = Tensor::empty(DType::kF32, {0, int64_t{1000000000000}});
  EXPECT_EQ(e.numel(), 0);
  EXPECT_TRUE(fixed_bytes_fit(Shape{Dim::tokens(), Dim::fixed(int64_t{1} << 61)}, 2));
  EXPECT_FALSE(fixed_bytes_fit(Shape{Dim::tokens(), Dim::fixed(int64_t{1} << 62)}, 2));
}

}  // namespace
}  // namespace mlafuse
