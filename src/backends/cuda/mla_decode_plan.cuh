// Device-side scheduling of one MLA decode call (no host synchronisation, so a whole decode step
// can be captured in a CUDA graph and replayed with a different real token count).
//
// Each query t (decode token, or prefill token with its own causal length) costs
// ceil(len_t / 64) KV tiles plus kMlaQueryOverheadTiles; queries are laid end to end on one cost
// axis (q_cum is the exclusive prefix) and part p of the attention grid takes the cost range
// [p * per_part, (p + 1) * per_part). A query's tiles that fall in one part form a segment.
// The plan writes each part's first segment (MlaPartStart), so an attention CTA starts its copies
// after one load; later segments and everything else follow in closed form, no per-part lists:
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

// The KV length of query t, the last query of its sequence being q_end - 1: causal, the j-th of
// a sequence's q tokens sees context + j + 1 cached tokens; clamped to [0, max_len].
__device__ __forceinline__ int causal_len(int seq_len, int q_end, int t, int max_len) {
  return min(max(seq_len - (q_end - 1 - t), 0), max_len);
}

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

// Row `sub_h` = j * H + h (token j of the slot's unit, head h) of partial slot `slot` in
// ws.o_part (times kMlaLatent) and ws.lse_part; unit_tokens = mla_unit_tokens(p).
__device__ __forceinline__ int64_t partial_row(int slot, int unit_tokens, int num_heads,
                                               int sub_h) {
  return static_cast<int64_t>(slot) * unit_tokens * num_heads + sub_h;
}

// The unit of token t < n of sequence `row` (tokens [q_begin, q_end) of the sequence, q_end
// clamped to n): units of `group` tokens from the sequence's first token on, the last one
// shorter. Returns t's offset in its unit; *size the unit's tokens.
__device__ __forceinline__ int unit_of(int t, int q_begin, int q_end, int group, int* size) {
  const int j = (t - q_begin) % group;
  *size = min(group, q_end - (t - j));
  return j;
}

// query_start_loc and q_cum entries the plan keeps in shared memory for its binary searches (a
// search over global memory is a chain of dependent ~0.5 us loads; beyond this, it reads global).
inline constexpr int kPlanCachedEntries = 4096;

// Shared memory of the schedule's block-wide steps (the plan kernel's static shared memory; the
// attention's own copy of the schedule uses a KV buffer before the first tile lands).
template <int kThreads>
struct PlanShared {
  typename cub::BlockScan<int, kThreads>::TempStorage scan;
  typename cub::BlockReduce<int, kThreads>::TempStorage reduce;
  int carry;
  int cost_min, cost_max, busy;  // over queries with KV: smallest, largest cost, count
  int grouped;                   // tokens in units of several tokens
  int qsl[kPlanCachedEntries];
  int cum[kPlanCachedEntries];
};

// Reads of the schedule's inputs and results: shared memory where they fit, else global.
struct PlanLookup {
  const MlaDecodeProblem* p;
  const int* s_qsl;
  const int* s_cum;
  const int32_t* g_cum;  // ws.q_cum (used only when q_cum does not fit in shared memory)
  bool qsl_cached;
  bool cum_cached;
  __device__ int qsl(int i) const { return qsl_cached ? s_qsl[i] : p->query_start_loc[i]; }
  __device__ int cum(int i) const { return cum_cached ? s_cum[i] : g_cum[i]; }
  // The sequence s with query_start_loc[s] <= t < query_start_loc[s + 1].
  __device__ int seq_of(int t) const {
    int lo = 0;
    int hi = p->num_seqs;
    while (hi - lo > 1) {
      const int mid = (lo + hi) / 2;
      if (qsl(mid) <= t) {
        lo = mid;
      } else {
        hi = mid;
      }
    }
    return lo;
  }
  // The KV length of query t of sequence `row` (of a unit: its last token's).
  __device__ int len(int row, int t) const {
    return causal_len(p->seq_lens[row], qsl(row + 1), t, p->block_table_stride * p->page_size);
  }
};

