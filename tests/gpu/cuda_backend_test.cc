// Tests of the CUDA Backend class itself: construction and capability queries without a GPU (these
// run on machines with no GPU, CI included), device memory, copies in every direction, CUDA-graph
// capture and replay, event timing, and the errors for unknown ops and misuse.
#include "mlafuse/backends/cuda/cuda_backend.h"

#include <gtest/gtest.h>

#include <cstring>
#include <string>
#include <vector>

#include "backends/cuda/device_context.h"
#include "gpu/common/gpu_harness.h"
#include "mlafuse/backends/cuda/cuda_check.h"
#include "mlafuse/quant/codecs.h"

namespace mlafuse {
namespace {

FusedQuantRequest request(OutputFormat format) {
  FusedQuantRequest r;
  r.quant = OutputQuant::make(format, /*col_major=*/true, /*tma_aligned=*/true);
  r.num_heads = 128;
  r.v_head_dim = 128;
  return r;
}

TEST(CudaBackendWithoutGpu, ConstructsAndAnswersCapabilityQueries) {
  std::string reason;
  if (cuda::device_available(&reason)) GTEST_SKIP() << "a GPU is present: tested by the others";
  std::unique_ptr<Backend> b = make_cuda_backend();
  ASSERT_NE(b, nullptr);
  EXPECT_EQ(b->name(), "cuda");
  EXPECT_EQ(b->device(), Device::kCuda);
  EXPECT_TRUE(b->supports_op("quant_fp8_group"));
  EXPECT_TRUE(b->supports_op("mla_attention"));
  EXPECT_FALSE(b->supports_op("softmax"));
  EXPECT_EQ(b->fused_output_quant_supported(request(OutputFormat::kFp8Group128)),
            cuda::mla_fused_quant_supported(request(OutputFormat::kFp8Group128)));
  try {
    b->allocate(DType::kF32, {4}, {1}, 4);
    ADD_FAILURE() << "allocate without a GPU did not throw";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("no CUDA device"), std::string::npos) << e.what();
  }
}

class CudaBackend : public ::testing::Test {
 protected:
  void SetUp() override {
    MLAFUSE_SKIP_WITHOUT_GPU();
    b_ = make_cuda_backend();
  }
  std::unique_ptr<Backend> b_;
};

TEST_F(CudaBackend, AllocateAndCopyEveryDirection) {
  Tensor host = gpu_test::random_activations(DType::kF32, 33, 65, 7);
  Tensor d1 = b_->allocate(DType::kF32, {33, 65}, {65, 1}, 33 * 65);
  Tensor d2 = b_->allocate(DType::kF32, {33, 65}, {65, 1}, 33 * 65);
  EXPECT_EQ(d1.device(), Device::kCuda);
  EXPECT_EQ(d1.storage()->bytes, size_t{33 * 65 * 4});
  b_->copy(host, d1);  // h2d
  b_->copy(d1, d2);    // d2d
  Tensor back = Tensor::empty(DType::kF32, {33, 65});
  b_->copy(d2, back);  // d2h
  EXPECT_EQ(std::memcmp(host.raw(), back.raw(), host.storage()->bytes), 0);
  // Padded layouts: the storage, not the view, is what moves.
  Tensor padded = b_->allocate(DType::kF32, {5, 2}, {1, 8}, 16);
  EXPECT_EQ(padded.storage()->bytes, size_t{64});
  Tensor small = Tensor::empty(DType::kF32, {3});
  try {
    b_->copy(small, d1);
    ADD_FAILURE() << "copy between storages of different sizes did not throw";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("differ in size"), std::string::npos) << e.what();
  }
}

TEST_F(CudaBackend, UnknownOpIsAnError) {
  AttrMap attrs;
  std::vector<Tensor> none;
  try {
    b_->run(OpCall{"softmax", attrs, none, none}, RunContext{});
    ADD_FAILURE() << "unknown op accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("no op 'softmax'"), std::string::npos) << e.what();
  }
}

// A static-quant op captured once and replayed: the graph sees new input values at the same
// addresses, and time_us measures something positive.
TEST_F(CudaBackend, CaptureReplayAndTiming) {
  const int64_t t = 64, d = 2048;
  Tensor x_host = gpu_test::random_activations(DType::kBF16, t, d, 3);
  Tensor x = b_->allocate(DType::kBF16, {t, d}, {d, 1}, t * d);
  Tensor scale = b_->allocate(DType::kF32, {1}, {1}, 1);
  Tensor q = b_->allocate(DType::kFp8E4M3, {t, d}, {d, 1}, t * d);
  b_->copy(x_host, x);
  b_->copy(gpu_test::scalar_f32(0.5f), scale);
  AttrMap attrs;
  std::vector<Tensor> ins = {x, scale};
  std::vector<Tensor> outs = {q};
  RunContext ctx;
  ctx.num_tokens = t;
  auto body = [&] { b_->run(OpCall{"quant_fp8_static", attrs, ins, outs}, ctx); };
  std::unique_ptr<CapturedWork> graph = b_->capture(body);
  ASSERT_NE(graph, nullptr);
  for (float s : {0.5f, 2.0f}) {
    b_->copy(gpu_test::scalar_f32(s), scale);
    graph->replay();
    b_->synchronize();
    Tensor q_host = Tensor::empty(DType::kFp8E4M3, {t, d});
    b_->copy(q, q_host);
    for (int64_t i = 0; i < t * d; i += 97) {
      const float v = bf16_bits_to_f32(x_host.data<uint16_t>()[i]);
      float r = v * (1.0f / s);
      r = r > 448.0f ? 448.0f : (r < -448.0f ? -448.0f : r);
      ASSERT_EQ(q_host.data<uint8_t>()[i], f32_to_e4m3(r)) << "element " << i << " scale " << s;
    }
  }
  const double us = b_->time_us([&] { graph->replay(); }, 20, 3);
  EXPECT_GT(us, 0.0);
  EXPECT_LT(us, 1e5);
  // A failure inside the captured body leaves the backend usable.
  std::vector<Tensor> bad = {q};
  EXPECT_THROW(b_->capture([&] {
    b_->run(OpCall{"quant_fp8_static", attrs, bad, outs}, ctx);
  }),
               Error);
  body();
  b_->synchronize();
}

}  // namespace
}  // namespace mlafuse
