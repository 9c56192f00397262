#include "backends/cuda/tma_map.h"

#include <cuda_runtime.h>

#include "mlafuse/core/error.h"

namespace mlafuse::cuda::tma {
namespace {

using EncodeTiled = CUresult (*)(CUtensorMap*, CUtensorMapDataType, cuuint32_t, void*,
                                 const cuuint64_t*, const cuuint64_t*, const cuuint32_t*,
                                 const cuuint32_t*, CUtensorMapInterleave, CUtensorMapSwizzle,
                                 CUtensorMapL2promotion, CUtensorMapFloatOOBfill);

EncodeTiled encode_fn() {
  static EncodeTiled fn = [] {
    void* p = nullptr;
    cudaDriverEntryPointQueryResult q{};
    const cudaError_t e = cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &p, 12000,
                                                           cudaEnableDefault, &q);
    MLAFUSE_CHECK(e == cudaSuccess && q == cudaDriverEntryPointSuccess && p != nullptr,
                  "TMA: the driver has no cuTensorMapEncodeTiled (", cudaGetErrorString(e), ")");
    return reinterpret_cast<EncodeTiled>(p);
  }();
  return fn;
}

}  // namespace

CUtensorMap make_map_2d_bf16_sw128(const void* base, uint64_t rows, uint64_t cols,
                                   uint64_t row_bytes, uint32_t box_rows, const char* what) {
  MLAFUSE_CHECK(rows >= 1 && rows < (uint64_t{1} << 32) && cols >= 64 && row_bytes % 16 == 0 &&
                    box_rows >= 1 && box_rows <= 256,
                "TMA map for ", what, ": unsupported shape [", rows, ", ", cols, "], row stride ",
                row_bytes, " bytes, box rows ", box_rows);
  CUtensorMap map{};
  const cuuint64_t dims[2] = {cols, rows};
  const cuuint64_t strides[1] = {row_bytes};
  const cuuint32_t box[2] = {64, box_rows};
  const cuuint32_t elem_strides[2] = {1, 1};
  const CUresult r = encode_fn()(&map, CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, 2, const_cast<void*>(base),
                                 dims, strides, box, elem_strides, CU_TENSOR_MAP_INTERLEAVE_NONE,
                                 CU_TENSOR_MAP_SWIZZLE_128B, CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
                                 CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  MLAFUSE_CHECK(r == CUDA_SUCCESS, "TMA map for ", what, ": cuTensorMapEncodeTiled failed (code ",
                static_cast<int>(r), ") for [", rows, ", ", cols, "]");
  return map;
}

}  // namespace mlafuse::cuda::tma
