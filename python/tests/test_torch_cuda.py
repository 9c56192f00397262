"""The package with torch CUDA tensors (skipped without torch, a GPU, or a CUDA build):
codes and scales bit-exact against a torch implementation of SPEC 3, the fused mla_decode equal
bit for bit to the unfused call followed by quant_fp8_group, capture in a CUDA graph replayed
with several n, and torch.compile(fullgraph=True) over the ops."""

import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")
import mlafuse  # noqa: E402

# bench/device.sh sets MLAFUSE_REQUIRE_GPU=1: there a missing device or backend is a failure.
_REQUIRED = os.environ.get("MLAFUSE_REQUIRE_GPU") == "1"
for _missing, _why in ((not torch.cuda.is_available(), "no CUDA device"),
                       (not mlafuse.built_with_cuda, "mlafuse was built without the CUDA backend")):
    if _missing:
        if _REQUIRED:
            raise RuntimeError(_why + " (MLAFUSE_REQUIRE_GPU=1)")
        pytest.skip(_why, allow_module_level=True)

from npref import BF16, quant_nvfp4 as np_nvfp4  # noqa: E402

DEV = "cuda"
FP8 = torch.float8_e4m3fn


def u8(t):
    return t.view(torch.uint8)


def to_numpy_bf16(t):
    return t.cpu().view(torch.int16).numpy().view(np.uint16).view(BF16)


# ---- the reference semantics in torch (SPEC 3.1, 3.2) ----------------------------------------

