// Benchmark of the standalone quantization kernels and the paged cache write on the GPU.
//
// Group FP8 quant (G = 128, bf16 in, column-major TMA-aligned f32 scales, the layout the fused
// attention writes for o_proj; exact division, not ue8m0) of [T, 16384] for T in {1, 16, 128,
// 1024, 8192, 32768}: time, GB/s (2*T*D read + T*D + 4*T*D/G written), the fraction of the
// device-to-device copy bandwidth measured in the same run, and the ratio to torch.compile of the
// same op (bench/torch_quant.py, same timing method). The cache write of 8192 tokens into a paged
// [pages, 64, 576] bf16 cache is timed the same way against the copy.
//
// Timing: every case is one CUDA graph of R launches over S distinct buffer sets (S sized so the
// sets exceed the 50 MB L2 where memory allows: small T is L2-resident by nature), replayed 25
// times after 3 warm-ups; the time is the median replay over R. The launch shape of the group
// kernel (threads per block, groups in flight per thread, blocks per SM, walk) is swept and both
// the default's ("auto") and the best variant's times are printed. The copy rate is the better of
// cudaMemcpyAsync and a streaming copy kernel over 1 GiB. Random data, never zeros.
//
// Usage: bench_quant [--torch FILE] [--json FILE] [--quick]
//   FILE from bench/torch_quant.py: lines "T microseconds".
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <functional>
#include <map>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "backends/cuda/cache_write.h"
#include "backends/cuda/quant_kernels.h"
#include "bench_common.cuh"
#include "mlafuse/backends/cuda/cuda_check.h"
#include "mlafuse/quant/scale_layout.h"

namespace mlafuse::cuda {
namespace {

constexpr int64_t kD = 16384, kG = 128;

// Normal-ish bf16 values whose magnitude changes every 16 elements (so group scales differ).
__global__ void fill_random_bf16(uint16_t* p, size_t n, uint32_t seed) {
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<size_t>(gridDim.x) * blockDim.x) {
    uint32_t x = static_cast<uint32_t>(i) * 2654435761u ^ seed;
    x ^= x >> 13;
    x *= 0x5bd1e995u;
    x ^= x >> 15;
    uint32_t e = static_cast<uint32_t>(i / 16) * 40503u ^ seed;
    e ^= e >> 7;
    const float mag = __int_as_float((127 - 6 + static_cast<int>(e % 13)) << 23);
    const float v = mag * (static_cast<float>(x & 0xffffff) / 8388608.0f - 1.0f);
    p[i] = static_cast<uint16_t>(__float_as_uint(v) >> 16);
  }
}

void* dalloc(size_t bytes) {
  void* p = nullptr;
  MLAFUSE_CUDA_CHECK(cudaMalloc(&p, bytes == 0 ? 1 : bytes));
  return p;
}

void random_bf16(void* p, size_t n, uint32_t seed) {
  fill_random_bf16<<<2048, 256>>>(static_cast<uint16_t*>(p), n, seed);
  MLAFUSE_CUDA_CHECK(cudaGetLastError());
  MLAFUSE_CUDA_CHECK(cudaDeviceSynchronize());  // the timed work runs on another stream
}

// Median microseconds per launch: `launch(i)` for i in [0, reps) recorded into one CUDA graph.
double graph_time_us(cudaStream_t stream, int reps, const std::function<void(int)>& launch) {
  for (int i = 0; i < reps; ++i) launch(i);  // eager warm-up (module load, first touches)
  MLAFUSE_CUDA_CHECK(cudaStreamSynchronize(stream));
  const float ms = bench::median_graph_replay_ms(stream, 3, 25, [&] {
    for (int i = 0; i < reps; ++i) launch(i);
  });
  return 1000.0 * ms / reps;
}

// A streaming copy kernel: four 16-byte vectors per thread in flight, contiguous per block.
__global__ void __launch_bounds__(256)
    copy_kernel(const uint4* __restrict__ src, uint4* __restrict__ dst, size_t vecs) {
  const size_t stride = static_cast<size_t>(gridDim.x) * blockDim.x * 4;
  for (size_t base = static_cast<size_t>(blockIdx.x) * blockDim.x * 4 + threadIdx.x; base < vecs;
       base += stride) {
    uint4 v[4];
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      if (base + j * blockDim.x < vecs) v[j] = __ldcs(src + base + j * blockDim.x);
    }
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      if (base + j * blockDim.x < vecs) dst[base + j * blockDim.x] = v[j];
    }
  }
}

