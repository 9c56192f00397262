#include "backends/cuda/device_context.h"

#include "mlafuse/backends/cuda/cuda_check.h"
#include "mlafuse/core/error.h"

namespace mlafuse::cuda {

void* DeviceContext::ensure_workspace(size_t bytes) {
  if (bytes <= workspace_bytes) return workspace;
  cudaStreamCaptureStatus status = cudaStreamCaptureStatusNone;
  MLAFUSE_CUDA_CHECK(cudaStreamIsCapturing(stream, &status));
  MLAFUSE_CHECK(status == cudaStreamCaptureStatusNone, "the CUDA backend's workspace must grow to ",
                bytes, " bytes (it holds ", workspace_bytes,
                ") while a CUDA graph is being captured; run the largest padded token count once "
                "before capturing");
  if (workspace != nullptr) {
    MLAFUSE_CUDA_CHECK(cudaStreamSynchronize(stream));  // queued work may still read the old one
    MLAFUSE_CUDA_CHECK(cudaFree(workspace));
    workspace = nullptr;
    workspace_bytes = 0;
    // Graphs captured over the freed buffer are stale from here on, even if the allocation below
    // fails (their replay would otherwise run on freed memory).
    ++workspace_generation;
  }
  const cudaError_t err = cudaMalloc(&workspace, bytes);
  if (err != cudaSuccess) {
    workspace = nullptr;
    cudaGetLastError();  // not left behind for the next launch's error check
    MLAFUSE_FAIL("the CUDA backend's workspace: cudaMalloc of ", bytes,
                 " bytes failed: ", cudaGetErrorString(err));
  }
  workspace_bytes = bytes;
  ++workspace_generation;
  return workspace;
}

}  // namespace mlafuse::cuda
