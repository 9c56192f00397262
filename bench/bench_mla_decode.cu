// Benchmark of the MLA decode step on the GPU: the fused chain (device plan, split-KV attention,
// combine + W_UV + group-128 FP8 epilogue) against the unfused chain of our own parts (same
// attention, latent combine, cuBLAS batched W_UV GEMM, standalone quant kernel), and the whole
// fused op (cache write + absorbed q + the fused chain). Every variant is one CUDA graph replaying
// R calls over R distinct input sets (KV pages, q, W_UV, W_UK_T), R chosen so the sets exceed L2;
// the time is the median over replays divided by R. A case's variants are timed in shared rounds
// (bench::GraphRounds: one replay of each a round, the order rotated) after 50 ms of warm-up.
// Random data.
//
// Floor: bytes = B*ctx*1152 + H*512*128*2, FLOP = B*K*ctx*2*H*1088 + B*K*2*H*512*128,
// floor = max(bytes / read ceiling, FLOP / GEMM ceiling), both ceilings measured at the start of
// the same run (read-only stream over 2 GiB, device copy of 1 GiB, cuBLAS bf16 8192^3 GEMM).
// K = query tokens a sequence (1; 2 in the MTP cases, the last two positions, causal): the floor
// reads each sequence's KV once, as a kernel sharing the read between its K rows would.
//
// Usage: bench_mla_decode [--torch FILE] [--json FILE] [--quick] [--case B,ctx,H[,K] ...]
//   FILE from bench/torch_mla_decode.py: lines "B ctx H microseconds" (K = 1 cases).
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "backends/cuda/cache_write.h"
#include "backends/cuda/mla_decode.h"
#include "backends/cuda/quant_kernels.h"
#include "bench_common.cuh"
#include "mlafuse/backends/cuda/cuda_check.h"
#include "mlafuse/quant/scale_layout.h"

