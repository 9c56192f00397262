"""PyTorch baseline for bench_quant: per-token-group FP8 quantization (G = 128, bf16 in, exact
division, f32 scales written column-major as the fused attention writes them), compiled with
torch.compile and replayed as a CUDA graph.

The timing matches bench_quant: one CUDA graph of R calls over S distinct input sets (S sized so
the sets exceed the 50 MB L2 where memory allows; at most 64), 25 timed replays after 3 warm-ups,
median replay time over R. Random data.

Usage: python3 bench/torch_quant.py OUT_FILE [T ...]
Writes lines "T microseconds" to OUT_FILE.
"""
import sys

import torch

D, G = 16384, 128
FP8_MAX = 448.0


def group_quant(x):
    t = x.shape[0]
    xg = x.float().view(t, D // G, G)
    amax = xg.abs().amax(dim=-1, keepdim=True).clamp_min(1e-10)
    s = amax / FP8_MAX
    q = (xg / s).clamp(-FP8_MAX, FP8_MAX).to(torch.float8_e4m3fn).view(t, D)
    return q, s.view(t, D // G).t().contiguous()  # [D/G, T]: column-major [T, D/G]


def bench(fn, t):
    in_bytes = t * D * 2
    sets = min(64, max(2, (256 << 20) // in_bytes + 1))
    reps = sets * ((32 + sets - 1) // sets)
    xs = []
    for i in range(sets):
        mag = torch.exp2(torch.randint(-6, 7, (t, D // 16, 1), device="cuda").float())
        xs.append((torch.randn(t, D // 16, 16, device="cuda") * mag).view(t, D).to(torch.bfloat16))
    for x in xs[:2]:  # compile and warm up
        fn(x)
    torch.cuda.synchronize()
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for x in xs:
            fn(x)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    outs = []
    with torch.cuda.graph(graph):
        for i in range(reps):
            outs.append(fn(xs[i % sets]))
    times = []
    for r in range(28):
        e0 = torch.cuda.Event(enable_timing=True)
        e1 = torch.cuda.Event(enable_timing=True)
        e0.record()
        graph.replay()
        e1.record()
        e1.synchronize()
        if r >= 3:
            times.append(e0.elapsed_time(e1))
    times.sort()
    del graph, outs, xs
    torch.cuda.empty_cache()
    return 1000.0 * times[len(times) // 2] / reps


def main():
    out_file = sys.argv[1]
    tokens = [int(v) for v in sys.argv[2:]] or [1, 16, 128, 1024, 8192, 32768]
    print("device:", torch.cuda.get_device_name(0), "torch", torch.__version__, flush=True)
    fn = torch.compile(group_quant, dynamic=False)
    with open(out_file, "w") as f:
        for t in tokens:
            us = bench(fn, t)
            gbps = (3.0 * t * D + 4.0 * t * D / G) / (us * 1e3)
            print(f"torch.compile group quant T={t}: {us:.2f} us ({gbps:.0f} GB/s)", flush=True)
            f.write(f"{t} {us:.3f}\n")
            f.flush()


if __name__ == "__main__":
    main()
