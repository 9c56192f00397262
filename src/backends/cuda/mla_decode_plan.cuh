// Device-side scheduling of one MLA decode call (no host synchronisation, so a whole decode step
// can be captured in a CUDA graph and replayed with a different real token count).
//
// Each query t (decode token, or prefill token with its own causal length) costs
// ceil(len_t / 64) KV tiles plus kMlaQueryOverheadTiles; queries are laid end to end on one cost
// axis (q_cum is the exclusive prefix) and part p of the attention grid takes the cost range
// [p * per_part, (p + 1) * per_part). A query's tiles that fall in one part form a segment.
// Everything else follows in closed form, so no per-part lists are stored:
//   splits of t: parts floor(q_cum[t] / per_part) .. floor((q_cum[t] + tiles_t - 1) / per_part);
//   partial slot of (t, p): 2p when t's cost range begins at or before the part's start (t is the
//   part's first query), else 2p + 1 (a part holds at most two split queries: the one it starts
//   in and the one it ends in). No load: the combine finds every split of t from q_cum alone.
#pragma once

#include <climits>
#include <cub/block/block_reduce.cuh>
#include <cub/block/block_scan.cuh>
#include <cuda/functional>

#include "backends/cuda/device_util.cuh"
#include "backends/cuda/mla_decode.h"

