// linear_fp8_block (SPEC 7, docs/ops.md): the o_proj GEMM on FP8 activations.
//
// Fast path: cuBLASLt's Hopper block scaling. In cuBLAS's column-major terms we compute
// y^T [N, T] = W [N, K] . X^T [K, T]: A = wq (transposed, 128x128 block scales, BLK128x128_32F),
// B = xq (1x128 vector scales along K, VEC128_32F). The scale buffers are read in place, so they
// must already be in the layouts cuBLASLt reads:
//   xs: column-major [T, K/128] with token stride 1 and group stride T (T % 4 == 0, so the
//       TMA-aligned layout is the same buffer);
//   ws: [N/128, K/128] row-major with K/128 % 4 == 0 (cuBLASLt pads the K-block count to 4).
// Everything else (per-tensor [1] scales, row-major scales, group 64, other alignments, or a
// cuBLASLt that offers no algorithm) runs the straightforward kernel in linear_simt.cuh.
// cuBLAS cannot read the real token count from the device, so the fast path computes all T_pad
// rows (rows >= n of y hold whatever the padded rows of x give); the fallback skips them.
#include <cublasLt.h>

#include <map>
#include <mutex>
#include <tuple>

#include "backends/cuda/device_context.h"
#include "backends/cuda/linear_ops.h"
#include "backends/cuda/linear_simt.cuh"
#include "backends/cuda/op_checks.h"
#include "mlafuse/backends/cuda/cuda_check.h"
#include "mlafuse/core/error.h"
#include "mlafuse/core/shape.h"
#include "mlafuse/quant/scale_layout.h"

namespace mlafuse::cuda {

namespace {

constexpr size_t kCublasWorkspace = kLinearFp8CublasltWorkspaceBytes;

// Heuristic results per problem shape: querying per call costs tens of microseconds of host time.
struct AlgoKey {
  cublasLtHandle_t handle;
  int64_t t, n, k;
  bool operator<(const AlgoKey& o) const {
    return std::tie(handle, t, n, k) < std::tie(o.handle, o.t, o.n, o.k);
  }
};
struct AlgoEntry {
  bool ok = false;
  cublasLtMatmulAlgo_t algo{};
};
std::mutex g_algo_mutex;
std::map<AlgoKey, AlgoEntry> g_algos;
// Prefill up-projections bring a new row count with almost every batch: past this many shapes
// the cache starts over, so a long-running engine's cache stays bounded (a miss costs one
// heuristic query).
constexpr size_t kMaxCachedShapes = 256;

struct LtObjects {
  cublasLtMatmulDesc_t desc = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
  ~LtObjects() {
    if (c) cublasLtMatrixLayoutDestroy(c);
    if (b) cublasLtMatrixLayoutDestroy(b);
    if (a) cublasLtMatrixLayoutDestroy(a);
    if (desc) cublasLtMatmulDescDestroy(desc);
  }
};

void make_lt_objects(LtObjects& lt, int64_t t, int64_t n, int64_t k, const void* ws,
                     const void* xs) {
  MLAFUSE_CUBLAS_CHECK(cublasLtMatmulDescCreate(&lt.desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  const cublasOperation_t op_t = CUBLAS_OP_T, op_n = CUBLAS_OP_N;
  MLAFUSE_CUBLAS_CHECK(
      cublasLtMatmulDescSetAttribute(lt.desc, CUBLASLT_MATMUL_DESC_TRANSA, &op_t, sizeof(op_t)));
  MLAFUSE_CUBLAS_CHECK(
      cublasLtMatmulDescSetAttribute(lt.desc, CUBLASLT_MATMUL_DESC_TRANSB, &op_n, sizeof(op_n)));
  const cublasLtMatmulMatrixScale_t a_mode = CUBLASLT_MATMUL_MATRIX_SCALE_BLK128x128_32F;
  const cublasLtMatmulMatrixScale_t b_mode = CUBLASLT_MATMUL_MATRIX_SCALE_VEC128_32F;
  MLAFUSE_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(lt.desc, CUBLASLT_MATMUL_DESC_A_SCALE_MODE,
                                                      &a_mode, sizeof(a_mode)));
  MLAFUSE_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(lt.desc, CUBLASLT_MATMUL_DESC_B_SCALE_MODE,
                                                      &b_mode, sizeof(b_mode)));
  MLAFUSE_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(lt.desc, CUBLASLT_MATMUL_DESC_A_SCALE_POINTER,
                                                      &ws, sizeof(ws)));
  MLAFUSE_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(lt.desc, CUBLASLT_MATMUL_DESC_B_SCALE_POINTER,
                                                      &xs, sizeof(xs)));
  // A: wq stored [N, K] row-major == K x N column-major, used transposed.
  MLAFUSE_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&lt.a, CUDA_R_8F_E4M3, k, n, k));
  // B: xq stored [T, K] row-major == K x T column-major.
  MLAFUSE_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&lt.b, CUDA_R_8F_E4M3, k, t, k));
  // C = D: y stored [T, N] row-major == N x T column-major.
  MLAFUSE_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&lt.c, CUDA_R_16BF, n, t, n));
}

}  // namespace

