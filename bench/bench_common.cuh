// Timing shared by the benchmarks: median event times of launches or of a captured CUDA graph;
// and the MLA benchmarks' random fills, allocation and hardware ceilings.
#pragma once

#include <cuda_runtime.h>

#include <cublas_v2.h>
#include <cuda_bf16.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <vector>

#include "mlafuse/backends/cuda/cuda_check.h"

namespace mlafuse::bench {

// Runs `body()` (launches on `stream`) `warmup` times untimed, then `timed` times between two
// events; returns the median in milliseconds.
template <class F>
float median_event_ms(cudaStream_t stream, int warmup, int timed, F&& body) {
  cudaEvent_t e0, e1;
  MLAFUSE_CUDA_CHECK(cudaEventCreate(&e0));
  MLAFUSE_CUDA_CHECK(cudaEventCreate(&e1));
  for (int i = 0; i < warmup; ++i) body();
  std::vector<float> ms;
  for (int i = 0; i < timed; ++i) {
    MLAFUSE_CUDA_CHECK(cudaEventRecord(e0, stream));
    body();
    MLAFUSE_CUDA_CHECK(cudaEventRecord(e1, stream));
    MLAFUSE_CUDA_CHECK(cudaEventSynchronize(e1));
    float t = 0;
    MLAFUSE_CUDA_CHECK(cudaEventElapsedTime(&t, e0, e1));
    ms.push_back(t);
  }
  MLAFUSE_CUDA_CHECK(cudaEventDestroy(e0));
  MLAFUSE_CUDA_CHECK(cudaEventDestroy(e1));
  std::nth_element(ms.begin(), ms.begin() + ms.size() / 2, ms.end());
  return ms[ms.size() / 2];
}

// ---- shared by the MLA benchmarks (bench_mla_decode, bench_mla_prefill) ----------------------
// Deterministic pseudo-random bits of element i (a hash of the index and the seed).
__device__ __forceinline__ uint32_t hash_index(size_t i, uint32_t seed) {
  uint32_t x = static_cast<uint32_t>(i) * 2654435761u ^ seed;
  x ^= x >> 13;
  x *= 0x5bd1e995u;
  x ^= x >> 15;
  return x;
}

// Pseudo-random bf16 in [-amp, amp).
static __global__ void fill_random_bf16(__nv_bfloat16* p, size_t n, uint32_t seed, float amp) {
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<size_t>(gridDim.x) * blockDim.x) {
    const uint32_t x = hash_index(i, seed);
    p[i] = __float2bfloat16(amp * (static_cast<float>(x & 0xffffff) / 8388608.0f - 1.0f));
  }
}

inline void random_bf16(void* p, size_t n, uint32_t seed, float amp) {
  fill_random_bf16<<<1024, 256>>>(static_cast<__nv_bfloat16*>(p), n, seed, amp);
  MLAFUSE_CUDA_CHECK(cudaGetLastError());
}

inline void* dalloc(size_t bytes) {
  void* p = nullptr;
  MLAFUSE_CUDA_CHECK(cudaMalloc(&p, bytes));
  return p;
}

// The hardware ceilings of this run.
struct Ceilings {
  double read_gbs = 0, copy_gbs = 0, gemm_tflops = 0;
};

static __global__ void read_stream_kernel(const uint4* p, size_t n, uint32_t* sink) {
  uint32_t acc = 0;
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<size_t>(gridDim.x) * blockDim.x) {
    const uint4 v = p[i];
    acc ^= v.x ^ v.y ^ v.z ^ v.w;
  }
  if (acc == 0x9e3779b9u) *sink = acc;  // keeps the loads alive; practically never true
}

