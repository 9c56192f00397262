// GPU tests of the MLA decode kernels (plan, split-KV attention, combine + W_UV + quantization
// epilogue) and of the CUDA `mla_attention` op, against the CPU reference.
//
// Float outputs: normalized error ||out - ref|| / ||ref|| <= 1e-2 per token row (bf16 operands:
// q, K/V, P and the latent output are bf16 on the tensor cores; the output is rounded to bf16).
// Quantized outputs: codes and scales bit-exact against the CPU reference quantizer applied to the
// kernel's own bf16 output, over the whole buffers (so nothing outside tokens < n is written).
// KV past each sequence's end is NaN, unused block-table slots hold huge page ids, outputs are
// poisoned (0xff bytes) before every run, and padded batches read n from device memory.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <numeric>
#include <optional>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "backends/cuda/device_context.h"
#include "backends/cuda/mla_decode.h"
#include "gpu/common/gpu_harness.h"
#include "gpu/common/mla_output_check.h"
#include "mlafuse/backends/backend.h"
#include "mlafuse/backends/cpu/reference.h"
#include "mlafuse/backends/cuda/cuda_check.h"
#include "mlafuse/quant/codecs.h"
#include "mlafuse/quant/scale_layout.h"

namespace mlafuse {
namespace {

using cuda::MlaDecodeProblem;
using cuda::MlaEpilogue;
using cuda::MlaOutputParams;
using cuda::MlaWorkspace;
using gpu_test::all_variants;
using gpu_test::bf16_to_f32;
using gpu_test::check_quant_variant;
using gpu_test::DevBuf;
using gpu_test::expect_untouched;
using gpu_test::host_tensor;
using gpu_test::QuantVariant;

constexpr int kL = 512, kRow = 576, kV = 128, kPage = 64;
constexpr uint16_t kBf16NaN = 0x7fc0;
constexpr double kFloatTol = 1e-2;

uint16_t bf16(float f) { return f32_to_bf16_bits(f); }

// MLAFUSE_GPU_TEST_SMALL (set by bench/device.sh under compute-sanitizer): short sequences only.
bool small_mode() { return std::getenv("MLAFUSE_GPU_TEST_SMALL") != nullptr; }

// A batch: sequences (seq_len, query tokens), decodes first; `pad` extra padded token rows.
struct Batch {
  int heads = 16;
  std::vector<int> seq_lens;
  std::vector<int> q_tokens;
  int pad = 0;
  uint32_t seed = 1;
  int page_size = kPage;
  // The one-token promise (MlaDecodeProblem::one_token_per_seq); unset: made exactly when every
  // sequence has at most one query token.
  std::optional<bool> one_token_per_seq;
  float softmax_scale = 0.0f;  // 0: the default 1/sqrt(192)
};

// Host data of one batch and the per-query view the reference needs.
struct HostProblem {
  int heads = 0, n = 0, t_pad = 0, num_seqs = 0, num_pages = 0, bt_stride = 0, page_size = 0;
  bool one_token_per_seq = false;
  float scale = 0.0f;
  std::vector<int32_t> seq_lens, qsl, block_table;
  std::vector<uint16_t> cache, q_cat, w_uv;
  std::vector<int32_t> q_len, q_row;  // per real query
};

HostProblem make_problem(const Batch& b) {
  HostProblem h;
  std::mt19937 rng(b.seed);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  h.heads = b.heads;
  h.page_size = b.page_size;
  const int ps = b.page_size;
  h.num_seqs = static_cast<int>(b.seq_lens.size());
  h.scale = b.softmax_scale > 0.0f ? b.softmax_scale : 1.0f / std::sqrt(192.0f);
  h.qsl.push_back(0);
  int max_pages = 1;
  int total_pages = 0;
  for (int s = 0; s < h.num_seqs; ++s) {
    h.qsl.push_back(h.qsl.back() + b.q_tokens[s]);
    const int pages = (b.seq_lens[s] + ps - 1) / ps;
    max_pages = std::max(max_pages, pages);
    total_pages += pages;
  }
  h.n = h.qsl.back();
  h.one_token_per_seq = b.one_token_per_seq.value_or(
      std::all_of(b.q_tokens.begin(), b.q_tokens.end(), [](int q) { return q <= 1; }));
  h.t_pad = h.n + b.pad;
  h.seq_lens.assign(b.seq_lens.begin(), b.seq_lens.end());
  h.num_pages = total_pages + 3;  // three pages nobody owns (NaN)
  h.bt_stride = max_pages + 2;
  std::vector<int32_t> pool(h.num_pages);
  std::iota(pool.begin(), pool.end(), 0);
  std::shuffle(pool.begin(), pool.end(), rng);
  h.block_table.assign(static_cast<size_t>(h.num_seqs) * h.bt_stride, 0);
  h.cache.assign(static_cast<size_t>(h.num_pages) * ps * kRow, kBf16NaN);
  int next = 0;
  for (int s = 0; s < h.num_seqs; ++s) {
    const int pages = (b.seq_lens[s] + ps - 1) / ps;
    for (int j = 0; j < h.bt_stride; ++j) {
      // Unused slots hold huge ids: a kernel that reads one faults under memcheck.
      h.block_table[s * h.bt_stride + j] = j < pages ? pool[next++] : 0x3fffff00 + j;
    }
    for (int pos = 0; pos < b.seq_lens[s]; ++pos) {
      const int page = h.block_table[s * h.bt_stride + pos / ps];
      uint16_t* row = h.cache.data() + (static_cast<size_t>(page) * ps + pos % ps) * kRow;
      for (int c = 0; c < kRow; ++c) row[c] = bf16(u(rng));
    }
  }
  h.q_cat.resize(static_cast<size_t>(h.t_pad) * h.heads * kRow);
  for (auto& v : h.q_cat) v = bf16(u(rng));
  h.w_uv.resize(static_cast<size_t>(h.heads) * kL * kV);
  for (auto& v : h.w_uv) v = bf16(0.08f * u(rng));
  for (int s = 0; s < h.num_seqs; ++s) {
    for (int t = h.qsl[s]; t < h.qsl[s + 1]; ++t) {
      h.q_len.push_back(std::max(0, h.seq_lens[s] - (h.qsl[s + 1] - 1 - t)));
      h.q_row.push_back(s);
    }
  }
  return h;
}

// Reference latent output [n, H, 512] f32 and up-projection [n, H*128] f32.
struct Reference {
  Tensor o_lat, out;
};
Reference reference(const HostProblem& h) {
  const int n = h.n;
  Tensor q = host_tensor(DType::kBF16, {n, h.heads, kRow}, h.q_cat.data());
  Tensor cache = host_tensor(DType::kBF16, {h.num_pages, h.page_size, kRow}, h.cache.data());
  std::vector<int32_t> bt(static_cast<size_t>(std::max(n, 1)) * h.bt_stride);
  for (int t = 0; t < n; ++t) {
    std::copy_n(h.block_table.data() + static_cast<size_t>(h.q_row[t]) * h.bt_stride, h.bt_stride,
                bt.data() + static_cast<size_t>(t) * h.bt_stride);
  }
  Tensor bt_t = host_tensor(DType::kI32, {n, h.bt_stride}, bt.data());
  Tensor lens = host_tensor(DType::kI32, {n}, h.q_len.data());
  Tensor w_uv = host_tensor(DType::kBF16, {h.heads, kL, kV}, h.w_uv.data());
  Reference r;
  r.o_lat = ref::mla_decode_latent(q, cache, bt_t, lens, kL, h.scale);
  r.out = ref::mla_up_proj(r.o_lat, w_uv, true);
  return r;
}

// Device copies of one problem plus the decode workspace.
struct DeviceProblem {
  DevBuf seq_lens, qsl, bt, cache, q_cat, w_uv, n_dev, ws_buf;
  MlaDecodeProblem p;
  MlaWorkspace ws;
  explicit DeviceProblem(const HostProblem& h, int num_sms)
      : seq_lens(h.seq_lens.size() * 4 + 4),
        qsl(h.qsl.size() * 4),
        bt(h.block_table.size() * 4),
        cache(h.cache.size() * 2),
        q_cat(h.q_cat.size() * 2),
        w_uv(h.w_uv.size() * 2),
        n_dev(4),
        ws_buf(cuda::mla_workspace_bytes(h.t_pad, h.heads, cuda::mla_num_parts(num_sms, h.heads))) {
    if (!h.seq_lens.empty()) {
      MLAFUSE_CUDA_CHECK(
          cudaMemcpy(seq_lens.p, h.seq_lens.data(), h.seq_lens.size() * 4, cudaMemcpyHostToDevice));
    }
    qsl.upload(h.qsl.data());
    if (!h.block_table.empty()) bt.upload(h.block_table.data());
    cache.upload(h.cache.data());
    q_cat.upload(h.q_cat.data());
    w_uv.upload(h.w_uv.data());
    n_dev.upload(&h.n);
    // Stale scratch must not matter: fill the workspace with NaN bytes.
    ws_buf.poison();
    const int parts = cuda::mla_num_parts(num_sms, h.heads);
    ws = cuda::mla_workspace_carve(ws_buf.p, h.t_pad, h.heads, parts);
    p.num_heads = h.heads;
    p.num_queries = h.t_pad;
    p.num_tokens = h.t_pad;  // deliberately wrong: the device count wins
    p.num_tokens_device = n_dev.as<int32_t>();
    p.softmax_scale = h.scale;
    p.num_seqs = h.num_seqs;
    p.seq_lens = seq_lens.as<int32_t>();
    p.query_start_loc = qsl.as<int32_t>();
    p.block_table = bt.as<int32_t>();
    p.block_table_stride = h.bt_stride;
    p.num_pages = h.num_pages;
    p.page_size = h.page_size;
    p.q_cat = q_cat.as<__nv_bfloat16>();
    p.kv_cache = cache.as<__nv_bfloat16>();
    p.w_uv = w_uv.as<__nv_bfloat16>();
    p.one_token_per_seq = h.one_token_per_seq;
  }
  // kCompute: up to kMlaOwnPlanQueries queries the attention's CTAs compute the schedule, beyond
  // that the plan kernel does; kReuse reads the one an earlier call stored.
  void attention(cuda::MlaSchedule schedule = cuda::MlaSchedule::kCompute) {
    cuda::launch_mla_decode_splitkv(p, ws, schedule, nullptr);
  }
};

int num_sms() {
  int dev = 0, sms = 0;
  MLAFUSE_CUDA_CHECK(cudaGetDevice(&dev));
  MLAFUSE_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
  return sms;
}

// Normalized error of each real row; rows whose reference is all zero must be exactly zero.
void expect_rows_close(const std::vector<float>& got, const float* want, int rows, int cols,
                       const std::vector<int32_t>& q_len, const std::string& what) {
  int bad = 0;
  for (int t = 0; t < rows; ++t) {
    double num = 0.0, den = 0.0;
    bool nan = false;
    for (int c = 0; c < cols; ++c) {
      const double g = got[static_cast<size_t>(t) * cols + c];
      const double w = want[static_cast<size_t>(t) * cols + c];
      nan |= std::isnan(g);
      num += (g - w) * (g - w);
      den += w * w;
    }
    const bool ok =
        q_len[t] == 0 ? (num == 0.0 && !nan) : (!nan && std::sqrt(num / den) <= kFloatTol);
    if (!ok && bad++ < 5) {
      ADD_FAILURE() << what << ": token " << t << " (kv len " << q_len[t] << ") normalized error "
                    << std::sqrt(num / std::max(den, 1e-30)) << (nan ? " with NaN" : "");
    }
  }
  EXPECT_EQ(bad, 0) << what << ": " << bad << " of " << rows << " rows out of tolerance";
}

// Runs the decode kernels on a batch and checks the bf16 output, the unfused baseline, and
// (optionally) every quantization epilogue.
void run_batch(const Batch& b, bool quant_variants) {
  const HostProblem h = make_problem(b);
  const Reference r = reference(h);
  DeviceProblem d(h, num_sms());
  const int64_t dim = static_cast<int64_t>(h.heads) * kV;

  // Fused path, bf16 epilogue.
  DevBuf out(static_cast<size_t>(h.t_pad * dim) * 2);
  out.poison();
  d.attention();
  MlaOutputParams op;
  op.kind = MlaEpilogue::kBf16;
  op.out = out.p;
  cuda::launch_mla_combine_up_quant(d.p, d.ws, op, nullptr);
  MLAFUSE_CUDA_CHECK(cudaDeviceSynchronize());
  std::vector<uint16_t> got(static_cast<size_t>(h.t_pad * dim));
  out.download(got.data());
  expect_rows_close(bf16_to_f32(got), r.out.data<float>(), h.n, static_cast<int>(dim), h.q_len,
                    "fused bf16 output");
  {
    std::vector<uint8_t> bytes(got.size() * 2);
    std::memcpy(bytes.data(), got.data(), bytes.size());
    expect_untouched(bytes, static_cast<size_t>(h.n * dim) * 2, "fused bf16 output");
  }
  {
    // The schedule the call stored in the workspace, reused (one decode step's later layers):
    // the same output, bit for bit.
    out.poison();
    d.attention(cuda::MlaSchedule::kReuse);
    cuda::launch_mla_combine_up_quant(d.p, d.ws, op, nullptr);
    MLAFUSE_CUDA_CHECK(cudaDeviceSynchronize());
    std::vector<uint16_t> again(got.size());
    out.download(again.data());
    EXPECT_EQ(std::memcmp(again.data(), got.data(), got.size() * 2), 0)
        << "the reused schedule changed the output";
    // A broken reuse contract (the lengths shortened in place after the schedule was computed)
    // still follows the stored schedule: the old output, no fault (the attention once mixed the
    // live lengths with the stored tiles and hit an illegal instruction).
    std::vector<int32_t> shorter(h.seq_lens);
    for (int32_t& len : shorter) len = std::min(len, 64);
    const size_t len_bytes = shorter.size() * sizeof(int32_t);
    MLAFUSE_CUDA_CHECK(cudaMemcpy(d.seq_lens.p, shorter.data(), len_bytes, cudaMemcpyHostToDevice));
    out.poison();
    d.attention(cuda::MlaSchedule::kReuse);
    cuda::launch_mla_combine_up_quant(d.p, d.ws, op, nullptr);
    MLAFUSE_CUDA_CHECK(cudaDeviceSynchronize());
    out.download(again.data());
    EXPECT_EQ(std::memcmp(again.data(), got.data(), got.size() * 2), 0)
        << "a reused schedule did not follow the lengths it was computed for";
    MLAFUSE_CUDA_CHECK(
        cudaMemcpy(d.seq_lens.p, h.seq_lens.data(), len_bytes, cudaMemcpyHostToDevice));
  }

  // Unfused baseline: latent combine, then cuBLAS W_UV GEMM. o_lat is poisoned and the
  // attention run again first, so every row checked is this attention's or this merge's (the
  // fused premerge writes the same rows).
  MLAFUSE_CUDA_CHECK(cudaMemset(d.ws.o_lat, 0xff, static_cast<size_t>(h.t_pad) * h.heads * kL * 2));
  d.attention();
  cuda::launch_mla_combine_latent(d.p, d.ws, nullptr);
  MLAFUSE_CUDA_CHECK(cudaDeviceSynchronize());
  std::vector<uint16_t> lat(static_cast<size_t>(h.n) * h.heads * kL);
  MLAFUSE_CUDA_CHECK(cudaMemcpy(lat.data(), d.ws.o_lat, lat.size() * 2, cudaMemcpyDeviceToHost));
  expect_rows_close(
      bf16_to_f32(lat), r.o_lat.data<float>(), h.n * h.heads, kL,
      [&] {
        std::vector<int32_t> l;
        for (int t = 0; t < h.n; ++t)
          for (int hh = 0; hh < h.heads; ++hh) l.push_back(h.q_len[t]);
        return l;
      }(),
      "latent output (split-KV + combine)");
  if (h.n > 0) {
    cublasHandle_t handle;
    MLAFUSE_CUBLAS_CHECK(cublasCreate(&handle));
    DevBuf out2(static_cast<size_t>(h.n * dim) * 2);
    cuda::launch_mla_up_proj_cublas(handle, d.ws.o_lat, d.p.w_uv, out2.as<__nv_bfloat16>(), h.n,
                                    h.heads, nullptr);
    MLAFUSE_CUDA_CHECK(cudaDeviceSynchronize());
    cublasDestroy(handle);
    std::vector<uint16_t> got2(static_cast<size_t>(h.n * dim));
    out2.download(got2.data());
    expect_rows_close(bf16_to_f32(got2), r.out.data<float>(), h.n, static_cast<int>(dim), h.q_len,
                      "unfused (cuBLAS) output");
  }
  if (quant_variants) {
    // The latent merge above wrote every merged row into o_lat: poison it and run the attention
    // again, so that a fused combine which took a split row for a single-split one (copying
    // o_lat) fails here.
    MLAFUSE_CUDA_CHECK(
        cudaMemset(d.ws.o_lat, 0xff, static_cast<size_t>(h.t_pad) * h.heads * kL * 2));
    d.attention();
    MLAFUSE_CUDA_CHECK(cudaDeviceSynchronize());
    for (const QuantVariant& v : all_variants()) {
      check_quant_variant(
          [&](const MlaOutputParams& o) {
            cuda::launch_mla_combine_up_quant(d.p, d.ws, o, nullptr);
            MLAFUSE_CUDA_CHECK(cudaDeviceSynchronize());
          },
          h.heads, h.t_pad, h.n, got, v);
    }
  }
}

std::vector<int> mixed_lengths(int batch, uint32_t seed, int max_random) {
  const int specials[] = {0, 1, 63, 64, 65, small_mode() ? 129 : 4097};
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int> len(1, max_random);
  std::vector<int> lens;
  for (int i = 0; i < batch; ++i) lens.push_back(i < 6 ? specials[i] : len(rng));
  std::shuffle(lens.begin(), lens.end(), rng);
  return lens;
}

Batch decode_batch(int heads, int batch, int pad, uint32_t seed) {
  Batch b;
  b.heads = heads;
  b.seed = seed;
  b.pad = pad;
  b.seq_lens = batch == 1 ? std::vector<int>{small_mode() ? 200 : 4097}
                          : mixed_lengths(batch, seed, small_mode() ? 70 : 400);
  b.q_tokens.assign(b.seq_lens.size(), 1);
  return b;
}

class MlaDecodeSweep : public ::testing::TestWithParam<std::tuple<int, int>> {};

TEST_P(MlaDecodeSweep, MatchesReference) {
  MLAFUSE_SKIP_WITHOUT_GPU();
  const auto [heads, batch] = GetParam();
  if (small_mode() && batch > 7) GTEST_SKIP() << "large batch (MLAFUSE_GPU_TEST_SMALL)";
  run_batch(decode_batch(heads, batch, 3, 1000u + heads * 7 + batch), false);
}

INSTANTIATE_TEST_SUITE_P(HeadsAndBatches, MlaDecodeSweep,
                         ::testing::Combine(::testing::Values(16, 32, 64, 128),
                                            ::testing::Values(1, 7, 64, 128)));

// Pages of 16, 32 and 128 tokens (64 is every other test's): lengths on and off page and tile
// boundaries, NaN past every sequence's end, huge ids in the unused block-table columns.
class MlaDecodePageSizes : public ::testing::TestWithParam<std::tuple<int, int>> {};

TEST_P(MlaDecodePageSizes, MatchesReference) {
  MLAFUSE_SKIP_WITHOUT_GPU();
  const auto [page_size, heads] = GetParam();
  Batch b;
  b.heads = heads;
  b.page_size = page_size;
  b.seq_lens = {1, 15, 16, 17, 33, 0, 63, 64, 65, 127, 128, 129, 200};
  if (!small_mode()) b.seq_lens.push_back(1000);
  if (!small_mode() && page_size == 16) b.seq_lens.push_back(4097);  // 257 table entries
  b.q_tokens.assign(b.seq_lens.size(), 1);
  b.q_tokens.back() = 3;  // a prefill last: three causal lengths
  b.pad = 2;
  b.seed = 3000u + page_size + heads;
  b.softmax_scale = 0.13523377f;  // DeepSeek-V3's (YaRN's mscale squared / sqrt(192))
  run_batch(b, heads == 16);
}

INSTANTIATE_TEST_SUITE_P(PagesAndHeads, MlaDecodePageSizes,
                         ::testing::Combine(::testing::Values(16, 32, 128),
                                            ::testing::Values(16, 32, 64, 128)),
                         [](const auto& info) {
                           return "page" + std::to_string(std::get<0>(info.param)) + "_h" +
                                  std::to_string(std::get<1>(info.param));
                         });

// Every quantization key and layout flag, on small and full head counts (small shapes: these also
// run under compute-sanitizer).
TEST(MlaDecodeSmall, QuantVariantsH16) {
  MLAFUSE_SKIP_WITHOUT_GPU();
  Batch b;
  b.heads = 16;
  b.seq_lens = {65, 0, 1, 130, 64, 63, 7};
  b.q_tokens.assign(b.seq_lens.size(), 1);
  b.pad = 5;
  run_batch(b, true);
}

TEST(MlaDecodeSmall, PrefillTokensAndEmptyBatch) {
  MLAFUSE_SKIP_WITHOUT_GPU();
  Batch b;
  b.heads = 32;
  b.seq_lens = {100, 0, 65, 200, 64};  // two prefills: 5 tokens of 200, 64 tokens of 64
  b.q_tokens = {1, 1, 1, 5, 64};
  b.pad = 2;
  run_batch(b, false);
  Batch empty;  // every token padded away: nothing written
  empty.heads = 16;
  empty.pad = 4;
  run_batch(empty, true);
}

// Sequences without query tokens between others (their query_start_loc entries repeat), and
// prefill tokens: the attention finds each part's later segments from the inputs.
TEST(MlaDecodeSmall, EmptySequencesBetween) {
  MLAFUSE_SKIP_WITHOUT_GPU();
  Batch b;
  b.heads = 16;
  b.seq_lens = {70, 5, 300, 0, 65, 9, 129};
  b.q_tokens = {1, 0, 3, 0, 2, 0, 1};
  b.pad = 3;
  run_batch(b, false);
}

// At H = 16 and 32 consecutive tokens of a sequence share a CTA's 64 rows (units of 4 and 2
// tokens, the last one shorter), each row with its own causal length: lengths ending just past a
// tile (a unit's first tokens then have no KV in its last tile, and none in a part holding only
// that tile), units of 1 to 4 tokens, long splits, and the plan kernel's schedule (more queries
// than the attention schedules itself) read back by later segments.
TEST(MlaDecodeSmall, TokenUnitsH16H32) {
  MLAFUSE_SKIP_WITHOUT_GPU();
  for (int heads : {16, 32}) {
    Batch b;
    b.heads = heads;
    b.seq_lens = {130, 65, 4097, 66, 1, 127, 64, 3};
    b.q_tokens = {4, 5, 2, 3, 1, 4, 7, 3};
    b.pad = 3;
    b.seed = 40u + static_cast<uint32_t>(heads);
    run_batch(b, heads == 16);
    Batch big;  // 150 sequences of 4 tokens: 600 queries, past kMlaOwnPlanQueries
    big.heads = heads;
    for (int i = 0; i < 150; ++i) {
      big.seq_lens.push_back(4 + (i * 37) % 300);
      big.q_tokens.push_back(i % 7 == 3 ? 1 : 4);
    }
    big.pad = 2;
    big.seed = 50u + static_cast<uint32_t>(heads);
    run_batch(big, false);
  }
}

// One-token batches on either schedule: with token units (no one-token promise, as an MTP graph
// runs a step whose decodes hold one token) and without (the promise, every other one-token test);
// a multi-token batch under the promise still gets its causal lengths right.
TEST(MlaDecodeSmall, OneTokenPromiseEitherWay) {
  MLAFUSE_SKIP_WITHOUT_GPU();
  for (int heads : {16, 32}) {
    for (int batch : {1, 7, 64}) {
      Batch b = decode_batch(heads, batch, 2, 70u + static_cast<uint32_t>(heads + batch));
      b.one_token_per_seq = false;
      run_batch(b, batch == 7);
    }
    Batch multi;
    multi.heads = heads;
    multi.seq_lens = {130, 65, 700, 3};
    multi.q_tokens = {4, 2, 1, 3};
    multi.pad = 1;
    multi.seed = 90u + static_cast<uint32_t>(heads);
    multi.one_token_per_seq = true;
    run_batch(multi, false);
  }
}

// More queries than the attention schedules itself (kMlaOwnPlanQueries): the plan kernel runs.
TEST(MlaDecodeSmall, PlanKernelBeyondOwnPlan) {
  MLAFUSE_SKIP_WITHOUT_GPU();
  Batch b = decode_batch(16, cuda::kMlaOwnPlanQueries + 37, 2, 999u);
  run_batch(b, false);
}

TEST(MlaDecodeSmall, SeesawH64) {
  MLAFUSE_SKIP_WITHOUT_GPU();
  Batch b;
  b.heads = 64;
  b.seq_lens = {129, 0, 1, 64, 65};
  b.q_tokens.assign(b.seq_lens.size(), 1);
  b.pad = 1;
  run_batch(b, false);
}

// More than one wave of 64-token tiles (H = 128, 95 token rows: 256 CTAs on an H100's 132 SMs):
// the combine streams W_UV through a ring of two chunks, two CTAs per SM. Small enough to run
// under compute-sanitizer too (every quantization variant outside it).
TEST(MlaDecodeSmall, StreamedWuvH128) {
  MLAFUSE_SKIP_WITHOUT_GPU();
  Batch b = decode_batch(128, 90, 5, 4242u);
  run_batch(b, !small_mode());
}

// Equal lengths, so every part takes whole queries (on 132 SMs: two a part at H = 128, one at
// H = 64) and no row merges: the combine then takes each 64-row o_lat tile whole by TMA, the
// ring of two at H = 128 and W_UV whole at H = 64. 120 real rows of 125: the second tile holds
// padding rows (n <= t < T_pad) and rows past T_pad (the copy's zero fill).
TEST(MlaDecodeSmall, WholeQueryTilesH128H64) {
  MLAFUSE_SKIP_WITHOUT_GPU();
  for (const int heads : {128, 64}) {
    Batch b;
    b.heads = heads;
    b.seed = 5150u + heads;
    b.seq_lens.assign(120, 300);
    b.q_tokens.assign(b.seq_lens.size(), 1);
    b.pad = 5;
    run_batch(b, !small_mode());
  }
}

TEST(MlaDecodeQuant, AllVariantsH128) {
  MLAFUSE_SKIP_WITHOUT_GPU();
  if (small_mode()) GTEST_SKIP() << "large shape (MLAFUSE_GPU_TEST_SMALL)";
  Batch b = decode_batch(128, 64, 7, 77);
  run_batch(b, true);
}

TEST(MlaDecodeQuant, AllVariantsH64LongSplit) {
  MLAFUSE_SKIP_WITHOUT_GPU();
  if (small_mode()) GTEST_SKIP() << "large shape (MLAFUSE_GPU_TEST_SMALL)";
  Batch b;
  b.heads = 64;
  b.seq_lens = {8191, 1, 0, 300};
  b.q_tokens.assign(b.seq_lens.size(), 1);
  b.pad = 130;  // the NVFP4 scale padding reaches past one 128-row tile
  run_batch(b, true);
}

// The absorbed query: q_cat[t, h] = [q_nope @ W_UK_T[h] | q_pe], every element written, on both
// paths (the two small-batch kernels, cuBLAS beyond). A token's row from a small-batch kernel is
// the same bits in another batch size that takes the same kernel.
TEST(MlaAbsorbQ, MatchesReference) {
  MLAFUSE_SKIP_WITHOUT_GPU();
  constexpr int kNope = 128, kQDim = 192;
  cublasHandle_t handle;
  MLAFUSE_CUBLAS_CHECK(cublasCreate(&handle));
  for (const int heads : {16, 64, 128}) {
    for (const int t : {1, 2, 3, 5, 8, 13, 16, 17, 40}) {
      std::mt19937 rng(31u * t + heads);
      std::uniform_real_distribution<float> u(-1.0f, 1.0f);
      std::vector<uint16_t> q(static_cast<size_t>(t) * heads * kQDim);
      std::vector<uint16_t> w(static_cast<size_t>(heads) * kNope * kL);
      for (auto& v : q) v = bf16(u(rng));
      for (auto& v : w) v = bf16(0.1f * u(rng));
      DevBuf dq(q.size() * 2), dw(w.size() * 2), dout(static_cast<size_t>(t) * heads * kRow * 2);
      dq.upload(q.data());
      dw.upload(w.data());
      dout.poison();
      cuda::launch_mla_absorb_q(handle, dq.as<__nv_bfloat16>(), dw.as<__nv_bfloat16>(),
                                dout.as<__nv_bfloat16>(), t, heads, nullptr);
      MLAFUSE_CUDA_CHECK(cudaDeviceSynchronize());
      std::vector<uint16_t> got(static_cast<size_t>(t) * heads * kRow);
      dout.download(got.data());
      const std::vector<float> gf = bf16_to_f32(got);
      std::vector<float> want(got.size());
      std::vector<int32_t> nonzero(static_cast<size_t>(t) * heads, 1);
      for (int i = 0; i < t * heads; ++i) {
        const int h = i % heads;
        const uint16_t* qr = q.data() + static_cast<size_t>(i) * kQDim;
        for (int c = 0; c < kL; ++c) {
          double acc = 0.0;
          for (int k = 0; k < kNope; ++k) {
            acc += static_cast<double>(bf16_bits_to_f32(qr[k])) *
                   bf16_bits_to_f32(w[(static_cast<size_t>(h) * kNope + k) * kL + c]);
          }
          want[static_cast<size_t>(i) * kRow + c] = static_cast<float>(acc);
        }
        for (int c = 0; c < kRow - kL; ++c) {
          // The RoPE part is a copy: bit for bit.
          EXPECT_EQ(got[static_cast<size_t>(i) * kRow + kL + c], qr[kNope + c])
              << "q_pe, t = " << t << ", H = " << heads << ", row " << i;
          want[static_cast<size_t>(i) * kRow + kL + c] = bf16_bits_to_f32(qr[kNope + c]);
        }
      }
      expect_rows_close(gf, want.data(), t * heads, kRow, nonzero,
                        "absorbed q, t = " + std::to_string(t) + ", H = " + std::to_string(heads));
      // The peer batch: one token on the GEMV kernel, three on the MMA kernel.
      const int peer = t <= cuda::kMlaAbsorbGemvMax ? 1 : cuda::kMlaAbsorbGemvMax + 1;
      if (t <= cuda::kMlaAbsorbSmallMax && t > peer) {
        for (const int tok : {0, t / 2, t - 1}) {
          const int first = std::min(tok, t - peer);
          DevBuf other(static_cast<size_t>(peer) * heads * kRow * 2);
          other.poison();
          cuda::launch_mla_absorb_q(
              handle, dq.as<__nv_bfloat16>() + static_cast<size_t>(first) * heads * kQDim,
              dw.as<__nv_bfloat16>(), other.as<__nv_bfloat16>(), peer, heads, nullptr);
          MLAFUSE_CUDA_CHECK(cudaDeviceSynchronize());
          std::vector<uint16_t> o(static_cast<size_t>(peer) * heads * kRow);
          other.download(o.data());
          const size_t row_elems = static_cast<size_t>(heads) * kRow;
          EXPECT_TRUE(std::equal(o.begin() + static_cast<ptrdiff_t>((tok - first) * row_elems),
                                 o.begin() + static_cast<ptrdiff_t>((tok - first + 1) * row_elems),
                                 got.begin() + static_cast<ptrdiff_t>(tok * row_elems)))
              << "token " << tok << " of t = " << t << " differs in a batch of " << peer
              << ", H = " << heads;
        }
      }
    }
  }
  cublasDestroy(handle);
}

}  // namespace
}  // namespace mlafuse
