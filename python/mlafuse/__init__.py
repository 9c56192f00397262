"""mlafuse from Python: DeepSeek MLA decode with the output quantization fused in, the
quantization ops it fuses, the paged-cache write, and the fusion compiler.

Arrays go in through DLPack and are never copied: numpy arrays run on the CPU reference, torch
CUDA tensors on the CUDA kernels, on torch's current stream, with no host synchronisation and no
device allocation outside torch's caching allocator, so calls can be captured in CUDA graphs.
With torch installed the ops are also torch custom ops (torch.ops.mlafuse.*) with fake
implementations, which torch.compile(fullgraph=True) traces through.

Numerics and layouts are those of the C++ library (SPEC.md); the names and arguments follow
vLLM's (per_token_group_fp8_quant, scaled_fp8_quant, scaled_fp4_quant, concat_and_cache_mla).
numpy has no bf16 or fp8 type of its own: use ml_dtypes.bfloat16 / ml_dtypes.float8_e4m3fn.
"""

from . import _C, _ops
from ._C import (QuantKey, available_backends, built_with_cuda, kFp8Dynamic64Sym,
                 kFp8Dynamic128Sym, kFp8DynamicTensorSym, kFp8DynamicTokenSym,
                 kFp8StaticTensorSym, kNvfp4Dynamic)
from ._ops import (compile, detect_output_quant_key, group_scale_buffer,
                   mla_decode_workspace_bytes, nvfp4_scale_shape)

__all__ = [
    "QuantKey", "QUANT_KEYS", "available_backends", "built_with_cuda", "cache_write", "compile",
    "detect_output_quant_key", "group_scale_buffer", "mla_decode", "mla_decode_workspace_bytes",
    "nvfp4_scale_shape", "quant_fp8_group", "quant_fp8_static", "quant_nvfp4",
    "kFp8StaticTensorSym", "kFp8DynamicTensorSym", "kFp8DynamicTokenSym", "kFp8Dynamic128Sym",
    "kFp8Dynamic64Sym", "kNvfp4Dynamic",
]

QUANT_KEYS = {k.name: k for k in (kFp8StaticTensorSym, kFp8DynamicTensorSym, kFp8DynamicTokenSym,
                                  kFp8Dynamic128Sym, kFp8Dynamic64Sym, kNvfp4Dynamic)}

_torch = _ops.torch
if _torch is not None:
    from . import _torch_ops  # noqa: F401  (registers torch.ops.mlafuse.*)
    _is_compiling = getattr(getattr(_torch, "compiler", None), "is_compiling", None)
    if _is_compiling is None:
        from torch._dynamo import is_compiling as _is_compiling


# An int count: a Python or numpy int, or the SymInt dynamo makes of an int argument.
_INTS = (int, _ops.np.integer) + ((_torch.SymInt,) if _torch is not None else ())


def _traced(x):
    """Whether this call is being traced by torch.compile: then it goes through the custom op
    (which dynamo can see) instead of straight to the extension (which is faster eagerly)."""
    return _torch is not None and isinstance(x, _torch.Tensor) and _is_compiling()


def quant_fp8_group(x, group_size=128, column_major_scales=False, tma_aligned_scales=False,
                    scale_ue8m0=False, out=None, scale_out=None, eps=1e-10):
    """Per-token-group FP8 quantization (vLLM's per_token_group_fp8_quant, SPEC 3.2).

    x: [T, D] bf16/f16/f32. Returns (codes [T, D] fp8e4m3, scales f32 [T, D/G]); the scales are
    row-major, or column-major ([D/G, T] transposed), padded to T rounded up to 4 with
    tma_aligned_scales. out / scale_out: buffers to write instead (scale_out with exactly those
    strides). G: any multiple of 16 dividing D."""
    t, d = _ops._shape2(x, "x")
    if isinstance(group_size, bool) or not isinstance(group_size, int) or group_size <= 0:
        raise ValueError(f"group_size: expected a positive int, got {group_size!r}")
    if out is None:
        out = _ops._empty(x, (t, d), "fp8")
    if scale_out is None:
        scale_out = group_scale_buffer(x, t, d // group_size, column_major_scales,
                                       tma_aligned_scales)
    if _traced(x):
        _torch.ops.mlafuse.quant_fp8_group(x, out, scale_out, group_size, column_major_scales,
                                           tma_aligned_scales, scale_ue8m0, eps)
    else:
        _ops.quant_fp8_group_(x, out, scale_out, group_size, column_major_scales,
                              tma_aligned_scales, scale_ue8m0, eps)
    return out, scale_out


def quant_fp8_static(x, scale, out=None):
    """Static per-tensor FP8 (SPEC 3.1): x [T, D], scale [1] f32 -> codes [T, D] fp8e4m3."""
    t, d = _ops._shape2(x, "x")
    if out is None:
        out = _ops._empty(x, (t, d), "fp8")
    if _traced(x):
        _torch.ops.mlafuse.quant_fp8_static(x, scale, out)
    else:
        _ops.quant_fp8_static_(x, scale, out)
    return out


