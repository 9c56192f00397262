"""Eager call overhead of mlafuse ops from Python, against the same calls looped in C++.

For each op it times, on the host, back-to-back calls that only enqueue work (the device is
synchronised between rounds, never inside one) and takes the median round:
  python     mlafuse.<op>(...) with every output buffer given (the eager path: DLPack, checks)
  torch.ops  torch.ops.mlafuse.<op>(...), the custom-op dispatch torch.compile sees
  c++        the same C++ entry with the arrays converted once, looped in C++ (iters=N):
             checks and kernel launches, no Python
overhead = python - c++ is what Python adds to a call (target: < 5 us).

    python bench/python_overhead.py                 # torch CUDA tensors (needs a GPU)
    python bench/python_overhead.py --device cpu    # numpy on the CPU reference (tiny sizes)
"""

import argparse
import statistics
import time

import numpy as np

import mlafuse
from mlafuse import _C, _ops

torch = _ops.torch


def rounds_us(fn, iters, rounds, sync):
    fn()
    sync()
    samples = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        for _ in range(iters):
            fn()
        samples.append((time.perf_counter() - t0) * 1e6 / iters)
        sync()
    return statistics.median(samples)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    ap.add_argument("--tokens", type=int, default=1)
    ap.add_argument("--heads", type=int, default=16)
    ap.add_argument("--context", type=int, default=64)
    ap.add_argument("--iters", type=int, default=100, help="calls per round (<= ~300 on a GPU "
                    "so the launch queue never fills)")
    ap.add_argument("--rounds", type=int, default=21)
    a = ap.parse_args()
    t, h, ctx = a.tokens, a.heads, a.context
    d = h * 128
    pages = max(1, t * ((ctx + 63) // 64))

    if a.device == "cuda":
        if torch is None or not torch.cuda.is_available() or not mlafuse.built_with_cuda:
            raise SystemExit("--device cuda needs torch with a GPU and a CUDA build of mlafuse")
        dev = "cuda"
        x = torch.randn(t, d, device=dev).to(torch.bfloat16)
        q = torch.randn(t, h, 576, device=dev).to(torch.bfloat16)
        cache = torch.randn(pages, 64, 576, device=dev).to(torch.bfloat16)
        w_uv = (torch.randn(h, 512, 128, device=dev) * 0.05).to(torch.bfloat16)
        table = torch.arange(pages, dtype=torch.int32, device=dev).view(t, -1)
        seq_lens = torch.full((t,), ctx, dtype=torch.int32, device=dev)
        out = torch.empty(t, d, dtype=torch.float8_e4m3fn, device=dev)
        ws = torch.empty(mlafuse.mla_decode_workspace_bytes(t, h, 0), dtype=torch.uint8,
                         device=dev)
        sync = torch.cuda.synchronize
        label = f"{torch.cuda.get_device_name()}, torch {torch.__version__}"
    else:
        import ml_dtypes
        rng = np.random.default_rng(0)
        bf = ml_dtypes.bfloat16
        x = rng.standard_normal((t, d), np.float32).astype(bf)
        q = rng.standard_normal((t, h, 576), np.float32).astype(bf)
        cache = rng.standard_normal((pages, 64, 576), np.float32).astype(bf)
        w_uv = (rng.standard_normal((h, 512, 128), np.float32) * 0.05).astype(bf)
        table = np.arange(pages, dtype=np.int32).reshape(t, -1)
        seq_lens = np.full(t, ctx, np.int32)
        out = np.empty((t, d), ml_dtypes.float8_e4m3fn)
        ws = None
        sync = lambda: None  # noqa: E731
        label = "CPU reference (numpy)"
    qo = _ops._empty(x, (t, d), "fp8")
    qs = mlafuse.group_scale_buffer(x, t, d // 128, True, True)
    bs = mlafuse.group_scale_buffer(x, t, d // 128, True, True)

    # The C++ loops get the arrays and tags the eager path hands to _C (torch tensors themselves,
    # not the single-use DLPack capsules: each round is another call).
    xa, xt = _ops._array(x, "x", capsule=False)
    oa, ot = _ops._array(out, "out", capsule=False)
    qa, _ = _ops._array(qo, "out", capsule=False)
    stream = _ops._stream(x)
    rows = []

    py = rounds_us(lambda: mlafuse.quant_fp8_group(x, 128, True, True, out=qo, scale_out=qs),
                   a.iters, a.rounds, sync)
    tops = None
    if torch is not None and a.device == "cuda":
        tops = rounds_us(lambda: torch.ops.mlafuse.quant_fp8_group(x, qo, qs, 128, True, True,
                                                                   False, 1e-10),
                         a.iters, a.rounds, sync)
    cpp = statistics.median(_C.quant_fp8_group(xa, qa, qs, 128, True, True, False, 1e-10, xt,
                                               stream, iters=a.iters)
                            for _ in range(a.rounds))
    rows.append(("quant_fp8_group", py, tops, cpp))

    py = rounds_us(lambda: mlafuse.mla_decode(q, cache, table, seq_lens, w_uv, out,
                                              output_block_scale=bs, workspace=ws),
                   a.iters, a.rounds, sync)
    tops = None
    if torch is not None and a.device == "cuda":
        tops = rounds_us(lambda: torch.ops.mlafuse.mla_decode(q, cache, table, seq_lens, w_uv,
                                                              out, None, bs, -1, None, 0.0,
                                                              False, 0),
                         a.iters, a.rounds, sync)
    cpp = statistics.median(_C.mla_decode(
        _ops._array(q, "q", capsule=False)[0], _ops._array(cache, "kv_cache", capsule=False)[0],
        table, seq_lens, _ops._array(w_uv, "w_uv", capsule=False)[0], oa, ot, None, bs, "", -1,
        None, ws, 0.0, False, 0, stream, iters=a.iters) for _ in range(a.rounds))
    rows.append(("mla_decode (group-128 FP8 out)", py, tops, cpp))

    print(f"eager call overhead, T={t} H={h} context={ctx}, {label}")
    print(f"{'op':32s} {'python us':>10s} {'torch.ops us':>13s} {'c++ us':>8s} "
          f"{'overhead us':>12s}")
    for name, py, tops, cpp in rows:
        tops_s = f"{tops:13.2f}" if tops is not None else f"{'-':>13s}"
        print(f"{name:32s} {py:10.2f} {tops_s} {cpp:8.2f} {py - cpp:12.2f}")
    sync()


if __name__ == "__main__":
    main()
