// The paged latent cache write (SPEC 4): slot mapping with -1 skips, any positive page size,
// padded batches (tokens >= n never written even with a valid slot), untouched rows keep their
// poison, and bad slots / shapes rejected before anything is written.
#include <gtest/gtest.h>

#include <cstring>
#include <vector>

#include "cpu/mla_test_util.h"
#include "cpu/ref_test_util.h"
#include "mlafuse/backends/cpu/reference.h"

namespace mlafuse {
namespace {

using testing::expect_error;
using testing::random_bf16;

Tensor slots_of(const std::vector<int32_t>& s) {
  Tensor t = Tensor::empty(DType::kI32, {static_cast<int64_t>(s.size())});
  std::copy(s.begin(), s.end(), t.data<int32_t>());
  return t;
}

TEST(CacheWrite, WritesRowsAtSlotsSkipsMinusOneAndPadding) {
  for (int64_t page_size : {64, 1, 3, 16}) {
    const int64_t l = 24, r = 8, pages = 5, t_pad = 6, n = 5;
    const Tensor c = random_bf16({t_pad, l}, 1, 1.0f);
    const Tensor pe = random_bf16({t_pad, 1, r}, 2, 1.0f);
    Tensor cache = Tensor::empty(DType::kBF16, {pages, page_size, l + r});
    testing::poison(cache);
    const int64_t cap = pages * page_size;
    // Token 1 skipped (-1); token 5 is padding (>= n): its valid slot must not be written.
    const std::vector<int32_t> slots = {static_cast<int32_t>(cap - 1),
                                        -1,
                                        0,
                                        static_cast<int32_t>(cap / 2),
                                        static_cast<int32_t>(1),
                                        static_cast<int32_t>(cap - 2)};
    const Tensor before = cache.clone();
    ref::cache_write(c, pe, slots_of(slots), n, cache);
    std::vector<bool> written(static_cast<size_t>(cap), false);
    for (int64_t t = 0; t < n; ++t) {
      if (slots[static_cast<size_t>(t)] < 0) continue;
      const int64_t s = slots[static_cast<size_t>(t)];
      written[static_cast<size_t>(s)] = true;
      // Slot s = page s / page_size, row s % page_size.
      const uint16_t* row =
          cache.data<uint16_t>() + ((s / page_size) * page_size + s % page_size) * (l + r);
      for (int64_t i = 0; i < l; ++i) ASSERT_EQ(row[i], c.data<uint16_t>()[t * l + i]);
      for (int64_t i = 0; i < r; ++i) ASSERT_EQ(row[l + i], pe.data<uint16_t>()[t * r + i]);
    }
    for (int64_t s = 0; s < cap; ++s) {
      if (written[static_cast<size_t>(s)]) continue;
      ASSERT_EQ(std::memcmp(cache.data<uint16_t>() + s * (l + r),
                            before.data<uint16_t>() + s * (l + r), (l + r) * 2),
                0)
          << "slot " << s << " changed (page size " << page_size << ")";
    }
  }
}

TEST(CacheWrite, BadSlotsAndShapesLeaveTheCacheUntouched) {
  const int64_t l = 16, r = 8;
  const Tensor c = random_bf16({3, l}, 3, 1.0f);
  const Tensor pe = random_bf16({3, 1, r}, 4, 1.0f);
  Tensor cache = Tensor::empty(DType::kBF16, {2, 4, l + r});
  testing::poison(cache);
  const Tensor before = cache.clone();
  auto unchanged = [&] {
    return std::memcmp(cache.raw(), before.raw(), before.storage()->bytes) == 0;
  };
  expect_error(
      [&] {
        ref::cache_write(c, pe, slots_of({0, 8, 1}), 3, cache);
      },
      {"slot_mapping[1] = 8", "kv_cache", "0..7"});
  EXPECT_TRUE(unchanged()) << "slot 0 must not be written before slot 1 is rejected";
  expect_error(
      [&] {
        ref::cache_write(c, pe, slots_of({0, -2, 1}), 3, cache);
      },
      {"slot_mapping[1] = -2"});
  expect_error(
      [&] {
        ref::cache_write(c, pe, slots_of({0, 1}), 3, cache);
      },
      {"slot_mapping", "n = 3"});
  const Tensor pe_bad = random_bf16({3, 2, r}, 5, 1.0f);
  expect_error(
      [&] {
        ref::cache_write(c, pe_bad, slots_of({0, 1, 2}), 3, cache);
      },
      {"k_pe", "[3, 1, R]"});
  Tensor cache_bad = Tensor::empty(DType::kBF16, {2, 4, l + r + 1});
  expect_error(
      [&] {
        ref::cache_write(c, pe, slots_of({0, 1, 2}), 3, cache_bad);
      },
      {"kv_cache", "L + R"});
  Tensor cache_f32 = Tensor::empty(DType::kF32, {2, 4, l + r});
  expect_error(
      [&] {
        ref::cache_write(c, pe, slots_of({0, 1, 2}), 3, cache_f32);
      },
      {"kv_cache", "bf16"});
  expect_error([&] { ref::cache_write(c, pe, slots_of({0, 1, 2}), 4, cache); }, {"n = 4"});
  Tensor slots_f32 = Tensor::empty(DType::kF32, {3});
  expect_error([&] { ref::cache_write(c, pe, slots_f32, 3, cache); }, {"slot_mapping", "i32"});
  EXPECT_TRUE(unchanged());
  // Only the first n slots are validated and used: an out-of-range padding slot is fine.
  EXPECT_NO_THROW(ref::cache_write(c, pe, slots_of({0, 1, 999}), 2, cache));
}

}  // namespace
}  // namespace mlafuse
