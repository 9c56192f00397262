// GPU tests of the expanded-form MLA prefill (mla_prefill.h): context gather out of the paged
// cache, kv_b_proj up-projection (bf16, or the checkpoint's block FP8), causal flash attention
// with the quantized-output epilogue, against the CPU reference `ref::mla_prefill_expanded` (given
// the same block-FP8 weight: cuBLASLt's accumulation order differs from the reference's, so the
// float comparison's tolerance covers it).
//
// Float output: normalized error ||out - ref|| / ||ref|| <= 1e-2 per checked (token, head) row.
// The reference costs O(context x 256 x 512) a head, so it is evaluated on windows of rows (the
// first, middle and last query rows of every sequence) for three heads of each sequence; every
// other real row is checked for NaN, and rows past the real tokens must be untouched.
// Quantized outputs: codes and scales bit-exact against the CPU reference quantizer applied to
// the kernel's own bf16 output, over the whole buffers.
// Cache slots nobody owns hold NaN, padded query rows hold NaN, outputs are poisoned (0xff bytes)
// before every run, the workspace is NaN-filled.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <numeric>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "backends/cuda/device_context.h"
#include "backends/cuda/mla_decode.h"
#include "backends/cuda/mla_prefill.h"
#include "gpu/common/gpu_harness.h"
#include "gpu/common/mla_output_check.h"
#include "mlafuse/backends/cpu/reference.h"
#include "mlafuse/mla/block_fp8_weight.h"
#include "mlafuse/backends/cuda/cuda_check.h"
#include "mlafuse/quant/codecs.h"
#include "mlafuse/quant/scale_layout.h"

