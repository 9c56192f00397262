// Racecheck calibration (not a test): correct programs with the barrier patterns of our kernels,
// so racecheck's reports on the kernels can be read against its reports here.
//   handoff (default): a producer/consumer hand-off through named barriers, the pattern the
//     seesaw decode kernel uses between its two math warpgroups. Warpgroup 0 writes a shared array
//     and signals with bar.arrive; warpgroup 1 waits with bar.sync, reads another thread's element
//     and signals back. PTX orders the producer's prior writes before the consumer's reads
//     (bar.arrive has release semantics for the threads of the barrier), so it is race-free.
//   partial: warps 0-1 meet at a named barrier of 64 threads, then all 256 threads exchange
//     values through shared memory between __syncthreads() (the combine kernel's former shape).
// bench/device.sh runs racecheck on both next to the kernels. Exit 0: the values arrived as
// expected.
#include <cuda_runtime.h>

#include <cstdio>
#include <cstring>

namespace {

__device__ __forceinline__ void bar_arrive(int id, int threads) {
  asm volatile("bar.arrive %0, %1;" ::"r"(id), "r"(threads) : "memory");
}
__device__ __forceinline__ void bar_sync(int id, int threads) {
  asm volatile("bar.sync %0, %1;" ::"r"(id), "r"(threads) : "memory");
}

constexpr int kIters = 4;

__global__ void handoff_kernel(float* out) {
  __shared__ float s[128];
  const int wg = threadIdx.x / 128;
  const int i = threadIdx.x % 128;
  float acc = 0.0f;
  for (int it = 0; it < kIters; ++it) {
    if (wg == 0) {
      if (it > 0) bar_sync(2, 256);  // the consumer has read the previous value
      s[i] = static_cast<float>(it + i);
      bar_arrive(1, 256);  // the value is ready
    } else {
      bar_sync(1, 256);
      acc += s[(i + 1) % 128];
      bar_arrive(2, 256);
    }
  }
  if (wg == 0) bar_sync(2, 256);  // the last hand-off back
  out[threadIdx.x] = acc;
}

__global__ void partial_kernel(float* out) {
  __shared__ float s[256];
  __shared__ int w01[2];
  const int t = threadIdx.x;
  if (t < 64) {
    if (t % 32 == 0) w01[t / 32] = t / 32 + 1;
    bar_sync(1, 64);  // warps 0 and 1 only
    if (t == 0) w01[0] += w01[1];
  }
  __syncthreads();
  float acc = static_cast<float>(w01[0]);  // 3
  for (int it = 0; it < kIters; ++it) {
    s[t] = static_cast<float>(it + t);
    __syncthreads();
    acc += s[(t + 97) % 256];  // another warp's element
    __syncthreads();
  }
  out[t] = acc;
}

}  // namespace

int main(int argc, char** argv) {
  const bool partial = argc > 1 && std::strcmp(argv[1], "partial") == 0;
  float* d = nullptr;
  if (cudaMalloc(&d, 256 * sizeof(float)) != cudaSuccess) {
    std::printf("no CUDA device\n");
    return 0;
  }
  if (partial) {
    partial_kernel<<<1, 256>>>(d);
  } else {
    handoff_kernel<<<1, 256>>>(d);
  }
  float h[256];
  const cudaError_t e = cudaMemcpy(h, d, sizeof h, cudaMemcpyDeviceToHost);
  if (e != cudaSuccess) {
    std::printf("%s: %s\n", partial ? "partial_kernel" : "handoff_kernel", cudaGetErrorString(e));
    return 1;
  }
  for (int t = partial ? 0 : 128; t < 256; ++t) {
    const int src = partial ? (t + 97) % 256 : (t - 128 + 1) % 128;
    const float want = static_cast<float>(kIters * src + kIters * (kIters - 1) / 2) +
                       (partial ? 3.0f : 0.0f);
    if (h[t] != want) {
      std::printf("thread %d read %g, expected %g\n", t, h[t], want);
      return 1;
    }
  }
  std::printf("%s: values as expected\n", partial ? "partial barrier" : "named-barrier hand-off");
  cudaFree(d);
  return 0;
}
