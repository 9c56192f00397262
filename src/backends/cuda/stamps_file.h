// Diagnostic builds only (MLAFUSE_SEESAW_STAMPS): the file of a kernel's stamps, read by the
// bench/*_stamps.py scripts: int32 grid x, grid y, slots a CTA, then one uint64 row a CTA.
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <vector>

namespace mlafuse::cuda {

// Copies the rows of `grid`'s CTAs (at most max_ctas) from the device array `symbol` and writes
// them to $env, or to `fallback` when it is unset.
template <class Symbol>
void write_stamps_file(const Symbol& symbol, dim3 grid, int slots, int max_ctas, const char* env,
                       const char* fallback) {
  const int ctas = std::min<int>(grid.x * grid.y, max_ctas);
  std::vector<uint64_t> rows(static_cast<size_t>(ctas) * slots);
  if (cudaDeviceSynchronize() != cudaSuccess ||
      cudaMemcpyFromSymbol(rows.data(), symbol, rows.size() * 8) != cudaSuccess) {
    std::fprintf(stderr, "%s: copying the stamps failed\n", fallback);
    return;
  }
  const char* path = std::getenv(env);
  FILE* f = std::fopen(path ? path : fallback, "wb");
  if (!f) return;
  const int32_t head[3] = {static_cast<int32_t>(grid.x), static_cast<int32_t>(grid.y), slots};
  std::fwrite(head, 4, 3, f);
  std::fwrite(rows.data(), 8, rows.size(), f);
  std::fclose(f);
}

}  // namespace mlafuse::cuda
