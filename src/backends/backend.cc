#include "mlafuse/backends/backend.h"

#include <algorithm>
#include <chrono>

namespace mlafuse {

double Backend::time_us(const std::function<void()>& body, int iters, int warmup) {
  MLAFUSE_CHECK(iters > 0, "time_us: iters must be positive, got ", iters);
  for (int i = 0; i < warmup; ++i) body();
  synchronize();
  std::vector<double> samples;
  samples.reserve(static_cast<size_t>(iters));
  for (int i = 0; i < iters; ++i) {
    auto t0 = std::chrono::steady_clock::now();
    body();
    synchronize();
    auto t1 = std::chrono::steady_clock::now();
    samples.push_back(std::chrono::duration<double, std::micro>(t1 - t0).count());
  }
  std::nth_element(samples.begin(), samples.begin() + samples.size() / 2, samples.end());
  return samples[samples.size() / 2];
}

}  // namespace mlafuse
