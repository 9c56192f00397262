// GPU tests of the paged latent-cache write (SPEC 4) against the CPU reference backend: the whole
// cache compared byte for byte after the write (so rows of skipped, padded or other tokens stay
// as they were), sentinels around every buffer, n < T_pad read from device memory, strided
// kv_c_normed / k_pe rows (slices of a wider projection output, as engines pass them), and bad
// arguments rejected with errors.
#include <gtest/gtest.h>

#include <algorithm>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "gpu/common/gpu_harness.h"
#include "mlafuse/backends/cpu/cpu_backend.h"
#include "mlafuse/backends/cuda/cuda_backend.h"
#include "mlafuse/quant/codecs.h"

namespace mlafuse {
namespace {

using gpu_test::OpCase;
using gpu_test::TensorSpec;

constexpr int64_t kL = 512, kR = 64, kPage = 64;

Tensor random_bf16(std::vector<int64_t> shape, uint64_t seed) {
  Tensor t = Tensor::empty(DType::kBF16, std::move(shape));
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  for (int64_t i = 0; i < t.numel(); ++i) t.data<uint16_t>()[i] = f32_to_bf16_bits(normal(rng));
  return t;
}

// T_pad tokens, n real; slots: a random permutation of the cache's slots, some tokens -1.
struct CacheCase {
  AttentionMetadata meta;
  OpCase op;
};

CacheCase make_case(int64_t t_pad, int64_t n, uint64_t seed) {
  CacheCase cc;
  const int64_t pages = (t_pad + kPage - 1) / kPage + 3;
  std::mt19937_64 rng(seed);
  std::vector<int32_t> slots(static_cast<size_t>(pages * kPage));
  std::iota(slots.begin(), slots.end(), 0);
  std::shuffle(slots.begin(), slots.end(), rng);
  slots.resize(static_cast<size_t>(t_pad));
  for (int64_t t = 0; t < t_pad; ++t) {
    if (rng() % 7 == 0 || t >= n) slots[static_cast<size_t>(t)] = -1;
  }
  // Padded tokens may also carry valid-looking slots: the kernel must still skip them (t >= n).
  if (t_pad > n) slots[static_cast<size_t>(t_pad - 1)] = 5;
  cc.meta.page_size = kPage;
  cc.meta.slot_mapping = gpu_test::i32_tensor(slots);
  cc.op.op = "cache_write";
  cc.op.inputs = {random_bf16({t_pad, kL}, seed + 1), random_bf16({t_pad, 1, kR}, seed + 2),
                  random_bf16({pages, kPage, kL + kR}, seed + 3)};
  cc.op.outputs = {TensorSpec::contiguous(DType::kBF16, {pages, kPage, kL + kR})};
  cc.op.alias = {2};
  cc.op.n = n;
  cc.op.t_pad = t_pad;
  return cc;
}

class CacheWrite : public ::testing::Test {
 protected:
  void SetUp() override {
    MLAFUSE_SKIP_WITHOUT_GPU();
    cpu_ = make_cpu_backend();
    cuda_ = make_cuda_backend();
  }
  std::unique_ptr<Backend> cpu_, cuda_;
};

TEST_F(CacheWrite, MatchesReference) {
  uint64_t seed = 1;
  for (int64_t t : gpu_test::token_counts()) {
    SCOPED_TRACE("T=" + std::to_string(t));
    CacheCase cc = make_case(t, t, seed += 10);
    cc.op.meta = &cc.meta;
    gpu_test::expect_backends_bitwise_equal(*cpu_, *cuda_, cc.op, false);
    if (t > 1) {
      CacheCase pc = make_case(t, t - 1 - t / 4, seed += 10);
      pc.op.meta = &pc.meta;
      pc.op.n_on_device = true;
      gpu_test::expect_backends_bitwise_equal(*cpu_, *cuda_, pc.op, false);
    }
  }
}

// kv_c_normed and k_pe as row slices of wider buffers (row strides 576 and 128 elements).
TEST_F(CacheWrite, StridedRows) {
  const int64_t t_pad = 100, n = 90;
  CacheCase cc = make_case(t_pad, n, 77);
  cc.op.meta = &cc.meta;
  const gpu_test::Outputs ref = gpu_test::run_reference(*cpu_, cc.op, 0);

  Tensor wide_c = random_bf16({t_pad, kL + kR}, 5);
  Tensor wide_pe = random_bf16({t_pad, 1, 2 * kR}, 6);
  for (int64_t t = 0; t < t_pad; ++t) {  // the same values as the contiguous inputs
    std::copy_n(cc.op.inputs[0].data<uint16_t>() + t * kL, kL,
                wide_c.data<uint16_t>() + t * (kL + kR));
    std::copy_n(cc.op.inputs[1].data<uint16_t>() + t * kR, kR,
                wide_pe.data<uint16_t>() + t * 2 * kR);
  }
  gpu_test::GuardedBuffer c_buf(TensorSpec::contiguous(DType::kBF16, {t_pad, kL + kR}));
  gpu_test::GuardedBuffer pe_buf(TensorSpec::contiguous(DType::kBF16, {t_pad, 1, 2 * kR}));
  gpu_test::GuardedBuffer cache(cc.op.outputs[0]);
  gpu_test::GuardedBuffer slots(TensorSpec::contiguous(DType::kI32, {t_pad}));
  c_buf.upload(wide_c);
  pe_buf.upload(wide_pe);
  cache.upload(cc.op.inputs[2]);
  slots.upload(cc.meta.slot_mapping);
  AttentionMetadata dmeta = cc.meta;
  dmeta.slot_mapping = slots.tensor();
  std::vector<Tensor> ins = {c_buf.tensor().view(DType::kBF16, {t_pad, kL}, {kL + kR, 1}),
                             pe_buf.tensor().view(DType::kBF16, {t_pad, 1, kR}, {2 * kR, kR, 1}),
                             cache.tensor()};
  std::vector<Tensor> outs = {cache.tensor()};
  RunContext ctx;
  ctx.host_meta = &cc.meta;
  ctx.device_meta = &dmeta;
  ctx.num_tokens = n;
  cuda_->run(OpCall{"cache_write", cc.op.attrs, ins, outs}, ctx);
  cuda_->synchronize();
  EXPECT_TRUE(gpu_test::bitwise_equal(ref[0], cache.download(), "kv_cache"));
  EXPECT_EQ(cache.guard_damage(), "");
}

void expect_rejected(Backend& cuda, const OpCase& c, const std::string& needle) {
  try {
    gpu_test::run_cuda(cuda, c, 0xff);
    ADD_FAILURE() << "expected an error mentioning '" << needle << "'";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos)
        << "message: " << e.what() << "\nexpected it to mention: " << needle;
  }
}

TEST_F(CacheWrite, RejectsBadArguments) {
  {
    CacheCase cc = make_case(16, 16, 1);
    cc.meta.slot_mapping.data<int32_t>()[3] = 1 << 20;
    cc.op.meta = &cc.meta;
    expect_rejected(*cuda_, cc.op, "slot_mapping[3]");
  }
  {
    CacheCase cc = make_case(16, 16, 1);
    cc.op.inputs[1] = random_bf16({16, 1, 32}, 2);
    cc.op.meta = &cc.meta;
    expect_rejected(*cuda_, cc.op, "tensor kv_cache");
  }
  {
    CacheCase cc = make_case(16, 16, 1);
    cc.op.inputs[0] = random_bf16({15, kL}, 2);
    cc.op.meta = &cc.meta;
    expect_rejected(*cuda_, cc.op, "tensor k_pe");
  }
  {
    CacheCase cc = make_case(16, 16, 1);
    cc.op.alias = {-1};  // a separate output buffer instead of the cache itself
    cc.op.meta = &cc.meta;
    expect_rejected(*cuda_, cc.op, "in place");
  }
  {
    CacheCase cc = make_case(16, 16, 1);
    cc.meta.page_size = 32;
    cc.op.meta = &cc.meta;
    expect_rejected(*cuda_, cc.op, "page_size");
  }
  {
    CacheCase cc = make_case(16, 16, 1);
    expect_rejected(*cuda_, cc.op, "device_meta");  // no metadata at all
  }
}

}  // namespace
}  // namespace mlafuse
