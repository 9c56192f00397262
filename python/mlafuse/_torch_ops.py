"""torch.ops.mlafuse.*: the ops as torch custom ops, so torch.compile traces them and
torch.cuda.CUDAGraph captures them. Each op writes its outputs in place (mutates_args) and
returns nothing, so its fake implementation has nothing to compute; the public functions in
mlafuse/__init__.py allocate the outputs (with torch.empty, which torch.compile traces)."""

from typing import Optional

import torch

from . import _ops

Tensor = torch.Tensor


@torch.library.custom_op("mlafuse::quant_fp8_group", mutates_args=("out", "scale_out"))
def quant_fp8_group(x: Tensor, out: Tensor, scale_out: Tensor, group_size: int,
                    column_major_scales: bool, tma_aligned_scales: bool, scale_ue8m0: bool,
                    eps: float) -> None:
    _ops.quant_fp8_group_(x, out, scale_out, group_size, column_major_scales,
                          tma_aligned_scales, scale_ue8m0, eps)


@quant_fp8_group.register_fake
def _(x, out, scale_out, group_size, column_major_scales, tma_aligned_scales, scale_ue8m0, eps):
    return None


@torch.library.custom_op("mlafuse::quant_fp8_static", mutates_args=("out",))
def quant_fp8_static(x: Tensor, scale: Tensor, out: Tensor) -> None:
    _ops.quant_fp8_static_(x, scale, out)


@quant_fp8_static.register_fake
def _(x, scale, out):
    return None


@torch.library.custom_op("mlafuse::quant_nvfp4", mutates_args=("out", "scale_out"))
def quant_nvfp4(x: Tensor, global_scale: Tensor, out: Tensor, scale_out: Tensor) -> None:
    _ops.quant_nvfp4_(x, global_scale, out, scale_out)


@quant_nvfp4.register_fake
def _(x, global_scale, out, scale_out):
    return None


@torch.library.custom_op("mlafuse::cache_write", mutates_args=("kv_cache",))
def cache_write(kv_c_normed: Tensor, k_pe: Tensor, kv_cache: Tensor,
                slot_mapping: Tensor) -> None:
    _ops.cache_write_(kv_c_normed, k_pe, kv_cache, slot_mapping)


@cache_write.register_fake
def _(kv_c_normed, k_pe, kv_cache, slot_mapping):
    return None


@torch.library.custom_op("mlafuse::mla_decode", mutates_args=("out", "output_block_scale"))
def mla_decode(q: Tensor, kv_cache: Tensor, block_table: Tensor, seq_lens: Tensor, w_uv: Tensor,
               out: Tensor, output_scale: Optional[Tensor], output_block_scale: Optional[Tensor],
               num_tokens: int, num_tokens_device: Optional[Tensor], softmax_scale: float,
               scale_ue8m0: bool, num_kv_splits: int, tokens_per_seq: int = 1) -> None:
    _ops.mla_decode_(q, kv_cache, block_table, seq_lens, w_uv, out, output_scale,
                     output_block_scale, num_tokens, num_tokens_device, softmax_scale,
                     scale_ue8m0, num_kv_splits, tokens_per_seq=tokens_per_seq)


@mla_decode.register_fake
def _(q, kv_cache, block_table, seq_lens, w_uv, out, output_scale, output_block_scale, num_tokens,
      num_tokens_device, softmax_scale, scale_ue8m0, num_kv_splits, tokens_per_seq=1):
    return None
