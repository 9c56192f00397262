"""PyTorch baseline for bench_mla_decode: the same MLA decode step (absorbed query against a bf16
latent cache, softmax, latent output, per-head W_UV up-projection) followed by group-128 FP8
quantization, compiled with torch.compile and replayed as a CUDA graph.

Each (B, ctx, H) case is one CUDA graph of R calls over R distinct input sets (R chosen so the sets
exceed the 50 MB L2); the printed time is the median replay time divided by R. The cache is
contiguous per sequence ([B, ctx, 576]), as in ../shared/GPU.md's PyTorch figures.

Usage: python3 bench/torch_mla_decode.py OUT_FILE [B,ctx,H ...]
Writes lines "B ctx H microseconds" to OUT_FILE.
"""
import math
import sys

import torch

L, R, V, G = 512, 64, 128, 128
FP8_MAX = 448.0


def decode_quant(q_cat, kv, w_uv, scale: float):
    # q_cat [B, H, 576], kv [B, ctx, 576], w_uv [H, 512, 128] (bf16)
    s = torch.matmul(q_cat, kv.transpose(1, 2)).float() * scale  # [B, H, ctx]
    p = torch.softmax(s, dim=-1).to(torch.bfloat16)
    o_lat = torch.matmul(p, kv[:, :, :L])  # [B, H, 512] bf16
    out = torch.einsum("bhl,hlv->bhv", o_lat, w_uv)  # [B, H, 128] bf16
    x = out.reshape(out.shape[0], -1, G).float()
    amax = x.abs().amax(dim=-1, keepdim=True).clamp_min(1e-10)
    sc = amax / FP8_MAX
    q = (x / sc).clamp(-FP8_MAX, FP8_MAX).to(torch.float8_e4m3fn)
    return q.reshape(out.shape[0], -1), sc.squeeze(-1)


def bench_case(fn, b, ctx, h):
    scale = 1.0 / math.sqrt(192.0)
    set_bytes = b * ctx * 576 * 2 + h * L * V * 2 + b * h * 576 * 2
    reps = max(1, min(16, (150 << 20) // set_bytes + 1))
    sets = []
    for _ in range(reps):
        sets.append((torch.randn(b, h, 576, device="cuda", dtype=torch.bfloat16),
                     torch.randn(b, ctx, 576, device="cuda", dtype=torch.bfloat16),
                     0.05 * torch.randn(h, L, V, device="cuda", dtype=torch.bfloat16)))
    for s in sets[:2]:  # compile and warm up
        fn(*s, scale)
    torch.cuda.synchronize()
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for s in sets:
            fn(*s, scale)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for s in sets:
            fn(*s, scale)
    for _ in range(3):
        graph.replay()
    times = []
    for _ in range(15):
        e0 = torch.cuda.Event(enable_timing=True)
        e1 = torch.cuda.Event(enable_timing=True)
        e0.record()
        graph.replay()
        e1.record()
        e1.synchronize()
        times.append(e0.elapsed_time(e1))
    times.sort()
    del graph, sets
    torch.cuda.empty_cache()
    return 1000.0 * times[len(times) // 2] / reps


def main():
    out_file = sys.argv[1]
    cases = [tuple(int(v) for v in a.split(",")) for a in sys.argv[2:]] or [
        (1, 4096, 128), (16, 4096, 128), (64, 4096, 128), (128, 4096, 128), (128, 1024, 128),
        (128, 4096, 16)]
    print("device:", torch.cuda.get_device_name(0), flush=True)
    fn = torch.compile(decode_quant, dynamic=False)
    with open(out_file, "w") as f:
        for b, ctx, h in cases:
            us = bench_case(fn, b, ctx, h)
            print(f"torch.compile B={b} ctx={ctx} H={h}: {us:.1f} us", flush=True)
            f.write(f"{b} {ctx} {h} {us:.3f}\n")
            f.flush()


if __name__ == "__main__":
    main()
