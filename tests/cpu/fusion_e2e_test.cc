// Fusion end to end: for every quantization the fusion pass folds into the attention, the
// executed fused graph writes the same codes and scales as the executed unfused graph, bit for
// bit, and its o_proj output is within a stated tolerance of the f32 end-to-end reference.
#include <gtest/gtest.h>

#include <string>

#include "mlafuse/app/mla_job.h"
#include "mlafuse/backends/cpu/cpu_backend.h"
#include "mlafuse/core/error.h"
#include "wrapped_cpu_backend.h"

namespace mlafuse::app {
namespace {

// DeepSeek-V3 head dims with 16 heads (a TP-8 shard) and a small hidden size, so all 18 variants
// run in a few seconds on the CPU reference.
MlaConfig e2e_config() {
  MlaConfig c;
  c.num_heads = 16;
  c.hidden = 512;
  return c;
}

MlaJobOptions e2e_options(OutputQuant q, int64_t layers = 1) {
  MlaJobOptions o;
  o.config = e2e_config();
  o.num_layers = layers;
  o.batch.decode_lens = {1, 65, 200};
  o.batch.prefills = {{16, 20}};
  o.batch.seed = 17;
  o.quant = q;
  return o;
}

struct Variant {
  std::string name;
  OutputQuant quant;
  // Tolerance of max|y - y_ref| / max|y_ref| (the f32 reference has no activation quantization).
  // Rounding to e4m3 (3 mantissa bits) leaves a relative error of ~2.5% RMS per element; summed
  // over the K = H*V products of o_proj, y's error is about that fraction of y's own scale, so
  // the measured values are ~0.03 for FP8 (a little more with ue8m0's power-of-two scales, which
  // waste up to one bit of range) and ~0.12 for NVFP4 (e2m1: 1 mantissa bit). Tolerances are
  // 1.5x the measured values for this seed.
  double tolerance;
};

// gtest names each test after its parameter (ctest shows "# GetParam() = ..."): the variant's
// name, not its raw bytes.
void PrintTo(const Variant& v, std::ostream* os) { *os << v.name; }

std::vector<Variant> all_variants() {
  std::vector<Variant> v;
  for (const OutputQuant& q : all_output_quants()) {
    if (!q.quantized()) continue;
    std::string name = q.str();  // "fp8-group128 col_major ue8m0" -> "fp8_group128_col_major_ue8m0"
    for (char& c : name) c = c == '-' || c == ' ' ? '_' : c;
    const double tolerance = q.format == OutputFormat::kNvfp4 ? 0.18 : (q.ue8m0 ? 0.053 : 0.045);
    v.push_back({name, q, tolerance});
  }
  return v;
}

class FusionE2e : public ::testing::TestWithParam<Variant> {};

TEST_P(FusionE2e, FusedEqualsUnfusedBitwiseAndMatchesTheF32Reference) {
  const Variant& v = GetParam();
  auto backend = make_cpu_backend();
  const MlaJobReport r = run_mla_job(*backend, e2e_options(v.quant));
  // The pass fused the one layer, with the pattern of this variant.
  ASSERT_EQ(r.fusion.size(), 2u);
  EXPECT_EQ(r.fusion[0].pass, "mla-attn-quant-fusion");
  EXPECT_EQ(r.fusion[0].matches, 1);
  EXPECT_EQ(r.ops_fused.at("mla_attention"), 1);
  EXPECT_EQ(r.ops_unfused.size(), 3u);
  EXPECT_EQ(r.ops_fused.size(), 2u);
  EXPECT_EQ(r.num_tokens, 3 + 16);
  ASSERT_EQ(r.layers.size(), 1u);
  const LayerReport& l = r.layers[0];
  EXPECT_TRUE(l.codes_equal) << l.mismatch;
  EXPECT_TRUE(l.scales_equal) << l.mismatch;
  EXPECT_TRUE(r.bitwise_equal);
  EXPECT_TRUE(l.y_equal);
  EXPECT_TRUE(l.mismatch.empty()) << l.mismatch;
  // Accuracy against the f32 end-to-end reference: within the tolerance, and not zero (the
  // activations really were quantized).
  EXPECT_GT(l.ref_max_abs, 0.05);
  EXPECT_LT(l.max_rel_err, v.tolerance) << "max abs err " << l.max_abs_err;
  EXPECT_GT(l.max_rel_err, 1e-4);
  EXPECT_EQ(l.max_rel_err, l.unfused_max_rel_err);
  EXPECT_EQ(r.o_proj_max_rel_err, l.max_rel_err);
  // Calibrated static scales.
  if (v.quant.format == OutputFormat::kFp8Static) {
    EXPECT_FLOAT_EQ(l.input_scale, l.amax / 448.0);
  } else if (v.quant.format == OutputFormat::kNvfp4) {
    EXPECT_FLOAT_EQ(l.global_scale, 448.0 * 6.0 / l.amax);
  }
  // Each graph's nodes were timed.
  EXPECT_EQ(r.unfused.nodes.size(), 3u);
  EXPECT_EQ(r.fused.nodes.size(), 2u);
}

INSTANTIATE_TEST_SUITE_P(AllKeysAndFlags, FusionE2e, ::testing::ValuesIn(all_variants()),
                         [](const auto& info) { return info.param.name; });

TEST(FusionE2eMultiLayer, EveryLayerFusedAndEqual) {
  const OutputQuant q = OutputQuant::make(OutputFormat::kFp8Group64, /*col_major=*/true,
                                          /*tma_aligned=*/true);
  auto backend = make_cpu_backend();
  const MlaJobReport r = run_mla_job(*backend, e2e_options(q, 3));
  EXPECT_EQ(r.fusion[0].matches, 3);
  ASSERT_EQ(r.layers.size(), 3u);
  for (const LayerReport& l : r.layers) {
    EXPECT_TRUE(l.codes_equal && l.scales_equal) << "layer " << l.layer << ": " << l.mismatch;
    EXPECT_LT(l.max_rel_err, 0.045);
  }
  EXPECT_TRUE(r.bitwise_equal);
  // Layers have their own weights and inputs.
  EXPECT_NE(r.layers[0].ref_max_abs, r.layers[1].ref_max_abs);
}

// The comparison's negative twin: a backend whose fused attention flips one bit of one code (or
// one scale) must be reported as different, naming the tensor.
class OneBitOffBackend : public testing::WrappedCpuBackend {
 public:
  explicit OneBitOffBackend(int output) : WrappedCpuBackend("cpu-one-bit-off"), output_(output) {}
  void run(const OpCall& call, const RunContext& ctx) override {
    WrappedCpuBackend::run(call, ctx);
    if (call.op == "mla_attention" && call.attrs.has("quant_group_size")) {
      static_cast<uint8_t*>(call.outputs[static_cast<size_t>(output_)].raw())[0] ^= 1;
    }
  }

