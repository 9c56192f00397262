"""One DeepSeek-V3 attention-block decode step under tensor parallelism, with mlafuse's ops.

Each rank holds H/tp heads: q_b_proj's and kv_b_proj's head slices (W_UK_T, W_UV), the whole
latent cache (MLA's cache is shared by all heads, so it is replicated), and the o_proj columns of
its heads (row-parallel). A step on a rank: cache write of the new tokens' latents, absorbed q of
its heads, mla_decode with group-128 FP8 output (codes + column-major TMA-aligned scales), its
block-FP8 o_proj partial, and an all-reduce of the partials. The down-projections before q_b_proj
and kv_b_proj are replicated in TP; the step starts after them, from q_nope/q_pe and the latents.

    torchrun --nproc-per-node 2 examples/deepseek_v3_tp_decode.py    # NCCL, one process a GPU
    python examples/deepseek_v3_tp_decode.py --simulate 2,4,8        # shards one after another

World size 1 is the reference. Checks, for every tp: each rank's FP8 codes and scales equal the
single-GPU ones of its heads bit for bit (a 128-wide group is one head, so no group crosses a
rank; every rank and the reference pass the same num_kv_splits, so the split-KV points do not
depend on H; one known exception in docs/kernels/mla_decode.md, "Tensor parallelism"), and the all-reduced o_proj output matches the single-GPU one within the bf16
o_proj tolerance. Exits 1 when a check fails.
"""

import argparse
import os

# NVLink multicast off, in this process and in any a launcher starts from it (the H200 hosts we
# test on do not support it reliably; see the project's GPU notes).
os.environ["NCCL_NVLS_ENABLE"] = "0"
os.environ["TORCH_SYMM_MEM_DISABLE_MULTICAST"] = "1"
os.environ["NVSHMEM_DISABLE_NVLS"] = "1"

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402

import mlafuse  # noqa: E402
from deepseek_v3_decode_step import median_ms  # noqa: E402  (the example beside this one)

L, R, P, V, G = 512, 64, 128, 128, 128
HEADS = 128  # DeepSeek-V3