void launch_copy(const void* src, void* dst, size_t bytes, int sms, cudaStream_t stream) {
  const size_t vecs = bytes / 16;
  const size_t want = (vecs + 1023) / 1024;
  const int grid = static_cast<int>(std::min<size_t>(want, static_cast<size_t>(sms) * 8));
  copy_kernel<<<std::max(grid, 1), 256, 0, stream>>>(static_cast<const uint4*>(src),
                                                     static_cast<uint4*>(dst), vecs);
  MLAFUSE_CUDA_CHECK(cudaGetLastError());
}

// Device-to-device copy bandwidth, counting bytes read plus written (1 GiB per copy): the better
// of cudaMemcpyAsync and the copy kernel above.
struct CopyRates {
  double memcpy_gbps = 0, kernel_gbps = 0;
  double best() const { return std::max(memcpy_gbps, kernel_gbps); }
};
CopyRates copy_gbps(cudaStream_t stream, int sms) {
  const size_t bytes = size_t{1} << 30;
  void* a = dalloc(bytes);
  void* b = dalloc(bytes);
  random_bf16(a, bytes / 2, 1);
  random_bf16(b, bytes / 2, 2);
  CopyRates r;
  double us = graph_time_us(stream, 4, [&](int i) {
    MLAFUSE_CUDA_CHECK(
        cudaMemcpyAsync(i % 2 ? a : b, i % 2 ? b : a, bytes, cudaMemcpyDeviceToDevice, stream));
  });
  r.memcpy_gbps = 2.0 * bytes / (us * 1e3);
  us = graph_time_us(stream, 4,
                     [&](int i) { launch_copy(i % 2 ? b : a, i % 2 ? a : b, bytes, sms, stream); });
  r.kernel_gbps = 2.0 * bytes / (us * 1e3);
  cudaFree(a);
  cudaFree(b);
  return r;
}

// Buffer sets for one group-quant shape.
struct QuantSets {
  int64_t t = 0;
  std::vector<void*> x, q, s;
  explicit QuantSets(int64_t tokens) : t(tokens) {
    const int64_t in_bytes = t * kD * 2;
    const int64_t sets =
        std::clamp<int64_t>((256ll << 20) / std::max<int64_t>(in_bytes, 1) + 1, 2, 64);
    const GroupScaleLayout layout{t, kD / kG, true, true};
    for (int64_t i = 0; i < sets; ++i) {
      x.push_back(dalloc(static_cast<size_t>(in_bytes)));
      q.push_back(dalloc(static_cast<size_t>(t * kD)));
      s.push_back(dalloc(static_cast<size_t>(layout.storage_numel() * 4)));
      random_bf16(x.back(), static_cast<size_t>(t * kD), static_cast<uint32_t>(1000 + i));
    }
  }
  ~QuantSets() {
    for (auto* v : {&x, &q, &s})
      for (void* p : *v) cudaFree(p);
  }
  int size() const { return static_cast<int>(x.size()); }
  // Launches per graph: a multiple of the set count, at least 32.
  int reps() const { return size() * ((32 + size() - 1) / size()); }
};

QuantFp8GroupArgs group_args(const QuantSets& s, int i, bool ue8m0, bool col_major) {
  QuantFp8GroupArgs a;
  a.x = s.x[static_cast<size_t>(i)];
  a.x_dtype = DType::kBF16;
  a.q = static_cast<uint8_t*>(s.q[static_cast<size_t>(i)]);
  a.s = static_cast<float*>(s.s[static_cast<size_t>(i)]);
  a.t_pad = s.t;
  a.d = kD;
  a.group = kG;
  a.ue8m0 = ue8m0;
  a.col_major = col_major;
  a.tma_aligned = col_major;
  a.num_tokens = s.t;
  return a;
}

double group_bytes(int64_t t) { return 3.0 * t * kD + 4.0 * t * (kD / kG); }

struct Row {
  std::string name;
  int64_t t = 0;
  double us = 0, gbps = 0, copy_frac = 0, torch_us = 0;
  std::string variant;
};

