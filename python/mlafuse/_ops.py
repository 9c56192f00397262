"""The eager ops: allocate missing outputs, tag dtypes DLPack cannot carry, call mlafuse._C.

Every check and every kernel is in C++ (mlafuse._C); this module only picks the stream and builds
output buffers in the caller's array library (torch tensors for torch inputs, numpy otherwise).
"""

import json

import numpy as np

from . import _C

try:  # torch is optional: without it the ops take numpy arrays on the CPU
    import torch
except ImportError:  # pragma: no cover - exercised on machines without torch
    torch = None

try:  # numpy has no bf16 / fp8 of its own; ml_dtypes provides them
    import ml_dtypes
except ImportError:  # pragma: no cover
    ml_dtypes = None

# dtypes that reach C++ as a same-width unsigned view plus the mlafuse name of what they hold.
# DLPack has no code for numpy's ml_dtypes types, and torch's FP8 export varies by version.
_VIEWS = {}
if ml_dtypes is not None:
    _VIEWS[np.dtype(ml_dtypes.bfloat16)] = (np.uint16, "bf16")
    _VIEWS[np.dtype(ml_dtypes.float8_e4m3fn)] = (np.uint8, "fp8e4m3")
if torch is not None:
    _VIEWS[torch.float8_e4m3fn] = (torch.uint8, "fp8e4m3")
    if hasattr(torch, "float4_e2m1fn_x2"):
        _VIEWS[torch.float4_e2m1fn_x2] = (torch.uint8, "")  # NVFP4 codes are u8 to the ops

# mlafuse dtype names of array dtypes (detect_output_quant_key takes either).
_DTYPE_NAMES = {
    np.dtype(np.float32): "f32",
    np.dtype(np.float16): "f16",
    np.dtype(np.int32): "i32",
    np.dtype(np.uint8): "u8",
}
if ml_dtypes is not None:
    _DTYPE_NAMES[np.dtype(ml_dtypes.bfloat16)] = "bf16"
    _DTYPE_NAMES[np.dtype(ml_dtypes.float8_e4m3fn)] = "fp8e4m3"
if torch is not None:
    _DTYPE_NAMES.update({torch.float32: "f32", torch.float16: "f16", torch.bfloat16: "bf16",
                         torch.int32: "i32", torch.uint8: "u8", torch.float8_e4m3fn: "fp8e4m3"})
    if hasattr(torch, "float4_e2m1fn_x2"):
        _DTYPE_NAMES[torch.float4_e2m1fn_x2] = "fp4e2m1x2"

_raw_stream = None
if torch is not None:
    _raw_stream = getattr(torch._C, "_cuda_getCurrentRawStream", None)

# torch tensors reach C++ as DLPack capsules from torch's C++ exporter: Tensor.__dlpack__, which
# nanobind would call otherwise, is Python code with checks (a few us a tensor, 9 tensors a
# mla_decode call).
_to_dlpack = None
if torch is not None:
    try:
        import torch.utils.dlpack
        _to_dlpack = torch.utils.dlpack.to_dlpack
    except (ImportError, AttributeError):  # pragma: no cover - torch without it
        _to_dlpack = None


def _is_torch(x):
    return torch is not None and isinstance(x, torch.Tensor)


def _array(x, name, written=False, capsule=True):
    """x as something DLPack can export, with its dtype tag ('' = the array's own type). A torch
    tensor comes back as a capsule, which one call consumes; capsule=False keeps the tensor (for
    callers that pass the result to several calls)."""
    if _is_torch(x):
        if x.requires_grad:  # DLPack refuses tensors that require grad; the ops never need it
            x = x.detach()
        view = _VIEWS.get(x.dtype)
        tag = ""
        if view is not None:
            x, tag = x.view(view[0]), view[1]
        if _to_dlpack is None or not capsule:
            return x, tag
        try:
            return _to_dlpack(x), tag
        except (RuntimeError, BufferError) as e:  # a dtype DLPack cannot carry (torch <= 2.9 fp8)
            raise TypeError(f"argument {name}: a torch tensor of dtype {x.dtype} cannot be "
                            f"exported ({e}); expected bfloat16, float16, float32, int32, uint8 "
                            "or float8_e4m3fn") from e
    if not isinstance(x, np.ndarray):
        raise TypeError(f"argument {name}: expected a numpy array or a torch tensor, "
                        f"got {type(x).__name__}")
    elif written and not x.flags.writeable:
        raise TypeError(f"argument {name}: the op writes it, but the array is read-only")
    view = _VIEWS.get(x.dtype)
    if view is None:
        return x, ""
    return x.view(view[0]), view[1]


