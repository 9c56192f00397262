#include "mlafuse/backends/cuda/cuda_check.h"

#include "mlafuse/core/error.h"

namespace mlafuse::cuda {

void throw_cuda_error(cudaError_t err, const char* what, const char* file, int line) {
  MLAFUSE_FAIL("CUDA error ", cudaGetErrorName(err), " (", cudaGetErrorString(err), ") in ", what,
               " at ", file, ":", line);
}

void throw_cublas_error(cublasStatus_t st, const char* what, const char* file, int line) {
  MLAFUSE_FAIL("cuBLAS error ", cublasGetStatusName(st), " (", cublasGetStatusString(st), ") in ",
               what, " at ", file, ":", line);
}

bool device_available(std::string* reason) {
  int count = 0;
  cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess || count == 0) {
    if (reason) {
      *reason = err != cudaSuccess ? std::string(cudaGetErrorString(err))
                                   : std::string("no CUDA device present");
    }
    cudaGetLastError();  // clear the sticky error from the failed query
    return false;
  }
  cudaDeviceProp prop{};
  if (cudaGetDeviceProperties(&prop, 0) != cudaSuccess) {
    if (reason) *reason = "cudaGetDeviceProperties failed";
    return false;
  }
  if (prop.major != 9) {
    if (reason) {
      *reason = std::string("device ") + prop.name + " is sm_" + std::to_string(prop.major) +
                std::to_string(prop.minor) + "; the kernels are built for sm_90a (Hopper)";
    }
    return false;
  }
  return true;
}

}  // namespace mlafuse::cuda