std::string variant_name(const StreamLaunch& v) {
  if (v.unroll == 0 && v.map < 0) return "auto";
  return "b" + std::to_string(v.block) + "u" + std::to_string(v.unroll) + "o" +
         std::to_string(v.blocks_per_sm) + "m" + std::to_string(v.map) + (v.prefetch ? "p" : "");
}

}  // namespace
}  // namespace mlafuse::cuda

int main(int argc, char** argv) {
  using namespace mlafuse;
  using namespace mlafuse::cuda;
  std::string torch_file, json_file;
  bool quick = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--torch" && i + 1 < argc) torch_file = argv[++i];
    if (a == "--json" && i + 1 < argc) json_file = argv[++i];
    if (a == "--quick") quick = true;
  }
  std::map<int64_t, double> torch_us;
  if (!torch_file.empty()) {
    std::ifstream f(torch_file);
    int64_t t;
    double us;
    while (f >> t >> us) torch_us[t] = us;
  }
  cudaDeviceProp prop{};
  MLAFUSE_CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
  std::printf("device: %s (%d SMs, L2 %d MB)\n", prop.name, prop.multiProcessorCount,
              prop.l2CacheSize >> 20);
  cudaStream_t stream;
  MLAFUSE_CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  const int sms = prop.multiProcessorCount;

  const CopyRates rates = copy_gbps(stream, sms);
  const double copy = rates.best();
  std::printf("device-to-device copy: cudaMemcpy %.0f GB/s, copy kernel %.0f GB/s (read + write)\n",
              rates.memcpy_gbps, rates.kernel_gbps);

  // The first entry is the default (automatic) launch shape.
  const std::vector<StreamLaunch> variants = {
      {256, 0, 8, -1, false}, {256, 1, 8, 1, false}, {256, 2, 8, 2, false}, {256, 8, 8, 2, false},
      {256, 8, 8, 1, false},  {256, 1, 8, 1, true},  {256, 1, 8, 2, true},  {256, 2, 8, 1, true},
      {256, 2, 8, 2, true},   {256, 4, 8, 1, true},  {256, 4, 8, 2, true},  {128, 2, 16, 2, true}};
  const std::vector<StreamLaunch> row_variants = {
      {256, 0, 8, -1, false}, {256, 1, 8, 1, false}, {256, 1, 8, 0, false}, {256, 8, 8, 1, false},
      {256, 1, 8, 1, true},   {256, 2, 8, 1, true},  {256, 4, 8, 1, true}};
  std::vector<Row> rows;
  const std::vector<int64_t> tokens = quick ? std::vector<int64_t>{1, 1024, 8192}
                                            : std::vector<int64_t>{1, 16, 128, 1024, 8192, 32768};
  for (int64_t t : tokens) {
    QuantSets sets(t);
    double best = 1e30;
    StreamLaunch best_v;
    double def_us = 0;
    for (const StreamLaunch& v : variants) {
      const double us = graph_time_us(stream, sets.reps(), [&](int i) {
        launch_quant_fp8_group(group_args(sets, i % sets.size(), false, true), sms, stream, v);
      });
      std::printf("  quant_fp8_group T=%-6lld %-12s %9.2f us %7.0f GB/s\n",
                  static_cast<long long>(t), variant_name(v).c_str(), us,
                  group_bytes(t) / (us * 1e3));
      if (&v == &variants[0]) def_us = us;
      if (us < best) {
        best = us;
        best_v = v;
      }
    }
    Row r;
    r.name = "quant_fp8_group";
    r.t = t;
    r.us = def_us;
    r.gbps = group_bytes(t) / (def_us * 1e3);
    r.copy_frac = r.gbps / copy;
    r.variant = variant_name(variants[0]);
    auto it = torch_us.find(t);
    if (it != torch_us.end()) r.torch_us = it->second;
    rows.push_back(r);
    Row b = r;
    b.name = "quant_fp8_group(best)";
    b.us = best;
    b.gbps = group_bytes(t) / (best * 1e3);
    b.copy_frac = b.gbps / copy;
    b.variant = variant_name(best_v);
    rows.push_back(b);
    if (t == 8192) {  // the other layouts and ops, for the record
      {
        const double us = graph_time_us(stream, sets.reps(), [&](int i) {
          launch_quant_fp8_group(group_args(sets, i % sets.size(), true, true), sms, stream);
        });
        Row o{"quant_fp8_group ue8m0 col_tma", t, us, group_bytes(t) / (us * 1e3), 0, 0, "auto"};
        o.copy_frac = o.gbps / copy;
        rows.push_back(o);
      }
      double row_best = 1e30, row_def = 0;
      StreamLaunch row_best_v;
      for (const StreamLaunch& v : row_variants) {
        const double us = graph_time_us(stream, sets.reps(), [&](int i) {
          launch_quant_fp8_group(group_args(sets, i % sets.size(), false, false), sms, stream, v);
        });
        std::printf("  quant_fp8_group row_major T=%-6lld %-12s %9.2f us %7.0f GB/s\n",
                    static_cast<long long>(t), variant_name(v).c_str(), us,
                    group_bytes(t) / (us * 1e3));
        if (&v == &row_variants[0]) row_def = us;
        if (us < row_best) {
          row_best = us;
          row_best_v = v;
        }
      }
      for (int k = 0; k < 2; ++k) {
        const double us = k == 0 ? row_def : row_best;
        Row o{k == 0 ? "quant_fp8_group row_major" : "quant_fp8_group row_major(best)",
              t,
              us,
              group_bytes(t) / (us * 1e3),
              0,
              0,
              k == 0 ? "auto" : variant_name(row_best_v)};
        o.copy_frac = o.gbps / copy;
        rows.push_back(o);
      }
      float* scale = static_cast<float*>(dalloc(4));
      const float one = 0.02f;
      MLAFUSE_CUDA_CHECK(cudaMemcpy(scale, &one, 4, cudaMemcpyHostToDevice));
      MLAFUSE_CUDA_CHECK(cudaDeviceSynchronize());
      {
        const double us = graph_time_us(stream, sets.reps(), [&](int i) {
          QuantFp8StaticArgs a;
          a.x = sets.x[static_cast<size_t>(i % sets.size())];
          a.scale = scale;
          a.q = static_cast<uint8_t*>(sets.q[static_cast<size_t>(i % sets.size())]);
          a.t_pad = t;
          a.d = kD;
          a.num_tokens = t;
          launch_quant_fp8_static(a, sms, stream);
        });
        Row o{"quant_fp8_static", t, us, 3.0 * t * kD / (us * 1e3), 0, 0, "default"};
        o.copy_frac = o.gbps / copy;
        rows.push_back(o);
      }
      {
        const Nvfp4ScaleLayout nl{t, kD};
        uint8_t* sf = static_cast<uint8_t*>(dalloc(static_cast<size_t>(nl.storage_bytes())));
        const double us = graph_time_us(stream, sets.reps(), [&](int i) {
          QuantNvfp4Args a;
          a.x = sets.x[static_cast<size_t>(i % sets.size())];
          a.global_scale = scale;
          a.q = static_cast<uint8_t*>(sets.q[static_cast<size_t>(i % sets.size())]);
          a.sf = sf;
          a.t_pad = t;
          a.d = kD;
          a.num_tokens = t;
          launch_quant_nvfp4(a, stream);
        });
        const double bytes = 2.0 * t * kD + t * kD / 2.0 + nl.storage_bytes();
        Row o{"quant_nvfp4", t, us, bytes / (us * 1e3), 0, 0, "default"};
        o.copy_frac = o.gbps / copy;
        rows.push_back(o);
        cudaFree(sf);
      }
      cudaFree(scale);
    }
  }

  // Cache write: 8192 tokens of [512 | 64] bf16 into pages in random order.
  {
    const int64_t t = 8192, l = 512, r = 64, page = 64, pages = t / page + 64;
    const int sets = 12;
    std::vector<void*> kv(sets), pe(sets), cache(sets), slots(sets);
    std::mt19937 rng(7);
    for (int i = 0; i < sets; ++i) {
      kv[i] = dalloc(t * l * 2);
      pe[i] = dalloc(t * r * 2);
      cache[i] = dalloc(pages * page * (l + r) * 2);
      slots[i] = dalloc(t * 4);
      random_bf16(kv[i], t * l, 10 + i);
      random_bf16(pe[i], t * r, 50 + i);
      std::vector<int32_t> order(pages);
      std::iota(order.begin(), order.end(), 0);
      std::shuffle(order.begin(), order.end(), rng);
      std::vector<int32_t> host(t);
      for (int64_t k = 0; k < t; ++k)
        host[k] = order[k / page] * page + static_cast<int32_t>(k % page);
      MLAFUSE_CUDA_CHECK(cudaMemcpy(slots[i], host.data(), t * 4, cudaMemcpyHostToDevice));
    }
    MLAFUSE_CUDA_CHECK(cudaDeviceSynchronize());
    const double us = graph_time_us(stream, 36, [&](int i) {
      CacheWriteArgs a;
      a.kv_c = static_cast<const uint16_t*>(kv[i % sets]);
      a.kv_c_stride = l;
      a.k_pe = static_cast<const uint16_t*>(pe[i % sets]);
      a.k_pe_stride = r;
      a.slot_mapping = static_cast<const int32_t*>(slots[i % sets]);
      a.kv_cache = static_cast<uint16_t*>(cache[i % sets]);
      a.num_slots = pages * page;
      a.t_pad = t;
      a.latent = l;
      a.rope = r;
      a.num_tokens = t;
      launch_cache_write(a, stream);
    });
    const double bytes = 2.0 * t * (l + r) * 2 + 4.0 * t;
    Row o{"cache_write", t, us, bytes / (us * 1e3), 0, 0, "default"};
    o.copy_frac = o.gbps / copy;
    rows.push_back(o);
    // For context: the copy kernel moving the same bytes (kv_c + k_pe -> a buffer), same rotation.
    const double copy_us = graph_time_us(stream, 36, [&](int i) {
      launch_copy(kv[i % sets], cache[i % sets], t * l * 2, sms, stream);
      launch_copy(pe[i % sets], static_cast<char*>(cache[i % sets]) + t * l * 2, t * r * 2, sms,
                  stream);
    });
    Row c{"copy kernel, same bytes (2 launches)", t, copy_us, bytes / (copy_us * 1e3), 0, 0, "-"};
    c.copy_frac = c.gbps / copy;
    rows.push_back(c);
    for (auto* v : {&kv, &pe, &cache, &slots})
      for (void* p : *v) cudaFree(p);
  }

  if (!json_file.empty()) {
    FILE* f = std::fopen(json_file.c_str(), "w");
    std::fprintf(f,
                 "{\"device\": \"%s\", \"copy_gbps\": %.1f, \"memcpy_gbps\": %.1f, "
                 "\"copy_kernel_gbps\": %.1f, \"rows\": [\n",
                 prop.name, copy, rates.memcpy_gbps, rates.kernel_gbps);
    for (size_t i = 0; i < rows.size(); ++i) {
      const Row& r = rows[i];
      std::fprintf(f,
                   "  {\"name\": \"%s\", \"T\": %lld, \"D\": %lld, \"us\": %.3f, \"gbps\": %.1f, "
                   "\"copy_frac\": %.4f, \"torch_us\": %.3f, \"variant\": \"%s\"}%s\n",
                   r.name.c_str(), static_cast<long long>(r.t), static_cast<long long>(kD), r.us,
                   r.gbps, r.copy_frac, r.torch_us, r.variant.c_str(),
                   i + 1 < rows.size() ? "," : "");
    }
    std::fprintf(f, "]}\n");
    std::fclose(f);
  }
  std::printf(
      "\n%s: quantization (D = %lld, G = %lld, bf16 in) and cache write; copy %.0f GB/s "
      "(cudaMemcpy %.0f, kernel %.0f); median of CUDA-graph replays\n",
      prop.name, static_cast<long long>(kD), static_cast<long long>(kG), copy, rates.memcpy_gbps,
      rates.kernel_gbps);
  std::printf("%-30s %6s %10s %8s %7s %10s %8s %s\n", "op", "T", "us", "GB/s", "copy", "torch us",
              "torch/us", "variant");
  for (const Row& r : rows) {
    std::printf("%-30s %6lld %10.2f %8.0f %6.1f%% ", r.name.c_str(), static_cast<long long>(r.t),
                r.us, r.gbps, 100.0 * r.copy_frac);
    if (r.torch_us > 0) {
      std::printf("%10.2f %8.2f ", r.torch_us, r.torch_us / r.us);
    } else {
      std::printf("%10s %8s ", "-", "-");
    }
    std::printf("%s\n", r.variant.c_str());
  }
  return 0;
}
