// Marks functions usable from both host and device code, without pulling in CUDA headers.
#pragma once

#if defined(__CUDACC__)
#define MLAFUSE_HD __host__ __device__ __forceinline__
#else
#define MLAFUSE_HD inline
#endif