bool linear_fp8_block_cublaslt(DeviceContext& dc, cudaStream_t stream, const void* xq,
                               const float* xs, const void* wq, const float* ws, void* y, int64_t t,
                               int64_t n, int64_t k, void* gemm_workspace) {
  LtObjects lt;
  make_lt_objects(lt, t, n, k, ws, xs);
  const AlgoKey key{dc.cublaslt, t, n, k};
  AlgoEntry entry;
  {
    std::lock_guard<std::mutex> lock(g_algo_mutex);
    auto it = g_algos.find(key);
    if (it != g_algos.end()) {
      entry = it->second;
    } else {
      cublasLtMatmulPreference_t pref = nullptr;
      MLAFUSE_CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref));
      const size_t ws_bytes = kCublasWorkspace;
      cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                                           &ws_bytes, sizeof(ws_bytes));
      cublasLtMatmulHeuristicResult_t result{};
      int found = 0;
      const cublasStatus_t st = cublasLtMatmulAlgoGetHeuristic(
          dc.cublaslt, lt.desc, lt.a, lt.b, lt.c, lt.c, pref, 1, &result, &found);
      cublasLtMatmulPreferenceDestroy(pref);
      entry.ok = st == CUBLAS_STATUS_SUCCESS && found > 0 && result.state == CUBLAS_STATUS_SUCCESS;
      if (entry.ok) entry.algo = result.algo;
      if (g_algos.size() >= kMaxCachedShapes) g_algos.clear();
      g_algos[key] = entry;
    }
  }
  if (!entry.ok) return false;
  void* workspace =
      gemm_workspace != nullptr ? gemm_workspace : dc.ensure_workspace(kCublasWorkspace);
  const float alpha = 1.0f, beta = 0.0f;
  MLAFUSE_CUBLAS_CHECK(cublasLtMatmul(dc.cublaslt, lt.desc, &alpha, wq, lt.a, xq, lt.b, &beta, y,
                                      lt.c, y, lt.c, &entry.algo, workspace, kCublasWorkspace,
                                      stream));
  return true;
}

void run_linear_fp8_block(const OpCall& call, const RunContext& ctx, DeviceContext& dc) {
  check_arity(call, 4, 1);
  const Tensor& xq = call.inputs[0];
  const Tensor& xs = call.inputs[1];
  const Tensor& wq = call.inputs[2];
  const Tensor& ws = call.inputs[3];
  Tensor& y = call.outputs[0];
  check_cuda_tensor(xq, "xq");
  check_rank(xq, "xq", 2);
  const int64_t t_pad = xq.dim(0);
  const int64_t k = xq.dim(1);
  check_codes(xq, "xq", DType::kFp8E4M3, {t_pad, k});
  const int64_t n_out = check_block_fp8_weight_and_output(xq, k, wq, ws, y);
  check_cuda_tensor(xs, "xs");
  check_dtype(xs, "xs", DType::kF32);
  Fp8ActLoader loader{static_cast<const uint8_t*>(xq.raw()), static_cast<const float*>(xs.raw()), 0,
                      0, 128};
  const bool per_tensor = xs.numel() == 1 && xs.rank() == 1;
  int64_t group = 0;
  if (!per_tensor) {
    check_rank(xs, "xs", 2);
    MLAFUSE_CHECK(xs.dim(0) == t_pad && xs.dim(1) > 0 && k % xs.dim(1) == 0 &&
                      (k / xs.dim(1) == 128 || k / xs.dim(1) == 64),
                  "tensor xs ", xs.str(), ": expected [", t_pad,
                  ", K/G] with G = 128 or 64 (K = ", k, "), or [1] for a per-tensor scale");
    group = k / xs.dim(1);
    loader.token_stride = xs.strides()[0];
    loader.group_stride = xs.strides()[1];
    loader.group = static_cast<int32_t>(group);
  }
  check_int32_range(t_pad, "linear_fp8_block: tokens");
  check_int32_range(n_out, "linear_fp8_block: N");
  check_int32_range(k, "linear_fp8_block: K");
  // The fallback kernel's token tiles are its grid's y extent, at most 65535.
  MLAFUSE_CHECK(ceil_div(t_pad, 64) <= 65535, "linear_fp8_block: tensor xq ", xq.str(), " has ",
                t_pad, " token rows; at most 65535 * 64 = 4194240 a call");
  const int64_t n = checked_num_tokens(ctx, t_pad, "xq");
  if (t_pad == 0 || n_out == 0) return;
  const cudaStream_t stream = dc.stream_for(ctx);

  const bool lt_layout = group == 128 && xs.strides()[0] == 1 && xs.strides()[1] == t_pad &&
                         t_pad % 4 == 0 && k % 128 == 0 && (k / 128) % 4 == 0 && n_out % 16 == 0;
  if (lt_layout &&
      linear_fp8_block_cublaslt(dc, stream, xq.raw(), static_cast<const float*>(xs.raw()), wq.raw(),
                                static_cast<const float*>(ws.raw()), y.raw(), t_pad, n_out, k)) {
    return;
  }
  LinearSimtParams p{static_cast<const uint8_t*>(wq.raw()),
                     static_cast<const float*>(ws.raw()),
                     static_cast<__nv_bfloat16*>(y.raw()),
                     static_cast<int32_t>(t_pad),
                     static_cast<int32_t>(n_out),
                     static_cast<int32_t>(k),
                     static_cast<int32_t>(n),
                     ctx.num_tokens_device};
  const dim3 grid(static_cast<unsigned>(ceil_div(n_out, 64)),
                  static_cast<unsigned>(ceil_div(t_pad, 64)));
  linear_simt_kernel<Fp8ActLoader><<<grid, 256, 0, stream>>>(p, loader);
  MLAFUSE_CUDA_CHECK_LAUNCH("linear_simt_kernel<Fp8ActLoader>");
}

}  // namespace mlafuse::cuda
