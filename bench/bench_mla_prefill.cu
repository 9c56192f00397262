// Benchmark of MLA prefill on the GPU in the expanded form (mla_prefill.h): the attention kernel
// with the fused group-128 FP8 epilogue against the same kernel writing bf16 followed by our
// standalone quant kernel, the kernel's TFLOP/s against the bf16 GEMM ceiling of the same run,
// and the whole prefill (context gather + kv_b_proj up-projection + fused attention) with the
// up-projection on the bf16 weight (cuBLAS) and on the block-FP8 checkpoint weight (our group
// quant + cuBLASLt).
//
// FLOP counts only the causal work: attention 2*H*(192+128) per (query, visible context token),
// up-projection 2*rows*512*H*256. Every case's K/V (H*256 bf16 a context token) exceeds L2, so one
// input set is replayed (CUDA graph, median of replays). Random data.
//
// Usage: bench_mla_prefill [--torch FILE] [--json FILE] [--quick] [--case S,Q,CTX,H ...]
//   S prompts of Q new tokens each on CTX cached tokens, H heads.
//   FILE from bench/torch_mla_prefill.py: lines "S Q CTX H sdpa_us chain_us whole_us".
#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "backends/cuda/device_context.h"
#include "backends/cuda/mla_prefill.h"
#include "backends/cuda/quant_kernels.h"
#include "bench_common.cuh"
#include "mlafuse/backends/cuda/cuda_check.h"
#include "mlafuse/quant/scale_layout.h"