namespace mlafuse::cuda::mla {

// The real token count n, clamped to [0, T_pad].
__device__ __forceinline__ int real_tokens(const MlaDecodeProblem& p) {
  const int n = p.num_tokens_device != nullptr ? *p.num_tokens_device : p.num_tokens;
  return min(max(n, 0), p.num_queries);
}

__device__ __forceinline__ int ceil_tiles(int len) { return (len + kMlaPage - 1) / kMlaPage; }

// Which parts hold tiles of query t (first..last; none when tiles == 0).
struct QuerySplits {
  int tiles;
  int first;
  int last;
};
__device__ __forceinline__ QuerySplits query_splits(const MlaWorkspace& ws, int per_part, int t) {
  QuerySplits s;
  s.tiles = ceil_tiles(ws.q_len[t]);
  const int cum = ws.q_cum[t];
  s.first = cum / per_part;
  s.last = s.tiles > 0 ? (cum + s.tiles - 1) / per_part : s.first - 1;
  return s;
}

// cum: q_cum of the query, which has tiles in `part`.
__device__ __forceinline__ int partial_slot(int part, int per_part, int cum) {
  return 2 * part + (cum <= part * per_part ? 0 : 1);
}

// query_start_loc and q_cum entries the plan keeps in shared memory for its binary searches (a
// search over global memory is a chain of dependent ~0.5 us loads; beyond this, it reads global).
inline constexpr int kPlanCachedEntries = 4096;

template <int kThreads>
__global__ void __launch_bounds__(kThreads) mla_plan_kernel(MlaDecodeProblem p, MlaWorkspace ws) {
  using Scan = cub::BlockScan<int, kThreads>;
  using Reduce = cub::BlockReduce<int, kThreads>;
  __shared__ typename Scan::TempStorage scan_tmp;
  __shared__ typename Reduce::TempStorage reduce_tmp;
  __shared__ int carry;
  __shared__ int cost_min, cost_max, busy;  // over queries with KV: smallest, largest cost, count
  __shared__ int s_qsl[kPlanCachedEntries];
  __shared__ int s_cum[kPlanCachedEntries];
  pdl_launch_dependents();  // the attention's prologue may overlap this kernel
  const int t_pad = p.num_queries;
  // Tokens past the batch's own count (query_start_loc's last entry) are padding as well.
  const int n = min(real_tokens(p), p.query_start_loc[p.num_seqs]);
  const int max_len = p.block_table_stride * p.page_size;
  const bool qsl_cached = p.num_seqs + 1 <= kPlanCachedEntries;
  const bool cum_cached = t_pad + 1 <= kPlanCachedEntries;
  if (qsl_cached) {
    for (int i = threadIdx.x; i <= p.num_seqs; i += kThreads) s_qsl[i] = p.query_start_loc[i];
  }
  auto qsl = [&](int i) { return qsl_cached ? s_qsl[i] : p.query_start_loc[i]; };
  if (threadIdx.x == 0) {
    carry = 0;
    cost_min = INT_MAX;
    cost_max = 0;
    busy = 0;
  }
  __syncthreads();
  for (int base = 0; base < t_pad; base += kThreads) {
    const int t = base + static_cast<int>(threadIdx.x);
    int len = 0;
    int row = 0;
    if (t < n) {
      // The sequence s with query_start_loc[s] <= t < query_start_loc[s + 1].
      int lo = 0;
      int hi = p.num_seqs;
      while (hi - lo > 1) {
        const int mid = (lo + hi) / 2;
        if (qsl(mid) <= t) {
          lo = mid;
        } else {
          hi = mid;
        }
      }
      row = lo;
      // Causal: the j-th of a sequence's q tokens sees context + j + 1 cached tokens.
      len = p.seq_lens[lo] - (qsl(lo + 1) - 1 - t);
      len = min(max(len, 0), max_len);
    }
    const int tiles = ceil_tiles(len);
    const int cost = tiles > 0 ? tiles + kMlaQueryOverheadTiles : 0;
    int excl = 0;
    int agg = 0;
    Scan(scan_tmp).ExclusiveSum(cost, excl, agg);
    if (t < t_pad) {
      ws.q_len[t] = len;
      ws.q_row[t] = row;
      ws.q_cum[t] = carry + excl;
      if (cum_cached) s_cum[t] = carry + excl;
    }
    const int lo_c = Reduce(reduce_tmp).Reduce(cost > 0 ? cost : INT_MAX, ::cuda::minimum<int>{});
    __syncthreads();
    const int hi_c = Reduce(reduce_tmp).Reduce(cost, ::cuda::maximum<int>{});
    __syncthreads();
    const int cnt = Reduce(reduce_tmp).Sum(cost > 0 ? 1 : 0);
    __syncthreads();  // every thread has read `carry` and the scan storage is free
    if (threadIdx.x == 0) {
      carry += agg;
      cost_min = min(cost_min, lo_c);
      cost_max = max(cost_max, hi_c);
      busy += cnt;
    }
    __syncthreads();
  }
  const int total = carry;
  // At least two tiles a part: a one-tile split costs a Q load and a partial write per tile.
  int per_part = max(2, (total + ws.num_parts - 1) / ws.num_parts);
  // A few queries: about half the parts, up to kMlaSmallPartCost a part. Each query is then split
  // over half as many parts, so the combine's merge of its row (rounds of 16 partials) is shorter,
  // and the attention leaves SMs free where the combine's CTAs start early (programmatic dependent
  // launch) and load W_UV while it runs (docs/PERF.md, run 27: up to -6 us at B <= 4; at B = 16,
  // ctx 1024, H = 16 the longer parts cost more than the merge saves).
  if (busy <= kMlaFewQueries) {
    const int half_parts = max(1, ws.num_parts / 2);
    per_part = max(per_part, min(kMlaSmallPartCost, (total + half_parts / 2) / half_parts));
  }
  // Queries of equal cost that fill the grid: a whole number of queries a part, so no query is
  // split (no f32 partials to write and merge), when that costs at most 1/8 more time a part.
  if (busy > 0 && cost_min == cost_max) {
    const int whole = (busy + ws.num_parts - 1) / ws.num_parts * cost_max;
    if (8 * whole <= 9 * per_part) per_part = whole;
  }
  if (threadIdx.x == 0) {
    ws.q_cum[t_pad] = total;
    ws.sched[0] = per_part;
    ws.sched[1] = total;
  }
  __syncthreads();  // q_cum written by this block is visible to it
  auto cum = [&](int i) { return cum_cached ? s_cum[i] : ws.q_cum[i]; };
  for (int part = threadIdx.x; part < ws.num_parts; part += kThreads) {
    const int start = part * per_part;
    int lo = 0;
    int hi = max(t_pad, 1);
    while (hi - lo > 1) {  // the last query whose cost range begins at or before `start`
      const int mid = (lo + hi) / 2;
      if (cum(mid) <= start) {
        lo = mid;
      } else {
        hi = mid;
      }
    }
    ws.part_qbegin[part] = lo;
  }
}

}  // namespace mlafuse::cuda::mla
