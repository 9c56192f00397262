// Checking every CUDA call: failures become mlafuse::Error with the call, file and line.
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <string>

namespace mlafuse::cuda {

[[noreturn]] void throw_cuda_error(cudaError_t err, const char* what, const char* file, int line);
[[noreturn]] void throw_cublas_error(cublasStatus_t st, const char* what, const char* file,
                                     int line);

// True when a CUDA device can run our sm_90a kernels; otherwise *reason says why not.
bool device_available(std::string* reason = nullptr);

}  // namespace mlafuse::cuda

#define MLAFUSE_CUDA_CHECK(expr)                                                     \
  do {                                                                               \
    cudaError_t mlafuse_err_ = (expr);                                               \
    if (mlafuse_err_ != cudaSuccess)                                                 \
      ::mlafuse::cuda::throw_cuda_error(mlafuse_err_, #expr, __FILE__, __LINE__);    \
  } while (0)

// After a kernel launch: launch-configuration errors surface here, not at the next sync.
#define MLAFUSE_CUDA_CHECK_LAUNCH(name) MLAFUSE_CUDA_CHECK(cudaGetLastError())

#define MLAFUSE_CUBLAS_CHECK(expr)                                                   \
  do {                                                                               \
    cublasStatus_t mlafuse_st_ = (expr);                                             \
    if (mlafuse_st_ != CUBLAS_STATUS_SUCCESS)                                        \
      ::mlafuse::cuda::throw_cublas_error(mlafuse_st_, #expr, __FILE__, __LINE__);   \
  } while (0)