 private:
  int output_;
};

TEST(FusionE2eNegative, AFlippedCodeOrScaleBitIsReported) {
  const OutputQuant q = OutputQuant::make(OutputFormat::kFp8Group128, /*col_major=*/true);
  for (int output : {0, 2}) {  // out (codes), output_block_scale (scales)
    OneBitOffBackend backend(output);
    const MlaJobReport r = run_mla_job(backend, e2e_options(q));
    EXPECT_FALSE(r.bitwise_equal);
    const LayerReport& l = r.layers[0];
    EXPECT_EQ(l.codes_equal, output != 0);
    EXPECT_EQ(l.scales_equal, output != 2);
    EXPECT_NE(l.mismatch.find(output == 0 ? "layers.0.xq[0, 0]" : "layers.0.xs token 0 group 0"),
              std::string::npos)
        << l.mismatch;
  }
}

TEST(FusionE2eNegative, BadOptionsAreNamed) {
  auto backend = make_cpu_backend();
  MlaJobOptions o = e2e_options(OutputQuant{});  // kBf16: nothing to fuse
  EXPECT_THROW(run_mla_job(*backend, o), Error);
  o = e2e_options(all_variants()[2].quant);
  o.num_layers = 0;
  EXPECT_THROW(run_mla_job(*backend, o), Error);
  o = e2e_options(all_variants()[2].quant);
  o.batch.decode_lens = {0};
  try {
    run_mla_job(*backend, o);
    FAIL() << "no throw";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("decode sequence 0"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace mlafuse::app