namespace mlafuse {
namespace {

using cuda::MlaEpilogue;
using cuda::MlaOutputParams;
using gpu_test::all_variants;
using gpu_test::check_quant_variant;
using gpu_test::DevBuf;
using gpu_test::expect_untouched;
using gpu_test::host_tensor;
using gpu_test::QuantVariant;

constexpr int kL = 512, kRow = 576, kQ = 192, kV = 128, kKv = 256;
constexpr uint16_t kBf16NaN = 0x7fc0;
constexpr double kFloatTol = 1e-2;

uint16_t bf16(float f) { return f32_to_bf16_bits(f); }

// MLAFUSE_GPU_TEST_SMALL (set by bench/device.sh under compute-sanitizer): short prompts only.
bool small_mode() { return gpu_test::small_shapes(); }

// A prefill-only batch: sequence s has ctx[s] cached tokens and q_lens[s] new ones.
struct Batch {
  int heads = 16;
  std::vector<int> q_lens;
  std::vector<int> ctx;
  int pad = 5;  // padded token rows after the real ones
  int page_size = 64;
  uint32_t seed = 1;
  bool fp8_weight = false;  // kv_b_proj as the checkpoint stores it: block FP8
};

struct HostProblem {
  int heads = 0, n = 0, t_pad = 0, num_seqs = 0, num_pages = 0, bt_stride = 0, page_size = 0;
  int max_q_len = 0, max_seq_len = 0;
  int64_t total_kv = 0;
  float scale = 0.0f;
  std::vector<int32_t> seq_lens, qsl, block_table;
  std::vector<uint16_t> cache, q, kv_b_proj;
  // With Batch::fp8_weight: codes [H*256, 512] and one scale per 128x128 block [H*2, 4]
  // (kv_b_proj then holds their dequantized value, which the chain does not read).
  std::vector<uint8_t> wq;
  std::vector<float> ws;
};

HostProblem make_problem(const Batch& b) {
  HostProblem h;
  std::mt19937 rng(b.seed);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  std::uniform_real_distribution<float> uw(-0.1f, 0.1f);
  h.heads = b.heads;
  h.page_size = b.page_size;
  h.num_seqs = static_cast<int>(b.q_lens.size());
  h.scale = 1.0f / std::sqrt(static_cast<float>(kQ));
  h.qsl.push_back(0);
  int max_pages = 1, total_pages = 0;
  for (int s = 0; s < h.num_seqs; ++s) {
    const int len = b.ctx[s] + b.q_lens[s];
    h.seq_lens.push_back(len);
    h.qsl.push_back(h.qsl.back() + b.q_lens[s]);
    h.max_q_len = std::max(h.max_q_len, b.q_lens[s]);
    h.max_seq_len = std::max(h.max_seq_len, len);
    h.total_kv += len;
    const int pages = (len + b.page_size - 1) / b.page_size;
    max_pages = std::max(max_pages, pages);
    total_pages += pages;
  }
  h.n = h.qsl.back();
  h.t_pad = h.n + b.pad;
  h.num_pages = total_pages + 3;  // three pages nobody owns (NaN)
  h.bt_stride = max_pages + 2;
  std::vector<int32_t> pool(h.num_pages);
  std::iota(pool.begin(), pool.end(), 0);
  std::shuffle(pool.begin(), pool.end(), rng);
  // Unused block-table slots hold huge page ids: reading one would fault or fail the check.
  h.block_table.assign(static_cast<size_t>(h.num_seqs) * h.bt_stride, 1 << 28);
  h.cache.assign(static_cast<size_t>(h.num_pages) * h.page_size * kRow, kBf16NaN);
  int next = 0;
  for (int s = 0; s < h.num_seqs; ++s) {
    const int len = h.seq_lens[s];
    for (int pg = 0; pg < (len + h.page_size - 1) / h.page_size; ++pg) {
      const int page = pool[next++];
      h.block_table[static_cast<size_t>(s) * h.bt_stride + pg] = page;
      for (int r = 0; r < h.page_size && pg * h.page_size + r < len; ++r)
        for (int c = 0; c < kRow; ++c)
          h.cache[(static_cast<size_t>(page) * h.page_size + r) * kRow + c] = bf16(u(rng));
    }
  }
  h.q.assign(static_cast<size_t>(h.t_pad) * h.heads * kQ, kBf16NaN);  // padded rows stay NaN
  for (size_t i = 0; i < static_cast<size_t>(h.n) * h.heads * kQ; ++i) h.q[i] = bf16(u(rng));
  h.kv_b_proj.resize(static_cast<size_t>(h.heads) * kKv * kL);
  if (!b.fp8_weight) {
    for (auto& w : h.kv_b_proj) w = bf16(uw(rng));
    return h;
  }
  // Block scales that differ across blocks; dequantized values within +-0.15.
  const int n = h.heads * kKv;
  h.wq.resize(h.kv_b_proj.size());
  h.ws.resize(static_cast<size_t>(n / 128) * (kL / 128));
  for (int bi = 0; bi < n / 128; ++bi) {
    for (int bk = 0; bk < kL / 128; ++bk) {
      const float sc = 0.1f / 448.0f * (1.0f + 0.25f * static_cast<float>((bi + 2 * bk) % 3));
      h.ws[static_cast<size_t>(bi) * (kL / 128) + bk] = sc;
      for (int r = 0; r < 128; ++r)
        for (int c = 0; c < 128; ++c) {
          const size_t i = static_cast<size_t>(bi * 128 + r) * kL + bk * 128 + c;
          h.wq[i] = f32_to_e4m3(u(rng) * 448.0f);
          h.kv_b_proj[i] = bf16(e4m3_to_f32(h.wq[i]) * sc);
        }
    }
  }
  return h;
}

struct DeviceProblem {
  DevBuf seq_lens, qsl, bt, cache, q, kv_b_proj, wq, wscale, ws;
  cuda::MlaPrefillBatch b;
  cuda::DeviceContext dc;  // cuBLAS and cuBLASLt handles, SM count
  explicit DeviceProblem(const HostProblem& h)
      : seq_lens(h.seq_lens.size() * 4),
        qsl(h.qsl.size() * 4),
        bt(h.block_table.size() * 4),
        cache(h.cache.size() * 2),
        q(h.q.size() * 2),
        kv_b_proj(h.kv_b_proj.size() * 2),
        wq(h.wq.size()),
        wscale(h.ws.size() * 4),
        ws(cuda::mla_prefill_workspace_bytes(h.total_kv, h.num_seqs, h.heads, !h.wq.empty())) {
    seq_lens.upload(h.seq_lens.data());
    qsl.upload(h.qsl.data());
    bt.upload(h.block_table.data());
    cache.upload(h.cache.data());
    q.upload(h.q.data());
    kv_b_proj.upload(h.kv_b_proj.data());
    if (!h.wq.empty()) {
      wq.upload(h.wq.data());
      wscale.upload(h.ws.data());
      b.kv_b_proj_fp8 = wq.p;
      b.kv_b_proj_scale = wscale.as<float>();
    }
    ws.poison();  // NaN bytes: stale scratch must not matter
    MLAFUSE_CUDA_CHECK(cudaGetDevice(&dc.device));
    MLAFUSE_CUDA_CHECK(
        cudaDeviceGetAttribute(&dc.num_sms, cudaDevAttrMultiProcessorCount, dc.device));
    MLAFUSE_CUBLAS_CHECK(cublasCreate(&dc.cublas));
    MLAFUSE_CUBLAS_CHECK(cublasLtCreate(&dc.cublaslt));
    b.num_heads = h.heads;
    b.num_seqs = h.num_seqs;
    b.max_q_len = h.max_q_len;
    b.max_seq_len = h.max_seq_len;
    b.total_kv = h.total_kv;
    b.q_rows = h.t_pad;
    b.out_rows = h.t_pad;
    b.softmax_scale = h.scale;
    b.seq_lens = seq_lens.as<int32_t>();
    b.q_start = qsl.as<int32_t>();
    b.block_table = bt.as<int32_t>();
    b.block_table_stride = h.bt_stride;
    b.num_pages = h.num_pages;
    b.page_size = h.page_size;
    b.kv_cache = cache.as<__nv_bfloat16>();
    b.q = q.as<__nv_bfloat16>();
    // With the block-FP8 weight the chain must not read this: a NaN copy would show it did.
    if (!h.wq.empty()) kv_b_proj.poison();
    b.kv_b_proj = kv_b_proj.as<__nv_bfloat16>();
  }
  ~DeviceProblem() {
    cublasDestroy(dc.cublas);
    cublasLtDestroy(dc.cublaslt);
    if (dc.workspace != nullptr) cudaFree(dc.workspace);
  }
  void run(const MlaOutputParams& out, int n) {
    cuda::launch_mla_prefill(b, ws.p, dc, out, nullptr);
    cuda::launch_mla_prefill_nvfp4_pad(out, b.out_rows, b.num_heads, n, nullptr);
    MLAFUSE_CUDA_CHECK(cudaGetLastError());
    MLAFUSE_CUDA_CHECK(cudaDeviceSynchronize());
  }
};

// The reference inputs shared by every window of one problem.
struct RefInputs {
  Tensor cache, block_table;
  explicit RefInputs(const HostProblem& h)
      : cache(host_tensor(DType::kBF16, {h.num_pages, h.page_size, kRow}, h.cache.data())),
        block_table(host_tensor(DType::kI32, {h.num_seqs, h.bt_stride}, h.block_table.data())) {}
};

// The reference for query rows [r0, r1) of sequence s, head hh: the sequence cut after its
// (r1-1)-th new token (so the window is the cut sequence's last r1 - r0 queries), one head.
Tensor reference_window(const HostProblem& h, const RefInputs& in, int s, int hh, int r0, int r1) {
  const int rows = r1 - r0;
  std::vector<uint16_t> qw(static_cast<size_t>(rows) * kQ);
  for (int i = 0; i < rows; ++i) {
    const size_t src = (static_cast<size_t>(h.qsl[s] + r0 + i) * h.heads + hh) * kQ;
    std::copy_n(h.q.data() + src, kQ, qw.data() + static_cast<size_t>(i) * kQ);
  }
  Tensor q = host_tensor(DType::kBF16, {rows, 1, kQ}, qw.data());
  Tensor w =
      host_tensor(DType::kBF16, {kKv, kL}, h.kv_b_proj.data() + static_cast<size_t>(hh) * kKv * kL);
  BlockFp8Weight w_fp8;  // head hh's rows: whole 128-row blocks, so its scale rows are hh*2, +1
  if (!h.wq.empty()) {
    w_fp8.weight = host_tensor(DType::kFp8E4M3, {kKv, kL},
                               h.wq.data() + static_cast<size_t>(hh) * kKv * kL);
    w_fp8.weight_scale_inv =
        host_tensor(DType::kF32, {kKv / 128, kL / 128},
                    h.ws.data() + static_cast<size_t>(hh) * (kKv / 128) * (kL / 128));
  }
  MlaConfig cfg;
  cfg.num_heads = 1;
  cfg.page_size = h.page_size;
  const int q_len = h.qsl[s + 1] - h.qsl[s];
  const int cut_len = h.seq_lens[s] - (q_len - r1);
  return ref::mla_prefill_expanded(q, in.cache, in.block_table, s, cut_len, w, cfg, true, w_fp8);
}

// Checks the bf16 output against the reference on windows of rows, and every real row for NaN.
void check_bf16_output(const HostProblem& h, const std::vector<uint16_t>& got) {
  const int64_t dim = static_cast<int64_t>(h.heads) * kV;
  const RefInputs in(h);
  int bad = 0, checked = 0;
  for (int s = 0; s < h.num_seqs; ++s) {
    const int q_len = h.qsl[s + 1] - h.qsl[s];
    std::vector<std::pair<int, int>> windows{{0, std::min(q_len, 8)}};
    if (q_len > 16) windows.push_back({q_len / 2 - 4, q_len / 2 + 4});
    if (q_len > 8) windows.push_back({std::max(8, q_len - 8), q_len});
    const int heads[3] = {0, h.heads - 1, (7 * s + 3) % h.heads};
    for (int hi = 0; hi < (h.heads > 1 ? 3 : 1); ++hi) {
      const int hh = heads[hi];
      if (hi == 2 && (hh == 0 || hh == h.heads - 1)) continue;
      for (const auto& [r0, r1] : windows) {
        const Tensor want = reference_window(h, in, s, hh, r0, r1);
        for (int i = r0; i < r1; ++i) {
          double num = 0.0, den = 0.0;
          bool nan = false;
          for (int v = 0; v < kV; ++v) {
            const double g =
                bf16_bits_to_f32(got[static_cast<size_t>(h.qsl[s] + i) * dim + hh * kV + v]);
            const double w = want.data<float>()[static_cast<size_t>(i - r0) * kV + v];
            nan |= std::isnan(g);
            num += (g - w) * (g - w);
            den += w * w;
          }
          ++checked;
          const double err = std::sqrt(num / std::max(den, 1e-30));
          if ((nan || !(err <= kFloatTol)) && bad++ < 8) {
            ADD_FAILURE() << "seq " << s << " (q_len " << q_len << ", seq_len " << h.seq_lens[s]
                          << ") query " << i << " head " << hh << ": normalized error " << err
                          << (nan ? " with NaN" : "");
          }
        }
      }
    }
  }
  EXPECT_EQ(bad, 0) << bad << " of " << checked << " checked rows out of tolerance";
  size_t nans = 0;
  for (int64_t i = 0; i < h.n * dim; ++i) nans += std::isnan(bf16_bits_to_f32(got[i]));
  EXPECT_EQ(nans, 0u) << "NaN in the real rows of the output";
  std::vector<uint8_t> bytes(got.size() * 2);
  std::memcpy(bytes.data(), got.data(), bytes.size());
  expect_untouched(bytes, static_cast<size_t>(h.n * dim) * 2, "bf16 output");
}

void run_batch(const Batch& b, bool quant_variants, bool pingpong = true) {
  const HostProblem h = make_problem(b);
  DeviceProblem d(h);
  d.b.pingpong = pingpong;
  const int64_t dim = static_cast<int64_t>(h.heads) * kV;
  DevBuf out(static_cast<size_t>(h.t_pad * dim) * 2);
  out.poison();
  MlaOutputParams op;
  op.kind = MlaEpilogue::kBf16;
  op.out = out.p;
  d.run(op, h.n);
  std::vector<uint16_t> got(static_cast<size_t>(h.t_pad * dim));
  out.download(got.data());
  check_bf16_output(h, got);
  if (quant_variants) {
    for (const QuantVariant& v : all_variants()) {
      check_quant_variant([&](const MlaOutputParams& o) { d.run(o, h.n); }, h.heads, h.t_pad, h.n,
                          got, v);
    }
  }
}

// The issue's prompt lengths, all in one batch; `ctx_mode` < 0 cycles the contexts 0, 63, 2048.
Batch prompt_batch(int heads, int ctx_mode, uint32_t seed) {
  Batch b;
  b.heads = heads;
  b.seed = seed;
  b.q_lens = small_mode() ? std::vector<int>{1, 17, 64, 127, 128, 129}
                          : std::vector<int>{1, 17, 64, 127, 128, 129, 1000, 4097};
  const int cycle[3] = {0, 63, small_mode() ? 200 : 2048};
  for (size_t i = 0; i < b.q_lens.size(); ++i)
    b.ctx.push_back(ctx_mode >= 0 ? (small_mode() ? std::min(ctx_mode, 200) : ctx_mode)
                                  : cycle[i % 3]);
  return b;
}

class MlaPrefillSweep : public ::testing::TestWithParam<std::tuple<int, int>> {};

TEST_P(MlaPrefillSweep, MatchesReferenceEveryEpilogue) {
  MLAFUSE_SKIP_WITHOUT_GPU();
  const auto [heads, ctx] = GetParam();
  run_batch(prompt_batch(heads, ctx, static_cast<uint32_t>(heads * 31 + ctx + 7)), true);
}

INSTANTIATE_TEST_SUITE_P(HeadsAndContexts, MlaPrefillSweep,
                         ::testing::Combine(::testing::Values(16, 128),
                                            ::testing::Values(0, 63, 2048, -1)),
                         [](const auto& info) {
                           const int ctx = std::get<1>(info.param);
                           return "H" + std::to_string(std::get<0>(info.param)) + "_ctx" +
                                  (ctx < 0 ? std::string("mixed") : std::to_string(ctx));
                         });

TEST(MlaPrefillSmall, HeadCounts32And64SmallPages) {
  MLAFUSE_SKIP_WITHOUT_GPU();
  for (int heads : {32, 64}) {
    for (bool fp8 : {false, true}) {  // total context 693: 3 padding rows for the FP8 GEMM
      SCOPED_TRACE("H" + std::to_string(heads) + (fp8 ? " block-FP8 kv_b_proj" : ""));
      Batch b;
      b.heads = heads;
      b.q_lens = {3, 130, 255};
      b.ctx = {5, 0, 300};
      b.page_size = 16;
      b.seed = static_cast<uint32_t>(heads);
      b.fp8_weight = fp8;
      run_batch(b, false);
    }
  }
}

TEST(MlaPrefillSmall, SingleTokenPromptsAndLongContext) {
  MLAFUSE_SKIP_WITHOUT_GPU();
  Batch b;
  b.heads = 16;
  b.q_lens = {1, 1, 2};
  b.ctx = {0, small_mode() ? 300 : 5000, 129};
  b.page_size = 128;
  b.seed = 11;
  run_batch(b, false);
}

// Pages of 32 tokens (no other prefill case has them), with every quantized epilogue: they stage
// codes in shared memory, and this small set is the one compute-sanitizer's racecheck runs.
TEST(MlaPrefillSmall, Page32WithQuantizedEpilogues) {
  MLAFUSE_SKIP_WITHOUT_GPU();
  Batch b;
  b.heads = 16;
  b.q_lens = {2, 65};
  b.ctx = {31, 33};
  b.page_size = 32;
  b.seed = 17;
  run_batch(b, true);
}

// The free-running schedule (no ping-pong between the math warpgroups) computes the same.
TEST(MlaPrefillSmall, WithoutPingPong) {
  MLAFUSE_SKIP_WITHOUT_GPU();
  Batch b;
  b.heads = 16;
  b.q_lens = {1, 129, 300};
  b.ctx = {0, 63, 200};
  b.seed = 13;
  run_batch(b, false, false);
}

// The block-FP8 up-projection (the checkpoint's kv_b_proj, as engines run it) in the whole chain,
// against the reference given the same weight, every epilogue on the kernel's own bf16 output.
// Total contexts 9848 and 6067: the second pads the FP8 GEMM's rows to a multiple of 4.
TEST(MlaPrefillFp8Weight, MatchesReferenceEveryEpilogue) {
  MLAFUSE_SKIP_WITHOUT_GPU();
  for (const auto& [heads, ctx] : {std::pair<int, int>{16, -1}, {128, 63}}) {
    SCOPED_TRACE("H" + std::to_string(heads) + " ctx " + std::to_string(ctx));
    Batch b = prompt_batch(heads, ctx, static_cast<uint32_t>(heads * 17 + ctx + 101));
    b.fp8_weight = true;
    run_batch(b, true);
  }
}


// Every bad problem is refused on the host before anything is launched.
TEST(MlaPrefillSmall, BadProblemsAreErrors) {
  MLAFUSE_SKIP_WITHOUT_GPU();
  const HostProblem h = make_problem([] {
    Batch b;
    b.q_lens = {5};
    b.ctx = {3};
    return b;
  }());
  DeviceProblem d(h);
  DevBuf out(static_cast<size_t>(h.t_pad) * h.heads * kV * 2);
  MlaOutputParams op;
  op.out = out.p;
  cuda::MlaPrefillBatch bad = d.b;
  bad.num_heads = 48;
  EXPECT_THROW(cuda::launch_mla_prefill(bad, d.ws.p, d.dc, op, nullptr), Error);
  bad = d.b;
  bad.max_seq_len = bad.max_q_len - 1;  // a context shorter than its prompt
  EXPECT_THROW(cuda::launch_mla_prefill(bad, d.ws.p, d.dc, op, nullptr), Error);
  bad = d.b;
  bad.kv_b_proj = nullptr;
  EXPECT_THROW(cuda::launch_mla_prefill(bad, d.ws.p, d.dc, op, nullptr), Error);
  MlaOutputParams no_scale = op;
  no_scale.kind = MlaEpilogue::kFp8Static;
  EXPECT_THROW(cuda::launch_mla_prefill(d.b, d.ws.p, d.dc, no_scale, nullptr), Error);
  bad = d.b;
  bad.kv_b_proj_fp8 = d.kv_b_proj.p;  // block-FP8 codes without their scales
  EXPECT_THROW(cuda::launch_mla_prefill(bad, d.ws.p, d.dc, op, nullptr), Error);
  MLAFUSE_CUDA_CHECK(cudaDeviceSynchronize());
}

// The block-FP8 up-projection (engines' kv_b_proj) against the bf16 one on the dequantized
// weight: FP8 activations (e4m3, groups of 128) cost a few percent a row, no more.
TEST(MlaPrefillUpProj, BlockFp8MatchesBf16WithinFp8Error) {
  MLAFUSE_SKIP_WITHOUT_GPU();
  const int heads = 16, rows = 1000, n = heads * kKv;
  std::mt19937 rng(3);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  std::vector<uint16_t> lat(static_cast<size_t>(rows) * kL);
  for (auto& x : lat) x = bf16(u(rng));
  // Weight: e4m3 codes with one f32 scale per 128x128 block; its dequantized bf16 copy.
  std::vector<uint8_t> wq(static_cast<size_t>(n) * kL);
  std::vector<float> ws(static_cast<size_t>(n / 128) * (kL / 128));
  std::vector<uint16_t> wdq(wq.size());
  for (int bi = 0; bi < n / 128; ++bi) {
    for (int bk = 0; bk < kL / 128; ++bk) {
      const float s = 0.1f / 448.0f * (1.0f + 0.25f * static_cast<float>((bi + bk) % 3));
      ws[static_cast<size_t>(bi) * (kL / 128) + bk] = s;
      for (int r = 0; r < 128; ++r)
        for (int c = 0; c < 128; ++c) {
          const size_t i = static_cast<size_t>(bi * 128 + r) * kL + bk * 128 + c;
          wq[i] = f32_to_e4m3(u(rng) * 448.0f);
          wdq[i] = bf16(e4m3_to_f32(wq[i]) * s);
        }
    }
  }
  DevBuf d_lat(lat.size() * 2), d_wq(wq.size()), d_ws(ws.size() * 4), d_wdq(wdq.size() * 2);
  DevBuf d_lq(static_cast<size_t>(rows) * kL), d_ls(static_cast<size_t>(rows) * 4 * 4);
  DevBuf kv_fp8(static_cast<size_t>(rows) * n * 2), kv_bf16(static_cast<size_t>(rows) * n * 2);
  d_lat.upload(lat.data());
  d_wq.upload(wq.data());
  d_ws.upload(ws.data());
  d_wdq.upload(wdq.data());
  kv_fp8.poison();
  kv_bf16.poison();
  cuda::DeviceContext dc;
  MLAFUSE_CUDA_CHECK(cudaGetDevice(&dc.device));
  MLAFUSE_CUDA_CHECK(
      cudaDeviceGetAttribute(&dc.num_sms, cudaDevAttrMultiProcessorCount, dc.device));
  MLAFUSE_CUBLAS_CHECK(cublasCreate(&dc.cublas));
  MLAFUSE_CUBLAS_CHECK(cublasLtCreate(&dc.cublaslt));
  const bool ran = cuda::launch_mla_prefill_up_proj_fp8(
      dc, d_lat.as<__nv_bfloat16>(), d_lq.as<uint8_t>(), d_ls.as<float>(), d_wq.p, d_ws.as<float>(),
      kv_fp8.as<__nv_bfloat16>(), rows, heads, nullptr);
  cuda::launch_mla_prefill_up_proj_bf16(dc.cublas, d_lat.as<__nv_bfloat16>(),
                                        d_wdq.as<__nv_bfloat16>(), kv_bf16.as<__nv_bfloat16>(),
                                        rows, heads, nullptr);
  MLAFUSE_CUDA_CHECK(cudaDeviceSynchronize());
  cublasDestroy(dc.cublas);
  cublasLtDestroy(dc.cublaslt);
  if (dc.workspace != nullptr) cudaFree(dc.workspace);
  if (!ran) GTEST_SKIP() << "cuBLASLt offers no block-scaled FP8 algorithm on this device";
  std::vector<uint16_t> a(static_cast<size_t>(rows) * n), b(a.size());
  kv_fp8.download(a.data());
  kv_bf16.download(b.data());
  int bad = 0;
  for (int r = 0; r < rows; ++r) {
    double num = 0.0, den = 0.0;
    for (int c = 0; c < n; ++c) {
      const double x = bf16_bits_to_f32(a[static_cast<size_t>(r) * n + c]);
      const double y = bf16_bits_to_f32(b[static_cast<size_t>(r) * n + c]);
      num += (x - y) * (x - y);
      den += y * y;
    }
    const double err = std::sqrt(num / den);
    if (!(err <= 0.06) && bad++ < 5) ADD_FAILURE() << "row " << r << ": normalized error " << err;
  }
  EXPECT_EQ(bad, 0);
}

}  // namespace
}  // namespace mlafuse