namespace mlafuse::cuda {
namespace {

constexpr int kL = kMlaLatent, kRow = kMlaRow, kV = kMlaVDim, kPage = kMlaPage;

using bench::Ceilings;
using bench::dalloc;
using bench::random_bf16;

struct Case {
  int b, ctx, h;
  int k = 1;  // query tokens a sequence (MTP when > 1)
  int rows() const { return b * k; }
  std::string label() const {
    return k == 1 ? std::to_string(b) : std::to_string(b) + "x" + std::to_string(k);
  }
};

struct Result {
  Case c;
  double fused_us = 0, unfused_us = 0, op_us = 0, attn_us = 0, combine_us = 0;
  double fused_step_us = 0;  // attention + combine, the schedule computed once a step (no plan)
  double torch_us = 0;
  double bytes = 0, flop = 0, floor_us = 0;
};

// One input set: its own KV pages, block table, q, weights.
struct InputSet {
  MlaDecodeProblem p;
  MlaWorkspace ws;
  void *q = nullptr, *q_cat = nullptr, *w_uk_t = nullptr, *kv_c = nullptr, *k_pe = nullptr;
  int32_t* slots = nullptr;
};

Result run_case(const Case& c, const Ceilings& ceil, int num_sms, cublasHandle_t cublas,
               cudaStream_t stream) {
  Result r;
  r.c = c;
  const double kv_bytes = static_cast<double>(c.b) * c.ctx * kRow * 2;
  const double w_bytes = static_cast<double>(c.h) * kL * kV * 2;
  r.bytes = kv_bytes + w_bytes;
  const int rows = c.rows();
  r.flop = static_cast<double>(rows) * c.ctx * 2.0 * c.h * (kRow + kL) +
           static_cast<double>(rows) * 2.0 * c.h * kL * kV;
  r.floor_us = std::max(r.bytes / (ceil.read_gbs * 1e9), r.flop / (ceil.gemm_tflops * 1e12)) * 1e6;

  const int pages_per_seq = (c.ctx + kPage - 1) / kPage;
  const size_t set_bytes =
      static_cast<size_t>(kv_bytes + 2 * w_bytes) + static_cast<size_t>(rows) * c.h * kRow * 2;
  const int reps = static_cast<int>(std::clamp<size_t>((150u << 20) / set_bytes + 1, 1, 16));
  const int parts = mla_num_parts(num_sms, c.h);
  const int64_t dim = static_cast<int64_t>(c.h) * kV;

  // Shared by the sets: one cache with every set's pages (shuffled), outputs, scratch.
  const int64_t num_pages = static_cast<int64_t>(reps) * c.b * pages_per_seq;
  void* cache = dalloc(static_cast<size_t>(num_pages) * kPage * kRow * 2);
  random_bf16(cache, static_cast<size_t>(num_pages) * kPage * kRow, 11, 1.0f);
  std::vector<int32_t> perm(num_pages);
  for (int64_t i = 0; i < num_pages; ++i) perm[i] = static_cast<int32_t>(i);
  std::shuffle(perm.begin(), perm.end(), std::mt19937(3));
  void* out_q = dalloc(static_cast<size_t>(rows * dim));
  GroupScaleLayout lay{rows, dim / 128, true, true};
  void* out_s = dalloc(static_cast<size_t>(lay.storage_numel()) * 4);
  void* out_bf16 = dalloc(static_cast<size_t>(rows * dim) * 2);
  std::vector<int32_t> lens(c.b, c.ctx), qsl(c.b + 1);
  for (int i = 0; i <= c.b; ++i) qsl[i] = i * c.k;
  int32_t* d_lens = static_cast<int32_t*>(dalloc(c.b * 4));
  int32_t* d_qsl = static_cast<int32_t*>(dalloc((c.b + 1) * 4));
  MLAFUSE_CUDA_CHECK(cudaMemcpy(d_lens, lens.data(), c.b * 4, cudaMemcpyHostToDevice));
  MLAFUSE_CUDA_CHECK(cudaMemcpy(d_qsl, qsl.data(), (c.b + 1) * 4, cudaMemcpyHostToDevice));

  std::vector<InputSet> sets(reps);
  std::vector<void*> owned;
  for (int s = 0; s < reps; ++s) {
    InputSet& in = sets[s];
    std::vector<int32_t> bt(static_cast<size_t>(c.b) * pages_per_seq), slots(rows);
    for (int i = 0; i < c.b; ++i) {
      for (int j = 0; j < pages_per_seq; ++j) {
        bt[i * pages_per_seq + j] = perm[(static_cast<int64_t>(s) * c.b + i) * pages_per_seq + j];
      }
      for (int j = 0; j < c.k; ++j) {  // the step's new tokens: the sequence's last k positions
        const int pos = c.ctx - c.k + j;
        slots[i * c.k + j] = bt[i * pages_per_seq + pos / kPage] * kPage + pos % kPage;
      }
    }
    int32_t* d_bt = static_cast<int32_t*>(dalloc(bt.size() * 4));
    MLAFUSE_CUDA_CHECK(cudaMemcpy(d_bt, bt.data(), bt.size() * 4, cudaMemcpyHostToDevice));
    in.slots = static_cast<int32_t*>(dalloc(rows * 4));
    MLAFUSE_CUDA_CHECK(cudaMemcpy(in.slots, slots.data(), rows * 4, cudaMemcpyHostToDevice));
    in.q = dalloc(static_cast<size_t>(rows) * c.h * 192 * 2);
    random_bf16(in.q, static_cast<size_t>(rows) * c.h * 192, 100 + s, 1.0f);
    in.q_cat = dalloc(static_cast<size_t>(rows) * c.h * kRow * 2);
    random_bf16(in.q_cat, static_cast<size_t>(rows) * c.h * kRow, 200 + s, 1.0f);
    in.w_uk_t = dalloc(static_cast<size_t>(w_bytes));
    random_bf16(in.w_uk_t, static_cast<size_t>(w_bytes / 2), 300 + s, 0.1f);
    void* w_uv = dalloc(static_cast<size_t>(w_bytes));
    random_bf16(w_uv, static_cast<size_t>(w_bytes / 2), 400 + s, 0.08f);
    in.kv_c = dalloc(static_cast<size_t>(rows) * kL * 2);
    random_bf16(in.kv_c, static_cast<size_t>(rows) * kL, 500 + s, 1.0f);
    in.k_pe = dalloc(static_cast<size_t>(rows) * 64 * 2);
    random_bf16(in.k_pe, static_cast<size_t>(rows) * 64, 600 + s, 1.0f);
    void* ws = dalloc(mla_workspace_bytes(rows, c.h, parts));
    owned.insert(owned.end(),
                 {d_bt, in.slots, in.q, in.q_cat, in.w_uk_t, w_uv, in.kv_c, in.k_pe, ws});
    in.ws = mla_workspace_carve(ws, rows, c.h, parts);
    MlaDecodeProblem& p = in.p;
    p.num_heads = c.h;
    p.num_queries = rows;
    p.num_tokens = rows;
    p.softmax_scale = 1.0f / std::sqrt(192.0f);
    p.num_seqs = c.b;
    p.seq_lens = d_lens;
    p.query_start_loc = d_qsl;
    p.block_table = d_bt;
    p.block_table_stride = pages_per_seq;
    p.num_pages = num_pages;
    p.q_cat = static_cast<const __nv_bfloat16*>(in.q_cat);
    p.kv_cache = static_cast<const __nv_bfloat16*>(cache);
    p.w_uv = static_cast<const __nv_bfloat16*>(w_uv);
    p.one_token_per_seq = c.k == 1;  // as an engine's one-token decode graphs run
  }
  MLAFUSE_CUDA_CHECK(cudaDeviceSynchronize());

  MlaOutputParams op;
  op.kind = MlaEpilogue::kFp8Group128;
  op.out = out_q;
  op.group_scales = static_cast<float*>(out_s);
  op.col_major = true;
  op.tma_aligned = true;
  QuantFp8GroupArgs qa;
  qa.x = out_bf16;
  qa.q = static_cast<uint8_t*>(out_q);
  qa.s = static_cast<float*>(out_s);
  qa.t_pad = rows;
  qa.d = dim;
  qa.group = 128;
  qa.col_major = true;
  qa.tma_aligned = true;
  qa.num_tokens = rows;

  // Every variant in one set of rounds (bench::GraphRounds): the first must compute the schedule
  // that `step` reuses, and it does, since the warm-up's first round runs them in this order.
  bench::GraphRounds rounds(stream);
  const int g_fused = rounds.add([&] {
    for (auto& in : sets) {
      launch_mla_decode_splitkv(in.p, in.ws, MlaSchedule::kCompute, stream);
      launch_mla_combine_up_quant(in.p, in.ws, op, stream);
    }
  });
  // An engine computes the split-KV schedule once a decode step and reuses it in every layer (as
  // FlashMLA's metadata): each set's workspace holds its schedule from the graphs above.
  const int g_step = rounds.add([&] {
    for (auto& in : sets) {
      launch_mla_decode_splitkv(in.p, in.ws, MlaSchedule::kReuse, stream);
      launch_mla_combine_up_quant(in.p, in.ws, op, stream);
    }
  });
  const int g_attn = rounds.add([&] {
    for (auto& in : sets) {
      launch_mla_decode_splitkv(in.p, in.ws, MlaSchedule::kCompute, stream);
    }
  });
  const int g_combine = rounds.add([&] {
    for (auto& in : sets) launch_mla_combine_up_quant(in.p, in.ws, op, stream);
  });
  const int g_unfused = rounds.add([&] {
    for (auto& in : sets) {
      launch_mla_decode_splitkv(in.p, in.ws, MlaSchedule::kCompute, stream);
      launch_mla_combine_latent(in.p, in.ws, stream);
      launch_mla_up_proj_cublas(cublas, in.ws.o_lat, in.p.w_uv,
                                static_cast<__nv_bfloat16*>(out_bf16), rows, c.h, stream);
      launch_quant_fp8_group(qa, num_sms, stream);
    }
  });
  const int g_op = rounds.add([&] {
    for (auto& in : sets) {
      CacheWriteArgs cw;
      cw.kv_c = static_cast<const uint16_t*>(in.kv_c);
      cw.kv_c_stride = kL;
      cw.k_pe = static_cast<const uint16_t*>(in.k_pe);
      cw.k_pe_stride = 64;
      cw.slot_mapping = in.slots;
      cw.kv_cache = static_cast<uint16_t*>(cache);
      cw.num_slots = num_pages * kPage;
      cw.t_pad = rows;
      cw.num_tokens = rows;
      launch_cache_write(cw, stream);
      launch_mla_absorb_q(cublas, static_cast<const __nv_bfloat16*>(in.q),
                          static_cast<const __nv_bfloat16*>(in.w_uk_t),
                          static_cast<__nv_bfloat16*>(in.q_cat), rows, c.h, stream);
      launch_mla_decode_splitkv(in.p, in.ws, MlaSchedule::kCompute, stream);
      launch_mla_combine_up_quant(in.p, in.ws, op, stream);
    }
  });
  // At least 50 ms of replays before timing: the clocks settle after the case's set-up.
  const std::vector<float> ms = rounds.median_ms(3, 50.0f, 15);
  // The fused chain last, untimed: a stamps build (MLAFUSE_SEESAW_STAMPS) keeps each kernel's
  // last launch, so the attention's and the combine's stamps are then one chain's
  // (bench/seesaw_stamps.py, bench/combine_stamps.py).
  rounds.replay(g_fused);
  auto us = [&](int g) { return 1000.0 * ms[g] / reps; };
  r.fused_us = us(g_fused);
  r.fused_step_us = us(g_step);
  r.attn_us = us(g_attn);
  r.combine_us = us(g_combine);
  r.unfused_us = us(g_unfused);
  r.op_us = us(g_op);
  MLAFUSE_CUDA_CHECK(cudaDeviceSynchronize());
  for (void* p : owned) MLAFUSE_CUDA_CHECK(cudaFree(p));
  for (void* p :
       {cache, out_q, out_s, out_bf16, static_cast<void*>(d_lens), static_cast<void*>(d_qsl)}) {
    MLAFUSE_CUDA_CHECK(cudaFree(p));
  }
  return r;
}

}  // namespace
}  // namespace mlafuse::cuda

