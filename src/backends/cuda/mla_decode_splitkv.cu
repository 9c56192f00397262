// Launcher of mla_decode_splitkv: checks the shape, encodes the TMA maps of the seesaw kernel
// (mla_decode_seesaw_sm90.cuh) and sets up its grid (head blocks x split-KV parts: the head blocks of
// one part are adjacent in launch order, so they run together and share each KV tile through L2).
#include <cuda.h>

#include <algorithm>

#include "backends/cuda/launch_pdl.h"
#include "backends/cuda/mla_decode.h"
#include "backends/cuda/mla_decode_seesaw_sm90.cuh"
#include "backends/cuda/tma_map.h"
#include "mlafuse/backends/cuda/cuda_check.h"
#include "mlafuse/core/error.h"

#ifdef MLAFUSE_SEESAW_STAMPS
#include "backends/cuda/stamps_file.h"
#endif

namespace mlafuse::cuda {
namespace {

#ifdef MLAFUSE_SEESAW_STAMPS
// Diagnostic build only: at exit, the stamps of the last seesaw launch go to
// $MLAFUSE_STAMPS_FILE (default seesaw_stamps.bin): int32 grid x, grid y, slots, then the rows.
dim3 g_stamp_grid;
void dump_stamps() {
  write_stamps_file(mla::g_seesaw_stamps, g_stamp_grid, mla::kStampSlots, mla::kStampMaxCtas,
                    "MLAFUSE_STAMPS_FILE", "seesaw_stamps.bin");
}
#endif

template <bool kSmallPages, bool kUnits>
void launch_seesaw(const MlaDecodeProblem& p, const MlaWorkspace& ws, bool own_plan,
                   cudaStream_t stream) {
  mla::SeesawMaps maps;
  maps.q = tma::make_map_2d_bf16_sw128(p.q_cat, static_cast<uint64_t>(p.num_queries) * p.num_heads,
                                       kMlaRow, kMlaRow * 2,
                                       static_cast<uint32_t>(mla::seesaw_q_rows(p)), "q_cat");
  maps.kv = tma::make_map_2d_bf16_sw128(
      p.kv_cache, static_cast<uint64_t>(p.num_pages) * p.page_size, kMlaRow, kMlaRow * 2,
      static_cast<uint32_t>(std::min(p.page_size, kMlaPage)), "kv_cache");
  auto kernel = mla::mla_decode_seesaw_kernel<kSmallPages, kUnits>;
  MLAFUSE_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                          mla::kSeesawSmemBytes));
  const int head_blocks = p.num_heads > mla::kSeesawRows ? p.num_heads / mla::kSeesawRows : 1;
  const dim3 grid(static_cast<unsigned>(head_blocks), static_cast<unsigned>(ws.num_parts));
#ifdef MLAFUSE_SEESAW_STAMPS
  static const bool registered = (std::atexit(dump_stamps), true);
  (void)registered;
  g_stamp_grid = grid;
#endif
  launch_pdl("mla_decode_seesaw_kernel", kernel, grid, dim3(mla::kSeesawThreads),
             mla::kSeesawSmemBytes, stream, p, ws, maps, own_plan);
}

}  // namespace

void launch_mla_decode_splitkv(const MlaDecodeProblem& p, const MlaWorkspace& ws,
                               MlaSchedule schedule, cudaStream_t stream) {
  if (p.num_queries == 0) return;
  MLAFUSE_CHECK(p.page_size == 16 || p.page_size == 32 || p.page_size == 64 || p.page_size == 128,
                "mla_decode_splitkv: page size ", p.page_size, " is not supported; expected 16, 32, "
                "64 or 128");
  MLAFUSE_CHECK(p.num_heads == 16 || p.num_heads == 32 || p.num_heads == 64 || p.num_heads == 128,
                "mla_decode_splitkv: num_heads ", p.num_heads,
                " is not supported; expected 16, 32, 64 or 128");
  // The schedule's cost axis (q_cum, per part) is int32: every query at the table's full length.
  const int64_t max_tiles =
      (static_cast<int64_t>(p.block_table_stride) * p.page_size + kMlaPage - 1) / kMlaPage;
  MLAFUSE_CHECK(p.num_queries * (max_tiles + kMlaQueryOverheadTiles) < (int64_t{1} << 31),
                "mla_decode_splitkv: ", p.num_queries, " query rows (T_pad) with a block table of ",
                p.block_table_stride, " pages of ", p.page_size,
                " tokens give a split-KV cost over 2^31 - 1 tiles; use fewer padded tokens a call "
                "or a narrower block table");
  const bool own_plan = schedule == MlaSchedule::kCompute && p.num_queries <= kMlaOwnPlanQueries;
  if (schedule == MlaSchedule::kCompute && !own_plan) launch_mla_plan(p, ws, stream);
  const bool units = mla_unit_tokens(p) > 1;
  if (p.page_size < kMlaPage) {
    units ? launch_seesaw<true, true>(p, ws, own_plan, stream)
          : launch_seesaw<true, false>(p, ws, own_plan, stream);
  } else {
    units ? launch_seesaw<false, true>(p, ws, own_plan, stream)
          : launch_seesaw<false, false>(p, ws, own_plan, stream);
  }
}

}  // namespace mlafuse::cuda