def _stream(x):
    """The caller's current CUDA stream for a torch CUDA tensor; 0 (unused) otherwise."""
    if _is_torch(x) and x.is_cuda:
        dev = x.get_device()
        if _raw_stream is not None:
            return _raw_stream(dev)
        return torch.cuda.current_stream(dev).cuda_stream
    return 0


def _shape2(x, name):
    if not (_is_torch(x) or isinstance(x, np.ndarray)):
        raise TypeError(f"argument {name}: expected a numpy array or a torch tensor, "
                        f"got {type(x).__name__}")
    shape = tuple(x.shape)
    if len(shape) != 2:
        raise ValueError(f"argument {name}: expected a 2-D [T, D] array, got shape {list(shape)}")
    return shape


def _empty(like, shape, kind):
    """An uninitialised buffer on like's device: kind 'fp8' (codes), 'u8', 'f32'."""
    if _is_torch(like):
        dt = {"fp8": torch.float8_e4m3fn, "u8": torch.uint8, "f32": torch.float32}[kind]
        return torch.empty(shape, dtype=dt, device=like.device)
    if kind == "fp8":
        dt = ml_dtypes.float8_e4m3fn if ml_dtypes is not None else np.uint8
    else:
        dt = {"u8": np.uint8, "f32": np.float32}[kind]
    return np.empty(shape, dtype=dt)


def group_scale_buffer(like, t, groups, column_major=False, tma_aligned=False):
    """Scales [t, groups] f32 in the layout of SPEC 3.2 (vLLM's per_token_group_fp8_quant)."""
    if not column_major:
        return _empty(like, (t, groups), "f32")
    rows = (t + 3) // 4 * 4 if tma_aligned else t
    return _empty(like, (groups, rows), "f32").T[:t]


