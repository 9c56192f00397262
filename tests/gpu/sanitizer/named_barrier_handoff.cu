// Racecheck calibration (not a test): a correct producer/consumer hand-off through named barriers,
// the pattern the seesaw decode kernel uses between its two math warpgroups. Warpgroup 0 writes
// a shared array and signals with bar.arrive; warpgroup 1 waits with bar.sync, reads another
// thread's element and signals back. PTX orders the producer's prior writes before the consumer's
// reads (bar.arrive has release semantics for the threads of the barrier), so the kernel is
// race-free, yet compute-sanitizer's racecheck reports each hand-off as a hazard. bench/device.sh
// runs racecheck on it next to the decode kernels so their reports can be read against it.
// Exit 0: the values arrived as expected.
#include <cuda_runtime.h>

#include <cstdio>

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

}  // namespace

int main() {
  float* d = nullptr;
  if (cudaMalloc(&d, 256 * sizeof(float)) != cudaSuccess) {
    std::printf("no CUDA device\n");
    return 0;
  }
  handoff_kernel<<<1, 256>>>(d);
  float h[256];
  const cudaError_t e = cudaMemcpy(h, d, sizeof h, cudaMemcpyDeviceToHost);
  if (e != cudaSuccess) {
    std::printf("handoff_kernel: %s\n", cudaGetErrorString(e));
    return 1;
  }
  for (int i = 0; i < 128; ++i) {
    const int src = (i + 1) % 128;
    const float want = static_cast<float>(kIters * src + kIters * (kIters - 1) / 2);
    if (h[128 + i] != want) {
      std::printf("thread %d read %g, expected %g\n", 128 + i, h[128 + i], want);
      return 1;
    }
  }
  std::printf("named-barrier hand-off: values as expected\n");
  cudaFree(d);
  return 0;
}