int main(int argc, char** argv) {
  using namespace mlafuse::cuda;
  std::string torch_file, json_file;
  bool quick = false;
  std::vector<Case> only;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--torch" && i + 1 < argc) torch_file = argv[++i];
    if (a == "--json" && i + 1 < argc) json_file = argv[++i];
    if (a == "--quick") quick = true;
    if (a == "--case" && i + 1 < argc) {  // one case, "B,ctx,H[,K]" (e.g. for a profiler run)
      Case c{};
      const int got = std::sscanf(argv[++i], "%d,%d,%d,%d", &c.b, &c.ctx, &c.h, &c.k);
      if (got >= 3 && c.k >= 1 && c.ctx >= c.k) only.push_back(c);
    }
  }
  std::map<std::tuple<int, int, int>, double> torch_us;
  if (!torch_file.empty()) {
    std::ifstream f(torch_file);
    int b, ctx, h;
    double us;
    while (f >> b >> ctx >> h >> us) torch_us[{b, ctx, h}] = us;
  }
  const mlafuse::bench::BenchDevice dev = mlafuse::bench::open_bench_device();
  const cudaDeviceProp& prop = dev.prop;
  cublasHandle_t cublas = dev.cublas;
  cudaStream_t stream = dev.stream;
  const Ceilings& ceil = dev.ceil;
  std::vector<Case> cases = only;
  for (int h : {16, 128})
    for (int b : {1, 16, 64, 128})
      for (int ctx : {1024, 4096, 8192, 16384}) {
        if (!only.empty() || (quick && !(ctx == 4096 || (b == 128 && ctx == 1024)))) continue;
        cases.push_back({b, ctx, h});
      }
  // Multi-token prediction: 64 sequences of 2 query tokens against 128 of one (same rows).
  if (only.empty()) {
    for (int h : {16, 128}) cases.push_back({64, 4096, h, 2});
  }
  std::vector<Result> results;
  for (const Case& c : cases) {
    Result r = run_case(c, ceil, prop.multiProcessorCount, cublas, stream);
    auto it = torch_us.find({c.b, c.ctx, c.h});
    if (it != torch_us.end() && c.k == 1) r.torch_us = it->second;
    results.push_back(r);
  }

  if (!json_file.empty()) {
    FILE* f = std::fopen(json_file.c_str(), "w");
    const char* commit = std::getenv("MLAFUSE_COMMIT");
    const char* date = std::getenv("MLAFUSE_DATE");
    std::fprintf(f,
                 "{\"device\": \"%s\", \"commit\": \"%s\", \"date\": \"%s\", "
                 "\"ceilings\": {\"read_gbs\": %.1f, \"copy_gbs\": %.1f, \"gemm_tflops\": %.1f}, "
                 "\"cases\": [\n",
                 prop.name, commit ? commit : "unknown", date ? date : "unknown", ceil.read_gbs,
                 ceil.copy_gbs, ceil.gemm_tflops);
    for (size_t i = 0; i < results.size(); ++i) {
      const Result& r = results[i];
      std::fprintf(
          f,
          "  {\"B\": %d, \"K\": %d, \"ctx\": %d, \"H\": %d, \"fused_us\": %.2f, "
          "\"unfused_us\": %.2f, "
          "\"op_us\": %.2f, \"attn_us\": %.2f, \"combine_us\": %.2f, \"fused_step_us\": %.2f, "
          "\"torch_us\": %.2f, "
          "\"floor_us\": %.2f, \"bytes\": %.0f, \"flop\": %.0f}%s\n",
          r.c.b, r.c.k, r.c.ctx, r.c.h, r.fused_us, r.unfused_us, r.op_us, r.attn_us, r.combine_us,
          r.fused_step_us, r.torch_us, r.floor_us, r.bytes, r.flop,
          i + 1 < results.size() ? "," : "");
    }
    std::fprintf(f, "]}\n");
    std::fclose(f);
  }
  std::printf(
      "\nMLA decode, group-128 FP8 out (col-major TMA-aligned scales); times in us (median of "
      "graph replays)\n");
  std::printf("%5s %6s %4s | %8s %7s %7s %6s %6s | %8s %6s %6s | %8s %6s | %7s %6s %7s %7s | %7s\n",
              "B", "ctx", "H", "fused", "GB/s", "TFLOP/s", "floor", "f/flr", "unfused", "u/flr",
              "f/unf", "torch", "t/f", "attn", "a/gemm", "combine", "op", "step");
  for (const Result& r : results) {
    const double attn_flop = static_cast<double>(r.c.rows()) * r.c.ctx * 2.0 * r.c.h * (kRow + kL);
    std::printf(
        "%5s %6d %4d | %8.1f %7.0f %7.1f %6.1f %6.2f | %8.1f %6.2f %6.2f | %8.1f %6.2f | %7.1f "
        "%6.2f %7.1f %7.1f | %7.1f\n",
        r.c.label().c_str(), r.c.ctx, r.c.h, r.fused_us, r.bytes / r.fused_us / 1e3,
        r.flop / r.fused_us / 1e6, r.floor_us, r.floor_us / r.fused_us, r.unfused_us,
        r.floor_us / r.unfused_us, r.fused_us / r.unfused_us, r.torch_us,
        r.torch_us > 0 ? r.torch_us / r.fused_us : 0.0, r.attn_us,
        attn_flop / r.attn_us / 1e6 / ceil.gemm_tflops, r.combine_us, r.op_us, r.fused_step_us);
  }
  std::printf(
      "B = sequences (BxK: K query tokens each, MTP); "
      "f/flr, u/flr = floor / time (fraction of the floor) of fused and unfused; f/unf = fused / "
      "unfused; t/f = torch / fused; attn = plan + split-KV alone, a/gemm = its TFLOP/s over the "
      "GEMM ceiling; combine = combine + W_UV + quant alone; op = "
      "cache write + absorb + fused chain; step = fused without the plan (the schedule computed "
      "once a decode step, reused by every layer)\n");
  cublasDestroy(cublas);
  return 0;
}