template <int kThreads>
__device__ __forceinline__ PlanLookup plan_lookup(const MlaDecodeProblem& p, const MlaWorkspace& ws,
                                                  const PlanShared<kThreads>& sh) {
  return PlanLookup{&p,
                    sh.qsl,
                    sh.cum,
                    ws.q_cum,
                    p.num_seqs + 1 <= kPlanCachedEntries,
                    p.num_queries + 1 <= kPlanCachedEntries};
}

struct PlanTotals {
  int per_part;  // cost units a part
  int total;     // cost of all queries
  int n;         // real queries (the rest is padding)
};

// The schedule over one block of kThreads threads (all of them call it): each unit's length,
// block-table row and cost at its first token (mla_unit_tokens; the other tokens cost nothing),
// the prefix q_cum (in sh.cum where it fits), and the part size.
// write: store q_len, q_row, q_unit, q_cum and sched in the workspace (one block of the grid: the
// combine and later calls that reuse the schedule read them).
template <int kThreads>
__device__ PlanTotals plan_schedule(const MlaDecodeProblem& p, const MlaWorkspace& ws,
                                    PlanShared<kThreads>& sh, bool write) {
  using Scan = cub::BlockScan<int, kThreads>;
  using Reduce = cub::BlockReduce<int, kThreads>;
  const int t_pad = p.num_queries;
  const PlanLookup look = plan_lookup(p, ws, sh);
  if (look.qsl_cached) {
    for (int i = threadIdx.x; i <= p.num_seqs; i += kThreads) sh.qsl[i] = p.query_start_loc[i];
  }
  if (threadIdx.x == 0) {
    sh.carry = 0;
    sh.cost_min = INT_MAX;
    sh.cost_max = 0;
    sh.busy = 0;
    sh.grouped = 0;
  }
  __syncthreads();
  // Tokens past the batch's own count (query_start_loc's last entry) are padding as well.
  const int n = min(real_tokens(p), look.qsl(p.num_seqs));
  const int group = mla_unit_tokens(p);
  for (int base = 0; base < t_pad; base += kThreads) {
    const int t = base + static_cast<int>(threadIdx.x);
    int len = 0;
    int row = 0;
    int unit = 1;  // 8 * offset in the unit + the unit's tokens
    if (t < n) {
      row = look.seq_of(t);
      int size = 1;
      const int j =
          group == 1 ? 0 : unit_of(t, look.qsl(row), min(look.qsl(row + 1), n), group, &size);
      if (j == 0) len = look.len(row, t + size - 1);
      unit = 8 * j + size;
    }
    const int tiles = ceil_tiles(len);
    const int cost = tiles > 0 ? tiles + kMlaQueryOverheadTiles : 0;
    int excl = 0;
    int agg = 0;
    Scan(sh.scan).ExclusiveSum(cost, excl, agg);
    if (t < t_pad) {
      if (write) {
        ws.q_len[t] = len;
        ws.q_row[t] = row;
        ws.q_unit[t] = unit;
        ws.q_cum[t] = sh.carry + excl;
      }
      if (look.cum_cached) sh.cum[t] = sh.carry + excl;
    }
    const int lo_c = Reduce(sh.reduce).Reduce(cost > 0 ? cost : INT_MAX, ::cuda::minimum<int>{});
    __syncthreads();
    const int hi_c = Reduce(sh.reduce).Reduce(cost, ::cuda::maximum<int>{});
    __syncthreads();
    const int cnt = Reduce(sh.reduce).Sum(cost > 0 ? 1 : 0);
    __syncthreads();
    int grp = 0;
    if (group > 1) {  // uniform over the block
      grp = Reduce(sh.reduce).Sum((unit & 7) > 1 ? 1 : 0);
      __syncthreads();
    }
    // Every thread has read `carry` and the scan storage is free.
    if (threadIdx.x == 0) {
      sh.carry += agg;
      sh.cost_min = min(sh.cost_min, lo_c);
      sh.cost_max = max(sh.cost_max, hi_c);
      sh.busy += cnt;
      sh.grouped += grp;
    }
    __syncthreads();
  }
  const int total = sh.carry;
  const int busy = sh.busy;
  const bool grouped = sh.grouped > 0;
  const int cost_min = sh.cost_min;
  const int cost_max = sh.cost_max;
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
  // Units of several tokens (H = 16 / 32) up to 2.25 times: splitting them costs the combine a
  // merge that the shorter parts do not win back (docs/PERF.md, run 38).
  if (busy > 0 && cost_min == cost_max) {
    const int whole = (busy + ws.num_parts - 1) / ws.num_parts * cost_max;
    if ((grouped ? 4 : 8) * whole <= 9 * per_part) per_part = whole;
  }
  if (threadIdx.x == 0) {
    if (write) {
      ws.q_cum[t_pad] = total;
      ws.sched[0] = per_part;
      ws.sched[1] = total;
    }
    if (look.cum_cached) sh.cum[t_pad] = total;
  }
  __syncthreads();  // q_cum written by this block is visible to it
  return PlanTotals{per_part, total, n};
}