def quant_nvfp4(x, global_scale, out=None, scale_out=None):
    """NVFP4 (SPEC 3.3): x [T, D], global_scale [1] f32 -> (codes [T, D/2] u8, block scales
    fp8e4m3 [round_up(T, 128), round_up(D/16, 4)] in the swizzled GEMM layout)."""
    t, d = _ops._shape2(x, "x")
    if out is None:
        out = _ops._empty(x, (t, d // 2), "u8")
    if scale_out is None:
        scale_out = _ops._empty(x, nvfp4_scale_shape(t, d), "fp8")
    if _traced(x):
        _torch.ops.mlafuse.quant_nvfp4(x, global_scale, out, scale_out)
    else:
        _ops.quant_nvfp4_(x, global_scale, out, scale_out)
    return out, scale_out


def cache_write(kv_c_normed, k_pe, kv_cache, slot_mapping):
    """Writes token t's [kv_c_normed[t] | k_pe[t]] into kv_cache [pages, page, L+R] at
    slot_mapping[t] (page = slot // page, row = slot % page); slot -1 skips the token.
    kv_c_normed [T, L] bf16, k_pe [T, 1, R] bf16, slot_mapping [T] int32. In place."""
    if _traced(kv_cache):
        _torch.ops.mlafuse.cache_write(kv_c_normed, k_pe, kv_cache, slot_mapping)
    else:
        _ops.cache_write_(kv_c_normed, k_pe, kv_cache, slot_mapping)


def mla_decode(q, kv_cache, block_table, seq_lens, w_uv, out, output_scale=None,
               output_block_scale=None, num_tokens=None, *, softmax_scale=0.0,
               scale_ue8m0=False, num_kv_splits=0, workspace=None, reuse_schedule=False,
               tokens_per_seq=1):
    """Absorbed MLA decode, tokens_per_seq query tokens per sequence, into `out`.

    q [T_pad, H, 576] bf16 (q_nope @ W_UK_T | q_pe); kv_cache [pages, page_size, 576] bf16
    (pages of 16, 32, 64 or 128 tokens); with B = T_pad / tokens_per_seq sequences,
    block_table [B, max_pages] int32; seq_lens [B] int32 (each counting its new tokens);
    w_uv [H, 512, 128] bf16. Query row t belongs to sequence t // tokens_per_seq. With
    tokens_per_seq = k > 1 (multi-token prediction, speculative decoding; FlashMLA's seqlen_q) a
    sequence's k rows are its last k positions, causal among themselves: its row j sees the
    first max(0, seq_len - k + 1 + j) cached tokens. k must divide T_pad.
    out and the scale buffers say what is written (detect_output_quant_key, SPEC 3.4):
      bf16 out [T_pad, H*128]                                -> unquantized
      fp8 out + output_scale [1]                             -> static FP8
      fp8 out + output_block_scale f32 [T_pad, H*128/G]      -> group FP8, G = 128 or 64, the
          scale layout read off its strides (row-major, column-major, column-major TMA-aligned)
      u8 out [T_pad, H*64] + output_scale + swizzled e4m3 output_block_scale -> NVFP4
    The quantized output is bit-identical to the bf16 output quantized by the matching quant op.
    num_tokens: the real count n <= T_pad, an int or an int32 [1] tensor read on the device (for
    CUDA graphs replayed with a new n); nothing of tokens >= n is written. scale_ue8m0: group-FP8
    scales rounded up to powers of two. softmax_scale 0 means 1/sqrt(192). num_kv_splits: the
    CUDA split-KV schedule's part count (0: one per CTA slot, SMs / ceil(H/64)); pass the same
    count on every tensor-parallel rank and each rank's output equals, bit for bit, the heads it
    holds of a single-GPU call with that count (the split points then do not depend on H),
    except for split queries whose merge path the combine's H-dependent tiling changes (see
    docs/kernels/mla_decode.md, "Tensor parallelism").
    workspace: CUDA scratch of mla_decode_workspace_bytes(T_pad, H, device, num_kv_splits)
    bytes; by default taken from torch. It also holds the split-KV schedule the call computes.
    reuse_schedule: skip that computation (one small kernel, 2-5 us of the chain) and use the
    schedule an earlier call on the same stream wrote into `workspace`: compute it in the first
    layer of a decode step, reuse it in the others (as engines reuse FlashMLA's metadata).
    Allowed while T_pad, the part count (H and num_kv_splits), the page size, the block-table
    width and the seq_lens / num_tokens tensors are those of the computing call (checked; a
    mismatch raises) and their contents are unchanged (not checked: a stale schedule gives wrong
    output). Ignored on the CPU; refused under torch.compile.
    Before capturing a CUDA graph, call it once eagerly at the largest T_pad (as torch's warm-up
    does), and once per tokens_per_seq value the graphs use: the first call on a device sets up
    the backend, and the first eager call with a given k builds that k's query_start_loc table
    (0, k, 2k, ..), so capturing a call with a k not yet called eagerly raises."""
    n_int, n_dev = -1, None
    if num_tokens is not None:
        if isinstance(num_tokens, _INTS):
            num_tokens = int(num_tokens)
            if num_tokens < 0:
                raise ValueError(f"num_tokens: expected an int >= 0, got {num_tokens}")
            n_int = num_tokens
        else:
            n_dev = num_tokens
    if _traced(q):
        if reuse_schedule:
            # The custom op takes no workspace: torch.compile allocates each call's own.
            raise ValueError("mla_decode(reuse_schedule=True) is not supported under "
                             "torch.compile (the traced op allocates its own workspace); call "
                             "it eagerly or inside a torch.cuda.CUDAGraph capture")
        _torch.ops.mlafuse.mla_decode(q, kv_cache, block_table, seq_lens, w_uv, out,
                                      output_scale, output_block_scale, n_int, n_dev,
                                      float(softmax_scale), bool(scale_ue8m0),
                                      int(num_kv_splits), int(tokens_per_seq))
    else:
        _ops.mla_decode_(q, kv_cache, block_table, seq_lens, w_uv, out, output_scale,
                         output_block_scale, n_int, n_dev, softmax_scale, scale_ue8m0,
                         int(num_kv_splits), workspace, bool(reuse_schedule),
                         int(tokens_per_seq))
