// Quantization keys (SPEC 2) and detect_output_quant_key (SPEC 3.4): every branch, every error.
#include "mlafuse/quant/quant_key.h"

#include <gtest/gtest.h>

#include <unordered_set>

#include "mlafuse/core/error.h"
#include "mlafuse/quant/output_quant.h"

namespace mlafuse {
namespace {

std::string error_of(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const Error& e) {
    return e.what();
  }
  return "<no error>";
}

#define EXPECT_CONTAINS(haystack, needle) \
  EXPECT_NE(std::string(haystack).find(needle), std::string::npos) << (haystack)

TEST(GroupShape, NamedShapes) {
  EXPECT_TRUE(GroupShape::per_tensor().is_per_tensor());
  EXPECT_TRUE(GroupShape::per_token().is_per_token());
  EXPECT_FALSE(GroupShape::per_token().is_per_group());  // col -1 is the full row, not a group
  EXPECT_TRUE(GroupShape::per_group(128).is_per_group());
  EXPECT_EQ(GroupShape::per_group(64), (GroupShape{1, 64}));
  EXPECT_NE(GroupShape::per_group(64), GroupShape::per_group(128));
  EXPECT_EQ(GroupShape::per_channel(), (GroupShape{-1, 1}));
}

TEST(QuantKey, NamedKeysMatchTheSpecTable) {
  EXPECT_EQ(kFp8StaticTensorSym.dtype, DType::kFp8E4M3);
  EXPECT_EQ(kFp8StaticTensorSym.scale, (ScaleDesc{DType::kF32, true, GroupShape::per_tensor()}));
  EXPECT_FALSE(kFp8StaticTensorSym.scale2.has_value());
  EXPECT_EQ(kFp8Dynamic128Sym.scale, (ScaleDesc{DType::kF32, false, GroupShape{1, 128}}));
  EXPECT_EQ(kFp8Dynamic64Sym.scale, (ScaleDesc{DType::kF32, false, GroupShape{1, 64}}));
  EXPECT_EQ(kNvfp4Dynamic.dtype, DType::kFp4E2M1x2);
  EXPECT_EQ(kNvfp4Dynamic.scale, (ScaleDesc{DType::kFp8E4M3, false, GroupShape{1, 16}}));
  ASSERT_TRUE(kNvfp4Dynamic.scale2.has_value());
  EXPECT_EQ(*kNvfp4Dynamic.scale2, (ScaleDesc{DType::kF32, true, GroupShape::per_tensor()}));
  EXPECT_EQ(kFp8DynamicTokenSym.scale.group_shape, GroupShape::per_token());
  EXPECT_EQ(kFp8DynamicTensorSym.scale.group_shape, GroupShape::per_tensor());
  EXPECT_FALSE(kFp8DynamicTensorSym.scale.is_static);
  for (const QuantKey* k : {&kFp8StaticTensorSym, &kFp8Dynamic128Sym, &kFp8Dynamic64Sym,
                            &kNvfp4Dynamic, &kFp8DynamicTokenSym, &kFp8DynamicTensorSym}) {
    EXPECT_TRUE(k->symmetric);
  }
  EXPECT_EQ(kFp8Dynamic128Sym.group_size(), 128);
  EXPECT_EQ(kFp8Dynamic64Sym.group_size(), 64);
  EXPECT_EQ(kNvfp4Dynamic.group_size(), 16);
  EXPECT_EQ(kFp8StaticTensorSym.group_size(), 0);
  EXPECT_EQ(kFp8DynamicTokenSym.group_size(), 0);
}

TEST(QuantKey, EqualityIsByValue) {
  QuantKey k = kFp8Dynamic128Sym;  // a copy, not the same object
  EXPECT_EQ(k, kFp8Dynamic128Sym);
  k.scale.group_shape.col = 64;
  EXPECT_EQ(k, kFp8Dynamic64Sym);
  k.symmetric = false;
  EXPECT_NE(k, kFp8Dynamic64Sym);
  QuantKey s = kFp8StaticTensorSym;
  s.scale.is_static = false;
  EXPECT_EQ(s, kFp8DynamicTensorSym);
  QuantKey n = kNvfp4Dynamic;
  n.scale2.reset();
  EXPECT_NE(n, kNvfp4Dynamic);
  n.scale2 = ScaleDesc{DType::kF32, false, GroupShape::per_tensor()};
  EXPECT_NE(n, kNvfp4Dynamic);
  n.scale2->is_static = true;
  EXPECT_EQ(n, kNvfp4Dynamic);
  QuantKey d = kFp8Dynamic128Sym;
  d.scale.dtype = DType::kE8M0;
  EXPECT_NE(d, kFp8Dynamic128Sym);
}

TEST(QuantKey, HashAgreesWithEqualityAndSeparatesTheNamedKeys) {
  QuantKeyHash h;
  QuantKey copy = kNvfp4Dynamic;
  EXPECT_EQ(h(copy), h(kNvfp4Dynamic));
  std::unordered_set<QuantKey, QuantKeyHash> set{kFp8StaticTensorSym, kFp8Dynamic128Sym,
                                                 kFp8Dynamic64Sym,    kNvfp4Dynamic,
                                                 kFp8DynamicTokenSym, kFp8DynamicTensorSym};
  EXPECT_EQ(set.size(), 6u);
  EXPECT_EQ(set.count(QuantKey(kFp8Dynamic64Sym)), 1u);
  std::unordered_set<size_t> hashes;
  for (const QuantKey& k : set) hashes.insert(h(k));
  EXPECT_EQ(hashes.size(), 6u);  // distinct in practice, so maps keyed by QuantKey stay fast
  QuantKey asym = kFp8Dynamic128Sym;
  asym.symmetric = false;
  EXPECT_EQ(set.count(asym), 0u);
}

TEST(QuantKey, PrintedFormsAreStable) {
  EXPECT_EQ(kFp8Dynamic128Sym.str(),
            "QuantKey(fp8e4m3, scale(f32, dynamic, group 1x128), symmetric)");
  EXPECT_EQ(kFp8Dynamic64Sym.str(),
            "QuantKey(fp8e4m3, scale(f32, dynamic, group 1x64), symmetric)");
  EXPECT_EQ(kFp8StaticTensorSym.str(),
            "QuantKey(fp8e4m3, scale(f32, static, per-tensor), symmetric)");
  EXPECT_EQ(kFp8DynamicTokenSym.str(),
            "QuantKey(fp8e4m3, scale(f32, dynamic, per-token), symmetric)");
  EXPECT_EQ(kNvfp4Dynamic.str(),
            "QuantKey(fp4e2m1x2, scale(fp8e4m3, dynamic, group 1x16), "
            "scale2=scale(f32, static, per-tensor), symmetric)");
  EXPECT_EQ(scale_desc_str(ScaleDesc{DType::kF32, true, GroupShape::per_channel()}),
            "scale(f32, static, per-channel)");
  QuantKey a = kFp8DynamicTensorSym;
  a.symmetric = false;
  EXPECT_EQ(a.str(), "QuantKey(fp8e4m3, scale(f32, dynamic, per-tensor), asymmetric)");
}

// ---- detect_output_quant_key: one test per branch, one per error ----------------------------

TEST(DetectOutputQuantKey, NeitherScaleMeansNoQuantization) {
  EXPECT_FALSE(detect_output_quant_key(DType::kBF16, false, std::nullopt, 16384).has_value());
  // The output dtype does not matter when nothing asks for quantization (SPEC 3.4, first rule).
  EXPECT_FALSE(detect_output_quant_key(DType::kFp8E4M3, false, std::nullopt, 16384).has_value());
}

TEST(DetectOutputQuantKey, BlockScaleWithFp8OutputIsGroupFp8) {
  EXPECT_EQ(detect_output_quant_key(DType::kFp8E4M3, false, 128, 16384), kFp8Dynamic128Sym);
  EXPECT_EQ(detect_output_quant_key(DType::kFp8E4M3, false, 256, 16384), kFp8Dynamic64Sym);
  EXPECT_EQ(detect_output_quant_key(DType::kFp8E4M3, false, 1, 128), kFp8Dynamic128Sym);
  EXPECT_EQ(detect_output_quant_key(DType::kFp8E4M3, false, 32, 2048), kFp8Dynamic64Sym);
}

TEST(DetectOutputQuantKey, GroupFp8WithAStaticScaleIsAnError) {
  const std::string e =
      error_of([] { detect_output_quant_key(DType::kFp8E4M3, true, 128, 16384); });
  EXPECT_CONTAINS(e, "output_scale must be absent");
}

TEST(DetectOutputQuantKey, UnsupportedGroupSizeNamesGroupOutputDimAndCount) {
  // 16384 / 512 = 32: a whole group size, but not one the fused op has.
  const std::string e =
      error_of([] { detect_output_quant_key(DType::kFp8E4M3, false, 512, 16384); });
  EXPECT_CONTAINS(e, "group size 32");
  EXPECT_CONTAINS(e, "output_dim 16384");
  EXPECT_CONTAINS(e, "512 groups");
  const std::string big =
      error_of([] { detect_output_quant_key(DType::kFp8E4M3, false, 64, 16384); });
  EXPECT_CONTAINS(big, "group size 256");
}

TEST(DetectOutputQuantKey, GroupCountNotDividingOutputDimIsAnError) {
  const std::string e = error_of([] { detect_output_quant_key(DType::kFp8E4M3, false, 3, 16384); });
  EXPECT_CONTAINS(e, "output_dim 16384");
  EXPECT_CONTAINS(e, "group count 3");
}

TEST(DetectOutputQuantKey, NonPositiveGroupCountIsAnError) {
  for (int64_t groups : {0, -4}) {
    const std::string e =
        error_of([=] { detect_output_quant_key(DType::kFp8E4M3, false, groups, 16384); });
    EXPECT_CONTAINS(e, std::to_string(groups) + " groups");
    EXPECT_CONTAINS(e, "positive");
  }
}

TEST(DetectOutputQuantKey, BlockScaleWithFp4OutputAndGlobalScaleIsNvfp4) {
  EXPECT_EQ(detect_output_quant_key(DType::kFp4E2M1x2, true, 1024, 16384), kNvfp4Dynamic);
  // fp4e2m1x2 tensors may arrive as u8 (docs/ops.md).
  EXPECT_EQ(detect_output_quant_key(DType::kU8, true, 1024, 16384), kNvfp4Dynamic);
}

TEST(DetectOutputQuantKey, Nvfp4WithoutGlobalScaleIsAnError) {
  const std::string e =
      error_of([] { detect_output_quant_key(DType::kFp4E2M1x2, false, 1024, 16384); });
  EXPECT_CONTAINS(e, "output_scale is missing");
  EXPECT_CONTAINS(e, "fp4e2m1x2");
}

TEST(DetectOutputQuantKey, BlockScaleWithAnUnquantizedOutputIsAnError) {
  // SPEC 3.4 reads "not fp8 -> NVFP4"; a bf16 output with scales is a caller bug, not NVFP4.
  const std::string e = error_of([] { detect_output_quant_key(DType::kBF16, true, 1024, 16384); });
  EXPECT_CONTAINS(e, "bf16");
  EXPECT_CONTAINS(e, "expected fp8e4m3 (group FP8) or fp4e2m1x2 (NVFP4)");
  const std::string f = error_of([] { detect_output_quant_key(DType::kF32, false, 1024, 16384); });
  EXPECT_CONTAINS(f, "output_scale is missing");
}

TEST(DetectOutputQuantKey, OnlyOutputScaleIsStaticFp8) {
  EXPECT_EQ(detect_output_quant_key(DType::kFp8E4M3, true, std::nullopt, 16384),
            kFp8StaticTensorSym);
}

TEST(DetectOutputQuantKey, StaticScaleWithANonFp8OutputIsAnError) {
  for (DType d : {DType::kBF16, DType::kFp4E2M1x2, DType::kF32}) {
    const std::string e = error_of([=] { detect_output_quant_key(d, true, std::nullopt, 16384); });
    EXPECT_CONTAINS(e, std::string("output_scale given with a ") + std::string(dtype_name(d)));
    EXPECT_CONTAINS(e, "expects fp8e4m3");
  }
}

}  // namespace
}  // namespace mlafuse