class Model:
    """The whole block's tensors for every head, made from one seed (the same on every rank)."""

    def __init__(self, batch, context, page, device, hidden=7168, seed=0):
        gen = torch.Generator(device="cpu").manual_seed(seed)

        def rand(*shape, scale=1.0):
            return (torch.randn(*shape, generator=gen) * scale).to(device)

        bf16 = torch.bfloat16
        self.batch, self.context, self.page, self.hidden = batch, context, page, hidden
        pages_per_seq = (context + page - 1) // page
        num_pages = batch * pages_per_seq
        # The cache before the step: context - 1 tokens a sequence, and the table of its pages.
        self.cache = rand(num_pages, page, L + R).to(bf16)
        perm = torch.randperm(num_pages, generator=gen).to(torch.int32)
        self.table = perm.view(batch, pages_per_seq).to(device)
        self.seq_lens = torch.full((batch,), context, dtype=torch.int32, device=device)
        # The new token of each sequence: its latent, and its cache slot (position context - 1).
        self.kv_c = rand(batch, L).to(bf16)
        self.k_pe = rand(batch, 1, R).to(bf16)
        pos = context - 1
        self.slots = (self.table[:, pos // page].long() * page + pos % page).to(torch.int32)
        # q_b_proj's output after RoPE, and kv_b_proj's absorbed halves, per head.
        self.q_nope = rand(batch, HEADS, P, scale=0.5).to(bf16)
        self.q_pe = rand(batch, HEADS, R, scale=0.5).to(bf16)
        self.w_uk_t = rand(HEADS, P, L, scale=0.05).to(bf16)
        self.w_uv = rand(HEADS, L, V, scale=0.05).to(bf16)
        # o_proj in the checkpoint's block-FP8 form: e4m3 weight, one scale a 128x128 block.
        w = rand(hidden, HEADS * V, scale=0.02).view(hidden // G, G, HEADS * V // G, G)
        self.w_o_scale = w.abs().amax(dim=(1, 3)) / 448.0  # [56, H]
        self.w_o = (w / self.w_o_scale[:, None, :, None]).to(torch.float8_e4m3fn)
        self.w_o = self.w_o.view(hidden, HEADS * V)

    def shard(self, rank, tp):
        """Rank `rank` of `tp`: its heads' slices (views; the cache is the whole one)."""
        h = HEADS // tp
        heads = slice(rank * h, (rank + 1) * h)
        cols = slice(rank * h * V, (rank + 1) * h * V)
        w_o = self.w_o[:, cols].float().view(self.hidden // G, G, h, G)
        w_o = (w_o * self.w_o_scale[:, None, heads, None]).view(self.hidden, h * V)
        return {"q_nope": self.q_nope[:, heads].contiguous(),
                "q_pe": self.q_pe[:, heads].contiguous(),
                "w_uk_t": self.w_uk_t[heads].contiguous(), "w_uv": self.w_uv[heads].contiguous(),
                "w_o": w_o.to(torch.bfloat16)}  # dequantized once, as the o_proj below reads it


def rank_step(m, s, cache, splits):
    """One rank's decode step up to (not including) the all-reduce: FP8 codes, scales, partial."""
    b = m.batch
    h = s["w_uv"].shape[0]
    mlafuse.cache_write(m.kv_c, m.k_pe, cache, m.slots)
    # Absorbed q: [q_nope @ W_UK_T | q_pe] per head.
    q_lat = torch.bmm(s["q_nope"].transpose(0, 1), s["w_uk_t"]).transpose(0, 1)
    q = torch.cat([q_lat, s["q_pe"]], dim=-1).contiguous()
    xq = torch.empty(b, h * V, dtype=torch.float8_e4m3fn, device=q.device)
    xs = mlafuse.group_scale_buffer(xq, b, h * V // G, column_major=True, tma_aligned=True)
    mlafuse.mla_decode(q, cache, m.table, m.seq_lens, s["w_uv"], xq, output_block_scale=xs,
                       num_kv_splits=splits)
    # Block-FP8 o_proj partial of this rank's input rows (dequantized here; an engine calls a
    # block-FP8 GEMM on the same codes and scales).
    x = (xq.float().view(b, h, G) * xs.float()[..., None]).view(b, h * V).to(torch.bfloat16)
    return xq, xs, x @ s["w_o"].T


def compare(tp, rank, xq, xs, ref):
    """Rank `rank`'s codes and scales against the single-GPU ones of its heads."""
    h = HEADS // tp
    ref_q, ref_s = ref
    codes = torch.equal(xq.view(torch.uint8), ref_q[:, rank * h * V:(rank + 1) * h * V]
                        .view(torch.uint8))
    scales = torch.equal(xs, ref_s[:, rank * h:(rank + 1) * h])
    return codes and scales


def rel_err(y, ref):
    return ((y.float() - ref.float()).norm() / ref.float().norm()).item()


def reference(m, splits):
    """World size 1: every head on one GPU, from a fresh copy of the cache."""
    cache = m.cache.clone()
    xq, xs, y = rank_step(m, m.shard(0, 1), cache, splits)
    return (xq, xs), y


def simulate(m, tps, splits, tol, timing):
    """tp ranks run one after another in this process; the all-reduce is a sum over them."""
    ref, y_ref = reference(m, splits)
    ok = True
    # Timed: the step alone. Shards and the cache replica are made before (the cache write of the
    # step is idempotent, so one replica serves every repetition).
    replica = m.cache.clone() if timing else None
    t1 = None
    if timing:
        s1 = m.shard(0, 1)
        t1 = median_ms(lambda: rank_step(m, s1, replica, 0))
    for tp in tps:
        same = []
        y = None
        for rank in range(tp):
            cache = m.cache.clone()  # each rank's own replica of the cache
            xq, xs, part = rank_step(m, m.shard(rank, tp), cache, splits)
            same.append(compare(tp, rank, xq, xs, ref))
            y = part if y is None else y + part  # bf16 sums, as an NCCL bf16 all-reduce does
        err = rel_err(y, y_ref)
        line = (f"tp={tp} (simulated): codes+scales == single-GPU for every rank: {all(same)}; "
                f"all-reduced o_proj rel. L2 error vs single GPU: {err:.2e}")
        if timing:
            s0 = m.shard(0, tp)
            t = median_ms(lambda: rank_step(m, s0, replica, 0))
            line += f"; one rank's step {t:.3f} ms (tp=1: {t1:.3f} ms)"
        print(line)
        ok = ok and all(same) and err <= tol
    return ok


def distributed(m, splits, tol, timing):
    """One process a GPU under torchrun: NCCL all-reduce; rank 0 checks against world size 1."""
    rank, tp = dist.get_rank(), dist.get_world_size()
    ref, y_ref = reference(m, splits)  # every rank computes it: each checks its own heads
    cache = m.cache.clone()
    s = m.shard(rank, tp)
    xq, xs, part = rank_step(m, s, cache, splits)
    dist.all_reduce(part)
    same = torch.tensor([1 if compare(tp, rank, xq, xs, ref) else 0], device=part.device)
    dist.all_reduce(same, op=dist.ReduceOp.MIN)
    err = rel_err(part, y_ref)
    line = (f"tp={tp} (NCCL) rank {rank}: codes+scales == single-GPU on every rank: "
            f"{bool(same.item())}; all-reduced o_proj rel. L2 error vs single GPU: {err:.2e}")
    if timing:
        def step():
            _, _, p = rank_step(m, s, cache, 0)
            dist.all_reduce(p)
        t = median_ms(step)
        s1 = m.shard(0, 1)
        t1 = median_ms(lambda: rank_step(m, s1, cache, 0))
        line += f"; step with all-reduce {t:.3f} ms (tp=1 on this GPU: {t1:.3f} ms)"
    print(line, flush=True)
    return bool(same.item()) and err <= tol


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--context", type=int, default=4096, help="tokens a sequence after the step")
    ap.add_argument("--page", type=int, default=64, help="tokens a cache page")
    ap.add_argument("--hidden", type=int, default=7168, help="o_proj output size (multiple of 128)")
    ap.add_argument("--simulate", default="", help="tp degrees to run one after another "
                    "in this process, e.g. 2,4,8 (default: the torchrun world)")
    ap.add_argument("--splits", type=int, default=66,
                    help="num_kv_splits of every rank and of the reference (66: the H=128 "
                         "default on 132 SMs)")
    ap.add_argument("--tol", type=float, default=1e-2,
                    help="largest relative L2 error of the all-reduced output")
    ap.add_argument("--no-timing", action="store_true")
    ap.add_argument("--device", default="cuda", help="cuda, or cpu (simulate only; slow)")
    a = ap.parse_args()
    timing = not a.no_timing and a.device == "cuda"
    if a.device == "cuda" and (not torch.cuda.is_available() or not mlafuse.built_with_cuda):
        raise SystemExit("this example needs a CUDA GPU and mlafuse built with the CUDA backend "
                         "(or --device cpu --simulate ...)")
    if a.simulate:
        m = Model(a.batch, a.context, a.page, a.device, a.hidden)
        tps = [int(x) for x in a.simulate.split(",")]
        for tp in tps:
            if tp < 1 or HEADS % tp or HEADS // tp < 16:
                raise SystemExit(f"--simulate: tp {tp} must divide 128 heads into 16 or more")
        ok = simulate(m, tps, a.splits, a.tol, timing)
    else:
        dist.init_process_group("nccl")
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        m = Model(a.batch, a.context, a.page, f"cuda:{local}", a.hidden)
        ok = distributed(m, a.splits, a.tol, timing)
        dist.destroy_process_group()
    raise SystemExit(0 if ok else 1)


if __name__ == "__main__":
    main()