def ref_group(x, g, eps=1e-10, ue8m0=False):
    t, d = x.shape
    xg = x.float().view(t, d // g, g)
    amax = xg.abs().amax(dim=-1).clamp_min(eps)
    # A tensor divisor: torch turns division by a Python scalar into a product with its rounded
    # reciprocal, which is not the correctly rounded quotient SPEC 3.2 asks for.
    s = amax / torch.full_like(amax, 448.0)
    if ue8m0:
        bits = s.view(torch.int32)
        up = ((bits >> 23) + 1) << 23
        s = torch.where((bits & 0x7FFFFF) != 0, up, bits).view(torch.float32)
    q = (xg / s[..., None]).clamp(-448.0, 448.0).to(FP8)
    return q.view(t, d), s


def ref_static(x, scale):
    inv = 1.0 / scale
    return (x.float() * inv).clamp(-448.0, 448.0).to(FP8)


def rand_bf16(shape, scale=1.0, seed=0):
    g = torch.Generator(device=DEV).manual_seed(seed)
    return (torch.randn(shape, generator=g, device=DEV) * scale).to(torch.bfloat16)


# ---- quantization ops ------------------------------------------------------------------------

@pytest.mark.parametrize("t,d", [(1, 128), (17, 512), (33, 7168), (197, 2048)])
@pytest.mark.parametrize("g", [128, 64])
@pytest.mark.parametrize("col_major,tma", [(False, False), (True, False), (True, True)])
@pytest.mark.parametrize("ue8m0", [False, True])
def test_quant_fp8_group_bit_exact(t, d, g, col_major, tma, ue8m0):
    x = rand_bf16((t, d), 4.0, seed=t + d)
    q, s = mlafuse.quant_fp8_group(x, g, column_major_scales=col_major, tma_aligned_scales=tma,
                                   scale_ue8m0=ue8m0)
    torch.cuda.synchronize()
    rq, rs = ref_group(x, g, ue8m0=ue8m0)
    assert q.dtype == FP8 and q.device.type == "cuda"
    assert torch.equal(u8(q), u8(rq))
    assert torch.equal(s.contiguous().view(torch.int32), rs.view(torch.int32))
    if col_major:
        assert s.stride() == (1, (t + 3) // 4 * 4 if tma else t)


def test_quant_fp8_static_bit_exact():
    x = rand_bf16((33, 2048), 100.0, seed=5)
    scale = torch.tensor([0.11], device=DEV)
    assert torch.equal(u8(mlafuse.quant_fp8_static(x, scale)), u8(ref_static(x, scale)))


@pytest.mark.parametrize("t", [1, 129])
def test_quant_nvfp4_bit_exact(t):
    # The NVFP4 reference is npref's numpy one, on a host copy of the same bf16 input.
    x = rand_bf16((t, 2048), 2.0, seed=t)
    gs = torch.tensor([448 * 6 / x.float().abs().max().item()], device=DEV)
    q, sf = mlafuse.quant_nvfp4(x, gs)
    rq, rsf = np_nvfp4(to_numpy_bf16(x), gs.item())
    np.testing.assert_array_equal(q.cpu().numpy(), rq)
    np.testing.assert_array_equal(u8(sf).cpu().numpy(), rsf)


def test_cache_write_matches_indexing():
    t, pages = 9, 4
    kv_c, k_pe = rand_bf16((t, 512), seed=1), rand_bf16((t, 1, 64), seed=2)
    cache = torch.zeros((pages, 64, 576), dtype=torch.bfloat16, device=DEV)
    slots = torch.tensor([0, 3, -1, 64, 200, 255, -1, 100, 7], dtype=torch.int32, device=DEV)
    mlafuse.cache_write(kv_c, k_pe, cache, slots)
    expect = torch.zeros_like(cache).view(-1, 576)
    keep = slots >= 0
    expect[slots[keep].long()] = torch.cat([kv_c, k_pe[:, 0]], dim=1)[keep]
    assert torch.equal(cache.view(-1, 576), expect)


# ---- mla_decode ------------------------------------------------------------------------------

def decode_inputs(t_pad, heads, lens, pages=64, seed=0):
    q = rand_bf16((t_pad, heads, 576), 0.5, seed=seed)
    cache = rand_bf16((pages, 64, 576), seed=seed + 1)
    w_uv = rand_bf16((heads, 512, 128), 0.05, seed=seed + 2)
    max_pages = max(1, max((length + 63) // 64 for length in lens))
    table = torch.full((t_pad, max_pages), 1 << 20, dtype=torch.int32)  # never read
    gen = torch.Generator().manual_seed(seed)
    for i, length in enumerate(lens):
        need = (length + 63) // 64
        table[i, :need] = torch.randperm(pages, generator=gen)[:need].to(torch.int32)
    seq_lens = torch.zeros(t_pad, dtype=torch.int32)
    seq_lens[:len(lens)] = torch.tensor(lens, dtype=torch.int32)
    return q, cache, table.to(DEV), seq_lens.to(DEV), w_uv


def decode_bf16(q, cache, table, seq_lens, w_uv, n=None):
    out = torch.zeros((q.shape[0], q.shape[1] * 128), dtype=torch.bfloat16, device=DEV)
    mlafuse.mla_decode(q, cache, table, seq_lens, w_uv, out, num_tokens=n)
    return out


def torch_decode(q, cache, table, seq_lens, w_uv, scale=192 ** -0.5):
    """Plain torch f32 math of the absorbed decode (SPEC 4), for a tolerance check."""
    outs = []
    for t in range(q.shape[0]):
        length = int(seq_lens[t])
        if length == 0:
            outs.append(torch.zeros(q.shape[1] * 128, device=DEV))
            continue
        pos = torch.arange(length, device=DEV)
        rows = cache[table[t, pos // 64].long(), pos % 64].float()
        p = torch.softmax(q[t].float() @ rows.T * scale, dim=-1)
        o_lat = (p @ rows[:, :512]).to(torch.bfloat16).float()
        outs.append(torch.einsum("hl,hlv->hv", o_lat, w_uv.float()).reshape(-1))
    return torch.stack(outs)


def assert_rows_close(got, ref, tol=1e-2):
    """Per token row: ||got - ref|| / ||ref|| <= tol, and rows whose reference is 0 exactly 0 (the
    C++ GPU tests' rule; a max over the whole tensor would let a short row's error hide behind a
    long row's scale)."""
    got, ref = got.float(), ref.float()
    for t in range(ref.shape[0]):
        norm = ref[t].norm()
        if norm == 0:
            assert torch.equal(got[t], torch.zeros_like(got[t])), f"row {t} must be 0"
        else:
            err = ((got[t] - ref[t]).norm() / norm).item()
            assert err <= tol, f"row {t}: normalized error {err:.3g} > {tol}"


@pytest.mark.parametrize("heads", [16, 128])
def test_mla_decode_bf16_against_torch_and_cpu_reference(heads):
    lens = [1, 17, 64, 65, 977, 0, 300]
    q, cache, table, seq_lens, w_uv = decode_inputs(len(lens), heads, lens)
    out = decode_bf16(q, cache, table, seq_lens, w_uv).float()
    ref = torch_decode(q, cache, table, seq_lens, w_uv)
    assert_rows_close(out, ref)
    assert torch.equal(out[5], torch.zeros_like(out[5]))
    cpu = np.zeros((len(lens), heads * 128), BF16)  # the C++ CPU reference through numpy
    mlafuse.mla_decode(to_numpy_bf16(q), to_numpy_bf16(cache), table.cpu().numpy(),
                       seq_lens.cpu().numpy(), to_numpy_bf16(w_uv), cpu)
    cpu = torch.from_numpy(cpu.astype(np.float32)).to(DEV)
    assert_rows_close(out, cpu)
    # DeepSeek-V3's own scale (YaRN's mscale squared / sqrt(192)), passed as softmax_scale.
    v3 = (0.1 * np.log(40.0) + 1.0) ** 2 / 192 ** 0.5
    out_v3 = torch.zeros((len(lens), heads * 128), dtype=torch.bfloat16, device=DEV)
    mlafuse.mla_decode(q, cache, table, seq_lens, w_uv, out_v3, softmax_scale=v3)
    assert_rows_close(out_v3, torch_decode(q, cache, table, seq_lens, w_uv, scale=v3))
    assert not torch.equal(out_v3, out.to(torch.bfloat16))


@pytest.mark.parametrize("heads,k", [(16, 2), (128, 2), (32, 3), (16, 5)])
def test_mla_decode_multi_token_sequences(heads, k):
    # k query rows a sequence (MTP): close, row by row, to one-token rows of the causal lengths
    # (the same bits at H = 128; at H = 16 and 32 a sequence's tokens share a tile, so the splits
    # differ) and to torch's math; a CUDA graph replays it.
    lens = [k, 65, 977, 4097 if heads == 16 else 300]
    b = len(lens)
    q, cache, _, _, w_uv = decode_inputs(b * k, heads, [1], pages=80, seed=k)
    _, _, table, seq_lens, _ = decode_inputs(b, heads, lens, pages=80, seed=10 + k)
    out = torch.zeros((b * k, heads * 128), dtype=torch.bfloat16, device=DEV)
    mlafuse.mla_decode(q, cache, table, seq_lens, w_uv, out, tokens_per_seq=k)
    rows = torch.arange(b * k, device=DEV) // k
    j = torch.arange(b * k, device=DEV) % k
    row_lens = torch.clamp(seq_lens[rows] - (k - 1 - j), min=0).to(torch.int32)
    row_table = table[rows].contiguous()
    one = decode_bf16(q, cache, row_table, row_lens, w_uv)
    if heads >= 64:
        assert torch.equal(out, one)
    rel = (out.float() - one.float()).abs().amax(1) / one.float().abs().amax(1)
    assert rel.max() < 2e-2
    ref = torch_decode(q, cache, row_table, row_lens, w_uv)
    assert ((out.float() - ref).abs().amax(1) / ref.abs().amax(1)).max() < 2e-2
    graph_out = torch.zeros_like(out)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        mlafuse.mla_decode(q, cache, table, seq_lens, w_uv, graph_out, tokens_per_seq=k)
    g.replay()
    torch.cuda.synchronize()
    assert torch.equal(graph_out, out)


@pytest.mark.parametrize("k,lens,t_pad", [(3, [45760], 3), (4, [11200] * 4, 128)])
def test_mla_decode_multi_token_units_with_many_splits(k, lens, t_pad):
    # Units of 4 tokens (H = 16) over 960 parts: a combine tile's merge list would outgrow its
    # shared-memory lists (16 + 4 * 960 > 1024 entries), so the latent merge runs first. Each row
    # stays close to the one-token row of its causal length.
    heads, n = 16, len(lens) * k
    pages = sum((length + 63) // 64 for length in lens) + 1
    q, cache, _, _, w_uv = decode_inputs(t_pad, heads, [1], pages=pages, seed=k)
    _, _, table, seq_lens, _ = decode_inputs(t_pad // k, heads, lens, pages=pages, seed=20 + k)
    out = torch.zeros((t_pad, heads * 128), dtype=torch.bfloat16, device=DEV)
    mlafuse.mla_decode(q, cache, table, seq_lens, w_uv, out, num_tokens=n, tokens_per_seq=k,
                       num_kv_splits=960)
    rows = torch.arange(n, device=DEV) // k
    j = torch.arange(n, device=DEV) % k
    row_lens = torch.clamp(seq_lens[rows] - (k - 1 - j), min=0).to(torch.int32)
    one = decode_bf16(q[:n].contiguous(), cache, table[rows].contiguous(), row_lens, w_uv)
    err = (out[:n].float() - one.float()).norm(dim=1) / one.float().norm(dim=1)
    assert err.max() < 1e-2, err


@pytest.mark.parametrize("splits", [1, 5, 960])
def test_mla_decode_fixed_split_counts(splits):
    # Every split count gives the reference's answer within tolerance, and the group-128 codes of
    # a 16-head slice equal the 128-head call's (the tensor-parallel property, SPEC 4 plan).
    lens = [1, 64, 65, 977, 0, 300, 4000]
    q, cache, table, seq_lens, w_uv = decode_inputs(len(lens), 128, lens)
    out = torch.zeros((len(lens), 128 * 128), dtype=torch.bfloat16, device=DEV)
    mlafuse.mla_decode(q, cache, table, seq_lens, w_uv, out, num_kv_splits=splits)
    ref = torch_decode(q, cache, table, seq_lens, w_uv)
    assert_rows_close(out, ref)
    full = torch.empty((len(lens), 128 * 128), dtype=FP8, device=DEV)
    fs = torch.empty((len(lens), 128), device=DEV)
    mlafuse.mla_decode(q, cache, table, seq_lens, w_uv, full, output_block_scale=fs,
                       num_kv_splits=splits)
    part = torch.empty((len(lens), 16 * 128), dtype=FP8, device=DEV)
    ps = torch.empty((len(lens), 16), device=DEV)
    mlafuse.mla_decode(q[:, 32:48].contiguous(), cache, table, seq_lens,
                       w_uv[32:48].contiguous(), part, output_block_scale=ps,
                       num_kv_splits=splits)
    assert torch.equal(u8(part), u8(full[:, 32 * 128:48 * 128]))
    assert torch.equal(ps, fs[:, 32:48])
    with pytest.raises(ValueError, match="num_kv_splits"):
        mlafuse.mla_decode(q, cache, table, seq_lens, w_uv, out, num_kv_splits=961)


def test_mla_decode_reuse_schedule():
    # The first layer of a step computes the schedule into the workspace, later layers (their own
    # q and W_UV) reuse it: each output equals a call that plans for itself.
    lens = [1, 64, 65, 977, 0, 300, 4000]
    t, heads = len(lens), 128
    q, cache, table, seq_lens, w_uv = decode_inputs(t, heads, lens)
    q2, _, _, _, w2 = decode_inputs(t, heads, lens, seed=5)
    ws = torch.empty(mlafuse.mla_decode_workspace_bytes(t, heads, 0), dtype=torch.uint8,
                     device=DEV)
    out = torch.zeros((t, heads * 128), dtype=torch.bfloat16, device=DEV)
    out2 = torch.zeros_like(out)
    mlafuse.mla_decode(q, cache, table, seq_lens, w_uv, out, workspace=ws)
    mlafuse.mla_decode(q2, cache, table, seq_lens, w2, out2, workspace=ws, reuse_schedule=True)
    assert torch.equal(out, decode_bf16(q, cache, table, seq_lens, w_uv))
    assert torch.equal(out2, decode_bf16(q2, cache, table, seq_lens, w2))
    # The reusing call really skips the plan: with seq_lens changed in place (which breaks the
    # contract) it still follows the schedule of the old lengths.
    original = seq_lens.clone()
    seq_lens.copy_(torch.minimum(seq_lens, torch.full_like(seq_lens, 64)))
    stale = torch.zeros_like(out)
    mlafuse.mla_decode(q, cache, table, seq_lens, w_uv, stale, workspace=ws, reuse_schedule=True)
    assert torch.equal(stale, out)
    assert not torch.equal(decode_bf16(q, cache, table, seq_lens, w_uv), out)
    seq_lens.copy_(original)
    # With a fixed part count the schedule does not depend on H: a 16-head shard may reuse the
    # 128-head call's schedule and gets the output of a 16-head call that plans for itself.
    mlafuse.mla_decode(q, cache, table, seq_lens, w_uv, out, workspace=ws, num_kv_splits=5)
    shard = torch.zeros((t, 16 * 128), dtype=torch.bfloat16, device=DEV)
    q16, w16 = q[:, :16].contiguous(), w_uv[:16].contiguous()
    mlafuse.mla_decode(q16, cache, table, seq_lens, w16, shard, workspace=ws, num_kv_splits=5,
                       reuse_schedule=True)
    own = torch.zeros_like(shard)
    mlafuse.mla_decode(q16, cache, table, seq_lens, w16, own, num_kv_splits=5)
    assert torch.equal(shard, own)
    # Misuse is refused, naming what differs.
    with pytest.raises(ValueError, match="workspace="):
        mlafuse.mla_decode(q, cache, table, seq_lens, w_uv, out, reuse_schedule=True)
    fresh = torch.empty_like(ws)
    with pytest.raises(ValueError, match="holds no schedule"):
        mlafuse.mla_decode(q, cache, table, seq_lens, w_uv, out, workspace=fresh,
                           reuse_schedule=True)
    with pytest.raises(ValueError, match="split-KV parts 5 there"):
        mlafuse.mla_decode(q, cache, table, seq_lens, w_uv, out, workspace=ws,
                           reuse_schedule=True)
    with pytest.raises(ValueError, match="T_pad 7 there, 3 here"):
        mlafuse.mla_decode(q[:3], cache, table[:3], seq_lens[:3], w_uv, out[:3], workspace=ws,
                           num_kv_splits=5, reuse_schedule=True)
    with pytest.raises(ValueError, match="num_tokens 7 there, 4 here"):
        mlafuse.mla_decode(q, cache, table, seq_lens, w_uv, out, num_tokens=4, workspace=ws,
                           num_kv_splits=5, reuse_schedule=True)
    # With several query tokens a sequence the schedule's unit depends on H (4 tokens at H = 16,
    # 1 at H = 64): a 64-head call may not reuse a 16-head call's schedule.
    k, b = 2, 4
    qk16, _, _, _, wk16 = decode_inputs(b * k, 16, [1], seed=7)
    qk64, _, _, _, wk64 = decode_inputs(b * k, 64, [1], seed=8)
    _, _, tk, lk, _ = decode_inputs(b, 16, [k, 65, 977, 300], seed=9)
    wsk = torch.empty(mlafuse.mla_decode_workspace_bytes(b * k, 64, 0, num_kv_splits=5),
                      dtype=torch.uint8, device=DEV)
    o16 = torch.zeros((b * k, 16 * 128), dtype=torch.bfloat16, device=DEV)
    o64 = torch.zeros((b * k, 64 * 128), dtype=torch.bfloat16, device=DEV)
    mlafuse.mla_decode(qk16, cache, tk, lk, wk16, o16, tokens_per_seq=k, workspace=wsk,
                       num_kv_splits=5)
    with pytest.raises(ValueError, match="query tokens a schedule unit 4 there, 1 here"):
        mlafuse.mla_decode(qk64, cache, tk, lk, wk64, o64, tokens_per_seq=k, workspace=wsk,
                           num_kv_splits=5, reuse_schedule=True)


@pytest.mark.parametrize("g", [128, 64])
@pytest.mark.parametrize("col_major,tma", [(False, False), (True, False), (True, True)])
@pytest.mark.parametrize("ue8m0", [False, True])
@pytest.mark.parametrize("heads", [16, 128])
def test_mla_decode_fused_group_equals_unfused_then_quant(g, col_major, tma, ue8m0, heads):
    lens = [5, 64, 129, 1, 2000, 33, 7]
    t = len(lens)
    q, cache, table, seq_lens, w_uv = decode_inputs(t, heads, lens, seed=g + heads)
    unfused = decode_bf16(q, cache, table, seq_lens, w_uv)
    ref_q, ref_s = mlafuse.quant_fp8_group(unfused, g, column_major_scales=col_major,
                                           tma_aligned_scales=tma, scale_ue8m0=ue8m0)
    d = heads * 128
    out = torch.empty((t, d), dtype=FP8, device=DEV)
    scales = mlafuse.group_scale_buffer(out, t, d // g, col_major, tma)
    mlafuse.mla_decode(q, cache, table, seq_lens, w_uv, out, output_block_scale=scales,
                       scale_ue8m0=ue8m0)
    torch.cuda.synchronize()
    assert torch.equal(u8(out), u8(ref_q))
    assert torch.equal(scales.contiguous(), ref_s.contiguous())
    tq, ts = ref_group(unfused, g, ue8m0=ue8m0)  # and both equal the torch semantics
    assert torch.equal(u8(out), u8(tq)) and torch.equal(scales.contiguous(), ts)


def test_mla_decode_fused_static_and_nvfp4_equal_unfused():
    lens = [10, 70, 0, 500]
    t = len(lens)
    q, cache, table, seq_lens, w_uv = decode_inputs(t, 32, lens)
    ob = decode_bf16(q, cache, table, seq_lens, w_uv)
    scale = torch.tensor([0.01], device=DEV)
    out = torch.empty((t, 4096), dtype=FP8, device=DEV)
    mlafuse.mla_decode(q, cache, table, seq_lens, w_uv, out, output_scale=scale)
    assert torch.equal(u8(out), u8(mlafuse.quant_fp8_static(ob, scale)))
    gs = torch.tensor([50.0], device=DEV)
    rq, rsf = mlafuse.quant_nvfp4(ob, gs)
    out4 = torch.empty((t, 2048), dtype=torch.uint8, device=DEV)
    sf = torch.zeros(mlafuse.nvfp4_scale_shape(t, 4096), dtype=FP8, device=DEV)
    mlafuse.mla_decode(q, cache, table, seq_lens, w_uv, out4, output_scale=gs,
                       output_block_scale=sf)
    assert torch.equal(out4, rq) and torch.equal(u8(sf), u8(rsf))


def test_mla_decode_padded_n_writes_only_real_tokens():
    t_pad, n, heads = 16, 5, 128
    lens = [3, 64, 65, 900, 1]
    q, cache, table, seq_lens, w_uv = decode_inputs(t_pad, heads, lens)
    d = heads * 128
    out = torch.full((t_pad, d), 0x5A, dtype=torch.uint8, device=DEV).view(FP8)
    scales = mlafuse.group_scale_buffer(out, t_pad, d // 128, True, True)
    scales.fill_(-7.0)
    mlafuse.mla_decode(q, cache, table, seq_lens, w_uv, out, output_block_scale=scales,
                       num_tokens=n)
    rq, rs = mlafuse.quant_fp8_group(decode_bf16(q[:n], cache, table[:n], seq_lens[:n], w_uv),
                                     128, column_major_scales=True, tma_aligned_scales=True)
    torch.cuda.synchronize()
    assert torch.equal(u8(out)[:n], u8(rq)) and bool((u8(out)[n:] == 0x5A).all())
    assert torch.equal(scales[:n], rs) and bool((scales[n:] == -7.0).all())


def test_cuda_graph_capture_and_replay_with_several_n():
    t_pad, heads = 32, 128
    lens = [int(x) for x in torch.randint(1, 1500, (t_pad,), generator=torch.Generator()
                                          .manual_seed(3))]
    q, cache, table, seq_lens, w_uv = decode_inputs(t_pad, heads, lens)
    d = heads * 128
    n_dev = torch.tensor([t_pad], dtype=torch.int32, device=DEV)
    out = torch.empty((t_pad, d), dtype=FP8, device=DEV)
    scales = mlafuse.group_scale_buffer(out, t_pad, d // 128, True, True)
    bf = torch.empty((t_pad, d), dtype=torch.bfloat16, device=DEV)
    q2, s2 = torch.empty_like(out), torch.empty_like(scales)

    def step():
        mlafuse.mla_decode(q, cache, table, seq_lens, w_uv, out, output_block_scale=scales,
                           num_tokens=n_dev)
        mlafuse.mla_decode(q, cache, table, seq_lens, w_uv, bf, num_tokens=n_dev)
        mlafuse.quant_fp8_group(bf, 128, True, True, out=q2, scale_out=s2)

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        step()  # warm-up outside the capture
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        step()
    for n in (1, 7, 32, 19):
        n_dev.fill_(n)
        out.view(torch.uint8).fill_(0x5A)
        scales.fill_(-7.0)
        graph.replay()
        torch.cuda.synchronize()
        rq, rs = mlafuse.quant_fp8_group(
            decode_bf16(q[:n], cache, table[:n], seq_lens[:n], w_uv), 128, True, True)
        assert torch.equal(u8(out)[:n], u8(rq)), n
        assert torch.equal(scales[:n], rs), n
        assert bool((u8(out)[n:] == 0x5A).all()) and bool((scales[n:] == -7.0).all()), n
        # Fused and unfused-then-quant replayed in the same graph agree bit for bit.
        assert torch.equal(u8(out)[:n], u8(q2)[:n]) and torch.equal(scales[:n], s2[:n]), n


def test_torch_compile_fullgraph():
    lens = [40, 300, 1]
    t, heads = len(lens), 64
    q, cache, table, seq_lens, w_uv = decode_inputs(t, heads, lens)
    kv_c, k_pe = rand_bf16((t, 512), seed=9), rand_bf16((t, 1, 64), seed=10)
    slots = torch.tensor([5, 70, -1], dtype=torch.int32, device=DEV)

    def fused_step(q, cache, kv_c, k_pe, slots):
        mlafuse.cache_write(kv_c, k_pe, cache, slots)
        out = torch.empty((q.shape[0], q.shape[1] * 128), dtype=FP8, device=q.device)
        scales = mlafuse.group_scale_buffer(out, q.shape[0], q.shape[1], True, True)
        mlafuse.mla_decode(q, cache, table, seq_lens, w_uv, out, output_block_scale=scales)
        bf = torch.empty((q.shape[0], q.shape[1] * 128), dtype=torch.bfloat16, device=q.device)
        mlafuse.mla_decode(q, cache, table, seq_lens, w_uv, bf)
        q2, s2 = mlafuse.quant_fp8_group(bf, 128, True, True)
        return out, scales, q2, s2

    torch._dynamo.reset()
    compiled = torch.compile(fused_step, fullgraph=True)
    c_cache = cache.clone()
    got = compiled(q, c_cache, kv_c, k_pe, slots)
    e_cache = cache.clone()
    want = fused_step(q, e_cache, kv_c, k_pe, slots)
    torch.cuda.synchronize()
    assert torch.equal(c_cache, e_cache)  # the in-place cache write survived functionalization
    for a, b in zip(got, want):
        assert torch.equal(a.contiguous().view(torch.uint8), b.contiguous().view(torch.uint8))
    assert torch.equal(u8(got[0]), u8(got[2])) and torch.equal(got[1], got[3])


def test_custom_ops_pass_opcheck():
    x = rand_bf16((8, 256))
    # Codes as u8 (the ops take either): opcheck's schema test does arithmetic on the mutated
    # arguments, which torch has no FP8 kernels for.
    out = torch.empty((8, 256), dtype=torch.uint8, device=DEV)
    s = torch.empty((8, 2), device=DEV)
    torch.library.opcheck(torch.ops.mlafuse.quant_fp8_group.default,
                          (x, out, s, 128, False, False, False, 1e-10))
    q, cache, table, seq_lens, w_uv = decode_inputs(2, 16, [3, 70])
    bf = torch.empty((2, 2048), dtype=torch.bfloat16, device=DEV)
    torch.library.opcheck(torch.ops.mlafuse.mla_decode.default,
                          (q, cache, table, seq_lens, w_uv, bf, None, None, -1, None, 0.0, False,
                           0))


def test_cuda_errors_name_the_argument():
    q, cache, table, seq_lens, w_uv = decode_inputs(2, 16, [3, 4])
    out = torch.empty((2, 2048), dtype=torch.bfloat16, device=DEV)
    with pytest.raises(ValueError, match="seq_lens.*cuda|cpu.*q"):
        mlafuse.mla_decode(q, cache, table, seq_lens.cpu(), w_uv, out)
    q8, _, t8, s8, w8 = decode_inputs(2, 8, [3, 4])
    with pytest.raises(ValueError, match="heads"):
        mlafuse.mla_decode(q8, cache, t8, s8, w8, torch.empty((2, 1024), dtype=torch.bfloat16,
                                                               device=DEV))
    with pytest.raises(ValueError, match="strides"):
        x = rand_bf16((4, 256))
        mlafuse.quant_fp8_group(x, column_major_scales=True,
                                scale_out=torch.empty((4, 2), device=DEV))
    with pytest.raises(ValueError, match=r"tensor q .*expected shape \[4, 256\]"):
        mlafuse.quant_fp8_group(rand_bf16((4, 256)),
                                out=torch.empty((3, 256), dtype=FP8, device=DEV))