// The first segment of `part`: the first query with tiles in the part's cost range. (Its start
// may fall in a query's overhead, past its tiles, and queries without tiles cost nothing.)
__device__ __forceinline__ MlaPartStart plan_part_start(const MlaDecodeProblem& p,
                                                        const PlanLookup& look, PlanTotals tot,
                                                        int part) {
  const int t_pad = p.num_queries;
  const int start = part * tot.per_part;
  const int end = min(start + tot.per_part, tot.total);
  int lo = 0;
  int hi = max(t_pad, 1);
  while (hi - lo > 1) {  // the last query whose cost range begins at or before `start`
    const int mid = (lo + hi) / 2;
    if (look.cum(mid) <= start) {
      lo = mid;
    } else {
      hi = mid;
    }
  }
  MlaPartStart ps{};
  ps.t = -1;
  ps.per_part = tot.per_part;
  ps.n = tot.n;
  for (int t = lo; t < t_pad; ++t) {
    const int c = look.cum(t);
    if (c >= end) break;
    const int cost = look.cum(t + 1) - c;
    const int tiles = cost > 0 ? cost - kMlaQueryOverheadTiles : 0;
    const int tile0 = max(start - c, 0);
    const int tile1 = min(end - c, tiles);
    if (tile0 < tile1) {
      ps.t = t;
      ps.tile0 = tile0;
      ps.tile1 = tile1;
      ps.tiles = tiles;
      ps.cum = c;
      ps.row = look.seq_of(t);
      // t leads its unit (only unit leaders cost anything).
      ps.group = min(mla_unit_tokens(p), min(look.qsl(ps.row + 1), tot.n) - t);
      break;
    }
  }
  return ps;
}

// Every part's first segment -> ws.part_start (all threads of the block).
__device__ __forceinline__ void plan_store_part_starts(const MlaDecodeProblem& p,
                                                       const MlaWorkspace& ws,
                                                       const PlanLookup& look, PlanTotals tot,
                                                       int threads) {
  for (int part = threadIdx.x; part < ws.num_parts; part += threads) {
    ws.part_start[part] = plan_part_start(p, look, tot, part);
  }
}

// The schedule of calls too large for the attention to compute itself, or computed once and
// reused (launch_mla_decode_splitkv).
template <int kThreads>
__global__ void __launch_bounds__(kThreads) mla_plan_kernel(MlaDecodeProblem p, MlaWorkspace ws) {
  __shared__ PlanShared<kThreads> sh;
  pdl_launch_dependents();  // the attention's prologue may overlap this kernel
  const PlanTotals tot = plan_schedule<kThreads>(p, ws, sh, true);
  plan_store_part_starts(p, ws, plan_lookup(p, ws, sh), tot, kThreads);
}

}  // namespace mlafuse::cuda::mla
