"""PyTorch baseline for bench_mla_prefill: MLA prefill in the expanded form (d_qk 192, d_v 128,
causal with the cached context in front of the new tokens) on PyTorch's fastest
scaled_dot_product_attention backend for these head dims, followed by a compiled group-128 FP8
quantization of its output ("chain"); and the whole prefill ("whole": the kv_b_proj up-projection
of the context latents as a bf16 matmul, K = [K_nope | k_pe broadcast over heads], SDPA, quant).

Each backend (cuDNN, flash, efficient) is tried with the lower-right causal bias and, with a
cached context, an explicit boolean mask; the fastest that runs is kept. Times are medians of CUDA
graph replays (eager timing where capture fails). Every case's K/V exceeds L2, so one input set
is replayed.

Usage: python3 bench/torch_mla_prefill.py OUT_FILE [S,Q,CTX,H ...]
Writes lines "S Q CTX H sdpa_us chain_us whole_us" to OUT_FILE (0 where nothing ran).
"""
import math
import sys

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

L, R, P, V, G = 512, 64, 128, 128, 128
FP8_MAX = 448.0
BACKENDS = [("cudnn", SDPBackend.CUDNN_ATTENTION), ("flash", SDPBackend.FLASH_ATTENTION),
            ("efficient", SDPBackend.EFFICIENT_ATTENTION)]


def quant_group128(out):
    # out [S, H, Q, 128] -> [S*Q, H*128] e4m3 codes and [S*Q, H] f32 scales (one head = one group)
    s, h, q, v = out.shape
    x = out.transpose(1, 2).reshape(s * q, h, v).float()
    amax = x.abs().amax(dim=-1, keepdim=True).clamp_min(1e-10)
    sc = amax / FP8_MAX
    codes = (x / sc).clamp(-FP8_MAX, FP8_MAX).to(torch.float8_e4m3fn)
    return codes.reshape(s * q, h * v), sc.squeeze(-1)


def time_us(fn):
    """Median microseconds of fn() replayed as a CUDA graph (eager if capture fails)."""
    fn()
    fn()
    torch.cuda.synchronize()
    run = fn
    graph = None
    try:
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            fn()
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            fn()
        run = graph.replay
    except Exception as e:  # noqa: BLE001 - any capture failure falls back to eager timing
        print(f"  (graph capture failed, eager timing: {type(e).__name__})", flush=True)
        torch.cuda.synchronize()
    for _ in range(3):
        run()
    times = []
    for _ in range(15):
        e0 = torch.cuda.Event(enable_timing=True)
        e1 = torch.cuda.Event(enable_timing=True)
        e0.record()
        run()
        e1.record()
        e1.synchronize()
        times.append(e0.elapsed_time(e1))
    times.sort()
    del graph
    return 1000.0 * times[len(times) // 2]


def masks(q_len, kv_len):
    """The causal masks to try: lower-right causal bias, and with a context an explicit mask."""
    from torch.nn.attention.bias import causal_lower_right
    out = [("causal_lower_right", causal_lower_right(q_len, kv_len))]
    if kv_len == q_len:
        out.append(("is_causal", None))
    else:
        i = torch.arange(q_len, device="cuda")[:, None]
        j = torch.arange(kv_len, device="cuda")[None, :]
        out.append(("bool_mask", j <= i + (kv_len - q_len)))
    return out


def sdpa_call(q, k, v, mask, scale):
    if mask is None:
        return F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scale)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)


def bench_case(quant, s, q_len, ctx, h):
    scale = 1.0 / math.sqrt(192.0)
    kv_len = ctx + q_len
    dev, bf = "cuda", torch.bfloat16
    q = torch.randn(s, h, q_len, P + R, device=dev, dtype=bf)
    k = torch.randn(s, h, kv_len, P + R, device=dev, dtype=bf)
    v = torch.randn(s, h, kv_len, V, device=dev, dtype=bf)
    best = None
    for bname, backend in BACKENDS:
        for mname, mask in masks(q_len, kv_len):
            try:
                with sdpa_kernel([backend]):
                    sdpa_call(q, k, v, mask, scale)
                    torch.cuda.synchronize()
                    us = time_us(lambda: sdpa_call(q, k, v, mask, scale))
            except Exception as e:  # noqa: BLE001 - a backend refusing the shape is expected
                print(f"  {bname}/{mname}: not available ({type(e).__name__})", flush=True)
                continue
            print(f"  {bname}/{mname}: {us:.1f} us", flush=True)
            if best is None or us < best[0]:
                best = (us, backend, mask, f"{bname}/{mname}")
    if best is None:
        return 0.0, 0.0, 0.0, "none"
    sdpa_us, backend, mask, name = best

    def chain():
        with sdpa_kernel([backend]):
            o = sdpa_call(q, k, v, mask, scale)
        return quant(o)

    chain_us = time_us(chain)
    del k, v
    latent = torch.randn(s, kv_len, L, device=dev, dtype=bf)
    k_pe = torch.randn(s, kv_len, R, device=dev, dtype=bf)
    w = 0.05 * torch.randn(h * (P + V), L, device=dev, dtype=bf)

    def whole():
        kv = torch.matmul(latent, w.t()).view(s, kv_len, h, P + V)
        k_nope, vv = kv[..., :P], kv[..., P:]
        kk = torch.cat([k_nope, k_pe[:, :, None, :].expand(s, kv_len, h, R)], dim=-1)
        with sdpa_kernel([backend]):
            o = sdpa_call(q, kk.transpose(1, 2), vv.transpose(1, 2), mask, scale)
        return quant(o)

    try:
        whole_us = time_us(whole)
    except Exception as e:  # noqa: BLE001
        print(f"  whole chain failed ({type(e).__name__}: {e})", flush=True)
        whole_us = 0.0
    return sdpa_us, chain_us, whole_us, name


def main():
    out_file = sys.argv[1]
    cases = [tuple(int(x) for x in a.split(",")) for a in sys.argv[2:]] or [
        (1, 4096, 0, 128), (8, 512, 2048, 128), (16, 128, 0, 128), (1, 4096, 0, 16),
        (8, 512, 2048, 16)]
    print("device:", torch.cuda.get_device_name(0), flush=True)
    quant = torch.compile(quant_group128, dynamic=False)
    with open(out_file, "w") as f:
        for s, q_len, ctx, h in cases:
            print(f"S={s} Q={q_len} ctx={ctx} H={h}", flush=True)
            sdpa_us, chain_us, whole_us, name = bench_case(quant, s, q_len, ctx, h)
            print(f"  fastest {name}: sdpa {sdpa_us:.1f} us, chain {chain_us:.1f} us, whole "
                  f"{whole_us:.1f} us", flush=True)
            f.write(f"{s} {q_len} {ctx} {h} {sdpa_us:.3f} {chain_us:.3f} {whole_us:.3f}\n")
            f.flush()
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
