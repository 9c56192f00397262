"""The quantization semantics of SPEC 3 written again in numpy, independently of the C++ code, to
check the Python ops against (codes and scales compared bit for bit)."""

import ml_dtypes
import numpy as np

BF16 = ml_dtypes.bfloat16
FP8 = ml_dtypes.float8_e4m3fn
F32 = np.float32


def bf16(rng, shape, scale=1.0):
    """Random bf16 values (normal, times scale) as an ml_dtypes array."""
    return (rng.standard_normal(shape, dtype=F32) * F32(scale)).astype(BF16)


def e4m3_codes(v):
    """f32 -> E4M3 codes: clamp to +-448, then round to nearest even (ml_dtypes' cast)."""
    return np.clip(v.astype(F32), F32(-448), F32(448)).astype(FP8).view(np.uint8)


def ue8m0_round_up(s):
    """A positive f32 rounded up to a power of two: exponent + 1 when any mantissa bit is set."""
    bits = s.astype(F32).view(np.uint32)
    up = ((bits >> 23) + 1) << 23
    return np.where((bits & 0x7FFFFF) != 0, up, bits).astype(np.uint32).view(F32)


def quant_fp8_group(x, group, eps=1e-10, ue8m0=False):
    """-> (codes uint8 [T, D], scales f32 [T, D/G]) per SPEC 3.2."""
    xf = np.asarray(x, dtype=F32)
    t, d = xf.shape
    xg = xf.reshape(t, d // group, group)
    amax = np.maximum(np.abs(xg).max(axis=-1) if t else np.zeros((0, d // group), F32), F32(eps))
    s = (amax / F32(448.0)).astype(F32)
    if ue8m0:
        s = ue8m0_round_up(s)
    q = e4m3_codes(xg / s[..., None])
    return q.reshape(t, d), s


def quant_fp8_static(x, scale):
    inv = F32(1.0) / F32(scale)
    return e4m3_codes(np.asarray(x, dtype=F32) * inv)


_E2M1_UPPER = [(0.25, True), (0.75, False), (1.25, True), (1.75, False), (2.5, True),
               (3.5, False), (5.0, True)]


def e2m1_codes(v):
    """f32 -> E2M1 codes (round to nearest, ties to the even code, saturate to 6; sign bit 3)."""
    v = v.astype(F32)
    a = np.abs(v)
    code = np.full(v.shape, 7, np.uint8)
    # Walk the thresholds from the top so each element ends with the smallest code that fits.
    for c in range(6, -1, -1):
        bound, inclusive = _E2M1_UPPER[c]
        fits = a <= F32(bound) if inclusive else a < F32(bound)
        code = np.where(fits, np.uint8(c), code)
    return (code | (np.signbit(v).astype(np.uint8) << 3)).astype(np.uint8)


def nvfp4_offset(m, k, d):
    kt = (d + 63) // 64
    return ((m // 128) * kt + k // 4) * 512 + (m % 32) * 16 + ((m // 32) % 4) * 4 + (k % 4)


def quant_nvfp4(x, global_scale, n=None):
    """-> (codes uint8 [T, D/2], swizzled block scales uint8 [round_up(T,128), round_up(D/16,4)])
    for rows [0, n) per SPEC 3.3 (padding rows of the scales zero)."""
    xf = np.asarray(x, dtype=F32)
    t, d = xf.shape
    n = t if n is None else n
    gs = F32(global_scale)
    blocks = xf[:n].reshape(n, d // 16, 16)
    amax = np.abs(blocks).max(axis=-1) if n else np.zeros((0, d // 16), F32)
    sf = e4m3_codes((gs * amax) / F32(6.0))
    sf_val = sf.view(FP8).astype(F32)
    with np.errstate(divide="ignore"):
        out_scale = np.where(sf_val == 0, F32(0), gs / np.where(sf_val == 0, F32(1), sf_val))
    codes = e2m1_codes(blocks * out_scale.astype(F32)[..., None]).reshape(n, d)
    packed = (codes[:, 0::2] | (codes[:, 1::2] << 4)).astype(np.uint8)
    rows, cols = (t + 127) // 128 * 128, (d // 16 + 3) // 4 * 4
    flat = np.zeros(rows * cols, np.uint8)
    mm, kk = np.meshgrid(np.arange(n), np.arange(d // 16), indexing="ij")
    flat[nvfp4_offset(mm, kk, d)] = sf
    return packed, flat.reshape(rows, cols)


def mla_decode_f32(q, kv_cache, block_table, seq_lens, w_uv, n, softmax_scale=None):
    """Absorbed decode then W_UV in f32 (float rounding differs from the C++ order: compare with
    a tolerance). q [T, H, 576]; -> [n, H*128] f32."""
    qf = np.asarray(q, dtype=F32)
    cache = np.asarray(kv_cache, dtype=F32)
    w = np.asarray(w_uv, dtype=F32)
    heads = qf.shape[1]
    scale = F32(1.0 / np.sqrt(192.0)) if softmax_scale is None else F32(softmax_scale)
    page = cache.shape[1]
    out = np.zeros((n, heads * 128), F32)
    for t in range(n):
        length = int(seq_lens[t])
        if length == 0:
            continue
        pos = np.arange(length)
        rows = cache[block_table[t, pos // page], pos % page]  # [len, 576]
        scores = qf[t] @ rows.T * scale  # [H, len]
        p = np.exp(scores - scores.max(axis=1, keepdims=True))
        o_lat = (p @ rows[:, :512]) / p.sum(axis=1, keepdims=True)  # [H, 512]
        o_lat = o_lat.astype(BF16).astype(F32)  # the kernels' bf16 tensor-core operand
        out[t] = np.einsum("hl,hlv->hv", o_lat, w).reshape(-1)
    return out