namespace mlafuse::cuda {
namespace {

using bench::Ceilings;
using bench::dalloc;
using bench::random_bf16;
using bench::time_graph;

constexpr int kL = 512, kRow = 576, kV = 128, kPage = 64;

struct Case {
  int seqs, q, ctx, h;
};

struct Result {
  Case c;
  double attn_bf16_us = 0, attn_fused_us = 0, quant_us = 0, unfused_us = 0, attn_free_us = 0;
  double gather_us = 0, up_bf16_us = 0, up_fp8_us = 0, whole_bf16_us = 0, whole_fp8_us = 0;
  bool fp8_ok = false;
  double attn_flop = 0, up_flop = 0;
  double torch_sdpa_us = 0, torch_chain_us = 0, torch_whole_us = 0;
};

// FP8 e4m3 weight codes that are never NaN (0x7f / 0xff), from a hash of the index.
__global__ void fill_fp8_codes(uint8_t* p, size_t n, uint32_t seed) {
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<size_t>(gridDim.x) * blockDim.x) {
    p[i] = static_cast<uint8_t>(bench::hash_index(i, seed) & 0xf7u);  // never 0x7f / 0xff
  }
}

Result run_case(const Case& c, DeviceContext& dc, cudaStream_t stream) {
  Result r;
  r.c = c;
  const int h = c.h;
  const int seq_len = c.ctx + c.q;
  const int n = c.seqs * c.q;
  const int64_t total_kv = static_cast<int64_t>(c.seqs) * seq_len;
  const int64_t kv_rows4 = (total_kv + 3) / 4 * 4;  // cuBLASLt's FP8 scale layout wants % 4
  const int64_t dim = static_cast<int64_t>(h) * kV;
  for (int i = 0; i < c.q; ++i) r.attn_flop += c.ctx + i + 1;
  r.attn_flop *= 2.0 * h * (192 + kV) * c.seqs;
  r.up_flop = 2.0 * static_cast<double>(total_kv) * kL * h * kMlaPrefillKvDim;

  // Paged cache: every sequence's pages, shuffled.
  const int pages_per_seq = (seq_len + kPage - 1) / kPage;
  const int64_t num_pages = static_cast<int64_t>(c.seqs) * pages_per_seq;
  void* cache = dalloc(static_cast<size_t>(num_pages) * kPage * kRow * 2);
  random_bf16(cache, static_cast<size_t>(num_pages) * kPage * kRow, 11, 1.0f);
  std::vector<int32_t> perm(static_cast<size_t>(num_pages));
  for (int64_t i = 0; i < num_pages; ++i) perm[i] = static_cast<int32_t>(i);
  std::shuffle(perm.begin(), perm.end(), std::mt19937(3));
  std::vector<int32_t> lens(c.seqs, seq_len), qsl(c.seqs + 1);
  for (int i = 0; i <= c.seqs; ++i) qsl[i] = i * c.q;
  auto upload_i32 = [](const std::vector<int32_t>& v) {
    auto* d = static_cast<int32_t*>(dalloc(v.size() * 4));
    MLAFUSE_CUDA_CHECK(cudaMemcpy(d, v.data(), v.size() * 4, cudaMemcpyHostToDevice));
    return d;
  };
  int32_t* d_lens = upload_i32(lens);
  int32_t* d_qsl = upload_i32(qsl);
  int32_t* d_bt = upload_i32(perm);  // row s = pages [s * pages_per_seq, ...) of perm
  auto* kv_start = static_cast<int32_t*>(dalloc((c.seqs + 1) * 4));

  void* q = dalloc(static_cast<size_t>(n) * h * 192 * 2);
  random_bf16(q, static_cast<size_t>(n) * h * 192, 100, 1.0f);
  void* w_bf16 = dalloc(static_cast<size_t>(h) * kMlaPrefillKvDim * kL * 2);
  random_bf16(w_bf16, static_cast<size_t>(h) * kMlaPrefillKvDim * kL, 200, 0.1f);
  auto* w_fp8 = static_cast<uint8_t*>(dalloc(static_cast<size_t>(h) * kMlaPrefillKvDim * kL));
  fill_fp8_codes<<<1024, 256, 0, stream>>>(w_fp8, static_cast<size_t>(h) * kMlaPrefillKvDim * kL,
                                           300);
  MLAFUSE_CUDA_CHECK(cudaGetLastError());
  const std::vector<float> w_scales_h(static_cast<size_t>(h) * 2 * (kL / 128), 0.1f / 448.0f);
  auto* w_scales = static_cast<float*>(dalloc(w_scales_h.size() * 4));
  MLAFUSE_CUDA_CHECK(
      cudaMemcpy(w_scales, w_scales_h.data(), w_scales_h.size() * 4, cudaMemcpyHostToDevice));

  auto* latent = static_cast<__nv_bfloat16*>(dalloc(static_cast<size_t>(kv_rows4) * kL * 2));
  MLAFUSE_CUDA_CHECK(cudaMemset(latent, 0, static_cast<size_t>(kv_rows4) * kL * 2));
  auto* k_pe = static_cast<__nv_bfloat16*>(dalloc(static_cast<size_t>(total_kv) * 64 * 2));
  auto* kv =
      static_cast<__nv_bfloat16*>(dalloc(static_cast<size_t>(kv_rows4) * h * kMlaPrefillKvDim * 2));
  auto* latent_q = static_cast<uint8_t*>(dalloc(static_cast<size_t>(kv_rows4) * kL));
  auto* latent_s = static_cast<float*>(dalloc(static_cast<size_t>(kv_rows4) * (kL / 128) * 4));

  void* out_q = dalloc(static_cast<size_t>(n) * dim);
  GroupScaleLayout lay{n, dim / 128, true, true};
  void* out_s = dalloc(static_cast<size_t>(lay.storage_numel()) * 4);
  void* out_bf16 = dalloc(static_cast<size_t>(n) * dim * 2);

  MlaPrefillGather g;
  g.num_seqs = c.seqs;
  g.max_seq_len = seq_len;
  g.seq_lens = d_lens;
  g.kv_start = kv_start;
  g.block_table = d_bt;
  g.block_table_stride = pages_per_seq;
  g.page_size = kPage;
  g.num_pages = num_pages;
  g.kv_cache = static_cast<const __nv_bfloat16*>(cache);
  g.latent = latent;
  g.k_pe = k_pe;
  g.rows = total_kv;

  MlaPrefillProblem p;
  p.num_heads = h;
  p.num_seqs = c.seqs;
  p.max_q_len = c.q;
  p.q_rows = n;
  p.out_rows = n;
  p.kv_rows = static_cast<int>(total_kv);
  p.softmax_scale = 1.0f / std::sqrt(192.0f);
  p.q_start = d_qsl;
  p.kv_start = kv_start;
  p.q = static_cast<const __nv_bfloat16*>(q);
  p.kv = kv;
  p.k_pe = k_pe;

  MlaOutputParams fused;
  fused.kind = MlaEpilogue::kFp8Group128;
  fused.out = out_q;
  fused.group_scales = static_cast<float*>(out_s);
  fused.col_major = true;
  fused.tma_aligned = true;
  MlaOutputParams plain;
  plain.kind = MlaEpilogue::kBf16;
  plain.out = out_bf16;
  QuantFp8GroupArgs qa;
  qa.x = out_bf16;
  qa.q = static_cast<uint8_t*>(out_q);
  qa.s = static_cast<float*>(out_s);
  qa.t_pad = n;
  qa.d = dim;
  qa.group = 128;
  qa.col_major = true;
  qa.tma_aligned = true;
  qa.num_tokens = n;

  // K/V in place once (the attention-only timings read it).
  launch_mla_prefill_kv_plan(d_lens, c.seqs, kv_start, stream);
  launch_mla_prefill_gather(g, stream);
  r.fp8_ok = launch_mla_prefill_up_proj_fp8(dc, latent, latent_q, latent_s, w_fp8, w_scales, kv,
                                            static_cast<int>(kv_rows4), h, stream);
  launch_mla_prefill_up_proj_bf16(dc.cublas, latent, static_cast<const __nv_bfloat16*>(w_bf16), kv,
                                  static_cast<int>(total_kv), h, stream);
  MLAFUSE_CUDA_CHECK(cudaStreamSynchronize(stream));

  r.attn_bf16_us = time_graph(stream, 1, [&] { launch_mla_prefill_attention(p, plain, stream); });
  r.attn_fused_us = time_graph(stream, 1, [&] { launch_mla_prefill_attention(p, fused, stream); });
  MlaPrefillProblem free_running = p;  // the math warpgroups without the ping-pong
  free_running.pingpong = false;
  r.attn_free_us =
      time_graph(stream, 1, [&] { launch_mla_prefill_attention(free_running, plain, stream); });
  r.quant_us = time_graph(stream, 1, [&] { launch_quant_fp8_group(qa, dc.num_sms, stream); });
  r.unfused_us = time_graph(stream, 1, [&] {
    launch_mla_prefill_attention(p, plain, stream);
    launch_quant_fp8_group(qa, dc.num_sms, stream);
  });
  r.gather_us = time_graph(stream, 1, [&] {
    launch_mla_prefill_kv_plan(d_lens, c.seqs, kv_start, stream);
    launch_mla_prefill_gather(g, stream);
  });
  r.up_bf16_us = time_graph(stream, 1, [&] {
    launch_mla_prefill_up_proj_bf16(dc.cublas, latent, static_cast<const __nv_bfloat16*>(w_bf16),
                                    kv, static_cast<int>(total_kv), h, stream);
  });
  r.whole_bf16_us = time_graph(stream, 1, [&] {
    launch_mla_prefill_kv_plan(d_lens, c.seqs, kv_start, stream);
    launch_mla_prefill_gather(g, stream);
    launch_mla_prefill_up_proj_bf16(dc.cublas, latent, static_cast<const __nv_bfloat16*>(w_bf16),
                                    kv, static_cast<int>(total_kv), h, stream);
    launch_mla_prefill_attention(p, fused, stream);
  });
  if (r.fp8_ok) {
    r.up_fp8_us = time_graph(stream, 1, [&] {
      launch_mla_prefill_up_proj_fp8(dc, latent, latent_q, latent_s, w_fp8, w_scales, kv,
                                     static_cast<int>(kv_rows4), h, stream);
    });
    r.whole_fp8_us = time_graph(stream, 1, [&] {
      launch_mla_prefill_kv_plan(d_lens, c.seqs, kv_start, stream);
      launch_mla_prefill_gather(g, stream);
      launch_mla_prefill_up_proj_fp8(dc, latent, latent_q, latent_s, w_fp8, w_scales, kv,
                                     static_cast<int>(kv_rows4), h, stream);
      launch_mla_prefill_attention(p, fused, stream);
    });
  }
  MLAFUSE_CUDA_CHECK(cudaDeviceSynchronize());
  for (void* ptr :
       {cache, static_cast<void*>(d_lens), static_cast<void*>(d_qsl), static_cast<void*>(d_bt),
        static_cast<void*>(kv_start), q, w_bf16, static_cast<void*>(w_fp8),
        static_cast<void*>(w_scales), static_cast<void*>(latent), static_cast<void*>(k_pe),
        static_cast<void*>(kv), static_cast<void*>(latent_q), static_cast<void*>(latent_s), out_q,
        out_s, out_bf16}) {
    MLAFUSE_CUDA_CHECK(cudaFree(ptr));
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
    if (a == "--case" && i + 1 < argc) {
      Case c{};
      if (std::sscanf(argv[++i], "%d,%d,%d,%d", &c.seqs, &c.q, &c.ctx, &c.h) == 4) {
        only.push_back(c);
      }
    }
  }
  std::map<std::tuple<int, int, int, int>, std::tuple<double, double, double>> torch_us;
  if (!torch_file.empty()) {
    std::ifstream f(torch_file);
    int s, q, ctx, h;
    double sdpa, chain, whole;
    while (f >> s >> q >> ctx >> h >> sdpa >> chain >> whole) {
      torch_us[{s, q, ctx, h}] = {sdpa, chain, whole};
    }
  }
  const mlafuse::bench::BenchDevice dev = mlafuse::bench::open_bench_device();
  const cudaDeviceProp& prop = dev.prop;
  const Ceilings& ceil = dev.ceil;
  cudaStream_t stream = dev.stream;
  DeviceContext dc;  // what the block-FP8 linear (cuBLASLt) runs with
  MLAFUSE_CUDA_CHECK(cudaGetDevice(&dc.device));
  dc.num_sms = prop.multiProcessorCount;
  dc.cublas = dev.cublas;
  MLAFUSE_CUBLAS_CHECK(cublasLtCreate(&dc.cublaslt));
  dc.stream = stream;
  dc.ensure_workspace(32u << 20);  // cuBLASLt's, allocated before any capture
  std::vector<Case> cases = only;
  if (only.empty()) {
    cases = {{1, 4096, 0, 128}, {8, 512, 2048, 128}, {16, 128, 0, 128}};
    if (!quick) {
      cases.push_back({1, 4096, 0, 16});
      cases.push_back({8, 512, 2048, 16});
    }
  }
  std::vector<Result> results;
  for (const Case& c : cases) {
    Result r = run_case(c, dc, stream);
    auto it = torch_us.find({c.seqs, c.q, c.ctx, c.h});
    if (it != torch_us.end())
      std::tie(r.torch_sdpa_us, r.torch_chain_us, r.torch_whole_us) = it->second;
    results.push_back(r);
  }

  if (!json_file.empty()) {
    FILE* f = std::fopen(json_file.c_str(), "w");
    const char* commit = std::getenv("MLAFUSE_COMMIT");
    const char* date = std::getenv("MLAFUSE_DATE");
    std::fprintf(f,
                 "{\"device\": \"%s\", \"commit\": \"%s\", \"date\": \"%s\", \"kind\": "
                 "\"mla_prefill\", "
                 "\"ceilings\": {\"read_gbs\": %.1f, \"copy_gbs\": %.1f, \"gemm_tflops\": %.1f}, "
                 "\"prefill_cases\": [\n",
                 prop.name, commit ? commit : "unknown", date ? date : "unknown", ceil.read_gbs,
                 ceil.copy_gbs, ceil.gemm_tflops);
    for (size_t i = 0; i < results.size(); ++i) {
      const Result& r = results[i];
      std::fprintf(f,
                   "  {\"seqs\": %d, \"q\": %d, \"ctx\": %d, \"H\": %d, \"attn_bf16_us\": %.2f, "
                   "\"attn_fused_us\": %.2f, \"attn_free_us\": %.2f, \"quant_us\": %.2f, "
                   "\"unfused_us\": %.2f, "
                   "\"gather_us\": %.2f, \"up_bf16_us\": %.2f, \"up_fp8_us\": %.2f, "
                   "\"whole_bf16_us\": %.2f, \"whole_fp8_us\": %.2f, \"attn_flop\": %.0f, "
                   "\"up_flop\": %.0f, \"torch_sdpa_us\": %.2f, \"torch_chain_us\": %.2f, "
                   "\"torch_whole_us\": %.2f}%s\n",
                   r.c.seqs, r.c.q, r.c.ctx, r.c.h, r.attn_bf16_us, r.attn_fused_us, r.attn_free_us,
                   r.quant_us, r.unfused_us, r.gather_us, r.up_bf16_us, r.up_fp8_us,
                   r.whole_bf16_us, r.whole_fp8_us, r.attn_flop, r.up_flop, r.torch_sdpa_us,
                   r.torch_chain_us, r.torch_whole_us, i + 1 < results.size() ? "," : "");
    }
    std::fprintf(f, "]}\n");
    std::fclose(f);
  }
  std::printf(
      "\nMLA prefill (expanded form), group-128 FP8 out (col-major TMA-aligned scales); times in "
      "us (median of graph replays)\n");
  std::printf("%3s %5s %5s %4s | %8s %7s %6s | %8s %6s | %8s %6s | %8s %6s %8s %6s | %8s %8s\n",
              "S", "Q", "ctx", "H", "bf16", "TFLOP/s", "a/gemm", "fused", "f/bf16", "unfused",
              "f/unf", "t_chain", "t/f", "whole", "f8", "t_whole", "t/w");
  for (const Result& r : results) {
    const double whole = r.fp8_ok ? r.whole_fp8_us : r.whole_bf16_us;
    std::printf(
        "%3d %5d %5d %4d | %8.1f %7.1f %6.2f | %8.1f %6.3f | %8.1f %6.3f | %8.1f %6.2f %8.1f %6s "
        "| %8.1f %8.2f\n",
        r.c.seqs, r.c.q, r.c.ctx, r.c.h, r.attn_bf16_us, r.attn_flop / r.attn_bf16_us / 1e6,
        r.attn_flop / r.attn_bf16_us / 1e6 / ceil.gemm_tflops, r.attn_fused_us,
        r.attn_fused_us / r.attn_bf16_us, r.unfused_us, r.attn_fused_us / r.unfused_us,
        r.torch_chain_us, r.torch_chain_us > 0 ? r.torch_chain_us / r.attn_fused_us : 0.0, whole,
        r.fp8_ok ? "yes" : "no", r.torch_whole_us,
        r.torch_whole_us > 0 ? r.torch_whole_us / whole : 0.0);
  }
  std::printf(
      "bf16 = attention kernel with the bf16 epilogue, a/gemm = its causal TFLOP/s over the GEMM "
      "ceiling; fused = the same kernel writing group-128 FP8, f/bf16 = fused / bf16 (target <= "
      "1.03); unfused = bf16 kernel + standalone quant kernel, f/unf = fused / unfused; t_chain = "
      "torch SDPA (fastest backend) + compiled quant, t/f = t_chain / fused (target >= 1.3); "
      "whole = gather + up-projection (f8: block-FP8 weight on cuBLASLt, else bf16 cuBLAS) + "
      "fused attention, t_whole = the same chain in torch, t/w = t_whole / whole\n");
  for (const Result& r : results) {
    std::printf(
        "  S=%d Q=%d ctx=%d H=%d: gather %.1f us, up-proj bf16 %.1f us (%.0f TFLOP/s), "
        "fp8 %.1f us (%.0f TFLOP/s), quant alone %.1f us, whole with bf16 up-proj %.1f us, "
        "bf16 attention without ping-pong %.1f us\n",
        r.c.seqs, r.c.q, r.c.ctx, r.c.h, r.gather_us, r.up_bf16_us, r.up_flop / r.up_bf16_us / 1e6,
        r.up_fp8_us, r.up_fp8_us > 0 ? r.up_flop / r.up_fp8_us / 1e6 : 0.0, r.quant_us,
        r.whole_bf16_us, r.attn_free_us);
  }
  cublasDestroy(dc.cublas);
  cublasLtDestroy(dc.cublaslt);
  return 0;
}
