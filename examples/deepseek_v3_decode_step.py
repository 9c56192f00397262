"""One DeepSeek-V3 MLA decode step in PyTorch, with mlafuse and in plain torch, side by side.

mlafuse:     absorbed q -> mlafuse.mla_decode writing group-128 FP8 codes and column-major
             TMA-aligned scales directly -> block-FP8 o_proj
plain torch: absorbed q -> paged attention + W_UV in torch (bf16 out) -> per-token-group FP8
             quantization in torch -> the same o_proj

Prints the time of each step, the error of mlafuse's o_proj output against the plain step's, and
whether mlafuse's fused FP8 codes equal quantizing its own bf16 output (they must, bit for bit).

    python examples/deepseek_v3_decode_step.py --batch 64 --context 1024 --heads 128

The o_proj here dequantizes the FP8 activations and weight in torch and multiplies in bf16, the
same for both steps; an engine would call a block-FP8 GEMM (DeepGEMM, cuBLASLt) on the codes and
scales, which are laid out for it.
"""

import argparse
import math

import torch

import mlafuse

L, R, V, PAGE, HIDDEN, G = 512, 64, 128, 64, 7168, 128


def quant_group_torch(x, g=G):
    """vLLM's per_token_group_fp8_quant semantics in torch (SPEC 3.2)."""
    t, d = x.shape
    xg = x.float().view(t, d // g, g)
    amax = xg.abs().amax(dim=-1).clamp_min(1e-10)
    # A tensor divisor: torch turns division by a Python scalar into a product with its rounded
    # reciprocal, not the correctly rounded quotient vLLM's kernel computes.
    s = amax / torch.full_like(amax, 448.0)
    q = (xg / s[..., None]).clamp(-448.0, 448.0).to(torch.float8_e4m3fn)
    return q.view(t, d), s


def o_proj(xq, xs, w_deq):
    """Block-FP8 o_proj: activations dequantized per 1x128 group, weight dequantized once."""
    t, d = xq.shape
    x = (xq.float().view(t, d // G, G) * xs.float()[..., None]).view(t, d).to(torch.bfloat16)
    return x @ w_deq.T


def plain_attention(q, cache, table, seq_lens, w_uv, softmax_scale):
    """Absorbed decode attention over the paged cache in torch (padded to the longest
    sequence), then W_UV: bf16 [B, H*128]."""
    b, h, _ = q.shape
    max_len = int(seq_lens.max())
    pos = torch.arange(max_len, device=q.device)
    pages = table[:, (pos // PAGE)].long()                     # [B, max_len]
    kv = cache[pages, pos % PAGE]                               # [B, max_len, 576]
    scores = torch.bmm(q.float(), kv.float().transpose(1, 2)) * softmax_scale
    scores.masked_fill_(pos[None, None, :] >= seq_lens[:, None, None], float("-inf"))
    p = torch.softmax(scores, dim=-1)
    o_lat = torch.bmm(p, kv[:, :, :L].float()).to(torch.bfloat16)  # [B, H, 512]
    out = torch.einsum("bhl,hlv->bhv", o_lat.float(), w_uv.float())
    return out.reshape(b, h * V).to(torch.bfloat16)


def median_ms(fn, iters=20, warmup=3):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(iters):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return sorted(times)[len(times) // 2]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=64, help="decode sequences (one token each)")
    ap.add_argument("--context", type=int, default=1024, help="cached tokens per sequence")
    ap.add_argument("--heads", type=int, default=128, help="heads on this GPU (16/32/64/128)")
    args = ap.parse_args()
    if not torch.cuda.is_available() or not mlafuse.built_with_cuda:
        raise SystemExit("this example needs a CUDA GPU and mlafuse built with the CUDA backend")
    torch.manual_seed(0)
    dev, b, h, ctx = "cuda", args.batch, args.heads, args.context
    pages_per_seq = (ctx + PAGE - 1) // PAGE
    num_pages = b * pages_per_seq
    bf16 = torch.bfloat16

    q = (torch.randn(b, h, L + R, device=dev) * 0.5).to(bf16)  # q_nope @ W_UK_T | q_pe
    cache = torch.randn(num_pages, PAGE, L + R, device=dev).to(bf16)
    table = torch.randperm(num_pages, device=dev).to(torch.int32).view(b, pages_per_seq)
    seq_lens = torch.full((b,), ctx, dtype=torch.int32, device=dev)
    w_uv = (torch.randn(h, L, V, device=dev) * 0.05).to(bf16)
    # o_proj weight in the checkpoint's block-FP8 form (128x128 scales), dequantized once.
    w = torch.randn(HIDDEN, h * V, device=dev) * 0.02
    w_s = w.view(HIDDEN // G, G, h * V // G, G).abs().amax(dim=(1, 3)) / 448.0
    w_q = (w.view(HIDDEN // G, G, h * V // G, G) / w_s[:, None, :, None]).to(torch.float8_e4m3fn)
    w_deq = (w_q.float() * w_s[:, None, :, None]).view(HIDDEN, h * V).to(bf16)
    # DeepSeek-V3's scale: 1/sqrt(192) times YaRN's mscale squared (rope factor 40).
    softmax_scale = (0.1 * math.log(40.0) + 1.0) ** 2 / (128 + 64) ** 0.5

    xq = torch.empty(b, h * V, dtype=torch.float8_e4m3fn, device=dev)
    xs = mlafuse.group_scale_buffer(xq, b, h * V // G, column_major=True, tma_aligned=True)

    def mlafuse_step():
        mlafuse.mla_decode(q, cache, table, seq_lens, w_uv, xq, output_block_scale=xs,
                           softmax_scale=softmax_scale)
        return o_proj(xq, xs, w_deq)

    def plain_step():
        out = plain_attention(q, cache, table, seq_lens, w_uv, softmax_scale)
        pq, ps = quant_group_torch(out)
        return o_proj(pq, ps, w_deq)

    y = mlafuse_step()
    y_plain = plain_step()
    err = ((y.float() - y_plain.float()).norm() / y_plain.float().norm()).item()

    # The fused codes against quantizing mlafuse's own bf16 attention output.
    bf = torch.empty(b, h * V, dtype=bf16, device=dev)
    mlafuse.mla_decode(q, cache, table, seq_lens, w_uv, bf)
    rq, rs = mlafuse.quant_fp8_group(bf, G, column_major_scales=True, tma_aligned_scales=True)
    tq, ts = quant_group_torch(bf)
    torch.cuda.synchronize()
    same = torch.equal(xq.view(torch.uint8), rq.view(torch.uint8)) and torch.equal(xs, rs)
    same_torch = torch.equal(xq.view(torch.uint8), tq.view(torch.uint8)) and torch.equal(
        xs.contiguous(), ts)

    t_fused = median_ms(mlafuse_step)
    t_plain = median_ms(plain_step)
    t_attn = median_ms(lambda: mlafuse.mla_decode(q, cache, table, seq_lens, w_uv, xq,
                                                  output_block_scale=xs))
    t_attn_plain = median_ms(lambda: quant_group_torch(
        plain_attention(q, cache, table, seq_lens, w_uv, softmax_scale)))
    print(f"DeepSeek-V3 MLA decode step: batch {b}, context {ctx}, heads {h}, "
          f"{torch.cuda.get_device_name()}")
    print(f"  attention + FP8 quant: mlafuse {t_attn:.3f} ms, plain torch {t_attn_plain:.3f} ms")
    print(f"  whole step (+ o_proj): mlafuse {t_fused:.3f} ms, plain torch {t_plain:.3f} ms")
    print(f"  o_proj output, relative L2 error of mlafuse vs plain torch: {err:.2e}")
    print(f"  fused FP8 codes and scales == quant_fp8_group(mlafuse bf16 output): {same}")
    print(f"  ... == the torch quantizer on that bf16 output: {same_torch}")
    if not same_torch:  # say where they part, so a mismatch can be diagnosed from the log
        diff = (xq.view(torch.uint8) != tq.view(torch.uint8)).nonzero()
        sdiff = (xs.contiguous() != ts).nonzero()
        print(f"     {len(diff)} codes and {len(sdiff)} scales differ")
        for t, c in diff[:3].tolist():
            g = c // G
            print(f"     t={t} col={c}: x={bf[t, c].item()!r} scale mlafuse={xs[t, g].item()!r} "
                  f"torch={ts[t, g].item()!r} code mlafuse={xq.view(torch.uint8)[t, c].item():#04x} "
                  f"torch={tq.view(torch.uint8)[t, c].item():#04x}")
    if not (same and same_torch):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
