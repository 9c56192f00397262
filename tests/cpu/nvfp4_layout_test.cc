// Scale layouts (quant/scale_layout.h): the NVFP4 swizzle checked against an independent inverse
// mapping (byte offset -> (row, scale column)) over every byte of the storage, the prefix
// property padded batches rely on, and the group-FP8 scale strides of SPEC 3.2.
#include <gtest/gtest.h>

#include <vector>

#include "cpu/oracle.h"
#include "mlafuse/quant/scale_layout.h"

namespace mlafuse {
namespace {

TEST(Nvfp4Swizzle, InverseMappingIsABijectionOverTheWholeStorage) {
  for (int64_t t : {1, 5, 127, 128, 129, 300}) {
    for (int64_t d : {16, 48, 64, 80, 1024, 2048, 16384}) {
      const Nvfp4ScaleLayout l{t, d};
      ASSERT_EQ(l.padded_cols() % 4, 0);
      ASSERT_EQ(l.padded_cols(), 4 * l.col_tiles());
      std::vector<int> hits(static_cast<size_t>(l.storage_bytes()), 0);
      for (int64_t off = 0; off < l.storage_bytes(); ++off) {
        int64_t m, k;
        oracle::nvfp4_inverse_offset(off, d, &m, &k);
        ASSERT_LT(m, l.padded_rows()) << "t " << t << " d " << d << " off " << off;
        ASSERT_LT(k, l.padded_cols());
        ASSERT_EQ(l.offset(m, k), off) << "t " << t << " d " << d << " m " << m << " k " << k;
      }
      for (int64_t m = 0; m < l.padded_rows(); ++m) {
        for (int64_t k = 0; k < l.padded_cols(); ++k) {
          const int64_t off = l.offset(m, k);
          ASSERT_GE(off, 0);
          ASSERT_LT(off, l.storage_bytes());
          ++hits[static_cast<size_t>(off)];
        }
      }
      for (int h : hits) ASSERT_EQ(h, 1) << "t " << t << " d " << d;
    }
  }
}

TEST(Nvfp4Swizzle, HandPickedOffsets) {
  const Nvfp4ScaleLayout l{256, 512};  // 32 scale columns: kt = 8 tiles of 4 columns
  EXPECT_EQ(l.col_tiles(), 8);
  EXPECT_EQ(l.offset(0, 0), 0);
  EXPECT_EQ(l.offset(0, 3), 3);
  EXPECT_EQ(l.offset(1, 0), 16);  // rows 0..31 step 16 bytes
  EXPECT_EQ(l.offset(32, 0), 4);  // rows 32..63 interleave at +4
  EXPECT_EQ(l.offset(96, 2), 14);
  EXPECT_EQ(l.offset(0, 4), 512);        // next column tile
  EXPECT_EQ(l.offset(128, 0), 8 * 512);  // next row tile after all column tiles
  EXPECT_EQ(l.offset(255, 31), 2 * 8 * 512 - 1);
}

TEST(Nvfp4Swizzle, LayoutForNRowsIsAPrefixOfLargerT) {
  for (int64_t d : {64, 112, 2048}) {
    for (int64_t n : {1, 100, 128, 200}) {
      const Nvfp4ScaleLayout small{n, d};
      const Nvfp4ScaleLayout big{1000, d};
      for (int64_t m = 0; m < small.padded_rows(); ++m) {
        for (int64_t k = 0; k < small.padded_cols(); ++k) {
          ASSERT_EQ(small.offset(m, k), big.offset(m, k));
          ASSERT_LT(small.offset(m, k), small.storage_bytes());
        }
      }
    }
  }
}

TEST(GroupScaleLayout, StridesAndStorageOfEveryFlagCombination) {
  const GroupScaleLayout row{5, 3, false, false};
  EXPECT_EQ(row.offset(2, 1), 7);
  EXPECT_EQ(row.storage_numel(), 15);
  const GroupScaleLayout row_tma{5, 3, false, true};  // tma_aligned has no effect row-major
  EXPECT_EQ(row_tma.offset(2, 1), 7);
  EXPECT_EQ(row_tma.storage_numel(), 15);
  const GroupScaleLayout col{5, 3, true, false};
  EXPECT_EQ(col.offset(2, 1), 7);  // 2 + 1*5
  EXPECT_EQ(col.offset(4, 2), 14);
  EXPECT_EQ(col.storage_numel(), 15);
  const GroupScaleLayout tma{5, 3, true, true};
  EXPECT_EQ(tma.offset(2, 1), 10);  // 2 + 1*8
  EXPECT_EQ(tma.storage_numel(), 24);
  const GroupScaleLayout tma8{8, 2, true, true};
  EXPECT_EQ(tma8.group_stride(), 8);
}

}  // namespace
}  // namespace mlafuse