def nvfp4_scale_shape(t, d):
    """Shape of the swizzled NVFP4 block-scale buffer for [t, d] input (SPEC 3.3)."""
    return ((t + 127) // 128 * 128, (d // 16 + 3) // 4 * 4)


# ---- eager implementations (also the bodies of the torch custom ops) ------------------------

def quant_fp8_group_(x, out, scale_out, group_size, column_major_scales, tma_aligned_scales,
                     scale_ue8m0, eps):
    xa, xt = _array(x, "x")
    oa, _ = _array(out, "out", True)
    sa, _ = _array(scale_out, "scale_out", True)
    _C.quant_fp8_group(xa, oa, sa, group_size, column_major_scales, tma_aligned_scales,
                       scale_ue8m0, eps, xt, _stream(x))


def quant_fp8_static_(x, scale, out):
    xa, xt = _array(x, "x")
    _C.quant_fp8_static(xa, _array(scale, "scale")[0], _array(out, "out", True)[0], xt,
                        _stream(x))


def quant_nvfp4_(x, global_scale, out, scale_out):
    xa, xt = _array(x, "x")
    _C.quant_nvfp4(xa, _array(global_scale, "global_scale")[0], _array(out, "out", True)[0],
                   _array(scale_out, "scale_out", True)[0], xt, _stream(x))


def cache_write_(kv_c_normed, k_pe, kv_cache, slot_mapping):
    _C.cache_write(_array(kv_c_normed, "kv_c_normed")[0], _array(k_pe, "k_pe")[0],
                   _array(kv_cache, "kv_cache", True)[0], _array(slot_mapping, "slot_mapping")[0],
                   _stream(kv_cache))


_workspace_bytes = {}


def mla_decode_workspace_bytes(t_pad, heads, device=None, num_kv_splits=0):
    """Scratch bytes of one CUDA mla_decode call (0 on the CPU). device: a CUDA index, a
    torch.device, or None (the CPU); num_kv_splits as for mla_decode."""
    if torch is not None and isinstance(device, torch.device):
        device = None if device.type == "cpu" else (device.index or 0)
    dev = -1 if device is None else int(device)
    key = (t_pad, heads, dev, num_kv_splits)
    n = _workspace_bytes.get(key)
    if n is None:
        n = _workspace_bytes[key] = _C.mla_decode_workspace_bytes(t_pad, heads, dev,
                                                                  num_kv_splits)
    return n


def mla_decode_(q, kv_cache, block_table, seq_lens, w_uv, out, output_scale, output_block_scale,
                num_tokens, num_tokens_device, softmax_scale, scale_ue8m0, num_kv_splits=0,
                workspace=None, reuse_schedule=False, tokens_per_seq=1):
    temporary = False
    if workspace is None and _is_torch(q) and q.is_cuda and q.dim() == 3 and _C.built_with_cuda:
        # From torch's caching allocator: no cudaMalloc in steady state, and inside a CUDA-graph
        # capture it comes from the graph's own pool.
        nbytes = mla_decode_workspace_bytes(q.shape[0], q.shape[1], q.get_device(),
                                            num_kv_splits)
        workspace = torch.empty(nbytes, dtype=torch.uint8, device=q.device)
        temporary = True
    oa, ot = _array(out, "out", True)
    sa, st = (None, "") if output_block_scale is None else _array(output_block_scale,
                                                                   "output_block_scale", True)
    _C.mla_decode(
        _array(q, "q")[0], _array(kv_cache, "kv_cache")[0], _array(block_table, "block_table")[0],
        _array(seq_lens, "seq_lens")[0], _array(w_uv, "w_uv")[0], oa, ot,
        None if output_scale is None else _array(output_scale, "output_scale")[0], sa, st,
        num_tokens,
        None if num_tokens_device is None else _array(num_tokens_device, "num_tokens")[0],
        None if workspace is None else _array(workspace, "workspace", True)[0],
        softmax_scale, scale_ue8m0, num_kv_splits, _stream(q),
        reuse_schedule=bool(reuse_schedule), workspace_temporary=temporary,
        tokens_per_seq=int(tokens_per_seq))


def dtype_name(dtype):
    """The mlafuse name ('bf16', 'fp8e4m3', ...) of a torch/numpy dtype or of a name."""
    if isinstance(dtype, str):
        return dtype
    name = _DTYPE_NAMES.get(dtype)
    if name is None and not (torch is not None and isinstance(dtype, torch.dtype)):
        try:
            name = _DTYPE_NAMES.get(np.dtype(dtype))
        except TypeError:
            pass
    if name is None:
        raise TypeError(f"out_dtype: {dtype!r} has no mlafuse dtype (expected bf16, f16, f32, "
                        f"fp8e4m3 / float8_e4m3fn, u8 or fp4e2m1x2)")
    return name


def detect_output_quant_key(out_dtype, output_scale=None, output_block_scale=None,
                            output_dim=None):
    """What an attention op's output buffers ask for (SPEC 3.4): a QuantKey, or None.

    out_dtype: the output's dtype (torch, numpy or an mlafuse name); output_scale: the scale
    tensor or None (a bool also works); output_block_scale: the block-scale tensor or None;
    output_dim: H * V, the attention output's width."""
    if output_dim is None:
        raise TypeError("detect_output_quant_key: output_dim (H * V) is required")
    groups = None
    if output_block_scale is not None:
        groups = int(output_block_scale.shape[-1])
    has_scale = bool(output_scale) if isinstance(output_scale, bool) else output_scale is not None
    return _C.detect_output_quant_key(dtype_name(out_dtype), has_scale, groups, int(output_dim))


def compile(graph_text, backend="cpu", disable=None):
    """Runs the fusion pipeline of `mlafuse compile` over graph text.

    Returns (compiled graph text, report): the report is the object `mlafuse compile --json`
    prints (passes with their matches per pattern and rejections, op counts, compile_us)."""
    if not isinstance(graph_text, str):
        raise TypeError(f"graph_text: expected str, got {type(graph_text).__name__}")
    text, report = _C.compile(graph_text, backend, disable)
    return text, json.loads(report)
