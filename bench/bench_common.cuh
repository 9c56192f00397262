// Timing shared by the benchmarks: median event times of launches or of a captured CUDA graph.
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
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

// Captures what `record()` launches on `stream` into one graph, replays it `warmup` times
// untimed, then `timed` times between events; returns the median replay in milliseconds.
template <class F>
float median_graph_replay_ms(cudaStream_t stream, int warmup, int timed, F&& record) {
  cudaGraph_t graph;
  cudaGraphExec_t exec;
  MLAFUSE_CUDA_CHECK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal));
  record();
  MLAFUSE_CUDA_CHECK(cudaStreamEndCapture(stream, &graph));
  MLAFUSE_CUDA_CHECK(cudaGraphInstantiate(&exec, graph, 0));
  const float ms = median_event_ms(stream, warmup, timed,
                                   [&] { MLAFUSE_CUDA_CHECK(cudaGraphLaunch(exec, stream)); });
  MLAFUSE_CUDA_CHECK(cudaGraphExecDestroy(exec));
  MLAFUSE_CUDA_CHECK(cudaGraphDestroy(graph));
  return ms;
}

}  // namespace mlafuse::bench
