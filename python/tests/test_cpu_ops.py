"""The package on the CPU backend with numpy inputs: every op against the numpy semantics of
npref.py (bit for bit for codes and scales), out buffers, padded n, and the error cases."""

from pathlib import Path

import numpy as np
import pytest

ml_dtypes = pytest.importorskip("ml_dtypes")
import mlafuse  # noqa: E402

from npref import (BF16, FP8, bf16, mla_decode_f32, quant_fp8_group as ref_group,  # noqa: E402
                   quant_fp8_static as ref_static, quant_nvfp4 as ref_nvfp4)

REPO = Path(__file__).resolve().parents[2]
U8 = np.uint8


def codes(a):
    return np.asarray(a).view(U8)


# ---- quant_fp8_group -------------------------------------------------------------------------

@pytest.mark.parametrize("t,d,g", [(1, 128, 128), (5, 256, 128), (17, 512, 64), (3, 96, 16)])
@pytest.mark.parametrize("col_major,tma", [(False, False), (True, False), (True, True)])
@pytest.mark.parametrize("ue8m0", [False, True])
def test_quant_fp8_group_matches_spec(t, d, g, col_major, tma, ue8m0):
    rng = np.random.default_rng(t * 1000 + d + g)
    x = bf16(rng, (t, d), scale=3.0)
    x[0, :g] = 0  # an all-zero group: the scale is eps / 448
    q, s = mlafuse.quant_fp8_group(x, g, column_major_scales=col_major, tma_aligned_scales=tma,
                                   scale_ue8m0=ue8m0)
    rq, rs = ref_group(x, g, ue8m0=ue8m0)
    assert q.shape == (t, d) and s.shape == (t, d // g) and s.dtype == np.float32
    np.testing.assert_array_equal(codes(q), rq)
    np.testing.assert_array_equal(s.view(np.uint32), rs.view(np.uint32))
    # The layout vLLM's per_token_group_fp8_quant allocates (strides in bytes).
    if col_major:
        rows = (t + 3) // 4 * 4 if tma else t
        assert s.strides == (4, 4 * rows)
    else:
        assert s.strides == (4 * (d // g), 4)


@pytest.mark.parametrize("dtype", [np.float32, np.float16, BF16])
def test_quant_fp8_group_input_dtypes(dtype):
    rng = np.random.default_rng(7)
    x = (rng.standard_normal((4, 256)) * 10).astype(dtype)
    q, s = mlafuse.quant_fp8_group(x)
    rq, rs = ref_group(x.astype(np.float32), 128)
    np.testing.assert_array_equal(codes(q), rq)
    np.testing.assert_array_equal(s, rs)


def test_quant_fp8_group_writes_into_out_buffers():
    rng = np.random.default_rng(1)
    x = bf16(rng, (6, 256))
    out = np.zeros((6, 256), FP8)
    store = np.full((2, 8), -1.0, np.float32)  # column-major TMA-aligned: rows padded 6 -> 8
    scale_out = store.T[:6]
    q, s = mlafuse.quant_fp8_group(x, 128, column_major_scales=True, tma_aligned_scales=True,
                                   out=out, scale_out=scale_out)
    assert q is out and s is scale_out
    rq, rs = ref_group(x, 128)
    np.testing.assert_array_equal(codes(out), rq)
    np.testing.assert_array_equal(store.T[:6], rs)
    np.testing.assert_array_equal(store[:, 6:], -1.0)  # padding rows never written


def test_quant_fp8_group_uint8_out_is_fp8_codes():
    x = bf16(np.random.default_rng(2), (2, 128))
    out = np.zeros((2, 128), U8)
    mlafuse.quant_fp8_group(x, out=out)
    np.testing.assert_array_equal(out, ref_group(x, 128)[0])


def test_quant_fp8_group_eps():
    x = np.zeros((1, 128), np.float32)
    _, s = mlafuse.quant_fp8_group(x, eps=1e-4)
    assert s[0, 0] == np.float32(np.float32(1e-4) / np.float32(448))


# ---- quant_fp8_static, quant_nvfp4 -----------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.float32, BF16])
def test_quant_fp8_static_matches_spec(dtype):
    rng = np.random.default_rng(3)
    x = (rng.standard_normal((9, 64)) * 300).astype(dtype)  # some saturate at 448
    scale = np.array([0.37], np.float32)
    q = mlafuse.quant_fp8_static(x, scale)
    np.testing.assert_array_equal(codes(q), ref_static(x, scale[0]))
    out = np.zeros((9, 64), U8)
    assert mlafuse.quant_fp8_static(x, scale, out=out) is out
    np.testing.assert_array_equal(out, ref_static(x, scale[0]))


@pytest.mark.parametrize("t,d", [(1, 16), (7, 64), (130, 96)])
def test_quant_nvfp4_matches_spec(t, d):
    rng = np.random.default_rng(t + d)
    x = bf16(rng, (t, d), scale=2.0)
    gs = np.array([448 * 6 / float(np.abs(x.astype(np.float32)).max())], np.float32)
    q, sf = mlafuse.quant_nvfp4(x, gs)
    rq, rsf = ref_nvfp4(x, gs[0])
    assert q.shape == (t, d // 2) and sf.shape == rsf.shape
    np.testing.assert_array_equal(codes(q), rq)
    np.testing.assert_array_equal(codes(sf), rsf)


# ---- cache_write -----------------------------------------------------------------------------

def test_cache_write_places_rows_and_skips_minus_one():
    rng = np.random.default_rng(4)
    t, pages, page = 5, 3, 64
    kv_c = bf16(rng, (t, 512))
    k_pe = bf16(rng, (t, 1, 64))
    cache = np.zeros((pages, page, 576), BF16)
    slots = np.array([0, 65, -1, 130, 191], np.int32)
    mlafuse.cache_write(kv_c, k_pe, cache, slots)
    expect = np.zeros_like(cache)
    for i, s in enumerate(slots):
        if s >= 0:
            expect[s // page, s % page, :512] = kv_c[i]
            expect[s // page, s % page, 512:] = k_pe[i, 0]
    np.testing.assert_array_equal(cache.view(np.uint16), expect.view(np.uint16))


def test_cache_write_rejects_slot_outside_cache():
    cache = np.zeros((1, 64, 576), BF16)
    with pytest.raises(ValueError, match=r"slot_mapping\[0\] = 64 is outside"):
        mlafuse.cache_write(np.zeros((1, 512), BF16), np.zeros((1, 1, 64), BF16), cache,
                            np.array([64], np.int32))


# ---- mla_decode ------------------------------------------------------------------------------

def decode_inputs(t_pad, heads, lens, pages=6, seed=0):
    """Absorbed queries and a paged cache; block-table slots past a sequence's end hold a page
    id far outside the cache (they must never be read)."""
    rng = np.random.default_rng(seed)
    q = bf16(rng, (t_pad, heads, 576), 0.5)
    cache = bf16(rng, (pages, 64, 576))
    w_uv = bf16(rng, (heads, 512, 128), 0.05)
    max_pages = 3
    table = np.full((t_pad, max_pages), 1 << 20, np.int32)
    seq_lens = np.zeros(t_pad, np.int32)
    for i, length in enumerate(lens):
        need = (length + 63) // 64
        table[i, :need] = rng.permutation(pages)[:need]
        seq_lens[i] = length
    return q, cache, table, seq_lens, w_uv


def decode_bf16(q, cache, table, seq_lens, w_uv, n=None):
    out = np.zeros((q.shape[0], q.shape[1] * 128), BF16)
    mlafuse.mla_decode(q, cache, table, seq_lens, w_uv, out, num_tokens=n)
    return out


def test_mla_decode_bf16_close_to_f32_math():
    lens = [1, 17, 64, 65, 130, 0]
    q, cache, table, seq_lens, w_uv = decode_inputs(6, 16, lens)
    out = decode_bf16(q, cache, table, seq_lens, w_uv)
    ref = mla_decode_f32(q, cache, table, seq_lens, w_uv, len(lens))
    got = out.astype(np.float32)
    err = np.abs(got - ref).max() / np.abs(ref).max()
    assert err < 2e-2, err
    np.testing.assert_array_equal(got[5], 0.0)  # a sequence of length 0 gives zeros


@pytest.mark.parametrize("g", [128, 64])
@pytest.mark.parametrize("col_major,tma", [(False, False), (True, False), (True, True)])
@pytest.mark.parametrize("ue8m0", [False, True])
def test_mla_decode_fused_group_equals_unfused_then_quant(g, col_major, tma, ue8m0):
    t = 5
    q, cache, table, seq_lens, w_uv = decode_inputs(t, 16, [3, 64, 100, 1, 150], seed=g)
    d = 16 * 128
    ref_q, ref_s = mlafuse.quant_fp8_group(decode_bf16(q, cache, table, seq_lens, w_uv), g,
                                           column_major_scales=col_major,
                                           tma_aligned_scales=tma, scale_ue8m0=ue8m0)
    out = np.zeros((t, d), FP8)
    scales = mlafuse.group_scale_buffer(out, t, d // g, col_major, tma)
    mlafuse.mla_decode(q, cache, table, seq_lens, w_uv, out, output_block_scale=scales,
                       scale_ue8m0=ue8m0)
    np.testing.assert_array_equal(codes(out), codes(ref_q))
    np.testing.assert_array_equal(scales, ref_s)


def test_mla_decode_fused_static_and_nvfp4_equal_unfused():
    t = 3
    q, cache, table, seq_lens, w_uv = decode_inputs(t, 16, [10, 70, 0])
    ob = decode_bf16(q, cache, table, seq_lens, w_uv)
    scale = np.array([0.01], np.float32)
    out = np.zeros((t, 2048), FP8)
    mlafuse.mla_decode(q, cache, table, seq_lens, w_uv, out, output_scale=scale)
    np.testing.assert_array_equal(codes(out), codes(mlafuse.quant_fp8_static(ob, scale)))

    gs = np.array([50.0], np.float32)
    ref_q, ref_sf = mlafuse.quant_nvfp4(ob, gs)
    out4 = np.zeros((t, 1024), U8)
    sf = np.zeros(mlafuse.nvfp4_scale_shape(t, 2048), U8)
    mlafuse.mla_decode(q, cache, table, seq_lens, w_uv, out4, output_scale=gs,
                       output_block_scale=sf)
    np.testing.assert_array_equal(out4, codes(ref_q))
    np.testing.assert_array_equal(sf, codes(ref_sf))


@pytest.mark.parametrize("n_kind", ["int", "array"])
def test_mla_decode_padded_n_writes_only_real_tokens(n_kind):
    t_pad, n = 8, 3
    lens = [5, 66, 129]
    q, cache, table, seq_lens, w_uv = decode_inputs(t_pad, 16, lens)
    full = decode_bf16(q[:n].copy(), cache, table[:n].copy(), seq_lens[:n].copy(), w_uv)
    d, g = 2048, 128
    sentinel = np.float32(-7.0)
    out = np.full((t_pad, d), 0x5A, U8).view(FP8)
    store = np.full((d // g, t_pad), sentinel, np.float32)  # column-major, T_pad % 4 == 0
    scales = store.T
    num = n if n_kind == "int" else np.array([n], np.int32)
    mlafuse.mla_decode(q, cache, table, seq_lens, w_uv, out, output_block_scale=scales,
                       num_tokens=num)
    ref_q, ref_s = mlafuse.quant_fp8_group(full, g)
    np.testing.assert_array_equal(codes(out)[:n], codes(ref_q))
    np.testing.assert_array_equal(codes(out)[n:], 0x5A)
    np.testing.assert_array_equal(scales[:n], ref_s)
    np.testing.assert_array_equal(store[:, n:], sentinel)


def per_row(table, seq_lens, k):
    """The block table and causal length of each query row of a k-token-a-sequence batch."""
    rows = np.repeat(np.arange(len(seq_lens)), k)
    j = np.tile(np.arange(k), len(seq_lens))
    lens = np.maximum(seq_lens[rows] - (k - 1 - j), 0).astype(np.int32)
    return table[rows].copy(), lens


@pytest.mark.parametrize("k", [2, 3])
def test_mla_decode_multi_token_sequences_are_causal(k):
    lens = [k, 17, 64, 130]
    b = len(lens)
    q, cache, _, _, w_uv = decode_inputs(b * k, 16, [], seed=k)
    _, _, table, seq_lens, _ = decode_inputs(b, 16, lens, seed=10 + k)
    out = np.zeros((b * k, 2048), BF16)
    mlafuse.mla_decode(q, cache, table, seq_lens, w_uv, out, tokens_per_seq=k)
    rows_table, rows_lens = per_row(table, seq_lens, k)
    ref = mla_decode_f32(q, cache, rows_table, rows_lens, w_uv, b * k)
    got = out.astype(np.float32)
    assert np.abs(got - ref).max() / np.abs(ref).max() < 2e-2
    # The same rows as one-token sequences of those lengths: the same bits.
    np.testing.assert_array_equal(out, decode_bf16(q, cache, rows_table, rows_lens, w_uv))
    # Fused group FP8 equals the separate quant of that output; a padded count writes only
    # its rows.
    fp8 = np.full((b * k, 2048), 0x5A, U8).view(FP8)
    scales = mlafuse.group_scale_buffer(fp8, b * k, 16, False, False)
    n = b * k - 1
    mlafuse.mla_decode(q, cache, table, seq_lens, w_uv, fp8, output_block_scale=scales,
                       num_tokens=n, tokens_per_seq=k)
    ref_q, ref_s = mlafuse.quant_fp8_group(out[:n].copy(), 128)
    np.testing.assert_array_equal(codes(fp8)[:n], codes(ref_q))
    np.testing.assert_array_equal(codes(fp8)[n:], 0x5A)
    np.testing.assert_array_equal(scales[:n], ref_s)


def test_mla_decode_tokens_per_seq_errors():
    q, cache, table, seq_lens, w_uv = decode_inputs(4, 16, [3, 4])
    out = np.zeros((4, 2048), BF16)
    with pytest.raises(ValueError, match=r"tokens_per_seq 3 must be >= 1 and divide the 4"):
        mlafuse.mla_decode(q, cache, table[:2].copy(), seq_lens[:2].copy(), w_uv, out,
                           tokens_per_seq=3)
    with pytest.raises(ValueError, match=r"tensor block_table .*expected shape \[2, 3\]"):
        mlafuse.mla_decode(q, cache, table, seq_lens[:2].copy(), w_uv, out, tokens_per_seq=2)
    with pytest.raises(ValueError, match="tokens_per_seq 0"):
        mlafuse.mla_decode(q, cache, table, seq_lens, w_uv, out, tokens_per_seq=0)


# ---- detect_output_quant_key, QuantKey names --------------------------------------------------

def test_detect_output_quant_key_follows_spec():
    d = 2048
    assert mlafuse.detect_output_quant_key(BF16, output_dim=d) is None
    assert mlafuse.detect_output_quant_key(FP8, output_block_scale=np.zeros((4, 16)),
                                           output_dim=d) == mlafuse.kFp8Dynamic128Sym
    assert mlafuse.detect_output_quant_key("fp8e4m3", output_block_scale=np.zeros((4, 32)),
                                           output_dim=d) == mlafuse.kFp8Dynamic64Sym
    assert mlafuse.detect_output_quant_key(U8, True, np.zeros((128, 128)),
                                           output_dim=d) == mlafuse.kNvfp4Dynamic
    key = mlafuse.detect_output_quant_key(FP8, output_scale=np.ones(1, np.float32),
                                          output_dim=d)
    assert key == mlafuse.kFp8StaticTensorSym and key.name == "kFp8StaticTensorSym"
    assert "group 1x128" in str(mlafuse.kFp8Dynamic128Sym)
    assert mlafuse.kFp8Dynamic128Sym.group_size == 128 and mlafuse.kNvfp4Dynamic.has_scale2
    assert set(mlafuse.QUANT_KEYS) == {"kFp8StaticTensorSym", "kFp8DynamicTensorSym",
                                       "kFp8DynamicTokenSym", "kFp8Dynamic128Sym",
                                       "kFp8Dynamic64Sym", "kNvfp4Dynamic"}
    with pytest.raises(ValueError, match="group size 32"):
        mlafuse.detect_output_quant_key(FP8, output_block_scale=np.zeros((4, 64)), output_dim=d)
    with pytest.raises(TypeError, match="out_dtype"):
        mlafuse.detect_output_quant_key(np.float64, output_dim=d)


# ---- compile ---------------------------------------------------------------------------------

def test_compile_fuses_and_reports_like_the_cli():
    text = (REPO / "tests/data/ir/good_deepseek_layer.ir").read_text()
    fused, report = mlafuse.compile(text)
    assert "quant_fp8_group" not in fused and "quant_group_size = 128" in fused
    assert set(report) == {"source", "backend", "passes", "ops_before", "ops_after",
                           "nodes_after", "compile_us"}
    fusion = report["passes"][0]
    assert fusion["name"] == "mla-attn-quant-fusion" and fusion["matches"] == 1
    assert report["ops_before"]["quant_fp8_group"] == 1
    assert "quant_fp8_group" not in report["ops_after"]


def test_compile_negative_twin_extra_user_blocks_fusion():
    text = (REPO / "tests/data/ir/good_deepseek_layer.ir").read_text()
    text = text.replace("output %layers.0.y,", "output %layers.0.attn_out, %layers.0.y,")
    fused, report = mlafuse.compile(text)
    assert "quant_fp8_group" in fused
    assert report["passes"][0]["matches"] == 0
    with pytest.raises(ValueError, match="graph_text"):
        mlafuse.compile("graph { nonsense }")
    with pytest.raises(ValueError, match="backend"):
        mlafuse.compile(text, backend="tpu")


# ---- errors: a Python exception naming the argument, never a crash --------------------------

def test_errors_name_the_argument():
    x = bf16(np.random.default_rng(0), (4, 256))
    with pytest.raises(ValueError, match="group_size"):
        mlafuse.quant_fp8_group(x, 96)  # does not divide 256
    with pytest.raises(ValueError, match="group_size"):
        mlafuse.quant_fp8_group(x, 0)
    with pytest.raises(TypeError, match="argument x: element type float64"):
        mlafuse.quant_fp8_group(x.astype(np.float64))
    with pytest.raises(TypeError, match="argument x"):
        mlafuse.quant_fp8_group([[1.0] * 128])
    with pytest.raises(ValueError, match="argument x"):
        mlafuse.quant_fp8_group(np.zeros((2, 2, 128), np.float32))
    with pytest.raises(ValueError, match=r"out = q.*tensor q .*expected shape \[4, 256\]"):
        mlafuse.quant_fp8_group(x, out=np.zeros((3, 256), U8))  # too small
    with pytest.raises(ValueError, match="strides"):
        mlafuse.quant_fp8_group(x, column_major_scales=True,
                                scale_out=np.zeros((4, 2), np.float32))  # row-major buffer
    with pytest.raises(TypeError, match="argument out: element type float32"):
        mlafuse.quant_fp8_group(x, out=np.zeros((4, 256), np.float32))
    with pytest.raises(ValueError, match=r"tensor scale f32\[2\]"):
        mlafuse.quant_fp8_static(x, np.ones(2, np.float32))
    with pytest.raises(ValueError, match=r"tensor global_scale f32\[2\]"):
        mlafuse.quant_nvfp4(x, np.ones(2, np.float32))


def test_mla_decode_errors_name_the_argument():
    q, cache, table, seq_lens, w_uv = decode_inputs(2, 16, [3, 4])
    out = np.zeros((2, 2048), BF16)
    ok = dict(q=q, kv_cache=cache, block_table=table, seq_lens=seq_lens, w_uv=w_uv, out=out)

    def call(**kw):
        args = dict(ok)
        args.update(kw)
        mlafuse.mla_decode(**args)

    call()  # the baseline is valid
    with pytest.raises(ValueError, match="tensor q"):
        call(q=q[:, :, :192].copy())
    with pytest.raises(TypeError, match="argument q"):
        call(q=q.astype(np.float64))
    with pytest.raises(ValueError, match="block_table"):
        call(block_table=table.astype(np.int32)[:1].copy())
    with pytest.raises(ValueError, match="seq_lens"):
        call(seq_lens=seq_lens.astype(np.uint8))
    with pytest.raises(ValueError, match="w_uv"):
        call(w_uv=w_uv[:8].copy())
    with pytest.raises(ValueError, match=r"tensor out .*expected shape \[2, 2048\]"):
        call(out=np.zeros((1, 2048), BF16))  # too small
    with pytest.raises(ValueError, match="group size"):
        call(out=np.zeros((2, 2048), FP8), output_block_scale=np.zeros((2, 64), np.float32))
    with pytest.raises(ValueError, match="output_block_scale"):
        call(out=np.zeros((2, 2048), FP8),
             output_block_scale=np.zeros((16, 5), np.float32).T[:2])  # no layout
    with pytest.raises(ValueError, match="num_tokens"):
        call(num_tokens=3)
    with pytest.raises(ValueError, match="num_tokens"):
        call(num_tokens=-1)
    with pytest.raises(ValueError, match="scale_ue8m0"):
        call(scale_ue8m0=True)  # bf16 output has no group scales
    with pytest.raises(ValueError, match="num_kv_splits"):
        call(num_kv_splits=-1)
    call(num_kv_splits=24)  # a fixed split count is accepted (the CPU reference does not split)
    call(reuse_schedule=True)  # accepted and ignored: the CPU has no schedule to reuse
    with pytest.raises(ValueError, match="block_table"):
        bad = table.copy()
        bad[0, 0] = 99  # a page outside the cache, inside the sequence
        call(block_table=bad)


@pytest.mark.skipif(mlafuse.built_with_cuda, reason="this build has the CUDA backend")
def test_cpu_only_build_names_the_missing_cuda_backend():
    with pytest.raises(ValueError, match="without the CUDA backend"):
        mlafuse.mla_decode_workspace_bytes(2, 16, device=0)


def test_read_only_inputs_and_strided_views():
    x = bf16(np.random.default_rng(5), (3, 256))
    x.setflags(write=False)  # inputs may be read-only
    q, s = mlafuse.quant_fp8_group(x)
    np.testing.assert_array_equal(codes(q), ref_group(x, 128)[0])
    with pytest.raises(ValueError, match="x"):
        mlafuse.quant_fp8_group(bf16(np.random.default_rng(5), (3, 512))[:, ::2])
    ro_out = np.zeros((3, 256), U8)
    ro_out.setflags(write=False)  # an output must be writable
    with pytest.raises(TypeError, match="argument out.*read-only"):
        mlafuse.quant_fp8_group(x, out=ro_out)


def test_unit_dims_take_any_stride():
    # A dim of extent 1 never steps, so exporters put anything there (numpy's x[None] and
    # [:, None] stride 0, torch <= 2.9's DLPack stride 1): such views are contiguous inputs.
    row = bf16(np.random.default_rng(8), (256,))
    x = row[None, :]  # (1, 256), strides (0, 2)
    assert x.strides[0] == 0
    q, s = mlafuse.quant_fp8_group(x)
    rq, rs = ref_group(np.ascontiguousarray(x), 128)
    np.testing.assert_array_equal(codes(q), rq)
    np.testing.assert_array_equal(s, rs)
    rng = np.random.default_rng(9)
    kv_c = bf16(rng, (2, 512))
    k_pe = bf16(rng, (2, 64))[:, None, :]  # (2, 1, 64), strides (128, 0, 2)
    cache = np.zeros((1, 64, 576), BF16)
    mlafuse.cache_write(kv_c, k_pe, cache, np.array([3, 0], np.int32))
    np.testing.assert_array_equal(cache[0, 3, 512:].view(np.uint16), k_pe[0, 0].view(np.uint16))
    np.testing.assert_array_equal(cache[0, 0, :512].view(np.uint16), kv_c[1].view(np.uint16))


def test_workspace_bytes_checks_its_arguments():
    assert mlafuse.mla_decode_workspace_bytes(8, 128) == 0  # the CPU needs none
    with pytest.raises(ValueError, match="T_pad 4294967304"):
        mlafuse.mla_decode_workspace_bytes(2**32 + 8, 128)  # was truncated to 8
    with pytest.raises(ValueError, match="heads 0"):
        mlafuse.mla_decode_workspace_bytes(8, 0)


def test_cpp_timing_loop_runs_the_same_call():
    # bench/python_overhead.py's C++ baseline: the op itself, looped in C++ (iters > 0).
    x = bf16(np.random.default_rng(6), (2, 256))
    q = np.zeros((2, 256), U8)
    s = np.zeros((2, 2), np.float32)
    us = mlafuse._C.quant_fp8_group(x.view(np.uint16), q, s, 128, False, False, False, 1e-10,
                                    "bf16", 0, iters=3)
    assert us > 0
    rq, rs = ref_group(x, 128)
    np.testing.assert_array_equal(q, rq)
    np.testing.assert_array_equal(s, rs)
    assert mlafuse._C.quant_fp8_group(x.view(np.uint16), q, s, 128, False, False, False, 1e-10,
                                      "bf16", 0) == 0.0