// Each ceiling after ~20-30 ms of the same work untimed, so it is taken at settled clocks as the
// benchmark's cases are (bench::GraphRounds).
inline Ceilings measure_ceilings(cublasHandle_t cublas, cudaStream_t stream, int num_sms) {
  Ceilings c;
  const size_t bytes = size_t{2} << 30;
  void* a = nullptr;
  void* b = nullptr;
  MLAFUSE_CUDA_CHECK(cudaMalloc(&a, bytes));
  MLAFUSE_CUDA_CHECK(cudaMalloc(&b, bytes / 2));
  MLAFUSE_CUDA_CHECK(cudaMemsetAsync(a, 1, bytes, stream));
  uint32_t* sink = nullptr;
  MLAFUSE_CUDA_CHECK(cudaMalloc(&sink, 4));
  const double read_ms = bench::median_event_ms(stream, 30, 10, [&] {
    read_stream_kernel<<<num_sms * 8, 512, 0, stream>>>(static_cast<const uint4*>(a), bytes / 16,
                                                       sink);
    MLAFUSE_CUDA_CHECK(cudaGetLastError());
  });
  c.read_gbs = bytes / read_ms / 1e6;
  const double copy_ms = bench::median_event_ms(stream, 1, 10, [&] {
    MLAFUSE_CUDA_CHECK(cudaMemcpyAsync(b, a, bytes / 2, cudaMemcpyDeviceToDevice, stream));
  });
  c.copy_gbs = bytes / copy_ms / 1e6;  // read + write of bytes / 2
  const int n = 8192;                   // bf16 [n, n] x [n, n], f32 accumulate
  const float one = 1.0f, zero = 0.0f;
  void* c_mat = nullptr;
  MLAFUSE_CUDA_CHECK(cudaMalloc(&c_mat, size_t{2} * n * n));
  random_bf16(a, size_t{n} * n * 2, 7, 1.0f);
  MLAFUSE_CUBLAS_CHECK(cublasSetStream(cublas, stream));
  const double gemm_ms = bench::median_event_ms(stream, 20, 10, [&] {
    MLAFUSE_CUBLAS_CHECK(cublasGemmEx(cublas, CUBLAS_OP_N, CUBLAS_OP_N, n, n, n, &one, a,
                                      CUDA_R_16BF, n, static_cast<char*>(a) + size_t{2} * n * n,
                                      CUDA_R_16BF, n, &zero, c_mat, CUDA_R_16BF, n,
                                      CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
  });
  c.gemm_tflops = 2.0 * n * n * n / gemm_ms / 1e9;
  for (void* p : {a, b, c_mat, static_cast<void*>(sink)}) MLAFUSE_CUDA_CHECK(cudaFree(p));
  return c;
}

// What every MLA benchmark opens with: the device (printed), a cuBLAS handle with a 32 MiB
// workspace on a non-blocking stream, and the ceilings of this run (printed).
struct BenchDevice {
  cudaDeviceProp prop{};
  cublasHandle_t cublas = nullptr;
  cudaStream_t stream = nullptr;
  Ceilings ceil;
};
inline BenchDevice open_bench_device() {
  BenchDevice d;
  MLAFUSE_CUDA_CHECK(cudaGetDeviceProperties(&d.prop, 0));
  std::printf("device: %s (%d SMs, L2 %d MB)\n", d.prop.name, d.prop.multiProcessorCount,
              d.prop.l2CacheSize >> 20);
  MLAFUSE_CUBLAS_CHECK(cublasCreate(&d.cublas));
  MLAFUSE_CUDA_CHECK(cudaStreamCreateWithFlags(&d.stream, cudaStreamNonBlocking));
  void* cublas_ws = nullptr;  // lives as long as the process
  MLAFUSE_CUDA_CHECK(cudaMalloc(&cublas_ws, 32u << 20));
  MLAFUSE_CUBLAS_CHECK(cublasSetWorkspace(d.cublas, cublas_ws, 32u << 20));
  d.ceil = measure_ceilings(d.cublas, d.stream, d.prop.multiProcessorCount);
  std::printf("ceilings: read %.0f GB/s, copy %.0f GB/s, bf16 GEMM %.0f TFLOP/s\n",
              d.ceil.read_gbs, d.ceil.copy_gbs, d.ceil.gemm_tflops);
  return d;
}

// The variants of one benchmark case, timed together. Each is captured once into a graph; then
// every graph is replayed once a round, in an order rotated from round to round, so a clock
// ramp or a drift in power state falls on every variant alike instead of on the one timed first
// (one variant's 15 replays in a row gave the first variant of a case up to 11 us more than the
// rest in docs/PERF.md run 43).
class GraphRounds {
 public:
  explicit GraphRounds(cudaStream_t stream) : stream_(stream) {}
  GraphRounds(const GraphRounds&) = delete;
  GraphRounds& operator=(const GraphRounds&) = delete;
  ~GraphRounds() {
    for (cudaGraphExec_t e : execs_) cudaGraphExecDestroy(e);
  }

  // Captures what `record()` launches on the stream; returns the variant's index.
  template <class F>
  int add(F&& record) {
    cudaGraph_t graph;
    cudaGraphExec_t exec;
    MLAFUSE_CUDA_CHECK(cudaStreamBeginCapture(stream_, cudaStreamCaptureModeThreadLocal));
    record();
    MLAFUSE_CUDA_CHECK(cudaStreamEndCapture(stream_, &graph));
    MLAFUSE_CUDA_CHECK(cudaGraphInstantiate(&exec, graph, 0));
    MLAFUSE_CUDA_CHECK(cudaGraphDestroy(graph));
    execs_.push_back(exec);
    return static_cast<int>(execs_.size()) - 1;
  }

  // One untimed replay of variant g, waited for.
  void replay(int g) {
    MLAFUSE_CUDA_CHECK(cudaGraphLaunch(execs_[g], stream_));
    MLAFUSE_CUDA_CHECK(cudaStreamSynchronize(stream_));
  }

  // Untimed rounds until at least `warmup_rounds` ran and `min_warm_ms` of GPU time passed, then
  // `timed_rounds` rounds with each replay between its own events. Returns each variant's median
  // replay in milliseconds, in the order of add().
  std::vector<float> median_ms(int warmup_rounds, float min_warm_ms, int timed_rounds) {
    const int n = static_cast<int>(execs_.size());
    if (min_warm_ms <= 0.0f) {  // a fixed number of warm-up rounds, launched back to back
      for (int round = 0; round < warmup_rounds; ++round) {
        for (int g = 0; g < n; ++g) MLAFUSE_CUDA_CHECK(cudaGraphLaunch(execs_[g], stream_));
      }
      return timed_medians(timed_rounds);
    }
    cudaEvent_t w0, w1;
    MLAFUSE_CUDA_CHECK(cudaEventCreate(&w0));
    MLAFUSE_CUDA_CHECK(cudaEventCreate(&w1));
    MLAFUSE_CUDA_CHECK(cudaEventRecord(w0, stream_));
    for (int round = 0;; ++round) {
      for (int g = 0; g < n; ++g) MLAFUSE_CUDA_CHECK(cudaGraphLaunch(execs_[g], stream_));
      MLAFUSE_CUDA_CHECK(cudaEventRecord(w1, stream_));
      MLAFUSE_CUDA_CHECK(cudaEventSynchronize(w1));
      float warm = 0;
      MLAFUSE_CUDA_CHECK(cudaEventElapsedTime(&warm, w0, w1));
      if (round + 1 >= warmup_rounds && warm >= min_warm_ms) break;
    }
    MLAFUSE_CUDA_CHECK(cudaEventDestroy(w0));
    MLAFUSE_CUDA_CHECK(cudaEventDestroy(w1));
    return timed_medians(timed_rounds);
  }

 private:
  std::vector<float> timed_medians(int timed_rounds) {
    const int n = static_cast<int>(execs_.size());
    std::vector<cudaEvent_t> ev(static_cast<size_t>(timed_rounds) * n * 2);
    for (cudaEvent_t& e : ev) MLAFUSE_CUDA_CHECK(cudaEventCreate(&e));
    for (int round = 0; round < timed_rounds; ++round) {
      for (int i = 0; i < n; ++i) {
        const int g = (round + i) % n;
        cudaEvent_t* e = &ev[(static_cast<size_t>(round) * n + g) * 2];
        MLAFUSE_CUDA_CHECK(cudaEventRecord(e[0], stream_));
        MLAFUSE_CUDA_CHECK(cudaGraphLaunch(execs_[g], stream_));
        MLAFUSE_CUDA_CHECK(cudaEventRecord(e[1], stream_));
      }
    }
    MLAFUSE_CUDA_CHECK(cudaStreamSynchronize(stream_));
    std::vector<float> med(n);
    for (int g = 0; g < n; ++g) {
      std::vector<float> ms(timed_rounds);
      for (int round = 0; round < timed_rounds; ++round) {
        const cudaEvent_t* e = &ev[(static_cast<size_t>(round) * n + g) * 2];
        MLAFUSE_CUDA_CHECK(cudaEventElapsedTime(&ms[round], e[0], e[1]));
      }
      std::nth_element(ms.begin(), ms.begin() + timed_rounds / 2, ms.end());
      med[g] = ms[timed_rounds / 2];
    }
    for (cudaEvent_t e : ev) MLAFUSE_CUDA_CHECK(cudaEventDestroy(e));
    return med;
  }

  cudaStream_t stream_;
  std::vector<cudaGraphExec_t> execs_;
};

// One graph of what `record()` launches on `stream`: `warmup` replays untimed, then the median of
// `timed` replays, in milliseconds.
template <class F>
float median_graph_replay_ms(cudaStream_t stream, int warmup, int timed, F&& record) {
  GraphRounds rounds(stream);
  rounds.add(record);
  return rounds.median_ms(warmup, 0.0f, timed)[0];
}

// Median microseconds of one of the graph's R calls.
template <class F>
double time_graph(cudaStream_t stream, int reps, F&& body) {
  return 1000.0 * median_graph_replay_ms(stream, 3, 15, body) / reps;
}

}  // namespace mlafuse::bench
